"""The live tier: `spawn selftest` in a real AWS account, for maintainers.

Collected only with SPAWN_LIVE_TESTS=1 (see tests/conftest.py) and never in CI. It uses the
credentials and region of the environment the test run started with (AWS_PROFILE, AWS_REGION, ...),
launches two nano instances for at most 10 minutes (under a cent) and removes everything it created.

    SPAWN_LIVE_TESTS=1 AWS_PROFILE=sandbox AWS_REGION=us-east-1 ./dev test tests/live -p no:xdist
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import LIVE_ENV

SPAWN = str(Path(sys.executable).with_name("spawn"))


def test_selftest_passes_every_stage_in_a_real_account() -> None:
    env = {k: v for k, v in LIVE_ENV.items() if not k.startswith("AWS_ENDPOINT_URL")}
    done = subprocess.run([SPAWN, "selftest", "--json"], capture_output=True, text=True, env=env,
                          timeout=15 * 60, check=False)
    report = json.loads(done.stdout)
    failed = [s for s in report["stages"] if s["verdict"] not in ("passed", "inconclusive")]
    assert done.returncode == 0 and report["ok"], json.dumps(failed, indent=2) + done.stderr[-3000:]
    assert report["local_cloud"] is False
    verdicts = {s["name"]: s["verdict"] for s in report["stages"]}
    # On AWS nothing may be "not decided here": every stage is answered by AWS itself.
    assert "not-decided-here" not in verdicts.values()
    assert verdicts["permissions"] in ("passed", "inconclusive")
    assert all(verdicts[n] == "passed" for n in ("failsafe", "agent", "agent-ends", "terminated"))
    assert report["cleanup"]["failed"] == []
