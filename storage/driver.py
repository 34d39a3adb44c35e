"""Statements of the hot path run on the psycopg connection that the SQLAlchemy connection holds.

Why: on the hot path (every input batch) SQLAlchemy Core's ``execute`` costs about 0.5 ms of CPU per
statement on top of psycopg's, and its result processing costs per row and column; a batch of live
traffic (about a hundred events, each on its own path) spent more of its CPU there than in the domain
(docs/performance.md, "Fewer SQLAlchemy layers"). The statements here are plain SQL with psycopg's
``%s`` parameters; everything else keeps SQLAlchemy Core.

Invariants:
- the driver connection is the one of the caller's SQLAlchemy connection: every statement here belongs
  to the caller's transaction (and fails with psycopg's own errors, which
  :func:`storage.db.sqlstate_of` and the retry loops read like SQLAlchemy's wrapped ones);
- rows come back as named tuples with the columns' names, like SQLAlchemy's rows (``r.path_id``), and
  with the same Python types (psycopg's loaders: ``numeric`` -> ``Decimal``, arrays -> lists,
  ``jsonb`` -> dicts and lists, ``bytea`` -> bytes);
- a list of values is one parameter, JSON-encoded by :func:`storage.codec.dumps_text` (see :data:`ANY`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from psycopg.rows import namedtuple_row
from sqlalchemy.ext.asyncio import AsyncConnection

#: ``= ANY(...)`` of one parameter holding a JSON array of text: PostgreSQL still uses the index
#: (ScalarArrayOp), and the values are encoded by orjson in one call instead of adapted one by one
ANY = "ANY(array(SELECT json_array_elements_text(%s::json)))"


def columns(table: Any, as_text: frozenset[str] = frozenset()) -> str:
    """Every column of a SQLAlchemy table, quoted, in its order: what ``select(table)`` reads
    (storage/tables.py stays the one place that names them); those in ``as_text`` are read as their
    text (a ``jsonb`` column the caller decodes itself)."""
    return ", ".join(f'"{c.name}"::text AS "{c.name}"' if c.name in as_text else f'"{c.name}"' for c in table.c)


async def driver(conn: AsyncConnection) -> Any:
    """The psycopg ``AsyncConnection`` under ``conn`` (same session, same transaction)."""
    raw = (await conn.get_raw_connection()).driver_connection
    assert raw is not None
    return raw


async def fetch(conn: AsyncConnection, sql: str, params: tuple[Any, ...] | None = None) -> list[Any]:
    """The rows of one statement, as named tuples."""
    raw = await driver(conn)
    async with raw.cursor(row_factory=namedtuple_row) as cur:
        await cur.execute(sql, params)
        return await cur.fetchall()  # type: ignore[no-any-return]


async def execute(conn: AsyncConnection, sql: str, params: tuple[Any, ...] | None = None) -> None:
    """One statement whose rows (if any) are not needed."""
    raw = await driver(conn)
    async with raw.cursor() as cur:
        await cur.execute(sql, params)


async def copy_rows(cur: Any, sql: str, rows: Iterable[Sequence[Any]]) -> None:
    """``COPY ... FROM STDIN`` of these rows on a psycopg cursor: each row formatted by psycopg's own
    (C) formatter, without a coroutine per row (``write_row``); the data goes out in the formatter's
    chunks, in order, and what is left with the end of the COPY."""
    async with cur.copy(sql) as copy:
        formatter = copy.formatter
        chunks = [chunk for row in rows if (chunk := formatter.write_row(row))]
        for chunk in chunks:
            await copy.write(chunk)
