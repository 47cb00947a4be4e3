"""The e2e tier's world: a container with a real systemd, and on the host side of its veth the
IMDS emulator (169.254.169.254:80) and a moto server. The agent bundle goes the way a local
bundle always goes: `spawn launch` uploads it to the account's bucket (in moto) and the instance
fetches it through the pre-signed URL, from the moto server on the veth.

Everything is created per run and removed at the end, also when a test fails. Needs root
(namespaces, veth, mounts); in CI a skip here fails the run.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import compat32
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.nspawn import IMDS_ADDRESS, Container, Network, host_enabled_units, new_run_id, run_lock

REGION = "us-east-1"
SPAWN = str(Path(sys.executable).with_name("spawn"))


class ImdsProcess:
    """``python -m controller.sandbox.imds_emulator`` for one instance, at 169.254.169.254:80."""

    def __init__(self, instance_id: str, aws_endpoint: str) -> None:
        self.instance_id = instance_id
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controller.sandbox.imds_emulator", "--instance-id", instance_id,
             "--region", REGION, "--aws-endpoint", aws_endpoint, "--bind", IMDS_ADDRESS, "--port", "80"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if '"ready"' not in line:
            self.stop()
            detail = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"IMDS emulator did not start: {line} {detail}")

    def control(self, method: str, name: str) -> Any:
        import requests

        resp = requests.request(method, f"http://{IMDS_ADDRESS}/_emulator/{name}", timeout=5)
        resp.raise_for_status()
        return resp.json() if resp.content else None

    def credentials(self, role: str) -> dict[str, Any]:
        import requests

        token = requests.put(f"http://{IMDS_ADDRESS}/latest/api/token", timeout=5,
                             headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"}).text
        resp = requests.get(f"http://{IMDS_ADDRESS}/latest/meta-data/iam/security-credentials/{role}",
                            headers={"X-aws-ec2-metadata-token": token}, timeout=5)
        resp.raise_for_status()
        return dict(resp.json())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


@dataclass
class Cloud:
    network: Network
    moto_url: str
    bundle_path: str  # a local file: uploaded to moto's S3 by `spawn launch`
    container: Container
    workdir: Path
    imds: ImdsProcess | None = None
    served_bundle: Path = Path()  # the built bundle file (bundle_path)
    notes: list[str] = field(default_factory=list)
    _ec2: Any = None

    def env(self) -> dict[str, str]:
        return {**os.environ, "AWS_ENDPOINT_URL": self.moto_url, "AWS_REGION": REGION,
                "AWS_DEFAULT_REGION": REGION, "HOME": str(self.workdir), "NO_COLOR": "1"}

    def spawn(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SPAWN, *args], capture_output=True, text=True, env=self.env(),
                              timeout=120, check=False)

    def ec2(self) -> Any:
        """One client, reused: building one per poll would blur the timing measurements."""
        if self._ec2 is None:
            import boto3

            self._ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=self.moto_url)
        return self._ec2

    def instance(self, instance_id: str) -> dict[str, Any]:
        found = self.ec2().describe_instances(InstanceIds=[instance_id])
        return dict(found["Reservations"][0]["Instances"][0])

    def tags(self, instance_id: str) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in self.instance(instance_id).get("Tags", [])}

    def serve_metadata_for(self, instance_id: str) -> ImdsProcess:
        if self.imds is not None:
            self.imds.stop()
        self.imds = ImdsProcess(instance_id, self.moto_url)
        return self.imds

    def user_data(self, instance_id: str) -> bytes:
        attr = self.ec2().describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        raw = base64.b64decode(attr["UserData"]["Value"])
        return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw

    def run_user_data(self, instance_id: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """As cloud-init does: shell-script parts to scripts/, run in name order, as root, once."""
        message = message_from_bytes(self.user_data(instance_id), policy=compat32)
        scripts: list[str] = []
        for part in message.walk():
            if part.is_multipart() or part.get_content_type() != "text/x-shellscript":
                continue
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            name = part.get_filename() or f"part-{len(scripts):03d}"
            path = f"/var/lib/cloud/instances/{instance_id}/scripts/{name}"
            self.container.write_file(path, payload.decode(), mode="0700")
            scripts.append(path)
        assert scripts, "the user-data holds no shell script"
        runner = " && ".join(f'"{s}"' for s in sorted(scripts))
        unit = f"e2e-cloud-final-{instance_id}"
        return self.container.run(
            "systemd-run", "--quiet", "--wait", "--pipe", "--collect", f"--unit={unit}",
            "--property=After=network-online.target", "/bin/sh", "-c", runner, timeout=timeout)


def dump_journal(cloud: Cloud) -> None:
    """Save the container's journal (it lives in RAM: do it before the container stops)."""
    target = cloud.workdir / "journal.txt"
    if cloud.container.proc is None or cloud.container.proc.poll() is not None:
        return
    with contextlib.suppress(Exception):
        target.write_text(cloud.container.run("journalctl", "--no-pager", "-o", "short-precise",
                                              timeout=60).stdout)
        sys.stderr.write(f"\ne2e: container journal saved to {target}\n")


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """Module-scoped: the lock, network and servers are released as soon as the scenario ends,
    not when the whole test session does (another run on this machine may be waiting)."""
    if os.geteuid() != 0:
        pytest.skip("the e2e tier needs root (network namespaces, veth, mounts)")
    with contextlib.ExitStack() as stack:
        stack.enter_context(run_lock())
        workdir = tmp_path_factory.mktemp("e2e")
        leftovers = Network.sweep_leftovers()
        if leftovers:
            sys.stderr.write(f"\ne2e: removed leftovers of an earlier run: {', '.join(leftovers)}\n")
        run_id = new_run_id()
        network = Network.create(run_id)
        stack.callback(network.delete)

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request lines
        from moto.server import ThreadedMotoServer

        moto = ThreadedMotoServer(ip_address=network.host_ip, port=0, verbose=False)  # the kernel's port
        moto.start()
        stack.callback(moto.stop)
        _host, port = moto.get_host_and_port()
        moto_url = f"http://{network.host_ip}:{port}"

        from controller.bundle import ensure_bundle

        started = time.monotonic()
        built = ensure_bundle()  # the user's cache: built once per version, as `spawn launch` does
        sys.stderr.write(f"\ne2e: bundle {built.path.name} {built.sha256} in "
                         f"{time.monotonic() - started:.1f}s\n")
        bundle_path = str(built.path)

        container = Container(f"spawn-e2e-{run_id}", network, mask=host_enabled_units())
        stack.callback(container.close)
        started = time.monotonic()
        container.boot()
        sys.stderr.write(f"e2e: container booted in {time.monotonic() - started:.2f}s\n")
        world = Cloud(network=network, moto_url=moto_url, bundle_path=bundle_path, container=container,
                      workdir=workdir, served_bundle=built.path)
        stack.callback(lambda: world.imds.stop() if world.imds else None)
        stack.callback(dump_journal, world)
        yield world


def spored_events(text: str) -> list[dict[str, Any]]:
    """The agent's JSON lines from ``journalctl -o cat``."""
    events = []
    for line in text.splitlines():
        with contextlib.suppress(ValueError):
            obj = json.loads(line)
            if isinstance(obj, dict) and "event" in obj:
                events.append(obj)
    return events
