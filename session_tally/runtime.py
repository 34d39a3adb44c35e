"""The composition root: the one place that builds and wires a worker's parts (settings flow down from
here; nothing below reads the environment or builds a part of another layer).

A worker is one member of the consumer group: the input subscribers (one per input topic, each in its
own group: ``<group>`` for path events, ``<group>.admin`` for admin events), the barrier that keeps path
events behind the admin events published before them, the health monitor and the HTTP endpoint, and
the *background* (outbox relay, clock sweeper, waiting-event janitor) in this event loop (default) or
in a child process (`--producers process`, session_tally/child.py). One unit of work and one Kafka
end-offsets reader serve all of them.

Shutdown (SIGTERM/SIGINT): FastStream stops the subscribers and waits up to the graceful timeout for
the batch in flight to commit and be acknowledged; then the background stops (the relay publishes
what is left in the outbox, bounded by the same timeout) and the connections close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from session_tally.config import Settings
from session_tally.gc_tuning import tune_gc
from session_tally.logs import announce

log = logging.getLogger("session_tally.worker")


@dataclass
class WorkerOptions:
    clock: int | None = None  # frozen time in µs, for tests and what-if runs
    max_records: int = 5000
    batch_timeout_ms: int = 50
    http_host: str = "127.0.0.1"  # 0.0.0.0 in a container
    http_port: int = 0  # 0 = any free port (printed); -1 = disabled; a port in use is an error
    graceful_timeout_s: float = 15.0
    instance_id: str | None = None
    pool_size: int = 5
    producers: str = "in-process"  # "in-process": in the worker's event loop; "process": a child process
    stall_timeout_s: float = 120.0  # /healthz fails when records wait this long without progress
    log_level: str = "INFO"  # handed to the producers child
    log_format: str = "text"


def build_clock(frozen: int | None) -> Callable[[], int]:
    """The current time in µs since the epoch: the wall clock, or a frozen instant."""
    if frozen is None:
        return lambda: time.time_ns() // 1000
    return lambda: frozen


class Background:
    """The relay, the clock sweeper and the waiting-event janitor as tasks of one event loop, woken by the
    transactions that write outbox rows (in this process directly; in a child process through
    PostgreSQL NOTIFY, ``listen``); they poll anyway, so a lost wake-up costs a fraction of a second."""

    def __init__(self, settings: Settings, uow: Any, engine: Any, offsets: Any, metrics: Any) -> None:
        from consumers.horizon import ReadHorizon
        from consumers.kafka_offsets import Progress
        from consumers.timers import ClockSweeper, WaitingJanitor
        from producers.relay import Relay

        self.settings = settings
        self.relay = Relay.for_settings(engine, settings, metrics, uow.clock)
        self.sweeper = ClockSweeper(uow, self.relay.wake, metrics)
        horizon = ReadHorizon(Progress(offsets, uow.applied_offsets, settings.topics.inputs), uow.database_time)
        self.janitor = WaitingJanitor(uow, settings.park_timeout_s, horizon, self.relay.wake, metrics)
        self.tasks: list[asyncio.Task[None]] = []

    def wake(self) -> None:
        self.relay.wake()
        self.sweeper.wake()

    def committed(self, outbox_rows: int, next_change_at: int | None) -> None:
        """A transaction of this process committed: wake the relay when it wrote outbox rows, the clock
        only when it must move a meeting before the instant it would wake at anyway."""
        if outbox_rows:
            self.relay.wake()
        if next_change_at is not None:
            self.sweeper.wake_for(next_change_at)

    async def start(self, listen: bool) -> None:
        await self.relay.start()
        self.tasks = [
            asyncio.create_task(self.relay.run(), name="relay"),
            asyncio.create_task(self.sweeper.run(), name="clock"),
            asyncio.create_task(self.janitor.run(), name="janitor"),
        ]
        if listen:
            self.tasks.append(asyncio.create_task(self._listen(), name="listen"))

    def alive(self) -> bool:
        return bool(self.tasks) and all(not t.done() for t in self.tasks)

    async def _listen(self) -> None:
        """Wake the relay and the clock whenever a transaction wrote outbox rows."""
        import psycopg

        from storage.outbox import channel

        url = self.settings.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        name = channel(self.settings.db_schema)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f'LISTEN "{name}"')
                    async for _note in conn.notifies():
                        self.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the polling loops go on meanwhile
                log.warning("LISTEN %s failed (%s); retrying", name, exc)
                await asyncio.sleep(1.0)

    async def stop(self, graceful_timeout_s: float) -> None:
        """Stop the clock and the janitor and wait for them (a sweep committing while the relay drains
        would leave its rows behind), then let the relay publish what is left (bounded), close."""
        deadline = time.monotonic() + graceful_timeout_s
        self.sweeper.request_stop()
        self.janitor.request_stop()
        self.relay.request_stop()
        for task in self.tasks:
            if task.get_name() == "listen":
                task.cancel()
        loops = [t for t in self.tasks if t.get_name() in ("clock", "janitor")]
        _done, pending = await asyncio.wait(loops, timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        for task in pending:
            task.cancel()
        relay_task = next((t for t in self.tasks if t.get_name() == "relay"), None)
        if relay_task is not None:
            try:
                await asyncio.wait_for(relay_task, max(0.1, deadline - time.monotonic()))
            except (TimeoutError, asyncio.CancelledError):
                relay_task.cancel()
            await self.relay.drain(max(0.0, deadline - time.monotonic()))
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.relay.stop()


def _unit_of_work(settings: Settings, engine: Any, clock: Callable[[], int]) -> Any:
    from storage.unit_of_work import UnitOfWork

    return UnitOfWork(engine, settings.topics.admin_events, clock, settings.topics.path_events)


def _end_offsets(settings: Settings) -> Any:
    from consumers.kafka_offsets import EndOffsets
    from producers.kafka_access import kafka_options

    return EndOffsets(kafka_options(settings.kafka))


async def run_worker(
    settings: Settings, options: WorkerOptions, ready: Callable[[dict[str, Any]], None] | None = None
) -> None:
    """Run one worker until SIGTERM/SIGINT. The HTTP endpoint listens first, so that a port in use stops
    the worker before it does anything (``session_tally.endpoint.EndpointError``)."""
    from session_tally.endpoint import HttpEndpoint
    from session_tally.metrics import Metrics

    metrics = Metrics()
    endpoint = HttpEndpoint(metrics)
    port = await endpoint.start(options.http_host, options.http_port) if options.http_port >= 0 else -1
    try:
        await _run_worker(settings, options, ready, metrics, endpoint, port)
    finally:
        await endpoint.stop()


async def _run_worker(
    settings: Settings,
    options: WorkerOptions,
    ready: Callable[[dict[str, Any]], None] | None,
    metrics: Any,
    endpoint: Any,
    port: int,
) -> None:
    from faststream import FastStream
    from faststream.kafka import KafkaBroker

    from consumers.barrier import AdminBarrier
    from consumers.kafka_offsets import Progress
    from consumers.subscriber import InputSubscriber
    from consumers.tolerant_records import install as read_any_bytes
    from producers.kafka_access import faststream_security
    from session_tally.child import start_producers_child
    from session_tally.health import HealthMonitor
    from session_tally.topics import prepare_topics
    from storage import outbox
    from storage.db import async_engine, end_stalled_sessions, upgrade

    read_any_bytes()  # a header key that is not UTF-8 must not stop a partition (consumers/tolerant_records.py)
    revision = await asyncio.to_thread(upgrade, settings.database_url, settings.db_schema)
    log.info("database schema %s at revision %s", settings.db_schema, revision)
    for mismatch in await prepare_topics(settings):  # creates missing topics unless told not to
        log.warning("topic mismatch: %s", mismatch)  # missing topics were created; a mismatch is only reported

    topics = settings.topics
    engine = async_engine(settings.database_url, settings.db_schema, pool_size=options.pool_size)
    uow = _unit_of_work(settings, engine, build_clock(options.clock))
    offsets = _end_offsets(settings)
    barrier = AdminBarrier(Progress(offsets, uow.applied_offsets, (topics.admin_events,)), metrics)
    background = Background(settings, uow, engine, offsets, metrics) if options.producers == "in-process" else None
    child: subprocess.Popen[bytes] | None = None

    def committed(report: Any) -> None:
        if background is not None:  # (a child process is woken by the transaction's NOTIFY)
            background.committed(report.outbox_rows, report.next_change_at)

    admin_subscriber = InputSubscriber(uow, committed, metrics, min(500, options.max_records), options.batch_timeout_ms)
    path_subscriber = InputSubscriber(
        uow, committed, metrics, options.max_records, options.batch_timeout_ms, barrier=barrier
    )
    broker = KafkaBroker(
        settings.kafka.servers(),  # a list: one string would be taken as one host
        graceful_timeout=options.graceful_timeout_s,
        logger=logging.getLogger("session_tally.faststream"),  # our handlers and format (text or JSON)
        log_level=logging.DEBUG,
        security=faststream_security(settings.kafka),  # TLS/SASL as every other client of the project
    )
    instance = options.instance_id
    admin_subscriber.register(
        broker, (topics.admin_events,), f"{settings.group_id}.admin", instance and f"{instance}-admin"
    )
    path_subscriber.register(broker, (topics.path_events,), settings.group_id, instance and f"{instance}-path")
    app = FastStream(broker, logger=logging.getLogger("session_tally.faststream"))

    monitor = HealthMonitor(
        ping_postgres=lambda: outbox.oldest_age_s(engine),
        ping_kafka=lambda: broker_answers(broker),
        end_offsets=offsets.ends,
        applied_offsets=uow.applied_offsets,
        consumers={"admin": admin_subscriber, "path": path_subscriber},
        producers_alive=lambda: background.alive() if background is not None else bool(child and child.poll() is None),
        details=lambda: {"waiting_for_admin": barrier.health()},
        end_stalled=lambda: end_stalled_sessions(engine),
        metrics=metrics,
        stall_s=options.stall_timeout_s,
    )

    async def refresh_gauges() -> None:
        metrics.set("session_tally_outbox_backlog", await outbox.backlog(engine))
        metrics.set("session_tally_waiting_events", await uow.waiting_count())
        metrics.set("session_tally_waiting_oldest_seconds", await uow.waiting_oldest_s() or 0.0)

    endpoint.refresh = refresh_gauges
    metrics.watch_process("session_tally_producers", lambda: child.pid if child is not None else None)
    tasks: list[asyncio.Task[None]] = []

    @app.on_startup
    async def start_offsets() -> None:
        await offsets.start()  # before the subscribers: the first path batch needs it

    @app.after_startup
    async def start_background() -> None:
        nonlocal child
        if background is not None:
            await background.start(listen=False)
            announce("session-tally producers ready (in this process)")
        else:
            child = start_producers_child(
                settings, options.graceful_timeout_s, options.clock, metrics, options.log_level, options.log_format
            )
        await monitor.round()  # the first verdict before "ready" (the broker runs now)
        endpoint.probes = monitor
        tune_gc()
        tasks.append(asyncio.create_task(monitor.run(), name="health"))
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
        announce(f"session-tally worker ready: {info}", **info)
        if ready is not None:
            ready(info)

    @app.after_shutdown
    async def stop_background() -> None:
        if background is not None:
            await background.stop(options.graceful_timeout_s)
        elif child is not None:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(child.wait, options.graceful_timeout_s + 5)
                except subprocess.TimeoutExpired:
                    child.kill()
            await _drain_leftovers(settings, engine, options.graceful_timeout_s)  # whatever the child left
        monitor.request_stop()
        await asyncio.gather(*tasks, return_exceptions=True)
        await offsets.stop()
        await engine.dispose()
        announce("session-tally worker stopped")

    await app.run()


async def broker_answers(broker: Any, timeout_s: float = 2.0) -> bool:
    """Whether the Kafka cluster answers a metadata request (DescribeCluster) within ``timeout_s``."""
    try:
        return bool(await broker.ping(timeout_s))
    except Exception:
        return False


async def _drain_leftovers(settings: Settings, engine: Any, timeout_s: float) -> None:
    """Publish outbox rows nobody published (the producers child stopped early, say), bounded in time."""
    from producers.relay import Relay
    from storage import outbox

    if not await outbox.backlog(engine):
        return
    relay = Relay.for_settings(engine, settings)
    await relay.start()
    try:
        await relay.drain(timeout_s)
    finally:
        await relay.stop()


async def run_producers_process(
    settings: Settings,
    frozen_clock: int | None,
    graceful_timeout_s: float,
    early_signals: list[int] | None = None,
    metrics_fd: int | None = None,
) -> None:
    """`session-tally producers`: the background alone, until SIGTERM/SIGINT. Every second (and when it
    stops) it writes its metrics to ``metrics_fd``, which the parent worker merges into its /metrics
    (session_tally/child.py)."""
    from session_tally.child import MetricsPipe
    from session_tally.metrics import Metrics
    from storage.db import async_engine

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if early_signals:  # a signal that came while starting up, before the handlers above existed
        stop.set()
    metrics = Metrics(process_metrics=False)  # the worker reads this process's from /proc
    pipe = MetricsPipe(metrics_fd)
    engine = async_engine(settings.database_url, settings.db_schema, pool_size=3)
    offsets = _end_offsets(settings)
    background = Background(
        settings, _unit_of_work(settings, engine, build_clock(frozen_clock)), engine, offsets, metrics
    )

    try:
        await offsets.start()
        await background.start(listen=True)
        tune_gc()
        announce("session-tally producers ready")
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            pipe.send(metrics)
            if not background.alive() and not stop.is_set():
                raise RuntimeError("a producer task ended unexpectedly")
    finally:
        await background.stop(graceful_timeout_s)
        await offsets.stop()
        await engine.dispose()
        pipe.send(metrics)
        pipe.close()
        published = background.relay.published
        announce(f"session-tally producers stopped ({published} messages published)", published=published)
