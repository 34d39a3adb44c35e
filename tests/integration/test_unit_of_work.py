"""The unit of work on the real PostgreSQL gives exactly what `replay` gives, for every scenario, in
one batch or record by record, and a redelivered batch changes nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from domain.replay import replay
from domain.timefmt import parse_instant
from producers.publisher import LINE_HEADER
from producers.routing import route
from session_tally.snapshot import build_document
from storage import tables as T
from storage.db import async_engine, upgrade
from storage.messages import SourceRecord
from storage.unit_of_work import UnitOfWork

pytestmark = pytest.mark.integration
SCENARIOS = sorted(p for p in (Path(__file__).parent.parent / "scenarios").iterdir() if p.is_dir())
ADMIN, PATH = "in.admin", "in.path"


def records_of(lines: list[bytes]) -> list[SourceRecord]:
    offsets = {ADMIN: 0, PATH: 0}
    out = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        kind, key = route(raw)
        topic = ADMIN if kind == "admin" else PATH
        out.append(SourceRecord(topic, 0, offsets[topic], key, raw, ((LINE_HEADER, str(number).encode()),)))
        offsets[topic] += 1
    return out


async def outbox_document(engine: Any) -> dict[str, Any]:
    async with engine.connect() as conn:
        rows = (await conn.execute(select(T.outbox).order_by(T.outbox.c.id))).all()
    by_topic: dict[str, list[dict[str, Any]]] = {"tallies": [], "statuses": [], "rejected": []}
    for r in rows:
        by_topic[r.topic].append(json.loads(r.value))
    return build_document(by_topic["tallies"], by_topic["statuses"], by_topic["rejected"])


def comparable(doc: dict[str, Any]) -> dict[str, Any]:
    for t in doc["tallies"]:
        t.pop("version", None)
        t.pop("as_of", None)
    return doc


async def run_pipeline(database_url: str, schema: str, lines: list[bytes], at: int, batch: int) -> dict[str, Any]:
    upgrade(database_url, schema)
    engine = async_engine(database_url, schema)
    try:
        uow = UnitOfWork(engine, ADMIN, lambda: at)
        records = records_of(lines)
        for i in range(0, len(records), batch):
            await uow.process_batch(records[i : i + batch])
        # redeliver everything: nothing may change
        before = await outbox_document(engine)
        await uow.process_batch(records)
        await uow.expire_waiting(parked_before=await uow.database_time())
        after_expiry = await outbox_document(engine)
        assert before["tallies"] == after_expiry["tallies"]
        return after_expiry
    finally:
        await engine.dispose()


@pytest.mark.parametrize("batch", [1000, 1], ids=["one-batch", "record-by-record"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_unit_of_work_matches_replay(database_url: str, db_schema: str, scenario: Path, batch: int) -> None:
    lines = (scenario / "events.jsonl").read_bytes().split(b"\n")
    at = parse_instant((scenario / "at.txt").read_text().strip())
    expected = comparable(replay(lines, at))
    got = comparable(asyncio.run(run_pipeline(database_url, db_schema, lines, at, batch)))
    assert got == expected
