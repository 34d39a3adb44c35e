"""Shared by the robustness tests (tests/integration/test_robustness_*.py): input records built and
published exactly as a test needs them (any key, value and header bytes; aiokafka, kcat), the expected
document when some lines are rejected for reasons `replay` cannot know (a wrong topic, a second
partition, a record PostgreSQL refuses), faults planted in the test's own PostgreSQL schema (triggers)
and the worker's /healthz read with a client-side bound.

Everything waits on conditions with deadlines (pipeline_helpers.wait_until); nothing sleeps to
synchronise."""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from domain.replay import replay
from domain.timefmt import parse_instant
from producers.publisher import LINE_HEADER
from session_tally.config import Settings
from tests.needs import tool

AT = "2026-03-10T12:00:00Z"
ORG, PROGRAM = "org-r", "prog-r"
Header = tuple[str, bytes | None]
#: (topic, key, value, headers) of one input record, published as given
Record = tuple[str, bytes | None, bytes | None, Sequence[Header]]


def event(
    event_id: str,
    kind: str,
    occurred_at: str,
    *,
    path: str | None = None,
    program: str | None = PROGRAM,
    role: str = "participant",
    data: dict[str, Any] | None = None,
    org: str = ORG,
) -> bytes:
    """One envelope (SPEC section 3) as compact JSON bytes."""
    doc: dict[str, Any] = {
        "event_id": event_id,
        "type": kind,
        "schema_version": 1,
        "occurred_at": occurred_at,
        "org_id": org,
    }
    if program is not None:
        doc["program_id"] = program
    if path is not None:
        doc["path_id"] = path
    doc["actor"] = {"id": "user-1", "role": role}
    doc["data"] = data or {}
    return json.dumps(doc, separators=(",", ":")).encode()


def setup_lines(program: str = PROGRAM) -> list[bytes]:
    """Session management on for the org, and one program with verification on."""
    return [
        event("setup-org", "organization.session_management_set", "2026-01-01T00:00:00Z", program=None,
              role="support", data={"enabled": True}),
        event(f"setup-{program}", "program.created", "2026-01-02T00:00:00Z", program=program, role="program_admin",
              data={"session_verification": True, "late_cancel_window": "PT24H", "auto_confirm_window": "P3D",
                    "authorized_hours": 10}),
    ]  # fmt: skip


def scheduled(event_id: str, path: str, meeting: str, day: int, program: str = PROGRAM) -> bytes:
    """``meeting.scheduled`` of a one-hour meeting on 2026-03-<day> at 10:00, scheduled on 2026-03-01."""
    return event(
        event_id,
        "meeting.scheduled",
        "2026-03-01T09:00:00Z",
        path=path,
        program=program,
        data={"meeting_id": meeting, "start": f"2026-03-{day:02d}T10:00:00Z", "end": f"2026-03-{day:02d}T11:00:00Z"},
    )


def confirmed(event_id: str, path: str, meeting: str, day: int, program: str = PROGRAM) -> bytes:
    """The participant confirms that meeting ``meeting`` (of :func:`scheduled`) took place."""
    return event(
        event_id,
        "meeting.confirmation_submitted",
        f"2026-03-{day:02d}T12:00:00Z",
        path=path,
        program=program,
        data={"meeting_id": meeting, "occurred": True},
    )


def line_headers(number: int, *extra: Header) -> list[Header]:
    return [(LINE_HEADER, str(number).encode()), *extra]


async def send_records(bootstrap: str, records: Sequence[Record]) -> dict[str, int]:
    """Publish records one by one, each acknowledged before the next is sent (order across topics is
    the list's); returns 'topic:partition' -> next offset, like pipeline_helpers.publish_lines."""
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    ends: dict[str, int] = {}
    try:
        for topic, key, value, headers in records:
            md = await producer.send_and_wait(topic, value, key=key, headers=list(headers))
            k = f"{md.topic}:{md.partition}"
            ends[k] = max(ends.get(k, 0), md.offset + 1)
    finally:
        await producer.stop()
    return ends


def routed(settings: Settings, lines: Sequence[bytes], first_line: int = 1) -> list[Record]:
    """Lines routed and keyed as `session-tally publish` does, with the line header (numbered from
    ``first_line``)."""
    from producers.routing import route

    out: list[Record] = []
    for number, raw in enumerate(lines, start=first_line):
        kind, key = route(raw)
        topic = settings.topics.admin_events if kind == "admin" else settings.topics.path_events
        out.append((topic, key, raw, line_headers(number)))
    return out


async def input_ends(settings: Settings) -> dict[str, int]:
    """The end offsets of both input topics now ('topic:partition' -> offset; partitions with records)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from session_tally.snapshot import topic_partitions

    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p)
            for t in settings.topics.inputs
            for p in await topic_partitions(settings.kafka_bootstrap_servers, t, 30)
        ]
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return {f"{tp.topic}:{tp.partition}": o for tp, o in ends.items() if o > 0}


def kcat_path() -> str:
    return tool("kcat")


def kcat_send(
    bootstrap: str, topic: str, key: bytes | None, value: bytes, headers: Sequence[tuple[bytes, bytes]], tmp: Path
) -> None:
    """One message with kcat (librdkafka), header keys and values passed as raw bytes on the command line
    (``-H $'\\xff\\xfe=v'``), with the murmur2 partitioner docs/publishers.md prescribes; returns once
    Kafka acknowledged it."""
    value_file = tmp / "kcat-value.bin"
    value_file.write_bytes(value)
    args: list[str | bytes] = [kcat_path(), "-P", "-b", bootstrap, "-t", topic, "-X", "message.timeout.ms=30000"]
    args += ["-X", "partitioner=murmur2_random", "-X", "enable.idempotence=true", "-X", "acks=all"]
    if key is not None:
        args += [b"-k", key]
    for name, val in headers:
        args += [b"-H", name + b"=" + val]
    done = subprocess.run([*args, str(value_file)], capture_output=True, timeout=60, check=False)
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 0 and "failed" not in stderr.lower(), stderr


def expected_document(lines: Sequence[bytes], at: str, rejected_here: dict[int, tuple[str | None, str]]) -> Any:
    """What the pipeline must publish for ``lines`` when the lines of ``rejected_here`` (line ->
    (event_id, reason)) are rejected by the pipeline for a reason replay cannot see (topic, partition, a
    record PostgreSQL refuses): replay of the file without those lines, plus those rejections, in the
    order the snapshot lists them (waiting reasons last, then by line)."""
    kept = [b"" if number in rejected_here else raw for number, raw in enumerate(lines, start=1)]
    doc = replay(kept, parse_instant(at))
    extra = [{"line": n, "event_id": eid, "reason": reason} for n, (eid, reason) in rejected_here.items()]
    waiting = ("unknown_program", "unknown_meeting")
    doc["rejected"] = sorted(doc["rejected"] + extra, key=lambda r: (r["reason"] in waiting, r["line"]))
    return doc


def health(http: str, timeout_s: float = 10.0) -> tuple[int, dict[str, Any]]:
    """The worker's /healthz: (HTTP status, JSON body), the body of a 503 too. ``timeout_s`` bounds the
    whole answer (socket timeout): a probe that takes longer raises (``TimeoutError``/``URLError``)."""
    try:
        with urllib.request.urlopen(http + "/healthz", timeout=timeout_s) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def metric_series(http: str, name: str) -> dict[str, float]:
    """Every series of metric ``name`` on /metrics: its label text (``{topic="...",partition="3"}`` or
    '') -> value."""
    with urllib.request.urlopen(http + "/metrics", timeout=5) as response:
        body = response.read().decode()
    out: dict[str, float] = {}
    for line in body.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        series, value = line.rsplit(" ", 1)
        base, _, labels = series.partition("{")
        if base == name:
            out["{" + labels if labels else ""] = float(value)
    return out


# --------------------------------------------------------------------------- faults planted in PostgreSQL


def migrate(settings: Settings) -> None:
    """Create the test schema's tables now (as a worker does at start), so that a test can plant a
    trigger on them before any record is processed."""
    from storage.db import upgrade

    upgrade(settings.database_url, settings.db_schema)


def sql(settings: Settings, statement: str) -> None:
    """Run DDL in the test's schema (autocommit)."""
    import psycopg

    from tests.integration.pipeline_helpers import libpq_url

    with psycopg.connect(libpq_url(settings.database_url), autocommit=True) as conn:
        conn.execute(f'SET search_path TO "{settings.db_schema}"')
        conn.execute(statement.encode())  # DDL built by these helpers, not user input


def plant_meeting_trigger(settings: Settings, meeting_id: str, sqlstate: str, message: str) -> None:
    """A trigger on ``meetings`` that raises SQLSTATE ``sqlstate`` whenever the row of ``meeting_id`` is
    written (insert or update; COPY fires it too): a record that PostgreSQL refuses, for reasons that
    are data (class 22) or an outage (class 08)."""
    sql(
        settings,
        f"""
        CREATE FUNCTION robustness_fault() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.meeting_id = '{meeting_id}' THEN
                RAISE EXCEPTION '{message}' USING ERRCODE = '{sqlstate}';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER robustness_fault BEFORE INSERT OR UPDATE ON meetings
            FOR EACH ROW EXECUTE FUNCTION robustness_fault();
        """,
    )


def remove_meeting_trigger(settings: Settings) -> None:
    sql(settings, "DROP TRIGGER robustness_fault ON meetings; DROP FUNCTION robustness_fault()")


def run_cli(settings: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """``session-tally ARGS`` with the test's settings in the environment."""
    import sys

    from tests.integration.pipeline_helpers import ROOT, worker_env

    done = subprocess.run(
        [sys.executable, "-m", "session_tally", *args],
        cwd=ROOT,
        env=worker_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check:
        assert done.returncode == 0, f"session-tally {' '.join(args)}: {done.returncode}\n{done.stderr[-3000:]}"
    return done


def run_async(coro: Any) -> Any:
    return asyncio.run(coro)
