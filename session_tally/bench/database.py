"""The pipeline benchmark's PostgreSQL side: a scratch schema, applied offsets, the COPY ceiling."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from session_tally.bench.common import Progress

# ---------------------------------------------------------------------------------------- PostgreSQL


class Database:
    """One connection for polling a schema's progress, and the administration of the run's schemas."""

    def __init__(self, url: str) -> None:
        from storage.db import sync_engine

        self.url = url
        self.engine = sync_engine(url)

    def close(self) -> None:
        self.engine.dispose()

    def version(self) -> str:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar())

    def drop_schema(self, schema: str) -> None:
        from sqlalchemy import text

        with self.engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))

    def progress(self, schema: str) -> tuple[dict[str, int], int]:
        """(next offset per "topic:partition", outbox rows) of ``schema``; ({}, -1) before the tables exist."""
        from sqlalchemy import text

        with self.engine.connect() as conn:
            if conn.execute(text("SELECT to_regclass(:t)"), {"t": f'"{schema}".outbox'}).scalar() is None:
                return {}, -1
            offsets = {
                f"{r.topic}:{r.partition}": int(r.next_offset)
                for r in conn.execute(text(f'SELECT topic, partition, next_offset FROM "{schema}".consumer_offsets'))
            }
            outbox = int(conn.execute(text(f'SELECT count(*) FROM "{schema}".outbox')).scalar() or 0)
            conn.rollback()
        return offsets, outbox


def applied_of(offsets: dict[str, int], ends: dict[str, int]) -> int:
    return sum(min(offsets.get(k, 0), v) for k, v in ends.items())


def pg_ceiling(url: str, schema: str, stream: Path, batch_size: int, seed: int, progress: Progress) -> dict[str, Any]:
    """COPY one processed_events row (a UUID key) and one outbox row (the event's bytes as value) per event
    of ``stream`` into the real tables of a scratch schema, one transaction per ``batch_size`` events."""
    import random

    from storage.db import sync_engine, upgrade

    upgrade(url, schema)
    rng = random.Random(seed)
    engine = sync_engine(url, schema)
    events = 0
    try:
        with engine.connect() as conn:
            raw = conn.connection.driver_connection
            assert raw is not None
            started = time.perf_counter()
            with open(stream, "rb") as fh:
                while True:
                    values = [line.rstrip(b"\n") for _, line in zip(range(batch_size), fh, strict=False)]
                    if not values:
                        break
                    with raw.cursor() as cur:
                        with cur.copy("COPY processed_events (event_key) FROM STDIN") as copy:
                            for _ in values:
                                copy.write_row((str(uuid.UUID(int=rng.getrandbits(128), version=4)),))
                        with cur.copy("COPY outbox (lane, topic, key, value) FROM STDIN") as copy:
                            for i, value in enumerate(values):
                                copy.write_row(((events + i) % 16, "tallies", b"path-%d" % ((events + i) % 997), value))
                    raw.commit()
                    events += len(values)
                    progress.show(f"  COPY: {events:,} events ({2 * events:,} rows)")
            elapsed = time.perf_counter() - started
            progress.done()
    finally:
        engine.dispose()
    return {
        "events": events,
        "rows": 2 * events,
        "seconds": round(elapsed, 3),
        "rows_per_s": round(2 * events / elapsed),
        "events_per_s": round(events / elapsed),
        "transaction_events": batch_size,
    }
