"""A small world for the policy-rule tests: a default program, raw messages built from short
descriptions, and the real entry point (``process_message``) with statuses read by ``status_at``."""

from __future__ import annotations

import json
from typing import Any

from domain.engine import (
    APPLIED,
    Outcome,
    process_message,
)
from domain.lifecycle import deadline, status_at
from domain.model import State
from domain.timefmt import DAY, HOUR, format_instant, parse_instant

US = 1


def t(text: str) -> int:
    return parse_instant(text)


START = t("2026-03-10T10:00:00Z")
END = t("2026-03-10T11:00:00Z")
W = 24 * HOUR  # the late-cancel window of the default program
ACW = 3 * DAY  # its auto-confirm window
DEADLINE = END + ACW


class World:
    """One engine state and a way to send it events (each a fresh event id unless given)."""

    def __init__(self) -> None:
        self.state = State()
        self.count = 0
        self.outcomes: list[Outcome] = []

    def send(
        self,
        type_: str,
        at: int | str = "2026-03-01T09:00:00Z",
        *,
        role: str | None = None,
        org: str = "org-1",
        program: str = "prog-1",
        path: str = "path-1",
        event_id: str | None = None,
        **data: Any,
    ) -> Outcome:
        self.count += 1
        obj: dict[str, Any] = {
            "event_id": event_id if event_id is not None else f"ev-{self.count}",
            "type": type_,
            "schema_version": 1,
            "occurred_at": at if isinstance(at, str) else format_instant(at),
            "org_id": org,
        }
        if type_ != "organization.session_management_set":
            obj["program_id"] = program
        if not type_.startswith(("organization.", "program.")):
            obj["path_id"] = path
        obj["actor"] = {"id": "user-1", "role": role or DEFAULT_ROLE[type_]}
        obj["data"] = {k: (format_instant(v) if k in TIME_KEYS and isinstance(v, int) else v) for k, v in data.items()}
        self.outcomes = process_message(self.state, json.dumps(obj).encode(), self.count)
        return self.outcomes[0]

    # shorthands
    def org(self, enabled: bool = True, org: str = "org-1", **kw: Any) -> Outcome:
        return self.send("organization.session_management_set", "2026-01-01T00:00:00Z", org=org, enabled=enabled, **kw)

    def program(
        self,
        program: str = "prog-1",
        *,
        lcw: str | None = "PT24H",
        acw: str | None = "P3D",
        hours: Any = 10,
        verification: bool = True,
        org: str = "org-1",
        at: str = "2026-01-02T00:00:00Z",
        **kw: Any,
    ) -> Outcome:
        return self.send(
            "program.created",
            at,
            program=program,
            org=org,
            session_verification=verification,
            late_cancel_window=lcw,
            auto_confirm_window=acw,
            authorized_hours=hours,
            **kw,
        )

    def settings(self, at: int | str, program: str = "prog-1", **fields: Any) -> Outcome:
        return self.send("program.settings_updated", at, program=program, **fields)

    def schedule(self, mid: str = "m1", start: int = START, end: int = END, **kw: Any) -> Outcome:
        return self.send(
            "meeting.scheduled",
            kw.pop("at", "2026-03-01T09:00:00Z"),
            meeting_id=mid,
            start=start,
            end=end,
            **kw,
        )

    def cancel(self, at: int | str, mid: str = "m1", **kw: Any) -> Outcome:
        return self.send("meeting.canceled", at, meeting_id=mid, **kw)

    def reschedule(
        self, at: int | str, new: str = "m2", mid: str = "m1", start: int | None = None, **kw: Any
    ) -> Outcome:
        new_start = START + 2 * DAY if start is None else start
        return self.send(
            "meeting.rescheduled",
            at,
            meeting_id=mid,
            new_meeting_id=new,
            new_start=new_start,
            new_end=new_start + HOUR,
            **kw,
        )

    def confirm(self, at: int | str, occurred: bool = True, mid: str = "m1", **kw: Any) -> Outcome:
        return self.send("meeting.confirmation_submitted", at, meeting_id=mid, occurred=occurred, **kw)

    def dispute(self, at: int | str, role: str, mid: str = "m1", **kw: Any) -> Outcome:
        return self.send("meeting.disputed", at, role=role, meeting_id=mid, **kw)

    def resolve(self, at: int | str, outcome: str, mid: str = "m1", **kw: Any) -> Outcome:
        return self.send("meeting.dispute_resolved", at, meeting_id=mid, outcome=outcome, **kw)

    def status(self, at: int, mid: str = "m1") -> str:
        meeting = self.state.meetings[mid]
        program = self.state.programs[self.state.paths[meeting.path_id].program_id]
        return status_at(meeting, program, at)

    def deadline(self, mid: str = "m1") -> int:
        meeting = self.state.meetings[mid]
        return deadline(meeting, self.state.programs[self.state.paths[meeting.path_id].program_id])


DEFAULT_ROLE = {
    "organization.session_management_set": "support",
    "program.created": "program_admin",
    "program.settings_updated": "support",
    "path.authorized_hours_set": "program_admin",
    "meeting.scheduled": "facilitator",
    "meeting.rescheduled": "participant",
    "meeting.canceled": "participant",
    "meeting.confirmation_submitted": "participant",
    "meeting.disputed": "facilitator",
    "meeting.dispute_resolved": "program_admin",
}
TIME_KEYS = {"start", "end", "new_start", "new_end"}


def kind(outcome: Outcome) -> tuple[str, str | None]:
    return outcome.kind, outcome.reason


def ready(**program: Any) -> World:
    """Org on, prog-1 created (PT24H / P3D / 10 h unless told), meeting m1 on path-1 (10:00-11:00)."""
    w = World()
    w.org()
    assert w.program(**program).kind == APPLIED
    assert w.schedule().kind == APPLIED
    return w


# ====================================================================================== references
