"""Probes of the real services for the integration tests: the test's PostgreSQL schema polled fast, Kafka
topics read raw, consumer groups, and the checks on what the pipeline published (versions, rejections)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import create_engine, func, select, text

from session_tally.config import Settings
from storage import tables as T


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
      the relay it holds (two-key advisory locks of the schema's lane class, storage/outbox.py), its
      state, since when (``since``,
      ``age`` in seconds) and its last statement;
    - ``outbox_values(lane)``: the bytes of the rows still in the outbox;
    - ``wait_notify(timeout_s)``: block until a NOTIFY on ``channel`` (the batch transactions notify the
      relay when they commit outbox rows) or the timeout; ``application_of(pid)`` tells whose it was.
    """

    def __init__(self, settings: Settings, lanes: int, channel: str | None = None) -> None:
        import psycopg

        from storage.outbox import LANE_LOCK_CLASS

        self.schema = settings.db_schema
        self.conn = psycopg.connect(libpq_url(settings.database_url), autocommit=True)
        row = self.conn.execute(f"SELECT {LANE_LOCK_CLASS.format(schema='%s')}", (self.schema,)).fetchone()
        assert row is not None
        self.lane_class = int(row[0]) & 0xFFFFFFFF  # pg_locks shows the key as an unsigned oid
        self.lanes = (0, lanes - 1)
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
            SELECT a.pid, a.state, left(a.query, 80), a.state_change, a.wait_event,
                   extract(epoch FROM clock_timestamp() - a.state_change) AS age,
                   EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'relation'
                           AND l.relation = to_regclass(%(tbl)s)) AS batch,
                   (SELECT array_agg(l.objid::bigint) FROM pg_locks l WHERE l.pid = a.pid
                           AND l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                           AND l.classid::bigint = %(cls)s
                           AND l.objid::bigint BETWEEN %(lo)s AND %(hi)s) AS lanes
            FROM pg_stat_activity a
            WHERE a.application_name = %(app)s AND a.xact_start IS NOT NULL
            """,
            {
                "tbl": f'"{self.schema}".consumer_offsets',
                "cls": self.lane_class,
                "lo": self.lanes[0],
                "hi": self.lanes[1],
                "app": application_name,
            },
            prepare=True,
        ).fetchall()
        return [
            {
                "pid": pid,
                "state": s,
                "query": q,
                "since": since,
                "wait_event": w,
                "age": float(age),
                "batch": b,
                "lanes": lanes or [],
            }
            for pid, s, q, since, w, age, b, lanes in rows
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

    def all_sessions(self, application_name: str) -> list[dict[str, Any]]:
        """Every session of ``application_name``, in a transaction or not (pid, state, wait event, query, age)."""
        rows = self.conn.execute(
            "SELECT pid, state, wait_event, wait_event_type, left(query, 80), "
            "extract(epoch FROM clock_timestamp() - state_change), xact_start IS NOT NULL "
            "FROM pg_stat_activity WHERE application_name = %s",
            (application_name,),
        ).fetchall()
        return [
            {"pid": p, "state": st, "wait_event": w, "wait_type": wt, "query": q, "age": float(a or 0), "in_xact": x}
            for p, st, w, wt, q, a, x in rows
        ]

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
