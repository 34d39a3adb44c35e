"""Entities and constants of the traffic simulation (internal to session_tally.traffic)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from session_tally.traffic.config import Tagged

MINUTE_S = 60
HOUR_S = 3600
DAY_S = 86400

# What the generator believes became of a meeting (it plans valid follow-ups from it).
SCHEDULED, CANCELED, LATE_CANCELED, RESCHEDULED = 0, 1, 2, 3

# Average records per meeting with the probabilities below; calibrates how often a path schedules a
# meeting so that a calendar stream spans about `horizon` (a feedback loop corrects the rest).
EVENTS_PER_MEETING = 2.1

P_CANCEL = 0.11
P_RESCHEDULE = 0.11
P_HOURS_SET = 0.02


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


CANCEL_REASONS = tuple(
    _dump(r)
    for r in (
        "sick",
        "travel",
        "schedule conflict",
        "coach unavailable",
        "family emergency",
        "public holiday",
        "Krankheit – kurzfristig",  # noqa: RUF001 (real-world text)
        "réunion d'équipe",
        'rescheduled by "calendar sync"',
    )
)
NOTES = tuple(
    _dump(n)
    for n in (
        "budget approved by the program lead",
        "extra hours for the capstone project",
        "reduced: participant on leave",
        "Zoë's team asked for more sessions ✓",
        "per contract amendment #12",
    )
)
COMMENTS = tuple(
    _dump(c)
    for c in (
        "was not late, the calendar showed a different time",
        "the coach canceled, not me",
        "internet outage, see ticket 4411",
        "emergency at work",
    )
)
PROGRAM_NAMES = (
    "Leadership Coaching",
    "New Manager Mentoring",
    "Career Launch",
    "Engineering Mentorship",
    "Sales Excellence",
    "Wellbeing Coaching",
    "Executive Presence",
    "Graduate SimProgram",
)


@dataclass(frozen=True)
class Timing:
    """Time scales of one profile (calendar streams and live simulations differ)."""

    horizon: int  # event time the bulk of the stream covers
    unit: int  # the scale of human reaction delays (hours in a calendar, minutes live)
    late_cancel_windows: tuple[tuple[str | None, int | None], ...]
    auto_confirm_windows: tuple[tuple[str, int], ...]
    durations: tuple[int, ...]  # meeting lengths in minutes
    answer_mean: int  # mean delay between a meeting's end and the participant's answer
    calendar: bool


CALENDAR = Timing(
    horizon=112 * DAY_S,
    unit=HOUR_S,
    late_cancel_windows=(
        ("PT12H", 12 * HOUR_S),
        ("PT24H", DAY_S),
        ("PT24H", DAY_S),
        ("P2D", 2 * DAY_S),
        (None, None),
    ),
    auto_confirm_windows=(("PT72H", 3 * DAY_S), ("P3D", 3 * DAY_S), ("P7D", 7 * DAY_S), ("P14D", 14 * DAY_S)),
    durations=(30, 45, 45, 50, 55, 60, 60, 60, 60, 75, 90, 90, 100, 120),
    answer_mean=8 * HOUR_S,
    calendar=True,
)
LIVE = Timing(
    horizon=6 * HOUR_S,
    unit=MINUTE_S,
    late_cancel_windows=(
        ("PT1H", HOUR_S),
        ("PT1H", HOUR_S),
        ("PT2H", 2 * HOUR_S),
        ("PT3H", 3 * HOUR_S),
        (None, None),
    ),
    auto_confirm_windows=(("PT1H", HOUR_S), ("PT2H", 2 * HOUR_S), ("PT6H", 6 * HOUR_S), ("P1D", DAY_S)),
    durations=(5, 10, 15, 20, 30, 30, 45, 60),
    answer_mean=5 * MINUTE_S,
    calendar=False,
)
AUTHORIZED_HOURS = ("10", "12.5", "20", "null", "40", "7.25", "10", "20", "null", "100")
PATH_HOURS = ("5", "8", "12.5", "15", "20", "25.75", "30", "null")


class SimProgram:
    __slots__ = (
        "acw",
        "acw_name",
        "admin",
        "coaches",
        "created_at",
        "hours",
        "lcw",
        "lcw_name",
        "n",
        "org",
        "pid",
        "verification",
    )

    def __init__(
        self,
        n: int,
        org: str,
        verification: bool,
        lcw: tuple[str | None, int | None],
        acw: tuple[str, int],
        tag: str = "",
    ) -> None:
        self.n = n
        self.pid = f"{tag}prog-{n}"
        self.org = org
        self.admin = f"admin-{n}"
        self.coaches = tuple(f"coach-{n}-{k}" for k in range(1, 4))
        self.verification = verification
        self.lcw_name, self.lcw = lcw  # late-cancel window in force now (seconds), None = no late cancels
        self.acw_name, self.acw = acw  # auto-confirm window in force now (seconds)
        self.hours = "null"
        self.created_at: int | None = None  # stream time its program.created was published


class SimPath:
    __slots__ = ("coach", "head", "key", "learner", "n", "pid", "prog", "recent", "registered_at")

    def __init__(self, n: int, prog: SimProgram, tag: str = "") -> None:
        self.n = n
        self.pid = f"{tag}path-{n:05d}"
        self.key = self.pid.encode()
        self.prog = prog
        self.head = f'"org_id":"{prog.org}","program_id":"{prog.pid}","path_id":"{self.pid}"'
        self.learner = f"learner-{n}"
        self.coach = prog.coaches[n % len(prog.coaches)]
        self.recent: list[SimMeeting] = []  # the last few meetings (material for bad input)
        self.registered_at: int | None = None


class SimMeeting:
    __slots__ = (
        "avail",
        "changed",
        "deadline",
        "end",
        "held",
        "mid",
        "open",
        "path",
        "start",
        "state",
        "waived",
    )

    def __init__(self, mid: str, path: SimPath, start: int, end: int) -> None:
        self.mid = mid
        self.path = path
        self.start = start
        self.end = end
        self.state = SCHEDULED
        self.held: Tagged | None = None  # its meeting.scheduled, held back to follow its first event
        self.avail: int | None = None  # stream time its creating record was published
        self.changed: int | None = None  # stream time it was canceled / rescheduled
        self.deadline = 0
        self.open = False  # a dispute is open
        self.waived = False
