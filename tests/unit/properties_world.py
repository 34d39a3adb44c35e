"""Hypothesis strategies for the engine's property tests: plausible event streams whose ids collide on
purpose and whose times sit on a grid of whole hours, so that inclusive boundaries coincide."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from domain import events as E
from domain.engine import (
    APPLIED,
    DUPLICATE,
    PARKED,
    REJECTED,
    SKIPPED,
)
from domain.replay import Replay
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
