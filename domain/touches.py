"""Which rows the engine may read or create for an event: what a pipeline must load before it runs the
engine on a batch (:class:`domain.model.State` holds only what was loaded; a key missing from it means
"does not exist").

One rule, next to the engine that applies it (domain/engine.py): an event names its org (program
creation checks the org switch), its program (every event but the org switch), its path (path and
meeting events) and its meetings (the one it acts on, and the one a schedule or a reschedule creates).
A program creation or a settings change *changes* its program (exclusive in the pipeline: it
re-evaluates every meeting of the program); a schedule or a reschedule *creates* a meeting, and a
program creation a program: events waiting for those are released. An event whose actor may not send
it is rejected before any reference is looked at, so it touches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from domain import events as E
from domain.engine import WAIT_MEETING, WAIT_PROGRAM


@dataclass
class Touches:
    """The keys a batch of events (and the events it may release from waiting) names."""

    event_ids: set[str] = field(default_factory=set)
    orgs: set[str] = field(default_factory=set)
    programs: set[str] = field(default_factory=set)
    created_programs: set[str] = field(default_factory=set)
    updated_programs: set[str] = field(default_factory=set)
    paths: set[str] = field(default_factory=set)
    meetings: set[str] = field(default_factory=set)
    created_meetings: set[str] = field(default_factory=set)

    def add(self, event: Any) -> None:
        """Add what a validated event names (nothing when its actor's role may not send it)."""
        kind = event.type
        if kind == E.ORG_SET or not E.role_allowed(event):
            return
        self.programs.add(event.program_id)
        if kind == E.PROGRAM_CREATED:
            self.orgs.add(event.org_id)
            self.created_programs.add(event.program_id)
            return
        if kind == E.SETTINGS_UPDATED:
            self.updated_programs.add(event.program_id)
            return
        self.paths.add(event.path_id)
        if kind == E.PATH_HOURS_SET:
            return
        data = event.data
        self.meetings.add(data.meeting_id)
        if kind == E.SCHEDULED:
            self.created_meetings.add(data.meeting_id)
        elif kind == E.RESCHEDULED:
            self.meetings.add(data.new_meeting_id)
            self.created_meetings.add(data.new_meeting_id)

    def add_wait_key(self, kind: str, key: str) -> None:
        """What an event waiting for (``kind``, ``key``) needs loaded when it is released."""
        (self.programs if kind == WAIT_PROGRAM else self.meetings).add(key)

    def wait_keys(self) -> set[tuple[str, str]]:
        """The (kind, key)s that events waiting in the store could be released by."""
        return {(WAIT_PROGRAM, p) for p in self.created_programs} | {(WAIT_MEETING, m) for m in self.created_meetings}

    @property
    def exclusive_programs(self) -> set[str]:
        """Programs this batch creates or changes (the others it only reads)."""
        return self.created_programs | self.updated_programs
