"""producers.kafka_client.send_now against the real broker: a lingering batch goes out at once.

The producer lingers 60 s, so without send_now the message would wait a minute before it is sent; the
test waits at most 20 s for its acknowledgement (a deadline on a condition, not a timed assertion)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from producers.kafka_client import send_now

pytestmark = pytest.mark.integration


def test_send_now_ends_the_linger_of_one_topic(kafka_bootstrap: str) -> None:
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    names = [f"send-now-{uuid.uuid4().hex[:8]}-{t}" for t in ("admin", "path")]

    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(n, 1, 1) for n in names])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(
            bootstrap_servers=kafka_bootstrap, linger_ms=60_000, enable_idempotence=True, acks="all"
        )
        await producer.start()
        try:
            await producer.partitions_for(names[0])
            await producer.partitions_for(names[1])
            first = await producer.send(names[0], b"admin", key=b"k")
            other = await producer.send(names[1], b"path", key=b"k")
            assert send_now(producer, names[0]) is True
            metadata = await asyncio.wait_for(first, 20)  # without send_now: about 60 s
            assert metadata.topic == names[0] and metadata.offset == 0
            assert not other.done()  # the other topic still lingers
            assert send_now(producer, names[1]) is True
            assert (await asyncio.wait_for(other, 20)).offset == 0
        finally:
            await producer.stop()

    asyncio.run(go())


def test_send_now_without_the_internals_does_nothing() -> None:
    assert send_now(object(), "any-topic") is False
