"""Instants and durations of the wire format.

Instants are kept as integer microseconds since the Unix epoch (UTC): comparisons and arithmetic on
them are exact and cheap, which matters because every status decision compares instants.

- An instant on the wire is RFC 3339 with an offset (``Z``/``z`` or ``+HH:MM``); a naive timestamp is
  invalid. Fractions of a second beyond microseconds are truncated. Leap seconds (``:60``) are invalid.
- A duration is ISO-8601 with whole numbers: ``PnW`` alone, or ``P[nD][T[nH][nM][nS]]``; a day is 24 h.
- Every instant session-tally writes is RFC 3339 UTC with a ``Z`` suffix.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

US = 1_000_000
MINUTE = 60 * US
HOUR = 60 * MINUTE
DAY = 24 * HOUR
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MIN_INSTANT = (datetime(1, 1, 1, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)
MAX_INSTANT = (datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC) - _EPOCH) // timedelta(microseconds=1)

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(?:([Zz])|([+-])(\d{2}):(\d{2}))",
    re.ASCII,
)
_DURATION = re.compile(r"P(?:(\d+)W|(?=\d|T\d)(?:(\d+)D)?(?:T(?=\d)(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?)", re.ASCII)
_TZ_CACHE: dict[tuple[str, int, int], timezone] = {}
#: the two forms as anchored regular expressions with ASCII digits (both are matched with re.ASCII), for
#: the published JSON Schemas; the parsers below check the rest (ranges of fields, bounds)
INSTANT_PATTERN = "^" + _RFC3339.pattern.replace(r"\d", "[0-9]") + "$"
DURATION_PATTERN = "^" + _DURATION.pattern.replace(r"\d", "[0-9]") + "$"


_CANONICAL = re.compile(r"(\d{4}-\d{2}-\d{2})T([01]\d|2[0-3]):([0-5]\d):([0-5]\d)Z", re.ASCII)
_DAYS: dict[str, int] = {}


def _days_since_epoch(date_text: str) -> int:
    days = _DAYS.get(date_text)
    if days is None:
        days = (datetime.strptime(date_text, "%Y-%m-%d").replace(tzinfo=UTC) - _EPOCH).days
        if len(_DAYS) < 100_000:
            _DAYS[date_text] = days
    return days


# The common form "YYYY-MM-DDTHH:MM:SSZ" is looked up in two caches filled by the full parser: only
# strings that passed it (a valid date; a valid time of day) are ever keys, so a hit on both halves of a
# 20-character "...T...Z" string is a valid instant.
_DAY_START: dict[str, int] = {}  # "YYYY-MM-DD" -> its midnight UTC, µs since the epoch
_TIME_OF_DAY: dict[str, int] = {}  # "HH:MM:SS" -> µs since midnight (at most 86,400 keys)


def parse_instant(text: str) -> int:
    """RFC 3339 timestamp with an offset -> microseconds since the epoch. Raises ValueError."""
    if len(text) == 20 and text[10] == "T" and text[19] == "Z":
        day = _DAY_START.get(text[:10])
        if day is not None:
            time_of_day = _TIME_OF_DAY.get(text[11:19])
            if time_of_day is not None:
                return day + time_of_day
    return _parse_instant(text)


def parse_instant_value(value: Any) -> int:
    """:func:`parse_instant` for a value of any type (ValueError unless it is a string); one call, as
    the schema's validator of every timestamp field."""
    if type(value) is str:
        return parse_instant(value)
    raise ValueError("expected an RFC 3339 string")


def _parse_instant(text: str) -> int:
    fast = _CANONICAL.fullmatch(text)
    if fast is not None:  # the common "YYYY-MM-DDTHH:MM:SSZ" form, without building a datetime
        date_text, hh, mm, ss = fast.groups()
        midnight = _days_since_epoch(date_text) * DAY
        time_of_day = ((int(hh) * 60 + int(mm)) * 60 + int(ss)) * US
        if len(_DAY_START) < 100_000:
            _DAY_START[date_text] = midnight
        _TIME_OF_DAY[text[11:19]] = time_of_day
        return midnight + time_of_day
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError("not an RFC 3339 timestamp with an offset")
    year, month, day, hour, minute, second, frac, zulu, sign, oh, om = m.groups()
    if zulu is not None:
        tz: timezone = UTC
    else:
        key = (sign, int(oh), int(om))
        tz_cached = _TZ_CACHE.get(key)
        if tz_cached is None:
            if key[1] > 23 or key[2] > 59:
                raise ValueError("offset out of range")
            delta = timedelta(hours=key[1], minutes=key[2])
            tz_cached = timezone(-delta if sign == "-" else delta)
            _TZ_CACHE[key] = tz_cached
        tz = tz_cached
    micro = int((frac + "000000")[:6]) if frac else 0
    dt = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micro, tzinfo=tz)
    us = (dt - _EPOCH) // timedelta(microseconds=1)
    if not MIN_INSTANT <= us <= MAX_INSTANT:
        raise ValueError("instant outside years 0001..9999 UTC")
    return us


_DAY_TEXT: dict[int, str] = {}  # days since the epoch -> "YYYY-MM-DDT"
_TIME_TEXT: dict[int, str] = {}  # µs since midnight, whole seconds -> "HH:MM:SSZ" (at most 86,400 keys)


def format_instant(us: int) -> str:
    """Microseconds since the epoch -> RFC 3339 UTC with a Z suffix (fraction only when non-zero)."""
    day, time_of_day = divmod(us, DAY)
    day_text = _DAY_TEXT.get(day)
    if day_text is not None:
        time_text = _TIME_TEXT.get(time_of_day)
        if time_text is not None:
            return day_text + time_text
    text = _format_instant(us)
    if not time_of_day % US:
        if len(_DAY_TEXT) < 100_000:
            _DAY_TEXT[day] = text[:11]
        _TIME_TEXT[time_of_day] = text[11:]
    return text


def _format_instant(us: int) -> str:
    d = _EPOCH + timedelta(microseconds=us)
    text = f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:{d.second:02d}"
    return f"{text}.{d.microsecond:06d}Z" if d.microsecond else text + "Z"


def instant_from_datetime(dt: datetime) -> int:
    if dt.tzinfo is None:
        raise ValueError("naive datetime")
    return (dt - _EPOCH) // timedelta(microseconds=1)


def datetime_from_instant(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def parse_duration(text: str) -> int:
    """ISO-8601 duration (whole numbers; ``PnW`` alone or ``P[nD][T[nH][nM][nS]]``) -> microseconds."""
    m = _DURATION.fullmatch(text)
    if m is None:
        raise ValueError("not an ISO-8601 duration of weeks, or days/hours/minutes/seconds")
    weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return (((weeks * 7 + days) * 24 + hours) * 60 + minutes) * 60 * US + seconds * US


def format_duration(us: int) -> str:
    """Microseconds (whole seconds) -> a canonical ISO-8601 duration such as ``P3D`` or ``PT36H``."""
    seconds = us // US
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    out = "P" + (f"{days}D" if days else "")
    time = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (f"{secs}S" if secs else "")
    if time:
        out += "T" + time
    return out if out != "P" else "PT0S"
