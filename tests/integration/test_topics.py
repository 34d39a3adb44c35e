"""`ensure_topics` against the real broker: creates, is idempotent, reports what it must not change."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from session_tally.config import Topics
from session_tally.topics import ensure_topics, reconcile_topics, wanted_topics
from tests.conftest import delete_topics

pytestmark = pytest.mark.integration


async def _describe(bootstrap: str, names: list[str]) -> dict[str, tuple[int, str]]:
    """(partition count, cleanup.policy) per topic, read with the admin client directly."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
        policies: dict[str, str] = {}
        for response in await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, n) for n in names]):
            for _code, _msg, _type, name, entries in response.resources:
                for key, value, *_ in entries:
                    if key == "cleanup.policy":
                        policies[name] = value
    finally:
        await admin.close()
    return {n: (partitions[n], policies[n]) for n in names}


async def _create(bootstrap: str, name: str, partitions: int, policy: str = "delete") -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, partitions, 1, topic_configs={"cleanup.policy": policy})])
        assert [code for _, code, _ in response.topic_errors] == [0]
    finally:
        await admin.close()


@pytest.fixture
async def named(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[Topics]:
    """Topic names under this test's prefix (not created); whatever the test creates is deleted after."""
    names = Topics.from_env(prefix=topic_prefix)
    yield names
    await delete_topics(kafka_bootstrap, [*names.inputs, *names.outputs])


async def test_creates_the_five_topics_with_partitions_and_policies(kafka_bootstrap: str, named: Topics) -> None:
    assert await ensure_topics(kafka_bootstrap, named, input_partitions=6, output_partitions=3) == []

    described = await _describe(kafka_bootstrap, [*named.inputs, *named.outputs])
    assert described == {
        named.admin_events: (6, "delete"),
        named.path_events: (6, "delete"),
        named.path_tallies: (3, "compact"),
        named.meeting_statuses: (3, "delete"),
        named.rejected: (3, "delete"),
    }


async def test_is_idempotent(kafka_bootstrap: str, named: Topics) -> None:
    assert await ensure_topics(kafka_bootstrap, named) == []
    again = await reconcile_topics(kafka_bootstrap, wanted_topics(named))
    assert again.created == []
    assert sorted(again.existing) == sorted([*named.inputs, *named.outputs])
    assert again.mismatches == []
    assert await ensure_topics(kafka_bootstrap, named) == []


async def test_reports_a_wrong_partition_count_and_leaves_the_topic_alone(kafka_bootstrap: str, named: Topics) -> None:
    await _create(kafka_bootstrap, named.admin_events, partitions=2)

    mismatches = await ensure_topics(kafka_bootstrap, named)

    assert len(mismatches) == 1, mismatches
    assert named.admin_events in mismatches[0]
    assert "2 partitions" in mismatches[0] and "expected 6" in mismatches[0]
    described: Any = await _describe(kafka_bootstrap, [*named.inputs, *named.outputs])
    assert described[named.admin_events] == (2, "delete")  # reported, not altered
    assert described[named.path_events] == (6, "delete")  # the others were still created
    assert described[named.path_tallies] == (6, "compact")


async def test_reports_a_tallies_topic_that_is_not_compacted(kafka_bootstrap: str, named: Topics) -> None:
    await _create(kafka_bootstrap, named.path_tallies, partitions=6, policy="delete")

    mismatches = await ensure_topics(kafka_bootstrap, named)

    assert mismatches == [f"topic {named.path_tallies!r} has cleanup.policy=delete, expected compact"]
