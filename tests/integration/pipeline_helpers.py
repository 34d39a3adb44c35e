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


def wait_until(
    predicate: Any, timeout_s: float, what: str, interval_s: float = 0.05, procs: Sequence[subprocess.Popen[bytes]] = ()
) -> Any:
    """Call ``predicate()`` until it returns something truthy (returned); AssertionError at the deadline."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        for p in procs:
            assert p.poll() is None, f"worker exited with {p.returncode} while waiting for {what}"
        last = predicate()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last: {last!r})")
        time.sleep(interval_s)


def applied_fraction(offsets: dict[str, int], ends: dict[str, int]) -> float:
    """How much of the published input PostgreSQL has applied (0..1)."""
    total = sum(ends.values())
    done = sum(min(offsets.get(k, 0), v) for k, v in ends.items())
    return done / total if total else 1.0


class Probe:
    """A persistent connection to the test's schema, for polling fast (``pipeline_state`` opens an engine
    per call). ``application_name`` lets it find the sessions of workers started with
    ``db_application_name``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = create_engine(
            settings.database_url, connect_args={"options": f"-csearch_path={settings.db_schema}"}, pool_size=1
        )
        self.conn = self.engine.connect()

    def close(self) -> None:
        self.conn.close()
        self.engine.dispose()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _scalar(self, stmt: Any, params: dict[str, Any] | None = None) -> Any:
        try:
            return self.conn.execute(stmt, params or {}).scalar()
        finally:
            self.conn.rollback()

    def has_schema(self) -> bool:
        return bool(
            self._scalar(
                text(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = :s AND table_name = 'outbox'"
                ),
                {"s": self.settings.db_schema},
            )
        )

    def offsets(self) -> dict[str, int]:
        if not self.has_schema():
            return {}
        try:
            return {f"{r.topic}:{r.partition}": r.next_offset for r in self.conn.execute(select(T.consumer_offsets))}
        finally:
            self.conn.rollback()

    def count(self, table: Any) -> int:
        return int(self._scalar(select(func.count()).select_from(table)) or 0)

    def state(self) -> dict[str, Any]:
        if not self.has_schema():
            return {"offsets": {}, "outbox": -1, "parked": -1}
        return {"offsets": self.offsets(), "outbox": self.count(T.outbox), "parked": self.count(T.parked)}

    def open_transactions(self, application_name: str) -> list[str]:
        """The last statement of every session of ``application_name`` that is inside a transaction."""
        try:
            rows = self.conn.execute(
                text(
                    "SELECT query FROM pg_stat_activity WHERE application_name = :a AND xact_start IS NOT NULL "
                    "AND state IN ('active', 'idle in transaction')"
                ),
                {"a": application_name},
            )
            return [r.query for r in rows]
        finally:
            self.conn.rollback()


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


def ready_info(log_path: Path, proc: subprocess.Popen[bytes], timeout_s: float = 60.0, nth: int = 1) -> dict[str, Any]:
    """The dict a worker prints when it is ready (the ``nth`` such line of the log), waiting for it."""
    import ast

    def find() -> dict[str, Any] | None:
        found = [
            line[len(READY_PREFIX) :]
            for line in log_path.read_text(errors="replace").splitlines()
            if line.startswith(READY_PREFIX)
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


async def read_raw_topic(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[dict[str, Any]]:
    """Every record of ``topic`` up to its end offsets at call time, in offset order per partition:
    ``{"partition", "offset", "key", "value", "headers"}`` (raw bytes)."""
    from session_tally.snapshot import read_records

    records = sorted(await read_records(bootstrap, topic, timeout_s), key=lambda r: (r.partition, r.offset))
    return [
        {"partition": r.partition, "offset": r.offset, "key": r.key, "value": r.value, "headers": list(r.headers or ())}
        for r in records
    ]


async def kafka_committed(bootstrap: str, group_id: str) -> dict[str, int]:
    """The positions committed in Kafka by the consumer group ``group_id`` and by the groups derived from
    it (``<group_id>.<suffix>``, e.g. a worker's admin-topic group), as 'topic:partition' -> offset (the
    highest when two groups committed one partition)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    out: dict[str, int] = {}
    try:
        groups = [g[0] for g in await admin.list_consumer_groups()]
        for group in groups:
            if group != group_id and not group.startswith(group_id + "."):
                continue
            for tp, om in (await admin.list_consumer_group_offsets(group)).items():
                key = f"{tp.topic}:{tp.partition}"
                if om.offset >= 0:
                    out[key] = max(out.get(key, -1), om.offset)
    finally:
        await admin.close()
    return out


def check_versions(records: Sequence[dict[str, Any]], entity: str) -> dict[str, int]:
    """For the raw records of the tallies (``entity='path_id'``) or statuses (``'meeting_id'``) topic, in
    published order: a (entity, version) pair never carries two different contents, and a version below
    the highest one already published for its entity is only ever an exact re-publication of an earlier
    message (what a relay crash between send and delete produces). Returns counts for the report."""

    content: dict[tuple[str, int], bytes] = {}
    highest: dict[str, int] = {}
    repeats = 0
    for rec in records:
        doc = json.loads(rec["value"])
        key, version = doc[entity], doc["version"]
        assert rec["key"] == doc["path_id"].encode(), f"record keyed {rec['key']!r} carries path {doc['path_id']}"
        previous = content.get((key, version))
        if previous is not None:
            assert previous == rec["value"], (
                f"{entity} {key} version {version} published with two contents:\n{previous!r}\n{rec['value']!r}"
            )
            repeats += 1
            continue
        assert version > highest.get(key, 0), (
            f"{entity} {key}: new content at version {version} after version {highest.get(key)} was published"
        )
        content[(key, version)] = rec["value"]
        highest[key] = version
    return {"messages": len(records), "distinct": len(content), "repeats": repeats}


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


async def group_assignment(bootstrap: str, group_id: str) -> tuple[str, dict[str, list[str]]]:
    """The consumer group's state ('Stable', 'PreparingRebalance', ...) and, per member (its static
    instance id when it has one, else its member id), the 'topic:partition's assigned to it."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_consumer_groups([group_id])
    finally:
        await admin.close()
    group = responses[0].to_object()["groups"][0]
    members: dict[str, list[str]] = {}
    for m in group["members"]:
        name = m.get("group_instance_id") or m["member_id"]
        parts: list[str] = []
        if m["member_assignment"]:
            assignment = ConsumerProtocolMemberAssignment.decode(m["member_assignment"])
            parts = [f"{tp.topic}:{tp.partition}" for tp in assignment.partitions()]
        members[name] = parts
    return group["state"], members


def wait_group(
    bootstrap: str,
    group_id: str,
    members: int | None,
    timeout_s: float,
    procs: Sequence[subprocess.Popen[bytes]] = (),
) -> dict[str, list[str]]:
    """Wait until the group is Stable with ``members`` members (any number when None), each assigned at
    least one partition; returns the assignment."""

    def stable() -> dict[str, list[str]] | None:
        state, assigned = asyncio.run(group_assignment(bootstrap, group_id))
        ok = state == "Stable" and bool(assigned) and all(assigned.values())
        return assigned if ok and (members is None or len(assigned) == members) else None

    result: dict[str, list[str]] = wait_until(
        stable, timeout_s, f"group {group_id} stable with {members or 'its'} members", interval_s=0.25, procs=procs
    )
    return result


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


def check_rejected(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The raw records of the rejected topic: one input (topic, partition, offset) is only ever rejected
    with one content (a repeat is a re-publication of the same outbox row)."""
    content: dict[tuple[str, int, int], bytes] = {}
    repeats = 0
    for rec in records:
        src = json.loads(rec["value"])["source"]
        where = (src["topic"], src["partition"], src["offset"])
        previous = content.setdefault(where, rec["value"])
        if previous is not rec["value"]:
            assert previous == rec["value"], (
                f"input {where} rejected with two contents:\n{previous!r}\n{rec['value']!r}"
            )
            repeats += 1
    return {"messages": len(records), "distinct": len(content), "repeats": repeats}


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg://``) as a libpq connection string for psycopg."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgres") else url


class FastProbe:
    """Raw psycopg (autocommit) on the test's schema: sub-millisecond polls, for aiming kills.

    - ``offsets()``: the applied input offsets (``consumer_offsets``);
    - ``sessions(app)``: every session of ``application_name`` inside a transaction: whether it holds a
      lock on ``consumer_offsets`` (only an input-batch transaction takes one), which outbox lane locks of
      the relay it holds (advisory ``lane_lock_base + lane``), its state, since when (``since``,
      ``age`` in seconds) and its last statement;
    - ``outbox_values(lane)``: the bytes of the rows still in the outbox;
    - ``wait_notify(timeout_s)``: block until a NOTIFY on ``channel`` (the batch transactions notify the
      relay when they commit outbox rows) or the timeout; ``application_of(pid)`` tells whose it was.
    """

    def __init__(self, settings: Settings, lane_lock_base: int, lanes: int, channel: str | None = None) -> None:
        import psycopg

        self.schema = settings.db_schema
        self.conn = psycopg.connect(libpq_url(settings.database_url), autocommit=True)
        self.lanes = (lane_lock_base, lane_lock_base + lanes - 1)
        self.listen = None
        if channel:
            self.listen = psycopg.connect(libpq_url(settings.database_url), autocommit=True)
            self.listen.execute(f'LISTEN "{channel}"')

    def close(self) -> None:
        self.conn.close()
        if self.listen is not None:
            self.listen.close()

    def offsets(self) -> dict[str, int]:
        import psycopg

        try:
            rows = self.conn.execute(
                f'SELECT topic, partition, next_offset FROM "{self.schema}".consumer_offsets', prepare=True
            ).fetchall()
        except psycopg.errors.UndefinedTable:  # before the first worker migrated the schema
            return {}
        return {f"{t}:{p}": o for t, p, o in rows}

    def sessions(self, application_name: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            """
            SELECT a.pid, a.state, left(a.query, 80), a.state_change,
                   extract(epoch FROM clock_timestamp() - a.state_change) AS age,
                   EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'relation'
                           AND l.relation = to_regclass(%(tbl)s)) AS batch,
                   (SELECT array_agg(l.objid::bigint - %(lo)s) FROM pg_locks l WHERE l.pid = a.pid
                           AND l.locktype = 'advisory' AND l.granted AND l.classid = 0
                           AND l.objid::bigint BETWEEN %(lo)s AND %(hi)s) AS lanes
            FROM pg_stat_activity a
            WHERE a.application_name = %(app)s AND a.xact_start IS NOT NULL
            """,
            {
                "tbl": f'"{self.schema}".consumer_offsets',
                "lo": self.lanes[0],
                "hi": self.lanes[1],
                "app": application_name,
            },
            prepare=True,
        ).fetchall()
        return [
            {"pid": pid, "state": s, "query": q, "since": since, "age": float(age), "batch": b, "lanes": lanes or []}
            for pid, s, q, since, age, b, lanes in rows
        ]

    def outbox_values(self, lane: int | None = None) -> list[bytes]:
        where = "" if lane is None else f" WHERE lane = {int(lane)}"
        return [bytes(v) for (v,) in self.conn.execute(f'SELECT value FROM "{self.schema}".outbox{where}').fetchall()]

    def wait_notify(self, timeout_s: float) -> int | None:
        """The backend pid of the next NOTIFY on the channel, or None after ``timeout_s``."""
        assert self.listen is not None
        for note in self.listen.notifies(timeout=timeout_s, stop_after=1):
            return int(note.pid)
        return None

    def pids(self, application_name: str) -> set[int]:
        rows = self.conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,))
        return {int(r[0]) for r in rows}

    def application_of(self, pid: int) -> str | None:
        row = self.conn.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        return None if row is None else str(row[0])


class EndOffsets:
    """The summed end offsets of some topics, polled synchronously over one persistent consumer (for
    noticing, within a millisecond or two, that something was appended to them)."""

    def __init__(self, bootstrap: str, topics: Sequence[str]) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        from session_tally.snapshot import topic_partitions

        async def make() -> Any:
            consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
            await consumer.start()
            return consumer

        self.loop = asyncio.new_event_loop()
        self.consumer = self.loop.run_until_complete(make())
        self.tps = [
            TopicPartition(t, p)
            for t in topics
            for p in self.loop.run_until_complete(topic_partitions(bootstrap, t, 30))
        ]

    def total(self) -> int:
        return sum(self.loop.run_until_complete(self.consumer.end_offsets(self.tps)).values())

    def close(self) -> None:
        self.loop.run_until_complete(self.consumer.stop())
        self.loop.close()


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
