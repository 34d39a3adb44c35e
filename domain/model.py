"""What the engine records: organizations, programs with their policy history, paths, meetings, the
event ids already seen and the events waiting for something. Plain slotted dataclasses so that the
pipeline can load exactly the rows a batch touches into a :class:`State` and write back what changed.

Statuses are never stored as facts: a meeting records what happened to it (scheduled times, a cancel
or reschedule and when, the first valid answer, disputes) and :mod:`domain.lifecycle` derives its
status at any time ``T`` from those facts and the program's policy history.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from domain.timefmt import MINUTE

# statuses (SPEC section 4), in the order used for counters and meetings_by_status
UPCOMING = "upcoming"
UNCONFIRMED = "unconfirmed"
CONFIRMED = "confirmed"
AUTO_CONFIRMED = "auto_confirmed"
DID_NOT_OCCUR = "did_not_occur"
LATE_CANCELED_PENDING = "late_canceled_pending"
LATE_CANCELED = "late_canceled"
LATE_CANCEL_WAIVED = "late_cancel_waived"
CANCELED = "canceled"
RESCHEDULED = "rescheduled"
STATUSES = (
    UPCOMING,
    UNCONFIRMED,
    CONFIRMED,
    AUTO_CONFIRMED,
    DID_NOT_OCCUR,
    LATE_CANCELED_PENDING,
    LATE_CANCELED,
    LATE_CANCEL_WAIVED,
    CANCELED,
    RESCHEDULED,
)
STATUS_INDEX = {s: i for i, s in enumerate(STATUSES)}

# how a meeting left the schedule
NOT_CANCELED = 0
BY_CANCEL = 1
BY_RESCHEDULE = 2

_UNSET: Any = object()


@dataclass(slots=True)
class SettingsUpdate:
    """One ``program.settings_updated``: holds from ``occurred_at`` for each field it carries."""

    occurred_at: int
    late_cancel_window: int | None = _UNSET  # µs, None = no late cancels
    auto_confirm_window: int | None = _UNSET
    authorized_hours: Decimal | None = _UNSET

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"at": self.occurred_at}
        for name in ("late_cancel_window", "auto_confirm_window"):
            value = getattr(self, name)
            if value is not _UNSET:
                out[name] = value
        if self.authorized_hours is not _UNSET:
            out["authorized_hours"] = None if self.authorized_hours is None else str(self.authorized_hours)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SettingsUpdate:
        update = cls(occurred_at=data["at"])
        if "late_cancel_window" in data:
            update.late_cancel_window = data["late_cancel_window"]
        if "auto_confirm_window" in data:
            update.auto_confirm_window = data["auto_confirm_window"]
        if "authorized_hours" in data:
            raw = data["authorized_hours"]
            update.authorized_hours = None if raw is None else Decimal(raw)
        return update


@dataclass(slots=True)
class Program:
    """A program and its policy history.

    The values given at creation hold until the first update in event time; each update holds from its
    ``occurred_at`` (inclusive) for each field it carries; on a tie the later processed wins.
    ``updates`` is kept sorted by ``occurred_at``, ties in processing order.
    """

    program_id: str
    org_id: str
    session_verification: bool
    late_cancel_window: int | None
    auto_confirm_window: int | None
    authorized_hours: Decimal | None
    created_at: int
    name: str | None = None
    updates: list[SettingsUpdate] = field(default_factory=list)

    def add_update(self, update: SettingsUpdate) -> None:
        keys = [u.occurred_at for u in self.updates]
        self.updates.insert(bisect.bisect_right(keys, update.occurred_at), update)

    def _at(self, name: str, t: int, base: Any) -> Any:
        for update in reversed(self.updates):
            if update.occurred_at <= t:
                value = getattr(update, name)
                if value is not _UNSET:
                    return value
        return base

    def late_cancel_window_at(self, t: int) -> int | None:
        if not self.updates:
            return self.late_cancel_window
        return self._at("late_cancel_window", t, self.late_cancel_window)  # type: ignore[no-any-return]

    def auto_confirm_window_at(self, t: int) -> int:
        if not self.updates:
            return self.auto_confirm_window or 0
        return self._at("auto_confirm_window", t, self.auto_confirm_window) or 0

    def authorized_hours_in_force(self) -> Decimal | None:
        """The value of the update with the latest ``occurred_at`` that carries one, else the creation's."""
        for update in reversed(self.updates):
            if update.authorized_hours is not _UNSET:
                return update.authorized_hours
        return self.authorized_hours


@dataclass(slots=True)
class Path:
    """A path, registered to one program for ever by the first applied or skipped event naming it.

    ``override_at`` is the ``occurred_at`` of the ``path.authorized_hours_set`` in force (the latest
    in event time, ties to the later processed); its ``override_hours`` of None means "the program's".
    ``changes`` counts applied events that touched the path (replay reports it as the tally version).
    """

    path_id: str
    program_id: str
    org_id: str
    override_hours: Decimal | None = None
    override_at: int | None = None
    changes: int = 0


@dataclass(slots=True)
class Meeting:
    """What was recorded about one meeting (judged by each event's ``occurred_at``)."""

    meeting_id: str
    path_id: str
    start: int
    end: int
    cancel_kind: int = NOT_CANCELED  # BY_CANCEL or BY_RESCHEDULE
    cancel_at: int = 0
    answer: bool | None = None  # the first valid answer to "did it occur?"
    answer_at: int = 0
    dispute_open: bool = False
    waived: bool = False  # a dispute was upheld

    @property
    def minutes(self) -> int:
        return (self.end - self.start) // MINUTE


@dataclass(slots=True)
class ParkedEvent:
    """An event waiting for the program or meeting it names (``wait_kind`` ``program``/``meeting``).

    ``seq`` is its arrival order; ``ref`` is opaque to the engine (a line number in replay, the source
    record in the pipeline).
    """

    seq: int
    event: Any
    wait_kind: str
    wait_key: str
    ref: Any = None


@dataclass(slots=True)
class AuditEntry:
    """Admin-only text (path notes, dispute comments, resolution notes) with who wrote it and when."""

    kind: str  # "path_note" | "dispute" | "dispute_resolution"
    event_id: str
    path_id: str
    meeting_id: str | None
    actor_id: str
    actor_role: str
    occurred_at: int
    text: str | None
    outcome: str | None = None
    authorized_hours: Decimal | None = None


@dataclass(slots=True)
class Changes:
    """What a run of the engine changed, so that the pipeline writes back only that."""

    orgs: set[str] = field(default_factory=set)
    programs: set[str] = field(default_factory=set)
    new_programs: set[str] = field(default_factory=set)
    paths: set[str] = field(default_factory=set)
    new_paths: set[str] = field(default_factory=set)
    meetings: set[str] = field(default_factory=set)
    new_meetings: set[str] = field(default_factory=set)
    seen: list[str] = field(default_factory=list)
    parked: dict[int, ParkedEvent] = field(default_factory=dict)  # seq -> now parked (new or moved)
    unparked: set[int] = field(default_factory=set)  # seqs no longer parked
    audit: list[AuditEntry] = field(default_factory=list)
    programs_with_new_policy: set[str] = field(default_factory=set)


class State:
    """Everything the engine knows, or, in the pipeline, the part of it that a batch touches.

    A key missing from a mapping means "does not exist": the pipeline loads every row a batch can name
    before it runs the engine.
    """

    __slots__ = ("changes", "meetings", "next_seq", "orgs", "parked", "paths", "programs", "seen", "waiting")

    def __init__(self, track_changes: bool = False) -> None:
        self.orgs: dict[str, bool] = {}
        self.programs: dict[str, Program] = {}
        self.paths: dict[str, Path] = {}
        self.meetings: dict[str, Meeting] = {}
        self.seen: set[str] = set()
        self.waiting: dict[tuple[str, str], list[ParkedEvent]] = {}
        self.parked: dict[int, ParkedEvent] = {}
        self.next_seq = 1
        self.changes: Changes | None = Changes() if track_changes else None

    def add_parked(self, item: ParkedEvent) -> None:
        """Load an event parked earlier (pipeline) without counting it as a change."""
        self.parked[item.seq] = item
        self.waiting.setdefault((item.wait_kind, item.wait_key), []).append(item)
        self.next_seq = max(self.next_seq, item.seq + 1)
