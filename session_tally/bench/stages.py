"""The latency of the pipeline broken into stages, from the workers' own Prometheus histograms (scraped from
their ``/metrics`` before and after a latency phase; the difference is that phase's traffic alone).

Stages, per record or message (means from the histograms' sums, p50/p99 as the upper bound of the bucket that
holds the quantile, so coarse: 5, 10, 25, 50, 100, 250, 500 ms, 1 s, ...):

- ``published_to_committed``: Kafka timestamp of an input record -> commit of its batch in PostgreSQL
  (``session_tally_event_commit_latency_seconds``); the sum of the two stages below;
- ``batch_received_to_committed``: a batch's start (records received) -> its commit
  (``session_tally_batch_duration_seconds``, per batch, not per record);
- ``published_to_batch_received`` (mean only): the first minus the second: waiting in Kafka, the fetch,
  the batch timeout and the batch before it;
- ``committed_to_relay_published``: outbox row created (commit) -> Kafka acknowledged the relay's message
  (``session_tally_commit_publish_latency_seconds``).

The last stage, relay published -> tally seen by the bench's consumer, is zero by construction: the
end-to-end latency is read from the tally's Kafka timestamp (set by the relay's producer when it sends), not
from when the bench read it.

Invariant: only the difference of two scrapes of the same worker processes is used; a stage whose histogram
did not move (no traffic, no endpoint) is left out, never estimated."""

from __future__ import annotations

import math
import re
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

HISTOGRAMS = {
    "published_to_committed": "session_tally_event_commit_latency_seconds",
    "batch_received_to_committed": "session_tally_batch_duration_seconds",
    "committed_to_relay_published": "session_tally_commit_publish_latency_seconds",
}
_HTTP = re.compile(r"'http': '(http://[^']+)'")
_SAMPLE = re.compile(r"^(\w+?)(_bucket|_sum|_count)(?:\{([^}]*)\})? ([0-9.eE+-]+|\+Inf|NaN)$")
_LE = re.compile(r'le="([^"]+)"')

Histogram = dict[str, Any]  # {"buckets": {upper bound: cumulative count}, "sum": s, "count": n}


def endpoints(logs: Iterable[Path]) -> list[str]:
    """The ``http://host:port`` of every worker, from its "ready" line (workers started with an endpoint)."""
    urls = []
    for log in logs:
        match = _HTTP.search(log.read_text(errors="replace"))
        if match:
            urls.append(match.group(1))
    return urls


def parse(text: str) -> dict[str, Histogram]:
    """The histograms of :data:`HISTOGRAMS` in a Prometheus text exposition, summed over their labels."""
    wanted = set(HISTOGRAMS.values())
    out: dict[str, Histogram] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if not match or match.group(1) not in wanted:
            continue
        name, part, labels, raw = match.groups()
        value = float(raw)
        h = out.setdefault(name, {"buckets": {}, "sum": 0.0, "count": 0.0})
        if part == "_bucket":
            le = _LE.search(labels or "")
            if le:
                bound = math.inf if le.group(1) == "+Inf" else float(le.group(1))
                h["buckets"][bound] = h["buckets"].get(bound, 0.0) + value
        elif part == "_sum":
            h["sum"] += value
        else:
            h["count"] += value
    return out


def scrape(urls: Iterable[str], timeout_s: float = 5.0) -> dict[str, Histogram]:
    """Every worker's histograms, added up (one scrape each)."""
    total: dict[str, Histogram] = {}
    for url in urls:
        with urllib.request.urlopen(url + "/metrics", timeout=timeout_s) as response:
            text = response.read().decode("utf-8", errors="replace")
        for name, h in parse(text).items():
            t = total.setdefault(name, {"buckets": {}, "sum": 0.0, "count": 0.0})
            for bound, n in h["buckets"].items():
                t["buckets"][bound] = t["buckets"].get(bound, 0.0) + n
            t["sum"] += h["sum"]
            t["count"] += h["count"]
    return total


def _quantile_bound(buckets: dict[float, float], count: float, q: float) -> float | None:
    """Upper bound (s) of the first bucket whose cumulative count reaches ``q`` of ``count``."""
    for bound in sorted(buckets):
        if buckets[bound] >= q * count:
            return bound
    return None


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None or math.isinf(seconds) else round(seconds * 1000, 1)


def stage_figures(before: dict[str, Histogram], after: dict[str, Histogram]) -> dict[str, Any]:
    """Per stage: count, mean, p50 and p99 bucket bounds (ms) of what happened between the two scrapes."""
    stages: dict[str, Any] = {}
    for stage, name in HISTOGRAMS.items():
        a, b = after.get(name), before.get(name, {"buckets": {}, "sum": 0.0, "count": 0.0})
        if a is None:
            continue
        count = a["count"] - b["count"]
        if count <= 0:
            continue
        buckets = {bound: n - b["buckets"].get(bound, 0.0) for bound, n in a["buckets"].items()}
        stages[stage] = {
            "count": int(count),
            "mean_ms": round((a["sum"] - b["sum"]) / count * 1000, 1),
            "p50_le_ms": _ms(_quantile_bound(buckets, count, 0.50)),
            "p99_le_ms": _ms(_quantile_bound(buckets, count, 0.99)),
        }
    total, batch = stages.get("published_to_committed"), stages.get("batch_received_to_committed")
    if total and batch:
        stages["published_to_batch_received"] = {"mean_ms": round(max(0.0, total["mean_ms"] - batch["mean_ms"]), 1)}
    return stages


def describe(stages: dict[str, Any]) -> str:
    """One line for the report: the mean of each stage, in the order a record goes through them."""
    order = (
        ("published_to_batch_received", "published -> batch received"),
        ("batch_received_to_committed", "batch -> committed (per batch)"),
        ("committed_to_relay_published", "committed -> relay published"),
        ("published_to_committed", "published -> committed"),
    )
    parts = []
    for key, label in order:
        s = stages.get(key)
        if s:
            p99 = f", p99 <= {s['p99_le_ms']:g}" if s.get("p99_le_ms") is not None else ""
            parts.append(f"{label} {s['mean_ms']:g} ms mean{p99}")
    return "; ".join(parts) if parts else "no stage measured (no /metrics endpoint answered)"


def try_scrape(urls: Iterable[str]) -> dict[str, Histogram]:
    """:func:`scrape`, or nothing when an endpoint does not answer (the stages are then left out)."""
    try:
        return scrape(urls)
    except (OSError, ValueError):
        return {}
