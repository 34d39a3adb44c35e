"""The path tally (SPEC section 5) and the JSON shapes of what session-tally publishes.

Minutes are exact integers; hours are rounded to 2 decimals only for display, ties away from zero.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Any

from domain.model import (
    AUTO_CONFIRMED,
    CONFIRMED,
    LATE_CANCELED,
    LATE_CANCELED_PENDING,
    STATUS_INDEX,
    STATUSES,
    UNCONFIRMED,
    UPCOMING,
    Meeting,
    Path,
    Program,
)
from domain.timefmt import format_instant

_USED = (STATUS_INDEX[CONFIRMED], STATUS_INDEX[AUTO_CONFIRMED], STATUS_INDEX[LATE_CANCELED])
_PENDING = (STATUS_INDEX[UNCONFIRMED], STATUS_INDEX[LATE_CANCELED_PENDING])
_UPCOMING = STATUS_INDEX[UPCOMING]
_CENT = Decimal("0.01")


def round_hours(value: Fraction) -> Decimal:
    """Round to 2 decimals, ties away from zero (exact: works on a Fraction)."""
    scaled = value * 100
    magnitude = (abs(scaled.numerator) * 2 + scaled.denominator) // (2 * scaled.denominator)
    return (Decimal(-magnitude if scaled < 0 else magnitude) * _CENT).quantize(_CENT, rounding=ROUND_HALF_UP)


def _cents_number(sixtieths_of_cents: int) -> int | float:
    """``x / 60`` cents rounded to a whole cent (ties away from zero), as a JSON number of hours."""
    cents = (2 * abs(sixtieths_of_cents) + 60) // 120
    if sixtieths_of_cents < 0:
        cents = -cents
    return cents // 100 if cents % 100 == 0 else cents / 100


def json_number(value: Decimal | None) -> int | float | None:
    """A 2-decimal Decimal as a JSON number: an integer when it is whole."""
    if value is None:
        return None
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def authorized(path: Path, program: Program) -> tuple[Decimal | None, str | None]:
    """The hours in force and where they come from: the path override if set, else the program's."""
    if path.override_at is not None and path.override_hours is not None:
        return path.override_hours, "path"
    hours = program.authorized_hours_in_force()
    return (hours, "program") if hours is not None else (None, None)


def tally(
    path: Path, program: Program, counts: list[int], minutes: list[int], as_of: int, version: int
) -> dict[str, Any]:
    """The tally document from per-status meeting counts and minutes (indexed like ``STATUSES``)."""
    used = sum(minutes[i] for i in _USED)
    pending = sum(minutes[i] for i in _PENDING)
    hours, source = authorized(path, program)
    # exact integer arithmetic in cents (the same results as round_hours on Fractions, much cheaper)
    remaining = None if hours is None else _cents_number(int(hours * 100) * 60 - used * 100)
    return {
        "path_id": path.path_id,
        "program_id": path.program_id,
        "org_id": program.org_id,
        "authorized_hours": json_number(hours),
        "authorized_source": source,
        "used_minutes": used,
        "pending_minutes": pending,
        "upcoming_minutes": minutes[_UPCOMING],
        "used_hours": _cents_number(used * 100),
        "remaining_hours": remaining,
        "meetings_by_status": dict(zip(STATUSES, counts, strict=True)),
        "version": version,
        "as_of": format_instant(as_of),
    }


def meeting_document(meeting: Meeting, status: str, disputed: bool) -> dict[str, Any]:
    """A meeting as `replay` lists it (the statuses topic adds program, org, version and time)."""
    return {
        "meeting_id": meeting.meeting_id,
        "path_id": meeting.path_id,
        "status": status,
        "start": format_instant(meeting.start),
        "end": format_instant(meeting.end),
        "minutes": meeting.minutes,
        "disputed": disputed,
    }
