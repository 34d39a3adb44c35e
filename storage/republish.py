"""Publishing current tallies again (``session-tally tallies republish``): for a new dashboard consumer,
or after the compacted tallies topic was lost.

Invariants:
- a re-published tally is built by :meth:`storage.rows.Loaded.refresh` from the path's own counters,
  exactly like every other tally (one place for the rule), so its content equals the one last
  published; only ``version`` (one higher, written back to ``paths.tally_version``) and ``as_of`` (now)
  differ: versions only grow, and a consumer that keeps the highest version per path takes it;
- each chunk of paths is one transaction that locks its path rows (``FOR UPDATE``, in path_id order,
  as the unit of work does) and writes the messages to the outbox, which the workers' relays publish:
  it is safe with the workers running, and a chunk that fails leaves nothing behind;
- only paths of programs with session verification on have a tally, so only those are listed.

:func:`supersede` does the same for the tallies and statuses of records a relay handed to Kafka in a
round that then failed (see producers/relay.py): they may reach the topic after newer versions that
another relay published meanwhile, so each of their entities gets one more version, published after them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

import psycopg
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage import tables as T
from storage.db import sqlstate_of
from storage.messages import STATUSES, TALLIES
from storage.rows import Loaded, _any
from storage.unit_of_work import MAX_ATTEMPTS, retryable

log = logging.getLogger("session_tally.storage")
R = TypeVar("R")


async def paths_with_tallies(
    engine: AsyncEngine, path_ids: Sequence[str] = (), program_id: str | None = None
) -> list[str]:
    """The paths that have a tally (their program has session verification on), in path_id order; only
    those of ``path_ids`` and of ``program_id`` when given."""
    p, g = T.paths, T.programs
    stmt = (
        select(p.c.path_id)
        .join(g, g.c.program_id == p.c.program_id)
        .where(g.c.session_verification.is_(True))
        .order_by(p.c.path_id)
    )
    if path_ids:
        stmt = stmt.where(p.c.path_id == _any(sorted(set(path_ids))))
    if program_id is not None:
        stmt = stmt.where(p.c.program_id == program_id)
    async with engine.connect() as conn:
        return [r.path_id for r in await conn.execute(stmt)]


async def republish_tallies(engine: AsyncEngine, path_ids: Sequence[str], now: int) -> dict[str, int]:
    """Publish the current tally of these paths again, in one transaction (retried from the start on a
    deadlock, a lock timeout or a serialisation failure); returns path_id -> the new version."""

    async def work(conn: AsyncConnection) -> dict[str, int]:
        loaded = Loaded()
        locked = await loaded.lock_paths(conn, set(path_ids))
        await loaded.load_programs(conn, {p.program_id for p in loaded.state.paths.values()})
        loaded.refresh(now, set(), set(locked), again=frozenset(locked))
        await loaded.flush(conn)
        return {p: loaded.books[p].version for p in sorted(loaded.paths_refreshed)}

    return await _in_transaction(engine, work)


def superseded_entities(records: Iterable[tuple[str, bytes | None, bytes]]) -> tuple[set[str], set[str]]:
    """The paths (tallies) and meetings (statuses) that outbox records ``(topic, key, value)`` are about;
    rejections carry no version and are left out."""
    paths: set[str] = set()
    meetings: set[str] = set()
    for topic, key, value in records:
        if topic == TALLIES and key is not None:
            paths.add(key.decode())
        elif topic == STATUSES:
            meetings.add(json.loads(value)["meeting_id"])
    return paths, meetings


async def supersede(engine: AsyncEngine, paths: set[str], meetings: set[str], now: int) -> int:
    """Publish a new version of the current tally of ``paths`` and the current status of ``meetings``
    (evaluated at ``now``), in one transaction that locks their paths as the unit of work does; returns
    the number of outbox rows written. Entities that no longer have a tally or a status are skipped."""

    async def work(conn: AsyncConnection) -> int:
        loaded = Loaded()
        path_of: dict[str, str] = {}  # meeting -> its path, to lock the paths before the meetings are read
        if meetings:
            mt = T.meetings
            stmt = select(mt.c.meeting_id, mt.c.path_id).where(mt.c.meeting_id == _any(sorted(meetings)))
            path_of = {r.meeting_id: r.path_id for r in await conn.execute(stmt)}
        await loaded.lock_paths(conn, paths | set(path_of.values()))
        await loaded.load_programs(conn, {p.program_id for p in loaded.state.paths.values()})
        await loaded.load_meetings(conn, set(path_of))
        state = loaded.state
        known = {meeting for meeting, path in path_of.items() if path in state.paths and meeting in state.meetings}
        tallied = {p for p in paths if p in state.paths}
        loaded.refresh(now, known, tallied, again=frozenset(tallied), again_meetings=frozenset(known))
        await loaded.flush(conn)
        return len(loaded.outbox)

    return await _in_transaction(engine, work)


async def _in_transaction(engine: AsyncEngine, work: Callable[[AsyncConnection], Awaitable[R]]) -> R:
    """``work`` in one transaction, retried from the start on a deadlock, a lock timeout or a
    serialisation failure (up to the unit of work's MAX_ATTEMPTS)."""
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            async with engine.begin() as conn:
                return await work(conn)
        except (DBAPIError, psycopg.Error) as exc:  # psycopg's own: from the statements of storage/driver.py
            if not retryable(exc) or attempt == MAX_ATTEMPTS:
                raise
            log.info("retrying a republish transaction after %s (attempt %d)", sqlstate_of(exc), attempt)
            await asyncio.sleep(0.01 * attempt)
    raise AssertionError("unreachable")
