"""How units of work on one program serialise in PostgreSQL.

A settings change re-evaluates every meeting of its program, so it must not run beside a batch that
reads the program's policy (that batch could create a path and a meeting under the old policy, unseen by
the change). Batches that only read a program run side by side. Observed through ``pg_locks``: the
test holds the program's lock as a concurrent batch would, and looks at who waits."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from sqlalchemy import text

from storage.db import async_engine, upgrade
from storage.messages import SourceRecord
from storage.unit_of_work import PROGRAM_LOCK_CLASS, UnitOfWork, _lock_key

pytestmark = pytest.mark.integration

ADMIN, PATH = "in.admin", "in.path"
AT = 1_780_000_000_000_000  # 2026-05-28, after every event below


def envelope(n: int, kind: str, role: str, data: dict[str, Any], path: str | None = None) -> bytes:
    doc: dict[str, Any] = {
        "event_id": f"ev-{n}",
        "type": kind,
        "schema_version": 1,
        "occurred_at": f"2026-01-{n:02d}T00:00:00Z",
        "org_id": "org-1",
        "program_id": "prog-1",
        "actor": {"id": "u-1", "role": role},
        "data": data,
    }
    if path:
        doc["path_id"] = path
    return json.dumps(doc).encode()


SETUP = [
    (ADMIN, envelope(1, "organization.session_management_set", "support", {"enabled": True})),
    (
        ADMIN,
        envelope(
            2,
            "program.created",
            "program_admin",
            {"name": "P", "session_verification": True, "late_cancel_window": "PT24H", "authorized_hours": 10,
             "auto_confirm_window": "P3D"},
        ),
    ),
]  # fmt: skip
SETTINGS_CHANGE = (ADMIN, envelope(3, "program.settings_updated", "support", {"late_cancel_window": "PT48H"}))
MEETING_ON_NEW_PATH = (
    PATH,
    envelope(
        4,
        "meeting.scheduled",
        "participant",
        {"meeting_id": "m-1", "start": "2026-02-10T10:00:00Z", "end": "2026-02-10T11:00:00Z"},
        path="path-new",
    ),
)


class Offsets:
    def __init__(self) -> None:
        self.next = {ADMIN: 0, PATH: 0}

    def records(self, *items: tuple[str, bytes]) -> list[SourceRecord]:
        out = []
        for topic, raw in items:
            out.append(SourceRecord(topic, 0, self.next[topic], b"k", raw, ()))
            self.next[topic] += 1
        return out


async def waiting_advisory_modes(conn: Any) -> list[str]:
    """Modes of the advisory locks other sessions are waiting for."""
    rows = await conn.execute(
        text("SELECT mode FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND pid <> pg_backend_pid()")
    )
    return [r.mode for r in rows]


async def until(predicate: Any, timeout_s: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


async def scenario(database_url: str, schema: str, batch: tuple[str, bytes]) -> tuple[list[str], bool]:
    """Hold prog-1's lock shared (a batch reading the program), start a unit of work on ``batch``: return
    the lock modes it waited for (empty when it did not wait) and whether it finished."""
    upgrade(database_url, schema)
    engine = async_engine(database_url, schema)
    offsets = Offsets()
    try:
        uow = UnitOfWork(engine, ADMIN, lambda: AT)
        await uow.process_batch(offsets.records(*SETUP))
        async with engine.connect() as holder, engine.connect() as observer:
            await holder.execute(
                text(f"SELECT pg_advisory_xact_lock_shared({PROGRAM_LOCK_CLASS}, :k)"),
                {"k": _lock_key("program", "prog-1")},
            )
            task = asyncio.create_task(uow.process_batch(offsets.records(batch)))

            async def settled() -> list[str] | bool:
                modes = await waiting_advisory_modes(observer)
                await observer.rollback()
                return modes or task.done()

            seen = await until(settled, 30, "the unit of work to wait or finish")
            waited = seen if isinstance(seen, list) else []
            await holder.rollback()  # ends the holder's transaction: its lock goes
            report = await asyncio.wait_for(task, 30)
            assert report.outcomes["applied"] == 1, report
            return waited, True
    finally:
        await engine.dispose()


def test_a_settings_change_waits_for_batches_reading_its_program(database_url: str, db_schema: str) -> None:
    waited, finished = asyncio.run(scenario(database_url, db_schema, SETTINGS_CHANGE))
    assert waited == ["ExclusiveLock"] and finished


def test_batches_reading_one_program_run_side_by_side(database_url: str, db_schema: str) -> None:
    waited, finished = asyncio.run(scenario(database_url, db_schema, MEETING_ON_NEW_PATH))
    assert waited == [] and finished
