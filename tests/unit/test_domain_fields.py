"""The wire format, part 2: field rules (timestamps, meeting spans, windows, authorized hours, texts),
the roles (check 4 of SPEC section 7) and the fast decoding path. Decisions: docs/policy.md."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from domain import events as E
from domain import reasons as R
from domain.engine import REJECTED, process_message
from domain.model import State
from domain.timefmt import parse_duration, parse_instant
from tests.unit.events_world import (
    ALL_TYPES,
    PATH_TYPES,
    ROLES,
    event,
    pad_to,
    raw,
    validated,
    verdict,
    with_value,
    without,
)

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
