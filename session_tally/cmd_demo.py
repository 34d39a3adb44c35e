"""`session-tally demo`: the whole pipeline on simulated traffic, with the tallies shown as they change.

Creates the topics, starts a worker and the traffic simulator as child processes (logs in
``.services/``), follows the path-tallies and meeting-statuses topics and redraws a small table every
second; stops everything after ``--duration`` seconds or on Ctrl-C and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

EPILOG = """\
example (after `session-tally services up` and `. .services/env`, or simply `make demo`):
  session-tally demo --duration 60 --rate 300
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "demo",
        help="run a worker on simulated traffic and show tallies changing",
        description="Run the real pipeline (topics, a worker, simulated upstream traffic) and show the tallies.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds to run (default 60)")
    p.add_argument("--rate", type=float, default=200.0, help="simulated events per second (default 200)")
    p.add_argument("--rows", type=int, default=8, help="tallies shown (most recently changed first)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(args))


async def _demo(args: argparse.Namespace) -> int:
    from aiokafka import AIOKafkaConsumer

    from producers.kafka_access import kafka_options
    from session_tally.config import Settings
    from session_tally.topics import ensure_topics

    settings = Settings.from_env()
    mismatches = await ensure_topics(settings.kafka, settings.topics)
    for m in mismatches:
        print(f"topic mismatch: {m}", file=sys.stderr)
    logs = Path(os.environ.get("SESSION_TALLY_SERVICES_DIR", ".services"))
    logs.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "session_tally"]
    worker_log = open(logs / "demo-worker.log", "ab")  # noqa: SIM115
    worker = subprocess.Popen([*cli, "worker", "--http-port", "8085"], stdout=worker_log, stderr=subprocess.STDOUT)
    sim_log = open(logs / "demo-simulate.log", "ab")  # noqa: SIM115
    simulator = subprocess.Popen(
        [*cli, "simulate", "--rate", str(args.rate), "--duration", str(args.duration)],
        stdout=sim_log,
        stderr=subprocess.STDOUT,
    )
    print(f"worker pid {worker.pid} (log {logs / 'demo-worker.log'}, metrics http://127.0.0.1:8085/metrics)")
    print(f"simulator pid {simulator.pid} publishing {args.rate:g} events/s for {args.duration:g}s")

    consumer = AIOKafkaConsumer(
        settings.topics.path_tallies,
        settings.topics.meeting_statuses,
        settings.topics.rejected,
        **kafka_options(settings.kafka),
        auto_offset_reset="latest",
        enable_auto_commit=False,
    )
    await consumer.start()
    tallies: dict[str, dict[str, Any]] = {}
    changed: dict[str, float] = {}
    statuses: Counter[str] = Counter()
    rejected: Counter[str] = Counter()
    counts = Counter[str]()
    started = time.monotonic()
    last_draw = 0.0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    try:
        while not stop.is_set() and time.monotonic() - started < args.duration + 5:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for r in records:
                    doc = json.loads(r.value)
                    if tp.topic == settings.topics.path_tallies:
                        tallies[doc["path_id"]] = doc
                        changed[doc["path_id"]] = time.monotonic()
                        counts["tallies"] += 1
                    elif tp.topic == settings.topics.meeting_statuses:
                        statuses[doc["status"]] += 1
                        counts["statuses"] += 1
                    else:
                        rejected[doc["reason"]] += 1
                        counts["rejected"] += 1
            if worker.poll() is not None:
                print(f"\nthe worker exited with {worker.returncode}; see {logs / 'demo-worker.log'}")
                return 1
            now = time.monotonic()
            if now - last_draw >= 1.0:
                last_draw = now
                _draw(now - started, tallies, changed, statuses, rejected, counts, args.rows)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await consumer.stop()
        for proc in (simulator, worker):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in (simulator, worker):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(
        f"\ndone: {counts['tallies']} tallies, {counts['statuses']} status changes, {counts['rejected']} rejected "
        f"messages published while the demo ran; the worker stopped with exit code {worker.returncode}"
    )
    return 0 if worker.returncode == 0 else 1


def _draw(
    elapsed: float,
    tallies: dict[str, dict[str, Any]],
    changed: dict[str, float],
    statuses: Counter[str],
    rejected: Counter[str],
    counts: Counter[str],
    rows: int,
) -> None:
    out = sys.stdout
    if out.isatty():
        out.write("\x1b[2J\x1b[H")
    out.write(
        f"session-tally demo  t={elapsed:5.0f}s  tallies published {counts['tallies']}  "
        f"status changes {counts['statuses']}  rejected {counts['rejected']}\n"
    )
    shown = sorted(changed, key=lambda p: -changed[p])[:rows]
    wp = max([len("path"), *(len(p) for p in shown)]) + 2
    wg = max([len("program"), *(len(tallies[p]["program_id"]) for p in shown)]) + 2
    out.write(
        f"{'path':<{wp}}{'program':<{wg}}{'used h':>8}{'pending min':>12}{'upcoming min':>13}"
        f"{'authorized':>11}{'remaining':>10}{'version':>8}\n"
    )
    for path_id in shown:
        t = tallies[path_id]
        auth = "-" if t["authorized_hours"] is None else f"{t['authorized_hours']:g}"
        rem = "-" if t["remaining_hours"] is None else f"{t['remaining_hours']:g}"
        out.write(
            f"{path_id:<{wp}}{t['program_id']:<{wg}}{t['used_hours']:>8g}{t['pending_minutes']:>12}"
            f"{t['upcoming_minutes']:>13}{auth:>11}{rem:>10}{t['version']:>8}\n"
        )
    out.write("statuses published: " + ", ".join(f"{k} {v}" for k, v in statuses.most_common()) + "\n")
    if rejected:
        out.write("rejected: " + ", ".join(f"{k} {v}" for k, v in rejected.most_common()) + "\n")
    out.flush()
