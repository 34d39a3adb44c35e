"""`session-tally bench pipeline`: the whole pipeline (Kafka -> worker -> PostgreSQL -> relay -> Kafka) measured
in one run, next to what Kafka and PostgreSQL alone can do on the same machine.

Phases (each prints its figures as it finishes; ``--skip-*`` leaves one out):

1. Kafka ceiling: generate N events (``session_tally.traffic``, the realistic mix, to a temporary file, not
   timed), publish them as `session-tally publish` does, then time a plain aiokafka consumer reading both
   input topics from the beginning and doing nothing else (msgs/s).
2. PostgreSQL ceiling: COPY, in transactions of ``--batch-size`` events, one ``processed_events`` row and one
   ``outbox`` row per event (the real tables, in a scratch schema) (rows/s).
3. Backlog throughput: with the N events already on the input topics and no worker running, start W worker
   processes (frozen clock: the stream's last event time) and wait until the pipeline is idle (every input
   offset applied in the run's ``consumer_offsets``, ``outbox`` empty). Windows, all from Kafka record
   timestamps and the wall clock of this machine:

   - end to end: the publishing span (first to last input record) plus the worker window, i.e. from the
     first event published to the last tally published without the time this tool spent measuring the
     ceilings in between (nothing of the pipeline ran then);
   - worker only: from the start of the first worker process to the last tally published;
   - after start-up: from every worker printing "ready" (polled) to the last tally published (no process
     start, imports or migrations; group joins and rebalances are still in).

   Repeated per count of ``--workers 1,2,3`` (each with its own schema, consumer group and output topics,
   same input). State growth: events/s per 20 % of the offsets applied (from ``consumer_offsets`` polled
   every 0.2 s), to see whether the cost per event stays flat as meetings accumulate.
4. Latency: a fresh set of topics and schema, the workers running on the wall clock and settled in their
   consumer group, the live traffic profile offered at ``--rate`` events/s (evenly paced) for
   ``--latency-seconds``. For every ``meeting.scheduled`` that changed its path's tally: Kafka timestamp of
   the tally written by the transaction that applied it (found by path and ``as_of``, which that tally
   shares with the meeting's first status message) minus the input record's Kafka timestamp; p50/p95/p99.
   Cross-checks: to the meeting's first status, and "first tally of the path at or after the input"
   (equal while latency is below the gap between two events of a path, too low beyond).
5. Naive baseline: the same worker with ``--batch-size 1`` (one transaction per event) on
   ``--naive-events`` events, measured like phase 3.
6. Peak RSS of every worker (``VmHWM`` of ``/proc/<pid>/status``, read just before stopping it).
7. Ratios: throughput (end to end) / Kafka ceiling, throughput / naive (both after start-up: the cost per
   event without the fixed start-up, which different event counts would dilute differently).

Every run uses its own topic prefix, consumer groups and PostgreSQL schemas (``bench<hex>``); they are deleted
at the end unless ``--keep``. Every child process is stopped in a ``finally`` (also on Ctrl-C, SIGTERM or an
error). Nothing here asserts a target: each is reported as "target met" / "below target".
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from producers.kafka_access import KafkaTarget, kafka_options
from session_tally.config import Settings, Topics

READY_PREFIX = "session-tally worker ready: "
SEGMENTS = 5  # state growth: events/s per 1/SEGMENTS of the offsets applied
POLL_S = 0.2

TARGET_EVENTS_PER_S = 10_000
TARGET_NAIVE_RATIO = 20.0
TARGET_P99_MS = 500.0
TARGET_P99_AT_RATE = 2000.0
TARGET_RSS_MB = 300.0
TARGET_RSS_EVENTS = 1_000_000

EXAMPLE = """\
examples:
  session-tally bench pipeline                                   # defaults: a few minutes on 2 cores
  session-tally bench pipeline --events 20000 --latency-seconds 5 --naive-events 1000
  session-tally bench pipeline --workers 1,2,3 --skip-latency --skip-naive   # scaling figures
  session-tally bench pipeline --events 1000000 --skip-latency --json bench-results/pipeline-1m.json

Needs Kafka and PostgreSQL (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL; `. .services/env`). Exit status 0 when
every phase ran (whatever the figures), 1 when a phase failed, 2 on bad options, 130 when interrupted.
"""


class BenchError(Exception):
    """A phase cannot go on (a worker died, the pipeline stalled, a service is missing)."""


# ---------------------------------------------------------------------------------------- registration


def register_pipeline(commands: Any) -> None:
    p = commands.add_parser(
        "pipeline",
        help="end-to-end throughput, latency, Kafka/PostgreSQL ceilings and a naive baseline",
        description=(
            "Measure the real pipeline (Kafka -> worker processes -> PostgreSQL -> relay -> Kafka) in one "
            "run: Kafka and PostgreSQL ceilings, backlog throughput (per worker count), latency at an "
            "offered rate, a batch-size-1 baseline, worker peak RSS and ratios; prints the machine, the "
            "versions and the command line with the figures."
        ),
        epilog=EXAMPLE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--events", type=int, default=200_000, metavar="N", help="backlog events (default 200000)")
    p.add_argument("--rate", type=float, default=2000.0, help="offered events/s of the latency phase (default 2000)")
    p.add_argument(
        "--latency-seconds", type=float, default=20.0, metavar="S", help="length of the latency phase (default 20)"
    )
    p.add_argument(
        "--workers",
        default="1",
        metavar="W[,W...]",
        help="worker processes; a list (1,2,3) repeats the backlog phase per count (default 1)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the traffic generator (default 1)")
    p.add_argument("--batch-size", type=int, default=5000, help="worker --batch-size (default 5000, as the worker)")
    p.add_argument(
        "--naive-events", type=int, default=5000, metavar="N", help="events of the batch-size-1 run (default 5000)"
    )
    p.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON to PATH")
    p.add_argument("--keep", action="store_true", help="keep the run's topics, schemas and worker logs")
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=120.0,
        metavar="S",
        help="fail a phase when nothing progresses for S seconds (default 120)",
    )
    p.add_argument("--skip-kafka-ceiling", action="store_true", help="skip phase 1's consume measurement")
    p.add_argument("--skip-pg-ceiling", action="store_true", help="skip phase 2")
    p.add_argument("--skip-backlog", action="store_true", help="skip phase 3 (throughput, scaling, growth)")
    p.add_argument("--skip-latency", action="store_true", help="skip phase 4")
    p.add_argument("--skip-naive", action="store_true", help="skip phase 5")
    p.set_defaults(func=run_pipeline)


def parse_workers(text: str) -> list[int]:
    counts = [int(part) for part in text.replace(" ", "").split(",") if part]
    if not counts or any(c < 1 for c in counts):
        raise ValueError(text)
    return counts


# ---------------------------------------------------------------------------------------- machine


def machine_details() -> dict[str, Any]:
    from session_tally.bench import machine_info

    info = machine_info()
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                info["ram_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    return info


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def kafka_version() -> str:
    """The broker's version, read from the classpath of a local broker process (Kafka does not report its
    version over the wire); "unknown" when the broker is not a local process."""
    pattern = re.compile(rb"kafka_2\.\d+-(\d+\.\d+\.\d+)\.jar|kafka-(\d+\.\d+\.\d+)/lib")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"java" not in cmdline[:200] or b"kafka" not in cmdline:
            continue
        match = pattern.search(cmdline)
        if match:
            return (match.group(1) or match.group(2)).decode()
    return "unknown"


def command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith("__main__.py"):
        return shlex.join([sys.executable, "-m", "session_tally", *argv[1:]])
    return shlex.join(argv)


# ---------------------------------------------------------------------------------------- small helpers


def say(message: str = "") -> None:
    print(message, flush=True)


class Progress:
    """A progress line on stderr about once a second (overwritten in place on a terminal)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.shown = False

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 1.0:
            return
        self.last = now
        self.shown = True
        if self.tty:
            print("\r\033[K" + text, end="", file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty and self.shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        self.shown = False


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return float(sorted_values[rank - 1])


def rate(count: float, seconds: float | None) -> float | None:
    if seconds is None or seconds <= 0:
        return None
    return count / seconds


def fmt_rate(value: float | None, unit: str = "events/s") -> str:
    return "n/a" if value is None else f"{value:,.0f} {unit}"


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("target met" if ok else "below target")


def with_prefix(prefix: str, outputs_prefix: str | None = None) -> Topics:
    """The five default topic names under ``prefix`` (outputs under ``outputs_prefix`` when given)."""
    names = Topics()
    out = prefix if outputs_prefix is None else outputs_prefix
    return Topics(
        admin_events=prefix + names.admin_events,
        path_events=prefix + names.path_events,
        path_tallies=out + names.path_tallies,
        meeting_statuses=out + names.meeting_statuses,
        rejected=out + names.rejected,
    )


# ---------------------------------------------------------------------------------------- Kafka


@dataclass
class TopicEdges:
    """Records, end offsets and the Kafka timestamps of the first and last record of a set of topics."""

    count: int = 0
    ends: dict[str, int] = field(default_factory=dict)  # "topic:partition" -> end offset
    first_ts: int | None = None  # ms
    last_ts: int | None = None  # ms


async def _topic_partitions(bootstrap: KafkaTarget, topic: str) -> list[int]:
    from session_tally.snapshot import topic_partitions

    return await topic_partitions(bootstrap, topic, 30.0)


async def topic_edges(bootstrap: KafkaTarget, topics: Sequence[str], timeout_s: float = 60.0) -> TopicEdges:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tps = [TopicPartition(t, p) for t in topics for p in await _topic_partitions(bootstrap, t)]
    consumer = AIOKafkaConsumer(**kafka_options(bootstrap), enable_auto_commit=False)
    await consumer.start()
    edges = TopicEdges()
    try:
        begin = await consumer.beginning_offsets(tps)
        end = await consumer.end_offsets(tps)
        edges.ends = {f"{tp.topic}:{tp.partition}": end[tp] for tp in tps}
        edges.count = sum(end[tp] - begin[tp] for tp in tps)
        filled = [tp for tp in tps if end[tp] > begin[tp]]
        if not filled:
            return edges
        consumer.assign(filled)
        deadline = time.monotonic() + timeout_s
        for where in ("first", "last"):
            for tp in filled:
                consumer.seek(tp, begin[tp] if where == "first" else end[tp] - 1)
            consumer.resume(*filled)
            wanted = set(filled)
            while wanted:
                if time.monotonic() > deadline:
                    raise BenchError(f"reading the {where} records of {', '.join(topics)} took over {timeout_s} s")
                batch = await consumer.getmany(*wanted, timeout_ms=500)
                for tp, records in batch.items():
                    if tp not in wanted or not records:
                        continue
                    ts = records[0].timestamp if where == "first" else records[-1].timestamp
                    if where == "first":
                        edges.first_ts = ts if edges.first_ts is None else min(edges.first_ts, ts)
                    else:
                        edges.last_ts = ts if edges.last_ts is None else max(edges.last_ts, ts)
                    wanted.discard(tp)
                    consumer.pause(tp)
        return edges
    finally:
        await consumer.stop()


async def consume_all(bootstrap: KafkaTarget, topics: Sequence[str], progress: Progress) -> tuple[int, int, float]:
    """Read every record of ``topics`` from the beginning with a plain consumer that does nothing else;
    returns (records, bytes, seconds), timed from the first fetch to the last record."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    tps = [TopicPartition(t, p) for t in topics for p in await _topic_partitions(bootstrap, t)]
    consumer = AIOKafkaConsumer(
        **kafka_options(bootstrap),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=2 * 1024 * 1024,  # as the worker's subscriber
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if end[tp] > 0}
        total = sum(end.values())
        count = size = 0
        started = time.perf_counter()
        while remaining:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                count += len(records)
                for r in records:
                    size += len(r.value or b"")
                if records and records[-1].offset + 1 >= end[tp]:
                    remaining.discard(tp)
            if not batch and time.perf_counter() - started > 120:
                raise BenchError("the plain consumer got nothing for 120 s")
            progress.show(f"  consume: {count:,}/{total:,} records")
        elapsed = time.perf_counter() - started
        progress.done()
        return count, size, elapsed
    finally:
        await consumer.stop()


async def read_records(bootstrap: KafkaTarget, topic: str) -> list[tuple[bytes | None, int, bytes]]:
    """Every record of ``topic`` up to its end offsets now: (key, timestamp ms, value)."""
    from session_tally.snapshot import read_records as read_all

    try:
        records = await read_all(bootstrap, topic, 120.0)
    except TimeoutError as exc:
        raise BenchError(str(exc)) from exc
    return [(r.key, r.timestamp, r.value or b"") for r in records]


def _family(group_ids: Sequence[str], group: str) -> list[str]:
    """``group`` and the groups a worker derives from it (e.g. ``<group>.admin``)."""
    return sorted(g for g in group_ids if g == group or g.startswith(group + "."))


async def wait_group_settled(
    bootstrap: KafkaTarget, group: str, topics: Sequence[str], timeout_s: float = 90.0
) -> None:
    """Wait until the workers' consumer groups (``group`` and the ones derived from it) are Stable, every
    partition of ``topics`` is assigned and the members have not changed for a second."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    wanted = {(t, p) for t in topics for p in await _topic_partitions(bootstrap, t)}
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap))
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        seen: Any = None
        since = time.monotonic()
        state: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                groups = _family([g[0] for g in await admin.list_consumer_groups()], group)
                described = [(await admin.describe_consumer_groups([g]))[0].groups[0] for g in groups]
                assigned = {
                    (topic, partition)
                    for d in described
                    for member in d[5]
                    for topic, partitions in ConsumerProtocolMemberAssignment.decode(member[4]).assignment
                    for partition in partitions
                }
                current = tuple((d[1], d[2], tuple(sorted(m[0] for m in d[5]))) for d in described)
                state = [(d[1], d[2], len(d[5])) for d in described] + [f"{len(assigned & wanted)}/{len(wanted)}"]
                stable = bool(described) and all(d[2] == "Stable" for d in described) and wanted <= assigned
                if current != seen:
                    seen, since = current, time.monotonic()
                elif stable and time.monotonic() - since >= 1.0:
                    return
            await asyncio.sleep(0.2)
        raise BenchError(f"consumer groups of {group} not settled after {timeout_s} s: {state}")
    finally:
        await admin.close()


async def wait_leaders(bootstrap: KafkaTarget, topics: Sequence[str], timeout_s: float = 30.0) -> None:
    """Wait until every partition of just-created ``topics`` has a leader (else the first sends are retried
    with NotLeaderForPartition, which would be timed)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(**kafka_options(bootstrap))
    await admin.start()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            described = await admin.describe_topics(list(topics))
            if all(
                t["error_code"] == 0 and t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"])
                for t in described
            ):
                break
            if time.monotonic() > deadline:
                raise BenchError(f"topics without a leader after {timeout_s} s: {', '.join(topics)}")
            await asyncio.sleep(0.1)
        partitions = [(t["topic"], p["partition"]) for t in described for p in t["partitions"]]
    finally:
        await admin.close()
    # a leader in the metadata may not serve yet: ListOffsets answers only once it does
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(**kafka_options(bootstrap), enable_auto_commit=False)
    await consumer.start()
    try:
        await asyncio.wait_for(consumer.end_offsets([TopicPartition(t, p) for t, p in partitions]), timeout_s)
    finally:
        await consumer.stop()


async def delete_kafka(bootstrap: KafkaTarget, topics: Sequence[str], groups: Sequence[str]) -> list[str]:
    """Delete the run's topics and consumer groups (with the groups derived from them, e.g.
    ``<group>.admin``); returns what could not be deleted."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.protocol.admin import DeleteGroupsRequest

    problems: list[str] = []
    admin = AIOKafkaAdminClient(**kafka_options(bootstrap), request_timeout_ms=30_000)
    await admin.start()
    try:
        if topics:
            existing = set(await admin.list_topics())
            present = [t for t in topics if t in existing]
            if present:
                try:
                    await admin.delete_topics(present)
                except Exception as exc:
                    problems.append(f"topics: {exc}")
        with contextlib.suppress(Exception):
            known = [g[0] for g in await admin.list_consumer_groups()]
            groups = sorted({*groups, *(g for group in groups for g in _family(known, group))})
        for group in groups:
            try:  # aiokafka has no public call for it: DeleteGroups to the group's coordinator
                node = await admin.find_coordinator(group)
                response = await admin._send_request(DeleteGroupsRequest([group]), node)
                for _group, code in response.results:
                    if code not in (0, 69):  # 69: GROUP_ID_NOT_FOUND (never committed)
                        problems.append(f"group {group}: error {code}")
            except Exception as exc:
                problems.append(f"group {group}: {exc}")
    finally:
        await admin.close()
    return problems


# ---------------------------------------------------------------------------------------- PostgreSQL


class Database:
    """One connection for polling a schema's progress, and the administration of the run's schemas."""

    def __init__(self, url: str) -> None:
        from storage.db import sync_engine

        self.url = url
        self.engine = sync_engine(url)

    def close(self) -> None:
        self.engine.dispose()

    def version(self) -> str:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar())

    def drop_schema(self, schema: str) -> None:
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))

    def progress(self, schema: str) -> tuple[dict[str, int], int]:
        """(next offset per "topic:partition", outbox rows) of ``schema``; ({}, -1) before the tables exist."""
        from sqlalchemy import text

        with self.engine.connect() as conn:
            if conn.execute(text("SELECT to_regclass(:t)"), {"t": f'"{schema}".outbox'}).scalar() is None:
                return {}, -1
            offsets = {
                f"{r.topic}:{r.partition}": int(r.next_offset)
                for r in conn.execute(text(f'SELECT topic, partition, next_offset FROM "{schema}".consumer_offsets'))
            }
            outbox = int(conn.execute(text(f'SELECT count(*) FROM "{schema}".outbox')).scalar() or 0)
            conn.rollback()
        return offsets, outbox


def applied_of(offsets: dict[str, int], ends: dict[str, int]) -> int:
    return sum(min(offsets.get(k, 0), v) for k, v in ends.items())


def pg_ceiling(url: str, schema: str, stream: Path, batch_size: int, seed: int, progress: Progress) -> dict[str, Any]:
    """COPY one processed_events row (a UUID key) and one outbox row (the event's bytes as value) per event
    of ``stream`` into the real tables of a scratch schema, one transaction per ``batch_size`` events."""
    import random

    from storage.db import sync_engine, upgrade

    upgrade(url, schema)
    rng = random.Random(seed)
    engine = sync_engine(url, schema)
    events = 0
    try:
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            started = time.perf_counter()
            with open(stream, "rb") as fh:
                while True:
                    values = [line.rstrip(b"\n") for _, line in zip(range(batch_size), fh, strict=False)]
                    if not values:
                        break
                    with raw.cursor() as cur:
                        with cur.copy("COPY processed_events (event_key) FROM STDIN") as copy:
                            for _ in values:
                                copy.write_row((str(uuid.UUID(int=rng.getrandbits(128), version=4)),))
                        with cur.copy("COPY outbox (lane, topic, key, value) FROM STDIN") as copy:
                            for i, value in enumerate(values):
                                copy.write_row(((events + i) % 16, "tallies", b"path-%d" % ((events + i) % 997), value))
                    raw.commit()
                    events += len(values)
                    progress.show(f"  COPY: {events:,} events ({2 * events:,} rows)")
            elapsed = time.perf_counter() - started
            progress.done()
    finally:
        engine.dispose()
    return {
        "events": events,
        "rows": 2 * events,
        "seconds": round(elapsed, 3),
        "rows_per_s": round(2 * events / elapsed),
        "events_per_s": round(events / elapsed),
        "transaction_events": batch_size,
    }


# ---------------------------------------------------------------------------------------- workers


class WorkerPool:
    """Worker processes of one phase; ``stop()`` is safe to call more than once."""

    def __init__(self, logdir: Path, label: str) -> None:
        self.logdir = logdir
        self.label = label
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.peak_rss_mb: list[float] = []
        self.exit_codes: list[int] = []

    def start(self, count: int, settings: Settings, batch_size: int, clock: str | None) -> float:
        """Start ``count`` workers; returns the wall-clock time (s) just before the first one started."""
        env = dict(os.environ) | settings.as_env() | {"PYTHONUNBUFFERED": "1"}
        args = [
            sys.executable, "-m", "session_tally", "worker",
            "--http-port", "-1", "--log-level", "WARNING", "--batch-size", str(batch_size),
        ]  # fmt: skip
        if clock:
            args += ["--clock", clock]
        started = time.time()
        for i in range(count):
            log_path = self.logdir / f"{self.label}-worker{i + 1}.log"
            with open(log_path, "ab") as log:
                self.procs.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT))
            self.logs.append(log_path)
        return started

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise BenchError(f"worker pid {proc.pid} exited with status {proc.returncode}; log {log}:\n{tail}")

    def all_ready(self) -> bool:
        """Every worker printed its "ready" line (started its subscriber, relay and clock)."""
        return all(READY_PREFIX in log.read_text(errors="replace") for log in self.logs)

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            if self.all_ready():
                return
            if time.monotonic() > deadline:
                raise BenchError(f"workers not ready after {timeout_s} s (logs in {self.logdir})")
            time.sleep(0.1)

    def read_peak_rss(self) -> list[float]:
        """VmHWM (peak resident set) of every running worker, in MB."""
        peaks = []
        for proc in self.procs:
            with contextlib.suppress(OSError, ValueError), open(f"/proc/{proc.pid}/status", encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        peaks.append(round(int(line.split()[1]) / 1024, 1))
                        break
        self.peak_rss_mb = peaks
        return peaks

    def stop(self, timeout_s: float = 30.0) -> list[int]:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        codes = []
        deadline = time.monotonic() + timeout_s
        for proc in self.procs:
            try:
                codes.append(proc.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait(10))
        self.exit_codes = codes
        return codes


# ---------------------------------------------------------------------------------------- the run


@dataclass
class Backlog:
    """What a backlog-type run (phase 3 per worker count, phase 5) measured."""

    label: str
    workers: int
    batch_size: int
    events: int
    offsets: int
    publish_span_s: float
    worker_start: float = 0.0  # wall clock, s
    applied_at: float | None = None  # wall clock when every offset was applied
    idle_at: float | None = None
    ready_at: float | None = None  # wall clock when every worker had printed "ready" (polled)
    first_tally_ts: int | None = None
    last_tally_ts: int | None = None
    tallies: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (wall clock, applied offsets)
    peak_rss_mb: list[float] = field(default_factory=list)

    @property
    def worker_window_s(self) -> float | None:
        return None if self.last_tally_ts is None else self.last_tally_ts / 1000 - self.worker_start

    @property
    def end_to_end_s(self) -> float | None:
        w = self.worker_window_s
        return None if w is None else self.publish_span_s + w

    @property
    def after_startup_s(self) -> float | None:
        """From every worker printing "ready" (polled) to the last tally: the window without process start,
        imports and migrations (group joins and rebalances are still in). None when there is no such
        window: a backlog small enough to be done before the workers were seen ready (consumption starts
        before the ready line, which follows the HTTP endpoint and the producers)."""
        if self.ready_at is None or self.last_tally_ts is None:
            return None
        window = self.last_tally_ts / 1000 - self.ready_at
        return window if window > 0 else None

    def segments(self) -> list[dict[str, Any]]:
        """Events/s per 1/SEGMENTS of the offsets applied, by interpolating the polled samples."""
        # from the first poll after every worker is ready (start-up and its first rebalances left out)
        samples = [s for s in self.samples if s[1] > 0 and (self.ready_at is None or s[0] >= self.ready_at)]
        if not samples or self.offsets <= 0:
            return []

        def crossing(target: float) -> float | None:
            prev = (self.worker_start, 0)
            for t, a in self.samples:
                if a >= target:
                    if a == prev[1]:
                        return t
                    return prev[0] + (t - prev[0]) * (target - prev[1]) / (a - prev[1])
                prev = (t, a)
            return None

        out = []
        start_t, start_a = samples[0]
        for k in range(1, SEGMENTS + 1):
            target = self.offsets * k / SEGMENTS
            end_t = crossing(target)
            lo = 100 * (k - 1) // SEGMENTS
            hi = 100 * k // SEGMENTS
            seg_rate = None
            if end_t is not None and target > start_a and end_t > start_t:
                # offsets approximate events: every input record is one offset
                seg_rate = round((target - start_a) / (end_t - start_t))
            out.append({"from_pct": lo, "to_pct": hi, "events_per_s": seg_rate})
            if end_t is not None and target > start_a:
                start_t, start_a = end_t, int(target)
        return out

    def as_json(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        def per_s(x: float | None) -> int | None:
            v = rate(self.events, x)
            return None if v is None else round(v)

        return {
            "workers": self.workers,
            "batch_size": self.batch_size,
            "events": self.events,
            "offsets": self.offsets,
            "publish_span_s": r(self.publish_span_s),
            "worker_window_s": r(self.worker_window_s),
            "end_to_end_s": r(self.end_to_end_s),
            "after_startup_s": r(self.after_startup_s),
            "applied_after_s": r(None if self.applied_at is None else self.applied_at - self.worker_start),
            "events_per_s": per_s(self.end_to_end_s),
            "worker_events_per_s": per_s(self.worker_window_s),
            "after_startup_events_per_s": per_s(self.after_startup_s),
            "ready_after_s": r(None if self.ready_at is None else self.ready_at - self.worker_start),
            "tallies_published": self.tallies,
            "segments": self.segments(),
            "timeline": [[round(t - self.worker_start, 2), a] for t, a in self.samples],
            "peak_rss_mb": self.peak_rss_mb,
        }


class PipelineBench:
    def __init__(self, args: argparse.Namespace, counts: list[int]) -> None:
        self.args = args
        self.counts = counts
        self.settings = Settings.from_env()
        self.bootstrap = self.settings.kafka  # bootstrap servers and TLS/SASL
        self.run_id = f"bench{uuid.uuid4().hex[:8]}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"session-tally-{self.run_id}-"))
        self.progress = Progress()
        self.pools: list[WorkerPool] = []
        self.topics: list[str] = []
        self.schemas: list[str] = []
        self.groups: list[str] = []
        self.db: Database | None = None
        self.results: dict[str, Any] = {}

    # ------------------------------------------------------------------ plumbing

    def settings_for(self, topics: Topics, schema: str, group: str) -> Settings:
        return Settings(
            kafka_bootstrap_servers=self.settings.kafka_bootstrap_servers,
            kafka_security=self.settings.kafka_security,
            replication_factor=self.settings.replication_factor,
            min_insync_replicas=self.settings.min_insync_replicas,
            database_url=self.settings.database_url,
            db_schema=schema,
            group_id=group,
            topics=topics,
        )

    def create_topics(self, topics: Topics, names: Sequence[str] | None = None) -> None:
        """Create ``names`` of ``topics`` (default: all five) as `session-tally topics create` would."""
        from session_tally.topics import reconcile_topics, wanted_topics

        wanted = [*topics.inputs, *topics.outputs] if names is None else list(names)
        for name in wanted:
            if name not in self.topics:
                self.topics.append(name)
        specs = [spec for spec in wanted_topics(topics, self.settings.input_partitions) if spec.name in wanted]
        report = asyncio.run(reconcile_topics(self.bootstrap, specs))
        if report.mismatches:
            raise BenchError("; ".join(report.mismatches))
        asyncio.run(wait_leaders(self.bootstrap, wanted))

    def pool(self, label: str) -> WorkerPool:
        pool = WorkerPool(self.workdir, label)
        self.pools.append(pool)
        return pool

    def stop_pool(self, pool: WorkerPool) -> None:
        pool.read_peak_rss()
        codes = pool.stop()
        if any(codes):
            say(f"  warning: worker exit statuses {codes} (logs in {pool.logdir})")

    def cleanup(self) -> None:
        for pool in self.pools:
            pool.stop()
        if self.args.keep:
            say(
                f"kept: topics {self.run_id}.*, schemas {', '.join(self.schemas) or '-'}, "
                f"groups {', '.join(self.groups) or '-'}, worker logs in {self.workdir}"
            )
        else:
            problems: list[str] = []
            try:
                problems += asyncio.run(delete_kafka(self.bootstrap, self.topics, self.groups))
            except Exception as exc:
                problems.append(f"kafka: {exc}")
            if self.db is not None:
                for schema in self.schemas:
                    try:
                        self.db.drop_schema(schema)
                    except Exception as exc:
                        problems.append(f"schema {schema}: {exc}")
            shutil.rmtree(self.workdir, ignore_errors=True)
            say(
                f"cleaned up: {len(self.topics)} topics, {len(self.schemas)} schemas, the consumer groups of "
                f"{len(self.groups)} worker set(s)" + (f"; could not delete: {'; '.join(problems)}" if problems else "")
            )
        if self.db is not None:
            self.db.close()

    # ------------------------------------------------------------------ phases

    def header(self) -> None:
        info = machine_details()
        assert self.db is not None
        versions = {
            "python": info["python"],
            "kafka": kafka_version(),
            "postgresql": self.db.version(),
            "aiokafka": _dist_version("aiokafka"),
            "faststream": _dist_version("faststream"),
        }
        self.results.update(
            benchmark="pipeline",
            command=command_line(),
            started_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            run_id=self.run_id,
            machine=info,
            versions=versions,
            load_average={"start": load_average()},
            options={
                "events": self.args.events,
                "rate": self.args.rate,
                "latency_seconds": self.args.latency_seconds,
                "workers": self.counts,
                "seed": self.args.seed,
                "batch_size": self.args.batch_size,
                "naive_events": self.args.naive_events,
            },
        )
        say(f"command: {self.results['command']}")
        say(
            f"machine: {info['cpu']}, {info['cores']} cores, {info.get('ram_gb', '?')} GB RAM; "
            f"{info['platform']}; load average {' '.join(map(str, load_average()))}"
        )
        say(
            f"versions: {versions['python']}, Kafka {versions['kafka']}, PostgreSQL {versions['postgresql']}, "
            f"aiokafka {versions['aiokafka']}, faststream {versions['faststream']}"
        )
        say(f"run: {self.run_id} (topics {self.run_id}.*, schemas {self.run_id}_*); kafka {self.bootstrap}")

    def generate(self, events: int, name: str) -> tuple[Path, str, int]:
        """Write a generated stream to the work dir; returns (file, frozen clock = last event time, count)."""
        from session_tally.bench import _timestamp, generate_file

        path = self.workdir / name
        written, last_at, seconds = generate_file(path, events, self.args.seed, False)
        say(f"  generated {written:,} events ({path.stat().st_size / 1e6:,.1f} MB) in {seconds:.1f} s (not timed)")
        return path, _timestamp(last_at), written

    def publish(self, path: Path, topics: Topics) -> tuple[TopicEdges, float]:
        from session_tally.cmd_publish import file_items, publish_records

        started = time.perf_counter()

        def show(sent: int) -> None:
            self.progress.show(f"  publish: {sent:,} sent, {sent / (time.perf_counter() - started):,.0f} msg/s")

        with open(path, "rb") as fh:
            counts = asyncio.run(publish_records(self.bootstrap, topics, file_items(fh), show))
        seconds = time.perf_counter() - started
        self.progress.done()
        failed = {k: v for k, v in counts.items() if k.startswith("failed:")}
        if failed:
            raise BenchError(f"some events could not be published: {failed}")
        edges = asyncio.run(topic_edges(self.bootstrap, topics.inputs))
        return edges, seconds

    def phase_kafka(self, stream: Path, topics: Topics, events: int) -> TopicEdges:
        say(f"\n== 1. Kafka ceiling: publish {events:,} events, then read them with a plain consumer")
        self.create_topics(topics, topics.inputs)
        edges, seconds = self.publish(stream, topics)
        span = ((edges.last_ts or 0) - (edges.first_ts or 0)) / 1000
        result: dict[str, Any] = {
            "messages": edges.count,
            "publish_s": round(seconds, 3),
            "publish_msgs_per_s": round(edges.count / seconds),
            "publish_span_s": round(span, 3),
        }
        say(
            f"  published {edges.count:,} messages in {seconds:.1f} s = {fmt_rate(edges.count / seconds, 'msg/s')} "
            f"(idempotent, acks=all; Kafka timestamps span {span:.1f} s)"
        )
        if not self.args.skip_kafka_ceiling:
            count, size, secs = asyncio.run(consume_all(self.bootstrap, topics.inputs, self.progress))
            result.update(
                consumed=count,
                consume_s=round(secs, 3),
                consume_msgs_per_s=round(count / secs),
                consume_mb_per_s=round(size / secs / 1e6, 1),
            )
            say(
                f"  plain consumer: {count:,} messages in {secs:.2f} s = {fmt_rate(count / secs, 'msg/s')} "
                f"({size / secs / 1e6:,.1f} MB/s)"
            )
        self.results["kafka_ceiling"] = result
        return edges

    def phase_pg(self, stream: Path, events: int) -> None:
        say(f"\n== 2. PostgreSQL ceiling: COPY {events:,} processed_events + {events:,} outbox rows")
        schema = f"{self.run_id}_pg"
        self.schemas.append(schema)
        result = pg_ceiling(
            self.settings.database_url, schema, stream, self.args.batch_size, self.args.seed, self.progress
        )
        assert self.db is not None
        self.db.drop_schema(schema)
        self.results["pg_ceiling"] = result
        say(
            f"  {result['rows']:,} rows in {result['seconds']:.2f} s = {fmt_rate(result['rows_per_s'], 'rows/s')} "
            f"({fmt_rate(result['events_per_s'])} at 2 rows per event, "
            f"one transaction per {self.args.batch_size:,} events)"
        )

    def drain(self, run: Backlog, settings: Settings, clock: str | None, ends: dict[str, int]) -> Backlog:
        """Start the workers on a published backlog, wait until idle, stop them; fills ``run``."""
        assert self.db is not None
        self.groups.append(settings.group_id)
        self.schemas.append(settings.db_schema)
        pool = self.pool(run.label)
        run.worker_start = pool.start(run.workers, settings, run.batch_size, clock)
        last_change, last = time.monotonic(), (-1, -1)
        try:
            while True:
                pool.check_alive()
                offsets, outbox = self.db.progress(settings.db_schema)
                now = time.time()
                applied = applied_of(offsets, ends)
                run.samples.append((now, applied))
                if run.ready_at is None and pool.all_ready():
                    run.ready_at = now
                if applied >= run.offsets and run.applied_at is None:
                    run.applied_at = now
                if run.applied_at is not None and outbox == 0:
                    run.idle_at = now
                    break
                if (applied, outbox) != last:
                    last, last_change = (applied, outbox), time.monotonic()
                elif time.monotonic() - last_change > self.args.stall_timeout:
                    raise BenchError(
                        f"{run.label}: no progress for {self.args.stall_timeout:.0f} s "
                        f"(applied {applied:,}/{run.offsets:,}, outbox {outbox:,}; logs in {pool.logdir})"
                    )
                elapsed = now - run.worker_start
                self.progress.show(
                    f"  {run.label}: applied {applied:,}/{run.offsets:,} ({applied / max(run.offsets, 1):.0%}), "
                    f"{applied / max(elapsed, 1e-9):,.0f} events/s, outbox {max(outbox, 0):,}, {elapsed:.0f} s"
                )
                time.sleep(POLL_S)
        finally:
            self.progress.done()
            if pool.procs:
                self.stop_pool(pool)
        run.peak_rss_mb = pool.peak_rss_mb
        tallies = asyncio.run(topic_edges(self.bootstrap, [settings.topics.path_tallies]))
        run.first_tally_ts, run.last_tally_ts, run.tallies = tallies.first_ts, tallies.last_ts, tallies.count
        if not tallies.count:  # a stream that changed no tally: the last output of any kind ends the window
            outputs = asyncio.run(topic_edges(self.bootstrap, settings.topics.outputs))
            run.last_tally_ts = outputs.last_ts
            say("  note: no tally was published; the windows end at the last output message instead")
        return run

    def describe_backlog(self, run: Backlog) -> None:
        j = run.as_json()
        say(
            f"  {run.events:,} events, {run.tallies:,} tallies; end to end {fmt_rate(j['events_per_s'])} "
            f"({j['end_to_end_s']} s = publish {j['publish_span_s']} s + workers {j['worker_window_s']} s); "
            f"worker only {fmt_rate(j['worker_events_per_s'])}; after start-up (workers ready to last tally) "
            f"{fmt_rate(j['after_startup_events_per_s'])}; peak RSS "
            f"{', '.join(f'{m:,.0f} MB' for m in run.peak_rss_mb)}"
        )
        segs = j["segments"]
        if segs:
            say(
                "  state growth (events/s per 20% of offsets applied): "
                + ", ".join(f"{s['to_pct']}%: {fmt_rate(s['events_per_s'], '')}".rstrip() for s in segs)
            )

    def phase_backlog(self, inputs: Topics, edges: TopicEdges, events: int, clock: str) -> None:
        say(
            f"\n== 3. backlog throughput: {events:,} events waiting, worker count(s) {self.counts}, "
            f"clock frozen at {clock}"
        )
        span = ((edges.last_ts or 0) - (edges.first_ts or 0)) / 1000
        runs = []
        for count in self.counts:
            topics = with_prefix(f"{self.run_id}.", f"{self.run_id}.w{count}.")
            self.create_topics(topics, topics.outputs)
            settings = self.settings_for(topics, f"{self.run_id}_w{count}", f"{self.run_id}.w{count}")
            run = Backlog(f"W={count}", count, self.args.batch_size, events, sum(edges.ends.values()), span)
            self.drain(run, settings, clock, edges.ends)
            self.describe_backlog(run)
            runs.append(run.as_json())
        self.results["backlog"] = runs

    def phase_naive(self) -> None:
        n = self.args.naive_events
        say(f"\n== 5. naive baseline: the worker with --batch-size 1 (one transaction per event) on {n:,} events")
        stream, clock, written = self.generate(n, "naive.jsonl")
        topics = with_prefix(f"{self.run_id}.naive.")
        self.create_topics(topics)
        edges, _seconds = self.publish(stream, topics)
        span = ((edges.last_ts or 0) - (edges.first_ts or 0)) / 1000
        settings = self.settings_for(topics, f"{self.run_id}_naive", f"{self.run_id}.naive")
        run = Backlog("naive", 1, 1, written, sum(edges.ends.values()), span)
        self.drain(run, settings, clock, edges.ends)
        self.describe_backlog(run)
        self.results["naive"] = run.as_json()

    def phase_latency(self) -> None:
        args = self.args
        workers = self.counts[0]
        say(
            f"\n== 4. latency: {workers} worker(s) on the wall clock, {args.rate:,.0f} events/s offered for "
            f"{args.latency_seconds:g} s (live traffic profile)"
        )
        topics = with_prefix(f"{self.run_id}.lat.")
        self.create_topics(topics)
        settings = self.settings_for(topics, f"{self.run_id}_lat", f"{self.run_id}.lat")
        self.groups.append(settings.group_id)
        self.schemas.append(settings.db_schema)
        pool = self.pool("latency")
        pool.start(workers, settings, args.batch_size, None)
        try:
            pool.wait_ready()
            asyncio.run(wait_group_settled(self.bootstrap, settings.group_id, topics.inputs))
            db = self.db
            assert db is not None

            def applied() -> tuple[int, int]:
                offsets, outbox = db.progress(settings.db_schema)
                return sum(offsets.values()), outbox

            offered = asyncio.run(offer(self.bootstrap, topics, args, pool, self.progress, applied))
            say(
                f"  offered {offered['sent']:,} events in {offered['seconds']:.1f} s = "
                f"{fmt_rate(offered['sent'] / offered['seconds'])} ({offered['scheduled']:,} meeting.scheduled)"
            )
            self.wait_idle(pool, settings, offered["ends"])
        finally:
            self.progress.done()
            self.stop_pool(pool)
        tallies = asyncio.run(read_records(self.bootstrap, topics.path_tallies))
        statuses = asyncio.run(read_records(self.bootstrap, topics.meeting_statuses))
        result = latency_figures(offered["inputs"], tallies, statuses)
        result.update(
            workers=workers,
            offered_rate=args.rate,
            achieved_rate=round(offered["sent"] / offered["seconds"]),
            sent=offered["sent"],
            seconds=round(offered["seconds"], 3),
            peak_rss_mb=pool.peak_rss_mb,
            timeline=offered["timeline"],
        )
        self.results["latency"] = result
        say(
            f"  event in -> tally out, {result['measured']:,} meeting.scheduled: p50 {result['p50_ms']:.0f} ms, "
            f"p95 {result['p95_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, max {result['max_ms']:.0f} ms "
            f"(left out: {result['no_tally_change']:,} that changed no tally, e.g. programs without session "
            f"verification; no tally found: {result['unmatched']:,}); cross-checks, p50/p99: to the meeting's "
            f"first status {result['status_p50_ms']:.0f}/{result['status_p99_ms']:.0f} ms, first tally of the "
            f"path at or after the input {result['first_after_p50_ms']:.0f}/{result['first_after_p99_ms']:.0f} ms"
        )

    def wait_idle(self, pool: WorkerPool, settings: Settings, ends: dict[str, int]) -> None:
        assert self.db is not None
        total = sum(ends.values())
        last_change, last = time.monotonic(), (-1, -1)
        while True:
            pool.check_alive()
            offsets, outbox = self.db.progress(settings.db_schema)
            applied = applied_of(offsets, ends)
            if applied >= total and outbox == 0:
                return
            if (applied, outbox) != last:
                last, last_change = (applied, outbox), time.monotonic()
            elif time.monotonic() - last_change > self.args.stall_timeout:
                raise BenchError(
                    f"latency run: no progress for {self.args.stall_timeout:.0f} s ({applied:,}/{total:,})"
                )
            self.progress.show(f"  draining: applied {applied:,}/{total:,}, outbox {max(outbox, 0):,}")
            time.sleep(POLL_S)

    # ------------------------------------------------------------------ the whole run

    def run(self) -> None:
        args = self.args
        self.db = Database(self.settings.database_url)
        self.header()
        need_stream = not (args.skip_kafka_ceiling and args.skip_pg_ceiling and args.skip_backlog)
        if need_stream:
            say(f"\n== generating {args.events:,} events (seed {args.seed})")
            stream, clock, written = self.generate(args.events, "backlog.jsonl")
            inputs = with_prefix(f"{self.run_id}.")
            edges: TopicEdges | None = None
            if not (args.skip_kafka_ceiling and args.skip_backlog):
                edges = self.phase_kafka(stream, inputs, written)
            if not args.skip_pg_ceiling:
                self.phase_pg(stream, written)
            if not args.skip_backlog:
                assert edges is not None
                self.phase_backlog(inputs, edges, written, clock)
        if not args.skip_latency:
            self.phase_latency()
        if not args.skip_naive:
            self.phase_naive()
        self.results["load_average"]["end"] = load_average()


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


# ---------------------------------------------------------------------------------------- latency


async def offer(
    bootstrap: KafkaTarget,
    topics: Topics,
    args: argparse.Namespace,
    pool: WorkerPool,
    progress: Progress,
    applied: Callable[[], tuple[int, int]],
) -> dict[str, Any]:
    """Publish the live profile evenly paced at ``args.rate`` for ``args.latency_seconds``; returns what was
    sent: the meeting.scheduled inputs as (path key, meeting id, Kafka timestamp ms) and the end offsets."""
    from aiokafka import AIOKafkaProducer

    from session_tally.traffic import TrafficConfig, generate_tagged

    config = TrafficConfig(
        seed=args.seed,
        orgs=5,
        programs=20,
        paths=max(500, int(2 * args.rate)),  # live profile: about 2 paths per event/s (see TrafficConfig)
        rate=args.rate,
        epoch=datetime.now(UTC).replace(microsecond=0),
    )
    total = max(1, int(args.rate * args.latency_seconds))
    names = {"admin": topics.admin_events, "path": topics.path_events}
    producer = AIOKafkaProducer(**kafka_options(bootstrap), enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    inputs: list[tuple[bytes, str, int]] = []
    ends: dict[str, int] = {}
    pending: list[Any] = []
    sent = 0
    timeline: list[list[float]] = []  # [seconds, sent, applied, outbox rows] about once a second

    async def settle() -> None:
        for md in await asyncio.gather(*pending):
            k = f"{md.topic}:{md.partition}"
            ends[k] = max(ends.get(k, 0), md.offset + 1)
        pending.clear()

    try:
        started = time.monotonic()
        interval = 1.0 / args.rate
        for i, tagged in enumerate(generate_tagged(config, total)):
            due = started + i * interval
            delay = due - time.monotonic()
            if delay > 0.002:
                await asyncio.sleep(delay)
            record = tagged.record
            ts = time.time_ns() // 1_000_000
            pending.append(await producer.send(names[record.topic], record.value, key=record.key, timestamp_ms=ts))
            sent += 1
            if tagged.kind == "meeting.scheduled" and record.key is not None:
                meeting_id = json.loads(record.value)["data"]["meeting_id"]
                inputs.append((record.key, meeting_id, ts))
            if len(pending) >= 500:
                await settle()
            if not sent % 100 and time.monotonic() - started >= len(timeline):
                pool.check_alive()
                done, outbox = applied()
                elapsed = time.monotonic() - started
                timeline.append([round(elapsed, 2), sent, done, outbox])
                progress.show(
                    f"  offering: {sent:,}/{total:,} sent, {sent / elapsed:,.0f}/s; applied {done:,} "
                    f"(behind by {sent - done:,}); outbox {max(outbox, 0):,} rows",
                    force=True,
                )
        await settle()
        seconds = time.monotonic() - started
    finally:
        progress.done()
        await producer.stop()
    scheduled = len(inputs)
    return {
        "sent": sent,
        "seconds": seconds,
        "inputs": inputs,
        "ends": ends,
        "scheduled": scheduled,
        "timeline": timeline,
    }


def latency_figures(
    inputs: Sequence[tuple[bytes, str, int]],
    tallies: Sequence[tuple[bytes | None, int, bytes]],
    statuses: Sequence[tuple[bytes | None, int, bytes]],
) -> dict[str, Any]:
    """Event in -> tally out of every meeting.scheduled that changed its path's tally (ms, Kafka timestamps).

    The tally out is the one written by the transaction that applied the event: the meeting's first status
    message and that tally are computed in one transaction with the same ``as_of`` (the worker's clock in
    microseconds), so the tally is found by (path, as_of). A meeting that never got a status was skipped
    (program without session verification) or rejected: it changed no tally and is left out.

    ``first_after_*`` is the simpler estimate "first tally of the path at or after the input timestamp": it
    agrees while latency is well below the interval between two events of a path, and is too low (it takes
    the tally of an earlier event of the path) when latency is high.
    """
    tally_at: dict[tuple[bytes, str], int] = {}  # (path key, as_of) -> Kafka timestamp
    by_path: dict[bytes, list[int]] = {}
    for key, ts, value in tallies:
        if key is None:
            continue
        by_path.setdefault(key, []).append(ts)
        with contextlib.suppress(ValueError, KeyError, TypeError):
            where = (key, json.loads(value)["as_of"])
            tally_at[where] = min(ts, tally_at.get(where, ts))
    for stamps in by_path.values():
        stamps.sort()
    first_status: dict[str, tuple[int, str, int]] = {}  # meeting id -> (version, as_of, Kafka timestamp)
    for _key, ts, value in statuses:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            doc = json.loads(value)
            mine = (int(doc["version"]), str(doc["as_of"]), ts)
            if doc["meeting_id"] not in first_status or mine < first_status[doc["meeting_id"]]:
                first_status[doc["meeting_id"]] = mine
    exact: list[float] = []
    first_after: list[float] = []
    status_latencies: list[float] = []
    unmatched = no_change = 0
    for key, meeting_id, ts_in in inputs:
        status = first_status.get(meeting_id)
        if status is None:
            no_change += 1
            continue
        _version, as_of, status_ts = status
        status_latencies.append(status_ts - ts_in)
        stamps = by_path.get(key, [])
        i = bisect.bisect_left(stamps, ts_in)
        if i < len(stamps):
            first_after.append(stamps[i] - ts_in)
        out = tally_at.get((key, as_of))
        if out is None:
            unmatched += 1
            continue
        exact.append(out - ts_in)
    for values in (exact, first_after, status_latencies):
        values.sort()
    return {
        "measured": len(exact),
        "unmatched": unmatched,
        "no_tally_change": no_change,
        "p50_ms": percentile(exact, 50),
        "p95_ms": percentile(exact, 95),
        "p99_ms": percentile(exact, 99),
        "max_ms": exact[-1] if exact else float("nan"),
        "mean_ms": round(sum(exact) / len(exact), 1) if exact else float("nan"),
        "first_after_p50_ms": percentile(first_after, 50),
        "first_after_p99_ms": percentile(first_after, 99),
        "status_p50_ms": percentile(status_latencies, 50),
        "status_p99_ms": percentile(status_latencies, 99),
    }


# ---------------------------------------------------------------------------------------- summary


def summarize(results: dict[str, Any], counts: list[int], events: int) -> None:
    """Figures, ratios and target verdicts: into ``results`` (``figures``, ``targets``) and printed."""
    figures: dict[str, Any] = {}
    kc = results.get("kafka_ceiling") or {}
    if "publish_msgs_per_s" in kc:
        figures["kafka_publish_msgs_per_s"] = kc["publish_msgs_per_s"]
    if "consume_msgs_per_s" in kc:
        figures["kafka_consume_msgs_per_s"] = kc["consume_msgs_per_s"]
    pg = results.get("pg_ceiling")
    if pg:
        figures["pg_copy_rows_per_s"] = pg["rows_per_s"]
    backlog = results.get("backlog") or []
    head = backlog[0] if backlog else None
    if head:
        figures["backlog_events_per_s"] = head["events_per_s"]
        figures["backlog_worker_events_per_s"] = head["worker_events_per_s"]
        figures["backlog_after_startup_events_per_s"] = head["after_startup_events_per_s"]
    lat = results.get("latency")
    if lat:
        for q in ("p50", "p95", "p99"):
            figures[f"latency_{q}_ms"] = lat[f"{q}_ms"]
    naive = results.get("naive")
    if naive:
        figures["naive_events_per_s"] = naive["events_per_s"]
        figures["naive_worker_events_per_s"] = naive["worker_events_per_s"]
    rss = [m for run in backlog for m in run["peak_rss_mb"]]
    if rss:
        figures["worker_peak_rss_mb"] = max(rss)
    all_rss = rss + (lat or {}).get("peak_rss_mb", []) + (naive or {}).get("peak_rss_mb", [])
    if head and "consume_msgs_per_s" in kc and head["events_per_s"]:
        figures["ratio_throughput_to_kafka_ceiling"] = round(head["events_per_s"] / kc["consume_msgs_per_s"], 3)
    if head and pg and head["events_per_s"]:
        figures["ratio_throughput_to_pg_ceiling"] = round(head["events_per_s"] / pg["events_per_s"], 3)
    if head and naive and head["after_startup_events_per_s"] and naive["after_startup_events_per_s"]:
        # both after start-up: the cost per event, without the fixed start-up that N would dilute differently
        figures["ratio_throughput_to_naive"] = round(
            head["after_startup_events_per_s"] / naive["after_startup_events_per_s"], 1
        )
        figures["ratio_throughput_to_naive_basis"] = "after start-up"
    elif head and naive and head["worker_events_per_s"] and naive["worker_events_per_s"]:
        # a backlog too small to outlast the workers' start-up (a smoke run): worker windows instead
        figures["ratio_throughput_to_naive"] = round(head["worker_events_per_s"] / naive["worker_events_per_s"], 1)
        figures["ratio_throughput_to_naive_basis"] = "worker only (the backlog was done before start-up ended)"
    results["figures"] = figures

    def ok(value: Any, good: Callable[[Any], bool]) -> bool | None:
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else good(value)

    p99 = figures.get("latency_p99_ms")
    offered = (lat or {}).get("offered_rate")
    targets = {
        "backlog_events_per_s": {
            "target": f">= {TARGET_EVENTS_PER_S:,} events/s end to end (backlog, {counts[0]} worker(s))",
            "measured": figures.get("backlog_events_per_s"),
            "verdict": verdict(ok(figures.get("backlog_events_per_s"), lambda v: v >= TARGET_EVENTS_PER_S)),
        },
        "ratio_to_naive": {
            "target": f">= {TARGET_NAIVE_RATIO:g}x the batch-size-1 figure",
            "measured": figures.get("ratio_throughput_to_naive"),
            "verdict": verdict(ok(figures.get("ratio_throughput_to_naive"), lambda v: v >= TARGET_NAIVE_RATIO)),
        },
        "latency_p99_ms": {
            "target": f"p99 <= {TARGET_P99_MS:g} ms at {TARGET_P99_AT_RATE:,.0f} events/s offered",
            "measured": p99,
            "verdict": verdict(ok(p99, lambda v: v <= TARGET_P99_MS)),
            "note": None
            if offered is None or offered >= TARGET_P99_AT_RATE
            else f"measured at {offered:,.0f} events/s",
        },
        "worker_peak_rss_mb": {
            "target": f"<= {TARGET_RSS_MB:g} MB with a {TARGET_RSS_EVENTS:,}-event backlog",
            "measured": figures.get("worker_peak_rss_mb"),
            "verdict": verdict(ok(figures.get("worker_peak_rss_mb"), lambda v: v <= TARGET_RSS_MB)),
            "note": None
            if events >= TARGET_RSS_EVENTS and rss
            else (f"measured with a {events:,}-event backlog" if rss else "no backlog phase"),
        },
    }
    results["targets"] = targets

    rows: list[tuple[str, str, str]] = []
    if "kafka_publish_msgs_per_s" in figures:
        rows.append(
            ("Kafka publish (idempotent, acks=all)", fmt_rate(figures["kafka_publish_msgs_per_s"], "msg/s"), "")
        )
    if "kafka_consume_msgs_per_s" in figures:
        rows.append(("ceiling: Kafka plain consumer", fmt_rate(figures["kafka_consume_msgs_per_s"], "msg/s"), ""))
    if pg:
        rows.append(
            (
                "ceiling: PostgreSQL COPY",
                fmt_rate(pg["rows_per_s"], "rows/s"),
                f"= {fmt_rate(pg['events_per_s'])} at 2 rows/event",
            )
        )
    for run in backlog:
        w = run["workers"]
        t = targets["backlog_events_per_s"]
        note = f">= {TARGET_EVENTS_PER_S:,}: {t['verdict']}" if run is head else ""
        rows.append((f"backlog W={w}: end to end", fmt_rate(run["events_per_s"]), note))
        rows.append((f"backlog W={w}: worker only", fmt_rate(run["worker_events_per_s"]), "worker start -> last tally"))
        rows.append(
            (
                f"backlog W={w}: after start-up",
                fmt_rate(run["after_startup_events_per_s"]),
                "workers ready -> last tally",
            )
        )
        segs = run["segments"]
        if segs:
            rows.append(
                (
                    f"backlog W={w}: per 20% of offsets",
                    " ".join("n/a" if s["events_per_s"] is None else f"{s['events_per_s']:,}" for s in segs),
                    "events/s; flat = no cost growth",
                )
            )
    if lat:
        rows.append(
            (
                f"latency @ {lat['achieved_rate']:,} ev/s: p50/p95/p99",
                f"{lat['p50_ms']:.0f} / {lat['p95_ms']:.0f} / {lat['p99_ms']:.0f} ms",
                f"p99 <= {TARGET_P99_MS:g} ms: {targets['latency_p99_ms']['verdict']}"
                + (f" ({targets['latency_p99_ms']['note']})" if targets["latency_p99_ms"]["note"] else ""),
            )
        )
    if naive:
        rows.append(("naive (batch size 1): end to end", fmt_rate(naive["events_per_s"]), ""))
        rows.append(("naive (batch size 1): worker only", fmt_rate(naive["worker_events_per_s"]), ""))
        rows.append(("naive (batch size 1): after start-up", fmt_rate(naive["after_startup_events_per_s"]), ""))
    if "ratio_throughput_to_kafka_ceiling" in figures:
        rows.append(("ratio: throughput / Kafka ceiling", f"{figures['ratio_throughput_to_kafka_ceiling']:.3f}", ""))
    if "ratio_throughput_to_pg_ceiling" in figures:
        rows.append(("ratio: throughput / PostgreSQL ceiling", f"{figures['ratio_throughput_to_pg_ceiling']:.3f}", ""))
    if "ratio_throughput_to_naive" in figures:
        rows.append(
            (
                f"ratio: throughput / naive ({figures['ratio_throughput_to_naive_basis'].split(' (')[0]})",
                f"{figures['ratio_throughput_to_naive']:.1f}x",
                f">= {TARGET_NAIVE_RATIO:g}x: {targets['ratio_to_naive']['verdict']}",
            )
        )
    if all_rss:
        t = targets["worker_peak_rss_mb"]
        rows.append(
            (
                "worker peak RSS (VmHWM)",
                f"{max(rss or all_rss):,.0f} MB" + ("" if rss else " (latency/naive)"),
                f"<= {TARGET_RSS_MB:g} MB: {t['verdict']}" + (f" ({t['note']})" if t["note"] else ""),
            )
        )
    say("\n== results")
    width = max(len(r[0]) for r in rows) if rows else 10
    vwidth = max(len(r[1]) for r in rows) if rows else 10
    for name, value, note in rows:
        say(f"  {name:<{width}}  {value:>{vwidth}}  {note}".rstrip())


# ---------------------------------------------------------------------------------------- the command


def _validate(args: argparse.Namespace) -> str | None:
    if args.events < 1 or args.naive_events < 1:
        return "--events and --naive-events must be at least 1"
    if args.rate <= 0 or args.latency_seconds <= 0:
        return "--rate and --latency-seconds must be positive"
    if args.batch_size < 1:
        return "--batch-size must be at least 1"
    return None


@contextlib.contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C, so that the ``finally`` blocks stop the workers and clean up."""

    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_pipeline(args: argparse.Namespace) -> int:
    message = _validate(args)
    try:
        counts = parse_workers(args.workers)
    except ValueError:
        message = message or f"--workers wants counts like 1 or 1,2,3, not {args.workers!r}"
        counts = []
    if message:
        print(f"session-tally bench pipeline: {message}", file=sys.stderr)
        return 2
    bench = PipelineBench(args, counts)
    status = 0
    with _sigterm_interrupts():
        try:
            try:
                bench.run()
            finally:
                bench.cleanup()
        except KeyboardInterrupt:
            print("\nsession-tally bench pipeline: interrupted; workers stopped", file=sys.stderr)
            return 130
        except BenchError as exc:
            print(f"session-tally bench pipeline: {exc}", file=sys.stderr)
            status = 1
        # Kafka or PostgreSQL out of reach: session_tally.cli says so in one line (exit 2)
    results = bench.results
    if not results:
        return status or 1
    results.setdefault("load_average", {}).setdefault("end", load_average())
    summarize(results, counts, args.events)
    say(
        f"load average at start {' '.join(map(str, results['load_average'].get('start', [])))}, "
        f"at end {' '.join(map(str, results['load_average']['end']))} ({results['machine']['cores']} cores)"
    )
    results["complete"] = status == 0
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(_finite(results), indent=2, allow_nan=False) + "\n")
        say(f"results written to {out}")
    return status


def _finite(value: Any) -> Any:
    """NaN (a figure that could not be measured) as null: JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


__all__ = ["register_pipeline", "run_pipeline"]
