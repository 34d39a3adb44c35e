"""`session-tally replay`: the whole engine over a sequence of messages, without Kafka (SPEC section 6).

Input is streamed: memory grows with the state (entities, seen event ids, waiting events, rejections),
not with the input. Waiting events still waiting at the end are rejected with ``unknown_program`` /
``unknown_meeting`` and listed after all the other rejections, by line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from domain.engine import REJECTED, expire_parked, process_message
from domain.lifecycle import status_at
from domain.model import State
from domain.publication import count, new_counters
from domain.tally import meeting_document, tally

_BLANK = b" \t\r\n"


class Replay:
    """Feed it lines (bytes, without the newline) in order, then ask for the document at time T."""

    __slots__ = ("counts", "expired", "rejected", "state")

    # ``counts`` tallies outcomes as they happen: a waiting event counts once as parked and once more
    # under its final outcome when it is retried.

    def __init__(self) -> None:
        self.state = State()
        self.rejected: list[tuple[int, str | None, str]] = []
        self.expired: list[tuple[int, str | None, str]] = []  # still waiting when a document was asked for
        self.counts: dict[str, int] = {}

    def feed(self, raw: bytes, line: int) -> None:
        if not raw or (raw[0] in _BLANK and not raw.strip(_BLANK)):
            return  # blank lines are not messages
        for outcome in process_message(self.state, raw, line):
            self.counts[outcome.kind] = self.counts.get(outcome.kind, 0) + 1
            if outcome.kind == REJECTED:
                self.rejected.append((outcome.ref, outcome.event_id, outcome.reason))  # type: ignore[arg-type]

    def feed_lines(self, lines: Iterable[bytes]) -> None:
        for number, raw in enumerate(lines, start=1):
            self.feed(raw.rstrip(b"\n"), number)

    def document(self, at: int) -> dict[str, Any]:
        """The document of SPEC section 6 at time ``at``, as one dict (see :meth:`sections`)."""
        tallies, meetings, rejected = self.sections(at)
        return {"tallies": tallies, "meetings": list(meetings), "rejected": list(rejected)}

    def sections(self, at: int) -> tuple[list[dict[str, Any]], Iterator[dict[str, Any]], Iterator[dict[str, Any]]]:
        """The document's three sections at time ``at``: the tallies, and the meetings and rejections as
        iterators, so that a writer can stream them (a million events make hundreds of thousands of
        meetings: their dicts need never exist all at once). What still waits is rejected first, as at the
        end of the input; asking again gives the same document."""
        state = self.state
        self.expired += [(o.ref, o.event_id, o.reason) for o in expire_parked(state, lambda _item: True)]  # type: ignore[misc]
        rejected = sorted(self.rejected, key=lambda r: r[0])
        rejected += sorted(self.expired, key=lambda r: r[0])

        meeting_ids = sorted(state.meetings)
        statuses: list[str] = []
        per_path: dict[str, tuple[list[int], list[int]]] = {}
        for meeting_id in meeting_ids:
            meeting = state.meetings[meeting_id]
            path = state.paths[meeting.path_id]
            status = status_at(meeting, state.programs[path.program_id], at)
            statuses.append(status)
            counts, minutes = per_path.get(path.path_id) or per_path.setdefault(path.path_id, new_counters())
            count(counts, minutes, status, meeting.minutes)

        tallies = []
        for path_id in sorted(state.paths):
            path = state.paths[path_id]
            program = state.programs[path.program_id]
            if not program.session_verification:
                continue
            counts, minutes = per_path.get(path_id) or new_counters()
            tallies.append(tally(path, program, counts, minutes, at, path.changes))

        def meetings() -> Iterator[dict[str, Any]]:
            for meeting_id, status in zip(meeting_ids, statuses, strict=True):
                meeting = state.meetings[meeting_id]
                yield meeting_document(meeting, status, meeting.dispute_open)

        def rejections() -> Iterator[dict[str, Any]]:
            for line, eid, reason in rejected:
                yield {"line": line, "event_id": eid, "reason": reason}

        return tallies, meetings(), rejections()


def replay(lines: Iterable[bytes], at: int) -> dict[str, Any]:
    """Replay an iterable of lines (bytes, with or without trailing newline) and evaluate at ``at``."""
    r = Replay()
    r.feed_lines(lines)
    return r.document(at)
