"""A PostgreSQL primary and a streaming standby on loopback, for tests that fail the database over.

Both are :class:`~session_tally.localsvc.postgres.LocalPostgres` clusters on free ports in one temporary
directory (readable by the ``postgres`` user). The standby is a ``pg_basebackup -R`` clone of the
primary, started as a hot standby; with ``synchronous=True`` (the default) the primary then lists it in
``synchronous_standby_names`` and commits with ``synchronous_commit=on``: a commit returns only once
the standby has flushed its WAL, so promoting the standby loses no committed transaction. With
asynchronous replication, the transactions committed on the primary in the last moments before it died
and not yet streamed are lost on promotion (``pg_stat_replication.replay_lag`` says how far behind the
standby is).

``url()`` is the libpq multi-host URL that clients use: ``target_session_attrs=read-write`` makes libpq
try each host in turn and keep the first that accepts writes, so clients find the promoted standby by
themselves once the primary is gone.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from session_tally.localsvc.postgres import DATABASE, PASSWORD, ROLE, LocalPostgres
from session_tally.localsvc.proc import HOST, ServiceError, free_port, say

SYNC_DEADLINE_S = 60.0


class PgStandbyPair:
    """A primary (``base/primary``) and a standby (``base/standby``) on free ports."""

    def __init__(self, base: Path, synchronous: bool = True) -> None:
        self.base = base
        self.synchronous = synchronous
        commit = {"synchronous_commit": "on"}  # over TUNING's "off": a commit waits for the standby's flush
        self.primary = LocalPostgres(base / "primary", port=free_port(), settings=commit)
        self.standby = LocalPostgres(
            base / "standby", port=free_port(), settings={**commit, "cluster_name": "'standby1'"}
        )

    def start(self) -> float:
        """Start the primary, clone and start the standby, make replication synchronous; seconds taken."""
        started = time.monotonic()
        self.primary.start()
        self.standby.clone_from(self.primary)
        self.standby.start()
        if self.synchronous:
            self.primary.sql("ALTER SYSTEM SET synchronous_standby_names = '*'")
            self.primary.sql("SELECT pg_reload_conf()")
            self.wait_sync()
        elapsed = time.monotonic() - started
        say(f"postgres pair: primary {HOST}:{self.primary.port}, standby {HOST}:{self.standby.port} in {elapsed:.1f} s")
        return elapsed

    def wait_sync(self, deadline_s: float = SYNC_DEADLINE_S) -> None:
        """Wait until the primary reports the standby as streaming and synchronous."""
        end = time.monotonic() + deadline_s
        state = ""
        while time.monotonic() < end:
            state = self.primary.sql("SELECT state || '/' || sync_state FROM pg_stat_replication")
            if state == "streaming/sync":
                return
            time.sleep(0.1)
        raise ServiceError(f"postgres pair: the standby is not a synchronous streaming replica ({state!r})")

    def url(self, driver: str = "postgresql+psycopg") -> str:
        """The multi-host URL of both servers (SQLAlchemy accepts it; with ``driver="postgresql"`` libpq
        and psycopg do too)."""
        hosts = f"{HOST},{HOST}"
        ports = f"{self.primary.port},{self.standby.port}"
        return f"{driver}://{ROLE}:{PASSWORD}@/{DATABASE}?host={hosts}&port={ports}&target_session_attrs=read-write"

    def fail_over(self) -> float:
        """Crash the primary (immediate stop) and promote the standby; the seconds from the crash to
        the promoted standby accepting writes."""
        started = time.monotonic()
        self.primary.kill()
        self.standby.promote()
        end = started + 60
        while self.standby.sql("SELECT pg_is_in_recovery()") != "f":
            if time.monotonic() > end:
                raise ServiceError("postgres pair: the standby is still in recovery 60 s after promotion")
            time.sleep(0.05)
        return time.monotonic() - started

    def stop(self) -> None:
        """Stop both at once (immediate: the data is thrown away with the directory)."""
        for server in (self.standby, self.primary):
            with contextlib.suppress(ServiceError):
                server.kill()


@contextlib.contextmanager
def standby_pair(synchronous: bool = True) -> Iterator[PgStandbyPair]:
    """A started :class:`PgStandbyPair` in a fresh temporary directory, stopped and removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="st-pg-"))
    base.chmod(0o755)  # the postgres user must reach its data directories below it
    pair = PgStandbyPair(base, synchronous)
    try:
        pair.start()
        yield pair
    finally:
        pair.stop()
        shutil.rmtree(base, ignore_errors=True)
