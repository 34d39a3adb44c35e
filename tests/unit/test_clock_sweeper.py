"""The clock sweeper is woken by a committed batch only when that batch added a change earlier than the
instant the sweeper sleeps until (issue 13: waking it after every commit cost two queries per batch),
and a change announced while it sweeps is not lost. Unit tests with a fake unit of work."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from consumers.timers import ClockSweeper
from storage.unit_of_work import Report

S = 1_000_000  # µs per second


class FakeUow:
    """A unit of work whose clock stands still and whose sweeps are counted (and can be held)."""

    def __init__(self, now: int, due: int | None) -> None:
        self.now = now
        self.due = due
        self.sweeps = 0
        self.hold: asyncio.Event | None = None  # a sweep waits on it when set
        self.sweeping = asyncio.Event()

    def clock(self) -> int:
        return self.now

    async def sweep_clock(self) -> Report:
        self.sweeps += 1
        self.sweeping.set()
        if self.hold is not None:
            await self.hold.wait()
        return Report()

    async def next_due(self) -> int | None:
        return self.due


async def until(condition: Any, what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


async def test_a_commit_wakes_the_sweeper_only_for_an_earlier_change() -> None:
    uow = FakeUow(now=100 * S, due=None)
    sweeper = ClockSweeper(uow, lambda: None, max_sleep_s=60.0)  # type: ignore[arg-type]
    task = asyncio.create_task(sweeper.run())
    try:
        await until(lambda: sweeper._wakes_at is not None, "the first sweep to end")
        assert sweeper._wakes_at == 160 * S  # nothing due: it sleeps max_sleep_s
        sweeper.wake_for(200 * S)  # after the instant it wakes at anyway: no sweep now
        assert not sweeper._wake.is_set() and uow.sweeps == 1
        sweeper.wake_for(120 * S)  # before it: swept now
        await until(lambda: uow.sweeps == 2, "a sweep after an earlier change was announced")
    finally:
        sweeper.request_stop()
        await task


async def test_a_change_announced_during_a_sweep_shortens_the_next_sleep() -> None:
    uow = FakeUow(now=100 * S, due=None)
    uow.hold = asyncio.Event()
    sweeper = ClockSweeper(uow, lambda: None, max_sleep_s=60.0)  # type: ignore[arg-type]
    task = asyncio.create_task(sweeper.run())
    try:
        await until(uow.sweeping.is_set, "the first sweep to start")
        sweeper.wake_for(100 * S)  # due now, announced while the sweep (its query) runs
        assert sweeper._noted == 100 * S
        uow.hold.set()
        await until(lambda: uow.sweeps == 2, "the sweep that follows at once")
    finally:
        sweeper.request_stop()
        await task


async def test_the_earliest_due_change_bounds_the_sleep() -> None:
    uow = FakeUow(now=100 * S, due=103 * S)
    sweeper = ClockSweeper(uow, lambda: None, max_sleep_s=60.0)  # type: ignore[arg-type]
    task = asyncio.create_task(sweeper.run())
    try:
        await until(lambda: sweeper._wakes_at is not None, "the first sweep to end")
        assert sweeper._wakes_at == 103 * S
        sweeper.wake_for(104 * S)
        assert not sweeper._wake.is_set()
    finally:
        sweeper.request_stop()
        await task


def test_merged_reports_keep_every_field_and_the_earliest_change() -> None:
    """consumers.isolation.merge (a batch applied in halves) keeps what each half reported: every field
    of Report, so that a field added later cannot be forgotten there."""
    from collections import Counter
    from dataclasses import fields

    from consumers.isolation import merge

    def report(n: int, change: int) -> Report:
        marker: Any = [f"misrouted {n}"]  # stands for Misrouted records
        return Report(n, n, Counter(applied=n), Counter(x=n), n, n, n, n, marker, next_change_at=change)

    a, b = report(1, 30 * S), report(2, 20 * S)
    merged = merge(a, b)
    default = Report()
    for f in fields(Report):
        assert getattr(merged, f.name) != getattr(default, f.name), f.name
    assert merged.next_change_at == 20 * S
    assert merge(a, Report()).next_change_at == 30 * S
    assert merge(Report(), Report()).next_change_at is None
