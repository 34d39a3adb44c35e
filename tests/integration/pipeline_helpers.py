"""Drive the real pipeline from tests: publish input lines, run workers as processes, wait until the
pipeline is idle (every input offset applied, outbox and waiting events empty), read the snapshot."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, func, select, text

from producers.publisher import LINE_HEADER
from producers.routing import route
from session_tally.config import Settings
from storage import tables as T
from tests.integration.probes import (
    EndOffsets,
    FastProbe,
    Probe,
    check_rejected,
    check_versions,
    group_assignment,
    kafka_committed,
    libpq_url,
    read_raw_topic,
    wait_group,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]


async def publish_lines(bootstrap: str, settings: Settings, lines: Sequence[bytes]) -> dict[str, int]:
    """Publish lines as `session-tally publish` does (routing, keys, line header); returns end offsets
    per (topic, partition) as 'topic:partition' -> next offset."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    ends: dict[str, int] = {}
    try:
        await _send_lines(producer, settings, lines, range(1, len(lines) + 1), ends)
    finally:
        await producer.stop()
    return ends


async def _send_lines(
    producer: Any, settings: Settings, lines: Sequence[bytes], numbers: range, ends: dict[str, int]
) -> None:
    """Send lines ``numbers`` (1-based) routed and keyed as `session-tally publish` does, with the line
    header, and in its order across the two topics (an admin line is acknowledged before a later path
    line is sent); wait for the acks and raise ``ends`` ('topic:partition' -> next offset) accordingly."""
    futures = []
    admin_unacked = []
    for number in numbers:
        raw = lines[number - 1]
        if not raw.strip():
            continue
        kind, key = route(raw)
        topic = settings.topics.admin_events if kind == "admin" else settings.topics.path_events
        if kind == "path" and admin_unacked:
            await asyncio.gather(*admin_unacked)
            admin_unacked = []
        future = await producer.send(topic, raw, key=key, headers=[(LINE_HEADER, str(number).encode())])
        futures.append(future)
        if kind == "admin":
            admin_unacked.append(future)
    for md in await asyncio.gather(*futures):
        k = f"{md.topic}:{md.partition}"
        ends[k] = max(ends.get(k, 0), md.offset + 1)


def worker_env(settings: Settings, park_timeout_s: float = 2.0) -> dict[str, str]:
    env = dict(os.environ) | settings.as_env()
    env.update(SESSION_TALLY_PARK_TIMEOUT_S=str(park_timeout_s), PYTHONUNBUFFERED="1")
    return env


def start_worker(
    settings: Settings, clock: str | None, log_path: Path, extra: Sequence[str] = (), park_timeout_s: float = 2.0
) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "session_tally", "worker", "--http-port", "-1", "--log-level", "WARNING", *extra]
    if clock:
        args += ["--clock", clock]
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        args, cwd=ROOT, env=worker_env(settings, park_timeout_s), stdout=log, stderr=subprocess.STDOUT
    )


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
                text(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = :s AND table_name = 'outbox'"
                ),
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


def wait_idle(
    settings: Settings, ends: dict[str, int], timeout_s: float, procs: Sequence[subprocess.Popen[bytes]] = ()
) -> dict[str, Any]:
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
    raise AssertionError(
        f"pipeline not idle after {timeout_s}s: {state} (want offsets {ends}); parked: {parked_summary(settings)}"
    )


def parked_summary(settings: Settings) -> list[tuple[Any, ...]]:
    """What still waits (for a failure message): kind, key, parked_at, database now."""
    engine = create_engine(settings.database_url, connect_args={"options": f"-csearch_path={settings.db_schema}"})
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT wait_kind, wait_key, parked_at, now() FROM parked ORDER BY seq LIMIT 20"))
            return [tuple(r) for r in rows]
    finally:
        engine.dispose()


# --------------------------------------------------------------------------------------------------
# Additions for the equivalence, crash, privacy and operations tests. Everything waits on a condition
# with a deadline; nothing sleeps to synchronise.

READY_PREFIX = "session-tally worker ready: "


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    """A replay-shaped document without what legitimately differs between runs (tally version, as_of)."""
    for t in doc["tallies"]:
        t.pop("version", None)
        t.pop("as_of", None)
    return doc


def applied_fraction(offsets: dict[str, int], ends: dict[str, int]) -> float:
    """How much of the published input PostgreSQL has applied (0..1)."""
    total = sum(ends.values())
    done = sum(min(offsets.get(k, 0), v) for k, v in ends.items())
    return done / total if total else 1.0


def db_url_with_application_name(url: str, application_name: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}application_name={application_name}"


def start_worker_ex(
    settings: Settings,
    log_path: Path,
    *,
    clock: str | None = None,
    park_timeout_s: float = 2.0,
    batch_size: int | None = None,
    instance_id: str | None = None,
    http_port: int = -1,
    db_application_name: str | None = None,
    extra: Sequence[str] = (),
) -> subprocess.Popen[bytes]:
    """``start_worker`` with the options these tests need (batch size, static membership, HTTP port, a
    PostgreSQL application_name for the worker's sessions)."""
    args = [sys.executable, "-m", "session_tally", "worker", "--http-port", str(http_port), "--log-level", "WARNING"]
    if clock:
        args += ["--clock", clock]
    if batch_size is not None:
        args += ["--batch-size", str(batch_size)]
    if instance_id is not None:
        args += ["--instance-id", instance_id]
    args += list(extra)
    env = worker_env(settings, park_timeout_s)
    if db_application_name:
        env["DATABASE_URL"] = db_url_with_application_name(settings.database_url, db_application_name)
    log = open(log_path, "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(args, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def announced(line: str) -> str:
    """The message of a log line: the line itself (text logs), or its ``message`` (``--log-format json``)."""
    if line.startswith("{"):
        try:
            doc = json.loads(line)
        except ValueError:
            return line
        if isinstance(doc, dict) and isinstance(doc.get("message"), str):
            return doc["message"]
    return line


def ready_info(log_path: Path, proc: subprocess.Popen[bytes], timeout_s: float = 60.0, nth: int = 1) -> dict[str, Any]:
    """The dict a worker prints when it is ready (the ``nth`` such line of the log), waiting for it."""
    import ast

    def find() -> dict[str, Any] | None:
        found = [
            message[len(READY_PREFIX) :]
            for message in map(announced, log_path.read_text(errors="replace").splitlines())
            if message.startswith(READY_PREFIX)
        ]
        return ast.literal_eval(found[nth - 1]) if len(found) >= nth else None

    return wait_until(find, timeout_s, f"'{READY_PREFIX.strip()}' in {log_path.name}", interval_s=0.1, procs=[proc])  # type: ignore[no-any-return]


def metric_value(http: str, name: str) -> float:
    """The sum over all label sets of metric ``name`` on a worker's ``/metrics`` (0 when absent)."""
    import urllib.request

    with urllib.request.urlopen(http + "/metrics", timeout=5) as response:
        body = response.read().decode()
    total = 0.0
    for line in body.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, value = line.rsplit(" ", 1)
        if series.split("{", 1)[0] == name:
            total += float(value)
    return total


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (Linux /proc), e.g. a worker's `session-tally producers`."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def kill_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and its child processes (its producers), as a crash of the machine or the
    container would: no shutdown hook runs, nothing is flushed, committed, acknowledged or drained. The
    children go first: killed after the worker, they would get the SIGTERM the worker arranged for its
    death and drain gracefully."""
    if proc.poll() is None:
        for child in child_pids(proc.pid):
            try:
                os.kill(child, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.kill()
    proc.wait(10)


async def publish_lines_paced(
    bootstrap: str, settings: Settings, lines: Sequence[bytes], chunks: int, interval_s: float
) -> dict[str, int]:
    """Like ``publish_lines`` (same routing, keys and line headers, same order), but in ``chunks`` slices
    ``interval_s`` apart: a live stream that the workers consume while it is being published (load
    shaping, not synchronisation). Returns the end offsets like ``publish_lines``."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    ends: dict[str, int] = {}
    size = max(1, -(-len(lines) // chunks))
    try:
        for first in range(0, len(lines), size):
            if first:
                await asyncio.sleep(interval_s)
            await _send_lines(producer, settings, lines, range(first + 1, min(first + size, len(lines)) + 1), ends)
    finally:
        await producer.stop()
    return ends


class BackgroundPublish:
    """``publish_lines_paced`` in a thread, so that a test can act while the stream is being published."""

    def __init__(self, settings: Settings, lines: Sequence[bytes], chunks: int = 20, interval_s: float = 0.25) -> None:
        import threading

        self.total = sum(1 for raw in lines if raw.strip())
        self.ends: dict[str, int] | None = None
        self.error: BaseException | None = None

        def run() -> None:
            try:
                self.ends = asyncio.run(
                    publish_lines_paced(settings.kafka_bootstrap_servers, settings, lines, chunks, interval_s)
                )
            except BaseException as exc:  # reported by join()
                self.error = exc

        self.thread = threading.Thread(target=run, name="publish", daemon=True)
        self.thread.start()

    def join(self, timeout_s: float = 60.0) -> dict[str, int]:
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), f"publishing took longer than {timeout_s}s"
        if self.error is not None:
            raise self.error
        assert self.ends is not None
        return self.ends

    def applied(self, offsets: dict[str, int]) -> float:
        """Fraction of the whole stream applied (the input topics are fresh: offsets count records)."""
        return sum(offsets.values()) / self.total if self.total else 1.0


def assert_same_document(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Equality, with a readable first difference instead of a multi-thousand-line diff."""
    for part in ("tallies", "meetings", "rejected"):
        g, w = got[part], want[part]
        if g == w:
            continue
        key = {"tallies": "path_id", "meetings": "meeting_id"}.get(part)
        if key:
            gi, wi = {d[key]: d for d in g}, {d[key]: d for d in w}
            missing = sorted(set(wi) - set(gi))[:5]
            extra = sorted(set(gi) - set(wi))[:5]
            differ = [(k, gi[k], wi[k]) for k in sorted(set(gi) & set(wi)) if gi[k] != wi[k]][:3]
            raise AssertionError(
                f"{part} differ: missing {missing}, unexpected {extra}, first differences (got, want): {differ}"
            )
        gs = {json.dumps(d, sort_keys=True) for d in g}
        ws = {json.dumps(d, sort_keys=True) for d in w}
        raise AssertionError(
            f"rejected differ ({len(g)} vs {len(w)}): "
            f"only in pipeline {sorted(gs - ws)[:5]}, only in replay {sorted(ws - gs)[:5]}"
        )
    assert got == want


def run_to_end(
    settings: Settings,
    ends: dict[str, int],
    log_dir: Path,
    clock: str | None,
    timeout_s: float = 60.0,
    park_while_running_s: float = 120.0,
    finish_park_s: float = 0.5,
) -> None:
    """One worker applies the whole published input, with a park timeout longer than any stall (nothing
    waits in vain while the input is still being read); once every offset is applied and published (the
    end of the input: what still waits can no longer be released) it stops with SIGTERM (exit 0) and a
    finisher with a short park timeout rejects the leftovers with unknown_program/unknown_meeting, as
    ``replay`` does at the end of its file."""
    worker = start_worker_ex(settings, log_dir / "worker.log", clock=clock, park_timeout_s=park_while_running_s)
    try:
        with Probe(settings) as probe:
            wait_until(
                lambda: (s := probe.state())["outbox"] == 0 and applied_fraction(s["offsets"], ends) == 1.0,
                timeout_s,
                "every input offset applied and the outbox empty",
                interval_s=0.2,
                procs=[worker],
            )
        rc = stop_worker(worker)
        assert rc == 0, (log_dir / "worker.log").read_text(errors="replace")[-3000:]
        finisher = start_worker_ex(settings, log_dir / "finisher.log", clock=clock, park_timeout_s=finish_park_s)
        try:
            wait_idle(settings, ends, timeout_s=timeout_s, procs=[finisher])
        finally:
            rc = stop_worker(finisher)
        assert rc == 0, (log_dir / "finisher.log").read_text(errors="replace")[-3000:]
    finally:
        if worker.poll() is None:
            kill_worker(worker)


__all__ = [  # the probes are re-exported: tests import them from here as before
    "EndOffsets",
    "FastProbe",
    "Probe",
    "check_rejected",
    "check_versions",
    "group_assignment",
    "kafka_committed",
    "libpq_url",
    "read_raw_topic",
    "wait_group",
    "wait_until",
]
