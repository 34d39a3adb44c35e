"""Worked examples for the contract: one small story of input events, and the outputs the code makes of it.

The inputs are written here; every output example is computed by the engine (``replay``) and built by the
same functions that build the Kafka messages (:mod:`storage.messages`), so an example can never disagree
with what session-tally publishes. ``session-tally contract generate`` writes the story as
``examples/events.jsonl`` and puts one example per message into the AsyncAPI document.
"""

from __future__ import annotations

import json
from typing import Any

from domain import events as E
from domain import publication
from domain.engine import REJECTED, process_message
from domain.lifecycle import status_at
from domain.replay import Replay
from domain.timefmt import parse_instant
from producers.publisher import LINE_HEADER
from producers.routing import murmur2_partition
from session_tally.config import Topics
from storage import messages as M

AT = "2026-03-20T12:00:00Z"
PARTITIONS = 6
ORG, PROGRAM, PATH = "org-acme", "prog-coaching-2026", "path-team-blue"


def _event(n: int, type_: str, occurred_at: str, role: str, data: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "event_id": f"5f0c1a7e-2b3d-4c5e-8f90-{n:012d}",
        "type": type_,
        "schema_version": 1,
        "occurred_at": occurred_at,
        "org_id": ORG,
    }
    if type_ != E.ORG_SET:
        doc["program_id"] = PROGRAM
    if type_ not in E.ADMIN_TYPES:
        doc["path_id"] = PATH
    doc["actor"] = {"id": "svc-scheduler" if role == "system" else f"user-{role}", "role": role}
    doc["data"] = data
    return doc


def example_events() -> list[dict[str, Any]]:
    """A program with a 24 h late-cancel window, a 3-day auto-confirm window and 20 hours; one path with a
    12.5 h override; a confirmed meeting, a meeting rescheduled and then canceled late, disputed by the
    coach and waived; the last event (a second answer) is rejected with ``already_answered``."""
    return [
        _event(1, E.ORG_SET, "2026-03-01T08:00:00Z", "support", {"enabled": True}),
        _event(
            2,
            E.PROGRAM_CREATED,
            "2026-03-01T09:00:00Z",
            "program_admin",
            {
                "name": "Coaching 2026",
                "session_verification": True,
                "late_cancel_window": "PT24H",
                "auto_confirm_window": "P3D",
                "authorized_hours": 10,
            },
        ),
        _event(3, E.SETTINGS_UPDATED, "2026-03-02T09:00:00Z", "support", {"authorized_hours": 20}),
        _event(4, E.PATH_HOURS_SET, "2026-03-02T10:00:00+01:00", "program_admin", {"authorized_hours": 12.5}),
        _event(
            5,
            E.SCHEDULED,
            "2026-03-03T09:00:00Z",
            "facilitator",
            {"meeting_id": "mtg-1", "start": "2026-03-10T10:00:00Z", "end": "2026-03-10T11:00:00Z"},
        ),
        _event(6, E.CONFIRMATION, "2026-03-10T11:05:00Z", "participant", {"meeting_id": "mtg-1", "occurred": True}),
        _event(
            7,
            E.SCHEDULED,
            "2026-03-03T09:05:00Z",
            "system",
            {"meeting_id": "mtg-2", "start": "2026-03-12T10:00:00Z", "end": "2026-03-12T11:30:00Z"},
        ),
        _event(
            8,
            E.RESCHEDULED,
            "2026-03-09T16:00:00Z",
            "participant",
            {
                "meeting_id": "mtg-2",
                "new_meeting_id": "mtg-3",
                "new_start": "2026-03-13T10:00:00Z",
                "new_end": "2026-03-13T11:30:00Z",
            },
        ),
        _event(9, E.CANCELED, "2026-03-13T08:30:00Z", "participant", {"meeting_id": "mtg-3", "reason": "sick"}),
        _event(10, E.DISPUTED, "2026-03-13T12:00:00Z", "facilitator", {"meeting_id": "mtg-3", "comment": "not late"}),
        _event(
            11,
            E.DISPUTE_RESOLVED,
            "2026-03-14T09:00:00Z",
            "program_admin",
            {"meeting_id": "mtg-3", "outcome": "upheld", "note": "flu, documented"},
        ),
        _event(12, E.CONFIRMATION, "2026-03-10T12:00:00Z", "participant", {"meeting_id": "mtg-1", "occurred": False}),
    ]


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(", ", ": ")).encode()


def example_jsonl() -> bytes:
    return b"".join(_line(doc) + b"\n" for doc in example_events())


def output_examples() -> dict[str, dict[str, Any]]:
    """``{"tally", "status", "rejected"}`` -> ``{"key", "headers", "payload"}`` of one message each, as
    the worker would publish them for the story at :data:`AT`; ``"replay"`` -> replay's document."""
    at = parse_instant(AT)
    replay = Replay()
    events = example_events()
    for number, doc in enumerate(events[:-1], start=1):
        replay.feed(_line(doc), number)
    # the last event is rejected; process it alone to learn the detail the worker reports
    last = _line(events[-1])
    outcomes = [o for o in process_message(replay.state, last, len(events)) if o.kind == REJECTED]
    rejection = outcomes[0]
    replay.rejected.append((len(events), rejection.event_id, rejection.reason or ""))
    document = replay.document(at)
    state = replay.state

    tally = M.tally_row(PATH, publication.tally_message(document["tallies"][0]))
    meeting = state.meetings["mtg-3"]
    program = state.programs[PROGRAM]
    status_doc = publication.status_message(
        meeting, PROGRAM, ORG, status_at(meeting, program, at), meeting.dispute_open, 5, at
    )
    status = M.status_row(meeting.path_id, status_doc)
    key = PATH.encode()
    source = M.SourceRecord(
        Topics().path_events,
        murmur2_partition(key, PARTITIONS),
        11,
        key,
        last,
        ((LINE_HEADER, str(len(events)).encode()),),
        1773144000000,
    )
    rejected = M.rejected_row(source, rejection.event_id, rejection.reason or "", rejection.detail, at)

    def message(row: M.OutboxRow) -> dict[str, Any]:
        headers = {k: (v or b"").decode("utf-8", "backslashreplace") for k, v in row.headers or ()}
        return {"key": (row.key or b"").decode(), "headers": headers, "payload": json.loads(row.value)}

    return {
        "tally": message(tally),
        "status": message(status),
        "rejected": message(rejected),
        "replay": {"payload": document},
    }
