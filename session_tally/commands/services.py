"""`session-tally services up|down|status`: the Kafka broker and PostgreSQL the project runs against.

Without a working Docker engine (the usual case on CI and on the team's machines) ``up`` installs what
is missing and starts, idempotently and on 127.0.0.1 only:

- Apache Kafka (KRaft, one combined broker + controller) from Maven Central jars, on 127.0.0.1:9092;
- a PostgreSQL cluster of the project's own (Debian's ``postgresql`` package) on 127.0.0.1:54320,
  with role, password and database ``session_tally``.

Data, logs and pid files live in ``.services/`` of the current directory (or
``$SESSION_TALLY_SERVICES_DIR``); ``down`` stops exactly the processes ``up`` recorded there. When
``docker info`` answers, ``up``/``down`` run ``docker compose`` on the repository's
``docker-compose.yml`` instead. Either way ``up`` ends by printing, and writing to ``.services/env``,
the ``KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL`` to use. See docs/operations.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from session_tally.localsvc.proc import (
    HOST,
    ServiceError,
    file_lock,
    port_open,
    say,
    services_dir,
    wait_until,
)

KAFKA_PORT = 9092
PG_PORT = 54320
EXIT_NOT_RUNNING = 3
DOCKER_INFO_TIMEOUT_S = 5.0


def env_lines() -> list[str]:
    """What clients need: the same in the local and in the Docker mode (both publish these host ports)."""
    from session_tally.localsvc.postgres import DATABASE_URL

    return [f"KAFKA_BOOTSTRAP_SERVERS={HOST}:{KAFKA_PORT}", f"DATABASE_URL={DATABASE_URL}"]


def write_env_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"export {line}\n" for line in env_lines())
    path.write_text("# Written by `session-tally services up`. Load it with:  . .services/env\n" + body)


def docker_engine_available() -> bool:
    """True when a Docker engine answers ``docker info`` within a few seconds.

    ``SESSION_TALLY_SERVICES_MODE=local`` or ``=docker`` overrides the detection.
    """
    mode = os.environ.get("SESSION_TALLY_SERVICES_MODE", "auto")
    if mode in ("local", "docker"):
        return mode == "docker"
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(
            ["docker", "info"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=DOCKER_INFO_TIMEOUT_S,
            check=False,
        )
    except (subprocess.TimeoutExpired, OSError):
        return False
    return probe.returncode == 0


# --- Docker mode ------------------------------------------------------------------------------------


def _compose_command() -> list[str]:
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if plugin.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise ServiceError("docker: neither `docker compose` nor `docker-compose` is installed")


def _docker(action: str, env_file: Path) -> int:
    if not Path("docker-compose.yml").exists():
        raise ServiceError("docker: run this from the repository root (where docker-compose.yml is)")
    compose = _compose_command()
    if action == "up":
        say("docker engine found: starting kafka and postgres with docker compose")
        started = time.monotonic()
        wait = ["--wait"] if compose == ["docker", "compose"] else []
        if subprocess.run([*compose, "up", "-d", *wait, "kafka", "postgres"], check=False).returncode:
            raise ServiceError("docker: `compose up` failed (see its output above)")
        if not wait_until(lambda: port_open(KAFKA_PORT) and port_open(PG_PORT), 120.0, 0.5):
            raise ServiceError(f"docker: ports {KAFKA_PORT}/{PG_PORT} on {HOST} did not open within 120 s")
        say(f"docker: kafka and postgres up in {time.monotonic() - started:.1f} s")
        return _finish_up(env_file)
    if action == "down":
        return subprocess.run([*compose, "down"], check=False).returncode
    subprocess.run([*compose, "ps"], check=False)
    return _status_from_ports()


def _status_from_ports() -> int:
    kafka, pg = port_open(KAFKA_PORT), port_open(PG_PORT)
    print(f"kafka: {'answering' if kafka else 'not answering'} on {HOST}:{KAFKA_PORT}")
    print(f"postgres: {'answering' if pg else 'not answering'} on {HOST}:{PG_PORT}")
    return 0 if kafka and pg else EXIT_NOT_RUNNING


# --- local mode -------------------------------------------------------------------------------------


def _local(action: str, env_file: Path) -> int:
    from session_tally.localsvc.kafka import LocalKafka
    from session_tally.localsvc.postgres import LocalPostgres

    services = services_dir()
    services.mkdir(parents=True, exist_ok=True)
    kafka, postgres = LocalKafka(services), LocalPostgres(services)

    if action == "status":
        ok = True
        for name, service in (("kafka", kafka), ("postgres", postgres)):
            running, text = service.describe()
            ok = ok and running
            print(f"{name}: {text}")
        return 0 if ok else EXIT_NOT_RUNNING

    with file_lock(services / ".lock"):
        if action == "down":
            errors = []
            for stop in (kafka.stop, postgres.stop):  # try both even when one fails
                try:
                    stop()
                except ServiceError as exc:
                    errors.append(str(exc))
            if errors:
                raise ServiceError("\n".join(errors))
            return 0

        say(f"no Docker engine: running kafka and postgres as local processes (state in {services})")
        timings = {"kafka": kafka.start(), "postgres": postgres.start()}
        for name, seconds in timings.items():
            print(f"{name}: {'already running' if seconds is None else f'started in {seconds:.1f} s'}")
    return _finish_up(env_file)


def _finish_up(env_file: Path) -> int:
    write_env_file(env_file)
    say(f"wrote {env_file}; load it with:  . {os.path.relpath(env_file)}")
    for line in env_lines():
        print(line)
    return 0


# --- command ----------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    env_file = Path(args.env_file) if args.env_file else services_dir() / "env"
    try:
        if docker_engine_available():
            return _docker(args.action, env_file)
        return _local(args.action, env_file)
    except ServiceError as exc:
        print(f"session-tally services {args.action}: FAILED\n{exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 130


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "services",
        help="start, stop or show the local Kafka broker and PostgreSQL",
        description=(
            "up: install what is missing and start Kafka (127.0.0.1:9092) and PostgreSQL "
            "(127.0.0.1:54320), as local processes or, when a Docker engine answers, with docker compose; "
            "prints and writes KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL (.services/env). "
            "down: stop what up started. status: exit 0 when both run, 3 otherwise."
        ),
    )
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--env-file",
        metavar="PATH",
        help="where up writes the environment (default: .services/env, or $SESSION_TALLY_SERVICES_DIR/env)",
    )
    parser.set_defaults(func=run)
