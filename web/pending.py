"""Changes a user published that the pipeline has not answered yet, and the notices it gets about them.

A change is *pending* from its publication until one of these comes back:

- its rejection, on the rejected topic, matched by ``event_id`` -> a notice with the reason in plain
  words (the rejection of any change published by this process is reported, even one already shown
  as done: the pipeline is the judge);
- its effect, seen in what the pipeline published or stored: path and meeting changes in the view
  (the tally's authorized hours and source, the meeting's status or disputed flag), program and
  organization changes in PostgreSQL (the program row, its settings history, the organization switch).

The effect checks only compare published values with the value the user asked for; they never
predict what the pipeline will decide.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from domain import events as E
from web.wording import KIND_WORDS, reason_words

KEEP_CHANGES = 5000  # changes remembered for matching late rejections
KEEP_NOTICES = 20  # notices kept per user


@dataclass(slots=True)
class Change:
    event_id: str
    user_id: str
    type: str
    org_id: str
    program_id: str | None
    path_id: str | None
    meeting_id: str | None
    occurred_at: int  # µs, as published
    data: dict[str, Any]
    published: float = field(default_factory=time.time)
    state: str = "pending"  # pending | done | rejected

    @property
    def words(self) -> str:
        return KIND_WORDS.get(self.type, self.type)


@dataclass(frozen=True, slots=True)
class Notice:
    at: float
    kind: str  # "done" | "rejected"
    text: str
    event_id: str


class Pending:
    """Every change published by this process (the latest ``KEEP_CHANGES``) and the users' notices."""

    def __init__(self) -> None:
        self.changes: OrderedDict[str, Change] = OrderedDict()
        self.notices: dict[str, list[Notice]] = {}

    def add(self, change: Change) -> None:
        self.changes[change.event_id] = change
        while len(self.changes) > KEEP_CHANGES:
            self.changes.popitem(last=False)

    def open(self) -> list[Change]:
        return [c for c in self.changes.values() if c.state == "pending"]

    def for_path(self, user_id: str, path_id: str) -> list[Change]:
        return [c for c in self.open() if c.user_id == user_id and c.path_id == path_id]

    def for_program(self, user_id: str, program_id: str) -> list[Change]:
        return [c for c in self.open() if c.user_id == user_id and c.program_id == program_id and c.path_id is None]

    def for_user(self, user_id: str) -> list[Change]:
        return [c for c in self.open() if c.user_id == user_id]

    def user_notices(self, user_id: str, max_age_s: float = 600.0) -> list[Notice]:
        """The user's notices of the last ``max_age_s`` seconds, newest first (at most 5)."""
        since = time.time() - max_age_s
        return [n for n in reversed(self.notices.get(user_id, ())) if n.at >= since][:5]

    def _notice(self, change: Change, kind: str, text: str) -> None:
        items = self.notices.setdefault(change.user_id, [])
        items.append(Notice(time.time(), kind, text, change.event_id))
        del items[:-KEEP_NOTICES]

    def rejected(self, doc: dict[str, Any]) -> Change | None:
        """A record of the rejected topic: the change it refuses, if this process published it."""
        change = self.changes.get(doc.get("event_id") or "")
        if change is None or change.state == "rejected":
            return None
        change.state = "rejected"
        reason = str(doc.get("reason", ""))
        self._notice(change, "rejected", f"The pipeline refused {change.words}: {reason_words(reason)}.")
        return change

    def done(self, change: Change, text: str | None = None) -> None:
        change.state = "done"
        self._notice(change, "done", text or f"Done: {change.words}.")

    # ------------------------------------------------------------------------------ effect checks

    def settle_path(self, path_id: str, view: Any) -> list[Change]:
        """Pending changes of ``path_id`` whose effect the view now shows (marked done, returned)."""
        settled = []
        for change in self.open():
            if change.path_id == path_id and path_effect_seen(change, view):
                self.done(change)
                settled.append(change)
        return settled

    def settle_admin(self, orgs: dict[str, bool], programs: dict[str, Any]) -> list[Change]:
        """Pending admin changes whose effect PostgreSQL now shows (``programs``: id -> domain Program)."""
        settled = []
        for change in self.open():
            if change.path_id is None and admin_effect_seen(change, orgs, programs):
                self.done(change)
                settled.append(change)
        return settled


def _same_hours(published: Any, wanted: Any) -> bool:
    if published is None or wanted is None:
        return published is None and wanted is None
    return Decimal(str(published)) == Decimal(str(wanted))


def path_effect_seen(change: Change, view: Any) -> bool:
    """Does the view show what ``change`` (a path or meeting event) asked for?"""
    pv = view.path(change.path_id)
    if pv is None:
        return False
    if change.type == E.PATH_HOURS_SET:
        tally = pv.tally
        if tally is None:
            return False
        wanted = change.data.get("authorized_hours")
        if wanted is None:
            return bool(tally["authorized_source"] != "path")
        return tally["authorized_source"] == "path" and _same_hours(tally["authorized_hours"], wanted)
    meeting = pv.meetings.get(change.meeting_id or "")
    if meeting is None:
        return False
    if change.type == E.CONFIRMATION:
        return bool(meeting["status"] == ("confirmed" if change.data.get("occurred") else "did_not_occur"))
    if change.type == E.DISPUTED:
        return bool(meeting["disputed"])
    if change.type == E.DISPUTE_RESOLVED:
        if change.data.get("outcome") == "upheld":
            return bool(meeting["status"] == "late_cancel_waived")
        return not meeting["disputed"]
    return False


def admin_effect_seen(change: Change, orgs: dict[str, bool], programs: dict[str, Any]) -> bool:
    """Does PostgreSQL show what ``change`` (an organization or program event) asked for?"""
    if change.type == E.ORG_SET:
        return orgs.get(change.org_id) == change.data.get("enabled")
    program = programs.get(change.program_id or "")
    if program is None:
        return False
    if change.type == E.PROGRAM_CREATED:
        return bool(program.org_id == change.org_id and program.created_at == change.occurred_at)
    if change.type == E.SETTINGS_UPDATED:
        return any(u.occurred_at == change.occurred_at for u in program.updates)
    return False
