"""The read model of the web app: the latest tally of every path and the latest status of every meeting,
exactly as the pipeline published them on the tallies and statuses topics.

Invariants:
- a document replaces the one held only when its ``version`` is higher (per path for tallies, per
  meeting for statuses): a re-publication with the same version carries the same content and changes
  nothing, an older version arriving late is ignored;
- nothing is computed here: figures and statuses are shown as published (the pipeline is their only
  author); the view only groups them (meetings by path, paths by program);
- every accepted change notifies :class:`Hub` with the path it concerns, so open pages can redraw.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class PathView:
    path_id: str
    program_id: str = ""
    org_id: str = ""
    tally: dict[str, Any] | None = None
    meetings: dict[str, dict[str, Any]] = field(default_factory=dict)  # meeting_id -> latest status


class View:
    """Latest tallies and statuses, grouped by path and program."""

    def __init__(self) -> None:
        self.paths: dict[str, PathView] = {}
        self.meeting_path: dict[str, str] = {}  # meeting_id -> path_id
        self.programs: dict[str, set[str]] = {}  # program_id -> path ids (paths that have a tally)
        self.ready = False  # caught up with the end offsets seen at start-up
        self.counts = {"tallies": 0, "statuses": 0, "ignored": 0}

    def _path(self, doc: dict[str, Any]) -> PathView:
        path_id = doc["path_id"]
        pv = self.paths.get(path_id)
        if pv is None:
            pv = self.paths[path_id] = PathView(path_id)
        if doc.get("program_id") and not pv.program_id:
            pv.program_id, pv.org_id = doc["program_id"], doc.get("org_id", "")
            self.programs.setdefault(pv.program_id, set()).add(path_id)
        return pv

    def apply_tally(self, doc: dict[str, Any]) -> str | None:
        """Take a tally; returns its path_id when it changed the view, else None."""
        pv = self._path(doc)
        if pv.tally is not None and doc["version"] <= pv.tally["version"]:
            self.counts["ignored"] += 1
            return None
        pv.tally = doc
        self.counts["tallies"] += 1
        return pv.path_id

    def apply_status(self, doc: dict[str, Any]) -> str | None:
        """Take a meeting status; returns its path_id when it changed the view, else None."""
        pv = self._path(doc)
        current = pv.meetings.get(doc["meeting_id"])
        if current is not None and doc["version"] <= current["version"]:
            self.counts["ignored"] += 1
            return None
        pv.meetings[doc["meeting_id"]] = doc
        self.meeting_path[doc["meeting_id"]] = pv.path_id
        self.counts["statuses"] += 1
        return pv.path_id

    def path(self, path_id: str) -> PathView | None:
        return self.paths.get(path_id)

    def meeting(self, meeting_id: str) -> dict[str, Any] | None:
        path_id = self.meeting_path.get(meeting_id)
        return None if path_id is None else self.paths[path_id].meetings.get(meeting_id)

    def paths_of_program(self, program_id: str) -> list[PathView]:
        return [self.paths[p] for p in sorted(self.programs.get(program_id, ()))]

    def tallied(self) -> Iterable[PathView]:
        """Every path with a tally (paths of programs with session verification on)."""
        return (pv for pv in self.paths.values() if pv.tally is not None)


class Hub:
    """Fan-out of changes to the open pages: each subscriber has a queue of what changed.

    A subscriber watches some paths and its own user's notices; :meth:`changed` and :meth:`notify` put a
    marker in the queues of the subscribers concerned. Markers are coalesced (a set per subscriber), so a
    burst of updates wakes a page once and it redraws the latest state.
    """

    def __init__(self) -> None:
        self._subs: set[Subscriber] = set()

    def subscribe(self, user_id: str, path_ids: Iterable[str] = (), everything: bool = False) -> Subscriber:
        sub = Subscriber(user_id, frozenset(path_ids), everything)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subs.discard(sub)

    def changed(self, path_ids: Iterable[str]) -> None:
        ids = set(path_ids)
        if not ids:
            return
        for sub in self._subs:
            hit = ids if sub.everything else ids & sub.path_ids
            if hit:
                sub.push({f"path:{p}" for p in hit})

    def notify(self, user_id: str) -> None:
        for sub in self._subs:
            if sub.user_id == user_id:
                sub.push({"notice"})

    def close(self) -> None:
        for sub in self._subs:
            sub.push({"close"})

    def __len__(self) -> int:
        return len(self._subs)


class Subscriber:
    __slots__ = ("_event", "_marks", "everything", "path_ids", "user_id")

    def __init__(self, user_id: str, path_ids: frozenset[str], everything: bool) -> None:
        self.user_id = user_id
        self.path_ids = path_ids
        self.everything = everything
        self._marks: set[str] = set()
        self._event = asyncio.Event()

    def push(self, marks: set[str]) -> None:
        self._marks |= marks
        self._event.set()

    async def next(self, timeout_s: float) -> set[str]:
        """What changed since the last call (empty after ``timeout_s`` without changes)."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout_s)
        except TimeoutError:
            return set()
        self._event.clear()
        marks, self._marks = self._marks, set()
        return marks
