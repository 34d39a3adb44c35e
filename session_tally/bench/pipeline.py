"""The pipeline benchmark's phases: replay of the same stream, the backlog (throughput, state growth), the
latency phases (at ``--rate`` and at a fraction of the measured capacity), the run that drives every phase."""

from __future__ import annotations

import argparse
import asyncio
import copy
import shutil
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from session_tally.bench.common import (
    POLL_S,
    SEGMENTS,
    BenchError,
    Progress,
    _dist_version,
    command_line,
    fmt_rate,
    kafka_version,
    load_average,
    machine_details,
    rate,
    say,
    with_prefix,
)
from session_tally.bench.database import Database, applied_of, pg_ceiling
from session_tally.bench.kafka_probe import (
    TopicEdges,
    consume_all,
    delete_kafka,
    read_records,
    topic_edges,
    wait_group_settled,
    wait_leaders,
)
from session_tally.bench.latency import latency_figures, offer
from session_tally.bench.ratios import capacity_of, replay_same_stream
from session_tally.bench.stages import describe, endpoints, stage_figures, try_scrape
from session_tally.bench.workers import WorkerPool
from session_tally.config import Settings, Topics

# ---------------------------------------------------------------------------------------- the run


@dataclass
class Backlog:
    """What a backlog-type run (phase 3 per worker count, phase 5) measured."""

    label: str
    workers: int
    batch_size: int
    events: int
    offsets: int
    publish_span_s: float
    worker_start: float = 0.0  # wall clock, s
    applied_at: float | None = None  # wall clock when every offset was applied
    idle_at: float | None = None
    ready_at: float | None = None  # wall clock when every worker had printed "ready" (polled)
    first_tally_ts: int | None = None
    last_tally_ts: int | None = None
    tallies: int = 0
    samples: list[tuple[float, int]] = field(default_factory=list)  # (wall clock, applied offsets)
    peak_rss_mb: list[float] = field(default_factory=list)

    @property
    def worker_window_s(self) -> float | None:
        return None if self.last_tally_ts is None else self.last_tally_ts / 1000 - self.worker_start

    @property
    def end_to_end_s(self) -> float | None:
        w = self.worker_window_s
        return None if w is None else self.publish_span_s + w

    @property
    def after_startup_s(self) -> float | None:
        """From every worker printing "ready" (polled) to the last tally: the window without process start,
        imports and migrations (group joins and rebalances are still in). None when there is no such
        window: a backlog small enough to be done before the workers were seen ready (consumption starts
        before the ready line, which follows the HTTP endpoint and the producers)."""
        if self.ready_at is None or self.last_tally_ts is None:
            return None
        window = self.last_tally_ts / 1000 - self.ready_at
        return window if window > 0 else None

    def segments(self) -> list[dict[str, Any]]:
        """Events/s per 1/SEGMENTS of the offsets applied, by interpolating the polled samples."""
        # from the first poll after every worker is ready (start-up and its first rebalances left out)
        samples = [s for s in self.samples if s[1] > 0 and (self.ready_at is None or s[0] >= self.ready_at)]
        if not samples or self.offsets <= 0:
            return []

        def crossing(target: float) -> float | None:
            prev = (self.worker_start, 0)
            for t, a in self.samples:
                if a >= target:
                    if a == prev[1]:
                        return t
                    return prev[0] + (t - prev[0]) * (target - prev[1]) / (a - prev[1])
                prev = (t, a)
            return None

        out = []
        start_t, start_a = samples[0]
        for k in range(1, SEGMENTS + 1):
            target = self.offsets * k / SEGMENTS
            end_t = crossing(target)
            lo = 100 * (k - 1) // SEGMENTS
            hi = 100 * k // SEGMENTS
            seg_rate = None
            if end_t is not None and target > start_a and end_t > start_t:
                # offsets approximate events: every input record is one offset
                seg_rate = round((target - start_a) / (end_t - start_t))
            out.append({"from_pct": lo, "to_pct": hi, "events_per_s": seg_rate})
            if end_t is not None and target > start_a:
                start_t, start_a = end_t, int(target)
        return out

    def as_json(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        def per_s(x: float | None) -> int | None:
            v = rate(self.events, x)
            return None if v is None else round(v)

        return {
            "workers": self.workers,
            "batch_size": self.batch_size,
            "events": self.events,
            "offsets": self.offsets,
            "publish_span_s": r(self.publish_span_s),
            "worker_window_s": r(self.worker_window_s),
            "end_to_end_s": r(self.end_to_end_s),
            "after_startup_s": r(self.after_startup_s),
            "applied_after_s": r(None if self.applied_at is None else self.applied_at - self.worker_start),
            "events_per_s": per_s(self.end_to_end_s),
            "worker_events_per_s": per_s(self.worker_window_s),
            "after_startup_events_per_s": per_s(self.after_startup_s),
            "ready_after_s": r(None if self.ready_at is None else self.ready_at - self.worker_start),
            "tallies_published": self.tallies,
            "segments": self.segments(),
            "timeline": [[round(t - self.worker_start, 2), a] for t, a in self.samples],
            "peak_rss_mb": self.peak_rss_mb,
        }


class PipelineBench:
    def __init__(self, args: argparse.Namespace, counts: list[int]) -> None:
        self.args = args
        self.counts = counts
        self.settings = Settings.from_env()
        self.bootstrap = self.settings.kafka  # bootstrap servers and TLS/SASL
        self.run_id = f"bench{uuid.uuid4().hex[:8]}"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"session-tally-{self.run_id}-"))
        self.progress = Progress()
        self.pools: list[WorkerPool] = []
        self.topics: list[str] = []
        self.schemas: list[str] = []
        self.groups: list[str] = []
        self.db: Database | None = None
        self.results: dict[str, Any] = {}

    # ------------------------------------------------------------------ plumbing

    def settings_for(self, topics: Topics, schema: str, group: str) -> Settings:
        """The environment's settings (worker settings included: ``SESSION_TALLY_PRODUCERS=process`` is
        measured as set) with this phase's topics, schema and group."""
        return Settings(
            worker=self.settings.worker,
            kafka_bootstrap_servers=self.settings.kafka_bootstrap_servers,
            kafka_security=self.settings.kafka_security,
            replication_factor=self.settings.replication_factor,
            min_insync_replicas=self.settings.min_insync_replicas,
            database_url=self.settings.database_url,
            db_schema=schema,
            group_id=group,
            topics=topics,
        )

    def create_topics(self, topics: Topics, names: Sequence[str] | None = None) -> None:
        """Create ``names`` of ``topics`` (default: all five) as `session-tally topics create` would."""
        from session_tally.topics import reconcile_topics, wanted_topics

        wanted = [*topics.inputs, *topics.outputs] if names is None else list(names)
        for name in wanted:
            if name not in self.topics:
                self.topics.append(name)
        specs = [spec for spec in wanted_topics(topics, self.settings.input_partitions) if spec.name in wanted]
        report = asyncio.run(reconcile_topics(self.bootstrap, specs))
        if report.mismatches:
            raise BenchError("; ".join(report.mismatches))
        asyncio.run(wait_leaders(self.bootstrap, wanted))

    def pool(self, label: str) -> WorkerPool:
        pool = WorkerPool(self.workdir, label)
        self.pools.append(pool)
        return pool

    def stop_pool(self, pool: WorkerPool) -> None:
        pool.read_peak_rss()
        codes = pool.stop()
        if any(codes):
            say(f"  warning: worker exit statuses {codes} (logs in {pool.logdir})")

    def cleanup(self) -> None:
        for pool in self.pools:
            pool.stop()
        if self.args.keep:
            say(
                f"kept: topics {self.run_id}.*, schemas {', '.join(self.schemas) or '-'}, "
                f"groups {', '.join(self.groups) or '-'}, worker logs in {self.workdir}"
            )
        else:
            problems: list[str] = []
            try:
                problems += asyncio.run(delete_kafka(self.bootstrap, self.topics, self.groups))
            except Exception as exc:
                problems.append(f"kafka: {exc}")
            if self.db is not None:
                for schema in self.schemas:
                    try:
                        self.db.drop_schema(schema)
                    except Exception as exc:
                        problems.append(f"schema {schema}: {exc}")
            shutil.rmtree(self.workdir, ignore_errors=True)
            say(
                f"cleaned up: {len(self.topics)} topics, {len(self.schemas)} schemas, the consumer groups of "
                f"{len(self.groups)} worker set(s)" + (f"; could not delete: {'; '.join(problems)}" if problems else "")
            )
        if self.db is not None:
            self.db.close()

    # ------------------------------------------------------------------ phases

    def header(self) -> None:
        info = machine_details()
        assert self.db is not None
        versions = {
            "python": info["python"],
            "kafka": kafka_version(),
            "postgresql": self.db.version(),
            "aiokafka": _dist_version("aiokafka"),
            "faststream": _dist_version("faststream"),
        }
        self.results.update(
            benchmark="pipeline",
            command=command_line(),
            started_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            run_id=self.run_id,
            machine=info,
            versions=versions,
            load_average={"start": load_average()},
            options={
                "events": self.args.events,
                "rate": self.args.rate,
                "latency_seconds": self.args.latency_seconds,
                "workers": self.counts,
                "seed": self.args.seed,
                "batch_size": self.args.batch_size,
                "naive_events": self.args.naive_events,
                "capacity_fraction": self.args.capacity_fraction,
            },
        )
        say(f"command: {self.results['command']}")
        say(
            f"machine: {info['cpu']}, {info['cores']} cores, {info.get('ram_gb', '?')} GB RAM; "
            f"{info['platform']}; load average {' '.join(map(str, load_average()))}"
        )
        say(
            f"versions: {versions['python']}, Kafka {versions['kafka']}, PostgreSQL {versions['postgresql']}, "
            f"aiokafka {versions['aiokafka']}, faststream {versions['faststream']}"
        )
        say(f"run: {self.run_id} (topics {self.run_id}.*, schemas {self.run_id}_*); kafka {self.bootstrap}")

    def generate(self, events: int, name: str) -> tuple[Path, str, int]:
        """Write a generated stream to the work dir; returns (file, frozen clock = last event time, count)."""
        from session_tally.bench.replay import _timestamp, generate_file

        path = self.workdir / name
        written, last_at, seconds = generate_file(path, events, self.args.seed, False)
        say(f"  generated {written:,} events ({path.stat().st_size / 1e6:,.1f} MB) in {seconds:.1f} s (not timed)")
        return path, _timestamp(last_at), written

    def publish(self, path: Path, topics: Topics) -> tuple[TopicEdges, float]:
        from producers.publisher import file_items, publish_records

        started = time.perf_counter()

        def show(sent: int) -> None:
            self.progress.show(f"  publish: {sent:,} sent, {sent / (time.perf_counter() - started):,.0f} msg/s")

        with open(path, "rb") as fh:
            counts = asyncio.run(publish_records(self.bootstrap, topics, file_items(fh), show))
        seconds = time.perf_counter() - started
        self.progress.done()
        failed = {k: v for k, v in counts.items() if k.startswith("failed:")}
        if failed:
            raise BenchError(f"some events could not be published: {failed}")
        edges = asyncio.run(topic_edges(self.bootstrap, topics.inputs))
        return edges, seconds

    def phase_kafka(self, stream: Path, topics: Topics, events: int) -> TopicEdges:
        say(f"\n== 1. Kafka ceiling: publish {events:,} events, then read them with a plain consumer")
        self.create_topics(topics, topics.inputs)
        edges, seconds = self.publish(stream, topics)
        span = ((edges.last_ts or 0) - (edges.first_ts or 0)) / 1000
        result: dict[str, Any] = {
            "messages": edges.count,
            "publish_s": round(seconds, 3),
            "publish_msgs_per_s": round(edges.count / seconds),
            "publish_span_s": round(span, 3),
        }
        say(
            f"  published {edges.count:,} messages in {seconds:.1f} s = {fmt_rate(edges.count / seconds, 'msg/s')} "
            f"(idempotent, acks=all; Kafka timestamps span {span:.1f} s)"
        )
        if not self.args.skip_kafka_ceiling:
            count, size, secs = asyncio.run(consume_all(self.bootstrap, topics.inputs, self.progress))
            result.update(
                consumed=count,
                consume_s=round(secs, 3),
                consume_msgs_per_s=round(count / secs),
                consume_mb_per_s=round(size / secs / 1e6, 1),
            )
            say(
                f"  plain consumer: {count:,} messages in {secs:.2f} s = {fmt_rate(count / secs, 'msg/s')} "
                f"({size / secs / 1e6:,.1f} MB/s)"
            )
        self.results["kafka_ceiling"] = result
        return edges

    def phase_pg(self, stream: Path, events: int) -> None:
        say(f"\n== 2. PostgreSQL ceiling: COPY {events:,} processed_events + {events:,} outbox rows")
        schema = f"{self.run_id}_pg"
        self.schemas.append(schema)
        result = pg_ceiling(
            self.settings.database_url, schema, stream, self.args.batch_size, self.args.seed, self.progress
        )
        assert self.db is not None
        self.db.drop_schema(schema)
        self.results["pg_ceiling"] = result
        say(
            f"  {result['rows']:,} rows in {result['seconds']:.2f} s = {fmt_rate(result['rows_per_s'], 'rows/s')} "
            f"({fmt_rate(result['events_per_s'])} at 2 rows per event, "
            f"one transaction per {self.args.batch_size:,} events)"
        )

    def drain(self, run: Backlog, settings: Settings, clock: str | None, ends: dict[str, int]) -> Backlog:
        """Start the workers on a published backlog, wait until idle, stop them; fills ``run``."""
        assert self.db is not None
        self.groups.append(settings.group_id)
        self.schemas.append(settings.db_schema)
        pool = self.pool(run.label)
        run.worker_start = pool.start(run.workers, settings, run.batch_size, clock)
        last_change, last = time.monotonic(), (-1, -1)
        try:
            while True:
                pool.check_alive()
                offsets, outbox = self.db.progress(settings.db_schema)
                now = time.time()
                applied = applied_of(offsets, ends)
                run.samples.append((now, applied))
                if run.ready_at is None and pool.all_ready():
                    run.ready_at = now
                if applied >= run.offsets and run.applied_at is None:
                    run.applied_at = now
                if run.applied_at is not None and outbox == 0:
                    run.idle_at = now
                    break
                if (applied, outbox) != last:
                    last, last_change = (applied, outbox), time.monotonic()
                elif time.monotonic() - last_change > self.args.stall_timeout:
                    raise BenchError(
                        f"{run.label}: no progress for {self.args.stall_timeout:.0f} s "
                        f"(applied {applied:,}/{run.offsets:,}, outbox {outbox:,}; logs in {pool.logdir})"
                    )
                elapsed = now - run.worker_start
                self.progress.show(
                    f"  {run.label}: applied {applied:,}/{run.offsets:,} ({applied / max(run.offsets, 1):.0%}), "
                    f"{applied / max(elapsed, 1e-9):,.0f} events/s, outbox {max(outbox, 0):,}, {elapsed:.0f} s"
                )
                time.sleep(POLL_S)
        finally:
            self.progress.done()
            if pool.procs:
                self.stop_pool(pool)
        run.peak_rss_mb = pool.peak_rss_mb
        tallies = asyncio.run(topic_edges(self.bootstrap, [settings.topics.path_tallies]))
        run.first_tally_ts, run.last_tally_ts, run.tallies = tallies.first_ts, tallies.last_ts, tallies.count
        if not tallies.count:  # a stream that changed no tally: the last output of any kind ends the window
            outputs = asyncio.run(topic_edges(self.bootstrap, settings.topics.outputs))
            run.last_tally_ts = outputs.last_ts
            say("  note: no tally was published; the windows end at the last output message instead")
        return run

    def describe_backlog(self, run: Backlog) -> None:
        j = run.as_json()
        say(
            f"  {run.events:,} events, {run.tallies:,} tallies; end to end {fmt_rate(j['events_per_s'])} "
            f"({j['end_to_end_s']} s = publish {j['publish_span_s']} s + workers {j['worker_window_s']} s); "
            f"worker only {fmt_rate(j['worker_events_per_s'])}; after start-up (workers ready to last tally) "
            f"{fmt_rate(j['after_startup_events_per_s'])}; peak RSS "
            f"{', '.join(f'{m:,.0f} MB' for m in run.peak_rss_mb)}"
        )
        segs = j["segments"]
        if segs:
            say(
                "  state growth (events/s per 20% of offsets applied): "
                + ", ".join(f"{s['to_pct']}%: {fmt_rate(s['events_per_s'], '')}".rstrip() for s in segs)
            )

    def phase_backlog(self, inputs: Topics, edges: TopicEdges, events: int, clock: str) -> None:
        say(
            f"\n== 3. backlog throughput: {events:,} events waiting, worker count(s) {self.counts}, "
            f"clock frozen at {clock}"
        )
        span = ((edges.last_ts or 0) - (edges.first_ts or 0)) / 1000
        runs = []
        for count in self.counts:
            topics = with_prefix(f"{self.run_id}.", f"{self.run_id}.w{count}.")
            self.create_topics(topics, topics.outputs)
            settings = self.settings_for(topics, f"{self.run_id}_w{count}", f"{self.run_id}.w{count}")
            run = Backlog(f"W={count}", count, self.args.batch_size, events, sum(edges.ends.values()), span)
            self.drain(run, settings, clock, edges.ends)
            self.describe_backlog(run)
            runs.append(run.as_json())
        self.results["backlog"] = runs

    def phase_naive(self) -> None:
        n = self.args.naive_events
        say(f"\n== 5. naive baseline: the worker with --batch-size 1 (one transaction per event) on {n:,} events")
        stream, clock, written = self.generate(n, "naive.jsonl")
        topics = with_prefix(f"{self.run_id}.naive.")
        self.create_topics(topics)
        edges, _seconds = self.publish(stream, topics)
        span = ((edges.last_ts or 0) - (edges.first_ts or 0)) / 1000
        settings = self.settings_for(topics, f"{self.run_id}_naive", f"{self.run_id}.naive")
        run = Backlog("naive", 1, 1, written, sum(edges.ends.values()), span)
        self.drain(run, settings, clock, edges.ends)
        self.describe_backlog(run)
        self.results["naive"] = run.as_json()

    def phase_latency(self, offered_rate: float | None = None, key: str = "latency", title: str = "4.") -> None:
        """Latency at ``offered_rate`` (default ``--rate``) into ``results[key]``, on its own topics and schema."""
        args = copy.copy(self.args)
        args.rate = offered_rate or self.args.rate
        workers = self.counts[0]
        say(
            f"\n== {title} latency: {workers} worker(s) on the wall clock, {args.rate:,.0f} events/s offered for "
            f"{args.latency_seconds:g} s (live traffic profile)"
        )
        tag = "lat" if key == "latency" else "latcap"
        topics = with_prefix(f"{self.run_id}.{tag}.")
        self.create_topics(topics)
        settings = self.settings_for(topics, f"{self.run_id}_{tag}", f"{self.run_id}.{tag}")
        self.groups.append(settings.group_id)
        self.schemas.append(settings.db_schema)
        pool = self.pool(key)  # its own log files: a "ready" line of an earlier phase must not count
        pool.start(workers, settings, args.batch_size, None, http=True)
        try:
            pool.wait_ready()
            asyncio.run(wait_group_settled(self.bootstrap, settings.group_id, topics.inputs))
            urls = endpoints(pool.logs)
            before = try_scrape(urls)
            db = self.db
            assert db is not None

            def applied() -> tuple[int, int]:
                offsets, outbox = db.progress(settings.db_schema)
                return sum(offsets.values()), outbox

            offered = asyncio.run(offer(self.bootstrap, topics, args, pool, self.progress, applied))
            say(
                f"  offered {offered['sent']:,} events in {offered['seconds']:.1f} s = "
                f"{fmt_rate(offered['sent'] / offered['seconds'])} ({offered['scheduled']:,} meeting.scheduled)"
            )
            self.wait_idle(pool, settings, offered["ends"])
            stages = stage_figures(before, try_scrape(urls))
        finally:
            self.progress.done()
            self.stop_pool(pool)
        tallies = asyncio.run(read_records(self.bootstrap, topics.path_tallies))
        statuses = asyncio.run(read_records(self.bootstrap, topics.meeting_statuses))
        result = latency_figures(offered["inputs"], tallies, statuses)
        result.update(
            workers=workers,
            offered_rate=args.rate,
            achieved_rate=round(offered["sent"] / offered["seconds"]),
            sent=offered["sent"],
            seconds=round(offered["seconds"], 3),
            peak_rss_mb=pool.peak_rss_mb,
            timeline=offered["timeline"],
            stages=stages,
        )
        self.results[key] = result
        say(
            f"  event in -> tally out, {result['measured']:,} meeting.scheduled: p50 {result['p50_ms']:.0f} ms, "
            f"p95 {result['p95_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms, max {result['max_ms']:.0f} ms "
            f"(left out: {result['no_tally_change']:,} that changed no tally, e.g. programs without session "
            f"verification; no tally found: {result['unmatched']:,}); cross-checks, p50/p99: to the meeting's "
            f"first status {result['status_p50_ms']:.0f}/{result['status_p99_ms']:.0f} ms, first tally of the "
            f"path at or after the input {result['first_after_p50_ms']:.0f}/{result['first_after_p99_ms']:.0f} ms"
        )
        say(f"  stages (workers' histograms): {describe(stages)}")

    def phase_latency_at_capacity(self) -> None:
        """The second latency phase: ``--capacity-fraction`` of the capacity the backlog phase measured."""
        fraction = self.args.capacity_fraction
        capacity, basis = capacity_of(self.results)
        if fraction <= 0:
            return
        if capacity is None:
            say(f"\n== 4b. latency at {fraction:.0%} of capacity: skipped ({basis})")
            return
        offered = max(1.0, capacity * fraction)
        say(f"\n   capacity {fmt_rate(capacity)} ({basis}) x {fraction:g} = {fmt_rate(offered)} offered")
        self.phase_latency(offered, "latency_capacity", "4b.")
        self.results["latency_capacity"].update(capacity_fraction=fraction, capacity_events_per_s=round(capacity))

    def wait_idle(self, pool: WorkerPool, settings: Settings, ends: dict[str, int]) -> None:
        assert self.db is not None
        total = sum(ends.values())
        last_change, last = time.monotonic(), (-1, -1)
        while True:
            pool.check_alive()
            offsets, outbox = self.db.progress(settings.db_schema)
            applied = applied_of(offsets, ends)
            if applied >= total and outbox == 0:
                return
            if (applied, outbox) != last:
                last, last_change = (applied, outbox), time.monotonic()
            elif time.monotonic() - last_change > self.args.stall_timeout:
                raise BenchError(
                    f"latency run: no progress for {self.args.stall_timeout:.0f} s ({applied:,}/{total:,})"
                )
            self.progress.show(f"  draining: applied {applied:,}/{total:,}, outbox {max(outbox, 0):,}")
            time.sleep(POLL_S)

    # ------------------------------------------------------------------ the whole run

    def run(self) -> None:
        args = self.args
        self.db = Database(self.settings.database_url)
        self.header()
        need_stream = not (args.skip_kafka_ceiling and args.skip_pg_ceiling and args.skip_backlog and args.skip_replay)
        if need_stream:
            say(f"\n== generating {args.events:,} events (seed {args.seed})")
            stream, clock, written = self.generate(args.events, "backlog.jsonl")
            if not args.skip_replay:
                try:
                    self.results["replay"] = replay_same_stream(stream, clock, written, self.workdir)
                except RuntimeError as exc:
                    raise BenchError(str(exc)) from exc
            inputs = with_prefix(f"{self.run_id}.")
            edges: TopicEdges | None = None
            if not (args.skip_kafka_ceiling and args.skip_backlog):
                edges = self.phase_kafka(stream, inputs, written)
            if not args.skip_pg_ceiling:
                self.phase_pg(stream, written)
            if not args.skip_backlog:
                assert edges is not None
                self.phase_backlog(inputs, edges, written, clock)
        if not args.skip_latency:
            self.phase_latency()
            self.phase_latency_at_capacity()
        if not args.skip_naive:
            self.phase_naive()
        self.results["load_average"]["end"] = load_average()
