"""Drive the real pipeline from tests: publish input lines, run workers as processes, wait until the
pipeline is idle (every input offset applied, outbox and waiting events empty), read the snapshot."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text

from producers.traffic import route
from session_tally.config import Settings
from session_tally.snapshot import LINE_HEADER
from storage import tables as T

ROOT = Path(__file__).resolve().parents[2]


async def publish_lines(bootstrap: str, settings: Settings, lines: Sequence[bytes]) -> dict[str, int]:
    """Publish lines as `session-tally publish` does (routing, keys, line header); returns end offsets
    per (topic, partition) as 'topic:partition' -> next offset."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    ends: dict[str, int] = {}
    try:
        futures = []
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            kind, key = route(raw)
            topic = settings.topics.admin_events if kind == "admin" else settings.topics.path_events
            futures.append(await producer.send(topic, raw, key=key, headers=[(LINE_HEADER, str(number).encode())]))
        for md in await asyncio.gather(*futures):
            k = f"{md.topic}:{md.partition}"
            ends[k] = max(ends.get(k, 0), md.offset + 1)
    finally:
        await producer.stop()
    return ends


def worker_env(settings: Settings, park_timeout_s: float = 2.0) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        KAFKA_BOOTSTRAP_SERVERS=settings.kafka_bootstrap_servers,
        DATABASE_URL=settings.database_url,
        SESSION_TALLY_DB_SCHEMA=settings.db_schema,
        SESSION_TALLY_GROUP_ID=settings.group_id,
        SESSION_TALLY_ADMIN_TOPIC=settings.topics.admin_events,
        SESSION_TALLY_PATH_TOPIC=settings.topics.path_events,
        SESSION_TALLY_TALLIES_TOPIC=settings.topics.path_tallies,
        SESSION_TALLY_STATUSES_TOPIC=settings.topics.meeting_statuses,
        SESSION_TALLY_REJECTED_TOPIC=settings.topics.rejected,
        SESSION_TALLY_TOPIC_PREFIX="",
        SESSION_TALLY_PARK_TIMEOUT_S=str(park_timeout_s),
        PYTHONUNBUFFERED="1",
    )
    return env


def start_worker(settings: Settings, clock: str | None, log_path: Path, extra: Sequence[str] = (), park_timeout_s: float = 2.0) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "session_tally", "worker", "--http-port", "-1", "--log-level", "WARNING", *extra]
    if clock:
        args += ["--clock", clock]
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(args, cwd=ROOT, env=worker_env(settings, park_timeout_s), stdout=log, stderr=subprocess.STDOUT)


def stop_worker(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(10)


def pipeline_state(settings: Settings) -> dict[str, Any]:
    engine = create_engine(settings.database_url, connect_args={"options": f"-csearch_path={settings.db_schema}"})
    try:
        with engine.connect() as conn:
            has_tables = conn.execute(
                text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :s AND table_name = 'outbox'"),
                {"s": settings.db_schema},
            ).scalar()
            if not has_tables:
                return {"offsets": {}, "outbox": -1, "parked": -1}
            offsets = {f"{r.topic}:{r.partition}": r.next_offset for r in conn.execute(select(T.consumer_offsets))}
            outbox = conn.execute(select(func.count()).select_from(T.outbox)).scalar()
            parked = conn.execute(select(func.count()).select_from(T.parked)).scalar()
    finally:
        engine.dispose()
    return {"offsets": offsets, "outbox": outbox, "parked": parked}


def wait_idle(settings: Settings, ends: dict[str, int], timeout_s: float, procs: Sequence[subprocess.Popen[bytes]] = ()) -> dict[str, Any]:
    """Wait (with a deadline) until every published offset is applied and nothing is left to publish."""
    deadline = time.monotonic() + timeout_s
    state: dict[str, Any] = {}
    while time.monotonic() < deadline:
        for p in procs:
            assert p.poll() is None, f"worker exited with {p.returncode}"
        state = pipeline_state(settings)
        applied = all(state["offsets"].get(k, 0) >= v for k, v in ends.items())
        if applied and state["outbox"] == 0 and state["parked"] == 0:
            return state
        time.sleep(0.2)
    raise AssertionError(f"pipeline not idle after {timeout_s}s: {state} (want offsets {ends})")
