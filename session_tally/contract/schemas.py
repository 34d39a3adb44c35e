"""JSON Schemas (2020-12) of every input event and output message, generated from the pydantic models.

The input models (:mod:`domain.events`) validate the *wire form* of some fields with converters
(``BeforeValidator``: RFC 3339 strings become microseconds, durations become microseconds, hours become
Decimals) and check some rules across fields in model validators. Pydantic cannot describe those on its
own, so :class:`WireSchema` replaces each such validator's schema by the wire form it accepts, looked up
by the validator function in :data:`FIELD_RULES` and :data:`MODEL_RULES`. The rule values come from the
models themselves where they are data (duration bounds from the validator, the hours limit and the
admin-text length from :mod:`domain.events`, patterns from :mod:`domain.timefmt`). A validator with no
entry in those tables makes generation fail (:class:`ContractError`), so a new rule in the models cannot
go unpublished. Rules JSON Schema cannot express (``start < end``, at most 24 h, years 0001..9999, a 64 KiB
limit on the message's bytes, ``1.0`` not being the integer 1) are stated in ``description``.

The output models (:mod:`domain.outputs`) need no wire rules: they are generated as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from domain import events as E
from domain import outputs as O
from domain.timefmt import DURATION_PATTERN, INSTANT_PATTERN, format_duration

DIALECT = "https://json-schema.org/draft/2020-12/schema"
#: JSON Schema cannot reach the keys of objects nested in unknown fields except through this recursion
NO_NUL_DEF = "NoNul"
NO_NUL = {
    "description": (
        "No string anywhere in the message, object keys included, may contain U+0000 (NUL): such a message "
        "is a schema_violation, checked before every other schema rule."
    ),
    "pattern": "^[^\\u0000]*$",
    "propertyNames": {"pattern": "^[^\\u0000]*$"},
    "additionalProperties": {"$ref": f"#/$defs/{NO_NUL_DEF}"},
    "items": {"$ref": f"#/$defs/{NO_NUL_DEF}"},
}


class ContractError(Exception):
    """The models hold a rule that has no wire form here: add one to FIELD_RULES or MODEL_RULES."""


def _name(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _closure(fn: Any) -> dict[str, Any]:
    cells = fn.__closure__ or ()
    return dict(zip(fn.__code__.co_freevars, (c.cell_contents for c in cells), strict=True))


# --------------------------------------------------------------------------- field converters -> wire form


def _instant(_fn: Any) -> JsonSchemaValue:
    return {
        "type": "string",
        "format": "date-time",
        "pattern": INSTANT_PATTERN,
        "description": (
            "RFC 3339 timestamp with an offset (Z/z or +HH:MM; a naive timestamp is invalid); T/t accepted, "
            "seconds required, offsets up to 23:59, leap seconds (:60) invalid, within years 0001..9999 in "
            "UTC; a fraction beyond microseconds is truncated"
        ),
    }


def _duration(fn: Any) -> JsonSchemaValue:
    bounds = _closure(fn)  # domain.events._bounded_duration(low, high)
    low, high = format_duration(bounds["low"]), format_duration(bounds["high"])
    return {
        "type": "string",
        "format": "duration",
        "pattern": DURATION_PATTERN,
        "x-minimum": low,
        "x-maximum": high,
        "description": (
            f"ISO-8601 duration with whole numbers, from {low} to {high} inclusive: PnW alone, or "
            "P[nD][T[nH][nM][nS]] (P2W, P3D, PT24H, PT90M, P1DT12H); years, months, fractions and weeks "
            "mixed with other units are invalid; a day is 24 hours"
        ),
    }


def _hours(_fn: Any) -> JsonSchemaValue:
    limit = int(E.MAX_AUTHORIZED_HOURS)
    return {
        "anyOf": [{"type": "number", "minimum": 0, "maximum": limit, "multipleOf": 0.01}, {"type": "null"}],
        "description": (
            f"hours: a number from 0 to {limit} inclusive with at most 2 decimals (judged on the value: 1.000 "
            "and 1e2 are fine), or null (not applicable)"
        ),
    }


#: validator function (module.qualname) of a field -> the JSON Schema of what it accepts on the wire
FIELD_RULES: dict[str, Callable[[Any], JsonSchemaValue]] = {
    "domain.timefmt.parse_instant_value": _instant,
    "domain.events._bounded_duration.<locals>.check": _duration,
    "domain.events._hours": _hours,
}


# --------------------------------------------------------------------------- model validators -> wire form


def _describe(schema: JsonSchemaValue, text: str) -> None:
    schema["description"] = f"{schema['description']} {text}" if schema.get("description") else text


def _no_path_id(schema: JsonSchemaValue) -> None:
    schema.setdefault("properties", {})["path_id"] = False
    _describe(schema, "path_id must be absent (even null): present, it is a schema_violation.")


def _auto_confirm_required(schema: JsonSchemaValue) -> None:
    schema["if"] = {"properties": {"session_verification": {"const": True}}, "required": ["session_verification"]}
    schema["then"] = {"required": ["auto_confirm_window"], "properties": {"auto_confirm_window": {"type": "string"}}}
    _describe(schema, "auto_confirm_window is required (not null) when session_verification is true.")


def _one_or_more(schema: JsonSchemaValue) -> None:
    fields = ["late_cancel_window", "auto_confirm_window", "authorized_hours"]
    schema["anyOf"] = [{"required": [f]} for f in fields]
    window = schema["properties"]["auto_confirm_window"]
    window.pop("default", None)
    window.update(next(s for s in window.pop("anyOf") if s.get("type") != "null"))
    _describe(
        schema,
        "One or more of late_cancel_window (null: no late cancels from then on), auto_confirm_window (not "
        "null) and authorized_hours (null: not applicable); each holds from the event's occurred_at.",
    )


def _span(prefix: str) -> Callable[[JsonSchemaValue], None]:
    def rule(schema: JsonSchemaValue) -> None:
        _describe(
            schema,
            f"{prefix}start < {prefix}end, and the meeting is at most 24 hours long (not expressible in JSON "
            "Schema: checked by session-tally, a schema_violation otherwise).",
        )

    return rule


#: model validator (module.qualname) -> how it changes the model's schema
MODEL_RULES: dict[str, Callable[[JsonSchemaValue], None]] = {
    "domain.events._no_path_id": _no_path_id,
    "domain.events.ProgramCreatedData._auto_confirm_required": _auto_confirm_required,
    "domain.events.SettingsUpdatedData._one_or_more": _one_or_more,
    "domain.events.ScheduledData._span": _span(""),
    "domain.events.RescheduledData._span": _span("new_"),
}


class WireSchema(GenerateJsonSchema):
    """Pydantic's generator with the wire form of converters and model validators, and no field titles."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def _validator(self, schema: Any, inner: Callable[[], JsonSchemaValue]) -> JsonSchemaValue:
        fn = schema["function"]["function"]
        name = _name(fn)
        if schema["schema"]["type"] in ("model", "model-fields"):
            rule = MODEL_RULES.get(name)
            if rule is None:
                raise ContractError(f"model validator {name} has no wire form in {__name__}.MODEL_RULES")
            result = inner()
            rule(result)
            return result
        field_rule = FIELD_RULES.get(name)
        if field_rule is None:
            raise ContractError(f"field validator {name} has no wire form in {__name__}.FIELD_RULES")
        return field_rule(fn)

    def function_before_schema(self, schema: core_schema.BeforeValidatorFunctionSchema) -> JsonSchemaValue:
        return self._validator(schema, lambda: super(WireSchema, self).function_before_schema(schema))

    def function_after_schema(self, schema: core_schema.AfterValidatorFunctionSchema) -> JsonSchemaValue:
        return self._validator(schema, lambda: super(WireSchema, self).function_after_schema(schema))

    def function_wrap_schema(self, schema: core_schema.WrapValidatorFunctionSchema) -> JsonSchemaValue:
        return self._validator(schema, lambda: super(WireSchema, self).function_wrap_schema(schema))

    def function_plain_schema(self, schema: core_schema.PlainValidatorFunctionSchema) -> JsonSchemaValue:
        return self._validator(schema, lambda: {})


# ------------------------------------------------------------------------------------------ documents

ID_TEXT = "1 to 128 characters from A-Z a-z 0-9 . _ : -"
#: what each field means, for readers of the schemas (applied to every property of that name)
FIELD_TEXT = {
    "event_id": (
        f"unique per event ({ID_TEXT}; UUIDs recommended): the same event_id again is a duplicate and changes "
        "nothing; a missing or malformed one is never a duplicate (rejected each time)"
    ),
    "type": "the event type",
    "schema_version": (
        'the JSON integer 1, written 1 (1.0, 1e0, true and "1" are schema violations); another integer is '
        "unsupported_schema_version"
    ),
    "occurred_at": "event time: when it happened; every policy decision uses it",
    "org_id": f"the organization ({ID_TEXT})",
    "program_id": f"the program ({ID_TEXT}); ignored on organization events",
    "path_id": f"the path ({ID_TEXT}); the Kafka key of path and meeting events",
    "actor": "who did it",
    "id": f"the actor's user or service id ({ID_TEXT})",
    "role": "the actor's role; a role that may not send this type is rejected as forbidden (not a schema rule)",
    "data": "the fields of the event type",
    "meeting_id": f"the meeting ({ID_TEXT})",
    "new_meeting_id": f"the id of the meeting created at the new times; must be unused ({ID_TEXT})",
    "note": f"admin-only text (at most {E.MAX_ADMIN_TEXT} characters), never published on the output topics",
    "comment": f"admin-only text (at most {E.MAX_ADMIN_TEXT} characters), never published on the output topics",
    "session_verification": "off: the program has no Meetings tab; its path and meeting events are skipped",
    "enabled": "switch session management on or off for the organization (judged in processing order)",
    "occurred": "did the meeting take place?",
    "outcome": "upheld: the late cancel is waived; rejected: the status stays (the meeting may be disputed again)",
}


def _annotate(node: Any) -> None:
    """Add :data:`FIELD_TEXT` to the properties of every object schema that has no description of its own."""
    if isinstance(node, dict):
        props = node.get("properties") if node.get("type") == "object" else None
        for name, prop in (props or {}).items():
            if isinstance(prop, dict) and "description" not in prop and name in FIELD_TEXT:
                prop["description"] = FIELD_TEXT[name]
        for value in node.values():
            _annotate(value)
    elif isinstance(node, list):
        for value in node:
            _annotate(value)


def _document(
    model: type[BaseModel], title: str, description: str | None = None, annotate: bool = False
) -> JsonSchemaValue:
    body = model.model_json_schema(schema_generator=WireSchema)
    if annotate:
        _annotate(body)
    doc: JsonSchemaValue = {"$schema": DIALECT, "title": title}
    if description:
        body["description"] = f"{description} {body['description']}" if body.get("description") else description
    doc.update((k, v) for k, v in body.items() if k != "title")
    return doc


def _topic_of(event_type: str) -> str:
    return (
        "session-mgmt.admin-events, key org_id"
        if event_type in E.ADMIN_TYPES
        else ("session-mgmt.path-events, key path_id")
    )


def event_schema(event_type: str) -> JsonSchemaValue:
    """The schema of one input event type, NUL rule and ``schema_version: 1`` included."""
    roles = ", ".join(sorted(E.ALLOWED_ROLES[event_type]))
    doc = _document(
        E.EVENT_MODELS[event_type],
        event_type,
        f"A {event_type} event (topic {_topic_of(event_type)}). Who may send it: {roles} (another role: "
        f"forbidden). At most {E.MAX_MESSAGE_BYTES // 1024} KiB of UTF-8 JSON; unknown fields are ignored.",
        annotate=True,
    )
    props = doc["properties"]
    props["schema_version"] = {"const": 1, "description": FIELD_TEXT["schema_version"]}
    doc.setdefault("$defs", {})[NO_NUL_DEF] = NO_NUL
    doc["allOf"] = [{"$ref": f"#/$defs/{NO_NUL_DEF}"}]
    return doc


def envelope_schema() -> JsonSchemaValue:
    """What every input message has, whatever its type (checked first; then the type's own schema)."""
    doc = _document(
        E.Envelope,
        "envelope",
        "The envelope every input message has. Checked first (schema_violation), then type (unknown_type), "
        "then schema_version (unsupported_schema_version), then the type's own schema (events/<type>.json).",
        annotate=True,
    )
    props = doc["properties"]
    props["type"] = {"type": "string", "description": "one of the event types (another: unknown_type)"}
    props["schema_version"] = {"type": "integer", "description": FIELD_TEXT["schema_version"]}
    ident = {"type": "string", "pattern": props["org_id"]["pattern"]}
    props["program_id"] = {**ident, "description": "required on program, path and meeting events"}
    props["path_id"] = {**ident, "description": "required on path and meeting events; absent on the others"}
    props["data"] = {"type": "object", "description": FIELD_TEXT["data"]}
    doc["required"] = [*doc["required"], "data"]
    doc.setdefault("$defs", {})[NO_NUL_DEF] = NO_NUL
    doc["allOf"] = [{"$ref": f"#/$defs/{NO_NUL_DEF}"}]
    return doc


def output_schemas() -> dict[str, JsonSchemaValue]:
    """File name (under ``outputs/``) -> schema of each output message, and replay's document."""
    return {
        "outputs/path-tally.json": _document(O.PathTally, "path tally (session-mgmt.path-tallies)"),
        "outputs/meeting-status.json": _document(O.MeetingStatus, "meeting status (session-mgmt.meeting-statuses)"),
        "outputs/rejected.json": _document(O.Rejected, "rejected input (session-mgmt.rejected)"),
        "replay-document.json": _document(O.ReplayDocument, "session-tally replay output"),
    }


def all_schemas() -> dict[str, JsonSchemaValue]:
    """Every published schema by its path under ``schemas/``."""
    out = {"envelope.json": envelope_schema()}
    out.update({f"events/{t}.json": event_schema(t) for t in E.EVENT_MODELS})
    out.update(output_schemas())
    return out
