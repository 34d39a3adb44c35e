"""Kafka over TLS and SASL, against a local broker that speaks nothing else (localsvc/kafka_tls.py).

The broker's certificates come from Java's keytool (a test CA, a broker certificate for localhost and
127.0.0.1); its SASL_SSL listener offers PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 (SCRAM users written at
format time), its SSL listener requires a client certificate. Every command runs as a user runs it: a
child process configured only by the environment (``Settings.as_env()``).

- each SASL mechanism connects (`topics create`/`topics check`); mutual TLS connects with the client
  certificate and is refused without;
- `topics create`, a worker (its subscribers, relay and health ping), `session-tally publish` of the
  equivalence stream and `session-tally snapshot`, all over SASL_SSL with SCRAM-SHA-512: the snapshot
  equals `replay`;
- a wrong password, a CA that did not sign the broker's certificate, a missing mechanism: one line
  saying what to fix, exit status 2, no traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from producers.kafka_access import KafkaAccess, kafka_options
from session_tally.config import Settings, Topics
from session_tally.localsvc.kafka_tls import SecureKafka
from tests.integration.pipeline_helpers import (
    ROOT,
    Probe,
    applied_fraction,
    assert_same_document,
    comparable,
    ready_info,
    start_worker_ex,
    stop_worker,
    wait_idle,
    wait_until,
)
from tests.integration.test_faults import health
from tests.integration.test_pipeline_equivalence import AT, expected, stream

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def secure_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureKafka]:
    broker = SecureKafka(tmp_path_factory.mktemp("secure-kafka"))
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


def on(settings: Settings, access: KafkaAccess) -> Settings:
    return settings.replace(kafka_bootstrap_servers=access.bootstrap_servers, kafka_security=access.security)


def cli(
    settings: Settings, *args: str, timeout_s: float = 180, env_changes: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`session-tally ARGS` in a child process configured by the environment only (``settings``, then
    ``env_changes``: variables that valid settings cannot hold)."""
    env = dict(os.environ) | settings.as_env() | (env_changes or {})
    return subprocess.run(
        [sys.executable, "-m", "session_tally", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exit status 2 and exactly one line on stderr (returned)."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    return lines[0]


def base_settings(topic_prefix: str, database_url: str, db_schema: str) -> Settings:
    return Settings(
        database_url=database_url,
        db_schema=db_schema,
        group_id=f"{topic_prefix}session-tally",
        topics=Topics.from_env(prefix=topic_prefix),
    )


def test_each_sasl_mechanism_and_mutual_tls_connect(secure_kafka: SecureKafka, topic_prefix: str) -> None:
    base = base_settings(topic_prefix, "postgresql+psycopg://unused@127.0.0.1:1/unused", "public")
    created = cli(on(base, secure_kafka.sasl("PLAIN")), "topics", "create")
    assert created.returncode == 0, created.stderr
    assert [line.split()[0] for line in created.stdout.splitlines()] == ["created"] * 5, created.stdout
    for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
        checked = cli(on(base, secure_kafka.sasl(mechanism)), "topics", "check")
        assert checked.returncode == 0, (mechanism, checked.stderr)
        assert [line.split()[0] for line in checked.stdout.splitlines()] == ["exists"] * 5, checked.stdout
    mutual = cli(on(base, secure_kafka.mtls()), "topics", "check")
    assert mutual.returncode == 0, mutual.stderr
    assert len(mutual.stdout.splitlines()) == 5
    refused = one_line(cli(on(base, secure_kafka.mtls(with_certificate=False)), "topics", "check"))
    assert "closed the connection" in refused and "KAFKA_SSL_CERTFILE" in refused, refused


async def end_offsets(access: KafkaAccess, topics: tuple[str, ...]) -> dict[str, int]:
    """'topic:partition' -> end offset, over the secure listener."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from session_tally.snapshot import topic_partitions

    consumer = AIOKafkaConsumer(**kafka_options(access), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in await topic_partitions(access, t)]
        return {f"{tp.topic}:{tp.partition}": n for tp, n in (await consumer.end_offsets(tps)).items() if n}
    finally:
        await consumer.stop()


def test_pipeline_over_sasl_ssl_scram_sha_512_equals_replay(
    secure_kafka: SecureKafka, topic_prefix: str, database_url: str, db_schema: str, tmp_path: Path
) -> None:
    access = secure_kafka.sasl("SCRAM-SHA-512")
    settings = on(base_settings(topic_prefix, database_url, db_schema), access)
    created = cli(settings, "topics", "create")
    assert created.returncode == 0, created.stderr
    events = tmp_path / "events.jsonl"
    events.write_bytes(b"\n".join(stream()[0]) + b"\n")

    worker = start_worker_ex(settings, tmp_path / "worker.log", clock=AT, park_timeout_s=120, http_port=0)
    try:
        http = ready_info(tmp_path / "worker.log", worker)["http"]
        assert health(http)["checks"]["kafka"] is True  # the health ping goes through SASL_SSL too
        published = cli(settings, "publish", str(events))
        assert published.returncode == 0, published.stderr
        ends = asyncio.run(end_offsets(access, settings.topics.inputs))
        assert sum(ends.values()) == len([line for line in stream()[0] if line.strip()])
        with Probe(settings) as probe:
            wait_until(
                lambda: (s := probe.state())["outbox"] == 0 and applied_fraction(s["offsets"], ends) == 1.0,
                120,
                "every input offset applied and the outbox empty",
                interval_s=0.2,
                procs=[worker],
            )
        assert stop_worker(worker) == 0, (tmp_path / "worker.log").read_text(errors="replace")[-3000:]
        # what still waits can no longer be released: a finisher with a short park timeout rejects it
        finisher = start_worker_ex(settings, tmp_path / "finisher.log", clock=AT, park_timeout_s=0.5)
        try:
            wait_idle(settings, ends, timeout_s=60, procs=[finisher])
        finally:
            assert stop_worker(finisher) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)

    snapshot = cli(settings, "snapshot")
    assert snapshot.returncode == 0, snapshot.stderr
    assert_same_document(comparable(json.loads(snapshot.stdout)), json.loads(expected()))


def test_wrong_credentials_and_certificates_are_one_line(
    secure_kafka: SecureKafka, topic_prefix: str, database_url: str, db_schema: str, tmp_path: Path
) -> None:
    base = base_settings(topic_prefix, database_url, db_schema)
    wrong = on(base, secure_kafka.sasl("SCRAM-SHA-512", password="not-the-password"))
    events = tmp_path / "events.jsonl"
    events.write_bytes(stream()[0][0] + b"\n")
    for args in (("topics", "check"), ("publish", str(events)), ("snapshot", "--timeout", "20")):
        line = one_line(cli(wrong, *args))
        assert "refused the credentials" in line and "KAFKA_SASL_PASSWORD" in line, (args, line)

    # a worker logs as it goes; its last line says why it stopped, without a traceback
    result = cli(wrong, "worker", "--http-port", "-1", "--log-level", "WARNING")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("session-tally worker: ") and "refused the credentials" in last, result.stderr

    plain_wrong = on(base, secure_kafka.sasl("PLAIN", password="not-the-password"))
    assert "refused the credentials" in one_line(cli(plain_wrong, "topics", "check"))

    # the system's CAs did not sign the test broker's certificate
    untrusted = dataclasses.replace(secure_kafka.sasl("SCRAM-SHA-256").security, ssl_cafile=None)
    line = one_line(cli(on(base, KafkaAccess(secure_kafka.bootstrap, untrusted)), "topics", "check"))
    assert "TLS with Kafka" in line and "certificate verify failed" in line and "KAFKA_SSL_CAFILE" in line, line

    # settings that cannot work are refused before connecting
    sasl = on(base, secure_kafka.sasl("SCRAM-SHA-256"))
    line = one_line(cli(sasl, "topics", "check", env_changes={"KAFKA_SASL_MECHANISM": ""}))
    assert "KAFKA_SASL_MECHANISM" in line, line
