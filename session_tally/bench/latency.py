"""The latency phase of the pipeline benchmark: live traffic offered at a rate, event-in to tally-out per event."""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from producers.kafka_access import KafkaTarget, kafka_options
from session_tally.bench.common import Progress, percentile
from session_tally.bench.workers import WorkerPool
from session_tally.config import Topics

# ---------------------------------------------------------------------------------------- latency


async def offer(
    bootstrap: KafkaTarget,
    topics: Topics,
    args: argparse.Namespace,
    pool: WorkerPool,
    progress: Progress,
    applied: Callable[[], tuple[int, int]],
) -> dict[str, Any]:
    """Publish the live profile evenly paced at ``args.rate`` for ``args.latency_seconds``; returns what was
    sent: the meeting.scheduled inputs as (path key, meeting id, Kafka timestamp ms) and the end offsets."""
    from aiokafka import AIOKafkaProducer

    from session_tally.traffic import TrafficConfig, generate_tagged

    config = TrafficConfig(
        seed=args.seed,
        orgs=5,
        programs=20,
        paths=max(500, int(2 * args.rate)),  # live profile: about 2 paths per event/s (see TrafficConfig)
        rate=args.rate,
        epoch=datetime.now(UTC).replace(microsecond=0),
    )
    total = max(1, int(args.rate * args.latency_seconds))
    names = {"admin": topics.admin_events, "path": topics.path_events}
    producer = AIOKafkaProducer(**kafka_options(bootstrap), enable_idempotence=True, acks="all", linger_ms=5)
    await producer.start()
    inputs: list[tuple[bytes, str, int]] = []
    ends: dict[str, int] = {}
    pending: list[Any] = []
    sent = 0
    timeline: list[list[float]] = []  # [seconds, sent, applied, outbox rows] about once a second

    async def settle() -> None:
        for md in await asyncio.gather(*pending):
            k = f"{md.topic}:{md.partition}"
            ends[k] = max(ends.get(k, 0), md.offset + 1)
        pending.clear()

    try:
        started = time.monotonic()
        interval = 1.0 / args.rate
        for i, tagged in enumerate(generate_tagged(config, total)):
            due = started + i * interval
            delay = due - time.monotonic()
            if delay > 0.002:
                await asyncio.sleep(delay)
            record = tagged.record
            ts = time.time_ns() // 1_000_000
            pending.append(await producer.send(names[record.topic], record.value, key=record.key, timestamp_ms=ts))
            sent += 1
            if tagged.kind == "meeting.scheduled" and record.key is not None:
                meeting_id = json.loads(record.value)["data"]["meeting_id"]
                inputs.append((record.key, meeting_id, ts))
            if len(pending) >= 500:
                await settle()
            if not sent % 100 and time.monotonic() - started >= len(timeline):
                pool.check_alive()
                done, outbox = applied()
                elapsed = time.monotonic() - started
                timeline.append([round(elapsed, 2), sent, done, outbox])
                progress.show(
                    f"  offering: {sent:,}/{total:,} sent, {sent / elapsed:,.0f}/s; applied {done:,} "
                    f"(behind by {sent - done:,}); outbox {max(outbox, 0):,} rows",
                    force=True,
                )
        await settle()
        seconds = time.monotonic() - started
    finally:
        progress.done()
        await producer.stop()
    scheduled = len(inputs)
    return {
        "sent": sent,
        "seconds": seconds,
        "inputs": inputs,
        "ends": ends,
        "scheduled": scheduled,
        "timeline": timeline,
    }


def latency_figures(
    inputs: Sequence[tuple[bytes, str, int]],
    tallies: Sequence[tuple[bytes | None, int, bytes]],
    statuses: Sequence[tuple[bytes | None, int, bytes]],
) -> dict[str, Any]:
    """Event in -> tally out of every meeting.scheduled that changed its path's tally (ms, Kafka timestamps).

    The tally out is the one written by the transaction that applied the event: the meeting's first status
    message and that tally are computed in one transaction with the same ``as_of`` (the worker's clock in
    microseconds), so the tally is found by (path, as_of). A meeting that never got a status was skipped
    (program without session verification) or rejected: it changed no tally and is left out.

    ``first_after_*`` is the simpler estimate "first tally of the path at or after the input timestamp": it
    agrees while latency is well below the interval between two events of a path, and is too low (it takes
    the tally of an earlier event of the path) when latency is high.
    """
    tally_at: dict[tuple[bytes, str], int] = {}  # (path key, as_of) -> Kafka timestamp
    by_path: dict[bytes, list[int]] = {}
    for key, ts, value in tallies:
        if key is None:
            continue
        by_path.setdefault(key, []).append(ts)
        with contextlib.suppress(ValueError, KeyError, TypeError):
            where = (key, json.loads(value)["as_of"])
            tally_at[where] = min(ts, tally_at.get(where, ts))
    for stamps in by_path.values():
        stamps.sort()
    first_status: dict[str, tuple[int, str, int]] = {}  # meeting id -> (version, as_of, Kafka timestamp)
    for _key, ts, value in statuses:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            doc = json.loads(value)
            mine = (int(doc["version"]), str(doc["as_of"]), ts)
            if doc["meeting_id"] not in first_status or mine < first_status[doc["meeting_id"]]:
                first_status[doc["meeting_id"]] = mine
    exact: list[float] = []
    first_after: list[float] = []
    status_latencies: list[float] = []
    unmatched = no_change = 0
    for key, meeting_id, ts_in in inputs:
        status = first_status.get(meeting_id)
        if status is None:
            no_change += 1
            continue
        _version, as_of, status_ts = status
        status_latencies.append(status_ts - ts_in)
        stamps = by_path.get(key, [])
        i = bisect.bisect_left(stamps, ts_in)
        if i < len(stamps):
            first_after.append(stamps[i] - ts_in)
        out = tally_at.get((key, as_of))
        if out is None:
            unmatched += 1
            continue
        exact.append(out - ts_in)
    for values in (exact, first_after, status_latencies):
        values.sort()
    return {
        "measured": len(exact),
        "unmatched": unmatched,
        "no_tally_change": no_change,
        "p50_ms": percentile(exact, 50),
        "p95_ms": percentile(exact, 95),
        "p99_ms": percentile(exact, 99),
        "max_ms": exact[-1] if exact else float("nan"),
        "mean_ms": round(sum(exact) / len(exact), 1) if exact else float("nan"),
        "first_after_p50_ms": percentile(first_after, 50),
        "first_after_p99_ms": percentile(first_after, 99),
        "status_p50_ms": percentile(status_latencies, 50),
        "status_p99_ms": percentile(status_latencies, 99),
    }
