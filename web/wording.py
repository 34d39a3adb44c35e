"""The words the screens use, after the product's help pages: statuses, rejection reasons, durations
and hours. Presentation only: no rule of the pipeline is decided here."""

from __future__ import annotations

from decimal import Decimal

from domain import reasons as R
from domain.timefmt import DAY, HOUR

STATUS_WORDS = {
    "upcoming": "Upcoming",
    "unconfirmed": "Awaiting confirmation",
    "confirmed": "Confirmed",
    "auto_confirmed": "Confirmed automatically",
    "did_not_occur": "Did not occur",
    "late_canceled_pending": "Late cancel (pending)",
    "late_canceled": "Late canceled",
    "late_cancel_waived": "Late cancel waived",
    "canceled": "Canceled",
    "rescheduled": "Rescheduled",
}

#: statuses that no longer show on the Meetings tab (SPEC section 4)
HIDDEN_STATUSES = frozenset({"canceled", "rescheduled"})

REASON_WORDS = {
    R.INVALID_JSON: "the message could not be read",
    R.TOO_LARGE: "the message is too large",
    R.SCHEMA_VIOLATION: "a value is not valid",
    R.UNKNOWN_TYPE: "this kind of change is not known",
    R.UNSUPPORTED_SCHEMA_VERSION: "this version of the message is not supported",
    R.FORBIDDEN: "your role may not make this change",
    R.SESSION_MANAGEMENT_DISABLED: (
        "session management is switched off for this organization; ask the support desk to switch it on"
    ),
    R.TENANT_MISMATCH: "it names a program or path of another organization",
    R.PROGRAM_EXISTS: "a program with this id already exists",
    R.MEETING_EXISTS: "a meeting with this id already exists",
    R.UNKNOWN_PROGRAM: "the program is not known",
    R.UNKNOWN_MEETING: "the meeting is not known",
    R.MEETING_NOT_STARTED: "the meeting has not started yet",
    R.CONFIRMATION_WINDOW_CLOSED: "the time to answer has passed; the meeting was confirmed automatically",
    R.ALREADY_ANSWERED: "this meeting was already answered",
    R.INVALID_TRANSITION: "the meeting's status no longer allows this",
}

#: (label, ISO-8601 duration) choices of the Configurations screen, within SPEC section 2's bounds
LATE_CANCEL_CHOICES = [
    ("No late cancels", ""),
    ("1 hour", "PT1H"),
    ("2 hours", "PT2H"),
    ("4 hours", "PT4H"),
    ("12 hours", "PT12H"),
    ("24 hours", "PT24H"),
    ("48 hours", "PT48H"),
    ("3 days", "P3D"),
    ("7 days", "P7D"),
    ("14 days", "P14D"),
    ("30 days", "P30D"),
]
AUTO_CONFIRM_CHOICES = [
    ("1 hour", "PT1H"),
    ("12 hours", "PT12H"),
    ("24 hours", "PT24H"),
    ("48 hours", "PT48H"),
    ("3 days", "P3D"),
    ("7 days", "P7D"),
    ("14 days", "P14D"),
    ("30 days", "P30D"),
    ("60 days", "P60D"),
    ("90 days", "P90D"),
]

KIND_WORDS = {
    "program.created": "creating the program",
    "program.settings_updated": "changing the program settings",
    "organization.session_management_set": "switching session management",
    "path.authorized_hours_set": "changing the authorized hours",
    "meeting.confirmation_submitted": "answering “Did this meeting occur?”",
    "meeting.disputed": "disputing the late cancel",
    "meeting.dispute_resolved": "resolving the dispute",
}


ROLE_WORDS = {
    "participant": "Participant (learner)",
    "facilitator": "Facilitator (coach)",
    "program_admin": "Program admin",
    "support": "Support desk",
    "system": "System",
}


def role_words(role: str) -> str:
    return ROLE_WORDS.get(role, role)


def length_words(minutes: int) -> str:
    """A meeting's length: "45 min", "1 h", "1 h 30 min"."""
    hours, rest = divmod(minutes, 60)
    if not hours:
        return f"{rest} min"
    return f"{hours} h" if not rest else f"{hours} h {rest} min"


def status_words(status: str) -> str:
    return STATUS_WORDS.get(status, status.replace("_", " "))


def reason_words(reason: str) -> str:
    return REASON_WORDS.get(reason, reason.replace("_", " "))


def duration_words(us: int | None, none: str = "No late cancels") -> str:
    """Microseconds -> "3 days" (whole days from 3 on), "24 hours", "90 minutes"; None -> ``none``."""
    if us is None:
        return none
    if us % DAY == 0 and us >= 3 * DAY:
        return f"{us // DAY} days"
    if us % HOUR == 0:
        hours = us // HOUR
        return "1 hour" if hours == 1 else f"{hours} hours"
    minutes = us // (60 * 1_000_000)
    return f"{minutes} minutes"


def hours_words(value: float | int | Decimal | None, none: str = "Not applicable") -> str:
    """A number of hours as the tab shows it: "12", "2.5", "-1.25"; None -> ``none``."""
    if value is None:
        return none
    number = Decimal(str(value)).quantize(Decimal("0.01"))
    text = f"{number:f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def minutes_as_hours(minutes: int) -> str:
    """Minutes shown as hours with up to 2 decimals (pending and upcoming figures)."""
    return hours_words(Decimal(minutes) / 60)


def window_choice(us: int | None, choices: list[tuple[str, str]]) -> dict[str, object]:
    """How a window in force shows in a window select: the matching choice, else "Other…" with an amount."""
    from domain.timefmt import parse_duration

    for _label, value in choices:
        if (us is None and value == "") or (value and us is not None and parse_duration(value) == us):
            return {"selected": value, "amount": None, "unit": "hours"}
    if us is None:
        return {"selected": choices[0][1], "amount": None, "unit": "hours"}
    if us % DAY == 0:
        return {"selected": "custom", "amount": us // DAY, "unit": "days"}
    return {"selected": "custom", "amount": max(1, us // HOUR), "unit": "hours"}


def form_choice(form: dict[str, str], name: str, default: str) -> dict[str, object]:
    """A window select as the user left it on a form sent back with an error."""
    return {"selected": form.get(name, default), "amount": form.get(f"{name}_amount"), "unit": form.get(f"{name}_unit")}
