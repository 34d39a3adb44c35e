"""Every metric of a worker, declared in one place (:data:`SPECS`: name, type, help, labels, buckets), and
the thin facade the call sites use (``metrics.inc(name, value, **labels)``, ``set``, ``observe``).

Built on prometheus_client (docs/observability.md says why): the standard exposition format, typed
families with HELP text, label values escaped, histograms, process metrics and a parser for the tests.

Invariants:
- each worker process has its own ``CollectorRegistry`` (:class:`Metrics`); nothing registers in
  prometheus_client's global registry, so two workers in one test process never collide;
- a name the call sites use that is not declared here raises ``KeyError`` (a unit test checks every
  call site's name against :data:`SPECS`);
- `--producers process`: the child process has a ``Metrics`` of its own; once a second it hands
  :meth:`Metrics.snapshot` (every sample of every declared family) to the worker, which adds it to its
  own samples of the same family and label set when it is scraped (:meth:`Metrics.merge_child`).
  Counters and histograms add up; each gauge is set by one process only (the other's stays 0), so the
  sum is the value of the process that owns it. The child's process metrics are read by the worker
  itself from /proc (``session_tally_producers_process_*``).
"""

from __future__ import annotations

import bisect
import collections
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.samples import Sample

# no `*_created` series: they double every counter and say nothing here
disable_created_metrics()  # type: ignore[no-untyped-call]

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"

#: seconds; a batch, a relay round
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: seconds from a record's Kafka timestamp to its commit, and from a commit to Kafka's acknowledgement:
#: milliseconds when all is well, hours after a long stop
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0,
)  # fmt: skip


@dataclass(frozen=True)
class Spec:
    kind: str
    name: str  # as exposed (a counter's ends in _total)
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


def _c(name: str, help: str, *labels: str) -> Spec:
    return Spec(COUNTER, "session_tally_" + name, help, labels)


def _g(name: str, help: str, *labels: str) -> Spec:
    return Spec(GAUGE, "session_tally_" + name, help, labels)


def _h(name: str, help: str, buckets: tuple[float, ...], *labels: str) -> Spec:
    return Spec(HISTOGRAM, "session_tally_" + name, help, labels, buckets)


SPECS: tuple[Spec, ...] = (
    # --- input batches (consumers/subscriber.py)
    _c(
        "events_total", "Inputs by outcome (a waiting event counts as parked, then under its final outcome).", "outcome"
    ),
    _c("rejected_total", "Inputs rejected, by reason (batches, isolated records, waiting events expired).", "reason"),
    _c("records_total", "Input records received in batches that committed."),
    _c("redelivered_records_total", "Records received again and skipped by offset (already applied)."),
    _c("batches_total", "Input batches committed (one transaction each, or more when isolated)."),
    _c("batch_failures_total", "Input batches that failed (an outage) and were handed back for redelivery."),
    _c("transaction_retries_total", "Transactions retried (deadlock, serialization, unique race)."),
    _c("stalled_sessions_ended_total", "PostgreSQL sessions of frozen clients ended (locks held, waited on)."),
    _c("status_changes_total", "Meeting statuses written by input batches."),
    _c("tallies_total", "Path tallies written by input batches."),
    _c("misrouted_records_total", "Events rejected because their path (org) arrives on two partitions.", "topic"),
    _c("admin_barrier_waits_total", "Path batches that had to wait for the admin topic."),
    _c("admin_barrier_wait_seconds_total", "Seconds path batches waited for the admin topic."),
    _h("batch_duration_seconds", "Seconds from a batch's start to its commit.", DURATION_BUCKETS, "topic"),
    _h(
        "event_commit_latency_seconds",
        "Per record: seconds from its Kafka timestamp to the commit of its batch.",
        LATENCY_BUCKETS,
        "topic",
    ),
    # --- time and waiting events (consumers/timers.py)
    _c("clock_status_changes_total", "Meeting statuses moved by the clock."),
    _c("clock_failures_total", "Failed clock sweeps and waiting-event janitor rounds (retried)."),
    _c("waiting_expired_total", "Waiting events rejected after the park timeout."),
    _g("read_horizon_lag_seconds", "How far behind the last janitor round the read horizon is (-1: nothing yet)."),
    # --- the outbox relay (producers/relay.py)
    _c("published_messages_total", "Messages the relay published (Kafka acknowledged), by output topic.", "topic"),
    _c("relay_failures_total", "Failed relay rounds (rows kept, retried every second)."),
    _c("relay_dead_rows_total", "Outbox rows Kafka refused for good, kept in outbox_dead."),
    _c("relay_superseded_total", "New versions written after a relay round failed once it handed records."),
    _h("relay_round_seconds", "Seconds of a relay round that published rows.", DURATION_BUCKETS),
    _h(
        "commit_publish_latency_seconds",
        "Per message: seconds from its outbox row's creation (commit) to Kafka's acknowledgement.",
        LATENCY_BUCKETS,
    ),
    # --- health monitor and scrapes (session_tally/health.py, runtime.py)
    _g(
        "consumer_lag",
        "Records waiting on an owned partition: Kafka end offset - offset applied in PostgreSQL.",
        "topic",
        "partition",
    ),
    _g("assigned_partitions", "Partitions of an input topic assigned to this worker.", "topic"),
    _g("stuck_partitions", "Owned partitions with records waiting and no progress for over the stall timeout."),
    _g("health_check", "1 when a /healthz check passes, 0 when it fails (last monitor round).", "check"),
    _g("outbox_backlog", "Outbox rows waiting to be published."),
    _g("outbox_oldest_seconds", "Age of the oldest outbox row (0 when empty)."),
    _g("waiting_events", "Events waiting for their program or meeting."),
    _g("waiting_oldest_seconds", "Age of the oldest waiting event (0 when none waits)."),
    _g("admin_barrier_behind_records", "Admin records a path batch waits for (0 when not waiting)."),
    _g("admin_barrier_waiting_seconds", "How long the path batch in wait has waited (0 when not waiting)."),
    _c("gauge_refresh_failures_total", "Scrapes that could not read the outbox/waiting gauges from PostgreSQL."),
)

_TYPES: dict[str, Any] = {COUNTER: Counter, GAUGE: Gauge, HISTOGRAM: Histogram}


class Metrics:
    """The metrics of one process. ``registry`` is what /metrics exposes: the declared metrics (plus the
    child's samples), process, platform and GC metrics, and the uptime."""

    def __init__(self, process_metrics: bool = True) -> None:
        self.started = time.time()
        self.own = CollectorRegistry(auto_describe=True)
        self._metrics: dict[str, Any] = {}
        for spec in SPECS:
            kwargs: dict[str, Any] = {"labelnames": spec.labels, "registry": self.own}
            if spec.buckets:
                kwargs["buckets"] = spec.buckets
            self._metrics[spec.name] = _TYPES[spec.kind](spec.name, spec.help, **kwargs)
        self._child: dict[str, list[list[Any]]] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_Merged(self))
        if process_metrics:
            ProcessCollector(registry=self.registry)
            PlatformCollector(registry=self.registry)
            GCCollector(registry=self.registry)

    def _get(self, name: str, labels: Mapping[str, str]) -> Any:
        metric = self._metrics[name]  # KeyError: not declared in SPECS
        return metric.labels(**labels) if labels else metric

    def inc(self, name: str, value: float = 1, **labels: str) -> None:
        if value:
            self._get(name, labels).inc(value)
        elif labels:
            self._get(name, labels)  # the series exists (at 0) from now on

    def set(self, name: str, value: float, **labels: str) -> None:
        self._get(name, labels).set(value)

    def observe(self, name: str, value: float, **labels: str) -> None:
        self._get(name, labels).observe(value)

    def observe_many(self, name: str, values: Iterable[float], **labels: str) -> None:
        """``observe`` each value, in bulk: one bisection per value and one increment per bucket (a batch's
        records observed one by one cost ~10 µs each). Falls back to ``observe`` should prometheus_client's
        histogram internals (``_upper_bounds``, ``_buckets``, ``_sum``) ever change; a unit test compares
        both ways."""
        histogram = self._get(name, labels)
        bounds = getattr(histogram, "_upper_bounds", None)
        buckets = getattr(histogram, "_buckets", None)
        total = getattr(histogram, "_sum", None)
        if not isinstance(bounds, list) or not isinstance(buckets, list) or total is None or not bounds:
            for value in values:
                histogram.observe(value)
            return
        values = [float(v) for v in values]
        if not values:
            return
        last = len(bounds) - 1  # +Inf
        for index, n in collections.Counter(min(bisect.bisect_left(bounds, v), last) for v in values).items():
            buckets[index].inc(n)
        total.inc(math.fsum(values))

    def replace(self, name: str, series: Mapping[tuple[str, ...], float]) -> None:
        """Set a labelled gauge to exactly these series (label values in declared order): the others go
        (the lag of a partition this worker no longer owns, say)."""
        metric = self._metrics[name]
        metric.clear()
        for values, value in series.items():
            metric.labels(*values).set(value)

    def watch_process(self, namespace: str, pid: Callable[[], int | None]) -> None:
        """Process metrics (``<namespace>_process_*``) of another process of this worker, read from /proc."""
        ProcessCollector(namespace=namespace, pid=lambda: pid() or "none", registry=self.registry)

    def snapshot(self) -> dict[str, list[list[Any]]]:
        """Every sample of the declared metrics, by family: what a child process sends its worker."""
        return {f.name: [[s.name, s.labels, s.value] for s in f.samples] for f in self.own.collect()}

    def merge_child(self, snapshot: dict[str, list[list[Any]]]) -> None:
        """From now on, scrapes add the child's latest ``snapshot`` to this process's own samples."""
        self._child = snapshot

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """The body and content type of a scrape (the Prometheus text format, or OpenMetrics if asked)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    def value(self, name: str, **labels: str) -> float:
        """One sample's current value in this process (tests, logs)."""
        return float(self.own.get_sample_value(name, labels or None) or 0.0)


class _Merged:
    """The declared metrics of this process with the child's samples added, and the uptime."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        child = self.metrics._child  # replaced whole by the reader thread: read once
        for family in self.metrics.own.collect():
            extra = child.get(family.name)
            if extra:
                family.samples = _added(family.samples, extra)
            yield family
        yield GaugeMetricFamily(
            "session_tally_uptime_seconds", "Seconds since this worker started.", time.time() - self.metrics.started
        )


def _added(samples: list[Sample], extra: list[list[Any]]) -> list[Sample]:
    out = list(samples)
    index = {(s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(out)}
    for name, labels, value in extra:
        key = (str(name), tuple(sorted((str(k), str(v)) for k, v in dict(labels).items())))
        i = index.get(key)
        if i is None:
            index[key] = len(out)
            out.append(Sample(key[0], dict(key[1]), float(value)))
        else:
            out[i] = out[i]._replace(value=out[i].value + float(value))
    return out


def declared(name: str) -> Spec | None:
    """The declaration of a metric name as the call sites write it (None: undeclared)."""
    return next((s for s in SPECS if s.name == name), None)
