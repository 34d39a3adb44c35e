"""Fixtures for tests that need the real Kafka broker and PostgreSQL.

Where the services come from, in this order:

1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` from the environment (``session-tally services up``
   writes them to ``.services/env``; ``make test`` loads that file);
2. else, when a Docker engine answers, throwaway containers of docker-compose.yml's own ``kafka`` and
   ``postgres`` services (tests/compose_services.py: the same apache/kafka image and KRaft settings, the
   same postgres image and options);
3. else the test FAILS (not skips) and says how to start the services.

Only tests that request these fixtures need the services: pure unit tests run anywhere. Each test gets
its own topic names (a unique prefix) and its own PostgreSQL schema, so tests never see each other's data
and the shared services need no cleaning between runs.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from session_tally.config import Settings, Topics

START_SERVICES_HINT = (
    "run `session-tally services up` (or `make up`) and then `source .services/env` "
    "(or run the whole suite with `make test`)"
)


def _docker_engine_answers() -> bool:
    from session_tally.commands.services import docker_engine_available

    return docker_engine_available()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a running Kafka broker."""
    configured = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "")
    if configured:
        yield configured
        return
    if not _docker_engine_answers():
        pytest.fail(
            f"KAFKA_BOOTSTRAP_SERVERS is not set and no Docker engine answers: {START_SERVICES_HINT}",
            pytrace=False,
        )
    from tests.compose_services import kafka_container

    with kafka_container() as bootstrap:
        yield bootstrap


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """SQLAlchemy URL (``postgresql+psycopg://...``) of a running PostgreSQL database."""
    configured = os.environ.get("DATABASE_URL", "")
    if configured:
        yield configured
        return
    if not _docker_engine_answers():
        pytest.fail(f"DATABASE_URL is not set and no Docker engine answers: {START_SERVICES_HINT}", pytrace=False)
    from tests.compose_services import postgres_container

    with postgres_container() as url:
        yield url


@pytest.fixture(scope="session")
def db_engine(database_url: str) -> Iterator[Any]:
    """One SQLAlchemy engine for the session (``sqlalchemy.Engine``)."""
    from sqlalchemy import create_engine

    engine = create_engine(database_url, pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture
def topic_prefix() -> str:
    """A prefix unique to this test, e.g. ``t1a2b3c4d5e.``, for topic names and consumer groups."""
    return f"t{uuid.uuid4().hex[:10]}."


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Delete test topics, so that the shared broker does not accumulate partitions run after run."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics(names)
    finally:
        await admin.close()


@pytest.fixture
def topics(kafka_bootstrap: str, topic_prefix: str) -> Iterator[Topics]:
    """The five topics under this test's prefix, created on the broker (6 partitions each), deleted after."""
    from session_tally.topics import ensure_topics

    named = Topics.from_env(prefix=topic_prefix)
    mismatches = asyncio.run(ensure_topics(kafka_bootstrap, named))
    assert mismatches == [], mismatches
    yield named
    asyncio.run(delete_topics(kafka_bootstrap, [*named.inputs, *named.outputs]))


@pytest.fixture
def db_schema(db_engine: Any) -> Iterator[str]:
    """A fresh, empty PostgreSQL schema ``t_<hex>`` for this test; dropped (CASCADE) afterwards."""
    from sqlalchemy import text

    name = f"t_{uuid.uuid4().hex[:12]}"
    with db_engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        yield name
    finally:
        with db_engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))


@pytest.fixture
def settings(kafka_bootstrap: str, database_url: str, db_schema: str, topics: Topics, topic_prefix: str) -> Settings:
    """Settings pointing at the real services, this test's topics, schema and consumer group."""
    return Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        database_url=database_url,
        db_schema=db_schema,
        group_id=f"{topic_prefix}session-tally",
        topics=topics,
    )
