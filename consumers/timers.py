"""Time-driven status changes (start -> unconfirmed, deadline -> auto_confirmed or late_canceled) and
the expiry of events that waited too long.

Every meeting row carries the instant of its next clock-driven change (computed by the domain). The
sweeper sleeps until the earliest one (at most ``max_sleep_s``, and wakes early when a batch of this
process adds an earlier one: ``wake_for``; other processes' batches are seen at its next poll), then
moves every due meeting in one transaction per batch of paths: locked paths are skipped by the other
workers' sweepers (SKIP LOCKED) and a moved meeting's next instant moves forward in the same
transaction, so each change is published exactly once whatever number of workers run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from storage.unit_of_work import Report, UnitOfWork

log = logging.getLogger("session_tally.clock")


class ClockSweeper:
    def __init__(
        self, uow: UnitOfWork, on_published: Callable[[], None], metrics: Any = None, max_sleep_s: float = 0.25
    ) -> None:
        self.uow = uow
        self.on_published = on_published
        self.metrics = metrics
        self.max_sleep_s = max_sleep_s
        self._wake = asyncio.Event()
        self._stopping = False
        self._wakes_at: int | None = None  # µs (uow.clock) the sweeper sleeps until; None: it is sweeping
        self._noted: int | None = None  # the earliest change announced while it was sweeping

    def wake(self) -> None:
        self._wake.set()

    def wake_for(self, due: int) -> None:
        """Wake now when a meeting's change at ``due`` (µs) comes before the instant the sweeper sleeps
        until (a sweep in progress looks at the earliest instant again when it ends)."""
        wakes_at = self._wakes_at
        if wakes_at is None:
            self._noted = due if self._noted is None else min(self._noted, due)
        elif due < wakes_at:
            self._wake.set()

    def request_stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        while not self._stopping:
            self._wakes_at = self._noted = None
            try:
                report = await self.uow.sweep_clock()
                if report.outbox_rows:
                    self.on_published()
                if self.metrics is not None and report.status_changes:
                    self.metrics.inc("session_tally_clock_status_changes_total", report.status_changes)
                if report.records:
                    continue  # more may be due
                due = await self.uow.next_due()
                sleep = self.max_sleep_s
                if due is not None:
                    sleep = max(0.0, min(sleep, (due - self.uow.clock()) / 1e6))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("clock sweep failed; retrying")
                if self.metrics is not None:
                    self.metrics.inc("session_tally_clock_failures_total")
                sleep = 1.0
            if self._noted is not None:
                sleep = max(0.0, min(sleep, (self._noted - self.uow.clock()) / 1e6))
            self._wakes_at = self.uow.clock() + int(sleep * 1e6)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), sleep)
            except TimeoutError:
                pass


class Horizon(Protocol):
    """See consumers.horizon.ReadHorizon."""

    lag_s: float | None

    async def advance(self) -> datetime | None: ...


class WaitingJanitor:
    """Rejects events that waited too long, and retries (safety net) waiting events whose program or
    meeting exists.

    "Too long" is measured against what the consumers have read, not against the wall clock alone: an
    event parked at ``p`` is rejected only when everything published up to ``p + park timeout`` has been
    applied (the read horizon of :mod:`consumers.horizon`), so a consumer far behind, a restart after a
    long stop or a stalled partition never rejects an event whose program or meeting is still unread."""

    def __init__(
        self,
        uow: UnitOfWork,
        park_timeout_s: float,
        horizon: Horizon,
        on_published: Callable[[], None],
        metrics: Any = None,
        every_s: float = 1.0,
    ) -> None:
        self.uow = uow
        self.park_timeout_s = park_timeout_s
        self.horizon = horizon
        self.on_published = on_published
        self.metrics = metrics
        self.every_s = every_s
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    async def run_once(self) -> None:
        """One round: advance the read horizon, expire what waited a park timeout before it, release."""
        try:
            expired = Report()
            reached = await self.horizon.advance()
            if self.metrics is not None:
                lag = self.horizon.lag_s
                self.metrics.set("session_tally_read_horizon_lag_seconds", -1 if lag is None else lag)
            if reached is not None:
                expired = await self.uow.expire_waiting(reached - timedelta(seconds=self.park_timeout_s))
            released = await self.uow.release_ready()
            if expired.outbox_rows or released.outbox_rows:
                self.on_published()
            if self.metrics is not None:
                if expired.outcomes:
                    self.metrics.inc("session_tally_waiting_expired_total", sum(expired.outcomes.values()))
                for reason, n in (expired.reasons + released.reasons).items():
                    self.metrics.inc("session_tally_rejected_total", n, reason=reason)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("waiting-event janitor failed; retrying")
            if self.metrics is not None:
                self.metrics.inc("session_tally_clock_failures_total")

    async def run(self) -> None:
        while not self._stop.is_set():
            await self.run_once()
            try:
                await asyncio.wait_for(self._stop.wait(), self.every_s)
            except TimeoutError:
                pass
