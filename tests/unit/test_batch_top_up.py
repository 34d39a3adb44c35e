"""A batch takes in the records fetched while FastStream handed it over (consumers/subscriber.py
``_top_up``): they join the batch after its own records, and the message that is rewound and
acknowledged carries them too."""

from __future__ import annotations

import asyncio
import logging
from collections import namedtuple
from typing import Any

import pytest

from consumers import subscriber as S
from storage.messages import SourceRecord

Rec = namedtuple("Rec", "topic partition offset key value headers timestamp")
TP = namedtuple("TP", "topic partition")


class FakeConsumer:
    def __init__(self, fetched: dict[Any, list[Rec]] | Exception) -> None:
        self.fetched = fetched
        self.calls: list[tuple[int, int]] = []

    async def getmany(self, timeout_ms: int, max_records: int) -> dict[Any, list[Rec]]:
        self.calls.append((timeout_ms, max_records))
        if isinstance(self.fetched, Exception):
            raise self.fetched
        return self.fetched


class Msg:
    def __init__(self, records: tuple[Rec, ...]) -> None:
        self.raw_message = records


def rec(partition: int, offset: int) -> Rec:
    return Rec("path-events", partition, offset, b"k", b"{}", (), 1)


def run(consumer: FakeConsumer, msg: Msg, max_records: int = 10) -> list[SourceRecord]:
    sub = S.InputSubscriber(uow=None, on_committed=lambda _r: None, max_records=max_records)  # type: ignore[arg-type]
    sub.subscriber = type("Sub", (), {"consumer": consumer})()
    seen: list[SourceRecord] = []

    async def capture(_msg: Any, batch: list[SourceRecord]) -> None:
        seen.extend(batch)

    sub._handle = capture  # type: ignore[method-assign,assignment]
    asyncio.run(sub.handle(msg))
    return seen


def test_records_fetched_meanwhile_join_the_batch_after_its_own() -> None:
    consumer = FakeConsumer({TP("path-events", 0): [rec(0, 5), rec(0, 6)], TP("path-events", 3): [rec(3, 1)]})
    msg = Msg((rec(0, 3), rec(0, 4)))
    batch = run(consumer, msg)
    assert [(r.partition, r.offset) for r in batch] == [(0, 3), (0, 4), (0, 5), (0, 6), (3, 1)]
    # what a hand-back rewinds and the ack commits: every record of the batch
    assert [(r.partition, r.offset) for r in msg.raw_message] == [(0, 3), (0, 4), (0, 5), (0, 6), (3, 1)]
    assert consumer.calls == [(S.TOP_UP_MS, 8)]  # never more than the batch has room for


def test_a_full_batch_fetches_nothing_more() -> None:
    consumer = FakeConsumer({TP("path-events", 0): [rec(0, 9)]})
    msg = Msg(tuple(rec(0, i) for i in range(10)))
    batch = run(consumer, msg, max_records=10)
    assert len(batch) == 10 and consumer.calls == []
    assert len(msg.raw_message) == 10


def test_a_failed_fetch_leaves_the_batch_as_it_was(caplog: pytest.LogCaptureFixture) -> None:
    consumer = FakeConsumer(RuntimeError("broker went away"))
    msg = Msg((rec(1, 7),))
    with caplog.at_level(logging.WARNING, logger="session_tally.consumer"):
        batch = run(consumer, msg)
    assert [(r.partition, r.offset) for r in batch] == [(1, 7)]
    assert msg.raw_message == (rec(1, 7),)
    assert "could not add the records fetched meanwhile" in caplog.text
