"""A client frozen in the middle of a statement keeps its locks for as long as it is frozen: PostgreSQL
handles a statement timeout inside a COPY FROM STDIN only once the client sends again (seen in CI: a
worker SIGSTOPped inside a batch's COPY held its consumer_offsets row locks, and the worker that took its
partitions over waited on them until the test gave up). ``storage.db.end_stalled_sessions``, run by every
worker's health monitor, ends exactly those sessions: inside one statement for longer than the bound,
waiting on their client, holding locks on the schema's tables. Sessions that PostgreSQL bounds itself
(idle in a transaction) and sessions that hold nothing of the schema are left alone.

Real PostgreSQL: the frozen clients are psycopg connections that start a COPY and stop sending."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import psycopg
import pytest

from storage.db import async_engine, end_stalled_sessions, upgrade

pytestmark = pytest.mark.integration

BOUND_S = 0.5  # the test's bound instead of STALLED_CLIENT_S (20 s)


def plain_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def session_of(conn: psycopg.Connection[Any], watcher: psycopg.Connection[Any]) -> tuple[Any, ...] | None:
    """(state, wait_event) of ``conn``'s server session, None once it has ended."""
    return watcher.execute(
        "SELECT state, wait_event FROM pg_stat_activity WHERE pid = %s", (conn.info.backend_pid,)
    ).fetchone()


def wait_for(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.02)
    return value


def test_only_frozen_clients_holding_the_schemas_locks_are_ended(database_url: str, db_schema: str) -> None:
    upgrade(database_url, db_schema)
    url = plain_url(database_url)
    other_schema = f"{db_schema}_other"
    watcher = psycopg.connect(url, autocommit=True)
    watcher.execute(f'CREATE SCHEMA IF NOT EXISTS "{other_schema}"')
    watcher.execute(f'CREATE TABLE IF NOT EXISTS "{other_schema}".t (x int)')
    conns = {
        name: psycopg.connect(url, options=f"-csearch_path={schema}")
        for name, schema in (("ours", db_schema), ("elsewhere", other_schema), ("idle", db_schema))
    }

    def reap() -> list[tuple[int, str]]:
        async def once() -> list[tuple[int, str]]:
            engine = async_engine(database_url, db_schema)
            try:
                return await end_stalled_sessions(engine, after_s=BOUND_S)
            finally:
                await engine.dispose()

        return asyncio.run(once())

    try:
        with contextlib.ExitStack() as frozen:
            # inside a COPY into one of the schema's tables, the client sending nothing more
            frozen.enter_context(conns["ours"].cursor().copy("COPY processed_events (event_key) FROM STDIN"))
            # the same, into a table of another schema: none of this schema's locks
            frozen.enter_context(conns["elsewhere"].cursor().copy("COPY t (x) FROM STDIN"))
            # idle inside a transaction holding row locks: PostgreSQL's own idle_in_transaction bound
            conns["idle"].execute("SELECT * FROM consumer_offsets FOR UPDATE")
            for name in ("ours", "elsewhere"):
                conn = conns[name]
                wait_for(lambda c=conn: session_of(c, watcher) == ("active", "ClientRead"), 10, f"{name} in COPY")
            assert session_of(conns["idle"], watcher) == ("idle in transaction", "ClientRead")

            ended: list[tuple[int, str]] = []

            def reaped() -> bool:
                ended.extend(reap())
                return bool(ended)

            wait_for(reaped, 10, "the frozen COPY's session to be ended")
            assert [pid for pid, _q in ended] == [conns["ours"].info.backend_pid], ended
            assert "COPY processed_events" in ended[0][1]
            wait_for(lambda: session_of(conns["ours"], watcher) is None, 10, "the ended session to go")
            # the others stay, even well past the bound
            assert reap() == []
            assert session_of(conns["elsewhere"], watcher) == ("active", "ClientRead")
            assert session_of(conns["idle"], watcher) == ("idle in transaction", "ClientRead")
            frozen.pop_all()  # the COPY blocks of the frozen clients are abandoned, not finished
    finally:
        for conn in conns.values():
            conn.close()
        watcher.execute(f'DROP SCHEMA IF EXISTS "{other_schema}" CASCADE')
        watcher.close()
