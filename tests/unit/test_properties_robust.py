"""Properties of the engine, part 2 (hypothesis): no input whatsoever raises: every message ends
applied, duplicate, skipped, parked or rejected with a reason of SPEC section 7; the stateless decoding
agrees with the precise parse + validate; the fast path never accepts what the precise one rejects;
rejected events change nothing."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain import events as E
from domain import reasons as R
from domain.engine import (
    PARKED,
    REJECTED,
    decode,
    expire_parked,
    process_message,
)
from domain.model import State
from domain.timefmt import DAY
from tests.unit.properties_world import (
    BASE,
    FINAL_KINDS,
    JUNK,
    PRELUDE,
    ROLES,
    SETTINGS,
    encode,
    event_streams,
    run,
    stories,
)

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
