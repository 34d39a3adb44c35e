"""A PostgreSQL cluster of the project's own, from Debian's packages, on 127.0.0.1:54320.

It is not the system's cluster (``pg_ctlcluster``): ``initdb`` makes it in ``S/pg/data`` (``S`` the
services directory) and ``pg_ctl`` runs it, as the ``postgres`` OS user when we are root (initdb refuses
root). Port 54320 keeps it apart from any system cluster on 5432. Its log is ``S/pg/postgres.log``, its
Unix socket directory ``S/pg/run`` (mode 0700, superuser ``postgres`` with trust auth there); over TCP
every role needs its password (scram-sha-256).

When the ``postgres`` user cannot reach ``S`` (a checkout inside a 0700 home directory), the cluster lives
in ``/var/lib/postgresql/session-tally/<hash of S>`` instead and ``S/pg-location`` records where.
"""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import re
import shutil
import subprocess
import time
from pathlib import Path

from session_tally.localsvc.proc import (
    HOST,
    ServiceError,
    apt_install,
    find_process,
    log_excerpt,
    pid_alive,
    port_open,
    read_pid,
    run,
    say,
)

PG_PORT = 54320
READY_DEADLINE_S = 60.0
ROLE = "session_tally"
PASSWORD = "session_tally"
DATABASE = "session_tally"
DATABASE_URL = f"postgresql+psycopg://{ROLE}:{PASSWORD}@{HOST}:{PG_PORT}/{DATABASE}"

# Tuned for a small test machine (2 cores). fsync stays on: a crash never corrupts the cluster.
# synchronous_commit=off may lose the last few hundred ms of commits on an OS crash (not on a
# process crash), which is acceptable for a development and test box and speeds commits up a lot.
TUNING = {
    "max_connections": "200",
    "shared_buffers": "'256MB'",
    "synchronous_commit": "off",
    "fsync": "on",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
    "log_min_messages": "warning",
}


def _find_bindir() -> Path | None:
    """The newest installed server's bin directory (``/usr/lib/postgresql/<major>/bin``)."""
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    if not found:
        return None

    def major(path: str) -> float:
        match = re.search(r"/postgresql/([\d.]+)/bin", path)
        return float(match.group(1)) if match else 0.0

    return Path(max(found, key=major)).parent


class LocalPostgres:
    """The cluster of ``services`` (a state directory). Another ``port`` and ``settings`` (server settings
    over :data:`TUNING`) give a private cluster, e.g. a primary or a standby of ``pg_replication.py``."""

    def __init__(self, services: Path, port: int = PG_PORT, settings: dict[str, str] | None = None) -> None:
        self.services = services
        self.port = port
        self.settings = dict(settings or {})
        self.root = self._locate_root()
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log = self.root / "postgres.log"
        self.as_postgres = os.geteuid() == 0  # initdb and the server refuse to run as root

    # --- where and as whom ------------------------------------------------------------------------

    def _locate_root(self) -> Path:
        recorded = self.services / "pg-location"
        if recorded.exists():
            return Path(recorded.read_text().strip())
        return self.services / "pg"

    def _prefix(self) -> list[str]:
        return ["runuser", "-u", "postgres", "--"] if self.as_postgres else []

    def _chown(self, path: Path) -> None:
        if self.as_postgres:
            entry = pwd.getpwnam("postgres")
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _reachable_by_postgres(self, path: Path) -> bool:
        if not self.as_postgres:
            return True
        check = subprocess.run([*self._prefix(), "test", "-w", str(path)], capture_output=True, check=False)
        return check.returncode == 0

    def _prepare_root(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._chown(self.root)
        if not self._reachable_by_postgres(self.root):
            digest = hashlib.sha256(str(self.services).encode()).hexdigest()[:12]
            fallback = Path("/var/lib/postgresql/session-tally") / digest
            say(f"postgres: the postgres user cannot reach {self.root}; using {fallback} instead")
            fallback.mkdir(parents=True, exist_ok=True)
            self._chown(fallback.parent)
            self._chown(fallback)
            (self.services / "pg-location").write_text(f"{fallback}\n")
            self.root = fallback
            self.data = fallback / "data"
            self.socket_dir = fallback / "run"
            self.log = fallback / "postgres.log"
        self.socket_dir.mkdir(exist_ok=True)
        self.socket_dir.chmod(0o700)
        self._chown(self.socket_dir)
        if len(str(self.socket_dir / f".s.PGSQL.{self.port}")) > 100:
            raise ServiceError(
                f"postgres: {self.socket_dir} is too long a path for a Unix socket; "
                "set SESSION_TALLY_SERVICES_DIR to a shorter directory"
            )

    # --- state ------------------------------------------------------------------------------------

    def bindir(self) -> Path | None:
        return _find_bindir()

    def pid(self) -> int | None:
        pid = read_pid(self.data / "postmaster.pid")
        return pid if pid is not None and pid_alive(pid) else None

    def ready(self) -> bool:
        bindir = self.bindir()
        if bindir is None:
            return False
        check = subprocess.run(
            [str(bindir / "pg_isready"), "-q", "-h", HOST, "-p", str(self.port), "-t", "2"],
            capture_output=True,
            check=False,
        )
        return check.returncode == 0

    def foreign(self) -> tuple[int, str] | None:
        """A cluster that `session-tally services` started from another directory: (pid, its data dir)."""
        found = find_process("postgres", "-D", "/pg/data")
        if found is None or found[0] == self.pid():
            return None
        args = found[1].split()
        data = args[args.index("-D") + 1] if "-D" in args[:-1] else ""
        return (found[0], data) if data and Path(data) != self.data else None

    def describe(self) -> tuple[bool, str]:
        pid = self.pid()
        if pid is None:
            other = self.foreign()
            if other is not None and self.ready():
                return True, f"running (pid {other[0]}) on {HOST}:{self.port}, data in {other[1]}, not here"
            if port_open(self.port):
                return False, f"not started from {self.data}, but something else listens on {HOST}:{self.port}"
            return False, "stopped"
        if self.ready():
            return True, f"running (pid {pid}) on {HOST}:{self.port}, data in {self.data}"
        return False, f"postmaster {pid} runs but does not accept connections on {HOST}:{self.port}"

    # --- install / create ---------------------------------------------------------------------------

    def _ensure_installed(self) -> Path:
        bindir = self.bindir()
        if bindir is None:
            apt_install(["postgresql"], "postgres: no /usr/lib/postgresql/*/bin/initdb")
            bindir = self.bindir()
        if bindir is None:
            raise ServiceError("postgres: initdb still missing after installing the postgresql package")
        return bindir

    def _initdb_once(self, bindir: Path) -> None:
        if (self.data / "PG_VERSION").exists():
            return
        if self.data.exists():  # a half-made cluster from an interrupted initdb: it is ours, redo it
            shutil.rmtree(self.data)
        say(f"postgres: creating a new cluster in {self.data} (initdb, {bindir.parent.name})")
        run(
            [
                *self._prefix(),
                str(bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
            ],
            what="postgres: initdb",
            cwd=self.root,
            timeout_s=300,
        )

    def _configure(self) -> None:
        """Our settings go to ``session_tally.conf`` (rewritten each start), included by postgresql.conf."""
        settings = {
            "listen_addresses": f"'{HOST}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.socket_dir}'",
            **TUNING,
            **self.settings,
        }
        conf = self.data / "session_tally.conf"
        conf.write_text(
            "# Written by `session-tally services up` on every start; edits are overwritten.\n"
            + "".join(f"{key} = {value}\n" for key, value in settings.items())
        )
        self._chown(conf)
        main_conf = self.data / "postgresql.conf"
        include = "include_if_exists = 'session_tally.conf'"
        if include not in main_conf.read_text():
            with main_conf.open("a") as handle:
                handle.write(f"\n# session-tally\n{include}\n")

    def _psql(self, bindir: Path, sql: str) -> str:
        result = run(
            [
                *self._prefix(),
                str(bindir / "psql"),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-tA",
                "-h",
                str(self.socket_dir),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
            what="postgres: psql",
            cwd=self.root,
            timeout_s=60,
        )
        return result.stdout.strip()

    def _ensure_role_and_database(self, bindir: Path) -> None:
        self._psql(
            bindir,
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{ROLE}') THEN "
            f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'; END IF; END $$;",
        )
        if self._psql(bindir, f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'") != "1":
            say(f"postgres: creating role {ROLE} and database {DATABASE}")
            self._psql(bindir, f"CREATE DATABASE {DATABASE} OWNER {ROLE}")

    # --- start / stop -------------------------------------------------------------------------------

    def start(self) -> float | None:
        """Start the cluster unless it runs; return the start-up time in seconds (None: was running)."""
        bindir = self._ensure_installed()
        if self.pid() is not None and self.ready():
            say(f"postgres: already running (pid {self.pid()}) on {HOST}:{self.port}")
            self._ensure_role_and_database(bindir)
            return None
        other = self.foreign() if self.pid() is None else None
        if other is not None and self.ready():
            say(
                f"postgres: {HOST}:{self.port} is served by the cluster that `session-tally services` started "
                f"in {other[1]} (pid {other[0]}); using it (`services down` here leaves it alone)"
            )
            return None
        if self.pid() is None and port_open(self.port):
            raise ServiceError(
                f"postgres: port {self.port} on {HOST} is taken by a server that `session-tally services` "
                f"did not start from {self.data}; stop it first"
            )
        self._prepare_root()
        self._initdb_once(bindir)
        self._configure()
        started = time.monotonic()
        if self.pid() is None:
            say(f"postgres: starting on {HOST}:{self.port} (log {self.log})")
            run(
                [
                    *self._prefix(),
                    str(bindir / "pg_ctl"),
                    "start",
                    "-W",
                    "-D",
                    str(self.data),
                    "-l",
                    str(self.log),
                ],
                what="postgres: pg_ctl start",
                cwd=self.root,
                timeout_s=60,
            )
        while not self.ready():
            elapsed = time.monotonic() - started
            if elapsed > 3 and self.pid() is None:
                raise ServiceError(
                    "postgres: the server exited during start-up\n" + log_excerpt("server log", self.log)
                )
            if elapsed > READY_DEADLINE_S:
                raise ServiceError(
                    f"postgres: not accepting connections after {READY_DEADLINE_S:.0f} s\n"
                    + log_excerpt("server log", self.log)
                )
            time.sleep(0.1)
        elapsed = time.monotonic() - started
        say(f"postgres: ready on {HOST}:{self.port} in {elapsed:.1f} s (pid {self.pid()})")
        self._ensure_role_and_database(bindir)
        return elapsed

    def sql(self, statement: str) -> str:
        """Run one statement as the superuser over the Unix socket; its output (unaligned, tuples only)."""
        return self._psql(self._ensure_installed(), statement)

    def clone_from(self, primary: LocalPostgres) -> None:
        """Make this (empty) cluster a streaming standby of ``primary``: ``pg_basebackup -R`` over the
        primary's Unix socket (replication connections of the superuser are trusted there). ``start()``
        then runs it as a hot standby; :meth:`promote` makes it a primary."""
        bindir = self._ensure_installed()
        self._prepare_root()
        if (self.data / "PG_VERSION").exists():
            return
        say(f"postgres: cloning {HOST}:{primary.port} into {self.data} (pg_basebackup -R)")
        run(
            [
                *self._prefix(),
                str(bindir / "pg_basebackup"),
                "-h",
                str(primary.socket_dir),
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-D",
                str(self.data),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
            ],
            what="postgres: pg_basebackup",
            cwd=self.root,
            timeout_s=300,
        )

    def promote(self) -> float:
        """``pg_ctl promote``: the standby ends recovery and accepts writes; the seconds it took."""
        bindir = self._ensure_installed()
        started = time.monotonic()
        run(
            [*self._prefix(), str(bindir / "pg_ctl"), "promote", "-D", str(self.data), "-w", "-t", "60"],
            what="postgres: pg_ctl promote",
            cwd=self.root,
            timeout_s=90,
        )
        elapsed = time.monotonic() - started
        say(f"postgres: {HOST}:{self.port} promoted in {elapsed:.1f} s")
        return elapsed

    def kill(self) -> None:
        """``pg_ctl stop -m immediate``: every server process quits at once, nothing is flushed or
        checkpointed (a crash as clients see it; the next start replays the WAL)."""
        bindir = self._ensure_installed()
        if self.pid() is None:
            return
        say(f"postgres: {HOST}:{self.port}: immediate stop (a crash)")
        run(
            [*self._prefix(), str(bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate", "-w"],
            what="postgres: pg_ctl stop -m immediate",
            cwd=self.root,
            timeout_s=60,
        )

    def stop(self) -> None:
        pid = self.pid()
        bindir = self.bindir()
        if pid is None or bindir is None:
            other = self.foreign()
            say(f"postgres: not started from {self.root}" + (f"; leaving pid {other[0]} alone" if other else ""))
            return
        say(f"postgres: stopping pid {pid} (pg_ctl stop -m fast)")
        started = time.monotonic()
        run(
            [
                *self._prefix(),
                str(bindir / "pg_ctl"),
                "stop",
                "-D",
                str(self.data),
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
            ],
            what="postgres: pg_ctl stop",
            cwd=self.root,
            timeout_s=90,
        )
        say(f"postgres: stopped in {time.monotonic() - started:.1f} s")
