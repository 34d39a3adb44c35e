"""What the simulator generates: its configuration, the records it yields and the kinds of bad input it
mixes in (each with the rejection reason it is meant to get). No behaviour: see the package for the
generator itself."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from domain import events as E
from producers.routing import TopicKind

ADMIN_TYPES = E.ADMIN_TYPES
EVENT_TYPES = tuple(E.EVENT_MODELS)  # every input event type, in the order of SPEC section 3

# Every kind of bad input the generator produces, with the rejection reason the engine should give it.
BAD_KIND_REASONS: dict[str, str] = {
    "truncated_json": "invalid_json",
    "non_utf8": "invalid_json",
    "too_large": "too_large",
    "missing_field": "schema_violation",
    "naive_timestamp": "schema_violation",
    "bad_id": "schema_violation",
    "duration_months": "schema_violation",
    "duration_fraction": "schema_violation",
    "hours_three_decimals": "schema_violation",
    "hours_negative": "schema_violation",
    "path_id_on_program_event": "schema_violation",
    "start_not_before_end": "schema_violation",
    "longer_than_24h": "schema_violation",
    "unknown_type": "unknown_type",
    "schema_version_2": "unsupported_schema_version",
    "wrong_role": "forbidden",
    "unknown_meeting": "unknown_meeting",
    "unknown_program": "unknown_program",
    "tenant_mismatch_org": "tenant_mismatch",
    "tenant_mismatch_path": "tenant_mismatch",
    "meeting_of_other_path": "tenant_mismatch",
    "program_in_other_org": "tenant_mismatch",
    "program_exists": "program_exists",
    "meeting_exists": "meeting_exists",
    "cancel_after_end": "invalid_transition",
    "confirm_canceled": "invalid_transition",
}
BAD_KINDS = tuple(BAD_KIND_REASONS)
# Kinds whose outcome would depend on how the admin and path topics interleave (left out when
# ``order_independent``): a second program for a registered path, a meeting of another path, a program id
# re-created by another org (different admin partition).
ORDER_DEPENDENT_BAD_KINDS = frozenset({"tenant_mismatch_path", "meeting_of_other_path", "program_in_other_org"})
# Kinds whose outcome SPEC section 3 leaves undefined: ids that collide across partitions (a meeting id
# scheduled on another path, a program id created by another org); left out when ``spec_ordered``.
CROSS_PARTITION_BAD_KINDS = frozenset({"meeting_of_other_path", "program_in_other_org"})


@dataclass(frozen=True)
class TrafficConfig:
    """What stream to generate.

    ``orgs``, ``programs``, ``paths`` and ``meetings`` describe a 1,000,000-event stream (``meetings *
    10`` events); a shorter stream is scaled down (paths proportionally, orgs and programs by the square
    root, never below a handful) so that every path still sees a few months of meetings.

    ``order_independent``: the final result does not depend on how the admin and the path topics
    interleave: (a) a path only ever names one program; (b) a meeting id is re-used only within its path;
    (c) every ``program.settings_updated`` has an ``occurred_at`` ten years after ``epoch``, later than
    every other time in the stream; (d) duplicates are exact copies (they always are); (e) events naming
    another org's program are still there (they wait or are rejected the same way in any order).

    ``spec_ordered``: weaker than ``order_independent``: only the kinds whose outcome SPEC section 3 leaves
    undefined across partitions (:data:`CROSS_PARTITION_BAD_KINDS`) are left out. Settings changes are
    dated when they are published and a path may name a second program, so the result depends on the
    order across the two topics that SPEC section 3 guarantees (an admin event is applied before every
    path event published after it) and on nothing else.

    ``rate``: None for a calendar stream (about 16 weeks of event time, whatever the length); a number of
    events per second of event time for a *live* stream (used by ``session-tally simulate``): meetings
    start minutes to hours after they are scheduled, last 5-60 minutes, and programs use short windows
    (auto-confirm PT1H..P1D), so a worker's clock visibly moves statuses. ``orgs``/``programs``/``paths``
    are then used as given (paths at least about ``2 * rate``: event times are whole seconds).

    ``run_tag``: see the field.
    """

    seed: int = 1
    orgs: int = 20
    programs: int = 100
    paths: int = 10_000
    meetings: int = 100_000
    bad_fraction: float = 0.02
    duplicate_fraction: float = 0.01
    early_fraction: float = 0.01
    order_independent: bool = False
    spec_ordered: bool = False
    epoch: datetime = datetime(2026, 1, 5, tzinfo=UTC)
    rate: float | None = None
    # prefix of every program, path, meeting id the stream mints, and salt of its event ids: distinct per
    # run of `session-tally simulate`, so a second run against the same state starts new programs, paths
    # and meetings instead of colliding with the first run's (duplicates, meeting_exists, tenant_mismatch)
    run_tag: str = ""


@dataclass(frozen=True, slots=True)
class Record:
    """One message as published: its topic kind, its Kafka key and its exact bytes."""

    topic: TopicKind
    key: bytes | None
    value: bytes


class Tagged(NamedTuple):
    """A record with what the generator meant by it (for tests, ``simulate`` and statistics)."""

    at: int  # stream time (Unix seconds) when the record is published; the order of the stream
    kind: str  # the event type, "bad:<kind>" (see BAD_KINDS) or "duplicate"
    record: Record
    early: bool = False  # a meeting event published before the meeting.scheduled it refers to
