"""Instants and durations of the wire format (SPEC sections 2 and 3; decisions in docs/policy.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.timefmt import (
    DAY,
    HOUR,
    MAX_INSTANT,
    MIN_INSTANT,
    MINUTE,
    US,
    datetime_from_instant,
    format_duration,
    format_instant,
    instant_from_datetime,
    parse_duration,
    parse_instant,
    parse_instant_value,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def us(dt: datetime) -> int:
    return (dt - EPOCH) // timedelta(microseconds=1)


# ------------------------------------------------------------------------------------------ instants


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-02T15:04:05Z", datetime(2026, 3, 2, 15, 4, 5, tzinfo=UTC)),
        ("2026-03-02t15:04:05z", datetime(2026, 3, 2, 15, 4, 5, tzinfo=UTC)),  # lower-case t and z
        ("2026-03-02T15:04:05+00:00", datetime(2026, 3, 2, 15, 4, 5, tzinfo=UTC)),
        ("2026-03-02T15:04:05-00:00", datetime(2026, 3, 2, 15, 4, 5, tzinfo=UTC)),
        ("2026-03-02T16:04:05+01:00", datetime(2026, 3, 2, 15, 4, 5, tzinfo=UTC)),
        ("2026-03-02T09:34:05-05:30", datetime(2026, 3, 2, 15, 4, 5, tzinfo=UTC)),
        ("2026-03-03T14:03:05+23:59", datetime(2026, 3, 2, 14, 4, 5, tzinfo=UTC)),
        ("2026-03-02T15:04:05.5Z", datetime(2026, 3, 2, 15, 4, 5, 500000, tzinfo=UTC)),
        ("2026-03-02T15:04:05.000001Z", datetime(2026, 3, 2, 15, 4, 5, 1, tzinfo=UTC)),
        # beyond microseconds: truncated, never rounded
        ("2026-03-02T15:04:05.1234569Z", datetime(2026, 3, 2, 15, 4, 5, 123456, tzinfo=UTC)),
        ("2026-03-02T15:04:05.9999999999Z", datetime(2026, 3, 2, 15, 4, 5, 999999, tzinfo=UTC)),
        ("2024-02-29T00:00:00Z", datetime(2024, 2, 29, tzinfo=UTC)),  # leap day
        ("1970-01-01T00:00:00Z", EPOCH),
        ("1969-12-31T23:59:59Z", datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:59:59.999999Z", datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)),
        ("0001-01-01T00:30:00+00:30", datetime(1, 1, 1, tzinfo=UTC)),
        ("9999-12-31T23:30:00-00:29", datetime(9999, 12, 31, 23, 59, tzinfo=UTC)),
    ],
)
def test_valid_instants(text: str, expected: datetime) -> None:
    assert parse_instant(text) == us(expected)


@pytest.mark.parametrize(
    "text",
    [
        "2026-03-02T15:04:05",  # naive: no offset
        "2026-03-02T15:04:05.123",  # naive with a fraction
        "2026-03-02 15:04:05Z",  # space separator
        "2026-03-02_15:04:05Z",
        "2026-03-02T15:04Z",  # no seconds
        "2026-03-02T15:04:05+0100",  # offset without colon
        "2026-03-02T15:04:05+01",
        "2026-03-02T15:04:05+24:00",  # offset out of range
        "2026-03-02T15:04:05+01:60",
        "2026-03-02T15:04:05.Z",  # empty fraction
        "2026-03-02T15:04:05,5Z",  # comma fraction
        "2026-03-02T24:00:00Z",  # hour 24
        "2026-03-02T15:60:00Z",
        "2026-12-31T23:59:60Z",  # leap second
        "2026-02-29T00:00:00Z",  # not a leap year
        "2026-02-30T00:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-00-01T00:00:00Z",
        "2026-01-00T00:00:00Z",
        "0000-01-01T00:00:00Z",  # year 0
        "0001-01-01T00:00:00+00:01",  # before year 1 in UTC
        "9999-12-31T23:59:59-00:01",  # after year 9999 in UTC
        "10000-01-01T00:00:00Z",
        "26-03-02T15:04:05Z",
        "2026-3-2T15:04:05Z",
        "\uff12\uff10\uff12\uff16-03-02T15:04:05Z",  # full-width digits
        "2026-03-02T15:04:05Z\n",
        " 2026-03-02T15:04:05Z",
        "2026-03-02T15:04:05ZZ",
        "2026-03-02",
        "",
        "now",
    ],
)
def test_invalid_instants(text: str) -> None:
    with pytest.raises(ValueError):
        parse_instant(text)


def test_instant_bounds_are_years_1_to_9999_utc() -> None:
    assert parse_instant("0001-01-01T00:00:00Z") == MIN_INSTANT
    assert parse_instant("9999-12-31T23:59:59.999999Z") == MAX_INSTANT


def test_format_instant_is_utc_with_z_and_a_fraction_only_when_needed() -> None:
    assert format_instant(us(datetime(2026, 3, 2, 15, 4, 5, tzinfo=UTC))) == "2026-03-02T15:04:05Z"
    assert format_instant(us(datetime(2026, 3, 2, 15, 4, 5, 120, tzinfo=UTC))) == "2026-03-02T15:04:05.000120Z"
    assert format_instant(parse_instant("2026-03-02T16:04:05+01:00")) == "2026-03-02T15:04:05Z"
    assert format_instant(MIN_INSTANT) == "0001-01-01T00:00:00Z"
    assert format_instant(MAX_INSTANT) == "9999-12-31T23:59:59.999999Z"


def test_datetime_conversions() -> None:
    dt = datetime(2026, 3, 2, 15, 4, 5, 7, tzinfo=timezone(timedelta(hours=2)))
    assert datetime_from_instant(instant_from_datetime(dt)) == dt
    with pytest.raises(ValueError):
        instant_from_datetime(datetime(2026, 3, 2))  # naive


aware_datetimes = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]),
)


@settings(max_examples=300, deadline=None)
@given(aware_datetimes)
def test_parse_agrees_with_the_standard_library(dt: datetime) -> None:
    """The fast path (canonical ``...Z``) and the general path agree with ``datetime``."""
    assert parse_instant(dt.isoformat()) == instant_from_datetime(dt)
    utc = dt.astimezone(UTC)
    canonical = f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}Z"
    assert parse_instant(canonical) == instant_from_datetime(utc.replace(microsecond=0))
    assert parse_instant(canonical.lower()) == parse_instant(canonical)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=MIN_INSTANT, max_value=MAX_INSTANT))
def test_format_then_parse_round_trips(instant: int) -> None:
    text = format_instant(instant)
    assert text.endswith("Z")
    assert parse_instant(text) == instant


# ----------------------------------------------------------------------------------------- durations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P2W", 14 * DAY),
        ("P3D", 3 * DAY),
        ("PT24H", DAY),
        ("PT90M", 90 * MINUTE),
        ("P1DT12H", DAY + 12 * HOUR),
        ("PT1H", HOUR),
        ("PT3600S", HOUR),
        ("P1DT1H1M1S", DAY + HOUR + MINUTE + US),
        ("PT1H30M", 90 * MINUTE),
        ("P0D", 0),
        ("P30D", 30 * DAY),
        ("P90D", 90 * DAY),
        ("P007D", 7 * DAY),
    ],
)
def test_valid_durations(text: str, expected: int) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "P1M",  # months
        "P1Y",  # years
        "P1Y2D",
        "PT1.5H",  # fractions
        "P1.5D",
        "PT1,5H",
        "P1W2D",  # weeks mixed with other units
        "P1WT1H",
        "P",
        "PT",
        "P1DT",
        "PT1H1H",
        "PT1M1H",  # wrong order
        "P1H",  # hours need T
        "PT1D",
        "p1d",
        "pt1h",
        "P-1D",
        "P+1D",
        "-P1D",
        "PT1H ",
        " PT1H",
        "1D",
        "",
        "P\uff11D",  # full-width digit
    ],
)
def test_invalid_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize("text", ["P3D", "PT36H", "P1DT12H", "PT90M", "P1DT1H1M1S", "PT1S"])
def test_format_duration_round_trips(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_format_duration_canonical_forms() -> None:
    assert format_duration(3 * DAY) == "P3D"
    assert format_duration(DAY + 12 * HOUR) == "P1DT12H"
    assert format_duration(90 * MINUTE) == "PT1H30M"
    assert format_duration(0) == "PT0S"


def test_cached_lookups_accept_nothing_new() -> None:
    """Valid halves seen before must not make an invalid whole valid."""
    assert parse_instant("2026-03-02T15:04:05Z") == parse_instant("2026-03-02T15:04:05Z")  # warm the caches
    for text in ["2026-03-02t15:04:05Z", "2026-03-02X15:04:05Z", "2026-03-02T15:04:05X", "2026-03-02T15:04:05+"]:
        if text[10] in "Tt" and text[19] in "Zz":
            assert parse_instant(text) == parse_instant("2026-03-02T15:04:05Z")
        else:
            with pytest.raises(ValueError):
                parse_instant(text)
    with pytest.raises(ValueError):
        parse_instant_value(5)
    with pytest.raises(ValueError):
        parse_instant_value(None)
    assert parse_instant_value("2026-03-02T15:04:05Z") == parse_instant("2026-03-02T15:04:05Z")


def test_cached_formatting_is_exact() -> None:
    for text in ["2026-03-02T15:04:05Z", "2026-03-02T15:04:05.000001Z", "1969-12-31T23:59:59.999999Z"]:
        for _ in range(2):  # the second time from the caches
            assert format_instant(parse_instant(text)) == text
