"""Loading domain objects from rows and writing them back: the only place that knows both shapes.

:class:`Loaded` is the part of the state a transaction works on: a domain :class:`~domain.model.State`
plus what was last published for each loaded meeting and path (status, counters, tally, versions).
:meth:`Loaded.refresh` re-evaluates meetings at ``now`` with the domain's own functions, moves the
path counters by the difference and produces the outbox rows for every status and tally that changed;
:meth:`Loaded.flush` writes everything back. Nothing here decides a policy question.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from domain.engine import decode
from domain.lifecycle import next_change_at, status_at
from domain.model import STATUS_INDEX, STATUSES, Meeting, ParkedEvent, Path, Program, SettingsUpdate, State
from domain.tally import tally
from storage import messages as M
from storage import tables as T

N_STATUSES = len(STATUSES)
LOCAL_SEQ_BASE = 1 << 62  # seqs of events parked in this transaction, renumbered on insert


def event_key(event_id: str) -> str:
    """The primary key of ``processed_events`` for an event id (long ids are hashed)."""
    if len(event_id) <= 200:
        return event_id
    return "sha256:" + hashlib.sha256(event_id.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(slots=True)
class Published:
    """What the outside world last saw of a meeting."""

    status: str | None
    disputed: bool
    version: int
    next_change_at: int | None


@dataclass(slots=True)
class PathBook:
    """A path's counters (meetings and minutes per published status) and its last published tally."""

    counts: list[int]
    minutes: list[int]
    version: int
    last_tally: dict[str, Any] | None
    is_new: bool = False


def _program_from_row(r: Any) -> Program:
    program = Program(
        program_id=r.program_id,
        org_id=r.org_id,
        session_verification=r.session_verification,
        late_cancel_window=r.late_cancel_window,
        auto_confirm_window=r.auto_confirm_window,
        authorized_hours=r.authorized_hours,
        created_at=r.created_at,
        name=r.name,
    )
    program.updates = [SettingsUpdate.from_json(u) for u in r.updates]
    return program


def _meeting_from_row(r: Any) -> Meeting:
    return Meeting(
        meeting_id=r.meeting_id,
        path_id=r.path_id,
        start=r.start_at,
        end=r.end_at,
        cancel_kind=r.cancel_kind,
        cancel_at=r.cancel_at,
        answer=r.answer,
        answer_at=r.answer_at,
        dispute_open=r.dispute_open,
        waived=r.waived,
    )


def source_from_parked_row(r: Any) -> M.SourceRecord:
    return M.SourceRecord(r.topic, r.partition, r.offset, r.key, r.value, tuple(M.decode_headers(r.headers)))


@dataclass
class Loaded:
    state: State = field(default_factory=lambda: State(track_changes=True))
    published: dict[str, Published] = field(default_factory=dict)
    books: dict[str, PathBook] = field(default_factory=dict)
    outbox: list[M.OutboxRow] = field(default_factory=list)
    program_rows_changed: set[str] = field(default_factory=set)
    meetings_refreshed: set[str] = field(default_factory=set)
    paths_refreshed: set[str] = field(default_factory=set)
    status_changes: int = 0
    tallies_published: int = 0

    # ------------------------------------------------------------------------------------- loading

    async def load_orgs(self, conn: AsyncConnection, org_ids: set[str]) -> None:
        if not org_ids:
            return
        rows = await conn.execute(select(T.orgs).where(T.orgs.c.org_id.in_(sorted(org_ids))))
        for r in rows:
            self.state.orgs[r.org_id] = r.enabled

    async def load_programs(self, conn: AsyncConnection, program_ids: set[str]) -> None:
        wanted = sorted(p for p in program_ids if p not in self.state.programs)
        if not wanted:
            return
        rows = await conn.execute(select(T.programs).where(T.programs.c.program_id.in_(wanted)))
        for r in rows:
            self.state.programs[r.program_id] = _program_from_row(r)

    async def lock_paths(self, conn: AsyncConnection, path_ids: set[str], skip_locked: bool = False) -> list[str]:
        """Lock (FOR UPDATE, in path_id order) and load paths; returns the ids locked."""
        wanted = sorted(p for p in path_ids if p not in self.state.paths)
        if not wanted:
            return []
        stmt = select(T.paths).where(T.paths.c.path_id.in_(wanted)).order_by(T.paths.c.path_id)
        stmt = stmt.with_for_update(skip_locked=skip_locked)
        locked = []
        for r in await conn.execute(stmt):
            self.state.paths[r.path_id] = Path(
                r.path_id, r.program_id, r.org_id, r.override_hours, r.override_at, r.changes
            )
            self.books[r.path_id] = PathBook(list(r.counts), list(r.minutes), r.tally_version, r.last_tally)
            locked.append(r.path_id)
        return locked

    def _add_meeting_row(self, r: Any) -> None:
        self.state.meetings[r.meeting_id] = _meeting_from_row(r)
        self.published[r.meeting_id] = Published(r.status, r.disputed, r.status_version, r.next_change_at)

    async def load_meetings(self, conn: AsyncConnection, meeting_ids: set[str]) -> None:
        wanted = sorted(m for m in meeting_ids if m not in self.state.meetings)
        if not wanted:
            return
        for r in await conn.execute(select(T.meetings).where(T.meetings.c.meeting_id.in_(wanted))):
            self._add_meeting_row(r)

    async def load_meetings_where(self, conn: AsyncConnection, condition: Any) -> list[str]:
        ids = []
        for r in await conn.execute(select(T.meetings).where(condition)):
            if r.meeting_id not in self.state.meetings:
                self._add_meeting_row(r)
            ids.append(r.meeting_id)
        return ids

    async def load_seen(self, conn: AsyncConnection, event_ids: set[str]) -> None:
        if not event_ids:
            return
        by_key = {event_key(e): e for e in event_ids}
        rows = await conn.execute(
            select(T.processed_events.c.event_key).where(T.processed_events.c.event_key.in_(sorted(by_key)))
        )
        for (key,) in rows:
            self.state.seen.add(by_key[key])

    def add_parked_row(self, r: Any) -> ParkedEvent | None:
        """A parked row as a waiting event (re-validated: decoding is deterministic)."""
        _event_id, event = decode(r.value)
        if not hasattr(event, "type"):
            return None  # cannot happen for rows this code parked; ignore defensively
        item = ParkedEvent(r.seq, event, r.wait_kind, r.wait_key, source_from_parked_row(r))
        self.state.add_parked(item)
        return item

    # ------------------------------------------------------------------------------------ refresh

    def program_of(self, path: Path) -> Program:
        return self.state.programs[path.program_id]

    def refresh(self, now: int, meeting_ids: set[str], path_ids: set[str]) -> None:
        """Re-evaluate these meetings at ``now``; publish changed statuses and changed tallies of these
        paths and of the paths whose counters moved."""
        state = self.state
        dirty_paths = set(path_ids)
        for meeting_id in sorted(meeting_ids):
            meeting = state.meetings[meeting_id]
            path = state.paths[meeting.path_id]
            program = self.program_of(path)
            if not program.session_verification:
                continue
            status = status_at(meeting, program, now)
            disputed = meeting.dispute_open
            pub = self.published.get(meeting_id)
            if pub is None:
                pub = self.published[meeting_id] = Published(None, False, 0, None)
            pub.next_change_at = next_change_at(meeting, program, now)
            self.meetings_refreshed.add(meeting_id)
            if pub.status == status and pub.disputed == disputed:
                continue
            book = self._book(path.path_id)
            minutes = meeting.minutes
            if pub.status != status:
                if pub.status is not None:
                    old = STATUS_INDEX[pub.status]
                    book.counts[old] -= 1
                    book.minutes[old] -= minutes
                new = STATUS_INDEX[status]
                book.counts[new] += 1
                book.minutes[new] += minutes
                dirty_paths.add(path.path_id)
            pub.status, pub.disputed = status, disputed
            pub.version += 1
            self.status_changes += 1
            self.outbox.append(M.status_row(meeting, path.program_id, program.org_id, status, disputed, pub.version, now))

        for path_id in sorted(dirty_paths):
            path = state.paths[path_id]
            program = self.program_of(path)
            if not program.session_verification:
                continue
            book = self._book(path_id)
            self.paths_refreshed.add(path_id)
            doc = tally(path, program, book.counts, book.minutes, now, 0)
            content = {k: v for k, v in doc.items() if k not in ("version", "as_of")}
            if content == book.last_tally:
                continue
            book.version += 1
            book.last_tally = content
            doc["version"] = book.version
            self.tallies_published += 1
            self.outbox.append(M.tally_row(path_id, doc))

    def _book(self, path_id: str) -> PathBook:
        book = self.books.get(path_id)
        if book is None:
            book = self.books[path_id] = PathBook([0] * N_STATUSES, [0] * N_STATUSES, 0, None, is_new=True)
        return book

    # -------------------------------------------------------------------------------------- flush

    async def flush(self, conn: AsyncConnection) -> None:
        """Write back every change of the state and of the published bookkeeping, and the outbox."""
        state, changes = self.state, self.state.changes
        assert changes is not None

        if changes.orgs:
            stmt = pg_insert(T.orgs)
            await conn.execute(
                stmt.on_conflict_do_update(index_elements=["org_id"], set_={"enabled": stmt.excluded.enabled}),
                [{"org_id": o, "enabled": state.orgs[o]} for o in sorted(changes.orgs)],
            )

        new_programs = sorted(changes.new_programs)
        if new_programs:
            await conn.execute(T.programs.insert(), [_program_params(state.programs[p]) for p in new_programs])
        changed_programs = sorted(changes.programs - changes.new_programs)
        if changed_programs:
            await conn.execute(
                update(T.programs).where(T.programs.c.program_id == bindparam("b_id")).values(updates=bindparam("b_updates")),
                [{"b_id": p, "b_updates": [u.to_json() for u in state.programs[p].updates]} for p in changed_programs],
            )

        # paths: new ones (registered now) and every path whose override, counters or tally moved
        new_paths = sorted(changes.new_paths)
        if new_paths:
            await conn.execute(T.paths.insert(), [self._path_params(state.paths[p]) for p in new_paths])
        touched = (changes.paths | self.paths_refreshed | {state.meetings[m].path_id for m in self.meetings_refreshed})
        touched -= changes.new_paths
        if touched:
            await conn.execute(
                update(T.paths)
                .where(T.paths.c.path_id == bindparam("b_id"))
                .values(
                    override_hours=bindparam("b_override_hours"),
                    override_at=bindparam("b_override_at"),
                    changes=bindparam("b_changes"),
                    counts=bindparam("b_counts"),
                    minutes=bindparam("b_minutes"),
                    tally_version=bindparam("b_tally_version"),
                    last_tally=bindparam("b_last_tally"),
                ),
                [{"b_" + k: v for k, v in self._path_params(state.paths[p]).items() if k not in ("program_id", "org_id")}
                 | {"b_id": p} for p in sorted(touched)],
            )

        new_meetings = sorted(changes.new_meetings)
        if new_meetings:
            await conn.execute(T.meetings.insert(), [self._meeting_params(m) for m in new_meetings])
        changed_meetings = sorted((changes.meetings | self.meetings_refreshed) - changes.new_meetings)
        if changed_meetings:
            await conn.execute(
                update(T.meetings)
                .where(T.meetings.c.meeting_id == bindparam("b_id"))
                .values({c: bindparam("b_" + c) for c in _MEETING_MUTABLE}),
                [{"b_" + k: v for k, v in self._meeting_params(m).items() if k in _MEETING_MUTABLE} | {"b_id": m}
                 for m in changed_meetings],
            )

        if changes.seen:
            await conn.execute(T.processed_events.insert(), [{"event_key": event_key(e)} for e in changes.seen])

        db_unparked = [s for s in changes.unparked if s < LOCAL_SEQ_BASE]
        moved = [item for seq, item in changes.parked.items() if seq < LOCAL_SEQ_BASE]
        if db_unparked:
            await conn.execute(T.parked.delete().where(T.parked.c.seq.in_(sorted(db_unparked))))
        if moved:
            await conn.execute(
                update(T.parked)
                .where(T.parked.c.seq == bindparam("b_seq"))
                .values(wait_kind=bindparam("b_kind"), wait_key=bindparam("b_key")),
                [{"b_seq": i.seq, "b_kind": i.wait_kind, "b_key": i.wait_key} for i in moved],
            )
        new_parked = [changes.parked[s] for s in sorted(changes.parked) if s >= LOCAL_SEQ_BASE]
        if new_parked:
            await conn.execute(T.parked.insert(), [_parked_params(i) for i in new_parked])

        if changes.audit:
            await conn.execute(
                T.admin_audit.insert(),
                [
                    {
                        "kind": a.kind,
                        "event_id": a.event_id,
                        "path_id": a.path_id,
                        "meeting_id": a.meeting_id,
                        "actor_id": a.actor_id,
                        "actor_role": a.actor_role,
                        "occurred_at": a.occurred_at,
                        "text": a.text,
                        "outcome": a.outcome,
                        "authorized_hours": a.authorized_hours,
                    }
                    for a in changes.audit
                ],
            )
        if self.outbox:
            await conn.execute(T.outbox.insert(), [row.as_params() for row in self.outbox])
            await conn.execute(text("SELECT pg_notify('session_tally_outbox', '')"))

    def _path_params(self, path: Path) -> dict[str, Any]:
        book = self._book(path.path_id)
        return {
            "path_id": path.path_id,
            "program_id": path.program_id,
            "org_id": path.org_id,
            "override_hours": path.override_hours,
            "override_at": path.override_at,
            "changes": path.changes,
            "counts": book.counts,
            "minutes": book.minutes,
            "tally_version": book.version,
            "last_tally": book.last_tally,
        }

    def _meeting_params(self, meeting_id: str) -> dict[str, Any]:
        m = self.state.meetings[meeting_id]
        pub = self.published.get(meeting_id) or Published(None, False, 0, None)
        return {
            "meeting_id": m.meeting_id,
            "path_id": m.path_id,
            "program_id": self.state.paths[m.path_id].program_id,
            "start_at": m.start,
            "end_at": m.end,
            "cancel_kind": m.cancel_kind,
            "cancel_at": m.cancel_at,
            "answer": m.answer,
            "answer_at": m.answer_at,
            "dispute_open": m.dispute_open,
            "waived": m.waived,
            "status": pub.status,
            "disputed": pub.disputed,
            "status_version": pub.version,
            "next_change_at": pub.next_change_at,
        }


_MEETING_MUTABLE = (
    "cancel_kind",
    "cancel_at",
    "answer",
    "answer_at",
    "dispute_open",
    "waived",
    "status",
    "disputed",
    "status_version",
    "next_change_at",
)


def _program_params(p: Program) -> dict[str, Any]:
    return {
        "program_id": p.program_id,
        "org_id": p.org_id,
        "name": p.name,
        "session_verification": p.session_verification,
        "late_cancel_window": p.late_cancel_window,
        "auto_confirm_window": p.auto_confirm_window,
        "authorized_hours": p.authorized_hours,
        "created_at": p.created_at,
        "updates": [u.to_json() for u in p.updates],
    }


def _parked_params(item: ParkedEvent) -> dict[str, Any]:
    src: M.SourceRecord = item.ref
    return {
        "wait_kind": item.wait_kind,
        "wait_key": item.wait_key,
        "event_id": item.event.event_id,
        "topic": src.topic,
        "partition": src.partition,
        "offset": src.offset,
        "key": src.key,
        "value": src.value,
        "headers": [[k, v.decode("utf-8", "backslashreplace")] for k, v in src.headers],
    }

