"""Messages for the wire-format tests: a valid envelope of each type, variations, and the verdict of the
real entry point (``process_message``) cross-checked with the stateless decoders."""

from __future__ import annotations

import copy
import json
from typing import Any

from domain import events as E
from domain import reasons as R
from domain.engine import REJECTED, decode, process_message
from domain.model import State

SCHEMA_REASONS = {R.SCHEMA_VIOLATION, R.UNKNOWN_TYPE, R.UNSUPPORTED_SCHEMA_VERSION}

DATA: dict[str, dict[str, Any]] = {
    E.ORG_SET: {"enabled": True},
    E.PROGRAM_CREATED: {
        "name": "Coaching",
        "session_verification": True,
        "late_cancel_window": "PT24H",
        "auto_confirm_window": "P3D",
        "authorized_hours": 10,
    },
    E.SETTINGS_UPDATED: {"late_cancel_window": "PT48H"},
    E.PATH_HOURS_SET: {"authorized_hours": 12.5, "note": "budget"},
    E.SCHEDULED: {"meeting_id": "m1", "start": "2026-03-10T10:00:00Z", "end": "2026-03-10T11:00:00Z"},
    E.RESCHEDULED: {
        "meeting_id": "m1",
        "new_meeting_id": "m2",
        "new_start": "2026-03-11T10:00:00Z",
        "new_end": "2026-03-11T11:00:00Z",
    },
    E.CANCELED: {"meeting_id": "m1", "reason": "sick"},
    E.CONFIRMATION: {"meeting_id": "m1", "occurred": True},
    E.DISPUTED: {"meeting_id": "m1", "comment": "was not late"},
    E.DISPUTE_RESOLVED: {"meeting_id": "m1", "outcome": "upheld", "note": "ok"},
}
A_ROLE = {
    E.ORG_SET: "support",
    E.PROGRAM_CREATED: "program_admin",
    E.SETTINGS_UPDATED: "support",
    E.PATH_HOURS_SET: "program_admin",
    E.SCHEDULED: "facilitator",
    E.RESCHEDULED: "participant",
    E.CANCELED: "participant",
    E.CONFIRMATION: "participant",
    E.DISPUTED: "facilitator",
    E.DISPUTE_RESOLVED: "program_admin",
}
ALL_TYPES = list(DATA)
PATH_TYPES = [t for t in ALL_TYPES if t not in E.ADMIN_TYPES]
PROGRAM_TYPES = [E.PROGRAM_CREATED, E.SETTINGS_UPDATED]
ROLES = ["participant", "facilitator", "program_admin", "support", "system"]


def event(type_: str = E.SCHEDULED, **fields: Any) -> dict[str, Any]:
    """A valid envelope of ``type_``; ``fields`` replace top-level fields (``data`` merges)."""
    obj: dict[str, Any] = {
        "event_id": "ev-1",
        "type": type_,
        "schema_version": 1,
        "occurred_at": "2026-03-01T09:00:00Z",
        "org_id": "org-1",
    }
    if type_ != E.ORG_SET:
        obj["program_id"] = "prog-1"
    if type_ not in E.ADMIN_TYPES:
        obj["path_id"] = "path-1"
    obj["actor"] = {"id": "user-1", "role": A_ROLE[type_]}
    obj["data"] = copy.deepcopy(DATA[type_])
    data = fields.pop("data", None)
    if data is not None:
        obj["data"].update(data)
    obj.update(fields)
    return obj


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def without(obj: dict[str, Any], *path: str) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    target = out
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return out


def verdict(message: Any) -> str:
    """The schema verdict on a message: a reason of checks 1-3, or "ok" when it passes them.

    Runs the real entry point (``process_message`` on an empty state) and checks that the stateless
    ``decode`` and the precise ``parse``/``validate`` pair agree with it.
    """
    data = message if isinstance(message, bytes) else raw(message)
    out = process_message(State(), data)[0]
    got = out.reason if out.kind == REJECTED and out.reason in SCHEMA_REASONS | {R.INVALID_JSON, R.TOO_LARGE} else "ok"
    _, decoded = decode(data)
    assert (decoded.reason if isinstance(decoded, E.Invalid) else "ok") == got
    parsed = E.parse(data)
    precise = parsed if isinstance(parsed, E.Invalid) else E.validate(parsed)
    assert (precise.reason if isinstance(precise, E.Invalid) else "ok") == got
    return got


def validated(obj: dict[str, Any]) -> Any:
    result = E.validate(E.parse(raw(obj)))  # type: ignore[arg-type]
    assert not isinstance(result, E.Invalid), result
    return result


def pad_to(obj: dict[str, Any], size: int) -> bytes:
    """The message with an unknown field padded so that it is exactly ``size`` bytes."""
    base = raw({**obj, "pad": ""})
    return raw({**obj, "pad": "x" * (size - len(base))})


def with_value(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out
