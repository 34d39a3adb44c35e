"""The wire format (SPEC section 3) as frozen pydantic v2 models, and the decoding of raw messages.

Decoding follows the rejection check order of SPEC section 7 for the message itself:

1. ``too_large`` (more than 64 KiB; not parsed), then ``invalid_json`` (including bytes that are not
   UTF-8, lone surrogate escapes and the non-JSON literals NaN/Infinity);
2. the duplicate check belongs to the engine (it needs state). Only a well-formed ``event_id``
   (:func:`dedup_event_id`) marks a message as seen; a missing or malformed one is never a duplicate,
   so one rejected message with a bad id cannot swallow later messages that carry the same bad id.
   Rejections report any JSON string ``event_id`` (:func:`readable_event_id`), well-formed or not;
3. the schema (:func:`validate`): first U+0000 anywhere in a string or object key
   (``schema_violation``: PostgreSQL cannot store it), then the envelope fields common to every type
   (``schema_violation``), then the type (``unknown_type``), then the version
   (``unsupported_schema_version``), then the type's own fields and ``data`` (``schema_violation``).

Instants are integer microseconds since the epoch (see :mod:`domain.timefmt`), durations are integer
microseconds, authorized hours are :class:`~decimal.Decimal` with at most 2 decimals.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from domain import reasons as R
from domain.timefmt import DAY, HOUR, parse_duration, parse_instant_value

MAX_MESSAGE_BYTES = 64 * 1024
MAX_ADMIN_TEXT = 2000
MAX_AUTHORIZED_HOURS = Decimal(100000)
MAX_MEETING_LENGTH = DAY

ORG_SET = "organization.session_management_set"
PROGRAM_CREATED = "program.created"
SETTINGS_UPDATED = "program.settings_updated"
PATH_HOURS_SET = "path.authorized_hours_set"
SCHEDULED = "meeting.scheduled"
RESCHEDULED = "meeting.rescheduled"
CANCELED = "meeting.canceled"
CONFIRMATION = "meeting.confirmation_submitted"
DISPUTED = "meeting.disputed"
DISPUTE_RESOLVED = "meeting.dispute_resolved"

ADMIN_TYPES = frozenset({ORG_SET, PROGRAM_CREATED, SETTINGS_UPDATED})

Role = Literal["participant", "facilitator", "program_admin", "support", "system"]

#: who may send each event type (SPEC section 3); any other role is ``forbidden``
ALLOWED_ROLES: dict[str, frozenset[str]] = {
    ORG_SET: frozenset({"support"}),
    PROGRAM_CREATED: frozenset({"program_admin", "support"}),
    SETTINGS_UPDATED: frozenset({"support"}),
    PATH_HOURS_SET: frozenset({"program_admin", "support"}),
    SCHEDULED: frozenset({"participant", "facilitator", "program_admin", "system"}),
    RESCHEDULED: frozenset({"participant", "facilitator", "program_admin", "system"}),
    CANCELED: frozenset({"participant", "facilitator", "program_admin", "system"}),
    CONFIRMATION: frozenset({"participant", "program_admin"}),
    DISPUTED: frozenset({"facilitator", "participant"}),
    DISPUTE_RESOLVED: frozenset({"program_admin", "support"}),
}


# ---------------------------------------------------------------------------------------------- types


def _bounded_duration(low: int, high: int) -> Any:
    def check(value: Any) -> int:
        if type(value) is not str:
            raise ValueError("expected an ISO-8601 duration string")
        us = parse_duration(value)
        if not low <= us <= high:
            raise ValueError("duration out of bounds")
        return us

    return check


def _hours(value: Any) -> Decimal | None:
    if value is None:
        return None
    if type(value) is int:
        value = Decimal(value)
    elif type(value) is float:  # only when a caller parsed JSON without parse_float=Decimal
        value = Decimal(repr(value))
    elif type(value) is not Decimal:
        raise ValueError("expected a number")
    if not value.is_finite() or value < 0 or value > MAX_AUTHORIZED_HOURS:
        raise ValueError("authorized_hours must be between 0 and 100000")
    if value != value.quantize(Decimal("0.01")):
        raise ValueError("authorized_hours has more than 2 decimals")
    canonical: Decimal = value.quantize(Decimal("0.01")).normalize() + 0  # no negative zero
    return canonical


ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
_ID_CHARS = re.compile(r"[A-Za-z0-9._:-]{1,128}")
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Instant = Annotated[int, BeforeValidator(parse_instant_value)]
LateCancelWindow = Annotated[int, BeforeValidator(_bounded_duration(HOUR, 30 * DAY))]
AutoConfirmWindow = Annotated[int, BeforeValidator(_bounded_duration(HOUR, 90 * DAY))]
Hours = Annotated[Decimal | None, BeforeValidator(_hours)]
AdminText = Annotated[str, StringConstraints(max_length=MAX_ADMIN_TEXT)]

_CONFIG = ConfigDict(strict=True, frozen=True, extra="ignore")


class _Model(BaseModel):
    model_config = _CONFIG


class Actor(_Model):
    id: Id
    role: Role


class Envelope(_Model):
    """The fields every event carries, whatever its type."""

    event_id: Id
    type: str
    schema_version: int
    occurred_at: Instant
    org_id: Id
    actor: Actor


# ----------------------------------------------------------------------------------------------- data


class OrgData(_Model):
    enabled: bool


class ProgramCreatedData(_Model):
    name: str | None = None
    session_verification: bool
    late_cancel_window: LateCancelWindow | None
    authorized_hours: Hours
    auto_confirm_window: AutoConfirmWindow | None = None

    @model_validator(mode="after")
    def _auto_confirm_required(self) -> ProgramCreatedData:
        if self.session_verification and self.auto_confirm_window is None:
            raise ValueError("auto_confirm_window is required when session_verification is on")
        return self


class SettingsUpdatedData(_Model):
    late_cancel_window: LateCancelWindow | None = None
    auto_confirm_window: AutoConfirmWindow | None = None
    authorized_hours: Hours = None

    @model_validator(mode="after")
    def _one_or_more(self) -> SettingsUpdatedData:
        present = self.model_fields_set
        if not present & {"late_cancel_window", "auto_confirm_window", "authorized_hours"}:
            raise ValueError("at least one of late_cancel_window, auto_confirm_window, authorized_hours")
        if "auto_confirm_window" in present and self.auto_confirm_window is None:
            raise ValueError("auto_confirm_window may not be null")
        return self

    def has(self, field: str) -> bool:
        return field in self.model_fields_set


class PathHoursData(_Model):
    authorized_hours: Hours
    note: AdminText | None = None


def _check_span(start: int, end: int) -> None:
    if not start < end:
        raise ValueError("start must be before end")
    if end - start > MAX_MEETING_LENGTH:
        raise ValueError("a meeting is at most 24 h long")


class ScheduledData(_Model):
    meeting_id: Id
    start: Instant
    end: Instant

    @model_validator(mode="after")
    def _span(self) -> ScheduledData:
        _check_span(self.start, self.end)
        return self


class RescheduledData(_Model):
    meeting_id: Id
    new_meeting_id: Id
    new_start: Instant
    new_end: Instant

    @model_validator(mode="after")
    def _span(self) -> RescheduledData:
        _check_span(self.new_start, self.new_end)
        return self


class CanceledData(_Model):
    meeting_id: Id
    reason: str | None = None


class ConfirmationData(_Model):
    meeting_id: Id
    occurred: bool


class DisputedData(_Model):
    meeting_id: Id
    comment: AdminText | None = None


class DisputeResolvedData(_Model):
    meeting_id: Id
    outcome: Literal["upheld", "rejected"]
    note: AdminText | None = None


# --------------------------------------------------------------------------------------------- events


def _no_path_id(data: Any) -> Any:
    if isinstance(data, dict) and "path_id" in data:
        raise ValueError("path_id must be absent on organization and program events")
    return data


class OrganizationSessionManagementSet(Envelope):
    type: Literal["organization.session_management_set"]
    data: OrgData

    _absent = model_validator(mode="before")(_no_path_id)


class ProgramCreated(Envelope):
    type: Literal["program.created"]
    program_id: Id
    data: ProgramCreatedData

    _absent = model_validator(mode="before")(_no_path_id)


class ProgramSettingsUpdated(Envelope):
    type: Literal["program.settings_updated"]
    program_id: Id
    data: SettingsUpdatedData

    _absent = model_validator(mode="before")(_no_path_id)


class _PathEvent(Envelope):
    program_id: Id
    path_id: Id


class PathAuthorizedHoursSet(_PathEvent):
    type: Literal["path.authorized_hours_set"]
    data: PathHoursData


class MeetingScheduled(_PathEvent):
    type: Literal["meeting.scheduled"]
    data: ScheduledData


class MeetingRescheduled(_PathEvent):
    type: Literal["meeting.rescheduled"]
    data: RescheduledData


class MeetingCanceled(_PathEvent):
    type: Literal["meeting.canceled"]
    data: CanceledData


class MeetingConfirmationSubmitted(_PathEvent):
    type: Literal["meeting.confirmation_submitted"]
    data: ConfirmationData


class MeetingDisputed(_PathEvent):
    type: Literal["meeting.disputed"]
    data: DisputedData


class MeetingDisputeResolved(_PathEvent):
    type: Literal["meeting.dispute_resolved"]
    data: DisputeResolvedData


AdminEvent = OrganizationSessionManagementSet | ProgramCreated | ProgramSettingsUpdated
MeetingEvent = (
    MeetingScheduled
    | MeetingRescheduled
    | MeetingCanceled
    | MeetingConfirmationSubmitted
    | MeetingDisputed
    | MeetingDisputeResolved
)
PathEvent = PathAuthorizedHoursSet | MeetingEvent
Event = AdminEvent | PathEvent

EVENT_MODELS: dict[str, type[Envelope]] = {
    ORG_SET: OrganizationSessionManagementSet,
    PROGRAM_CREATED: ProgramCreated,
    SETTINGS_UPDATED: ProgramSettingsUpdated,
    PATH_HOURS_SET: PathAuthorizedHoursSet,
    SCHEDULED: MeetingScheduled,
    RESCHEDULED: MeetingRescheduled,
    CANCELED: MeetingCanceled,
    CONFIRMATION: MeetingConfirmationSubmitted,
    DISPUTED: MeetingDisputed,
    DISPUTE_RESOLVED: MeetingDisputeResolved,
}


# ------------------------------------------------------------------------------------------- decoding


@dataclass(frozen=True, slots=True)
class Invalid:
    """A message rejected before it reached the engine's state checks."""

    reason: str
    detail: str
    event_id: str | None = None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _big_int(text: str) -> int:
    """JSON integers of any length (``int(str)`` refuses more than 4300 digits; ``Decimal`` does not)."""
    return int(text) if len(text) <= 4000 else int(Decimal(text))


_loads = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant).decode
_loads_big_ints = json.JSONDecoder(parse_float=Decimal, parse_int=_big_int, parse_constant=_reject_constant).decode

#: deepest nesting of arrays/objects accepted: a fixed limit, so that the verdict never depends on how
#: deep the caller's stack is (the JSON parser is recursive); real messages nest 3 levels
MAX_NESTING = 256
# a string (to the end of the text when unterminated: linear time) or a bracket
_STRING_OR_BRACKET = re.compile(r'"(?:[^"\\]|\\.)*"?|[\[\]{}]', re.DOTALL)


def _nesting_exceeds(text: str, limit: int) -> bool:
    """Does the JSON text open more than ``limit`` arrays/objects inside each other (strings skipped)?"""
    depth = 0
    for m in _STRING_OR_BRACKET.finditer(text):
        token = m.group()
        if token == "[" or token == "{":
            depth += 1
            if depth > limit:
                return True
        elif token == "]" or token == "}":
            depth -= 1
    return False


_SURROGATE = re.compile("[\ud800-\udfff]")


def _strings(value: Any) -> Iterator[str]:
    """Every string of a parsed JSON value, object keys included."""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            yield item
        elif kind is dict:
            for key, inner in item.items():
                yield key
                stack.append(inner)
        elif kind is list:
            stack.extend(item)


def _has_lone_surrogate(value: Any) -> bool:
    """Does any string (key or value) hold a surrogate, i.e. a ``\\uD8xx`` escape without its pair?"""
    return any(_SURROGATE.search(s) for s in _strings(value))


def parse(raw: bytes | None) -> dict[str, Any] | Invalid:
    """Bytes of one message -> its JSON object, or why it is not one (check 1 of SPEC section 7)."""
    if raw is None:
        return Invalid(R.INVALID_JSON, "empty message (null value)")
    if len(raw) > MAX_MESSAGE_BYTES:
        return Invalid(R.TOO_LARGE, f"{len(raw)} bytes; at most {MAX_MESSAGE_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Invalid(R.INVALID_JSON, f"not UTF-8: {exc.reason} at byte {exc.start}")
    if text.count("[") + text.count("{") > MAX_NESTING and _nesting_exceeds(text, MAX_NESTING):
        return Invalid(R.INVALID_JSON, f"nested more than {MAX_NESTING} levels deep")
    try:
        obj = _loads(text)
    except ValueError as exc:
        try:  # a valid integer longer than int() accepts from a string
            obj = _loads_big_ints(text)
        except ValueError:
            return Invalid(R.INVALID_JSON, str(exc)[:200])
    except RecursionError:  # not reached below MAX_NESTING; kept so that no input can raise
        return Invalid(R.INVALID_JSON, "nested too deeply")
    if "\\u" in text and _has_lone_surrogate(obj):
        return Invalid(R.INVALID_JSON, "lone UTF-16 surrogate escape")
    if type(obj) is not dict:
        return Invalid(R.SCHEMA_VIOLATION, "a message must be a JSON object")
    return obj


def readable_event_id(obj: dict[str, Any]) -> str | None:
    """The ``event_id`` reported with a rejection: any JSON string, else None."""
    value = obj.get("event_id")
    return value if type(value) is str else None


def dedup_event_id(event_id: str | None) -> str | None:
    """The id that marks a message as seen: ``event_id`` when well-formed, else None (never a duplicate)."""
    return event_id if event_id is not None and _ID_CHARS.fullmatch(event_id) is not None else None


def _has_nul(value: Any) -> bool:
    """Does any string (object keys included) hold U+0000?"""
    return any("\x00" in s for s in _strings(value))


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "message"
    return f"{loc}: {err['msg']}"[:300]


def may_hold_nul(raw: bytes) -> bool:
    """False when the JSON text of ``raw`` cannot hold U+0000: it only gets into a parsed value through a
    ``\\u0000`` escape (a raw control character inside a string is not JSON)."""
    return b"\\u0000" in raw


def validate(obj: dict[str, Any], nul_possible: bool = True) -> Event | Invalid:
    """A parsed JSON object -> a typed event, or the schema reason (check 3 of SPEC section 7).

    ``nul_possible=False`` (from :func:`may_hold_nul` on the message's bytes) skips the U+0000 walk."""
    if nul_possible and _has_nul(obj):
        return Invalid(R.SCHEMA_VIOLATION, "a string holds U+0000 (NUL)", readable_event_id(obj))
    event_type = obj.get("type")
    version = obj.get("schema_version")
    model = EVENT_MODELS.get(event_type) if type(event_type) is str else None
    if model is not None and version == 1 and type(version) is int:
        try:
            return model.model_validate(obj)  # type: ignore[return-value]
        except ValidationError as exc:
            return Invalid(R.SCHEMA_VIOLATION, _first_error(exc), readable_event_id(obj))
    event_id = readable_event_id(obj)
    try:
        Envelope.model_validate(obj)
    except ValidationError as exc:
        return Invalid(R.SCHEMA_VIOLATION, _first_error(exc), event_id)
    if model is None:
        return Invalid(R.UNKNOWN_TYPE, f"unknown type {event_type!r}", event_id)
    shown = version if -(10**18) < version < 10**18 else "(a huge integer)"  # type: ignore[operator]
    return Invalid(R.UNSUPPORTED_SCHEMA_VERSION, f"schema_version {shown}; only 1 is supported", event_id)


# ------------------------------------------------------------------------------------------ fast path

_MEETING_EVENT: TypeAdapter[Any] = TypeAdapter(
    Annotated[
        MeetingScheduled
        | MeetingRescheduled
        | MeetingCanceled
        | MeetingConfirmationSubmitted
        | MeetingDisputed
        | MeetingDisputeResolved,
        Field(discriminator="type"),
    ]
)
_validate_meeting_json = _MEETING_EVENT.validator.validate_json  # pydantic-core, without the wrapper
#: bytes that send a message to the precise path: a backslash (escapes, e.g. lone surrogates), and the
#: capitals of the non-JSON literals NaN and Infinity (the JSON parser of pydantic accepts them; outside
#: strings no other JSON token has a capital letter)
_NOT_FAST = b"\\NI"


def decode_fast(raw: bytes | None) -> Event | None:
    """The valid meeting events of the common shape, validated straight from bytes; else None.

    The same pydantic models validate the bytes without the Python-level JSON decoding; the result is
    equal to ``validate(parse(raw))``. It never accepts what the precise path rejects: it only takes
    ASCII messages within the size limit, without backslashes and without the letters of NaN/Infinity
    (so without the inputs on which the two JSON parsers differ), nested less deep than
    :data:`MAX_NESTING` (pydantic's parser stops at 200 levels), with schema_version 1 and a meeting
    type. Anything else (None) goes through :func:`parse` and :func:`validate`, which name the reason.
    """
    if (
        type(raw) is not bytes
        or len(raw) > MAX_MESSAGE_BYTES
        or not raw.isascii()
        or len(raw.translate(None, _NOT_FAST)) != len(raw)
    ):
        return None
    try:
        event = _validate_meeting_json(raw)
    except ValidationError:
        return None
    if event.schema_version != 1:
        return None
    return event  # type: ignore[no-any-return]


def role_allowed(event: Event) -> bool:
    """Check 4 of SPEC section 7: may the actor's role send this event type?"""
    return event.actor.role in ALLOWED_ROLES[event.type]
