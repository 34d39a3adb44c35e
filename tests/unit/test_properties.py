"""Properties of the engine over generated event streams (hypothesis).

The generator builds *plausible* streams: a few orgs, programs, paths and meetings whose ids collide on
purpose, times on a grid of whole hours around one day so that late-cancel windows, meeting starts and
auto-confirm deadlines coincide exactly (the inclusive boundaries), mostly the right roles and tenancy,
and now and then the wrong ones.

1. Re-delivering any events, any number of times, anywhere later in the stream changes nothing.
2. For fixed events, statuses only move forward as T grows.
3. Each tally's minutes are the sums over its meetings' statuses, and meetings_by_status counts them.
(4. in test_properties_robust.py.)
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from domain.lifecycle import next_change_at, status_at
from domain.model import STATUSES
from domain.tally import round_hours
from domain.timefmt import DAY, HOUR
from tests.unit.properties_world import BASE, JUNK, SETTINGS, comparable, encode, event_streams, run

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
