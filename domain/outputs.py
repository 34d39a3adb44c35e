"""The messages session-tally writes, as frozen pydantic models: the contract of the output side.

They describe, and can validate, what :mod:`storage.messages` publishes on the three output topics and
what ``session-tally replay`` prints (contract sections 5 and 6); the published JSON Schemas
(``session-tally contract generate``) are generated from them. The code that builds the messages does not
use these models (it builds plain dicts for speed); the contract tests validate real outputs against the
generated schemas, so a field added to a message without being added here fails the tests.

Invariants: every instant session-tally writes is RFC 3339 UTC with a ``Z`` suffix (a fraction of 6 digits
only when non-zero); hours are JSON numbers with at most 2 decimals; the three topic messages carry
``schema_version`` = :data:`SCHEMA_VERSION`; replay's document does not (its shape is fixed by section 6).
Consumers ignore fields they do not know: fields are only ever added.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from domain import reasons as R
from domain.events import Id
from domain.model import STATUSES

#: ``schema_version`` of the path-tally, meeting-status and rejected messages
SCHEMA_VERSION = 1

UTC_INSTANT_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{6})?Z$"

UtcInstant = Annotated[
    str,
    Field(
        pattern=UTC_INSTANT_PATTERN,
        json_schema_extra={"format": "date-time"},
        description="RFC 3339 in UTC with a Z suffix; a fraction of 6 digits only when it is not zero",
    ),
]
Status = Literal[STATUSES]  # type: ignore[valid-type]
Reason = Literal[R.ALL]  # type: ignore[valid-type]
Minutes = Annotated[int, Field(ge=0, description="whole minutes")]
Count = Annotated[int, Field(ge=0)]


def _hours_schema(minimum: int | None, nullable: bool, description: str) -> Any:
    number: dict[str, Any] = {"type": "number", "multipleOf": 0.01}
    if minimum is not None:
        number["minimum"] = minimum
    schema = {"anyOf": [number, {"type": "null"}]} if nullable else number
    return WithJsonSchema({**schema, "description": description})


_HOURS_TEXT = "a JSON number with at most 2 decimals, an integer when whole (2, 2.5, 2.42)"
AuthorizedHours = Annotated[
    float | None,
    _hours_schema(0, True, f"the path override if set, else the program's value; null when none; {_HOURS_TEXT}"),
]
UsedHours = Annotated[
    float, _hours_schema(0, False, f"used_minutes / 60 rounded to 2 decimals, ties away from zero; {_HOURS_TEXT}")
]
RemainingHours = Annotated[
    float | None,
    _hours_schema(
        None,
        True,
        "authorized_hours - used_minutes / 60, rounded like used_hours; negative when the path is over its "
        f"authorized hours; null when authorized_hours is null; {_HOURS_TEXT}",
    ),
]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")


MeetingsByStatus = create_model(
    "MeetingsByStatus",
    __base__=_Out,
    __doc__="How many of the path's meetings are in each status (every status, zeros included).",
    **{status: (Count, ...) for status in STATUSES},  # type: ignore[call-overload]
)


class _Versioned(_Out):
    schema_version: Literal[1] = Field(description="the version of this message's schema (1)")


class TallyFields(_Out):
    """A path's tally at time ``as_of`` (contract section 5)."""

    path_id: Id
    program_id: Id
    org_id: Id
    authorized_hours: AuthorizedHours
    authorized_source: Literal["path", "program"] | None = Field(
        description="where authorized_hours comes from; null when there are none"
    )
    used_minutes: Minutes = Field(description="minutes of confirmed, auto_confirmed and late_canceled meetings")
    pending_minutes: Minutes = Field(description="minutes of unconfirmed and late_canceled_pending meetings")
    upcoming_minutes: Minutes = Field(description="minutes of upcoming meetings")
    used_hours: UsedHours
    remaining_hours: RemainingHours
    meetings_by_status: MeetingsByStatus
    version: int = Field(ge=0, description="grows with every publication for the path (replay: applied events)")
    as_of: UtcInstant = Field(description="the time the tally was computed for")


class PathTally(TallyFields, _Versioned):
    """A message of ``session-mgmt.path-tallies`` (key: ``path_id``): the path's current tally.

    Published when its content changes. A re-publication after a crash repeats a version with the same
    content: keep the highest version per path. Only paths of verification-enabled programs have one."""


class MeetingFields(_Out):
    """A meeting as ``replay`` lists it."""

    meeting_id: Id
    path_id: Id
    status: Status = Field(description="the meeting's status at as_of (replay: at --at)")
    start: UtcInstant
    end: UtcInstant
    minutes: Minutes = Field(description="(end - start) in whole minutes, a partial minute dropped")
    disputed: bool = Field(description="true while a dispute is open")


class MeetingStatus(MeetingFields, _Versioned):
    """A message of ``session-mgmt.meeting-statuses`` (key: ``path_id``): a meeting's new status, each time
    its status or ``disputed`` flag changes, including changes caused by the clock alone."""

    program_id: Id
    org_id: Id
    version: int = Field(ge=1, description="grows with every publication for the meeting")
    as_of: UtcInstant = Field(description="the time the status was computed for")


class RejectedSource(_Out):
    """Where the rejected input was read."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    timestamp_ms: int | None = Field(description="the Kafka record's timestamp (ms since the epoch)")


_BASE64 = {"pattern": "^[A-Za-z0-9+/]*={0,2}$", "contentEncoding": "base64"}
Base64 = Annotated[str | None, WithJsonSchema({"anyOf": [{"type": "string", **_BASE64}, {"type": "null"}]})]
Header = Annotated[
    tuple[str, str | None],
    Field(
        description="[key, value as text (bytes that are not UTF-8 escaped as \\xNN: exact in headers_base64) or null]"
    ),
]
HeaderBase64 = Annotated[
    tuple[str, str | None],
    Field(description="[key in base64, value in base64 or null]"),
]


class Rejected(_Versioned):
    """A message of ``session-mgmt.rejected`` (key: the input's key): an input that was rejected, why, and
    the original (key, value and headers: as text when UTF-8, else base64; each cut to its first 64 KiB
    with its full size) with where it came from. The Kafka record has the original key (its first
    64 KiB), the original headers when they are UTF-8 and fit, and a ``session-tally-reason`` header."""

    reason: Reason = Field(description="the first check that failed (contract section 7)")
    detail: str = Field(description="what exactly failed, for people")
    event_id: str | None = Field(description="the event_id when the message has one that is a JSON string")
    rejected_at: UtcInstant
    source: RejectedSource
    key: str | None = Field(
        description="the input's key as text when it is UTF-8 (its first 64 KiB), else null (see key_base64)"
    )
    key_base64: Base64 = Field(
        description="the input's key in base64 when it is not UTF-8, or when the message would be larger than "
        "512 KiB with the key and value as JSON text (many escaped control characters); else null"
    )
    key_bytes: int | None = Field(ge=0, description="the size of the key; null for a message without one")
    key_truncated: bool = Field(description="true when the key fields hold only its first 64 KiB")
    headers: list[Header] = Field(description="the input's headers (their first 64 KiB in all)")
    headers_base64: list[HeaderBase64] | None = Field(
        description="the same headers byte for byte when one key or value is not UTF-8, else null"
    )
    headers_bytes: int = Field(ge=0, description="the size of all header keys and values")
    headers_truncated: bool = Field(description="true when the headers were cut to their first 64 KiB")
    original: str | None = Field(
        description="the input's value as text when it is UTF-8 (its first 64 KiB), else null (see original_base64)"
    )
    original_base64: Base64 = Field(
        description="the value in base64 (its first 64 KiB) when it is not UTF-8, or when the message would be "
        "larger than 512 KiB with the key and value as JSON text (many escaped control characters); else null"
    )
    original_bytes: int | None = Field(ge=0, description="the size of the value; null for a message without one")
    original_truncated: bool = Field(description="true when the value fields hold only its first 64 KiB")
    original_removed: str | None = Field(
        default=None,
        description="present when the topic refused the message with its original: key, key_base64, "
        "headers_base64, original and original_base64 are then null and headers empty (the sizes stay), "
        "and this says why; the Kafka record then has the key's first 1 KiB and only the session-tally-reason header",
    )


class ReplayRejection(_Out):
    """One rejected line of the replayed file."""

    line: int = Field(ge=1, description="1-based line number (blank lines count)")
    event_id: str | None = Field(description="the event_id when the line has one that is a JSON string")
    reason: Reason


class ReplayDocument(_Out):
    """What ``session-tally replay FILE --at T`` prints (contract section 6): the tallies of registered
    paths of verification-enabled programs (by path_id), every meeting (by meeting_id) with its status at
    T, and the rejected lines (by line; events still waiting at the end of the file after the others)."""

    tallies: list[TallyFields]
    meetings: list[MeetingFields]
    rejected: list[ReplayRejection]
