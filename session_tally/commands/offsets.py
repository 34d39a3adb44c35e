"""`session-tally offsets show|skip|reset|history`: the input offsets the workers really use.

Workers keep the next offset to apply of every input partition in PostgreSQL (``consumer_offsets``),
in the same transaction as the state, and start every assigned partition there. Kafka's committed
offsets are only a copy, so Kafka's own ``kafka-consumer-groups --reset-offsets`` changes nothing:
these commands are the tools that do (docs/operations.md, "Offsets").
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from typing import Any

EPILOG = """\
examples:
  session-tally offsets show                          # per input partition: end, applied, lag
  session-tally offsets show --json
  session-tally offsets skip --topic session-mgmt.path-events --partition 3 --offset 1207 \\
      --reason "record crashes the worker, ticket OPS-12"   # rejects that one record, audited
  session-tally offsets reset --topic session-mgmt.path-events --partition 3 --to-offset 1000 \\
      --reason "re-apply after restore"               # workers of the group must be stopped
  session-tally offsets history                       # what operators did (operator_audit)

`skip` works with the workers running: the record (the next one its partition would apply) is put on
the rejected topic with the reason you give, and its partition goes on. `reset` moves where partitions
resume; it refuses while members of the consumer groups are alive (--force to override; workers then
pick it up at their next rebalance). Re-applying records that were applied before is safe: their event
ids are remembered, so they count as duplicates. Exit status 0, 1 when refused, 2 when a service is away.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "offsets",
        help="show, skip or reset the input offsets the workers keep in PostgreSQL",
        description="The input offsets the workers use (in PostgreSQL, not Kafka's committed offsets).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    show = actions.add_parser("show", help="end offset, applied offset and lag of every input partition")
    show.add_argument("--json", action="store_true", help="print JSON instead of a table")
    skip = actions.add_parser("skip", help="reject one record (the next to apply of its partition) and go on")
    reset = actions.add_parser("reset", help="set where partitions resume (workers stopped)")
    for q in (skip, reset):
        q.add_argument("--topic", required=True, help="input topic (full name)")
        q.add_argument("--partition", type=int, required=True)
        q.add_argument("--reason", required=True, help="why (kept in operator_audit and, for skip, as detail)")
        q.add_argument("--operator", default=None, help="who (default: the login name)")
    skip.add_argument("--offset", type=int, required=True, help="the offset of the record to skip")
    where = reset.add_mutually_exclusive_group(required=True)
    where.add_argument("--to-offset", type=int)
    where.add_argument("--to-earliest", action="store_true", help="Kafka's log start offset (re-apply all)")
    where.add_argument("--to-latest", action="store_true", help="Kafka's end offset (skip what is there now)")
    reset.add_argument("--force", action="store_true", help="even while consumer group members are alive")
    actions.add_parser("history", help="what operators did, newest first")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from session_tally.config import Settings

    settings = Settings.from_env()
    handler = {"show": _show, "skip": _skip, "reset": _reset, "history": _history}[args.action]
    try:
        return asyncio.run(handler(settings, args))
    except LookupError as exc:  # a topic that does not exist
        return _refuse(f"{exc.args[0]}: create the topics with `session-tally topics create`")


def _operator(args: argparse.Namespace) -> str:
    return args.operator or getpass.getuser()


async def _engine(settings: Any) -> Any:
    """The database, migrated first (idempotent; the same as a worker does at start-up)."""
    from session_tally.commands.common import migrated_engine

    return await migrated_engine(settings)


async def _ends(settings: Any, topics: tuple[str, ...]) -> dict[tuple[str, int], int]:
    from consumers.kafka_offsets import EndOffsets
    from producers.kafka_access import kafka_options

    offsets = EndOffsets(kafka_options(settings.kafka))
    await offsets.start()
    try:
        return await offsets.ends_of(topics)
    finally:
        await offsets.stop()


async def _show(settings: Any, args: argparse.Namespace) -> int:
    from storage import operator

    engine = await _engine(settings)
    try:
        applied = await operator.applied_offsets(engine)
    finally:
        await engine.dispose()
    ends = await _ends(settings, settings.topics.inputs)
    rows: list[dict[str, Any]] = [
        {"topic": t, "partition": p, "end": end, "applied": applied.get((t, p)), "lag": end - applied.get((t, p), 0)}
        for (t, p), end in sorted(ends.items())
    ]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    width = max(len(r["topic"]) for r in rows) if rows else 10
    print(f"{'topic':<{width}} {'partition':>9} {'end':>10} {'applied':>10} {'lag':>8}")
    for r in rows:
        applied_text = "-" if r["applied"] is None else str(r["applied"])
        print(f"{r['topic']:<{width}} {r['partition']:>9} {r['end']:>10} {applied_text:>10} {r['lag']:>8}")
    print(f"total lag: {sum(r['lag'] for r in rows)} records")
    return 0


async def _fetch(settings: Any, topic: str, partition: int, offset: int) -> Any:
    """The record at ``offset`` (an aiokafka ConsumerRecord), or None when Kafka no longer has it."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from consumers.tolerant_records import install
    from producers.kafka_access import kafka_options

    install()
    consumer = AIOKafkaConsumer(enable_auto_commit=False, auto_offset_reset="none", **kafka_options(settings.kafka))
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        for _ in range(25):
            got = await consumer.getmany(tp, timeout_ms=200, max_records=1)
            for record in got.get(tp, []):
                return record if record.offset == offset else None
        return None
    except Exception:
        return None
    finally:
        await consumer.stop()


async def _skip(settings: Any, args: argparse.Namespace) -> int:
    from domain import reasons as R
    from storage import operator
    from storage.messages import SourceRecord
    from storage.unit_of_work import UnitOfWork

    key = (args.topic, args.partition)
    if args.topic not in settings.topics.inputs:
        return _refuse(f"{args.topic} is not an input topic ({', '.join(settings.topics.inputs)})")
    engine = await _engine(settings)
    try:
        applied = (await operator.applied_offsets(engine)).get(key, 0)
        if applied != args.offset:
            return _refuse(
                f"the next record {args.topic}:{args.partition} applies is at offset {applied}, not {args.offset}: "
                "only that one can be skipped (see `session-tally offsets show`)"
            )
        record = await _fetch(settings, args.topic, args.partition, args.offset)
        if record is None:
            return _refuse(f"Kafka has no record at {args.topic}:{args.partition}@{args.offset}")
        source = SourceRecord(
            record.topic, record.partition, record.offset, record.key, record.value, tuple(record.headers or ())
        )
        uow = UnitOfWork(engine, settings.topics.admin_events, _now_us, settings.topics.path_events)
        who = _operator(args)
        detail = f"skipped by an operator ({who}): {args.reason}"
        report = await uow.reject_records([source], R.SCHEMA_VIOLATION, detail)
        if not report.outbox_rows:
            return _refuse("the record was applied meanwhile; nothing skipped")
        where = {"topic": args.topic, "partition": args.partition, "offset": args.offset}
        await operator.audit(engine, "offsets skip", who, {"why": args.reason, **where})
    finally:
        await engine.dispose()
    print(f"skipped {args.topic}:{args.partition}@{args.offset}: on the rejected topic with the reason given")
    return 0


async def _group_members(settings: Any) -> int:
    from aiokafka.admin import AIOKafkaAdminClient

    from producers.kafka_access import kafka_options

    admin = AIOKafkaAdminClient(**kafka_options(settings.kafka))
    await admin.start()
    try:
        members = 0
        # one group per request: aiokafka 0.14 cannot decode a DescribeGroups response of two groups from
        # a Kafka 4 broker (the connection drops on a buffer underrun)
        for group in (settings.group_id, f"{settings.group_id}.admin"):
            described = await admin.describe_consumer_groups([group])
            members += sum(len(g["members"]) for d in described for g in d.to_object()["groups"])
        return members
    finally:
        await admin.close()


async def _reset(settings: Any, args: argparse.Namespace) -> int:
    from storage import operator

    if args.topic not in settings.topics.inputs:
        return _refuse(f"{args.topic} is not an input topic ({', '.join(settings.topics.inputs)})")
    if not args.force and (members := await _group_members(settings)):
        return _refuse(f"{members} consumer group member(s) alive: stop the workers first (or --force)")
    target = args.to_offset
    if args.to_latest:
        target = (await _ends(settings, (args.topic,)))[(args.topic, args.partition)]
    elif args.to_earliest:
        target = 0  # a consumer at 0 starts at the log start offset (auto_offset_reset=earliest)
    engine = await _engine(settings)
    try:
        previous = await operator.set_offsets(
            engine, {(args.topic, args.partition): target}, _operator(args), args.reason
        )
    finally:
        await engine.dispose()
    before = previous[(args.topic, args.partition)]
    print(f"{args.topic}:{args.partition}: next offset {before if before is not None else '-'} -> {target}")
    return 0


async def _history(settings: Any, args: argparse.Namespace) -> int:
    from storage import operator

    engine = await _engine(settings)
    try:
        rows = await operator.audit_rows(engine)
    finally:
        await engine.dispose()
    for r in rows:
        print(f"{r['recorded_at']}  {r['operator']:<12} {r['action']:<16} {json.dumps(r['detail'])}")
    if not rows:
        print("no operator actions recorded")
    return 0


def _now_us() -> int:
    import time

    return time.time_ns() // 1000


def _refuse(message: str) -> int:
    print(f"session-tally offsets: {message}", file=sys.stderr)
    return 1
