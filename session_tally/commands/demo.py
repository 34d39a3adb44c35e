"""`session-tally demo`: the whole pipeline on history and simulated traffic, with the web app.

Creates the topics, starts a worker, publishes a few months of dated history for the demo organization
(:mod:`session_tally.demo_history`: used hours, late cancels, auto-confirmations, disputes, a path over
its hours), starts the web app (`session-tally web`, the demo users) and prints its URL and the users,
then the traffic simulator (child processes, logs in ``.services/``); it follows the path-tallies and
meeting-statuses topics and redraws a small table every second (the terminal view, for headless use).
After ``--duration`` seconds the simulator stops; the worker and the web app stay up until Ctrl-C when
the demo runs in a terminal (``--then stay``), else everything stops and a summary is printed.
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
examples (after `session-tally services up` and `. .services/env`, or simply `make demo`):
  session-tally demo                                  # history, web app on :8000, 60 s of live traffic
  session-tally demo --duration 300 --rate 300 --web-port 8080
  session-tally demo --no-web --then exit             # the terminal view only, then stop
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
    p.add_argument("--web-port", type=int, default=8000, help="port of the web app (default 8000)")
    p.add_argument("--no-web", action="store_true", help="do not start the web app")
    p.add_argument("--no-history", action="store_true", help="do not publish the demo history first")
    p.add_argument(
        "--then",
        choices=["stay", "exit"],
        default=None,
        help="after the live traffic: keep the worker and web app up until Ctrl-C (stay; default in a "
        "terminal) or stop (exit; default otherwise)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(args))


async def _demo(args: argparse.Namespace) -> int:
    from session_tally.config import Settings
    from session_tally.topics import ensure_topics

    settings = Settings.from_env()
    mismatches = await ensure_topics(settings.kafka, settings.topics)
    for m in mismatches:
        print(f"topic mismatch: {m}", file=sys.stderr)
    logs = Path(os.environ.get("SESSION_TALLY_SERVICES_DIR", ".services"))
    logs.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "session_tally"]
    children: list[subprocess.Popen[bytes]] = []  # stopped in this order, whatever ends the demo
    counts = Counter[str]()
    try:
        worker_log = open(logs / "demo-worker.log", "ab")  # noqa: SIM115
        # children in sessions of their own: Ctrl-C reaches the demo only, which stops them in order (SIGTERM)
        worker = subprocess.Popen(
            [*cli, "worker", "--http-port", "8085"], stdout=worker_log, stderr=subprocess.STDOUT, start_new_session=True
        )
        children.append(worker)
        print(f"worker pid {worker.pid} (log {logs / 'demo-worker.log'}, metrics http://127.0.0.1:8085/metrics)")
        if not args.no_history:
            await publish_history(cli, logs)
        web_line = "" if args.no_web else start_web(cli, logs, args.web_port, children)
        sim_log = open(logs / "demo-simulate.log", "ab")  # noqa: SIM115
        simulator = subprocess.Popen(
            [*cli, "simulate", "--rate", str(args.rate), "--duration", str(args.duration)],
            stdout=sim_log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        children.insert(0, simulator)
        print(f"simulator pid {simulator.pid} publishing {args.rate:g} events/s for {args.duration:g}s")
        worker_failed = await _follow(args, settings, worker, web_line, logs, counts)
    finally:
        _stop(children)
    if worker_failed:
        return 1
    print(
        f"\ndone: {counts['tallies']} tallies, {counts['statuses']} status changes, {counts['rejected']} rejected "
        f"messages published while the demo ran; the worker stopped with exit code {worker.returncode}"
    )
    return 0 if worker.returncode == 0 else 1


def _stop(children: list[subprocess.Popen[bytes]]) -> None:
    for proc in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in children:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


async def _follow(
    args: argparse.Namespace,
    settings: Any,
    worker: subprocess.Popen[bytes],
    web_line: str,
    logs: Path,
    counts: Counter[str],
) -> bool:
    """The terminal view until the end of the live traffic (then, with ``--then stay``, until Ctrl-C);
    True when the worker died."""
    from aiokafka import AIOKafkaConsumer

    from producers.kafka_access import kafka_options

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
                return True
            now = time.monotonic()
            if now - last_draw >= 1.0:
                last_draw = now
                _draw(now - started, tallies, changed, statuses, rejected, counts, args.rows, web_line)
        stay = args.then == "stay" or (args.then is None and sys.stdin.isatty())
        if stay and not stop.is_set():
            print(f"\nthe live traffic is over; {web_line or 'the worker runs'}; press Ctrl-C to stop", flush=True)
            while not stop.is_set() and worker.poll() is None:
                await asyncio.sleep(0.5)
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        await consumer.stop()
    return False


def _draw(
    elapsed: float,
    tallies: dict[str, dict[str, Any]],
    changed: dict[str, float],
    statuses: Counter[str],
    rejected: Counter[str],
    counts: Counter[str],
    rows: int,
    web_line: str = "",
) -> None:
    out = sys.stdout
    if out.isatty():
        out.write("\x1b[2J\x1b[H")
    if web_line:
        out.write(web_line + "\n")
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


async def _history_created_at(settings: Any) -> int | None:
    """When the demo history's first program was created, if PostgreSQL has it (None: not there, or
    the database cannot tell yet, e.g. before the worker's first migration)."""
    from session_tally.demo_history import LEADERSHIP
    from storage import reads
    from storage.db import async_engine

    engine = async_engine(settings.database_url, settings.db_schema, pool_size=1)
    try:
        program = await reads.program(engine, LEADERSHIP)
    except Exception:
        return None
    finally:
        await engine.dispose()
    return None if program is None else program.created_at


async def publish_history(cli: list[str], logs: Path) -> None:
    """Write the demo history (dated up to now) to ``logs/demo-history.jsonl`` and publish it with
    `session-tally publish` (file order kept across the two topics), unless an earlier run did: the
    history is made once per state, so its meetings and answers stay consistent with each other."""
    from datetime import UTC, datetime

    from domain.timefmt import format_instant, instant_from_datetime
    from session_tally.config import Settings
    from session_tally.demo_history import history

    earlier = await _history_created_at(Settings.from_env())
    if earlier is not None:
        print(f"history: already published by an earlier demo (its first program dates from {format_instant(earlier)})")
        return
    lines = history(instant_from_datetime(datetime.now(UTC)))
    path = logs / "demo-history.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with open(logs / "demo-publish.log", "ab") as log:
        rc = subprocess.run([*cli, "publish", str(path)], stdout=log, stderr=subprocess.STDOUT).returncode
    state = "published" if rc == 0 else f"could not be published (exit {rc}, see {logs / 'demo-publish.log'})"
    print(f"history: {len(lines)} dated events of org-demo {state} ({path})")


def start_web(cli: list[str], logs: Path, port: int, children: list[subprocess.Popen[bytes]]) -> str:
    """Start `session-tally web` with the demo users (first in ``children``, to be stopped with them),
    wait until it answers, print its URL and the demo users; returns a one-line reminder for the
    terminal view ("" when it could not start)."""
    import urllib.request

    from session_tally.demo_history import DEMO_LOGINS

    web_log = open(logs / "demo-web.log", "ab")  # noqa: SIM115 - closed with the process
    web = subprocess.Popen(
        [*cli, "web", "--port", str(port)], stdout=web_log, stderr=subprocess.STDOUT, start_new_session=True
    )
    children.insert(0, web)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and web.poll() is None:
        try:
            with urllib.request.urlopen(url + "healthz", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.3)
    if web.poll() is not None:
        print(f"the web app exited with {web.returncode}; see {logs / 'demo-web.log'}")
        return ""
    print(f"\nweb app: {url}  (log {logs / 'demo-web.log'}); sign in as one of the demo users:")
    for user, password, what in DEMO_LOGINS:
        print(f"  {user:<6} password {password:<12} {what}")
    print()
    logins = ", ".join(f"{u}/{p}" for u, p, _w in DEMO_LOGINS[:4])
    return f"web app {url}  users {logins} (user/password)"
