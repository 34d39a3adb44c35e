"""The web app's two ends on Kafka.

:class:`Reader` reads, without a consumer group, every partition of:

- the tallies and statuses topics from the beginning (the tallies topic is compacted, so this is the
  latest tally of every path; the statuses topic gives every meeting) into :class:`web.view.View`;
  ``View.ready`` turns true once the end offsets seen at start-up are reached;
- the rejected topic from its end at start-up: only rejections of changes this process published
  matter, and those come later (a restarted web app has forgotten its pending changes).

:class:`Writer` publishes ordinary envelopes (SPEC section 3) with an idempotent ``acks=all`` producer:
a fresh UUID event id, ``occurred_at`` now, the actor of the signed-in user; admin events keyed by
org_id on the admin topic, path events keyed by path_id on the path topic (aiokafka's default
partitioner is murmur2, like Kafka's). Every envelope is validated with the domain's models first, so
the app never publishes a message the schema refuses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from domain import events as E
from domain.timefmt import format_instant, instant_from_datetime
from web.pending import Change, Pending
from web.view import Hub, View

log = logging.getLogger("session_tally.web")


class InvalidChange(ValueError):
    """The form's values do not make a valid event (the message says which field)."""


def now_us() -> int:
    return instant_from_datetime(datetime.now(UTC))  # the one wall-clock reading of the web app


def build_envelope(
    event_type: str,
    actor_id: str,
    role: str,
    org_id: str,
    data: dict[str, Any],
    program_id: str | None = None,
    path_id: str | None = None,
    occurred_at: int | None = None,
) -> tuple[dict[str, Any], bytes]:
    """An envelope and its bytes, validated by the domain's models (InvalidChange when refused)."""
    doc: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": event_type,
        "schema_version": 1,
        "occurred_at": format_instant(now_us() if occurred_at is None else occurred_at),
        "org_id": org_id,
        "actor": {"id": actor_id, "role": role},
        "data": data,
    }
    if program_id is not None:
        doc["program_id"] = program_id
    if path_id is not None:
        doc["path_id"] = path_id
    raw = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    parsed = E.parse(raw)
    checked = parsed if isinstance(parsed, E.Invalid) else E.validate(parsed)
    if isinstance(checked, E.Invalid):
        raise InvalidChange(checked.detail)
    return doc, raw


class Writer:
    def __init__(self, settings: Any, pending: Pending) -> None:
        self.settings = settings
        self.pending = pending
        self._producer: Any = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        from producers.kafka_access import kafka_options
        from producers.kafka_client import throttle_metadata_updates

        producer = AIOKafkaProducer(
            **kafka_options(self.settings.kafka),
            enable_idempotence=True,
            acks="all",
            linger_ms=0,
            request_timeout_ms=30_000,
        )
        throttle_metadata_updates(producer.client)
        await producer.start()
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def publish(self, user: Any, event_type: str, org_id: str, data: dict[str, Any], **ids: str | None) -> Change:
        """Validate, publish and await the broker's acknowledgement; the change is then pending."""
        occurred = now_us()
        doc, raw = build_envelope(event_type, user.id, user.role, org_id, data, occurred_at=occurred, **ids)
        admin = event_type in E.ADMIN_TYPES
        topic = self.settings.topics.admin_events if admin else self.settings.topics.path_events
        key = org_id if admin else doc["path_id"]
        change = Change(
            event_id=doc["event_id"],
            user_id=user.id,
            type=event_type,
            org_id=org_id,
            program_id=doc.get("program_id"),
            path_id=doc.get("path_id"),
            meeting_id=data.get("meeting_id"),
            occurred_at=occurred,
            data=data,
        )
        self.pending.add(change)  # before the send: a fast rejection must find it
        try:
            await self._send(topic, raw, key.encode())
        except BaseException:
            self.pending.changes.pop(change.event_id, None)
            raise
        log.info("published %s %s by %s (%s)", event_type, change.event_id, user.id, user.role)
        return change

    async def _send(self, topic: str, value: bytes, key: bytes) -> None:
        """Send one message and wait for the broker's acknowledgement (acks=all)."""
        await self._producer.send_and_wait(topic, value, key=key)


class Reader:
    """Follows the output topics into the view, settles the pending changes whose effect shows or whose
    rejection came back, and tells the hub which paths and users to redraw."""

    def __init__(self, settings: Any, view: View, pending: Pending, hub: Hub) -> None:
        self.settings = settings
        self.view = view
        self.pending = pending
        self.hub = hub
        self.error: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._consumer: Any = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="web-reader")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass

    async def _partitions(self, consumer: Any, topic: str) -> list[Any]:
        from aiokafka import TopicPartition

        while True:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic)
            if parts:
                return [TopicPartition(topic, p) for p in sorted(parts)]
            self.error = f"waiting for topic {topic} (create it with `session-tally topics create`)"
            await asyncio.sleep(1.0)

    async def _run(self) -> None:
        from aiokafka import AIOKafkaConsumer

        from producers.kafka_access import kafka_options

        t = self.settings.topics
        while True:
            consumer = AIOKafkaConsumer(
                **kafka_options(self.settings.kafka),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                group_id=None,
            )
            try:
                await consumer.start()
                await self._follow(consumer, t)
            except asyncio.CancelledError:
                await consumer.stop()
                raise
            except Exception as exc:  # Kafka unreachable: say so on /healthz, retry
                self.error = f"cannot read Kafka: {exc}"
                log.warning("reader: %s; retrying in 2 s", exc)
                await consumer.stop()
                await asyncio.sleep(2.0)

    async def _follow(self, consumer: Any, t: Any) -> None:
        outputs = [await self._partitions(consumer, name) for name in (t.path_tallies, t.meeting_statuses)]
        rejected = await self._partitions(consumer, t.rejected)
        everything = [tp for group in outputs for tp in group] + rejected
        consumer.assign(everything)
        await consumer.seek_to_beginning(*[tp for group in outputs for tp in group])
        ends = await consumer.end_offsets(everything)
        for tp in rejected:  # from the end: only rejections of what this process publishes later
            consumer.seek(tp, ends[tp])
        catch_up = {tp: ends[tp] for group in outputs for tp in group if ends[tp] > 0}
        self.error = None
        if not catch_up:
            self.view.ready = True
        while True:
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            changed: set[str] = set()
            for tp, records in batch.items():
                for record in records:
                    self._take(tp.topic, record.value, changed)
            if changed:
                settled = []
                for path_id in changed:
                    settled += self.pending.settle_path(path_id, self.view)
                if self.view.ready:
                    self.hub.changed(changed)
                for change in settled:
                    self.hub.notify(change.user_id)
            if not self.view.ready:
                for tp in list(catch_up):
                    if await consumer.position(tp) >= catch_up[tp]:
                        del catch_up[tp]
                if not catch_up:
                    self.view.ready = True
                    log.info("caught up: %d paths, %d meetings", len(self.view.paths), len(self.view.meeting_path))

    def _take(self, topic: str, value: bytes | None, changed: set[str]) -> None:
        t = self.settings.topics
        try:
            doc = json.loads(value) if value is not None else None
        except ValueError:
            doc = None
        if not isinstance(doc, dict):
            log.warning("ignored an unreadable record on %s", topic)
            return
        try:
            if topic == t.path_tallies:
                path_id = self.view.apply_tally(doc)
            elif topic == t.meeting_statuses:
                path_id = self.view.apply_status(doc)
            else:
                change = self.pending.rejected(doc)
                if change is not None:
                    self.hub.notify(change.user_id)
                return
        except (KeyError, TypeError) as exc:
            log.warning("ignored a record of %s without %s", topic, exc)
            return
        if path_id is not None:
            changed.add(path_id)
