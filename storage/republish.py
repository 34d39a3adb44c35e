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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage import tables as T
from storage.rows import Loaded, _any
from storage.unit_of_work import MAX_ATTEMPTS, RETRYABLE_SQLSTATES

log = logging.getLogger("session_tally.storage")


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

    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            async with engine.begin() as conn:
                return await work(conn)
        except DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) not in RETRYABLE_SQLSTATES or attempt == MAX_ATTEMPTS:
                raise
            log.info("retrying a republish transaction after %s (attempt %d)", exc.orig, attempt)
            await asyncio.sleep(0.01 * attempt)
    raise AssertionError("unreachable")
