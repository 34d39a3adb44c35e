"""The campaign's publisher: input messages as `session-tally publish` sends them (routing, keys, the
line header, and SPEC section 3's order across the two input topics), from a background thread, as a
backlog or paced as a live stream, with a hold for outages of the broker.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from producers.routing import route
from session_tally.config import Settings
from session_tally.snapshot import LINE_HEADER
from tests.campaign.harness import CampaignError


@dataclass(frozen=True, slots=True)
class Msg:
    """One input message: ``topic`` is "admin", "path" or a literal topic name."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...] = ()


def numbered(lines: Iterable[bytes], first: int = 1) -> Iterator[Msg]:
    """Lines routed and keyed as `session-tally publish` does, each with its line header."""
    for number, raw in enumerate(lines, start=first):
        if raw.strip():
            kind, key = route(raw)
            yield Msg(kind, key, raw, ((LINE_HEADER, str(number).encode()),))


class Feed:
    """Publishes messages in a thread: a backlog as fast as Kafka takes it (``rate`` None) or a live
    stream paced at ``rate`` messages a second. Idempotent producer, ``acks=all``; an admin message is
    acknowledged before a later path message is sent (SPEC section 3). :meth:`hold` parks the publisher
    between sends, with nothing in flight (a broker can then be stopped without losing an acknowledged
    send or leaving one unknown); :meth:`release` lets it go on."""

    def __init__(self, settings: Settings, msgs: Iterable[Msg], rate: float | None = None, name: str = "feed") -> None:
        self.settings = settings
        self.msgs = msgs
        self.rate = rate
        self.sent = 0
        self.ends: dict[str, int] = {}
        self.error: BaseException | None = None
        self.started_at: float | None = None
        self.finished_at: float | None = None
        self._stop = False
        self._gate = threading.Event()
        self._gate.set()
        self._idle = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Feed:
        self._thread.start()
        return self

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def count(self) -> int:
        """Messages sent so far (for a monitor's lag)."""
        return self.sent

    def wait(self, timeout_s: float) -> bool:
        """Whether the stream has been published, waiting up to ``timeout_s`` for it."""
        self._thread.join(timeout_s)
        return self.done

    def join(self, timeout_s: float = 600.0) -> dict[str, int]:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise CampaignError(f"publishing took longer than {timeout_s:.0f} s")
        if self.error is not None:
            raise CampaignError(f"publishing failed: {self.error!r}") from self.error
        return dict(self.ends)

    def hold(self, timeout_s: float = 60.0) -> None:
        self._idle.clear()
        self._gate.clear()
        if not self._idle.wait(timeout_s) and not self.done:
            raise CampaignError("the publisher did not come to rest")

    def release(self) -> None:
        self._gate.set()

    def stop(self, timeout_s: float = 120.0) -> dict[str, int]:
        """End the stream where it is (everything sent is acknowledged); the end offsets. The input is
        then the first :attr:`sent` messages."""
        self._stop = True
        self._gate.set()
        return self.join(timeout_s)

    def _run(self) -> None:
        try:
            asyncio.run(self._publish())
        except BaseException as exc:  # reported by join()
            self.error = exc
        finally:
            self._idle.set()

    async def _publish(self) -> None:
        from aiokafka import AIOKafkaProducer

        t = self.settings.topics
        names = {"admin": t.admin_events, "path": t.path_events}
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            enable_idempotence=True,
            acks="all",
            linger_ms=5,
            request_timeout_ms=120_000,
            max_request_size=4 * 1024 * 1024,
        )
        await producer.start()
        pending: list[Any] = []
        admin_unacked: list[Any] = []

        async def settle() -> None:
            for md in await asyncio.gather(*pending):
                k = f"{md.topic}:{md.partition}"
                self.ends[k] = max(self.ends.get(k, 0), md.offset + 1)
            pending.clear()
            admin_unacked.clear()

        self.started_at = time.monotonic()
        origin = self.started_at  # of the pacing; moved on by the time spent on hold
        try:
            for msg in self.msgs:
                if self._stop:
                    break
                if self.rate is not None and self.sent >= (time.monotonic() - origin) * self.rate:
                    await settle()  # ahead of the pace: wait for the next slice of 50 ms
                    if (delay := origin + self.sent / self.rate - time.monotonic()) > 0:
                        await asyncio.sleep(max(delay, 0.05))
                elif len(pending) >= 2000:
                    await settle()
                if not self._gate.is_set():
                    await settle()
                    held = time.monotonic()
                    self._idle.set()
                    while not self._gate.is_set():
                        await asyncio.sleep(0.05)
                    origin += time.monotonic() - held
                if msg.topic == "path" and admin_unacked:
                    await asyncio.gather(*admin_unacked)
                    admin_unacked.clear()
                topic = names.get(msg.topic, msg.topic)
                future = await producer.send(topic, msg.value, key=msg.key, headers=list(msg.headers) or None)
                pending.append(future)
                if msg.topic == "admin":
                    admin_unacked.append(future)
                self.sent += 1
            await settle()
        finally:
            self.finished_at = time.monotonic()
            await producer.stop()


def publish_all(settings: Settings, msgs: Iterable[Msg]) -> dict[str, int]:
    """A backlog: publish everything now; the end offsets."""
    return Feed(settings, msgs).start().join()
