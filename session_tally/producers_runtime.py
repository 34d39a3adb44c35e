"""The producer side of a worker: the outbox relay, the clock sweeper and the waiting-event janitor.

A worker runs them in its own event loop by default; `--producers process` runs them in a child process
instead (`session-tally producers`, started and stopped by the worker, and killed with it:
PR_SET_PDEATHSIG), so that publishing does not compete with consuming for one Python interpreter.
They are woken by the transactions that write outbox rows (PostgreSQL NOTIFY on a channel per schema)
and poll anyway, so a lost notification only costs a fraction of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from session_tally.config import Settings

log = logging.getLogger("session_tally.producers")


def notify_channel(schema: str) -> str:
    return ("st_outbox_" + schema)[:63]


class Producers:
    """Relay + clock + janitor on one engine; ``start()``, then ``stop()`` drains the outbox."""

    def __init__(
        self, settings: Settings, clock: Callable[[], int], engine: Any, metrics: Any = None, offsets: Any = None
    ) -> None:
        """``offsets`` is the worker's ``consumers.kafka_offsets.EndOffsets`` when it has one (started and
        stopped by the worker); without it the producers start and stop their own."""
        from consumers.horizon import ReadHorizon
        from consumers.kafka_offsets import EndOffsets, Progress
        from producers.clock import ClockSweeper, WaitingJanitor
        from producers.kafka_access import kafka_options
        from producers.relay import Relay
        from storage.unit_of_work import UnitOfWork

        topics = settings.topics
        self.settings = settings
        self.engine = engine
        self.uow = UnitOfWork(engine, topics.admin_events, clock, topics.path_events)
        self.relay = Relay.for_settings(engine, settings, metrics)
        self.sweeper = ClockSweeper(self.uow, self.relay.wake, metrics)
        self.own_offsets = offsets is None
        self.offsets = EndOffsets(kafka_options(settings.kafka)) if offsets is None else offsets
        horizon = ReadHorizon(Progress(self.offsets, self.uow.applied_offsets, topics.inputs), self.uow.database_time)
        self.janitor = WaitingJanitor(self.uow, settings.park_timeout_s, horizon, self.relay.wake, metrics)
        self.tasks: list[asyncio.Task[None]] = []

    def wake(self) -> None:
        self.relay.wake()
        self.sweeper.wake()

    async def start(self, listen: bool) -> None:
        if self.own_offsets:
            await self.offsets.start()
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
        """Wake the relay and the clock whenever a transaction wrote outbox rows or meetings."""
        import psycopg

        url = self.settings.database_url.replace("postgresql+psycopg://", "postgresql://", 1)
        channel = notify_channel(self.settings.db_schema)
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f'LISTEN "{channel}"')
                    async for _note in conn.notifies():
                        self.wake()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the polling loops go on meanwhile
                log.warning("LISTEN %s failed (%s); retrying", channel, exc)
                await asyncio.sleep(1.0)

    async def stop(self, graceful_timeout_s: float) -> None:
        """Stop the clock and janitor, let the relay publish what is left (bounded), close."""
        self.sweeper.request_stop()
        self.janitor.request_stop()
        self.relay.request_stop()
        for task in self.tasks:
            if task.get_name() != "relay":
                task.cancel()
        deadline = time.monotonic() + graceful_timeout_s
        relay_task = next((t for t in self.tasks if t.get_name() == "relay"), None)
        if relay_task is not None:
            try:
                await asyncio.wait_for(relay_task, max(0.1, deadline - time.monotonic()))
            except (TimeoutError, asyncio.CancelledError):
                relay_task.cancel()
            try:
                while time.monotonic() < deadline and await self.relay.publish_once():
                    pass
            except Exception:
                log.exception("final outbox drain failed; the rows stay for the next relay")
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.relay.stop()
        if self.own_offsets:
            await self.offsets.stop()


async def run_producers_process(
    settings: Settings, frozen_clock: int | None, graceful_timeout_s: float, early_signals: list[int] | None = None
) -> None:
    """`session-tally producers`: run until ``stop`` is set (SIGTERM/SIGINT). Every second (and when it
    stops) it prints its counters as one line ``METRICS {json}`` on stdout, which the parent worker
    merges into its /metrics."""
    import json
    import signal

    from session_tally.metrics import Metrics
    from session_tally.worker import build_clock
    from storage.db import async_engine

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if early_signals:  # a signal that came while starting up, before the handlers above existed
        stop.set()
    metrics = Metrics()
    engine = async_engine(settings.database_url, settings.db_schema, pool_size=3)
    producers = Producers(settings, build_clock(frozen_clock), engine, metrics)

    def report() -> None:
        print("METRICS " + json.dumps(metrics.counters), flush=True)

    try:
        await producers.start(listen=True)
        print("session-tally producers ready", flush=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
            report()
            if not producers.alive() and not stop.is_set():
                raise RuntimeError("a producer task ended unexpectedly")
    finally:
        await producers.stop(graceful_timeout_s)
        await engine.dispose()
        report()
        print(f"session-tally producers stopped ({producers.relay.published} messages published)", flush=True)


def _libc_prctl() -> Any:
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:  # not glibc Linux: the child then outlives a SIGKILLed worker and stops on its own
        return None


_PRCTL = _libc_prctl()  # resolved in the parent: the forked child must not import or lock anything


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the worker dies, even by SIGKILL (Linux PR_SET_PDEATHSIG).
    Only a C call runs between fork and exec (no import, no lock), so threads in the parent are safe."""
    if _PRCTL is not None:
        _PRCTL(1, 15)  # PR_SET_PDEATHSIG, SIGTERM
