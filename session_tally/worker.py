"""One member of the consumer group: the input subscribers and the health/metrics endpoint, plus the
producers (outbox relay, clock sweeper, waiting-event janitor; see producers_runtime.py) in this process
(default) or in a child process.

Shutdown (SIGTERM/SIGINT): FastStream stops the subscribers and waits up to the graceful timeout for
the batch in flight to commit and be acknowledged; then the producers stop (the relay publishes what is
left in the outbox, bounded by the same timeout) and the connections close.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from session_tally.config import Settings

log = logging.getLogger("session_tally.worker")


@dataclass
class WorkerOptions:
    clock: int | None = None  # frozen time in µs, for tests and what-if runs
    max_records: int = 5000
    batch_timeout_ms: int = 50
    http_host: str = "127.0.0.1"
    http_port: int = 0  # 0 = any free port (printed); -1 = disabled
    graceful_timeout_s: float = 15.0
    instance_id: str | None = None
    pool_size: int = 5
    producers: str = "in-process"  # "in-process": in the worker's event loop; "process": a child process
    stall_timeout_s: float = 120.0  # /healthz fails when records wait this long without progress


def wall_clock_us() -> int:
    return time.time_ns() // 1000


def build_clock(frozen: int | None) -> Callable[[], int]:
    if frozen is None:
        return wall_clock_us
    return lambda: frozen


async def run_worker(
    settings: Settings, options: WorkerOptions, ready: Callable[[dict[str, Any]], None] | None = None
) -> None:
    from faststream import FastStream
    from faststream.kafka import KafkaBroker
    from sqlalchemy import func, select, text

    from consumers.barrier import AdminBarrier
    from consumers.kafka_offsets import EndOffsets, Progress
    from consumers.subscriber import InputSubscriber
    from consumers.tolerant_records import install as read_any_bytes
    from producers.kafka_access import faststream_security, kafka_options
    from session_tally.health import HealthMonitor
    from session_tally.metrics import HttpEndpoint, Metrics
    from session_tally.producers_runtime import Producers
    from session_tally.topics import prepare_topics
    from storage import tables as T
    from storage.db import async_engine, upgrade
    from storage.unit_of_work import UnitOfWork

    read_any_bytes()  # a header key that is not UTF-8 must not stop a partition (consumers/tolerant_records.py)
    revision = await asyncio.to_thread(upgrade, settings.database_url, settings.db_schema)
    log.info("database schema %s at revision %s", settings.db_schema, revision)
    for mismatch in await prepare_topics(settings):  # creates missing topics unless told not to
        log.warning("topic mismatch: %s", mismatch)  # missing topics were created; a mismatch is only reported

    metrics = Metrics()
    engine = async_engine(settings.database_url, settings.db_schema, pool_size=options.pool_size)
    clock = build_clock(options.clock)
    uow = UnitOfWork(engine, settings.topics.admin_events, clock, settings.topics.path_events)
    topics = settings.topics
    offsets = EndOffsets(kafka_options(settings.kafka))
    barrier = AdminBarrier(Progress(offsets, uow.applied_offsets, (topics.admin_events,)), metrics)
    in_process = options.producers == "in-process"
    producers = Producers(settings, clock, engine, metrics, offsets) if in_process else None
    child: subprocess.Popen[bytes] | None = None

    def committed() -> None:
        if producers is not None:
            producers.wake()  # (a child process is woken by the transaction's NOTIFY)

    # One subscriber per input topic, each in its own consumer group (`<group>` for path events,
    # `<group>.admin` for admin events): the admin topic (few, small events that path events depend on)
    # is never stuck behind a backlog of path events, and neither waits for the other's rebalances.
    admin_subscriber = InputSubscriber(uow, committed, metrics, min(500, options.max_records), options.batch_timeout_ms)
    path_subscriber = InputSubscriber(
        uow, committed, metrics, options.max_records, options.batch_timeout_ms, barrier=barrier
    )
    broker = KafkaBroker(
        settings.kafka.servers(),  # a list: one string would be taken as one host
        graceful_timeout=options.graceful_timeout_s,
        log_level=logging.DEBUG,
        security=faststream_security(settings.kafka),  # TLS/SASL as every other client of the project
    )
    instance = options.instance_id
    admin_subscriber.register(
        broker, (topics.admin_events,), f"{settings.group_id}.admin", instance and f"{instance}-admin"
    )
    path_subscriber.register(broker, (topics.path_events,), settings.group_id, instance and f"{instance}-path")
    app = FastStream(broker)

    def producers_alive() -> bool:
        return producers.alive() if producers is not None else (child is not None and child.poll() is None)

    async def oldest_outbox_age() -> float | None:
        async with engine.connect() as conn:
            age = await conn.scalar(
                text("SELECT extract(epoch FROM clock_timestamp() - created_at) FROM outbox ORDER BY id LIMIT 1")
            )
        return None if age is None else float(age)

    def owned() -> set[tuple[str, int]]:
        out: set[tuple[str, int]] = set()
        for sub in (admin_subscriber, path_subscriber):
            consumer = sub.consumer
            if consumer is not None:
                out |= {(tp.topic, tp.partition) for tp in consumer.assignment()}
        return out

    monitor = HealthMonitor(
        ping_postgres=oldest_outbox_age,
        ping_kafka=lambda: broker_answers(broker),
        end_offsets=offsets.ends,
        applied_offsets=uow.applied_offsets,
        assignments=owned,
        producers_alive=producers_alive,
        details=lambda: {"waiting_for_admin": barrier.health()},
        metrics=metrics,
        stall_s=options.stall_timeout_s,
    )

    async def health() -> tuple[dict[str, bool], dict[str, Any]]:
        return monitor.verdict()

    async def refresh_gauges() -> None:
        async with engine.connect() as conn:
            metrics.set(
                "session_tally_outbox_backlog", await conn.scalar(select(func.count()).select_from(T.outbox)) or 0
            )
            metrics.set(
                "session_tally_waiting_events", await conn.scalar(select(func.count()).select_from(T.parked)) or 0
            )

    endpoint = HttpEndpoint(metrics, health, refresh_gauges)

    background: list[asyncio.Task[None]] = []

    @app.on_startup
    async def start_offsets() -> None:
        await offsets.start()  # before the subscribers: the first path batch needs it

    @app.after_startup
    async def start_background() -> None:
        nonlocal child
        if producers is not None:
            await producers.start(listen=False)
            print("session-tally producers ready (in this process)", flush=True)
        else:
            child = start_producers_child(settings, options)
            threading.Thread(target=merge_child_metrics, args=(child, metrics), daemon=True).start()
        # the first health round once the broker is connected: /healthz speaks of the started worker from
        # its first answer on (a round during start-up would report Kafka unreachable until the next one)
        await monitor.round()
        background.append(asyncio.create_task(monitor.run(), name="health"))
        port = -1
        if options.http_port >= 0:
            try:
                port = await endpoint.start(options.http_host, options.http_port)
            except OSError as exc:  # e.g. a second worker on this machine: take any free port instead
                port = await endpoint.start(options.http_host, 0)
                log.warning("port %d unavailable (%s); health and metrics on port %d", options.http_port, exc, port)
        info = {
            "group_id": settings.group_id,
            "topics": list(topics.inputs),
            "schema": settings.db_schema,
            "clock": "frozen at " + datetime.fromtimestamp(options.clock / 1e6, UTC).isoformat()
            if options.clock
            else "wall",
            "http": f"http://{options.http_host}:{port}" if port >= 0 else None,
        }
        log.info("worker started: %s", info)
        print(f"session-tally worker ready: {info}", flush=True)
        if ready is not None:
            ready(info)

    @app.after_shutdown
    async def stop_background() -> None:
        if producers is not None:
            await producers.stop(options.graceful_timeout_s)
        elif child is not None:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(child.wait, options.graceful_timeout_s + 5)
                except subprocess.TimeoutExpired:
                    child.kill()
            await drain_outbox(settings, engine, options.graceful_timeout_s)  # whatever the child left
        monitor.request_stop()
        await asyncio.gather(*background, return_exceptions=True)
        await endpoint.stop()
        await offsets.stop()
        await engine.dispose()
        print("session-tally worker stopped", flush=True)

    await app.run()


async def broker_answers(broker: Any, timeout_s: float = 2.0) -> bool:
    """Whether the Kafka cluster answers a metadata request (DescribeCluster) within ``timeout_s``."""
    try:
        return bool(await broker.ping(timeout_s))
    except Exception:
        return False


def start_producers_child(settings: Settings, options: WorkerOptions) -> subprocess.Popen[bytes]:
    """`session-tally producers` as a child that dies with this process."""
    from session_tally.producers_runtime import die_with_parent

    env = dict(os.environ) | settings.as_env()
    args = [sys.executable, "-m", "session_tally", "producers", "--graceful-timeout", str(options.graceful_timeout_s)]
    if options.clock is not None:
        from domain.timefmt import format_instant

        args += ["--clock", format_instant(options.clock)]
    return subprocess.Popen(args, env=env, preexec_fn=die_with_parent, stdout=subprocess.PIPE)


def merge_child_metrics(child: subprocess.Popen[bytes], metrics: Any) -> None:
    """Copy the child's ``METRICS {json}`` lines into this worker's metrics; pass other lines through."""
    import json

    assert child.stdout is not None
    for raw in child.stdout:
        line = raw.decode("utf-8", "replace")
        if line.startswith("METRICS "):
            try:
                metrics.counters.update(json.loads(line[8:]))
            except ValueError:
                pass
        else:
            sys.stdout.write(line)
            sys.stdout.flush()


async def drain_outbox(settings: Settings, engine: Any, timeout_s: float) -> None:
    """Publish outbox rows nobody published (the producers child stopped early, say), bounded in time."""
    from sqlalchemy import func, select

    from producers.relay import Relay
    from storage import tables as T

    async with engine.connect() as conn:
        if not await conn.scalar(select(func.count()).select_from(T.outbox)):
            return
    relay = Relay.for_settings(engine, settings)
    await relay.start()
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and await relay.publish_once():
            pass
    except Exception:
        log.exception("final outbox drain failed; the rows stay for the next worker")
    finally:
        await relay.stop()
