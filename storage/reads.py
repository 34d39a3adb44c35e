"""Read-only queries for the web app and `session-tally audit`: organizations, program settings and the
admin-only audit.

Nothing here writes or decides anything: rows are mapped to plain values (programs to
:class:`domain.model.Program`, whose own methods say which setting is in force when). The pipeline is the
only writer of these tables; a reader may see a batch's effects only once its transaction committed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from domain.model import Program, SettingsUpdate
from storage import tables as T
from storage.rows import event_key


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One admin-only text (path note, dispute comment, resolution note) with who wrote it and when."""

    kind: str  # "path_note" | "dispute" | "dispute_resolution"
    event_id: str
    path_id: str
    meeting_id: str | None
    actor_id: str
    actor_role: str
    occurred_at: int  # µs since the epoch (event time)
    text: str | None
    outcome: str | None
    authorized_hours: Decimal | None
    recorded_at: datetime | None = None  # when the pipeline stored it (database time)


def program_from_row(r: Any) -> Program:
    """A ``programs`` row as the domain's Program (creation values and the update history)."""
    program = Program(
        program_id=r.program_id,
        org_id=r.org_id,
        session_verification=r.session_verification,
        late_cancel_window=r.late_cancel_window,
        auto_confirm_window=r.auto_confirm_window,
        authorized_hours=r.authorized_hours,
        created_at=r.created_at,
        name=r.name,
    )
    program.updates = [SettingsUpdate.from_json(u) for u in r.updates]
    return program


async def orgs(engine: AsyncEngine) -> dict[str, bool]:
    """org_id -> whether session management is switched on, for every organization ever switched."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(T.orgs.c.org_id, T.orgs.c.enabled))
        return {r.org_id: bool(r.enabled) for r in rows}


async def programs(engine: AsyncEngine, org_ids: set[str] | None = None) -> list[Program]:
    """Every program (of ``org_ids`` when given), by org then name then id."""
    stmt = select(T.programs)
    if org_ids is not None:
        stmt = stmt.where(T.programs.c.org_id.in_(sorted(org_ids)))
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    found = [program_from_row(r) for r in rows]
    return sorted(found, key=lambda p: (p.org_id, (p.name or "").lower(), p.program_id))


async def program(engine: AsyncEngine, program_id: str) -> Program | None:
    async with engine.connect() as conn:
        row = (await conn.execute(select(T.programs).where(T.programs.c.program_id == program_id))).first()
    return None if row is None else program_from_row(row)


async def program_paths(engine: AsyncEngine, program_id: str) -> list[str]:
    """The paths registered to a program (also those of a program with verification off)."""
    async with engine.connect() as conn:
        rows = await conn.execute(select(T.paths.c.path_id).where(T.paths.c.program_id == program_id))
        return sorted(r.path_id for r in rows)


async def path_program(engine: AsyncEngine, path_id: str) -> str | None:
    """The program a path is registered to (None: no such path)."""
    async with engine.connect() as conn:
        found: str | None = await conn.scalar(select(T.paths.c.program_id).where(T.paths.c.path_id == path_id))
        return found


async def audit(engine: AsyncEngine, path_ids: list[str], limit: int = 500) -> list[AuditRow]:
    """The admin-only texts of these paths, newest first (by event time, then by recording order)."""
    if not path_ids:
        return []
    a = T.admin_audit
    stmt = (
        select(a)
        .where(a.c.path_id.in_(sorted(set(path_ids))))
        .order_by(a.c.occurred_at.desc(), a.c.id.desc())
        .limit(limit)
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(stmt)).all()
    return [
        AuditRow(
            kind=r.kind,
            event_id=r.event_id,
            path_id=r.path_id,
            meeting_id=r.meeting_id,
            actor_id=r.actor_id,
            actor_role=r.actor_role,
            occurred_at=r.occurred_at,
            text=r.text,
            outcome=r.outcome,
            authorized_hours=r.authorized_hours,
            recorded_at=r.recorded_at,
        )
        for r in rows
    ]


async def processed(engine: AsyncEngine, event_ids: list[str]) -> set[str]:
    """Which of these event ids the pipeline has processed (applied, skipped, parked or rejected)."""
    if not event_ids:
        return set()
    by_key = {event_key(e): e for e in event_ids}
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(T.processed_events.c.event_key).where(T.processed_events.c.event_key.in_(sorted(by_key)))
        )
        return {by_key[r.event_key] for r in rows}
