"""The wire format (SPEC section 3) and checks 1-3 of SPEC section 7, part 1: the message itself,
duplicates and event ids, the order of the schema reasons, ids, and path_id/program_id presence."""

from __future__ import annotations

from typing import Any

import pytest

from domain import events as E
from domain import reasons as R
from domain.engine import DUPLICATE, REJECTED, decode, process_message
from domain.model import State
from tests.unit.events_world import (
    ALL_TYPES,
    PATH_TYPES,
    PROGRAM_TYPES,
    event,
    pad_to,
    raw,
    validated,
    verdict,
    with_value,
    without,
)

# ------------------------------------------------------------------------------- 1. the message itself


@pytest.mark.parametrize("type_", ALL_TYPES)
def test_every_type_has_a_valid_example(type_: str) -> None:
    assert verdict(event(type_)) == "ok"


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
