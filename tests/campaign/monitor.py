"""Samples a running pipeline in a background thread: input records published and applied (lag), the
outbox (rows, age of the oldest), waiting events, and the resident memory of every worker process.

Lag is counted in records: the input topics of a stage are fresh, so an applied offset is a count of
records, and ``published()`` (the feed's count, or a backlog's size) is where the inputs end.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from tests.campaign.harness import Fleet, Stage
from tests.integration.pipeline_helpers import Probe

_OUTBOX = text("SELECT count(*), coalesce(extract(epoch FROM clock_timestamp() - min(created_at)), 0) FROM outbox")


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic seconds
    published: int
    applied: int
    outbox_rows: int
    outbox_age_s: float
    waiting: int
    rss_mb: dict[str, float] = field(default_factory=dict)

    @property
    def lag(self) -> int:
        return max(0, self.published - self.applied)


class Monitor:
    def __init__(self, stage: Stage, fleet: Fleet, published: Callable[[], int], every_s: float = 1.0) -> None:
        self.stage = stage
        self.fleet = fleet
        self.published = published
        self.every_s = every_s
        self.samples: list[Sample] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="monitor", daemon=True)

    def __enter__(self) -> Monitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _run(self) -> None:
        try:
            with Probe(self.stage.settings) as probe:
                while not self._stop.is_set():
                    self.samples.append(self._sample(probe))
                    self._stop.wait(self.every_s)
        except BaseException as exc:  # the scenario reads it
            self.error = exc

    def _sample(self, probe: Probe) -> Sample:
        published = self.published()
        try:
            applied = sum(probe.offsets().values())
            rows, age = probe.conn.execute(_OUTBOX).one()
            waiting = int(probe.conn.execute(text("SELECT count(*) FROM parked")).scalar() or 0)
        except Exception:  # PostgreSQL cut or slowed down by the scenario: keep the last figures
            probe.conn.rollback()
            last = self.samples[-1] if self.samples else None
            applied, rows, age, waiting = (
                (last.applied, last.outbox_rows, last.outbox_age_s, last.waiting) if last else (0, 0, 0.0, 0)
            )
        finally:
            probe.conn.rollback()
        rss = {w.name: round(self.fleet.rss_mb(w.name), 1) for w in list(self.fleet.workers.values()) if w.alive}
        return Sample(time.monotonic(), published, applied, int(rows), float(age), waiting, rss)

    # ----------------------------------------------------------------------------------- figures

    def since(self, start: float) -> list[Sample]:
        return [s for s in self.samples if s.at >= start]

    def first_progress_after(self, start: float, timeout_s: float = 300.0) -> float | None:
        """Seconds from ``start`` until the applied count first moves past what it was then (waits for
        it, sampling, up to ``timeout_s``); None if it never did."""
        deadline = time.monotonic() + timeout_s
        base: int | None = None
        while time.monotonic() < deadline:
            for s in self.since(start):
                if base is None:
                    base = s.applied
                elif s.applied > base:
                    return s.at - start
            if self.error is not None:
                raise self.error
            time.sleep(self.every_s / 2)
        return None

    def longest_stall(self, start: float = 0.0) -> float:
        """The longest time the applied count stood still while records were waiting to be applied."""
        longest, since = 0.0, None
        for previous, s in zip(self.samples, self.samples[1:], strict=False):
            if s.at < start:
                continue
            if s.applied == previous.applied and previous.lag > 0:
                since = previous.at if since is None else since
                longest = max(longest, s.at - since)
            else:
                since = None
        return longest

    def max_lag(self) -> int:
        return max((s.lag for s in self.samples), default=0)

    def rss(self) -> dict[str, dict[str, float]]:
        """Per worker: first, peak and last resident memory sampled (MB)."""
        out: dict[str, dict[str, float]] = {}
        for s in self.samples:
            for name, mb in s.rss_mb.items():
                figures = out.setdefault(name, {"start": mb, "peak": mb, "end": mb})
                figures["peak"] = max(figures["peak"], mb)
                figures["end"] = mb
        return out

    def table(self) -> list[dict[str, Any]]:
        """The samples for the JSON report (seconds from the first sample)."""
        t0 = self.samples[0].at if self.samples else 0.0
        return [
            {
                "t_s": round(s.at - t0, 1),
                "published": s.published,
                "lag": s.lag,
                "outbox_rows": s.outbox_rows,
                "outbox_age_s": round(s.outbox_age_s, 2),
                "waiting": s.waiting,
                "rss_mb": s.rss_mb,
            }
            for s in self.samples
        ]
