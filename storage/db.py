"""Connections and migrations.

``DATABASE_URL`` is a SQLAlchemy URL for psycopg 3 (``postgresql+psycopg://user:pw@host:port/db``);
``SESSION_TALLY_DB_SCHEMA`` selects the schema (tests use one schema per test). ``upgrade`` is safe when
several workers start at once: it runs under a PostgreSQL advisory lock.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

MIGRATION_LOCK = 7_270_011  # pg advisory lock key held while migrating


def _url(url: str) -> str:
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


#: Bounds on the sessions of workers, so that a frozen worker (SIGSTOP, a VM paused, a GC stall) delays
#: the others by a bounded time: its locks (consumer_offsets rows, relay lanes, paths) go when PostgreSQL
#: ends its session after IDLE_IN_TRANSACTION_S idle inside a transaction (or a statement after
#: STATEMENT_S); a transaction that waits longer than LOCK_S for a lock fails and is retried (the unit
#: of work retries lock timeouts), so waiting never piles up. When the frozen worker resumes, its
#: transaction is gone: it commits nothing stale.
LOCK_S = 5
IDLE_IN_TRANSACTION_S = 20
STATEMENT_S = 60
SESSION_BOUNDS = (
    f"-clock_timeout={LOCK_S}s -cidle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_S}s "
    f"-cstatement_timeout={STATEMENT_S}s"
)
#: ... except in two cases, both seen with frozen workers: a session frozen in the middle of a statement
#: while PostgreSQL waits on its client (inside a COPY FROM STDIN, which storage/rows.py and
#: storage/outbox.py write batches with, or sending a result the client does not read: PostgreSQL handles
#: a statement timeout there only once the client sends again), and a session idle in its transaction
#: after a pipeline (psycopg runs ``executemany`` as one; PostgreSQL 15 does not arm
#: idle_in_transaction_session_timeout after a pipeline's Sync). Their locks would stay for as long as
#: the client is frozen. Every worker's health monitor ends such sessions (:func:`end_stalled_sessions`)
#: once they have waited on their client for STALLED_CLIENT_S (no worker leaves PostgreSQL waiting that
#: long; the monitor's round, 2 s, comes on top), so a frozen worker holds the others up no longer than
#: about IDLE_IN_TRANSACTION_S.
STALLED_CLIENT_S = 15

_STALLED = text(
    """
    SELECT a.pid, left(a.query, 80) AS query, pg_terminate_backend(a.pid) AS ended
    FROM pg_stat_activity a
    WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() AND a.usename = current_user
      AND a.state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')
      AND a.wait_event_type = 'Client'
      AND a.state_change < clock_timestamp() - make_interval(secs => :after_s)
      AND EXISTS (
        SELECT 1 FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE l.pid = a.pid AND l.granted AND n.nspname = current_schema()
          AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))
    """
)


async def end_stalled_sessions(engine: AsyncEngine, after_s: float = STALLED_CLIENT_S) -> list[tuple[int, str]]:
    """End the sessions that hold locks on this schema's tables, inside a statement or a transaction,
    whose server has been waiting on their client (wait event ClientRead or ClientWrite) for longer than
    ``after_s`` since their last change of state: a frozen client, which the session bounds miss in the
    cases above. Only sessions of the same database role are considered (PostgreSQL lets a role end its
    own sessions). Returns the (pid, statement) of the sessions ended."""
    async with engine.connect() as conn:
        rows = (await conn.execute(_STALLED, {"after_s": after_s})).all()
        await conn.commit()
    return [(r.pid, r.query) for r in rows if r.ended]


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error, whether SQLAlchemy wrapped it (``DBAPIError.orig``) or psycopg
    raised it directly (the COPY of storage/rows.py runs on the driver's connection); None otherwise."""
    import psycopg

    driver = getattr(exc, "orig", None) if not isinstance(exc, psycopg.Error) else exc
    return getattr(driver, "sqlstate", None) if isinstance(driver, psycopg.Error) else None


def is_driver_connection_error(exc: BaseException) -> bool:
    """psycopg's own error for a connection that failed without a SQLSTATE (lost, refused, closed)."""
    import psycopg

    return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError) and not exc.sqlstate


def _connect_args(schema: str, bounded: bool = False) -> dict[str, object]:
    # connect_timeout: a server that does not answer (down, partitioned) fails a connection attempt after
    # 10 s instead of the operating system's minutes; the caller retries.
    options = f"-csearch_path={schema}" + (" " + SESSION_BOUNDS if bounded else "")
    return {"options": options, "connect_timeout": 10}


def async_engine(url: str, schema: str = "public", pool_size: int = 5) -> AsyncEngine:
    """The workers' engine: sessions bounded by :data:`SESSION_BOUNDS`."""
    return create_async_engine(
        _url(url),
        connect_args=_connect_args(schema, bounded=True),
        pool_size=pool_size,
        max_overflow=2,
        pool_pre_ping=True,
    )


def sync_engine(url: str, schema: str = "public") -> Engine:
    return create_engine(_url(url), connect_args=_connect_args(schema), pool_pre_ping=True)


def upgrade(url: str, schema: str = "public", revision: str = "head") -> str:
    """Create the schema if needed and run the Alembic migrations up to ``revision``; returns the
    revision the database is at afterwards."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    engine = sync_engine(url, schema)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            try:
                conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
                conn.commit()
                cfg = Config(str(Path(__file__).with_name("alembic.ini")))
                cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
                current = MigrationContext.configure(conn).get_current_revision()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
                conn.commit()
    finally:
        engine.dispose()
    return current or "base"
