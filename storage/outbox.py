"""The outbox: every read, write, delete and count of ``outbox`` (and ``outbox_dead``), and the NOTIFY
channel that tells relays rows were written.

Invariants:
- rows are written by the transactions whose state they reflect (:func:`write_rows`, from
  :meth:`storage.rows.Loaded.flush`), never on their own;
- rows of one lane (hash of the key) are read in ``id`` order by one relay at a time: a relay claims a
  lane with a transaction-scoped advisory lock of its schema (:func:`claim_lanes`), so the claim ends with its
  transaction (and with its session: a frozen relay's lanes go after ``idle_in_transaction_session_timeout``);
- a row leaves the outbox only once Kafka acknowledged it (:func:`delete_rows`), or, refused for good,
  into ``outbox_dead`` with the error (:func:`keep_dead`): nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from storage import driver as D
from storage import messages as M
from storage import tables as T
from storage.codec import dumps_text

# a lane's lock: the two-key advisory lock (LANE_LOCK_CLASS of the schema, lane), so that relays of
# different schemas of one database (tests, several deployments) never contend for each other's lanes
LANE_LOCK_CLASS = "hashtext('st_lanes:' || {schema})"
CHANNEL_PREFIX = "st_outbox_"
# the statement a writing transaction ends with: the channel of its own schema (see channel())
NOTIFY = f"SELECT pg_notify(left('{CHANNEL_PREFIX}' || current_schema(), 63), '')"


def channel(schema: str) -> str:
    """The NOTIFY channel of a schema (PostgreSQL cuts identifiers at 63 bytes; so does :data:`NOTIFY`)."""
    return (CHANNEL_PREFIX + schema)[:63]


async def write_rows(cur: Any, rows: Sequence[M.OutboxRow]) -> None:
    """COPY the rows in (psycopg cursor of the writing transaction), then NOTIFY the relays."""
    await D.copy_rows(
        cur,
        'COPY outbox ("lane", "topic", "key", "value", "headers") FROM STDIN',
        (
            (r.lane, r.topic, r.key, r.value, None if r.headers is None else dumps_text(M.store_headers(r.headers)))
            for r in rows
        ),
    )
    await cur.execute(NOTIFY)


async def claim_lanes(conn: AsyncConnection) -> list[int]:
    """The lanes with rows that no other relay holds, now held by this transaction (one statement: the
    locks are only tried, so their order does not matter). The caller reads the rows in a later
    statement, whose snapshot is taken after the locks: rows another relay published and deleted
    before this one got the lock are never seen."""
    rows = await D.fetch(
        conn,
        "SELECT lane FROM (SELECT DISTINCT lane FROM outbox) l "
        f"WHERE pg_try_advisory_xact_lock({LANE_LOCK_CLASS.format(schema='current_schema()')}, lane) ORDER BY lane",
    )
    return [r.lane for r in rows]


#: the relay's read (tests recognise a relay between its read and its delete by this statement's text)
READ_ROWS = (
    "SELECT id, lane, topic, key, value, headers, extract(epoch FROM clock_timestamp() - created_at)::float8 "
    "AS age_s FROM outbox WHERE lane = ANY(%s::int[]) ORDER BY id LIMIT %s"
)


async def read_rows(conn: AsyncConnection, lanes: list[int], limit: int) -> list[Any]:
    """Up to ``limit`` rows of these lanes in ``id`` order (``id, lane, topic, key, value, headers,
    age_s``: seconds since the row was written, by PostgreSQL's clock, so that the relay can measure commit
    -> publish latency without comparing two machines' clocks)."""
    return await D.fetch(conn, READ_ROWS, (_array(lanes), limit))


async def delete_rows(conn: AsyncConnection, ids: list[int]) -> None:
    if ids:
        await D.execute(conn, "DELETE FROM outbox WHERE id = ANY(%s::bigint[])", (_array(ids),))


def _array(values: list[int]) -> str:
    """An array literal of integers (psycopg adapts a list one value at a time: 90 times slower)."""
    return "{" + ",".join(map(str, values)) + "}"


async def replace_value(
    conn: AsyncConnection, row_id: int, value: bytes, key: bytes | None, stored_headers: dict[str, Any]
) -> None:
    """A row published again with another value, key and headers (stored form), in its place in its lane."""
    o = T.outbox
    await conn.execute(update(o).where(o.c.id == row_id).values(value=value, key=key, headers=stored_headers))


async def keep_dead(conn: AsyncConnection, row: Any, error: BaseException) -> None:
    """Move a row Kafka refused for good to ``outbox_dead`` with the error (the caller deletes it)."""
    await conn.execute(
        T.outbox_dead.insert().values(
            id=row.id, topic=row.topic, key=row.key, value=row.value, headers=row.headers, error=str(error)[:1000]
        )
    )


async def backlog(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(T.outbox)) or 0)


async def oldest_age_s(engine: AsyncEngine) -> float | None:
    """Seconds since the oldest row was written (None: the outbox is empty)."""
    async with engine.connect() as conn:
        age = await conn.scalar(
            text("SELECT extract(epoch FROM clock_timestamp() - created_at) FROM outbox ORDER BY id LIMIT 1")
        )
    return None if age is None else float(age)
