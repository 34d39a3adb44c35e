"""The path tally (SPEC section 5), hour rounding, and the replay document (section 6)."""

from __future__ import annotations

import json
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest

from domain.model import STATUSES, Path, Program
from domain.replay import Replay, replay
from domain.tally import authorized, json_number, round_hours, tally
from domain.timefmt import DAY, HOUR, parse_instant

T0 = parse_instant("2026-03-20T00:00:00Z")


# ------------------------------------------------------------------------------------------ rounding


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Fraction(0), "0.00"),
        (Fraction(1, 200), "0.01"),  # 0.005: tie, away from zero
        (Fraction(-1, 200), "-0.01"),
        (Fraction(3, 200), "0.02"),  # 0.015
        (Fraction(-3, 200), "-0.02"),
        (Fraction(1, 400), "0.00"),  # 0.0025
        (Fraction(4999, 1000000), "0.00"),  # 0.004999
        (Fraction(-4999, 1000000), "0.00"),
        (Fraction(1, 3), "0.33"),
        (Fraction(2, 3), "0.67"),
        (Fraction(-2, 3), "-0.67"),
        (Fraction(1, 60), "0.02"),  # one minute
        (Fraction(5, 60), "0.08"),
        (Fraction(3, 60), "0.05"),
        (Fraction(100125, 1000), "100.13"),  # 100.125
        (Fraction(-100125, 1000), "-100.13"),
        (Fraction(123456789, 60), "2057613.15"),
    ],
)
def test_round_hours_ties_away_from_zero(value: Fraction, expected: str) -> None:
    assert round_hours(value) == Decimal(expected)


def test_round_hours_never_gives_negative_zero() -> None:
    assert str(round_hours(Fraction(-1, 1000))) in {"0.00", "0"}
    assert json_number(round_hours(Fraction(-1, 1000))) == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), (Decimal("2.00"), 2), (Decimal("2.5"), 2.5), (Decimal("-0.17"), -0.17), (Decimal(0), 0)],
)
def test_json_number(value: Decimal | None, expected: Any) -> None:
    out = json_number(value)
    assert out == expected
    assert type(out) is type(expected)


# ------------------------------------------------------------------------------------------- tally


def program(hours: Decimal | None = Decimal(10)) -> Program:
    return Program("prog-1", "org-1", True, 24 * HOUR, 3 * DAY, hours, 0)


def counts(**by_status: tuple[int, int]) -> tuple[list[int], list[int]]:
    """Per-status (count, minutes) lists, indexed like STATUSES."""
    c = [0] * len(STATUSES)
    m = [0] * len(STATUSES)
    for status, (n, minutes) in by_status.items():
        i = STATUSES.index(status)
        c[i], m[i] = n, minutes
    return c, m


def test_used_pending_and_upcoming_minutes() -> None:
    c, m = counts(
        upcoming=(1, 10),
        unconfirmed=(1, 20),
        confirmed=(1, 40),
        auto_confirmed=(1, 80),
        did_not_occur=(1, 160),
        late_canceled_pending=(1, 320),
        late_canceled=(1, 640),
        late_cancel_waived=(1, 1280),
        canceled=(1, 2560),
        rescheduled=(1, 5120),
    )
    doc = tally(Path("path-1", "prog-1", "org-1"), program(), c, m, T0, 7)
    assert doc["used_minutes"] == 40 + 80 + 640
    assert doc["pending_minutes"] == 20 + 320
    assert doc["upcoming_minutes"] == 10
    assert doc["used_hours"] == 12.67  # 760 / 60 = 12.666..
    assert doc["remaining_hours"] == -2.67
    assert doc["meetings_by_status"] == dict.fromkeys(STATUSES, 1)
    assert doc["version"] == 7
    assert doc["as_of"] == "2026-03-20T00:00:00Z"
    assert (doc["path_id"], doc["program_id"], doc["org_id"]) == ("path-1", "prog-1", "org-1")


def test_every_status_is_listed_with_zeros() -> None:
    c, m = counts()
    doc = tally(Path("path-1", "prog-1", "org-1"), program(), c, m, T0, 0)
    assert doc["meetings_by_status"] == dict.fromkeys(STATUSES, 0)
    assert list(doc["meetings_by_status"]) == list(STATUSES)
    assert (doc["used_hours"], doc["remaining_hours"]) == (0, 10)


def test_remaining_hours_goes_negative() -> None:
    c, m = counts(confirmed=(3, 11 * 60 + 1))
    doc = tally(Path("path-1", "prog-1", "org-1"), program(), c, m, T0, 0)
    assert doc["used_hours"] == 11.02
    assert doc["remaining_hours"] == -1.02


def test_no_authorized_hours_means_no_remaining() -> None:
    c, m = counts(confirmed=(1, 90))
    doc = tally(Path("path-1", "prog-1", "org-1"), program(None), c, m, T0, 0)
    assert (doc["authorized_hours"], doc["authorized_source"], doc["remaining_hours"]) == (None, None, None)
    assert doc["used_hours"] == 1.5


def test_authorized_source() -> None:
    prog = program(Decimal(10))
    path = Path("path-1", "prog-1", "org-1")
    assert authorized(path, prog) == (Decimal(10), "program")
    path.override_hours, path.override_at = Decimal("2.25"), 5
    assert authorized(path, prog) == (Decimal("2.25"), "path")
    path.override_hours = None  # set back to "the program's"
    assert authorized(path, prog) == (Decimal(10), "program")
    assert authorized(path, program(None)) == (None, None)
    path.override_hours = Decimal(0)  # zero is a value, not "none"
    assert authorized(path, program(None)) == (Decimal(0), "path")


def test_hours_are_json_numbers() -> None:
    c, m = counts(confirmed=(1, 30))
    doc = tally(Path("path-1", "prog-1", "org-1"), program(Decimal("12.5")), c, m, T0, 0)
    assert json.loads(json.dumps(doc))["authorized_hours"] == 12.5
    assert doc["used_hours"] == 0.5 and doc["remaining_hours"] == 12
    assert type(doc["remaining_hours"]) is int


# -------------------------------------------------------------------------------- replay document


def line(type_: str, at: str = "2026-03-01T09:00:00Z", eid: str | None = None, **fields: Any) -> bytes:
    obj: dict[str, Any] = {
        "event_id": eid or f"{type_}-{at}-{sorted(fields.items())!r}",
        "type": type_,
        "schema_version": 1,
        "occurred_at": at,
        "org_id": fields.pop("org", "org-1"),
    }
    if type_ != "organization.session_management_set":
        obj["program_id"] = fields.pop("program", "prog-1")
    if not type_.startswith(("organization.", "program.")):
        obj["path_id"] = fields.pop("path", "path-1")
    obj["actor"] = {"id": "u", "role": fields.pop("role")}
    obj["data"] = fields
    return json.dumps(obj).encode()


def setup_lines(verification: bool = True, program_id: str = "prog-1", hours: Any = 10) -> list[bytes]:
    return [
        line("organization.session_management_set", role="support", enabled=True, eid="org-on"),
        line(
            "program.created",
            role="program_admin",
            program=program_id,
            session_verification=verification,
            late_cancel_window="PT24H",
            auto_confirm_window="P3D",
            authorized_hours=hours,
            eid=f"create-{program_id}",
        ),
    ]


def sched(mid: str, start: str, end: str, **kw: Any) -> bytes:
    return line("meeting.scheduled", role="facilitator", meeting_id=mid, start=start, end=end, eid=f"s-{mid}", **kw)


def test_replay_document_shape_and_order() -> None:
    lines = [
        *setup_lines(),
        *setup_lines(verification=False, program_id="off"),
        sched("b", "2026-03-10T10:00:00Z", "2026-03-10T10:30:00Z", path="path-b"),
        sched("a", "2026-03-25T10:00:00Z", "2026-03-25T11:00:00+01:00", path="path-a"),
        line("path.authorized_hours_set", role="program_admin", path="path-a", authorized_hours=None, eid="h-a"),
        sched("z", "2026-03-10T10:00:00Z", "2026-03-10T11:00:00Z", path="path-off", program="off"),
        b"",
        b"   ",
        b"{broken",
        line("meeting.canceled", role="participant", meeting_id="ghost", eid="wait-1"),
        line("meeting.canceled", role="support", meeting_id="a", eid="forbidden-1"),
    ]
    doc = replay(lines, T0)
    assert list(doc) == ["tallies", "meetings", "rejected"]
    # one tally per registered path of a verification-enabled program, by path_id
    assert [t["path_id"] for t in doc["tallies"]] == ["path-a", "path-b"]
    a, b = doc["tallies"]  # path-a: registered by the hours event; its meeting was rejected
    assert a["meetings_by_status"] == dict.fromkeys(STATUSES, 0) and a["authorized_source"] == "program"
    assert b["used_minutes"] == 30 and b["meetings_by_status"]["auto_confirmed"] == 1
    # meetings by meeting_id, only those of verification-enabled programs
    assert [m["meeting_id"] for m in doc["meetings"]] == ["b"]
    assert doc["meetings"][0] == {
        "meeting_id": "b", "path_id": "path-b", "status": "auto_confirmed", "start": "2026-03-10T10:00:00Z",
        "end": "2026-03-10T10:30:00Z", "minutes": 30, "disputed": False,
    }  # fmt: skip
    # rejections by line, waiting ones last; blank lines count for numbering
    assert doc["rejected"] == [
        {"line": 6, "event_id": "s-a", "reason": "schema_violation"},  # start == end in UTC
        {"line": 11, "event_id": None, "reason": "invalid_json"},
        {"line": 13, "event_id": "forbidden-1", "reason": "forbidden"},
        {"line": 12, "event_id": "wait-1", "reason": "unknown_meeting"},
    ]


def test_replay_writes_instants_in_utc() -> None:
    lines = [*setup_lines(), sched("m", "2026-03-10T11:00:00+01:00", "2026-03-10T12:30:00.5+01:00")]
    meeting = replay(lines, T0)["meetings"][0]
    assert (meeting["start"], meeting["end"]) == ("2026-03-10T10:00:00Z", "2026-03-10T11:30:00.500000Z")
    assert meeting["minutes"] == 90


def test_tally_counts_match_the_meetings() -> None:
    lines = [
        *setup_lines(),
        sched("m1", "2026-03-10T10:00:00Z", "2026-03-10T11:00:00Z"),
        sched("m2", "2026-03-19T10:00:00Z", "2026-03-19T10:45:00Z"),
        sched("m3", "2026-03-25T10:00:00Z", "2026-03-25T10:20:00Z"),
        sched("m4", "2026-03-18T10:00:00Z", "2026-03-18T12:00:00Z"),
        line("meeting.canceled", "2026-03-18T09:00:00Z", role="participant", meeting_id="m4", eid="c4"),
        line(
            "meeting.confirmation_submitted",
            "2026-03-10T12:00:00Z",
            role="participant",
            meeting_id="m1",
            occurred=False,
            eid="a1",
        ),
    ]
    doc = replay(lines, T0)
    (t,) = doc["tallies"]
    statuses = {m["meeting_id"]: m["status"] for m in doc["meetings"]}
    assert statuses == {
        "m1": "did_not_occur",
        "m2": "unconfirmed",
        "m3": "upcoming",
        "m4": "late_canceled_pending",
    }
    assert (t["used_minutes"], t["pending_minutes"], t["upcoming_minutes"]) == (0, 45 + 120, 20)
    assert sum(t["meetings_by_status"].values()) == 4
    assert t["remaining_hours"] == 10


def test_replay_version_is_the_number_of_applied_events_touching_the_path() -> None:
    lines = [
        *setup_lines(),
        sched("m1", "2026-03-10T10:00:00Z", "2026-03-10T11:00:00Z"),
        sched("m1", "2026-03-10T10:00:00Z", "2026-03-10T11:00:00Z"),  # duplicate id
        line(
            "meeting.confirmation_submitted",
            "2026-03-10T12:00:00Z",
            role="participant",
            meeting_id="m1",
            occurred=True,
            eid="a1",
        ),
        line("path.authorized_hours_set", role="program_admin", authorized_hours=3, eid="h1"),
    ]
    (t,) = replay(lines, T0)["tallies"]
    assert t["version"] == 3


def test_replay_object_can_be_fed_incrementally_and_counts_outcomes() -> None:
    r = Replay()
    for n, raw in enumerate([*setup_lines(), sched("m1", "2026-03-10T10:00:00Z", "2026-03-10T11:00:00Z")], 1):
        r.feed(raw, n)
    r.feed(sched("m1", "2026-03-10T10:00:00Z", "2026-03-10T11:00:00Z"), 4)
    assert r.counts == {"applied": 3, "duplicate": 1}
    assert len(r.document(T0)["meetings"]) == 1


def test_replay_document_can_be_asked_for_twice() -> None:
    r = Replay()
    r.feed(line("meeting.canceled", role="participant", meeting_id="ghost", eid="w"), 1)
    first = r.document(T0)
    assert first["rejected"] == [{"line": 1, "event_id": "w", "reason": "unknown_program"}]
    assert r.document(T0) == first
