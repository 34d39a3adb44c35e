"""The services are real: a broker that routes keyed messages and balances a consumer group, and a
PostgreSQL that commits and rolls back. Run `session-tally services up` first (see tests/conftest.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import text

from session_tally.config import Topics

pytestmark = pytest.mark.integration

DEADLINE_S = 60.0


async def test_keyed_message_round_trip(kafka_bootstrap: str, topics: Topics) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        first = await producer.send_and_wait(topics.path_events, key=b"path-1", value=b'{"n": 1}')
        second = await producer.send_and_wait(topics.path_events, key=b"path-1", value=b'{"n": 2}')
    finally:
        await producer.stop()
    assert second.partition == first.partition, "one key, one partition"
    assert second.offset == first.offset + 1

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    partition = TopicPartition(topics.path_events, first.partition)
    consumer.assign([partition])
    await consumer.start()
    try:
        consumer.seek(partition, first.offset)
        received = [await asyncio.wait_for(consumer.getone(), DEADLINE_S) for _ in range(2)]
    finally:
        await consumer.stop()
    assert [(m.key, m.value, m.offset) for m in received] == [
        (b"path-1", b'{"n": 1}', first.offset),
        (b"path-1", b'{"n": 2}', second.offset),
    ]


async def test_two_group_members_split_six_partitions(kafka_bootstrap: str, topics: Topics, topic_prefix: str) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    topic = topics.path_events
    members = [
        AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"{topic_prefix}smoke",
            auto_offset_reset="earliest",
            heartbeat_interval_ms=300,
            session_timeout_ms=10000,
        )
        for _ in range(2)
    ]
    for member in members:
        await member.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE_S
        received: list[dict[Any, list[Any]]] = [{}, {}]
        while not all(len(m.assignment()) == 3 for m in members):
            assert loop.time() < deadline, f"no 3+3 split: {[sorted(m.assignment()) for m in members]}"
            for member, got in zip(members, received, strict=True):
                for tp, records in (await member.getmany(timeout_ms=100)).items():
                    got.setdefault(tp, []).extend(records)
        first, second = (m.assignment() for m in members)
        assert first.isdisjoint(second)
        assert {tp.partition for tp in first | second} == set(range(6))

        # and records flow to the member that owns their partition
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            for partition in range(6):
                await producer.send_and_wait(topic, value=f"p{partition}".encode(), partition=partition)
        finally:
            await producer.stop()
        while sum(len(records) for got in received for records in got.values()) < 6:
            assert loop.time() < deadline, f"records received so far: {received}"
            for member, got in zip(members, received, strict=True):
                for tp, records in (await member.getmany(timeout_ms=100)).items():
                    got.setdefault(tp, []).extend(records)
        for member, got in zip(members, received, strict=True):
            assert set(got) <= member.assignment()
            for tp, records in got.items():
                assert [r.value for r in records] == [f"p{tp.partition}".encode()]
    finally:
        for member in members:
            await member.stop()


def test_postgres_commit_and_rollback(db_engine: Any, db_schema: str) -> None:
    assert db_engine.dialect.driver == "psycopg"
    table = f'"{db_schema}".smoke'
    with db_engine.begin() as conn:
        conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY, note text NOT NULL)"))
        conn.execute(text(f"INSERT INTO {table} VALUES (1, 'committed')"))

    with db_engine.connect() as conn:
        transaction = conn.begin()
        conn.execute(text(f"INSERT INTO {table} VALUES (2, 'rolled back')"))
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 2  # visible inside
        transaction.rollback()

    with pytest.raises(RuntimeError), db_engine.begin() as conn:
        conn.execute(text(f"INSERT INTO {table} VALUES (3, 'error')"))
        raise RuntimeError("abort the transaction")

    with db_engine.connect() as conn:  # a fresh connection sees only what was committed
        rows = conn.execute(text(f"SELECT id, note FROM {table} ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [(1, "committed")]
