"""``output.Relay``: the Output of a launch that runs inside `spawn sandbox` or `spawn selftest`."""

from __future__ import annotations

import io

from controller.output import Relay
from spored.errors import AwsError


def test_a_relay_hands_everything_to_its_caller_and_writes_nothing() -> None:
    warnings: list[str] = []
    infos: list[str] = []
    steps: list[tuple[str, str]] = []
    out = Relay(on_warning=warnings.append, on_info=infos.append,
                on_step=lambda step, message: steps.append((step, message)))
    out.warn("careful")
    out.info("removed: sg-1")
    with out.progress(["validate", "launch"]) as update:
        update("validate", "flags ok")
    out.result({"instances": []})
    out.error(AwsError("boom"))
    assert (warnings, infos, steps) == (["careful"], ["removed: sg-1"], [("validate", "flags ok")])
    assert out.results == [{"instances": []}]
    for stream in (out.stdout, out.stderr):
        assert isinstance(stream, io.StringIO) and stream.getvalue() == ""


def test_without_on_info_information_goes_where_warnings_go() -> None:
    seen: list[str] = []
    out = Relay(on_warning=seen.append)
    out.info("a")
    out.warn("b")
    with out.progress(["x"]) as update:
        update("x", "ignored")
    assert seen == ["a", "b"]
