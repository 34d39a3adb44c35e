"""What operator commands change in PostgreSQL, each with a row in ``operator_audit`` (who, what, when)
in the same transaction. Nothing here decides a policy question.

The workers keep their input offsets in ``consumer_offsets`` (committed with the state), so these rows,
not Kafka's committed offsets, say where each input partition resumes (docs/operations.md).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from storage import tables as T


async def applied_offsets(engine: AsyncEngine) -> dict[tuple[str, int], int]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(T.consumer_offsets))
        return {(r.topic, r.partition): r.next_offset for r in rows}


async def audit(engine: AsyncEngine, action: str, operator: str, detail: dict[str, Any]) -> None:
    async with engine.begin() as conn:
        await conn.execute(T.operator_audit.insert().values(action=action, operator=operator, detail=detail))


async def set_offsets(
    engine: AsyncEngine, offsets: dict[tuple[str, int], int], operator: str, why: str
) -> dict[tuple[str, int], int | None]:
    """Set the next offset to apply of these partitions (locking their rows, so never under a batch in
    flight); returns the previous values (None: never applied)."""
    previous: dict[tuple[str, int], int | None] = {}
    async with engine.begin() as conn:
        for (topic, partition), offset in sorted(offsets.items()):
            row = await conn.execute(
                text("SELECT next_offset FROM consumer_offsets WHERE topic = :t AND partition = :p FOR UPDATE"),
                {"t": topic, "p": partition},
            )
            found = row.scalar()
            previous[(topic, partition)] = found
            await conn.execute(
                text(
                    "INSERT INTO consumer_offsets (topic, partition, next_offset) VALUES (:t, :p, :o) "
                    "ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset"
                ),
                {"t": topic, "p": partition, "o": offset},
            )
        detail = {
            "why": why,
            "partitions": [
                {"topic": t, "partition": p, "from": previous[(t, p)], "to": o} for (t, p), o in sorted(offsets.items())
            ],
        }
        await conn.execute(T.operator_audit.insert().values(action="offsets reset", operator=operator, detail=detail))
    return previous


async def audit_rows(engine: AsyncEngine, limit: int = 50) -> list[dict[str, Any]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(T.operator_audit).order_by(T.operator_audit.c.id.desc()).limit(limit))
        return [
            {
                "id": r.id,
                "action": r.action,
                "operator": r.operator,
                "recorded_at": r.recorded_at.isoformat(),
                "detail": r.detail if isinstance(r.detail, dict) else json.loads(r.detail),
            }
            for r in rows
        ]


REDRIVE = "rejected redrive"  # the operator_audit action of `session-tally rejected redrive`


async def redriven(engine: AsyncEngine) -> dict[tuple[str, int, int], dict[str, Any]]:
    """Every rejection re-driven so far, by the input record it rejected (topic, partition, offset): the
    record written in its ``operator_audit`` row (old and new event id, where it went) and when."""
    a = T.operator_audit
    out: dict[tuple[str, int, int], dict[str, Any]] = {}
    async with engine.connect() as conn:
        rows = await conn.execute(select(a.c.detail, a.c.recorded_at).where(a.c.action == REDRIVE).order_by(a.c.id))
        for r in rows:
            detail = r.detail if isinstance(r.detail, dict) else json.loads(r.detail)
            for item in detail.get("records", []):
                src = item["source"]
                out[(src["topic"], src["partition"], src["offset"])] = {**item, "recorded_at": r.recorded_at}
    return out
