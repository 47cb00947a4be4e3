"""`spawn sandbox` input handling: refused before anything starts, and a clear message when the
optional extra (moto) is not installed."""

from __future__ import annotations

import sys

import pytest

from controller.cli import main


def test_missing_extra_exits_2_with_the_install_command(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "moto.server", None)  # `import moto.server` -> ImportError
    assert main(["sandbox"]) == 2
    err = capsys.readouterr().err
    assert "optional extra 'sandbox'" in err
    assert "pip install 'spawn-spored[sandbox]'" in err
    assert "./dev sandbox" in err


def test_missing_extra_in_json_mode_is_a_json_error(monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "moto.server", None)
    assert main(["sandbox", "--json"]) == 2
    out = capsys.readouterr().out
    assert '"error": "usage"' in out


@pytest.mark.parametrize(("argv", "flag"), [
    (["--ttl", "5x"], "--ttl"),
    (["--ttl", "0s"], "--ttl"),
    (["--idle-timeout", "soon"], "--idle-timeout"),
    (["--spot-interruption-after=-1s"], "--spot-interruption-after"),
    (["--complete-after", "1h1"], "--complete-after"),
    (["--timeout", "400d"], "--timeout"),
    (["--ttl", ""], "--ttl"),
    (["--iam-policy", "s3:ReadAll"], "--iam-policy"),
])
def test_bad_flags_are_refused_naming_the_flag(argv: list[str], flag: str,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    # Refused before the local cloud would start: without moto the only other answer is the
    # missing-extra message, which must not appear.
    monkeypatch.setitem(sys.modules, "moto.server", None)
    assert main(["sandbox", *argv]) == 2
    err = capsys.readouterr().err
    assert flag in err
    assert "optional extra" not in err
