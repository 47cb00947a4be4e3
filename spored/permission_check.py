"""``python -m spored.permission_check``: the agent's permission proof, in a short-lived child.

Runs the DryRun calls ``spored.permission_proof`` lists against the agent's own instance (so boto3
is never loaded into the long-running daemon), then publishes the result on three channels:

- one line on standard error (``spored: permissions denied: ...``): the unit sends it to the
  journal and to the system console, which the controller reads with GetConsoleOutput - the
  channel that works when every EC2 permission is denied;
- the JSON event ``permissions.checked`` on standard output (the journal);
- a JSON result file (``--out``) the daemon reads to put the verdict in its status.

Exit 0 when the proof ran (whatever it found), 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from spored.contract import Action, format_timestamp, parse_action
from spored.errors import ValidationError
from spored.permission_proof import Check, checks_for, prove

# The daemon kills the child after this long (botocore worst case ~30 s per call, three calls).
CHECK_TIMEOUT = 120.0


def spawn_check(region: str, instance_id: str, actions: Sequence[Action], out: Path,
                endpoint: str = "") -> subprocess.Popen[bytes]:
    """Start the child; it inherits the daemon's stdout (journal) and stderr (journal + console)."""
    argv = [sys.executable, "-m", "spored.permission_check", "--region", region,
            "--instance-id", instance_id, "--out", str(out)]
    for action in actions:
        argv += ["--action", str(action)]
    if endpoint:
        argv += ["--endpoint", endpoint]
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, close_fds=True)


def read_result(path: Path) -> dict[str, object] | None:
    """The child's result file, or None when absent or unreadable (never raises)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


RESULT_FILE = "permissions.json"
# An inconclusive proof (throttled, unreachable, no credentials yet) is tried again this often.
RETRY_INCONCLUSIVE = 300.0


class PermissionCheck:
    """The daemon's side: when to start the child, and its last result. No boto3 here.

    A check runs at start and whenever the set of lifecycle actions changes (``spawn config set
    spawn:on-complete ...``); an inconclusive one is repeated after ``RETRY_INCONCLUSIVE``.
    """

    def __init__(self, runtime: Path) -> None:
        self.path = runtime / RESULT_FILE
        self.result: dict[str, object] | None = None
        self._checked: tuple[Action, ...] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._retry_at = 0.0

    def reap(self, monotonic: float) -> dict[str, object] | None:
        """A result that just arrived, else None. Kills a child past CHECK_TIMEOUT."""
        proc = self._proc
        if proc is None:
            return None
        code = proc.poll()
        if code is None:
            if monotonic - self._started < CHECK_TIMEOUT:
                return None
            proc.kill()
            proc.wait()
        self._proc = None
        result = read_result(self.path) if code == 0 else None
        if result is None:
            self._checked = None  # no answer: try again after the retry delay
            self._retry_at = monotonic + RETRY_INCONCLUSIVE
            return None
        self.result = result
        if result.get("verdict") == "inconclusive":
            self._retry_at = monotonic + RETRY_INCONCLUSIVE
            self._checked = None
        return result

    def due(self, actions: tuple[Action, ...], monotonic: float) -> bool:
        return (self._proc is None and actions != self._checked
                and (self._checked is not None or monotonic >= self._retry_at))

    def start(self, region: str, instance_id: str, actions: tuple[Action, ...], monotonic: float,
              endpoint: str = "") -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
        self._proc = spawn_check(region, instance_id, actions, self.path, endpoint)
        self._started = monotonic
        self._checked = actions

    @property
    def denied(self) -> list[str]:
        denied = (self.result or {}).get("denied")
        return [str(a) for a in denied] if isinstance(denied, list) else []

    def summary(self) -> str | None:
        text = (self.result or {}).get("summary")
        return str(text) if text else None


def main(argv: Sequence[str] | None = None) -> int:
    from spored import logs
    from spored.ec2 import Ec2
    from spored.state import write_atomic

    parser = argparse.ArgumentParser(prog="python -m spored.permission_check")
    parser.add_argument("--region", required=True)
    parser.add_argument("--instance-id", required=True)
    parser.add_argument("--action", action="append", required=True,
                        help="a lifecycle action to prove (terminate, stop, hibernate); repeatable")
    parser.add_argument("--out", required=True, type=Path, help="where to write the JSON result")
    parser.add_argument("--endpoint", default="")
    args = parser.parse_args(argv)
    try:
        actions = [parse_action(a, field="--action") for a in args.action]
    except ValidationError as exc:
        parser.error(exc.message)
    logs.configure(json=True, stream=sys.stdout)
    log = logs.get("spored.permission_check")
    ec2 = Ec2(args.region, args.endpoint)
    results: list[tuple[Check, str]] = []
    codes: dict[str, str] = {}
    for check in checks_for(actions):
        code = ec2.dry_run(check.operation, args.instance_id, hibernate=check.hibernate)
        results.append((check, code))
        codes[check.permission + (" (Hibernate=true)" if check.hibernate else "")] = code
    proof = prove(results)
    checked_at = format_timestamp(datetime.now(UTC))
    sys.stderr.write(proof.console_line() + "\n")
    sys.stderr.flush()
    event = log.error if proof.denied else log.info
    event("permissions.checked", verdict=str(proof.verdict), allowed=list(proof.allowed),
          denied=list(proof.denied), inconclusive=list(proof.inconclusive), codes=codes,
          actions=[str(a) for a in actions], instance_id=args.instance_id)
    result = {"checked_at": checked_at, "actions": [str(a) for a in actions], "codes": codes,
              **proof.to_dict(), "summary": proof.summary()}
    try:
        write_atomic(args.out, json.dumps(result) + "\n", mode=0o644, durable=False)
    except OSError as exc:
        log.error("permissions.result_unwritable", path=str(args.out), error=exc.strerror)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
