"""A meeting's status at time T (SPEC section 4), derived from its recorded facts and the program's
policy history. The clock only turns recorded facts into time-driven statuses, so the same facts give
the same status whenever and however fast they were processed.

Let W be the late-cancel window in force at the cancellation's ``occurred_at`` and
``deadline = end + auto_confirm_window in force at end``:

- canceled or rescheduled at t: late when W is set and ``t >= start - W``; not late -> ``canceled`` /
  ``rescheduled``; late -> ``late_cancel_waived`` when a dispute was upheld, else
  ``late_canceled_pending`` while ``T < deadline`` and ``late_canceled`` from the deadline on;
- an answer recorded -> ``confirmed`` / ``did_not_occur``;
- otherwise ``upcoming`` while ``T < start``, ``unconfirmed`` while ``T < deadline``, then
  ``auto_confirmed``.
"""

from __future__ import annotations

from domain.model import (
    AUTO_CONFIRMED,
    BY_CANCEL,
    CANCELED,
    CONFIRMED,
    DID_NOT_OCCUR,
    LATE_CANCEL_WAIVED,
    LATE_CANCELED,
    LATE_CANCELED_PENDING,
    NOT_CANCELED,
    RESCHEDULED,
    UNCONFIRMED,
    UPCOMING,
    Meeting,
    Program,
)


def deadline(meeting: Meeting, program: Program) -> int:
    """The auto-confirm deadline: end + the auto-confirm window in force at the meeting's end."""
    return meeting.end + program.auto_confirm_window_at(meeting.end)


def is_late(meeting: Meeting, program: Program) -> bool:
    """Was the recorded cancel/reschedule inside the late-cancel window in force at its time?"""
    window = program.late_cancel_window_at(meeting.cancel_at)
    return window is not None and meeting.cancel_at >= meeting.start - window


def status_at(meeting: Meeting, program: Program, t: int) -> str:
    if meeting.cancel_kind != NOT_CANCELED:
        if not is_late(meeting, program):
            return CANCELED if meeting.cancel_kind == BY_CANCEL else RESCHEDULED
        if meeting.waived:
            return LATE_CANCEL_WAIVED
        return LATE_CANCELED_PENDING if t < deadline(meeting, program) else LATE_CANCELED
    if meeting.answer is not None:
        return CONFIRMED if meeting.answer else DID_NOT_OCCUR
    if t < meeting.start:
        return UPCOMING
    return UNCONFIRMED if t < deadline(meeting, program) else AUTO_CONFIRMED


def next_change_at(meeting: Meeting, program: Program, t: int) -> int | None:
    """The first instant after ``t`` at which the clock alone changes the status, or None."""
    if meeting.cancel_kind != NOT_CANCELED:
        if meeting.waived or not is_late(meeting, program):
            return None
        d = deadline(meeting, program)
        return d if t < d else None
    if meeting.answer is not None:
        return None
    if t < meeting.start:
        return meeting.start
    d = deadline(meeting, program)
    return d if t < d else None
