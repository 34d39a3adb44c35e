"""One member of the consumer group: the input subscriber, the outbox relay, the clock sweeper, the
waiting-event janitor and the health/metrics endpoint, wired together.

Shutdown (SIGTERM/SIGINT): FastStream stops the subscriber and waits up to the graceful timeout for
the batch in flight to commit and be acknowledged; then the clock and janitor stop, the relay publishes
what is left in the outbox (bounded by the same timeout) and the connections close.
"""

from __future__ import annotations

import asyncio
import logging
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
    max_records: int = 2000
    batch_timeout_ms: int = 50
    http_host: str = "127.0.0.1"
    http_port: int = 0  # 0 = any free port (printed); -1 = disabled
    graceful_timeout_s: float = 15.0
    instance_id: str | None = None
    pool_size: int = 5


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

    from consumers.subscriber import InputSubscriber
    from producers.clock import ClockSweeper, WaitingJanitor
    from producers.relay import Relay
    from session_tally.metrics import HttpEndpoint, Metrics
    from storage import tables as T
    from storage.db import async_engine, upgrade
    from storage.unit_of_work import UnitOfWork

    from session_tally.topics import ensure_topics

    revision = await asyncio.to_thread(upgrade, settings.database_url, settings.db_schema)
    log.info("database schema %s at revision %s", settings.db_schema, revision)
    for mismatch in await ensure_topics(settings.kafka_bootstrap_servers, settings.topics, settings.input_partitions):
        log.warning("topic mismatch: %s", mismatch)  # missing topics were created; a mismatch is only reported

    metrics = Metrics()
    engine = async_engine(settings.database_url, settings.db_schema, pool_size=options.pool_size)
    clock = build_clock(options.clock)
    uow = UnitOfWork(engine, settings.topics.admin_events, clock)
    topics = settings.topics
    relay = Relay(
        engine,
        settings.kafka_bootstrap_servers,
        {"tallies": topics.path_tallies, "statuses": topics.meeting_statuses, "rejected": topics.rejected},
        metrics,
    )
    sweeper = ClockSweeper(uow, relay.wake, metrics)

    def committed() -> None:
        relay.wake()
        sweeper.wake()

    janitor = WaitingJanitor(uow, settings.park_timeout_s, relay.wake, metrics)
    # One subscriber per input topic, each in its own consumer group (`<group>` for path events,
    # `<group>.admin` for admin events): the admin topic (few, small events that path events depend on)
    # is never stuck behind a backlog of path events, and neither waits for the other's rebalances.
    admin_subscriber = InputSubscriber(uow, committed, metrics, min(500, options.max_records), options.batch_timeout_ms)
    path_subscriber = InputSubscriber(uow, committed, metrics, options.max_records, options.batch_timeout_ms)
    broker = KafkaBroker(
        settings.kafka_bootstrap_servers, graceful_timeout=options.graceful_timeout_s, log_level=logging.DEBUG
    )
    instance = options.instance_id
    admin_subscriber.register(broker, (topics.admin_events,), f"{settings.group_id}.admin", instance and f"{instance}-admin")
    path_subscriber.register(broker, (topics.path_events,), settings.group_id, instance and f"{instance}-path")
    app = FastStream(broker)
    tasks: list[asyncio.Task[None]] = []

    async def health() -> dict[str, Any]:
        checks: dict[str, Any] = {"tasks": all(not t.done() for t in tasks)}
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["postgres"] = True
        except Exception:
            checks["postgres"] = False
        checks["kafka"] = relay.producer is not None
        return checks

    async def refresh_gauges() -> None:
        async with engine.connect() as conn:
            metrics.set(
                "session_tally_outbox_backlog", await conn.scalar(select(func.count()).select_from(T.outbox)) or 0
            )
            metrics.set(
                "session_tally_waiting_events", await conn.scalar(select(func.count()).select_from(T.parked)) or 0
            )

    endpoint = HttpEndpoint(metrics, health, refresh_gauges)

    @app.after_startup
    async def start_background() -> None:
        await relay.start()
        tasks.append(asyncio.create_task(relay.run(), name="relay"))
        tasks.append(asyncio.create_task(sweeper.run(), name="clock"))
        tasks.append(asyncio.create_task(janitor.run(), name="janitor"))
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
        sweeper.request_stop()
        janitor.request_stop()
        relay.request_stop()
        for task in tasks:
            if task.get_name() != "relay":
                task.cancel()
        # let the relay finish its round, then drain what the last batch wrote
        deadline = time.monotonic() + options.graceful_timeout_s
        relay_task = next((t for t in tasks if t.get_name() == "relay"), None)
        if relay_task is not None:
            try:
                await asyncio.wait_for(relay_task, max(0.1, deadline - time.monotonic()))
            except (TimeoutError, asyncio.CancelledError):
                relay_task.cancel()
            try:
                while time.monotonic() < deadline and await relay.publish_once():
                    pass
            except Exception:
                log.exception("final outbox drain failed; the rows stay for the next worker")
        await asyncio.gather(*tasks, return_exceptions=True)
        await endpoint.stop()
        await relay.stop()
        await engine.dispose()
        print("session-tally worker stopped", flush=True)

    await app.run()
