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

from sqlalchemy import JSON, Text, any_, bindparam, cast, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from domain import publication
from domain.engine import decode
from domain.lifecycle import next_change_at, status_at
from domain.model import Meeting, ParkedEvent, Path, Program, SettingsUpdate, State
from domain.tally import tally
from storage import driver as D
from storage import messages as M
from storage import outbox
from storage import tables as T
from storage.codec import dumps_text, loads_own

LOCAL_SEQ_BASE = 1 << 62  # seqs of events parked in this transaction, renumbered on insert


def _any(values: list[str]) -> Any:
    """``= ANY(array(SELECT json_array_elements_text(:json)))``: one parameter whatever the number of
    values, encoded by the C JSON encoder (an IN list, or a list adapted by psycopg, costs per value in
    Python); PostgreSQL still uses the index (ScalarArrayOp)."""
    as_json = cast(bindparam(None, dumps_text(values), type_=Text), JSON)
    return any_(func.array(select(func.json_array_elements_text(as_json)).scalar_subquery()))


def _json(values: Any) -> tuple[str]:
    """The parameter of :data:`storage.driver.ANY`: the values, sorted, as one JSON array."""
    return (dumps_text(sorted(values)),)


_PROGRAMS, _MEETINGS = D.columns(T.programs), D.columns(T.meetings)
# the last tally is read as text and decoded by codec.loads_own (psycopg's jsonb loader is the standard
# library's: a tenth of the cost of locking and loading a path); it only ever holds what flush wrote
_PATHS = D.columns(T.paths, as_text=frozenset({"last_tally"}))


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
    return M.SourceRecord(r.topic, r.partition, r.offset, r.key, r.value, tuple(M.load_headers(r.headers)))


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
        for r in await D.fetch(conn, f"SELECT org_id, enabled FROM orgs WHERE org_id = {D.ANY}", _json(org_ids)):
            self.state.orgs[r.org_id] = r.enabled

    async def load_programs(self, conn: AsyncConnection, program_ids: set[str]) -> None:
        wanted = sorted(p for p in program_ids if p not in self.state.programs)
        if not wanted:
            return
        for r in await D.fetch(conn, f"SELECT {_PROGRAMS} FROM programs WHERE program_id = {D.ANY}", _json(wanted)):
            self.state.programs[r.program_id] = _program_from_row(r)

    async def lock_paths(self, conn: AsyncConnection, path_ids: set[str], skip_locked: bool = False) -> list[str]:
        """Lock (FOR UPDATE, in path_id order) and load paths; returns the ids locked."""
        wanted = sorted(p for p in path_ids if p not in self.state.paths)
        if not wanted:
            return []
        sql = f"SELECT {_PATHS} FROM paths WHERE path_id = {D.ANY} ORDER BY path_id FOR UPDATE"
        locked = []
        for r in await D.fetch(conn, sql + (" SKIP LOCKED" if skip_locked else ""), _json(wanted)):
            self.state.paths[r.path_id] = Path(
                r.path_id, r.program_id, r.org_id, r.override_hours, r.override_at, r.changes
            )
            last = None if r.last_tally is None else loads_own(r.last_tally)
            self.books[r.path_id] = PathBook(r.counts, r.minutes, r.tally_version, last)
            locked.append(r.path_id)
        return locked

    def _add_meeting_row(self, r: Any) -> None:
        self.state.meetings[r.meeting_id] = _meeting_from_row(r)
        self.published[r.meeting_id] = Published(r.status, r.disputed, r.status_version, r.next_change_at)

    async def load_meetings(self, conn: AsyncConnection, meeting_ids: set[str]) -> None:
        wanted = sorted(m for m in meeting_ids if m not in self.state.meetings)
        if not wanted:
            return
        for r in await D.fetch(conn, f"SELECT {_MEETINGS} FROM meetings WHERE meeting_id = {D.ANY}", _json(wanted)):
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
        sql = f"SELECT event_key FROM processed_events WHERE event_key = {D.ANY}"
        for (key,) in await D.fetch(conn, sql, _json(by_key)):
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

    def refresh(
        self,
        now: int,
        meeting_ids: set[str],
        path_ids: set[str],
        again: frozenset[str] = frozenset(),
        again_meetings: frozenset[str] = frozenset(),
    ) -> None:
        """Re-evaluate these meetings at ``now``; publish changed statuses and changed tallies of these
        paths and of the paths whose counters moved. The tallies of the paths in ``again`` and the
        statuses of the meetings in ``again_meetings`` (of ``meeting_ids``) are published even when
        unchanged (``session-tally tallies republish``, a relay superseding records that may have reached
        Kafka late): a new version, the same content."""
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
            if pub.status == status and pub.disputed == disputed and meeting_id not in again_meetings:
                continue
            if pub.status != status:
                book = self._book(path.path_id)
                publication.move(book.counts, book.minutes, pub.status, status, meeting.minutes)
                dirty_paths.add(path.path_id)
            pub.status, pub.disputed = status, disputed
            pub.version += 1
            self.status_changes += 1
            message = publication.status_message(
                meeting, path.program_id, program.org_id, status, disputed, pub.version, now
            )
            self.outbox.append(M.status_row(meeting.path_id, message))

        for path_id in sorted(dirty_paths):
            path = state.paths[path_id]
            program = self.program_of(path)
            if not program.session_verification:
                continue
            book = self._book(path_id)
            self.paths_refreshed.add(path_id)
            doc = tally(path, program, book.counts, book.minutes, now, 0)
            content = publication.tally_content(doc)
            if content == book.last_tally and path_id not in again:
                continue
            book.version += 1
            book.last_tally = content
            doc["version"] = book.version
            self.tallies_published += 1
            self.outbox.append(M.tally_row(path_id, publication.tally_message(doc)))

    def earliest_change_at(self) -> int | None:
        """The earliest next clock-driven change (µs) of the meetings :meth:`refresh` re-evaluated."""
        published = self.published
        changes = [published[m].next_change_at for m in self.meetings_refreshed]
        return min((c for c in changes if c is not None), default=None)

    def _book(self, path_id: str) -> PathBook:
        book = self.books.get(path_id)
        if book is None:
            book = self.books[path_id] = PathBook(*publication.new_counters(), 0, None)
        return book

    # -------------------------------------------------------------------------------------- flush

    async def flush(self, conn: AsyncConnection) -> None:
        """Write back every change of the state and of the published bookkeeping, and the outbox.

        Bulk writes go straight through psycopg in the same transaction: COPY for inserts and one
        ``UPDATE ... FROM json_to_recordset(:json)`` per table for updates (the rows encoded by the C
        JSON encoder: adapting Python lists to arrays costs far more per value), so a batch costs a
        handful of round trips whatever its size.
        """
        state, changes = self.state, self.state.changes
        assert changes is not None
        raw = (await conn.get_raw_connection()).driver_connection
        assert raw is not None
        async with raw.cursor() as cur:
            if changes.orgs:
                orgs = sorted(changes.orgs)
                await cur.execute(
                    "INSERT INTO orgs (org_id, enabled) SELECT id, enabled FROM json_to_recordset(%s::json) "
                    "AS u(id text, enabled boolean) ON CONFLICT (org_id) DO UPDATE SET enabled = excluded.enabled",
                    (dumps_text([{"id": o, "enabled": state.orgs[o]} for o in orgs]),),
                )
            new_programs = sorted(changes.new_programs)
            if new_programs:
                await _copy(cur, "programs", _PROGRAM_COLUMNS, [_program_row(state.programs[p]) for p in new_programs])
            changed_programs = sorted(changes.programs - changes.new_programs)
            if changed_programs:
                updates = [{"id": p, "u": [x.to_json() for x in state.programs[p].updates]} for p in changed_programs]
                await cur.execute(
                    "UPDATE programs p SET updates = u.u FROM json_to_recordset(%s::json) AS u(id text, u jsonb) "
                    "WHERE p.program_id = u.id",
                    (dumps_text(updates),),
                )

            new_paths = sorted(changes.new_paths)
            if new_paths:
                await _copy(cur, "paths", _PATH_COLUMNS, [self._path_row(state.paths[p]) for p in new_paths])
            touched = (
                changes.paths | self.paths_refreshed | {state.meetings[m].path_id for m in self.meetings_refreshed}
            )
            touched -= changes.new_paths
            if touched:
                rows = [self._path_update(state.paths[p]) for p in sorted(touched)]
                await cur.execute(
                    "UPDATE paths p SET override_hours = u.oh, override_at = u.oa, changes = u.ch, counts = u.c, "
                    "minutes = u.m, tally_version = u.v, last_tally = u.t "
                    "FROM json_to_recordset(%s::json) AS u(id text, oh numeric, oa bigint, ch int, c int[], m bigint[], "
                    "v bigint, t jsonb) WHERE p.path_id = u.id",
                    (dumps_text(rows),),
                )

            new_meetings = sorted(changes.new_meetings)
            if new_meetings:
                await _copy(cur, "meetings", _MEETING_COLUMNS, [self._meeting_row(m) for m in new_meetings])
            changed_meetings = sorted((changes.meetings | self.meetings_refreshed) - changes.new_meetings)
            if changed_meetings:
                keys = ("id", "ck", "ca", "an", "aa", "dop", "w", "st", "di", "sv", "nc")
                rows = [dict(zip(keys, (r[0], *r[5:]), strict=True)) for r in map(self._meeting_row, changed_meetings)]
                await cur.execute(
                    "UPDATE meetings x SET cancel_kind = u.ck, cancel_at = u.ca, answer = u.an, answer_at = u.aa, "
                    "dispute_open = u.dop, waived = u.w, status = u.st, disputed = u.di, status_version = u.sv, "
                    "next_change_at = u.nc FROM json_to_recordset(%s::json) AS u(id text, ck smallint, ca bigint, "
                    "an boolean, aa bigint, dop boolean, w boolean, st text, di boolean, sv bigint, nc bigint) "
                    "WHERE x.meeting_id = u.id",
                    (dumps_text(rows),),
                )

            if changes.seen:
                await _copy(cur, "processed_events", ("event_key",), [(event_key(e),) for e in changes.seen])

            db_unparked = sorted(s for s in changes.unparked if s < LOCAL_SEQ_BASE)
            if db_unparked:
                await cur.execute(
                    "DELETE FROM parked WHERE seq = ANY(ARRAY(SELECT json_array_elements_text(%s::json)::bigint))",
                    (dumps_text(db_unparked),),
                )
            moved = [item for seq, item in sorted(changes.parked.items()) if seq < LOCAL_SEQ_BASE]
            if moved:
                await cur.execute(
                    "UPDATE parked p SET wait_kind = u.k, wait_key = u.w FROM json_to_recordset(%s::json) "
                    "AS u(seq bigint, k text, w text) WHERE p.seq = u.seq",
                    (dumps_text([{"seq": i.seq, "k": i.wait_kind, "w": i.wait_key} for i in moved]),),
                )
            new_parked = [changes.parked[s] for s in sorted(changes.parked) if s >= LOCAL_SEQ_BASE]
            if new_parked:  # in arrival order: the identity column numbers the COPY rows in that order
                await _copy(
                    cur,
                    "parked",
                    ("wait_kind", "wait_key", "event_id", "topic", "partition", "offset", "key", "value", "headers"),
                    [_parked_row(i) for i in new_parked],
                )

            if changes.audit:
                await _copy(
                    cur,
                    "admin_audit",
                    (
                        "kind",
                        "event_id",
                        "path_id",
                        "meeting_id",
                        "actor_id",
                        "actor_role",
                        "occurred_at",
                        "text",
                        "outcome",
                        "authorized_hours",
                    ),
                    [
                        (
                            a.kind,
                            a.event_id,
                            a.path_id,
                            a.meeting_id,
                            a.actor_id,
                            a.actor_role,
                            a.occurred_at,
                            a.text,
                            a.outcome,
                            a.authorized_hours,
                        )
                        for a in changes.audit
                    ],
                )
            if self.outbox:
                await outbox.write_rows(cur, self.outbox)

    def _path_row(self, path: Path) -> tuple[Any, ...]:
        book = self._book(path.path_id)
        return (
            path.path_id,
            path.program_id,
            path.org_id,
            path.override_hours,
            path.override_at,
            path.changes,
            _int_array(book.counts),
            _int_array(book.minutes),
            book.version,
            None if book.last_tally is None else dumps_text(book.last_tally),
        )

    def _path_update(self, path: Path) -> dict[str, Any]:
        book = self._book(path.path_id)
        hours = path.override_hours
        return {
            "id": path.path_id,
            "oh": None if hours is None else str(hours),
            "oa": path.override_at,
            "ch": path.changes,
            "c": book.counts,
            "m": book.minutes,
            "v": book.version,
            "t": book.last_tally,
        }

    def _meeting_row(self, meeting_id: str) -> tuple[Any, ...]:
        m = self.state.meetings[meeting_id]
        pub = self.published.get(meeting_id) or Published(None, False, 0, None)
        return (
            m.meeting_id,
            m.path_id,
            self.state.paths[m.path_id].program_id,
            m.start,
            m.end,
            m.cancel_kind,
            m.cancel_at,
            m.answer,
            m.answer_at,
            m.dispute_open,
            m.waived,
            pub.status,
            pub.disputed,
            pub.version,
            pub.next_change_at,
        )


_PATH_COLUMNS = (
    "path_id",
    "program_id",
    "org_id",
    "override_hours",
    "override_at",
    "changes",
    "counts",
    "minutes",
    "tally_version",
    "last_tally",
)
_MEETING_COLUMNS = (
    "meeting_id",
    "path_id",
    "program_id",
    "start_at",
    "end_at",
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
_PROGRAM_COLUMNS = (
    "program_id",
    "org_id",
    "name",
    "session_verification",
    "late_cancel_window",
    "auto_confirm_window",
    "authorized_hours",
    "created_at",
    "updates",
)


def _int_array(values: list[int]) -> str:
    return "{" + ",".join(map(str, values)) + "}"


async def _copy(cur: Any, table: str, columns: tuple[str, ...], rows: list[tuple[Any, ...]]) -> None:
    cols = ", ".join(f'"{c}"' for c in columns)
    await D.copy_rows(cur, f"COPY {table} ({cols}) FROM STDIN", rows)


def _program_row(p: Program) -> tuple[Any, ...]:
    return (
        p.program_id,
        p.org_id,
        p.name,
        p.session_verification,
        p.late_cancel_window,
        p.auto_confirm_window,
        p.authorized_hours,
        p.created_at,
        dumps_text([u.to_json() for u in p.updates]),
    )


def _parked_row(item: ParkedEvent) -> tuple[Any, ...]:
    src: M.SourceRecord = item.ref
    headers = M.store_headers(src.headers)
    return (
        item.wait_kind,
        item.wait_key,
        item.event.event_id,
        src.topic,
        src.partition,
        src.offset,
        src.key,
        src.value,
        dumps_text(headers),
    )
