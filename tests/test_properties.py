"""Properties of the engine over generated event streams (hypothesis).

The generator builds *plausible* streams: a few orgs, programs, paths and meetings whose ids collide on
purpose, times on a grid of whole hours around one day so that late-cancel windows, meeting starts and
auto-confirm deadlines coincide exactly (the inclusive boundaries), mostly the right roles and tenancy,
and now and then the wrong ones.

1. Re-delivering any events, any number of times, anywhere later in the stream changes nothing.
2. For fixed events, statuses only move forward as T grows.
3. Each tally's minutes are the sums over its meetings' statuses, and meetings_by_status counts them.
4. No input whatsoever raises: every message ends applied, duplicate, skipped, parked or rejected with
   a reason of SPEC section 7; the stateless decoding agrees with the precise parse + validate.
"""

from __future__ import annotations

import json
from fractions import Fraction
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain import events as E
from domain import reasons as R
from domain.engine import (
    APPLIED,
    DUPLICATE,
    PARKED,
    REJECTED,
    SKIPPED,
    decode,
    expire_parked,
    process_message,
)
from domain.lifecycle import next_change_at, status_at
from domain.model import STATUSES, State
from domain.replay import Replay
from domain.tally import round_hours
from domain.timefmt import DAY, HOUR, MINUTE, format_instant, parse_instant

BASE = parse_instant("2026-03-10T00:00:00Z")
ORGS = ["org-1", "org-2"]
PROGRAMS = {"p1": "org-1", "p2": "org-1", "p3": "org-2"}
PATHS = {"a": "p1", "b": "p1", "c": "p2", "d": "p3"}
MEETINGS = [f"m{i}" for i in range(8)]
MEETING_PATH = {m: "abcd"[i % 4] for i, m in enumerate(MEETINGS)}
ROLES = ["participant", "facilitator", "program_admin", "support", "system"]
LATE_WINDOWS = [None, "PT1H", "PT2H", "PT24H"]
CONFIRM_WINDOWS = ["PT1H", "PT3H", "P1D"]
HOURS_VALUES = [None, 0, 1.5, 10, 0.25]
TYPICAL_ROLE = {
    E.ORG_SET: ["support"],
    E.PROGRAM_CREATED: ["program_admin", "support"],
    E.SETTINGS_UPDATED: ["support"],
    E.PATH_HOURS_SET: ["program_admin", "support"],
    E.SCHEDULED: ["participant", "facilitator", "program_admin", "system"],
    E.RESCHEDULED: ["participant", "facilitator", "program_admin", "system"],
    E.CANCELED: ["participant", "facilitator", "program_admin", "system"],
    E.CONFIRMATION: ["participant", "program_admin"],
    E.DISPUTED: ["facilitator", "participant"],
    E.DISPUTE_RESOLVED: ["program_admin", "support"],
}
FINAL_KINDS = {APPLIED, DUPLICATE, SKIPPED, PARKED, REJECTED}

# -------------------------------------------------------------------------------------- strategies

hour_offsets = st.integers(min_value=-48, max_value=96)
nudges = st.sampled_from([0, 0, 0, 0, -1, 1, 30 * MINUTE])  # µs off the grid now and then


@st.composite
def instants(draw: st.DrawFn) -> str:
    return format_instant(BASE + draw(hour_offsets) * HOUR + draw(nudges))


@st.composite
def roles(draw: st.DrawFn, type_: str) -> str:
    if draw(st.integers(0, 19)) == 0:
        return draw(st.sampled_from(ROLES))
    return draw(st.sampled_from(TYPICAL_ROLE[type_]))


@st.composite
def tenancy(draw: st.DrawFn, path: str | None) -> tuple[str, str]:
    """(org, program) for a path (or a program when ``path`` is None), usually the consistent one."""
    program = PATHS[path] if path is not None else draw(st.sampled_from(sorted(PROGRAMS)))
    if draw(st.integers(0, 14)) == 0:
        program = draw(st.sampled_from(sorted(PROGRAMS)))
    org = PROGRAMS[program]
    if draw(st.integers(0, 14)) == 0:
        org = draw(st.sampled_from(ORGS))
    return org, program


def envelope(type_: str, at: str, org: str, role: str, data: dict[str, Any], **ids: str) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "event_id": "",
        "type": type_,
        "schema_version": 1,
        "occurred_at": at,
        "org_id": org,
    }
    obj.update(ids)
    obj["actor"] = {"id": "user-1", "role": role}
    obj["data"] = data
    return obj


@st.composite
def admin_events(draw: st.DrawFn) -> dict[str, Any]:
    type_ = draw(st.sampled_from([E.ORG_SET, E.PROGRAM_CREATED, E.SETTINGS_UPDATED]))
    role = draw(roles(type_))
    at = draw(instants())
    if type_ == E.ORG_SET:
        return envelope(type_, at, draw(st.sampled_from(ORGS)), role, {"enabled": draw(st.booleans())})
    org, program = draw(tenancy(None))
    if type_ == E.PROGRAM_CREATED:
        verification = draw(st.integers(0, 5)) > 0
        data = {
            "name": "P",
            "session_verification": verification,
            "late_cancel_window": draw(st.sampled_from(LATE_WINDOWS)),
            "auto_confirm_window": draw(st.sampled_from(CONFIRM_WINDOWS)),
            "authorized_hours": draw(st.sampled_from(HOURS_VALUES)),
        }
        return envelope(type_, at, org, role, data, program_id=program)
    fields = draw(
        st.sets(st.sampled_from(["late_cancel_window", "auto_confirm_window", "authorized_hours"]), min_size=1)
    )
    data = {}
    if "late_cancel_window" in fields:
        data["late_cancel_window"] = draw(st.sampled_from(LATE_WINDOWS))
    if "auto_confirm_window" in fields:
        data["auto_confirm_window"] = draw(st.sampled_from(CONFIRM_WINDOWS))
    if "authorized_hours" in fields:
        data["authorized_hours"] = draw(st.sampled_from(HOURS_VALUES))
    return envelope(type_, at, org, role, data, program_id=program)


@st.composite
def path_events(draw: st.DrawFn) -> dict[str, Any]:
    type_ = draw(
        st.sampled_from(
            [
                *(E.PATH_HOURS_SET, E.SCHEDULED, E.SCHEDULED, E.RESCHEDULED, E.CANCELED, E.CANCELED),
                *(E.CONFIRMATION, E.CONFIRMATION, E.DISPUTED, E.DISPUTED, E.DISPUTE_RESOLVED),
            ]
        )
    )
    role = draw(roles(type_))
    at = draw(instants())
    meeting = draw(st.sampled_from(MEETINGS))
    path = MEETING_PATH[meeting] if draw(st.integers(0, 9)) else draw(st.sampled_from(sorted(PATHS)))
    org, program = draw(tenancy(path))
    ids = {"program_id": program, "path_id": path}
    if type_ == E.PATH_HOURS_SET:
        return envelope(type_, at, org, role, {"authorized_hours": draw(st.sampled_from(HOURS_VALUES))}, **ids)
    data: dict[str, Any] = {"meeting_id": meeting}
    if type_ in (E.SCHEDULED, E.RESCHEDULED):
        start = BASE + draw(st.integers(0, 72)) * HOUR
        end = start + draw(st.sampled_from([30 * MINUTE, HOUR, 2 * HOUR]))
        if type_ == E.SCHEDULED:
            data |= {"start": format_instant(start), "end": format_instant(end)}
        else:
            data |= {
                "new_meeting_id": draw(st.sampled_from(MEETINGS)),
                "new_start": format_instant(start),
                "new_end": format_instant(end),
            }
    elif type_ == E.CONFIRMATION:
        data["occurred"] = draw(st.booleans())
    elif type_ == E.DISPUTE_RESOLVED:
        data["outcome"] = draw(st.sampled_from(["upheld", "rejected", "rejected"]))
    return envelope(type_, at, org, role, data, **ids)


PRELUDE = [
    envelope(E.ORG_SET, "2026-01-01T00:00:00Z", "org-1", "support", {"enabled": True}),
    envelope(E.ORG_SET, "2026-01-01T00:00:00Z", "org-2", "support", {"enabled": True}),
    *(
        envelope(
            E.PROGRAM_CREATED,
            "2026-01-02T00:00:00Z",
            org,
            "program_admin",
            {
                "session_verification": True,
                "late_cancel_window": "PT24H" if program != "p2" else "PT2H",
                "auto_confirm_window": "P1D",
                "authorized_hours": 10,
            },
            program_id=program,
        )
        for program, org in PROGRAMS.items()
    ),
]


# offsets from a meeting's start where the windows of the programs above put their boundaries
STORY_OFFSETS = [h * HOUR for h in (-25, -24, -23, -3, -2, -1, 0, 1, 2, 3, 4, 5, 24, 25, 26, 27, 48)]
FOLLOW_UPS = [
    E.CANCELED,
    E.RESCHEDULED,
    E.CONFIRMATION,
    E.CONFIRMATION,
    "dispute_f",
    "dispute_p",
    E.DISPUTE_RESOLVED,
]


@st.composite
def stories(draw: st.DrawFn) -> list[dict[str, Any]]:
    """One meeting's life: scheduled, then a few follow-ups timed around its start, and sometimes a
    program settings change or a path hours change dated near it."""
    meeting = draw(st.sampled_from(MEETINGS))
    path = MEETING_PATH[meeting]
    program, org = PATHS[path], PROGRAMS[PATHS[path]]
    ids = {"program_id": program, "path_id": path}
    start = BASE + draw(st.integers(0, 48)) * HOUR
    end = start + draw(st.sampled_from([30 * MINUTE, HOUR, 2 * HOUR]))
    at0 = format_instant(start - draw(st.sampled_from([1, 3, 48])) * HOUR)
    role = draw(st.sampled_from(TYPICAL_ROLE[E.SCHEDULED]))
    data: dict[str, Any] = {"meeting_id": meeting, "start": format_instant(start), "end": format_instant(end)}
    story = [envelope(E.SCHEDULED, at0, org, role, data, **ids)]
    current = meeting
    if draw(st.booleans()):
        kinds = draw(st.lists(st.sampled_from(FOLLOW_UPS), max_size=4))
        offsets = [draw(st.sampled_from(STORY_OFFSETS)) for _ in kinds]
    else:  # a late cancel and its disputes, in time order
        kinds = [draw(st.sampled_from([E.CANCELED, E.RESCHEDULED]))]
        kinds += draw(st.lists(st.sampled_from(["dispute_f", "dispute_p", E.DISPUTE_RESOLVED]), min_size=1, max_size=5))
        offsets = sorted(draw(st.sampled_from(STORY_OFFSETS)) for _ in kinds)
    for kind, offset in zip(kinds, offsets, strict=True):
        at = format_instant(start + offset)
        if kind == E.CANCELED:
            story.append(envelope(kind, at, org, "participant", {"meeting_id": current}, **ids))
        elif kind == E.RESCHEDULED:
            new = draw(st.sampled_from(MEETINGS))
            new_start = start + draw(st.sampled_from([-DAY, 2 * HOUR, DAY]))
            data = {
                "meeting_id": current,
                "new_meeting_id": new,
                "new_start": format_instant(new_start),
                "new_end": format_instant(new_start + HOUR),
            }
            story.append(envelope(kind, at, org, "facilitator", data, **ids))
            current = new
        elif kind == E.CONFIRMATION:
            data = {"meeting_id": current, "occurred": draw(st.booleans())}
            story.append(envelope(kind, at, org, draw(st.sampled_from(TYPICAL_ROLE[kind])), data, **ids))
        elif kind in ("dispute_f", "dispute_p"):
            role = "facilitator" if kind == "dispute_f" else "participant"
            story.append(envelope(E.DISPUTED, at, org, role, {"meeting_id": current}, **ids))
        else:
            data = {
                "meeting_id": current,
                "outcome": draw(st.sampled_from(["upheld", "rejected", "rejected"])),
            }
            story.append(envelope(kind, at, org, "program_admin", data, **ids))
    extra = draw(st.integers(0, 5))
    if extra == 0:
        key = draw(st.sampled_from(["late_cancel_window", "auto_confirm_window"]))
        change = {key: draw(st.sampled_from(LATE_WINDOWS if key == "late_cancel_window" else CONFIRM_WINDOWS))}
        at = format_instant(start + draw(st.sampled_from(STORY_OFFSETS)))
        story.insert(
            draw(st.integers(0, len(story))),
            envelope(E.SETTINGS_UPDATED, at, org, "support", change, program_id=program),
        )
    elif extra == 1:
        hours = {"authorized_hours": draw(st.sampled_from(HOURS_VALUES))}
        story.insert(
            draw(st.integers(0, len(story))),
            envelope(E.PATH_HOURS_SET, at0, org, "program_admin", hours, **ids),
        )
    return story


@st.composite
def event_streams(draw: st.DrawFn, max_size: int = 40) -> list[dict[str, Any]]:
    """Plausible streams, each event with a unique event id (``e<n>``): meeting stories, mostly in
    order, a few events moved earlier (so that they wait), and some random noise."""
    body: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 8))):
        body += draw(stories())
    body += draw(st.lists(st.one_of(path_events(), admin_events()), max_size=max(0, max_size - len(body)) // 4))
    for _ in range(draw(st.integers(0, 3))):
        if len(body) > 1:
            i = draw(st.integers(0, len(body) - 1))
            body.insert(draw(st.integers(0, i)), body.pop(i))
    prelude = [dict(e) for e in PRELUDE] if draw(st.sampled_from([True, True, True, False])) else []
    stream = prelude + body[:max_size]
    for n, event in enumerate(stream):
        event["event_id"] = f"e{n}"
    return stream


def encode(event: Any) -> bytes:
    return json.dumps(event).encode()


JUNK = [b"{", b"[]", b'{"event_id": 5}', b"\xff", b'{"type": "x"}']


def run(lines: list[bytes]) -> Replay:
    r = Replay()
    for n, raw in enumerate(lines, start=1):
        r.feed(raw, n)
    return r


def comparable(doc: dict[str, Any]) -> tuple[Any, Any]:
    tallies = [{k: v for k, v in t.items() if k not in ("version", "as_of")} for t in doc["tallies"]]
    return tallies, doc["meetings"]


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ------------------------------------------------------------------------------- 1. re-delivery


@SETTINGS
@given(stream=event_streams(), junk=st.lists(st.sampled_from(JUNK), max_size=3), data=st.data())
def test_redelivery_changes_nothing(stream: list[dict[str, Any]], junk: list[bytes], data: st.DataObject) -> None:
    lines = [encode(e) for e in stream] + junk
    at = BASE + data.draw(st.integers(-2, 8)) * DAY
    original = run(lines).document(at)

    # (original index, is a copy) for every line of the new stream
    sequence: list[tuple[int, bool]] = [(i, False) for i in range(len(lines))]
    if lines:
        picks = data.draw(st.lists(st.tuples(st.integers(0, len(lines) - 1), st.integers(0, 10**6)), max_size=12))
        for index, where in picks:
            position = sequence.index((index, False))
            insert_at = position + 1 + where % (len(sequence) - position)
            sequence.insert(insert_at, (index, True))
    again = run([lines[i] for i, _ in sequence]).document(at)

    assert comparable(again) == comparable(original)
    first_verdict = {entry["line"]: entry for entry in original["rejected"]}
    kept = []
    for entry in again["rejected"]:
        index, copy = sequence[entry["line"] - 1]
        if copy:  # only a message without a readable id is judged again, and the same way
            assert entry["event_id"] is None
            assert entry["reason"] == first_verdict[index + 1]["reason"]
        else:
            kept.append({**entry, "line": index + 1})
    assert kept == original["rejected"]


# ------------------------------------------------------------------------- 2. statuses move forward

FORWARD = {"upcoming": 0, "unconfirmed": 1, "auto_confirmed": 2}
LATE = {"late_canceled_pending": 0, "late_canceled": 1}


@SETTINGS
@given(stream=event_streams(), times=st.lists(st.integers(-5 * 24, 12 * 24), min_size=1, max_size=20))
def test_statuses_only_move_forward_in_time(stream: list[dict[str, Any]], times: list[int]) -> None:
    state = run([encode(e) for e in stream]).state
    for meeting in state.meetings.values():
        program = state.programs[state.paths[meeting.path_id].program_id]
        instants_ = {BASE + h * HOUR for h in times} | {meeting.start - 1, meeting.start, meeting.end}
        change = next_change_at(meeting, program, meeting.start)
        if change is not None:
            instants_ |= {change - 1, change, change + 1}
        statuses = [status_at(meeting, program, t) for t in sorted(instants_)]
        first = statuses[0]
        if first in FORWARD:
            ranks = [FORWARD[s] for s in statuses]  # KeyError: left the clock chain
            assert ranks == sorted(ranks), statuses
        elif first in LATE:
            ranks = [LATE[s] for s in statuses]
            assert ranks == sorted(ranks), statuses
        else:
            assert set(statuses) == {first}, statuses


@SETTINGS
@given(stream=event_streams(), hour=st.integers(-5 * 24, 12 * 24))
def test_next_change_at_is_when_the_clock_changes_the_status(stream: list[dict[str, Any]], hour: int) -> None:
    state = run([encode(e) for e in stream]).state
    t = BASE + hour * HOUR
    for meeting in state.meetings.values():
        program = state.programs[state.paths[meeting.path_id].program_id]
        now = status_at(meeting, program, t)
        change = next_change_at(meeting, program, t)
        if change is None:
            assert status_at(meeting, program, t + 400 * DAY) == now
        else:
            assert change > t
            assert status_at(meeting, program, change - 1) == now
            assert status_at(meeting, program, change) != now


# ---------------------------------------------------------------------------- 3. tally arithmetic

USED = ("confirmed", "auto_confirmed", "late_canceled")
PENDING = ("unconfirmed", "late_canceled_pending")


@SETTINGS
@given(stream=event_streams(), hour=st.integers(-5 * 24, 12 * 24))
def test_tally_minutes_are_the_sums_over_the_meetings(stream: list[dict[str, Any]], hour: int) -> None:
    doc = run([encode(e) for e in stream]).document(BASE + hour * HOUR)
    by_path: dict[str, list[dict[str, Any]]] = {}
    for m in doc["meetings"]:
        by_path.setdefault(m["path_id"], []).append(m)
    assert set(by_path) <= {t["path_id"] for t in doc["tallies"]}
    for tally in doc["tallies"]:
        meetings = by_path.get(tally["path_id"], [])

        def minutes(statuses: tuple[str, ...], ms: list[dict[str, Any]] = meetings) -> int:
            return sum(m["minutes"] for m in ms if m["status"] in statuses)

        assert tally["used_minutes"] == minutes(USED)
        assert tally["pending_minutes"] == minutes(PENDING)
        assert tally["upcoming_minutes"] == minutes(("upcoming",))
        assert tally["meetings_by_status"] == {s: sum(m["status"] == s for m in meetings) for s in STATUSES}
        assert tally["used_hours"] == float(round_hours(Fraction(tally["used_minutes"], 60)))
        if tally["authorized_hours"] is None:
            assert tally["remaining_hours"] is None and tally["authorized_source"] is None
        else:
            exact = Fraction(str(tally["authorized_hours"])) - Fraction(tally["used_minutes"], 60)
            assert tally["remaining_hours"] == float(round_hours(exact))
            assert tally["authorized_source"] in ("path", "program")


# ----------------------------------------------------------------------------- 4. nothing raises


def check_outcomes(outcomes: list[Any]) -> None:
    assert outcomes, "every message has an outcome"
    for out in outcomes:
        assert out.kind in FINAL_KINDS
        if out.kind == REJECTED:
            assert out.reason in R.ALL
        elif out.kind == PARKED:
            assert out.reason in (R.UNKNOWN_PROGRAM, R.UNKNOWN_MEETING)
        else:
            assert out.reason is None


def check_decoding_agrees(raw: bytes) -> None:
    """The stateless ``decode`` (which may take a faster route) gives what parse + validate give."""
    event_id, decoded = decode(raw)
    parsed = E.parse(raw)
    if isinstance(parsed, E.Invalid):
        assert isinstance(decoded, E.Invalid) and decoded.reason == parsed.reason
        return
    assert event_id == E.readable_event_id(parsed)
    precise = E.validate(parsed)
    if isinstance(precise, E.Invalid):
        assert isinstance(decoded, E.Invalid) and decoded.reason == precise.reason
    else:
        assert decoded == precise


def primed_state() -> State:
    state = State()
    for event in PRELUDE:
        process_message(state, encode({**event, "event_id": f"prelude-{event['type']}-{event.get('program_id')}"}))
    return state


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=5))
def test_random_bytes_never_raise(messages: list[bytes]) -> None:
    state = primed_state()
    for raw in messages:
        check_outcomes(process_message(state, raw))
        check_decoding_agrees(raw)


@settings(max_examples=300, deadline=None)
@given(st.lists(json_values, min_size=1, max_size=5), st.booleans())
def test_random_json_never_raises(values: list[Any], ascii_only: bool) -> None:
    state = primed_state()
    for value in values:
        raw = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
        check_outcomes(process_message(state, raw))
        check_decoding_agrees(raw)


ODD_STRINGS = [
    "",
    "x" * 129,
    "a b",
    "caf\u00e9",
    "2026-03-10T10:00:00",
    "2026-03-10T10:00:00+25:00",
    "P1M",
    "PT1.5H",
    "P31D",
    "P91D",
    "meeting.teleported",
    "\ud800",
    "NaN",
    "9999-12-31T23:59:59-01:00",
]
ODD_VALUES: list[Any] = [None, True, 0, 1, 2, -1, 1.5, 10**30, 1e308, [], {}, [1, 2], {"a": 1}, *ODD_STRINGS]
FIELDS = [
    ("event_id",),
    ("type",),
    ("schema_version",),
    ("occurred_at",),
    ("org_id",),
    ("program_id",),
    ("path_id",),
    ("actor",),
    ("actor", "id"),
    ("actor", "role"),
    ("data",),
    ("data", "meeting_id"),
    ("data", "new_meeting_id"),
    ("data", "start"),
    ("data", "end"),
    ("data", "new_start"),
    ("data", "new_end"),
    ("data", "occurred"),
    ("data", "outcome"),
    ("data", "enabled"),
    ("data", "session_verification"),
    ("data", "late_cancel_window"),
    ("data", "auto_confirm_window"),
    ("data", "authorized_hours"),
    ("data", "note"),
    ("data", "comment"),
    ("data", "reason"),
    ("data", "name"),
    ("extra",),
]


@st.composite
def mutations(draw: st.DrawFn, event: dict[str, Any]) -> dict[str, Any]:
    """Drop, replace or retype one field (or a few), change type, version, role, ids or times."""
    out: dict[str, Any] = json.loads(json.dumps(event))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(FIELDS))
        target = out
        for key in path[:-1]:
            if not isinstance(target.get(key), dict):
                target[key] = {}
            target = target[key]
        action = draw(st.sampled_from(["drop", "odd", "json", "type", "role"]))
        if action == "drop":
            target.pop(path[-1], None)
        elif action == "odd":
            target[path[-1]] = draw(st.sampled_from(ODD_VALUES))
        elif action == "json":
            target[path[-1]] = draw(json_values)
        elif action == "type":
            out["type"] = draw(st.sampled_from([*E.EVENT_MODELS, "meeting.teleported", "Meeting.Scheduled"]))
        else:
            out["actor"] = {"id": "u", "role": draw(st.sampled_from([*ROLES, "admin", ""]))}
    return out


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stream=event_streams(max_size=15), data=st.data())
def test_mutated_envelopes_never_raise(stream: list[dict[str, Any]], data: st.DataObject) -> None:
    state = primed_state()
    for event in stream:
        if data.draw(st.integers(0, 2)) == 0:
            event = data.draw(mutations(event))
        raw = json.dumps(event).encode("utf-8", "surrogatepass")
        check_outcomes(process_message(state, raw))
        check_decoding_agrees(raw)
    # and what is still waiting ends rejected with a waiting reason
    for out in expire_parked(state, lambda _item: True):
        assert (out.kind, out.reason) in {(REJECTED, R.UNKNOWN_PROGRAM), (REJECTED, R.UNKNOWN_MEETING)}
    assert not state.parked and not state.waiting


@settings(max_examples=200, deadline=None)
@given(stream=event_streams(max_size=10), size=st.integers(0, 3), data=st.data())
def test_messages_around_the_size_limit(stream: list[dict[str, Any]], size: int, data: st.DataObject) -> None:
    state = primed_state()
    for event in stream:
        base = json.dumps({**event, "pad": ""}).encode()
        target = E.MAX_MESSAGE_BYTES - 1 + size  # 64 KiB - 1 .. 64 KiB + 2
        raw = json.dumps({**event, "pad": "x" * (target - len(base))}).encode()
        outcomes = process_message(state, raw)
        check_outcomes(outcomes)
        if len(raw) > E.MAX_MESSAGE_BYTES:
            assert outcomes[0].reason == R.TOO_LARGE
        else:
            assert outcomes[0].reason != R.TOO_LARGE


# ------------------------------------------------- the fast path never accepts what the precise rejects

# characters json.dumps writes as they are, without a backslash, and without the capitals N and I
FAST_ALPHABET = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in '\\"NI')
fast_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(FAST_ALPHABET, max_size=30)
    | st.sampled_from(["2026-03-10T10:00:00Z", "2026-03-10T10:00:00", "PT1H", "m1", "x" * 129, "", "a b"])
)
fast_values = st.recursive(
    fast_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(FAST_ALPHABET, max_size=8), inner, max_size=3),
    max_leaves=8,
)
MEETING_FIELDS = [f for f in FIELDS if f[-1] not in ("enabled", "session_verification", "authorized_hours")]


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(story=stories(), data=st.data())
def test_fast_path_agrees_with_the_precise_path(story: list[dict[str, Any]], data: st.DataObject) -> None:
    for original in story:
        event: dict[str, Any] = json.loads(json.dumps({**original, "event_id": "ev-1"}))
        for _ in range(data.draw(st.integers(0, 3))):
            path = data.draw(st.sampled_from(MEETING_FIELDS))
            target = event
            for key in path[:-1]:
                if not isinstance(target.get(key), dict):
                    target[key] = {}
                target = target[key]
            if data.draw(st.booleans()):
                target.pop(path[-1], None)
            else:
                target[path[-1]] = data.draw(fast_values)
        raw = json.dumps(event).encode()
        fast = E.decode_fast(raw)
        parsed = E.parse(raw)
        precise = parsed if isinstance(parsed, E.Invalid) else E.validate(parsed)
        if fast is not None:
            assert not isinstance(precise, E.Invalid), (raw, precise)
            assert fast == precise
        check_decoding_agrees(raw)


# ------------------------------------------------------------------- rejected events change nothing


@SETTINGS
@given(stream=event_streams(), junk=st.lists(st.sampled_from(JUNK), max_size=2), data=st.data())
def test_rejected_events_change_no_state(stream: list[dict[str, Any]], junk: list[bytes], data: st.DataObject) -> None:
    """Leaving out any of the rejected lines (unique event ids) gives the same tallies and meetings, and
    the same rejections for the lines that remain."""
    lines = [encode(e) for e in stream] + junk
    at = BASE + data.draw(st.integers(-2, 8)) * DAY
    original = run(lines).document(at)
    rejected_lines = sorted({entry["line"] for entry in original["rejected"]})
    if not rejected_lines:
        return
    dropped = set(data.draw(st.lists(st.sampled_from(rejected_lines), min_size=1, unique=True)))
    kept = [n for n in range(1, len(lines) + 1) if n not in dropped]
    again = run([lines[n - 1] for n in kept]).document(at)
    assert again["tallies"] == original["tallies"]  # versions too: they count applied events only
    assert again["meetings"] == original["meetings"]
    renumbered = [{**entry, "line": kept[entry["line"] - 1]} for entry in again["rejected"]]
    assert renumbered == [entry for entry in original["rejected"] if entry["line"] not in dropped]
