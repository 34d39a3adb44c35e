"""A few months of realistic, dated history for the demo, ending now (pure: no I/O, no wall clock).

One organization (``org-demo``, switched on by the support desk) with three programs:

- *Leadership Coaching* (late-cancel window 24 hours, auto-confirm 3 days, 20 authorized hours, raised
  to 24 by the support desk later) with paths ``path-ada``, ``path-grace``, ``path-linus``; the admin
  sets ``path-ada`` to 12 hours with a note, and ``path-ada`` goes over them (negative remaining);
- *Mentoring Circle* (No late cancels, auto-confirm 7 days, authorized hours not applicable) with
  ``path-hopper`` and ``path-turing``;
- *Peer Learning Lab* with session verification off (no Meetings tab).

Each path meets weekly for 16 weeks back and 2 weeks ahead. Most meetings are answered "it occurred"
by the learner within a day, some nobody answers (auto-confirmed), a few did not occur, a few are
canceled in time, rescheduled, or canceled late; late cancels are disputed by the coach or the learner
and resolved by the admin (one dispute stays open). The last day leaves work for the demo users: a
meeting awaiting "Did this meeting occur?" on ``path-ada``, a pending late cancel on ``path-grace``,
and meetings starting a few minutes after the history is made, so statuses change while you watch.

Event ids are ``demo-hist-NNNN`` in event-time order. The demo publishes the history once per state
(it skips it when PostgreSQL already has the demo's programs): a history made later, around another
"now", would not fit the meetings already recorded. Every event is one the pipeline accepts
(``tests/unit/test_demo_history.py`` replays it).
"""

from __future__ import annotations

import json
import random
from typing import Any

from domain.timefmt import DAY, HOUR, MINUTE, format_instant

ORG = "org-demo"
LEADERSHIP, MENTORING, PEER = "prog-leadership", "prog-mentoring", "prog-peer"
SUPPORT = {"id": "sam", "role": "support"}
ADMIN = {"id": "alex", "role": "program_admin"}
COACH = {"id": "fran", "role": "facilitator"}
SCHEDULER = {"id": "scheduler", "role": "system"}

#: path -> (program, learner actor id, weekday offset in days, meeting length in minutes)
PATHS = {
    "path-ada": (LEADERSHIP, "pat", 0, 75),
    "path-grace": (LEADERSHIP, "lee", 1, 60),
    "path-linus": (LEADERSHIP, "learner-linus", 2, 45),
    "path-hopper": (MENTORING, "learner-hopper", 3, 90),
    "path-turing": (MENTORING, "learner-turing", 4, 60),
}
AUTO_CONFIRM = {LEADERSHIP: 3 * DAY, MENTORING: 7 * DAY}
WEEKS_BACK, WEEKS_AHEAD = 16, 2

#: the demo's users (web/demo_users.toml holds their hashes; the demo prints these)
DEMO_LOGINS = [
    ("sam", "sam-support", "support desk: every organization, the org switch, program settings"),
    ("alex", "alex-admin", "program admin of org-demo: Configurations, Edit hours, resolve disputes"),
    ("fran", "fran-coach", "facilitator (coach) of path-ada and path-grace: disputes pending late cancels"),
    ("pat", "pat-learner", "participant (learner) of path-ada: answers Did this meeting occur?"),
    ("lee", "lee-learner", "participant (learner) of path-grace"),
]


class _History:
    def __init__(self, now: int, seed: int) -> None:
        self.now = now
        self.rng = random.Random(seed)
        self.events: list[tuple[int, int, dict[str, Any]]] = []  # (occurred_at, order, envelope)

    def add(self, t: int, event_type: str, actor: dict[str, str], data: dict[str, Any], **ids: str) -> None:
        doc: dict[str, Any] = {
            "event_id": "",
            "type": event_type,
            "schema_version": 1,
            "occurred_at": format_instant(t),
            "org_id": ORG,
            **ids,
            "actor": dict(actor),
            "data": data,
        }
        self.events.append((t, len(self.events), doc))

    def path_event(self, t: int, path: str, event_type: str, actor: dict[str, str], data: dict[str, Any]) -> None:
        self.add(t, event_type, actor, data, program_id=PATHS[path][0], path_id=path)

    def learner(self, path: str) -> dict[str, str]:
        return {"id": PATHS[path][1], "role": "participant"}

    def schedule(self, path: str, meeting_id: str, start: int, minutes: int) -> None:
        self.path_event(
            min(start - 14 * DAY, self.now - 10 * MINUTE),
            path,
            "meeting.scheduled",
            SCHEDULER,
            {"meeting_id": meeting_id, "start": format_instant(start), "end": format_instant(start + minutes * MINUTE)},
        )

    def answer(self, path: str, meeting_id: str, t: int, occurred: bool) -> None:
        data = {"meeting_id": meeting_id, "occurred": occurred}
        self.path_event(t, path, "meeting.confirmation_submitted", self.learner(path), data)

    def cancel(self, path: str, meeting_id: str, t: int, actor: dict[str, str], reason: str) -> None:
        self.path_event(t, path, "meeting.canceled", actor, {"meeting_id": meeting_id, "reason": reason})

    def lines(self) -> list[bytes]:
        ordered = sorted(self.events, key=lambda e: (e[0], e[1]))
        out = []
        for number, (_t, _order, doc) in enumerate(ordered, start=1):
            doc["event_id"] = f"demo-hist-{number:04d}"
            out.append(json.dumps(doc, separators=(",", ":")).encode())
        return out


def _setup(h: _History, start: int) -> None:
    h.add(start, "organization.session_management_set", SUPPORT, {"enabled": True})
    programs = [
        (LEADERSHIP, "Leadership Coaching", True, "PT24H", "P3D", 20),
        (MENTORING, "Mentoring Circle", True, None, "P7D", None),
        (PEER, "Peer Learning Lab", False, "PT24H", "P3D", None),
    ]
    for offset, (program_id, name, verification, late, auto, hours) in enumerate(programs, start=1):
        data = {
            "name": name,
            "session_verification": verification,
            "late_cancel_window": late,
            "auto_confirm_window": auto,
            "authorized_hours": hours,
        }
        h.add(start + offset * HOUR, "program.created", ADMIN, data, program_id=program_id)
    h.add(h.now - 45 * DAY, "program.settings_updated", SUPPORT, {"authorized_hours": 24}, program_id=LEADERSHIP)
    note = "Reduced to the 12 contracted hours for this quarter; an extension is under review."
    h.path_event(
        h.now - 30 * DAY, "path-ada", "path.authorized_hours_set", ADMIN, {"authorized_hours": 12, "note": note}
    )


def _weekly(h: _History, path: str, first_monday: int) -> None:
    program, _learner, weekday, minutes = PATHS[path]
    deadline_after = AUTO_CONFIRM[program]
    for week in range(-WEEKS_BACK, WEEKS_AHEAD + 1):
        start = first_monday + (week + WEEKS_BACK) * 7 * DAY + weekday * DAY + 10 * HOUR
        if h.now - DAY - 2 * HOUR <= start <= h.now + 2 * DAY:
            continue  # the last day and the next two are scripted in _recent
        meeting_id = f"mtg-{path.removeprefix('path-')}-w{week + WEEKS_BACK:02d}"
        end = start + minutes * MINUTE
        h.schedule(path, meeting_id, start, minutes)
        if start > h.now:
            continue  # upcoming
        scripted = _scripted(h, path, week, meeting_id, start, end, deadline_after)
        if scripted:
            continue
        roll = h.rng.random()
        answer_by = min(end + deadline_after, h.now - HOUR)
        if roll < 0.62 and end + 2 * HOUR < answer_by:
            h.answer(path, meeting_id, min(end + h.rng.randint(1, 20) * HOUR, answer_by), True)
        elif roll < 0.68 and end + HOUR < answer_by:
            h.answer(path, meeting_id, end + HOUR, False)
        elif roll < 0.72:
            h.cancel(path, meeting_id, start - 3 * DAY, h.learner(path), "travelling")
        elif roll < 0.75:
            new_id = f"{meeting_id}-moved"
            new_start = start + DAY
            h.path_event(
                start - 2 * DAY,
                path,
                "meeting.rescheduled",
                COACH,
                {
                    "meeting_id": meeting_id,
                    "new_meeting_id": new_id,
                    "new_start": format_instant(new_start),
                    "new_end": format_instant(new_start + minutes * MINUTE),
                },
            )
        # else: nobody answers; the meeting is confirmed automatically at its deadline


def _scripted(h: _History, path: str, week: int, meeting_id: str, start: int, end: int, window: int) -> bool:
    """The notable fates: late cancels with disputes and resolutions, a "No late cancels" cancel."""
    learner = h.learner(path)
    if path == "path-ada" and week == -6:  # coach disputes while pending; upheld (waived)
        h.cancel(path, meeting_id, start - 5 * HOUR, learner, "work emergency")
        comment = "Pat warned me on Friday; we agreed to skip this week."
        h.path_event(end + 6 * HOUR, path, "meeting.disputed", COACH, {"meeting_id": meeting_id, "comment": comment})
        note = "Agreed with the coach: waived."
        data = {"meeting_id": meeting_id, "outcome": "upheld", "note": note}
        h.path_event(end + DAY, path, "meeting.dispute_resolved", ADMIN, data)
        return True
    if path == "path-grace" and week == -8:  # coach disputes, rejected; learner disputes again: left open
        h.cancel(path, meeting_id, start - 3 * HOUR, learner, "ill")
        data = {"meeting_id": meeting_id, "comment": "Lee called in sick that morning."}
        h.path_event(end + 2 * HOUR, path, "meeting.disputed", COACH, data)
        data = {"meeting_id": meeting_id, "outcome": "rejected", "note": "No sick note; the policy applies."}
        h.path_event(end + DAY, path, "meeting.dispute_resolved", ADMIN, data)
        data = {"meeting_id": meeting_id, "comment": "I have a doctor's note now."}
        h.path_event(end + window + 2 * DAY, path, "meeting.disputed", learner, data)
        return True
    if path in ("path-linus", "path-ada") and week in (-3, -11):  # late cancels that stand
        h.cancel(path, meeting_id, start - 2 * HOUR, COACH if path == "path-linus" else learner, "schedule clash")
        return True
    if path == "path-hopper" and week == -5:  # No late cancels: two hours before is an ordinary cancel
        h.cancel(path, meeting_id, start - 2 * HOUR, learner, "flight delayed")
        return True
    return False


def _recent(h: _History) -> None:
    """The last day and the next minutes: work waiting for the demo users, and live status changes."""
    now = h.now
    start = now - DAY + 3 * HOUR  # ended yesterday, nobody answered yet: "Did this meeting occur?"
    h.schedule("path-ada", "mtg-ada-yesterday", start, 75)
    start = now + 6 * HOUR  # canceled late an hour ago: pending, the coach may dispute
    h.schedule("path-grace", "mtg-grace-today", start, 60)
    h.cancel("path-grace", "mtg-grace-today", now - HOUR, h.learner("path-grace"), "car broke down")
    for path, minutes_ahead in (("path-ada", 3), ("path-grace", 6), ("path-hopper", 9)):
        start = now + minutes_ahead * MINUTE  # starts while the demo runs: upcoming -> awaiting
        h.schedule(path, f"mtg-{path.removeprefix('path-')}-live", start, 30)


def history(now: int, seed: int = 7) -> list[bytes]:
    """The demo history as envelope lines (bytes), in event-time order, for a clock at ``now`` (µs)."""
    h = _History(now, seed)
    day_start = now - now % DAY
    first_monday = day_start - WEEKS_BACK * 7 * DAY - ((day_start // DAY + 3) % 7) * DAY  # 1970-01-01 was a Thursday
    _setup(h, first_monday - 7 * DAY)
    for path in PATHS:
        _weekly(h, path, first_monday)
    _recent(h)
    return h.lines()
