"""The waiting-event janitor expires nothing before it has run for a park timeout without failing:
after a worker (or PostgreSQL) was away longer than the timeout, what releases a waiting event may
still be unread in Kafka."""

from __future__ import annotations

import asyncio
from collections import Counter

from producers.clock import WaitingJanitor
from storage.unit_of_work import Report


class FakeUow:
    def __init__(self) -> None:
        self.expire_calls = 0
        self.release_calls = 0
        self.fail = False

    async def expire_waiting(self, timeout_s: float) -> Report:
        self.expire_calls += 1
        return Report(outcomes=Counter(rejected=1), outbox_rows=1)

    async def release_ready(self) -> Report:
        self.release_calls += 1
        if self.fail:
            raise ConnectionError("database away")
        return Report()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_nothing_expires_until_live_for_a_park_timeout_and_again_after_a_failure() -> None:
    uow, clock, published = FakeUow(), Clock(), []
    janitor = WaitingJanitor(uow, 30.0, lambda: published.append(1), monotonic=clock)  # type: ignore[arg-type]

    def round_at(t: float) -> None:
        clock.now = t
        asyncio.run(janitor.run_once())

    round_at(1000.0)
    round_at(1029.9)
    assert uow.expire_calls == 0 and uow.release_calls == 2  # releasing is never held back
    round_at(1030.0)
    assert uow.expire_calls == 1 and published == [1]
    uow.fail = True
    round_at(1031.0)  # expires (live long enough), then fails on PostgreSQL: the grace starts again
    assert uow.expire_calls == 2
    uow.fail = False
    round_at(1060.9)
    assert uow.expire_calls == 2
    round_at(1061.0)
    assert uow.expire_calls == 3
