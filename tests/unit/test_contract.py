"""Properties of the shared contract: one duration grammar, one timestamp form, one action set."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from spored.contract import (
    ACTION_FORM,
    DURATION_FORM,
    MAX_DURATION,
    METADATA_TAG_KEY_RE,
    TAGS,
    TIMESTAMP_FORM,
    Action,
    format_duration,
    format_remaining,
    format_timestamp,
    is_managed,
    parse_action,
    parse_duration,
    parse_timestamp,
)
from spored.errors import ExitStatus, ValidationError

# Time limits per example would turn a loaded shared machine into failures.
NO_DEADLINE = settings(deadline=None)

MAX_SECONDS = int(MAX_DURATION.total_seconds())
seconds_in_range = st.integers(min_value=1, max_value=MAX_SECONDS)


# ----------------------------------------------------------------------------------------------
# Durations
# ----------------------------------------------------------------------------------------------
@NO_DEADLINE
@given(seconds_in_range)
def test_duration_round_trip(seconds: int) -> None:
    delta = timedelta(seconds=seconds)
    text = format_duration(delta)
    assert parse_duration(text) == delta
    assert re.fullmatch(r"([0-9]+[wdhms])+", text)


@NO_DEADLINE
@given(seconds_in_range)
def test_canonical_form_is_a_fixed_point(seconds: int) -> None:
    text = format_duration(timedelta(seconds=seconds))
    assert format_duration(parse_duration(text)) == text


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("30m", 1800), ("1h30m", 5400), ("2d", 172800), ("1w", 604800),
    ("1w1d1h1m1s", 694861), ("90m", 5400), ("0h5m", 300), ("366d", 366 * 86400), ("1m1m", 120),
    (" 2h ", 7200),
])
def test_duration_examples(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(("delta", "text"), [
    (timedelta(seconds=90), "1m30s"), (timedelta(hours=24), "1d"), (timedelta(days=8), "1w1d"),
    (timedelta(minutes=150), "2h30m"),
])
def test_canonical_examples(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text


@pytest.mark.parametrize("text", [
    "", " ", "0", "0s", "0m0s", "5", "m", "1H", "1M", "2D", "1h 30m", "1 h", "-5m", "+5m", "1.5h",
    "1y", "1ms", "h1", "1h-", "one hour", "367d", "53w", "366d1s", "99999999999999999999999d",
    "١h", "１h", "1h\x00",
])
def test_bad_durations_are_rejected_naming_field_value_and_form(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_duration(text, field="--ttl")
    err = caught.value
    assert err.field == "--ttl" and err.exit_status is ExitStatus.USAGE
    assert err.message.startswith("--ttl: ")
    assert repr(text) in err.message
    assert DURATION_FORM in err.message or "366 days" in err.message


@NO_DEADLINE
@given(st.integers(min_value=MAX_SECONDS + 1, max_value=10**12))
def test_longer_than_366_days_is_rejected(seconds: int) -> None:
    with pytest.raises(ValidationError, match="366 days"):
        parse_duration(f"{seconds}s")


@NO_DEADLINE
@given(prefix=st.from_regex(r"[0-9]{1,4}[smhdw]", fullmatch=True),
       junk=st.characters(blacklist_characters="0123456789smhdw"),
       suffix=st.from_regex(r"[0-9]{1,4}[smhdw]", fullmatch=True))
@example(prefix="1h", junk=" ", suffix="30m")
def test_any_foreign_character_inside_is_rejected(prefix: str, junk: str, suffix: str) -> None:
    with pytest.raises(ValidationError):
        parse_duration(prefix + junk + suffix)


@NO_DEADLINE
@given(st.text(max_size=12))
def test_parse_never_fails_any_other_way(text: str) -> None:
    try:
        result = parse_duration(text)
    except ValidationError:
        return
    assert timedelta(seconds=1) <= result <= MAX_DURATION


def test_non_strings_are_rejected() -> None:
    with pytest.raises(ValidationError):
        parse_duration(3600)  # type: ignore[arg-type]


def test_format_refuses_non_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        format_duration(timedelta(0))
    with pytest.raises(ValueError, match="positive"):
        format_duration(timedelta(seconds=-5))


@NO_DEADLINE
@given(st.integers(min_value=-MAX_SECONDS, max_value=MAX_SECONDS))
def test_format_remaining_is_signed(seconds: int) -> None:
    text = format_remaining(timedelta(seconds=seconds))
    if seconds == 0:
        assert text == "0s"
    elif seconds < 0:
        assert text.startswith("-") and parse_duration(text[1:]) == timedelta(seconds=-seconds)
    else:
        assert parse_duration(text) == timedelta(seconds=seconds)


# ----------------------------------------------------------------------------------------------
# Timestamps
# ----------------------------------------------------------------------------------------------
aware_moments = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                             timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                                        timezone(timedelta(hours=-8))]))


@NO_DEADLINE
@given(aware_moments)
@example(datetime(999, 1, 1, tzinfo=UTC))
def test_timestamp_round_trip_to_the_second(moment: datetime) -> None:
    text = format_timestamp(moment)
    assert text.endswith("Z") and "+" not in text
    parsed = parse_timestamp(text)
    assert parsed.tzinfo is not None and parsed.utcoffset() == timedelta(0)
    assert parsed == moment.replace(microsecond=0)


@NO_DEADLINE
@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
def test_naive_datetimes_are_not_timestamps(moment: datetime) -> None:
    with pytest.raises(ValueError, match="naive"):
        format_timestamp(moment)


def test_fractional_seconds_are_accepted() -> None:
    assert parse_timestamp("2026-11-28T17:00:00.5Z") == datetime(2026, 11, 28, 17, 0, 0, 500000, tzinfo=UTC)


@pytest.mark.parametrize("text", [
    "2026-11-28T17:00:00", "2026-11-28T17:00:00+00:00", "2026-11-28T17:00:00z", "2026-11-28 17:00:00Z",
    "2026-11-28", "17:00:00Z", "", "tomorrow", "2026-11-28T17:00Z", "２０２６-11-28T17:00:00Z",
])
def test_timestamps_other_than_utc_z_are_rejected_naming_the_form(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_timestamp(text, field="spawn:expires-at")
    assert caught.value.field == "spawn:expires-at"
    assert repr(text) in caught.value.message and TIMESTAMP_FORM in caught.value.message


@pytest.mark.parametrize("text", ["2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z", "2026-11-28T24:00:00Z"])
def test_impossible_dates_are_rejected(text: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(repr(text))):
        parse_timestamp(text)


# ----------------------------------------------------------------------------------------------
# Actions, managed flag, tag keys
# ----------------------------------------------------------------------------------------------
@NO_DEADLINE
@given(st.sampled_from(list(Action)), st.sampled_from([str.lower, str.upper, str.title]),
       st.sampled_from(["", " ", "\t"]))
def test_actions_parse_in_any_case(action: Action, case: object, pad: str) -> None:
    assert callable(case)
    assert parse_action(pad + case(action.value) + pad) is action


@NO_DEADLINE
@given(st.text(max_size=20).filter(lambda t: t.strip().lower() not in {a.value for a in Action}))
@example("reboot")
@example("")
def test_anything_else_is_not_an_action(text: str) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_action(text, field="--on-complete")
    assert caught.value.field == "--on-complete"
    assert repr(text) in caught.value.message and ACTION_FORM in caught.value.message


@pytest.mark.parametrize(("tags", "managed"), [
    ({"spawn:managed": "true"}, True), ({"spawn:managed": " TRUE "}, False),
    ({"spawn:managed": "TRUE"}, False), ({"spawn:managed": "true "}, False),
    ({"spawn:managed": "false"}, False), ({"spawn:managed": "yes"}, False),
    ({"spawn:managed": ""}, False), ({}, False), ({"spawn:Managed": "true"}, False),
])
def test_is_managed(tags: dict[str, str], managed: bool) -> None:
    assert is_managed(tags) is managed


def test_every_contract_tag_key_is_visible_in_instance_metadata() -> None:
    assert TAGS
    for spec in TAGS:
        assert METADATA_TAG_KEY_RE.match(spec.key), spec.key
