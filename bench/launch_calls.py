"""Benchmark: AWS API calls and wall time per `spawn launch` (cold: new role; warm: existing role),
`spawn list` over 10 regions x 100 instances (concurrent vs one region at a time, same run), and
`spawn --help` start-up time.

Everything runs against a moto server this script starts in its own process (so the server does
not share the client's GIL), on loopback, with fake credentials. moto answers in milliseconds;
real AWS takes tens to hundreds of ms per call, so ``--rtt-ms`` can add an emulated round trip to
every call (a labelled, explicit delay in the benchmark only) to show what concurrency buys there.

    .venv/bin/python bench/launch_calls.py [--rtt-ms 50] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
REGIONS = ("us-east-1", "us-east-2", "us-west-1", "us-west-2", "eu-west-1", "eu-west-2",
           "eu-central-1", "ap-southeast-1", "ap-southeast-2", "ap-northeast-1")
PER_REGION = 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def moto_servers(count: int) -> Iterator[list[str]]:
    """``count`` moto server processes on loopback."""
    ports = [free_port() for _ in range(count)]
    procs = [subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for port in ports]
    try:
        deadline = time.monotonic() + 60
        for port in ports:
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
                time.sleep(0.05)  # waiting for the server process to listen (bounded above)
            else:
                raise RuntimeError("moto servers did not start within 60 s")
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    with moto_servers(1) as (url,):
        yield url


def route_by_region(endpoints: dict[str, str]) -> Any:
    """Send each request to its region's own server, as AWS has an endpoint per region.

    The region is read from the SigV4 credential scope; moto does not check signatures."""
    import re
    from urllib.parse import urlsplit, urlunsplit

    from controller import aws

    scope = re.compile(r"Credential=[^/]+/\d{8}/([a-z0-9-]+)/")

    def reroute(request: Any, **_: Any) -> None:
        auth = request.headers.get("Authorization", b"")
        match = scope.search(auth.decode() if isinstance(auth, bytes) else str(auth))
        if match and match.group(1) in endpoints:
            netloc = urlsplit(endpoints[match.group(1)]).netloc
            request.url = urlunsplit(urlsplit(request.url)._replace(netloc=netloc))

    aws.session().events.register("before-send", reroute)
    return reroute


def fake_environment(endpoint: str, home: Path) -> None:
    os.environ.update({
        "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing", "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true", "HOME": str(home),
    })


def make_bundle(directory: Path) -> Path:
    path = directory / "spored-bundle-0.0.bench.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        data = b"#!/bin/sh\n"
        info = tarfile.TarInfo("spored-bundle-0.0.bench/install.sh")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return path


def add_rtt(rtt_ms: float) -> None:
    """Emulate a network round trip on every call (benchmark only)."""
    if rtt_ms <= 0:
        return
    from controller import aws

    def delay(**_: Any) -> None:
        time.sleep(rtt_ms / 1000)

    aws.session().events.register("before-send", delay)


def launch_once(bundle: Path, label: str) -> dict[str, Any]:
    from controller import aws
    from controller.cli import main

    calls: list[tuple[str, str]] = []

    def hook(service: str, operation: str) -> None:
        calls.append((service, operation))

    aws.CALL_HOOKS.append(hook)
    sink = io.StringIO()
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(io.StringIO()):
            code = main(["launch", "-t", "t3.micro", "--ttl", "1h", "--agent-bundle", str(bundle),
                         "--no-wait", "--json", "--region", "us-east-1"])
    finally:
        aws.CALL_HOOKS.remove(hook)
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"{label} launch failed with exit {code}: {sink.getvalue()}")
    return {"label": label, "seconds": round(seconds, 3), "api_calls": len(calls),
            "by_operation": dict(Counter(f"{s}.{o}" for s, o in calls))}


def populate(regions: tuple[str, ...], endpoints: dict[str, str] | None = None) -> None:
    import boto3

    for region in regions:
        url = (endpoints or {}).get(region)
        ec2 = boto3.client("ec2", region_name=region, endpoint_url=url)
        ssm = boto3.client("ssm", region_name=region, endpoint_url=url)
        ami = ssm.get_parameter(
            Name="/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64")["Parameter"]["Value"]
        ec2.run_instances(ImageId=ami, InstanceType="t3.micro", MinCount=PER_REGION, MaxCount=PER_REGION,
                          TagSpecifications=[{"ResourceType": "instance", "Tags": [
                              {"Key": "spawn:managed", "Value": "true"}, {"Key": "Name", "Value": "bench"},
                              {"Key": "spawn:ttl", "Value": "4h"}]}])


def time_list(regions: tuple[str, ...], workers: int, repeats: int = 3) -> dict[str, Any]:
    from controller import aws
    from controller.lifecycle import list as listing

    runs = []
    count = 0
    calls = Counter[str]()

    def hook(service: str, operation: str) -> None:
        calls[f"{service}.{operation}"] += 1

    aws.CALL_HOOKS.append(hook)
    try:
        for _ in range(repeats):
            started = time.perf_counter()
            rows, failures = listing.collect(regions, listing.DEFAULT_STATES, workers=workers)
            runs.append(time.perf_counter() - started)
            if failures:
                raise RuntimeError(f"regions failed: {failures}")
            count = len(rows)
    finally:
        aws.CALL_HOOKS.remove(hook)
    return {"workers": workers, "instances": count, "median_seconds": round(statistics.median(runs), 3),
            "runs": [round(r, 3) for r in runs], "api_calls_per_run": sum(calls.values()) // repeats}


def help_startup(repeats: int = 10) -> dict[str, Any]:
    spawn = Path(sys.executable).parent / "spawn"
    argv = [str(spawn), "--help"] if spawn.exists() else [sys.executable, "-m", "controller.cli", "--help"]
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        runs.append(time.perf_counter() - started)
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from controller.cli import build_parser; build_parser(); "
         "print(sorted(m for m in ('boto3', 'botocore', 'structlog', 'requests') if m in sys.modules))"],
        capture_output=True, text=True, check=True, cwd=ROOT)
    return {"command": " ".join(Path(a).name for a in argv), "min_seconds": round(min(runs), 3),
            "median_seconds": round(statistics.median(runs), 3), "target_seconds": 0.3,
            "heavy_modules_imported_by_parser": json.loads(probe.stdout.replace("'", '"'))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rtt-ms", type=float, default=0.0,
                        help="emulated round trip added to every AWS call (default 0: raw moto)")
    parser.add_argument("--per-region-servers", action="store_true",
                        help="also measure `spawn list` with one moto server process per region")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"rtt_ms": args.rtt_ms}
    with tempfile.TemporaryDirectory() as tmp, moto_server() as endpoint:
        home = Path(tmp) / "home"
        home.mkdir()
        fake_environment(endpoint, home)
        bundle = make_bundle(Path(tmp))
        import boto3

        # moto loads its instance-type and AMI catalogues on first use (seconds): not ours to count.
        warmup = time.perf_counter()
        boto3.client("ec2", region_name="us-east-1").describe_instance_types(InstanceTypes=["t3.micro"])
        results["moto_warmup_seconds"] = round(time.perf_counter() - warmup, 3)
        add_rtt(args.rtt_ms)
        results["launch_cold"] = launch_once(bundle, "cold (role, profile, group, bucket created)")
        results["launch_warm"] = launch_once(bundle, "warm (everything exists)")

        populate(REGIONS)
        concurrent = time_list(REGIONS, workers=16)
        sequential = time_list(REGIONS, workers=1)
        results["list"] = {
            "regions": len(REGIONS), "instances": concurrent["instances"],
            "concurrent": concurrent, "one_by_one": sequential,
            "speedup": round(sequential["median_seconds"] / max(concurrent["median_seconds"], 1e-9), 2),
        }
    if args.per_region_servers:
        with moto_servers(len(REGIONS)) as urls:
            endpoints = dict(zip(REGIONS, urls, strict=True))
            populate(REGIONS, endpoints)
            from controller import aws

            handler = route_by_region(endpoints)
            try:
                concurrent = time_list(REGIONS, workers=16)
                sequential = time_list(REGIONS, workers=1)
            finally:
                aws.session().events.unregister("before-send", handler)
            results["list_server_per_region"] = {
                "regions": len(REGIONS), "instances": concurrent["instances"],
                "concurrent": concurrent, "one_by_one": sequential,
                "speedup": round(sequential["median_seconds"] / max(concurrent["median_seconds"], 1e-9), 2),
            }
    results["help"] = help_startup()
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"moto warm-up (not counted): {results['moto_warmup_seconds']} s; emulated RTT: {args.rtt_ms} ms")
    for key in ("launch_cold", "launch_warm"):
        r = results[key]
        print(f"spawn launch {r['label']}: {r['api_calls']} AWS calls, {r['seconds']} s")
        print("   " + ", ".join(f"{op} x{n}" for op, n in sorted(r["by_operation"].items())))
    for key, where in (("list", "one moto server"), ("list_server_per_region", "a moto server per region")):
        if key not in results:
            continue
        lst = results[key]
        print(f"spawn list, {lst['regions']} regions, {lst['instances']} instances, {where}: concurrent "
              f"{lst['concurrent']['median_seconds']} s vs one-by-one {lst['one_by_one']['median_seconds']} s"
              f" -> {lst['speedup']}x ({lst['concurrent']['api_calls_per_run']} calls per run)")
    h = results["help"]
    heavy = h["heavy_modules_imported_by_parser"] or "none"
    print(f"{h['command']}: min {h['min_seconds']} s, median {h['median_seconds']} s (target < 0.3 s); "
          f"heavy modules imported while building the parser: {heavy}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
