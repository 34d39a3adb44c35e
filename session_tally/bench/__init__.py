"""Benchmarks. `session-tally bench replay` (bench/replay.py) and `session-tally bench pipeline`: the whole
pipeline (Kafka -> worker -> PostgreSQL -> relay -> Kafka) measured
in one run, next to what Kafka and PostgreSQL alone can do on the same machine.

Phases (each prints its figures as it finishes; ``--skip-*`` leaves one out):

0. Replay (bench/ratios.py): `session-tally replay` on the backlog's own file at its frozen clock, in a child
   process, and on an empty file for its start-up; the reference of the ``pipeline / replay`` ratios.
1. Kafka ceiling: generate N events (``session_tally.traffic``, the realistic mix, to a temporary file, not
   timed), publish them as `session-tally publish` does, then time a plain aiokafka consumer reading both
   input topics from the beginning and doing nothing else (msgs/s).
2. PostgreSQL ceiling: COPY, in transactions of ``--batch-size`` events, one ``processed_events`` row and one
   ``outbox`` row per event (the real tables, in a scratch schema) (rows/s).
3. Backlog throughput: with the N events already on the input topics and no worker running, start W worker
   processes (frozen clock: the stream's last event time) and wait until the pipeline is idle (every input
   offset applied in the run's ``consumer_offsets``, ``outbox`` empty). Windows, all from Kafka record
   timestamps and the wall clock of this machine:

   - end to end: the publishing span (first to last input record) plus the worker window, i.e. from the
     first event published to the last tally published without the time this tool spent measuring the
     ceilings in between (nothing of the pipeline ran then);
   - worker only: from the start of the first worker process to the last tally published;
   - after start-up: from every worker printing "ready" (polled) to the last tally published (no process
     start, imports or migrations; group joins and rebalances are still in).

   Repeated per count of ``--workers 1,2,3`` (each with its own schema, consumer group and output topics,
   same input). State growth: events/s per 20 % of the offsets applied (from ``consumer_offsets`` polled
   every 0.2 s), to see whether the cost per event stays flat as meetings accumulate.
4. Latency: a fresh set of topics and schema, the workers running on the wall clock and settled in their
   consumer group, the live traffic profile offered at ``--rate`` events/s (evenly paced) for
   ``--latency-seconds``. For every ``meeting.scheduled`` that changed its path's tally: Kafka timestamp of
   the tally written by the transaction that applied it (found by path and ``as_of``, which that tally
   shares with the meeting's first status message) minus the input record's Kafka timestamp; p50/p95/p99.
   Cross-checks: to the meeting's first status, and "first tally of the path at or after the input"
   (equal while latency is below the gap between two events of a path, too low beyond).
   4b. The same at ``--capacity-fraction`` (0.25) of the capacity phase 3 measured. Both latency runs
   scrape their workers' /metrics before and after and give the latency in stages (bench/stages.py).
5. Naive baseline: the same worker with ``--batch-size 1`` (one transaction per event) on
   ``--naive-events`` events, measured like phase 3.
6. Peak RSS of every worker (``VmHWM`` of ``/proc/<pid>/status``, read just before stopping it).
7. Ratios, printed first (bench/ratios.py): pipeline / replay (end to end, worker only, after start-up),
   W workers / 1 worker, p99 at the offered rate and at the fraction of capacity. In the table after them:
   throughput (end to end) / Kafka ceiling, throughput / naive (both after start-up: the cost per
   event without the fixed start-up, which different event counts would dilute differently).

Every run uses its own topic prefix, consumer groups and PostgreSQL schemas (``bench<hex>``); they are deleted
at the end unless ``--keep``. Every child process is stopped in a ``finally`` (also on Ctrl-C, SIGTERM or an
error). Nothing here asserts a target: each is reported as "target met" / "below target".
"""
