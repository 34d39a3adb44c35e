"""Checks on where an input record came from, before the engine judges it. They belong to the
pipeline, not to the engine: a file given to ``replay`` has no topics or partitions.

- **Topic.** An event type of the admin topic (org and program events, keyed by ``org_id``) that comes
  on the path topic, or a path or meeting event that comes on the admin topic, would bypass the order
  SPEC section 3 relies on (one partition per org for admin events; one per path for path events).
- **Partition.** Every event of one path (path topic) or one org (admin topic) must arrive on one
  partition: two publishers with different partitioners (murmur2, the Java default and
  ``session-tally publish``'s; CRC32, librdkafka's default) put one key on two partitions, and the
  path's events are then applied in no defined order. The first partition a path (org) is seen on is
  recorded in ``partition_keys``; its events on another partition are rejected.

A record that fails either is rejected (``schema_violation``, with a detail that says what to fix)
*before* the duplicate check: its event id is not remembered, so the same event published correctly
afterwards is applied. Owners never change once recorded (an operator who adds partitions to an input
topic must clear ``partition_keys`` for it with the workers stopped), so they are cached per process.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from domain import events as E
from domain import reasons as R
from storage import messages as M
from storage.codec import dumps_text

CACHE_SIZE = 200_000
Decoded = tuple[M.SourceRecord, str | None, Any]


@dataclass(frozen=True)
class Misrouted:
    """Events of one path (org) that arrived on another partition than the first ones."""

    topic: str
    key: str
    partition: int
    owner: int
    offset: int = -1  # of the first such record in the batch (for the log)
    event_id: str | None = None


class Screen:
    """Applies the topic and partition checks to decoded records; one per unit of work (its cache)."""

    def __init__(self, admin_topic: str, path_topic: str | None = None) -> None:
        self.admin_topic = admin_topic
        self.path_topic = path_topic
        self._owners: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._pending: dict[tuple[str, str], int] = {}  # learned in the transaction under way

    def committed(self) -> None:
        """The transaction that ran :meth:`run` committed: what it learned can be cached."""
        for key, partition in self._pending.items():
            self._remember(key, partition)
        self._pending = {}

    async def run(self, conn: AsyncConnection, decoded: list[Decoded]) -> tuple[list[Decoded], list[Misrouted]]:
        self._pending = {}
        out: list[Decoded] = []
        keyed: list[tuple[int, tuple[str, str]]] = []
        for i, (rec, event_id, event) in enumerate(decoded):
            if not isinstance(event, E.Envelope):
                out.append((rec, event_id, event))
                continue
            wrong = self._wrong_topic(rec, event)
            if wrong is not None:
                out.append((rec, None, E.Invalid(R.SCHEMA_VIOLATION, wrong, event_id)))
                continue
            entity = event.org_id if rec.topic == self.admin_topic else getattr(event, "path_id", event.org_id)
            keyed.append((i, (rec.topic, entity)))
            out.append((rec, event_id, event))
        if not keyed:
            return out, []
        owners = await self._owners_of(conn, {(i, key, out[i][0].partition) for i, key in keyed})
        misrouted: dict[tuple[str, str, int], Misrouted] = {}
        for i, key in keyed:
            rec, event_id, event = out[i]
            owner = owners[key]
            if owner != rec.partition:
                misrouted.setdefault(
                    (*key, rec.partition), Misrouted(key[0], key[1], rec.partition, owner, rec.offset, event_id)
                )
                what = "org" if rec.topic == self.admin_topic else "path"
                detail = (
                    f"the events of {what} {key[1]} arrive on partition {owner} of {rec.topic}, this one on "
                    f"partition {rec.partition}: the publisher's partitioner differs (use murmur2, e.g. "
                    "librdkafka's partitioner=murmur2_random; see docs/publishers.md)"
                )
                out[i] = (rec, None, E.Invalid(R.SCHEMA_VIOLATION, detail, event_id))
        return out, list(misrouted.values())

    def _wrong_topic(self, rec: M.SourceRecord, event: Any) -> str | None:
        admin_type = event.type in E.ADMIN_TYPES
        on_admin = rec.topic == self.admin_topic
        if admin_type == on_admin:
            return None
        if admin_type:
            return (
                f"{event.type} is an admin event: publish it on {self.admin_topic} (keyed by org_id), "
                f"not on {rec.topic}"
            )
        path_topic = self.path_topic or "the path topic"
        return f"{event.type} is a path event: publish it on {path_topic} (keyed by path_id), not on {rec.topic}"

    async def _owners_of(self, conn: AsyncConnection, wanted: set[tuple[int, tuple[str, str], int]]) -> dict[Any, int]:
        """The owning partition of every key, recording the first partition seen for new keys (in the
        batch's order; a race with another worker is settled by the table's primary key)."""
        owners: dict[tuple[str, str], int] = {}
        for _i, key, _p in wanted:
            cached = self._owners.get(key)
            if cached is not None:
                owners[key] = cached
        missing = {key for _i, key, _p in wanted if key not in owners}
        if missing:
            owners.update(await _select_owners(conn, missing))
            first: dict[tuple[str, str], int] = {}
            for _i, key, partition in sorted(wanted):
                if key not in owners and key not in first:
                    first[key] = partition
            if first:
                await conn.execute(
                    text(
                        "INSERT INTO partition_keys (topic, key, partition) SELECT topic, key, partition "
                        "FROM json_to_recordset(CAST(:j AS json)) AS x(topic text, key text, partition int) "
                        "ON CONFLICT DO NOTHING"
                    ),
                    {"j": _json([{"topic": t, "key": k, "partition": p} for (t, k), p in sorted(first.items())])},
                )
                owners.update(await _select_owners(conn, set(first)))  # ours, or another worker's first
        self._pending.update(owners)
        return owners

    def _remember(self, key: tuple[str, str], partition: int) -> None:
        self._owners[key] = partition
        self._owners.move_to_end(key)
        if len(self._owners) > CACHE_SIZE:
            self._owners.popitem(last=False)


async def _select_owners(conn: AsyncConnection, keys: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    rows = await conn.execute(
        text(
            "SELECT p.topic, p.key, p.partition FROM partition_keys p "
            "JOIN json_to_recordset(CAST(:j AS json)) AS x(topic text, key text) USING (topic, key)"
        ),
        {"j": _json([{"topic": t, "key": k} for t, k in sorted(keys)])},
    )
    return {(r.topic, r.key): r.partition for r in rows}


def _json(value: Any) -> str:
    return dumps_text(value)
