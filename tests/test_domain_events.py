"""The wire format (SPEC section 3) and checks 1-4 of SPEC section 7: the message itself, duplicates,
the schema (and the order of its reasons), the actor's role. Decisions: docs/policy.md."""

from __future__ import annotations

import copy
import json
from decimal import Decimal
from typing import Any

import pytest

from domain import events as E
from domain import reasons as R
from domain.engine import DUPLICATE, REJECTED, decode, process_message
from domain.model import State
from domain.timefmt import parse_duration, parse_instant

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


# ------------------------------------------------------------------------------- 1. the message itself


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_every_type_has_a_valid_example(type_: str) -> None:
    assert verdict(event(type_)) == "ok"


def pad_to(obj: dict[str, Any], size: int) -> bytes:
    """The message with an unknown field padded so that it is exactly ``size`` bytes."""
    base = raw({**obj, "pad": ""})
    return raw({**obj, "pad": "x" * (size - len(base))})


def test_64_kib_exactly_is_accepted_one_byte_more_is_too_large() -> None:
    exact = pad_to(event(), 64 * 1024)
    assert len(exact) == 65536
    assert verdict(exact) == "ok"
    over = pad_to(event(), 64 * 1024 + 1)
    assert len(over) == 65537
    assert verdict(over) == R.TOO_LARGE


def test_too_large_comes_before_invalid_json() -> None:
    assert verdict(b"{" * 70000) == R.TOO_LARGE
    assert verdict(b"\xff" * 65537) == R.TOO_LARGE


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b" ",
        b"{",
        b'{"event_id": "ev-1"',
        b"not json",
        b"{'event_id': 'ev-1'}",
        b'{"a": 1,}',
        b'{"a": 01}',
        b'{"a": 1} trailing',
        b'{"a": NaN}',
        b'{"a": Infinity}',
        b'{"a": -Infinity}',
        b'{"a": "\xff"}',  # not UTF-8
        b'{"a": "\xed\xa0\x80"}',  # an encoded surrogate is not UTF-8
        b'{"a": "\\ud800"}',  # lone high surrogate escape
        b'{"a": "\\udc00"}',  # lone low surrogate escape
        b'{"\\ud800": 1}',  # in a key
        b'{"a": ["x", ["\\udfff"]]}',  # nested
        b'{"a": "\\x41"}',  # invalid escape
        b'{"a": "tab\there"}',  # raw control character in a string
        b"\xef\xbb\xbf{}",  # a byte order mark
    ],
)
def test_invalid_json(message: bytes) -> None:
    assert verdict(message) == R.INVALID_JSON
    out = process_message(State(), message)[0]
    assert out.kind == REJECTED and out.event_id is None


def test_none_message_is_invalid_json() -> None:
    out = process_message(State(), None)[0]
    assert (out.kind, out.reason) == (REJECTED, R.INVALID_JSON)


def test_valid_escapes_and_non_ascii_are_fine() -> None:
    assert verdict(event(data={"reason": "caf\u00e9 \U0001f600"}, type=E.CANCELED)) == "ok"
    # a surrogate *pair* is one character
    message = raw(event(E.CANCELED)).replace(b'"sick"', b'"\\ud83d\\ude00 \\u00e9 \\" \\\\ \\/"')
    assert verdict(message) == "ok"


def test_numbers_of_any_size_are_json() -> None:
    assert verdict(raw(event()).replace(b'"org_id"', b'"extra": ' + b"9" * 5000 + b', "org_id"')) == "ok"
    assert verdict(raw(event()).replace(b'"org_id"', b'"extra": 1e999999, "org_id"')) == "ok"


def test_nesting_limit_is_fixed() -> None:
    def nested(depth: int) -> bytes:
        return raw(event()).replace(b'"org_id"', b'"extra": ' + b"[" * depth + b"]" * depth + b', "org_id"')

    assert verdict(nested(E.MAX_NESTING - 1)) == "ok"  # plus the envelope itself: MAX_NESTING levels
    assert verdict(nested(E.MAX_NESTING)) == R.INVALID_JSON
    assert verdict(b"[" * 30000 + b"]" * 30000) == R.INVALID_JSON
    # brackets inside strings do not count
    assert verdict(event(E.CANCELED, data={"reason": "[" * 1000})) == "ok"


@pytest.mark.parametrize("value", [[], [1], "x", 1, 1.5, None, True])
def test_a_json_value_that_is_not_an_object_is_a_schema_violation(value: Any) -> None:
    assert verdict(raw(value)) == R.SCHEMA_VIOLATION
    assert process_message(State(), raw(value))[0].event_id is None


def test_blank_padding_around_the_object_is_fine() -> None:
    assert verdict(b" \t\r\n" + raw(event()) + b" \r") == "ok"


# ---------------------------------------------------------------------------- readable event ids


@pytest.mark.parametrize(
    ("event_id", "readable"),
    [
        ("ev-1", "ev-1"),
        ("bad id!", "bad id!"),
        ("", ""),
        ("x" * 200, "x" * 200),
        (42, None),
        (None, None),
        (["a"], None),
    ],
)
def test_any_json_string_event_id_is_reported(event_id: Any, readable: str | None) -> None:
    out = process_message(State(), raw(event(event_id=event_id, type="no.such.type")))[0]
    assert out.kind == REJECTED
    assert out.event_id == readable


def test_missing_event_id_is_reported_as_null() -> None:
    out = process_message(State(), raw(without(event(), "event_id")))[0]
    assert (out.reason, out.event_id) == (R.SCHEMA_VIOLATION, None)


# ------------------------------------------------------------------------------------ 2. duplicates


def test_duplicate_check_comes_before_the_schema() -> None:
    state = State()
    assert process_message(state, raw(event(event_id="x", type="no.such.type")))[0].reason == R.UNKNOWN_TYPE
    again = process_message(state, raw(event(event_id="x")))[0]
    assert again.kind == DUPLICATE


def test_messages_without_readable_event_id_are_never_duplicates() -> None:
    state = State()
    message = raw(event(event_id=7))
    for _ in range(3):
        assert process_message(state, message)[0].reason == R.SCHEMA_VIOLATION
    for _ in range(2):
        assert process_message(state, b"{")[0].reason == R.INVALID_JSON


@pytest.mark.parametrize("bad_id", ["", "evt 1", "e" * 129, "\u00e9-1", "a\nb", "a/b", "ev-1\n"])
def test_a_malformed_event_id_is_rejected_every_time_and_swallows_nothing(bad_id: str) -> None:
    """SPEC section 3: only a well-formed event_id marks a message as seen."""
    state = State()
    for _ in range(3):
        out = process_message(state, raw(event(event_id=bad_id)))
        assert [(o.kind, o.reason, o.event_id) for o in out] == [(REJECTED, R.SCHEMA_VIOLATION, bad_id)]
        _, decoded = decode(raw(event(event_id=bad_id)))
        assert isinstance(decoded, E.Invalid) and decoded.reason == R.SCHEMA_VIOLATION
    assert state.seen == set()
    # the same message with a good id afterwards is applied (an org event: no references needed)
    good = process_message(state, raw(event(E.ORG_SET, event_id="ev-ok")))
    assert [o.kind for o in good] == ["applied"]


def test_a_well_formed_id_of_128_characters_counts_for_duplicates() -> None:
    state = State()
    message = raw(event(E.ORG_SET, event_id="a" * 128))
    assert process_message(state, message)[0].kind == "applied"
    assert process_message(state, message)[0].kind == DUPLICATE


@pytest.mark.parametrize(
    "where",
    [
        {"data": {"note": "a\u0000b"}},
        {"data": {"x\u0000": 1}},
        {"actor": {"id": "u\u0000", "role": "program_admin"}},
        {"unknown_field": ["ok", {"deep": "\u0000"}]},
        {"type": "no\u0000type"},
    ],
)
def test_nul_anywhere_is_a_schema_violation_checked_first(where: dict[str, Any]) -> None:
    obj = event(E.PATH_HOURS_SET, event_id="nul-1", schema_version=7)  # a version that would be unsupported
    obj.update(where)
    message = raw(obj)
    assert b"\\u0000" in message
    state = State()
    first = process_message(state, message)[0]
    assert (first.reason, first.event_id) == (R.SCHEMA_VIOLATION, "nul-1")
    assert "U+0000" in first.detail
    assert process_message(state, message)[0].kind == DUPLICATE  # a well-formed id: remembered
    _, decoded = decode(message)
    assert isinstance(decoded, E.Invalid) and decoded.reason == R.SCHEMA_VIOLATION


def test_an_escaped_backslash_before_u0000_is_not_a_nul() -> None:
    obj = event(E.PATH_HOURS_SET, data={"authorized_hours": 1, "note": "\\u0000"})
    message = raw(obj)
    assert b"\\\\u0000" in message
    assert verdict(obj) == "ok"


def test_invalid_json_and_too_large_do_not_remember_an_id() -> None:
    state = State()
    process_message(state, raw(event(event_id="ev-9"))[:-1])
    process_message(state, pad_to(event(event_id="ev-8"), 70000))
    assert state.seen == set()


# -------------------------------------------------------------------------------- 3. schema order


def test_envelope_fields_are_checked_before_the_type() -> None:
    assert verdict(without(event(type="no.such.type"), "occurred_at")) == R.SCHEMA_VIOLATION
    assert verdict(event(type="no.such.type", org_id="bad/org")) == R.SCHEMA_VIOLATION
    assert verdict(event(type="no.such.type", actor={"id": "u", "role": "boss"})) == R.SCHEMA_VIOLATION
    assert verdict(event(type="no.such.type", schema_version="1")) == R.SCHEMA_VIOLATION


def test_type_is_checked_before_the_version() -> None:
    assert verdict(event(type="no.such.type", schema_version=2)) == R.UNKNOWN_TYPE
    assert verdict(event(type="no.such.type")) == R.UNKNOWN_TYPE
    assert verdict(event(type="Meeting.Scheduled")) == R.UNKNOWN_TYPE


def test_version_is_checked_before_the_type_specific_fields() -> None:
    assert verdict(event(schema_version=2, data={"start": "yesterday"})) == R.UNSUPPORTED_SCHEMA_VERSION
    assert verdict(without(event(schema_version=2), "path_id")) == R.UNSUPPORTED_SCHEMA_VERSION
    assert verdict(event(E.ORG_SET, schema_version=3, path_id="p")) == R.UNSUPPORTED_SCHEMA_VERSION
    assert verdict(event(data={"start": "yesterday"})) == R.SCHEMA_VIOLATION


@pytest.mark.parametrize("version", [0, -1, 2, 10**30])
def test_another_integer_version_is_unsupported(version: int) -> None:
    assert verdict(event(schema_version=version)) == R.UNSUPPORTED_SCHEMA_VERSION


@pytest.mark.parametrize("version", ["1", 1.0, 1.5, True, None, [1], {"v": 1}])
def test_a_version_that_is_not_an_integer_is_a_schema_violation(version: Any) -> None:
    assert verdict(event(schema_version=version)) == R.SCHEMA_VIOLATION


def test_version_1_0_written_as_a_float_is_not_the_integer_1() -> None:
    message = raw(event()).replace(b'"schema_version": 1', b'"schema_version": 1.0')
    assert verdict(message) == R.SCHEMA_VIOLATION
    message = raw(event()).replace(b'"schema_version": 1', b'"schema_version": 1e0')
    assert verdict(message) == R.SCHEMA_VIOLATION


@pytest.mark.parametrize("field", ["event_id", "type", "schema_version", "occurred_at", "org_id", "actor", "data"])
@pytest.mark.parametrize("type_", ALL_TYPES)
def test_every_required_envelope_field(type_: str, field: str) -> None:
    assert verdict(without(event(type_), field)) == R.SCHEMA_VIOLATION


@pytest.mark.parametrize("field", ["id", "role"])
def test_actor_fields_are_required(field: str) -> None:
    assert verdict(without(event(), "actor", field)) == R.SCHEMA_VIOLATION
    assert verdict(event(actor="user-1")) == R.SCHEMA_VIOLATION


def test_unknown_role_is_a_schema_violation_not_forbidden() -> None:
    assert verdict(event(actor={"id": "u", "role": "admin"})) == R.SCHEMA_VIOLATION
    assert verdict(event(actor={"id": "u", "role": "Support"})) == R.SCHEMA_VIOLATION


def test_unknown_fields_are_ignored_everywhere() -> None:
    obj = event(extra={"any": [1, None]}, data={"colour": "blue"})
    obj["actor"]["email"] = "a@example.org"
    assert verdict(obj) == "ok"
    assert validated(obj).data.meeting_id == "m1"


def test_duplicate_keys_the_last_one_counts() -> None:
    message = raw(event()).replace(b'"org_id": "org-1"', b'"org_id": "bad/id", "org_id": "org-1"')
    assert verdict(message) == "ok"
    message = raw(event()).replace(b'"org_id": "org-1"', b'"org_id": "org-1", "org_id": "bad/id"')
    assert verdict(message) == R.SCHEMA_VIOLATION


# ------------------------------------------------------------------------------------------- ids


ID_FIELDS = [
    (E.SCHEDULED, ("event_id",)),
    (E.SCHEDULED, ("org_id",)),
    (E.SCHEDULED, ("program_id",)),
    (E.SCHEDULED, ("path_id",)),
    (E.SCHEDULED, ("actor", "id")),
    (E.SCHEDULED, ("data", "meeting_id")),
    (E.RESCHEDULED, ("data", "new_meeting_id")),
    (E.PROGRAM_CREATED, ("program_id",)),
]


def with_value(obj: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(obj)
    target = out
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return out


@pytest.mark.parametrize(("type_", "path"), ID_FIELDS)
@pytest.mark.parametrize("value", ["a", "x" * 128, "A-Z.a_z:0-9", "7d1c3c1e-3c55-4c59-a1e5-0d8f7f8a2b11", "...", "-"])
def test_valid_ids(type_: str, path: tuple[str, ...], value: str) -> None:
    assert verdict(with_value(event(type_), path, value)) == "ok"


@pytest.mark.parametrize(("type_", "path"), ID_FIELDS)
@pytest.mark.parametrize(
    "value",
    ["", "x" * 129, "a/b", "a b", "a\nb", "caf\u00e9", "a+b", "a@b", "a#b", "\uff21", 5, None, True, ["a"]],
)
def test_invalid_ids(type_: str, path: tuple[str, ...], value: Any) -> None:
    assert verdict(with_value(event(type_), path, value)) == R.SCHEMA_VIOLATION


def test_trailing_newline_in_an_id_is_invalid() -> None:
    assert verdict(event(org_id="org-1\n")) == R.SCHEMA_VIOLATION


# ------------------------------------------------------------------- path_id / program_id presence


@pytest.mark.parametrize("type_", [E.ORG_SET, *PROGRAM_TYPES])
@pytest.mark.parametrize("value", ["path-1", None, "", 5])
def test_path_id_must_be_absent_on_org_and_program_events(type_: str, value: Any) -> None:
    assert verdict(event(type_, path_id=value)) == R.SCHEMA_VIOLATION


@pytest.mark.parametrize("type_", PATH_TYPES)
def test_path_id_is_required_on_path_and_meeting_events(type_: str) -> None:
    assert verdict(without(event(type_), "path_id")) == R.SCHEMA_VIOLATION
    assert verdict(event(type_, path_id=None)) == R.SCHEMA_VIOLATION


@pytest.mark.parametrize("type_", [*PROGRAM_TYPES, *PATH_TYPES])
def test_program_id_is_required_except_on_org_events(type_: str) -> None:
    assert verdict(without(event(type_), "program_id")) == R.SCHEMA_VIOLATION
    assert verdict(event(type_, program_id=None)) == R.SCHEMA_VIOLATION


@pytest.mark.parametrize("value", ["prog-1", "bad/id", None, 5, {"x": 1}])
def test_program_id_on_org_events_is_ignored(value: Any) -> None:
    assert verdict(event(E.ORG_SET, program_id=value)) == "ok"


# ------------------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    ("type_", "path"),
    [
        (E.SCHEDULED, ("occurred_at",)),
        (E.SCHEDULED, ("data", "start")),
        (E.SCHEDULED, ("data", "end")),
        (E.RESCHEDULED, ("data", "new_start")),
        (E.RESCHEDULED, ("data", "new_end")),
        (E.ORG_SET, ("occurred_at",)),
    ],
)
@pytest.mark.parametrize(
    "value",
    ["2026-03-10T10:30:00", "2026-03-10 10:30:00Z", "2026-03-10", 1773138600, None, "2026-03-10T10:30:60Z"],
)
def test_naive_or_malformed_timestamps_are_schema_violations(type_: str, path: tuple[str, ...], value: Any) -> None:
    assert verdict(with_value(event(type_), path, value)) == R.SCHEMA_VIOLATION


def test_timestamps_with_offsets_are_instants() -> None:
    ev = validated(event(occurred_at="2026-03-01T10:00:00+01:00", data={"start": "2026-03-10T11:00:00+01:00"}))
    assert ev.occurred_at == parse_instant("2026-03-01T09:00:00Z")
    assert ev.data.start == parse_instant("2026-03-10T10:00:00Z")


# ------------------------------------------------------------------------------------ meeting span


@pytest.mark.parametrize(
    ("start", "end", "ok"),
    [
        ("2026-03-10T10:00:00Z", "2026-03-10T10:00:00Z", False),  # start == end
        ("2026-03-10T10:00:00Z", "2026-03-10T09:59:59Z", False),  # end before start
        ("2026-03-10T10:00:00Z", "2026-03-10T10:00:00.000001Z", True),  # 1 µs long
        ("2026-03-10T10:00:00Z", "2026-03-11T10:00:00Z", True),  # exactly 24 h
        ("2026-03-10T10:00:00Z", "2026-03-11T10:00:01Z", False),  # 24 h + 1 s
        ("2026-03-10T10:00:00Z", "2026-03-11T10:00:00.000001Z", False),  # 24 h + 1 µs
        ("2026-03-10T10:00:00Z", "2026-03-11T11:00:00+01:00", True),  # 24 h, written with an offset
        ("2026-03-10T10:00:00Z", "2026-03-10T11:00:00+01:00", False),  # the same instant
    ],
)
def test_meeting_span(start: str, end: str, ok: bool) -> None:
    expected = "ok" if ok else R.SCHEMA_VIOLATION
    assert verdict(event(data={"start": start, "end": end})) == expected
    assert verdict(event(E.RESCHEDULED, data={"new_start": start, "new_end": end})) == expected


# ---------------------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("window", "ok"),
    [
        ("PT1H", True),
        ("PT60M", True),
        ("PT3600S", True),
        ("PT59M59S", False),
        ("PT59M", False),
        ("P30D", True),
        ("PT720H", True),
        ("P4W", True),
        ("P30DT1S", False),
        ("P31D", False),
        ("P5W", False),
        ("P0D", False),
        ("P1M", False),
        ("P1Y", False),
        ("PT1.5H", False),
        ("P1W2D", False),
        ("P", False),
        ("PT", False),
        (24, False),
        ("", False),
    ],
)
def test_late_cancel_window_bounds(window: Any, ok: bool) -> None:
    expected = "ok" if ok else R.SCHEMA_VIOLATION
    assert verdict(event(E.PROGRAM_CREATED, data={"late_cancel_window": window})) == expected
    assert verdict(event(E.SETTINGS_UPDATED, data={"late_cancel_window": window})) == expected


@pytest.mark.parametrize(
    ("window", "ok"),
    [
        ("PT1H", True),
        ("PT59M59S", False),
        ("P90D", True),
        ("PT2160H", True),
        ("P12W", True),
        ("P90DT1S", False),
        ("P13W", False),
        ("P91D", False),
        ("P3M", False),
    ],
)
def test_auto_confirm_window_bounds(window: str, ok: bool) -> None:
    expected = "ok" if ok else R.SCHEMA_VIOLATION
    assert verdict(event(E.PROGRAM_CREATED, data={"auto_confirm_window": window})) == expected
    assert verdict(event(E.SETTINGS_UPDATED, data={"auto_confirm_window": window})) == expected


def test_windows_are_kept_in_microseconds() -> None:
    ev = validated(event(E.PROGRAM_CREATED, data={"late_cancel_window": "P1DT12H", "auto_confirm_window": "P2W"}))
    assert ev.data.late_cancel_window == parse_duration("PT36H")
    assert ev.data.auto_confirm_window == parse_duration("P14D")


def test_late_cancel_window_null_means_no_late_cancels() -> None:
    assert verdict(event(E.PROGRAM_CREATED, data={"late_cancel_window": None})) == "ok"
    assert verdict(event(E.SETTINGS_UPDATED, data={"late_cancel_window": None})) == "ok"
    assert validated(event(E.PROGRAM_CREATED, data={"late_cancel_window": None})).data.late_cancel_window is None


@pytest.mark.parametrize("key", ["late_cancel_window", "authorized_hours", "session_verification"])
def test_program_created_required_keys(key: str) -> None:
    assert verdict(without(event(E.PROGRAM_CREATED), "data", key)) == R.SCHEMA_VIOLATION


def test_auto_confirm_window_is_required_only_when_verification_is_on() -> None:
    on = event(E.PROGRAM_CREATED)
    assert verdict(without(on, "data", "auto_confirm_window")) == R.SCHEMA_VIOLATION
    assert verdict(event(E.PROGRAM_CREATED, data={"auto_confirm_window": None})) == R.SCHEMA_VIOLATION
    off = event(E.PROGRAM_CREATED, data={"session_verification": False})
    assert verdict(without(off, "data", "auto_confirm_window")) == "ok"
    assert verdict(event(E.PROGRAM_CREATED, data={"session_verification": False, "auto_confirm_window": None})) == "ok"
    # when present it must still be valid
    assert verdict(event(E.PROGRAM_CREATED, data={"session_verification": False, "auto_confirm_window": "P1M"})) != "ok"


def test_settings_update_needs_at_least_one_setting_and_no_null_auto_confirm() -> None:
    assert verdict(event(E.SETTINGS_UPDATED, data={"late_cancel_window": None})) == "ok"
    bare = event(E.SETTINGS_UPDATED)
    bare["data"] = {}
    assert verdict(bare) == R.SCHEMA_VIOLATION
    bare["data"] = {"name": "renamed"}  # not a setting
    assert verdict(bare) == R.SCHEMA_VIOLATION
    bare["data"] = {"auto_confirm_window": None}
    assert verdict(bare) == R.SCHEMA_VIOLATION
    bare["data"] = {"authorized_hours": None}
    assert verdict(bare) == "ok"
    bare["data"] = {"auto_confirm_window": "P5D", "authorized_hours": 3}
    assert verdict(bare) == "ok"


def test_settings_update_remembers_which_fields_it_carries() -> None:
    ev = validated(event(E.SETTINGS_UPDATED) | {"data": {"authorized_hours": None}})
    assert ev.data.has("authorized_hours")
    assert not ev.data.has("late_cancel_window")


# -------------------------------------------------------------------------------- authorized hours


HOURS_TYPES = [E.PROGRAM_CREATED, E.SETTINGS_UPDATED, E.PATH_HOURS_SET]


@pytest.mark.parametrize("type_", HOURS_TYPES)
@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", Decimal(0)),
        ("0.0", Decimal(0)),
        ("-0", Decimal(0)),
        ("0.01", Decimal("0.01")),
        ("12.5", Decimal("12.5")),
        ("99999.99", Decimal("99999.99")),
        ("100000", Decimal(100000)),
        ("100000.00", Decimal(100000)),
        ("1e2", Decimal(100)),
        ("1.000", Decimal(1)),  # judged by value: no more than 2 decimals
        ("null", None),
    ],
)
def test_valid_authorized_hours(type_: str, text: str, value: Decimal | None) -> None:
    message = raw(event(type_, data={"authorized_hours": "__H__"})).replace(b'"__H__"', text.encode())
    assert verdict(message) == "ok"
    ev = E.validate(E.parse(message))  # type: ignore[arg-type]
    assert ev.data.authorized_hours == value  # type: ignore[union-attr]


@pytest.mark.parametrize("type_", HOURS_TYPES)
@pytest.mark.parametrize(
    "text",
    [
        "-0.01",
        "-1",
        "100000.01",
        "100001",
        "1e6",
        "1.234",
        "0.001",
        "12.345",
        "0.1000000000000000000000001",
        '"10"',
        "true",
        "[10]",
        "{}",
    ],
)
def test_invalid_authorized_hours(type_: str, text: str) -> None:
    message = raw(event(type_, data={"authorized_hours": "__H__"})).replace(b'"__H__"', text.encode())
    assert verdict(message) == R.SCHEMA_VIOLATION


def test_authorized_hours_is_required_on_path_hours_set_and_null_means_the_program_value() -> None:
    assert verdict(without(event(E.PATH_HOURS_SET), "data", "authorized_hours")) == R.SCHEMA_VIOLATION
    assert verdict(event(E.PATH_HOURS_SET, data={"authorized_hours": None})) == "ok"


# ------------------------------------------------------------------------------ texts and other data


@pytest.mark.parametrize(
    ("type_", "key"),
    [(E.PATH_HOURS_SET, "note"), (E.DISPUTED, "comment"), (E.DISPUTE_RESOLVED, "note")],
)
def test_admin_text_is_at_most_2000_characters(type_: str, key: str) -> None:
    assert verdict(event(type_, data={key: "x" * 2000})) == "ok"
    assert verdict(event(type_, data={key: "\u00e9" * 2000})) == "ok"  # characters, not bytes
    assert verdict(event(type_, data={key: "x" * 2001})) == R.SCHEMA_VIOLATION
    assert verdict(event(type_, data={key: None})) == "ok"
    assert verdict(without(event(type_), "data", key)) == "ok"
    assert verdict(event(type_, data={key: 5})) == R.SCHEMA_VIOLATION


@pytest.mark.parametrize(("type_", "key"), [(E.PROGRAM_CREATED, "name"), (E.CANCELED, "reason")])
def test_optional_strings(type_: str, key: str) -> None:
    assert verdict(event(type_, data={key: None})) == "ok"
    assert verdict(without(event(type_), "data", key)) == "ok"
    assert verdict(event(type_, data={key: "x" * 5000})) == "ok"  # no limit
    assert verdict(event(type_, data={key: 5})) == R.SCHEMA_VIOLATION


@pytest.mark.parametrize(
    ("type_", "key", "bad"),
    [
        (E.ORG_SET, "enabled", "true"),
        (E.ORG_SET, "enabled", 1),
        (E.ORG_SET, "enabled", None),
        (E.PROGRAM_CREATED, "session_verification", "yes"),
        (E.CONFIRMATION, "occurred", 1),
        (E.CONFIRMATION, "occurred", None),
        (E.DISPUTE_RESOLVED, "outcome", "waived"),
        (E.DISPUTE_RESOLVED, "outcome", "Upheld"),
        (E.DISPUTE_RESOLVED, "outcome", None),
    ],
)
def test_wrong_data_types(type_: str, key: str, bad: Any) -> None:
    assert verdict(event(type_, data={key: bad})) == R.SCHEMA_VIOLATION
    assert verdict(without(event(type_), "data", key)) == R.SCHEMA_VIOLATION


@pytest.mark.parametrize("type_", PATH_TYPES[1:])
def test_meeting_id_is_required(type_: str) -> None:
    assert verdict(without(event(type_), "data", "meeting_id")) == R.SCHEMA_VIOLATION


@pytest.mark.parametrize("bad", [None, [], "data", 5])
def test_data_must_be_an_object(bad: Any) -> None:
    assert verdict(event(data=None) | {"data": bad}) == R.SCHEMA_VIOLATION


def test_models_are_frozen() -> None:
    ev = validated(event())
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises its own ValidationError
        ev.org_id = "other"


# ------------------------------------------------------------------------------------------- 4. roles

MAY_SEND = {
    E.ORG_SET: {"support"},
    E.PROGRAM_CREATED: {"program_admin", "support"},
    E.SETTINGS_UPDATED: {"support"},
    E.PATH_HOURS_SET: {"program_admin", "support"},
    E.SCHEDULED: {"participant", "facilitator", "program_admin", "system"},
    E.RESCHEDULED: {"participant", "facilitator", "program_admin", "system"},
    E.CANCELED: {"participant", "facilitator", "program_admin", "system"},
    E.CONFIRMATION: {"participant", "program_admin"},
    E.DISPUTED: {"facilitator", "participant"},
    E.DISPUTE_RESOLVED: {"program_admin", "support"},
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("type_", ALL_TYPES)
def test_who_may_send_what(type_: str, role: str) -> None:
    out = process_message(State(), raw(event(type_, actor={"id": "u", "role": role})))[0]
    if role in MAY_SEND[type_]:
        assert out.reason != R.FORBIDDEN
    else:
        assert (out.kind, out.reason) == (REJECTED, R.FORBIDDEN)
        assert out.event_id == "ev-1"


def test_schema_is_checked_before_the_role() -> None:
    obj = event(E.SETTINGS_UPDATED, actor={"id": "u", "role": "participant"}, data={"late_cancel_window": "P1M"})
    assert verdict(obj) == R.SCHEMA_VIOLATION


# ------------------------------------------------------------------------------- the fast path


@pytest.mark.parametrize("type_", PATH_TYPES[1:])
def test_fast_path_takes_plain_meeting_events_and_agrees(type_: str) -> None:
    message = raw(event(type_, data={"reason": "sick"} if type_ == E.CANCELED else {}))
    fast = E.decode_fast(message)
    assert fast is not None
    assert fast == E.validate(E.parse(message))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "message",
    [
        raw(event(extra=float("nan"))),  # NaN literal: pydantic's parser accepts it, JSON does not
        raw(event()).replace(b'"org_id"', b'"extra": Infinity, "org_id"'),
        raw(event()).replace(b'"org_id"', b'"extra": -Infinity, "org_id"'),
        raw(event(E.CANCELED, data={"reason": "\\ud800"})).replace(b"\\\\ud800", b"\\ud800"),  # lone surrogate
        raw(event(E.CANCELED, data={"reason": "caf\u00e9"})),  # escaped non-ASCII
        json.dumps(event(E.CANCELED, data={"reason": "caf\u00e9"}), ensure_ascii=False).encode(),  # raw UTF-8
        raw(event(schema_version=2)),  # valid for the models, but another version
        raw(event(E.ORG_SET)),  # not a meeting event
        raw(event(E.PATH_HOURS_SET)),  # hours need the exact decimal text
        raw(event()).replace(b'"org_id"', b'"x": ' + b"[" * 250 + b"]" * 250 + b', "org_id"'),  # deep
        pad_to(event(), 64 * 1024 + 1),
        b'{"type": "meeting.canceled"}',
        b"[]",
    ],
)
def test_fast_path_leaves_everything_else_to_the_precise_path(message: bytes) -> None:
    assert E.decode_fast(message) is None
    verdict(message)  # and the entry points agree with the precise path


def test_fast_path_parser_stops_before_the_nesting_limit() -> None:
    """decode_fast relies on pydantic's JSON parser refusing nesting deeper than MAX_NESTING."""
    depth = E.MAX_NESTING - 1
    message = raw(event()).replace(b'"org_id"', b'"x": ' + b"[" * depth + b"]" * depth + b', "org_id"')
    assert E.decode_fast(message) is None
    assert verdict(message) == "ok"


def test_a_huge_integer_version_is_unsupported_not_invalid() -> None:
    message = raw(event()).replace(b'"schema_version": 1', b'"schema_version": ' + b"7" * 5000)
    assert verdict(message) == R.UNSUPPORTED_SCHEMA_VERSION
