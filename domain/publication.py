"""What session-tally publishes and when (SPEC section 5 and the output topics of section 3): one place
for the per-path counters, the status and tally messages and the rule that decides whether a tally
changed. `replay` builds the counters from scratch; the pipeline keeps them with each path and moves
them as statuses change; both use these functions, so they cannot drift apart.

Invariants:
- a path's counters hold, per status (indexed like :data:`domain.model.STATUSES`), how many of its
  meetings have that status and their minutes;
- a meeting's status message is published each time its status or its ``disputed`` flag changes, with
  a version one higher than the last;
- a tally is published when its content (everything but ``version`` and ``as_of``) changed, with a
  version one higher than the last.
"""

from __future__ import annotations

from typing import Any

from domain.model import STATUS_INDEX, STATUSES, Meeting
from domain.outputs import SCHEMA_VERSION
from domain.tally import meeting_document
from domain.timefmt import format_instant

N_STATUSES = len(STATUSES)
_NOT_CONTENT = ("version", "as_of")


def new_counters() -> tuple[list[int], list[int]]:
    """(counts, minutes) per status, all zero."""
    return [0] * N_STATUSES, [0] * N_STATUSES


def count(counts: list[int], minutes: list[int], status: str | None, meeting_minutes: int, sign: int = 1) -> None:
    """Add (sign 1) or remove (sign -1) one meeting of ``meeting_minutes`` under ``status``."""
    if status is None:
        return
    i = STATUS_INDEX[status]
    counts[i] += sign
    minutes[i] += sign * meeting_minutes


def move(counts: list[int], minutes: list[int], old: str | None, new: str, meeting_minutes: int) -> None:
    """A meeting's status went from ``old`` (None: not counted yet) to ``new``."""
    count(counts, minutes, old, meeting_minutes, -1)
    count(counts, minutes, new, meeting_minutes)


def tally_content(doc: dict[str, Any]) -> dict[str, Any]:
    """What decides whether a tally changed: everything but its version and the time it was computed for."""
    return {k: v for k, v in doc.items() if k not in _NOT_CONTENT}


def tally_message(doc: dict[str, Any]) -> dict[str, Any]:
    """The message on the path-tallies topic: the tally (SPEC section 5) with the schema version."""
    return {"schema_version": SCHEMA_VERSION, **doc}


def status_message(
    meeting: Meeting, program_id: str, org_id: str, status: str, disputed: bool, version: int, as_of: int
) -> dict[str, Any]:
    """The message on the meeting-statuses topic: replay's meeting fields, its program and org, the
    version and the time it was computed for."""
    doc = {"schema_version": SCHEMA_VERSION, **meeting_document(meeting, status, disputed)}
    doc["program_id"] = program_id
    doc["org_id"] = org_id
    doc["version"] = version
    doc["as_of"] = format_instant(as_of)
    return doc
