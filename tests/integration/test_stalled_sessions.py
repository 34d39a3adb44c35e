"""A frozen client can keep its locks for as long as it is frozen, past every session bound: PostgreSQL
handles a statement timeout inside a COPY FROM STDIN only once the client sends again (seen in CI: a
worker SIGSTOPped inside a batch's COPY held its consumer_offsets row locks, and the worker that took its
partitions over waited on them until the test gave up), and PostgreSQL 15 does not arm
idle_in_transaction_session_timeout after a pipeline (seen in the fault campaign: a worker frozen right
after psycopg's ``executemany`` stayed idle in its transaction for 95 s). ``storage.db.end_stalled_sessions``,
run by every worker's health monitor, ends exactly those sessions: waiting on their client for longer
than the bound, holding locks on the schema's tables. Sessions that hold nothing of the schema are left
alone.

Real PostgreSQL: the frozen clients are psycopg connections that stop sending."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import psycopg
import pytest

from storage.db import async_engine, end_stalled_sessions, upgrade

pytestmark = pytest.mark.integration

BOUND_S = 0.5  # the test's bound instead of STALLED_CLIENT_S (15 s)
IDLE_BOUND = "-cidle_in_transaction_session_timeout=2s"  # PostgreSQL's own, as the workers' sessions have


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


def test_postgres_leaves_a_session_idle_after_a_pipeline_unbounded(database_url: str, db_schema: str) -> None:
    """Why the monitor looks at idle sessions too: the server's own bound ends a session idle after a
    plain statement, and not one idle after a pipeline (psycopg's executemany)."""
    url = plain_url(database_url)
    watcher = psycopg.connect(url, autocommit=True)
    plain, piped = psycopg.connect(url, options=IDLE_BOUND), psycopg.connect(url, options=IDLE_BOUND)
    try:
        piped.cursor().executemany("SELECT %s", [(1,), (2,)])  # first: idle longer than plain
        plain.execute("SELECT 1")
        assert session_of(piped, watcher) == ("idle in transaction", "ClientRead")
        wait_for(lambda: session_of(plain, watcher) is None, 15, "PostgreSQL to end the idle plain session")
        # piped has been idle in its transaction longer than plain, past the 2 s bound
        assert session_of(piped, watcher) == ("idle in transaction", "ClientRead")
    finally:
        for conn in (plain, piped, watcher):
            conn.close()  # (no commit: plain's session is gone)


def test_only_frozen_clients_holding_the_schemas_locks_are_ended(database_url: str, db_schema: str) -> None:
    upgrade(database_url, db_schema)
    url = plain_url(database_url)
    other_schema = f"{db_schema}_other"
    watcher = psycopg.connect(url, autocommit=True)
    watcher.execute(f'CREATE SCHEMA IF NOT EXISTS "{other_schema}"')
    watcher.execute(f'CREATE TABLE IF NOT EXISTS "{other_schema}".t (x int)')
    conns = {
        name: psycopg.connect(url, options=f"-csearch_path={schema}")
        for name, schema in (("copying", db_schema), ("piped", db_schema), ("elsewhere", other_schema))
    }

    def reap(after_s: float = BOUND_S) -> list[tuple[int, str]]:
        async def once() -> list[tuple[int, str]]:
            engine = async_engine(database_url, db_schema)
            try:
                return await end_stalled_sessions(engine, after_s=after_s)
            finally:
                await engine.dispose()

        return asyncio.run(once())

    try:
        with contextlib.ExitStack() as frozen:
            # inside a COPY into one of the schema's tables, the client sending nothing more
            frozen.enter_context(conns["copying"].cursor().copy("COPY processed_events (event_key) FROM STDIN"))
            # idle in a transaction after a pipeline that wrote the schema's consumer_offsets
            conns["piped"].cursor().executemany(
                "INSERT INTO consumer_offsets (topic, partition, next_offset) VALUES (%s, %s, 0)",
                [("stalled-test", 0), ("stalled-test", 1)],
            )
            # inside a COPY into a table of another schema: none of this schema's locks
            frozen.enter_context(conns["elsewhere"].cursor().copy("COPY t (x) FROM STDIN"))
            expected = {"copying": ("active", "ClientRead"), "piped": ("idle in transaction", "ClientRead"),
                        "elsewhere": ("active", "ClientRead")}  # fmt: skip
            for name, state in expected.items():
                conn = conns[name]
                wait_for(lambda c=conn, s=state: session_of(c, watcher) == s, 10, f"{name} in {state}")
            assert reap(after_s=3600) == [], "nothing has waited an hour"

            ended: list[tuple[int, str]] = []

            def reaped_both() -> bool:
                ended.extend(reap())
                return len(ended) >= 2

            wait_for(reaped_both, 10, "the two frozen sessions of the schema to be ended")
            pids = {conns[n].info.backend_pid: n for n in ("copying", "piped")}
            assert sorted(pid for pid, _q in ended) == sorted(pids), ended
            assert {pids[pid]: q.split(" (")[0] for pid, q in ended} == {
                "copying": "COPY processed_events",
                "piped": "INSERT INTO consumer_offsets",
            }
            for name in pids.values():
                conn = conns[name]
                wait_for(lambda c=conn: session_of(c, watcher) is None, 10, f"the ended session {name} to go")
            # the other schema's stays, even well past the bound
            assert reap() == []
            assert session_of(conns["elsewhere"], watcher) == ("active", "ClientRead")
            frozen.pop_all()  # the COPY blocks of the frozen clients are abandoned, not finished
    finally:
        for conn in conns.values():
            conn.close()
        watcher.execute(f'DROP SCHEMA IF EXISTS "{other_schema}" CASCADE')
        watcher.close()
