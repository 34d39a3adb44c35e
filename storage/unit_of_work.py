"""One PostgreSQL transaction per unit of work: a batch of input records, a clock sweep, or the expiry
of waiting events. Each runs the domain engine on exactly the rows it needs and writes the state, the
outbox rows and (for input batches) the next input offsets together, so that a crash at any point
either keeps all of it or none of it, and a redelivered record is recognised by its offset.

Concurrency between workers (READ COMMITTED):
- ``consumer_offsets`` rows are locked first: one transaction per input partition at a time, and a
  worker that takes a partition over after a rebalance sees what the previous owner committed;
- advisory locks on the program ids a batch names (exclusive for the programs it creates or whose
  settings it changes, shared for the others, taken in key order) make "park the event, the program is
  unknown" and "create the program and retry its waiting events" serialise, so no waiting event misses
  its program, and make a settings change serialise with every batch that reads that program's policy:
  the change re-evaluates every meeting of the program, and a batch that creates a path or a meeting of
  the program meanwhile would otherwise evaluate it under the old policy, unseen by the change (found by
  tests/integration/test_faults.py as a meeting whose path the change had not loaded). The events a
  batch releases from waiting add their programs' locks after the batch's own;
- path rows are locked (``FOR UPDATE``, in path_id order) before anything of theirs is read, so two
  transactions never interleave on one path's meetings, counters or tally version;
- unique keys (event ids, meeting ids, path ids) catch the remaining races; the transaction is then
  retried from the start on fresh data (also on deadlock or serialisation failure).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from sqlalchemy import and_, exists, func, or_, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from domain import events as E
from domain.engine import (
    REJECTED,
    WAIT_MEETING,
    WAIT_PROGRAM,
    decode,
    dedup_id,
    expire_parked,
    process_decoded,
    release_waiting,
)
from domain.touches import Touches
from storage import driver as D
from storage import messages as M
from storage import tables as T
from storage.codec import dumps_text
from storage.db import sqlstate_of
from storage.rows import LOCAL_SEQ_BASE, Loaded, _any
from storage.screening import Misrouted, Screen

log = logging.getLogger("session_tally.storage")

# serialization failure, deadlock, unique violation, lock_timeout (a lock held by a frozen worker: its
# session ends after idle_in_transaction_session_timeout, see storage/db.py)
RETRYABLE_SQLSTATES = {"40001", "40P01", "23505", "55P03"}
MAX_ATTEMPTS = 8
_PARKED = D.columns(T.parked)


class OffsetGap(Exception):
    """A batch starts after the next offset PostgreSQL expects for a partition: records in between were
    never applied (a position committed past a failed batch). The consumer must seek back."""

    def __init__(self, expected: dict[tuple[str, int], int]) -> None:
        super().__init__(f"records missing before {expected}")
        self.expected = expected


@dataclass
class Report:
    """What one unit of work did (for metrics and logs)."""

    records: int = 0
    redelivered: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)  # of the rejected outcomes
    status_changes: int = 0
    tallies: int = 0
    outbox_rows: int = 0
    attempts: int = 1
    misrouted: list[Misrouted] = field(default_factory=list)  # keys seen on a second partition
    #: the earliest clock-driven change (µs) of the meetings this unit of work re-evaluated (None: none),
    #: so that the clock sweeper is woken only when it would otherwise sleep past it
    next_change_at: int | None = None


# a program's lock: the two-key advisory lock (PROGRAM_LOCK_CLASS of the schema, _lock_key(program)), so
# that workers of different schemas of one database never serialise on each other's programs
PROGRAM_LOCK_CLASS = "hashtext('st_programs:' || current_schema())"


def _lock_key(kind: str, key: str) -> int:
    """A 32-bit key (two ids sharing one only serialise more than needed, never less)."""
    return int.from_bytes(hashlib.blake2b(f"{kind}:{key}".encode(), digest_size=4).digest(), "big", signed=True)


def retryable(exc: BaseException) -> bool:
    """A failure that a fresh attempt of the same transaction can pass (see RETRYABLE_SQLSTATES)."""
    return sqlstate_of(exc) in RETRYABLE_SQLSTATES


class UnitOfWork:
    """Runs the engine against PostgreSQL. ``clock()`` gives the current time in µs since the epoch."""

    def __init__(
        self, engine: AsyncEngine, admin_topic: str, clock: Callable[[], int], path_topic: str | None = None
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.screen = Screen(admin_topic, path_topic)

    async def _transaction(self, work: Callable[[AsyncConnection], Any]) -> Any:
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self.engine.begin() as conn:
                    result = await work(conn)
                self.screen.committed()
                if isinstance(result, Report):
                    result.attempts = attempt
                return result
            except (DBAPIError, psycopg.Error) as exc:  # psycopg's own: from a COPY on the driver's connection
                if not retryable(exc) or attempt == MAX_ATTEMPTS:
                    raise
                log.info("retrying a transaction after %s (attempt %d)", sqlstate_of(exc), attempt)
                await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------------------- input batches

    async def process_batch(self, records: Sequence[M.SourceRecord], accept_gaps: bool = False) -> Report:
        """Apply a batch of input records (any mix of partitions of both input topics).

        Raises :class:`OffsetGap` when a partition's records start after the next offset PostgreSQL
        expects, unless ``accept_gaps`` (the caller already went back once and Kafka has nothing in
        between: offsets taken by transaction markers, say)."""
        return await self._transaction(lambda conn: self._batch(conn, records, (), accept_gaps))  # type: ignore[no-any-return]

    async def reject_records(self, records: Sequence[M.SourceRecord], reason: str, detail: str) -> Report:
        """Reject these records as they are (no state change, no event id remembered) and move their
        partitions' offsets past them: for a record that cannot be processed (consumers.isolation) or
        that an operator skips (``session-tally offsets skip``)."""

        async def work(conn: AsyncConnection) -> Report:
            fresh = await self._claim_offsets(conn, list(records), accept_gaps=True)
            loaded = Loaded()
            now = self.clock()
            for rec in fresh:
                event_id = None
                try:
                    event_id, _ = decode(rec.value)
                except Exception:  # the record failed once already; its id is only informative
                    event_id = None
                loaded.outbox.append(M.rejected_row(rec, event_id, reason, detail, now))
            await loaded.flush(conn)
            await self._advance_offsets(conn, fresh)
            report = Report(records=len(records), redelivered=len(records) - len(fresh))
            report.outcomes["rejected"] = len(fresh)
            report.reasons[reason] = len(fresh)
            report.outbox_rows = len(loaded.outbox)
            return report

        return await self._transaction(work)  # type: ignore[no-any-return]

    async def release_ready(self, limit: int = 200) -> Report:
        """Safety net: retry waiting events whose program or meeting exists (normally they are retried
        in the transaction that created it)."""

        async def work(conn: AsyncConnection) -> Report:
            p = T.parked
            ready = (
                select(p.c.wait_kind, p.c.wait_key)
                .where(
                    or_(
                        and_(p.c.wait_kind == WAIT_PROGRAM, exists().where(T.programs.c.program_id == p.c.wait_key)),
                        and_(p.c.wait_kind == WAIT_MEETING, exists().where(T.meetings.c.meeting_id == p.c.wait_key)),
                    )
                )
                .distinct()
                .limit(limit)
            )
            keys = [(r.wait_kind, r.wait_key) for r in await conn.execute(ready)]
            if not keys:
                return Report()
            return await self._batch(conn, (), keys, False)

        return await self._transaction(work)  # type: ignore[no-any-return]

    async def _batch(
        self,
        conn: AsyncConnection,
        records: Iterable[M.SourceRecord],
        release: Sequence[tuple[str, str]],
        accept_gaps: bool,
    ) -> Report:
        report = Report()
        records = list(records)
        report.records = len(records)
        fresh = await self._claim_offsets(conn, records, accept_gaps)
        report.redelivered = len(records) - len(fresh)

        # records are applied in the order the batch gives them (per partition: the partition's order)
        decoded = [(rec, *decode(rec.value)) for rec in fresh]
        if decoded:
            decoded, report.misrouted = await self.screen.run(conn, decoded)
        keys = Touches()
        for _rec, event_id, event in decoded:
            seen_id = dedup_id(event_id, event)
            if seen_id is not None:
                keys.event_ids.add(seen_id)
            if isinstance(event, E.Envelope):
                keys.add(event)
        for kind, key in release:
            keys.add_wait_key(kind, key)

        held: dict[int, bool] = {}
        await self._lock_programs(conn, keys, held)
        loaded = Loaded()
        await self._load_waiting(conn, loaded, keys, set(release))
        await self._lock_programs(conn, keys, held)  # the programs of the events released from waiting
        await loaded.lock_paths(conn, keys.paths)
        await loaded.load_programs(conn, keys.programs | {p.program_id for p in loaded.state.paths.values()})
        await loaded.load_orgs(conn, keys.orgs)
        await loaded.load_meetings(conn, keys.meetings)
        await loaded.load_seen(conn, keys.event_ids)
        state = loaded.state
        state.next_seq = LOCAL_SEQ_BASE

        now = self.clock()
        outcomes = []
        for rec, event_id, event in decoded:
            outcomes.extend(process_decoded(state, event_id, event, rec))
        if release:
            outcomes.extend(release_waiting(state, list(release)))
        for outcome in outcomes:
            report.outcomes[outcome.kind] += 1
            if outcome.kind == REJECTED:
                report.reasons[outcome.reason or ""] += 1
                loaded.outbox.append(
                    M.rejected_row(outcome.ref, outcome.event_id, outcome.reason or "", outcome.detail, now)
                )

        changes = state.changes
        assert changes is not None
        meeting_ids = set(changes.meetings)
        path_ids = set(changes.paths)
        for program_id in sorted(changes.programs_with_new_policy):
            # a policy change can move every meeting of the program (and every tally)
            program_paths = {
                r.path_id
                for r in await conn.execute(select(T.paths.c.path_id).where(T.paths.c.program_id == program_id))
            }
            await loaded.lock_paths(conn, program_paths)
            meeting_ids |= set(await loaded.load_meetings_where(conn, T.meetings.c.program_id == program_id))
            path_ids |= program_paths | {p.path_id for p in state.paths.values() if p.program_id == program_id}
        loaded.refresh(now, meeting_ids, path_ids)
        await loaded.flush(conn)
        await self._advance_offsets(conn, fresh)
        report.next_change_at = loaded.earliest_change_at()
        report.status_changes = loaded.status_changes
        report.tallies = loaded.tallies_published
        report.outbox_rows = len(loaded.outbox)
        return report

    async def _claim_offsets(
        self, conn: AsyncConnection, records: list[M.SourceRecord], accept_gaps: bool
    ) -> list[M.SourceRecord]:
        """Lock this batch's partitions; drop records already applied (offset below next_offset)."""
        parts = sorted({(r.topic, r.partition) for r in records})
        if not parts:
            return []
        wanted = (dumps_text([{"t": topic, "p": part} for topic, part in parts]),)
        await D.execute(
            conn,
            "INSERT INTO consumer_offsets (topic, partition, next_offset) SELECT t, p, 0 "
            "FROM json_to_recordset(%s::json) AS u(t text, p int) ORDER BY t, p ON CONFLICT DO NOTHING",
            wanted,
        )
        rows = await D.fetch(
            conn,
            "SELECT c.topic, c.partition, c.next_offset FROM consumer_offsets c "
            "JOIN json_to_recordset(%s::json) AS u(t text, p int) ON c.topic = u.t AND c.partition = u.p "
            "ORDER BY c.topic, c.partition FOR UPDATE OF c",
            wanted,
        )
        next_offset = {(r.topic, r.partition): r.next_offset for r in rows}
        first: dict[tuple[str, int], int] = {}
        for r in records:
            key = (r.topic, r.partition)
            first[key] = min(first.get(key, r.offset), r.offset)
        gaps = {k: next_offset[k] for k, o in first.items() if 0 < next_offset[k] < o}
        if gaps and not accept_gaps:
            raise OffsetGap(gaps)
        return [r for r in records if r.offset >= next_offset[(r.topic, r.partition)]]

    async def _advance_offsets(self, conn: AsyncConnection, fresh: list[M.SourceRecord]) -> None:
        last: dict[tuple[str, int], int] = {}
        for r in fresh:
            key = (r.topic, r.partition)
            last[key] = max(last.get(key, -1), r.offset)
        if not last:
            return
        await D.execute(
            conn,
            "UPDATE consumer_offsets c SET next_offset = u.n "
            "FROM json_to_recordset(%s::json) AS u(t text, p int, n bigint) WHERE c.topic = u.t AND c.partition = u.p",
            (dumps_text([{"t": k[0], "p": k[1], "n": v + 1} for k, v in sorted(last.items())]),),
        )

    async def _lock_programs(self, conn: AsyncConnection, keys: Touches, held: dict[int, bool]) -> None:
        """Advisory locks on the program ids of the batch: exclusive to create or change the settings,
        shared to look up. ``held`` (lock key -> exclusive) is what this transaction holds already; only
        what is missing is taken (a shared lock held is taken again exclusively when needed)."""
        locks: dict[int, bool] = {}
        exclusive = keys.exclusive_programs
        for program_id in keys.programs:
            k = _lock_key("program", program_id)
            locks[k] = locks.get(k, False) or program_id in exclusive
        locks = {k: x for k, x in locks.items() if k not in held or (x and not held[k])}
        if not locks:
            return
        held.update(locks)
        ordered = sorted(locks.items())
        await D.execute(
            conn,
            f"SELECT count(CASE WHEN x THEN pg_advisory_xact_lock({PROGRAM_LOCK_CLASS}, k) "
            f"ELSE pg_advisory_xact_lock_shared({PROGRAM_LOCK_CLASS}, k) END) "
            "FROM (SELECT k, x FROM json_to_recordset(%s::json) AS t(k int, x boolean) ORDER BY k) s",
            (dumps_text([{"k": k, "x": x} for k, x in ordered]),),
        )

    async def _load_waiting(
        self, conn: AsyncConnection, loaded: Loaded, keys: Touches, extra: set[tuple[str, str]]
    ) -> None:
        """Load the events waiting for what this batch may create, and, in cascade, for what those may
        create in turn; their ids join the batch's keys."""
        asked: set[tuple[str, str]] = set()
        pending = keys.wait_keys() | extra
        while pending - asked:
            batch = sorted(pending - asked)
            asked |= set(batch)
            wanted = set(batch)
            rows = await D.fetch(
                conn,
                f"SELECT {_PARKED} FROM parked WHERE wait_kind = {D.ANY} AND wait_key = {D.ANY} "
                "ORDER BY seq FOR UPDATE SKIP LOCKED",
                (dumps_text(sorted({k for k, _ in batch})), dumps_text(sorted({v for _, v in batch}))),
            )
            for r in rows:
                if (r.wait_kind, r.wait_key) not in wanted or r.seq in loaded.state.parked:
                    continue
                item = loaded.add_parked_row(r)
                if item is None:
                    continue
                keys.event_ids.add(item.event.event_id)
                keys.add(item.event)
            pending = keys.wait_keys() | extra

    async def applied_offsets(self, topics: tuple[str, ...]) -> dict[tuple[str, int], int]:
        """The next offset to apply of every partition of these topics that a batch ever touched (what
        PostgreSQL holds is the truth: it commits with the state)."""
        t = T.consumer_offsets
        async with self.engine.connect() as conn:
            rows = await conn.execute(
                select(t.c.topic, t.c.partition, t.c.next_offset).where(t.c.topic == _any(sorted(topics)))
            )
            return {(r.topic, r.partition): r.next_offset for r in rows}

    async def waiting_count(self) -> int:
        """How many events wait for a program or meeting."""
        async with self.engine.connect() as conn:
            return int(await conn.scalar(select(func.count()).select_from(T.parked)) or 0)

    async def waiting_oldest_s(self) -> float | None:
        """Seconds the oldest waiting event has waited (``parked_at``, PostgreSQL's clock); None: none waits."""
        async with self.engine.connect() as conn:
            age = await conn.scalar(text("SELECT extract(epoch FROM clock_timestamp() - min(parked_at)) FROM parked"))
        return None if age is None else float(age)

    async def database_time(self) -> datetime:
        """PostgreSQL's clock now (``clock_timestamp()``; ``parked.parked_at`` is ``now()`` of the same clock)."""
        async with self.engine.connect() as conn:
            value: datetime = await conn.scalar(text("SELECT clock_timestamp()"))
            return value

    # -------------------------------------------------------------------------------------- clock

    async def sweep_clock(self, limit: int = 1000) -> Report:
        """Move meetings whose next clock-driven change is due (publishing their status and tally)."""

        async def work(conn: AsyncConnection) -> Report:
            now = self.clock()
            m = T.meetings
            due = await conn.execute(
                select(m.c.path_id).where(m.c.next_change_at <= now).order_by(m.c.next_change_at).limit(limit)
            )
            path_ids = {r.path_id for r in due}
            report = Report()
            if not path_ids:
                return report
            loaded = Loaded()
            locked = await loaded.lock_paths(conn, path_ids, skip_locked=True)
            if not locked:
                return report
            await loaded.load_programs(conn, {p.program_id for p in loaded.state.paths.values()})
            ids = await loaded.load_meetings_where(conn, and_(m.c.path_id == _any(locked), m.c.next_change_at <= now))
            loaded.refresh(now, set(ids), set())
            await loaded.flush(conn)
            report.records = len(ids)
            report.status_changes = loaded.status_changes
            report.tallies = loaded.tallies_published
            report.outbox_rows = len(loaded.outbox)
            return report

        return await self._transaction(work)  # type: ignore[no-any-return]

    async def next_due(self) -> int | None:
        """The earliest pending clock-driven change (µs), if any."""
        async with self.engine.connect() as conn:
            value = await conn.scalar(
                select(T.meetings.c.next_change_at)
                .where(T.meetings.c.next_change_at.is_not(None))
                .order_by(T.meetings.c.next_change_at)
                .limit(1)
            )
        return value

    # -------------------------------------------------------------------------------- parked expiry

    async def expire_waiting(self, parked_before: datetime, limit: int = 1000) -> Report:
        """Reject events parked at or before ``parked_before`` (``unknown_program``/``unknown_meeting``);
        the caller decides when that is safe (consumers.horizon)."""

        async def work(conn: AsyncConnection) -> Report:
            p = T.parked
            rows = await conn.execute(
                select(p)
                .where(p.c.parked_at <= parked_before)
                .order_by(p.c.seq)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            loaded = Loaded()
            for r in rows:
                loaded.add_parked_row(r)
            report = Report()
            if not loaded.state.parked:
                return report
            now = self.clock()
            for outcome in expire_parked(loaded.state, lambda _item: True):
                report.outcomes[outcome.kind] += 1
                report.reasons[outcome.reason or ""] += 1
                loaded.outbox.append(
                    M.rejected_row(outcome.ref, outcome.event_id, outcome.reason or "", outcome.detail, now)
                )
            await loaded.flush(conn)
            report.outbox_rows = len(loaded.outbox)
            return report

        return await self._transaction(work)  # type: ignore[no-any-return]
