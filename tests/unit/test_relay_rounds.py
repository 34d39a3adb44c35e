"""How a relay round ends when it cannot finish (producers/relay.py), without Kafka or PostgreSQL: a round
abandoned because it was held up is a warning, not a failure, also when its session was ended meanwhile
(the rollback then fails on top of it); anything else is the caller's failure; records handed before the
failure are settled and superseded. The real moment is tests/integration/test_relay_late_records.py."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest

from producers import relay as relay_module
from producers.relay import LanesMaybeLost, Relay
from storage.messages import STATUSES, TALLIES


def new_relay() -> Relay:
    return Relay(engine=None, bootstrap="127.0.0.1:9", topics={}, clock=lambda: 42)  # type: ignore[arg-type]


class Row:
    def __init__(self, topic: str, key: bytes, value: dict[str, Any]) -> None:
        self.topic, self.key, self.value = topic, key, json.dumps(value).encode()


async def test_an_abandoned_round_whose_session_ended_meanwhile_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    relay = new_relay()

    async def held_up_then_closed(started: float) -> int:
        try:
            raise LanesMaybeLost("35.0 s since the rows were read (limit 10 s)")
        except LanesMaybeLost:
            raise ConnectionError("terminating connection due to administrator command") from None

    monkeypatch.setattr(relay, "_round", held_up_then_closed)
    with caplog.at_level(logging.WARNING, logger="session_tally.relay"):
        assert await relay.publish_once() == 0
    assert "relay round abandoned, nothing deleted: 35.0 s" in caplog.text


async def test_another_failure_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    relay = new_relay()

    async def fails(started: float) -> int:
        raise ConnectionError("the database went away")

    monkeypatch.setattr(relay, "_round", fails)
    with pytest.raises(ConnectionError):
        await relay.publish_once()


async def test_records_handed_before_a_failure_are_settled_then_superseded(monkeypatch: pytest.MonkeyPatch) -> None:
    relay = new_relay()
    calls: list[tuple[set[str], set[str], int]] = []

    async def supersede(engine: Any, paths: set[str], meetings: set[str], now: int) -> int:
        calls.append((set(paths), set(meetings), now))
        return len(paths) + len(meetings)

    monkeypatch.setattr(relay_module, "supersede", supersede)
    acked: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def hands_then_fails(started: float) -> int:
        relay._handed.append(([Row(TALLIES, b"path-1", {"path_id": "path-1"})], acked))
        relay._handed.append(([Row(STATUSES, b"path-1", {"meeting_id": "m-1"}), Row("rejected", b"k", {})], None))
        asyncio.get_running_loop().call_later(0.01, acked.set_result, None)  # acknowledged a moment later
        raise ConnectionError("the delete failed")

    monkeypatch.setattr(relay, "_round", hands_then_fails)
    with pytest.raises(ConnectionError):
        await relay.publish_once()
    assert acked.done()  # waited for before the new versions were written
    assert calls == [({"path-1"}, {"m-1"}, 42)]


async def test_a_supersede_that_fails_is_kept_and_tried_again(monkeypatch: pytest.MonkeyPatch) -> None:
    relay = new_relay()
    attempts: list[int] = []

    async def supersede(engine: Any, paths: set[str], meetings: set[str], now: int) -> int:
        attempts.append(now)
        if len(attempts) == 1:
            raise ConnectionError("the database is away")
        return 1

    async def nothing(started: float) -> int:
        return 0

    monkeypatch.setattr(relay_module, "supersede", supersede)
    monkeypatch.setattr(relay, "_round", nothing)
    relay._to_supersede = ({"path-1"}, set())
    assert await relay.publish_once() == 0  # the round goes on although the supersede failed
    assert relay._to_supersede == ({"path-1"}, set())
    relay._supersede_after = 0.0  # the retry delay has passed
    await relay.publish_once()
    assert len(attempts) == 2 and relay._to_supersede == (set(), set())
