"""`session-tally worker`: one member of the consumer group."""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import replace
from typing import Any

EPILOG = """\
Runs the input subscriber (both input topics, in batches), the outbox relay (tallies, statuses,
rejected), the clock (time-driven status changes) and the waiting-event janitor. Start more workers
with the same group id to scale out: Kafka splits the partitions between them.

examples:
  session-tally worker
  session-tally worker --clock 2026-06-01T00:00:00Z      # frozen clock: what-if runs and tests
  SESSION_TALLY_GROUP_ID=session-tally session-tally worker --http-port 8085
  session-tally worker --no-create-topics          # topics are managed elsewhere (a managed cluster)
  session-tally worker --http-host 0.0.0.0 --log-format json   # in a container
  curl -s 127.0.0.1:8085/healthz; curl -s 127.0.0.1:8085/metrics
  curl -s 127.0.0.1:8085/livez; curl -s 127.0.0.1:8085/readyz   # liveness and readiness probes
"""


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: expected a port number (0: any free port, -1: off)") from None
    if not -1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value}: expected 0-65535 (0: any free port) or -1 (off)")
    return port


def _log_format(value: str) -> str:
    from session_tally.logs import FORMATS

    if value not in FORMATS:
        raise argparse.ArgumentTypeError(f"{value!r}: expected one of {', '.join(FORMATS)}")
    return value


def _add_log_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO (default), WARNING, ERROR")
    p.add_argument(
        "--log-format",
        type=_log_format,
        default=os.environ.get("SESSION_TALLY_LOG_FORMAT") or "text",
        help="text (default) or json: one JSON object a line (default from SESSION_TALLY_LOG_FORMAT)",
    )


def register(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="run one member of the consumer group (consumers + relay + clock)",
        description="Run one session-tally worker until SIGTERM/SIGINT.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--clock", metavar="T", help="freeze the clock at T (RFC 3339); default: wall clock")
    p.add_argument("--group", help="consumer group id (default SESSION_TALLY_GROUP_ID or session-tally)")
    p.add_argument("--batch-size", type=int, default=5000, help="max records per batch/transaction (default 5000)")
    p.add_argument("--batch-timeout-ms", type=int, default=50, help="max wait to fill a batch (default 50)")
    p.add_argument(
        "--park-timeout",
        type=float,
        help="seconds an event may wait for its program/meeting (default SESSION_TALLY_PARK_TIMEOUT_S or 30)",
    )
    p.add_argument(
        "--http-host",
        default=os.environ.get("SESSION_TALLY_HTTP_HOST") or "127.0.0.1",
        help="address of the health/metrics endpoint (default SESSION_TALLY_HTTP_HOST or 127.0.0.1; 0.0.0.0 in a "
        "container)",
    )
    p.add_argument(
        "--http-port",
        type=_port,
        default=os.environ.get("SESSION_TALLY_HTTP_PORT") or "8085",
        help="port of the health/metrics endpoint (default SESSION_TALLY_HTTP_PORT or 8085; 0 = any free port, "
        "-1 = off); a port in use stops the worker with exit status 2",
    )
    p.add_argument(
        "--graceful-timeout",
        type=float,
        default=15.0,
        help="seconds to finish the batch in flight on SIGTERM (default 15)",
    )
    p.add_argument(
        "--stall-timeout",
        type=float,
        default=120.0,
        help="seconds records may wait on a partition (or in the outbox) without progress before /healthz fails "
        "(default 120)",
    )
    p.add_argument("--instance-id", help="static group membership id (avoids a rebalance on restart)")
    p.add_argument(
        "--no-create-topics",
        dest="create_topics",
        action="store_false",
        default=None,
        help=(
            "never create topics: stop with a message naming the missing ones (default: create them as "
            "`topics create` does, unless SESSION_TALLY_CREATE_TOPICS=false)"
        ),
    )
    p.add_argument(
        "--producers",
        choices=["process", "in-process"],
        default=os.environ.get("SESSION_TALLY_PRODUCERS") or "in-process",
        help=(
            "run the relay, clock and janitor in this process (default; lowest latency) or in a child "
            "process (spreads CPU over two processes; default from SESSION_TALLY_PRODUCERS)"
        ),
    )
    _add_log_arguments(p)
    p.set_defaults(func=run)

    q = sub.add_parser(
        "producers",
        help="run only the outbox relay, the clock and the waiting-event janitor (a worker starts one itself)",
        description="Run the producer side of a worker until SIGTERM/SIGINT (started by `session-tally worker`).",
    )
    q.add_argument("--clock", metavar="T", help="freeze the clock at T (RFC 3339)")
    q.add_argument("--graceful-timeout", type=float, default=15.0, help="seconds to drain the outbox on SIGTERM")
    q.add_argument("--metrics-fd", type=int, help=argparse.SUPPRESS)  # the worker's pipe (session_tally/child.py)
    _add_log_arguments(q)
    q.set_defaults(func=run_producers)


def run(args: argparse.Namespace) -> int:
    from domain.timefmt import parse_instant
    from session_tally.config import Settings
    from session_tally.logs import configure as configure_logging
    from session_tally.runtime import WorkerOptions, run_worker

    configure_logging(args.log_level, args.log_format)
    settings = Settings.from_env()
    if args.group:
        settings = replace(settings, group_id=args.group)
    if args.park_timeout is not None:
        settings = replace(settings, park_timeout_s=args.park_timeout)
    if args.create_topics is not None:
        settings = replace(settings, create_topics=args.create_topics)
    clock = parse_instant(args.clock) if args.clock else None
    options = WorkerOptions(
        clock=clock,
        max_records=args.batch_size,
        batch_timeout_ms=args.batch_timeout_ms,
        http_host=args.http_host,
        http_port=args.http_port,
        graceful_timeout_s=args.graceful_timeout,
        instance_id=args.instance_id,
        producers=args.producers,
        stall_timeout_s=args.stall_timeout,
        log_level=args.log_level,
        log_format=args.log_format,
    )
    asyncio.run(run_worker(settings, options))
    return 0


def run_producers(args: argparse.Namespace) -> int:
    import signal

    # a SIGTERM that arrives while starting up still means "drain and stop", never "die at once"
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    from domain.timefmt import parse_instant
    from session_tally.config import Settings
    from session_tally.logs import configure as configure_logging
    from session_tally.runtime import run_producers_process

    configure_logging(args.log_level, args.log_format)
    clock = parse_instant(args.clock) if args.clock else None
    asyncio.run(run_producers_process(Settings.from_env(), clock, args.graceful_timeout, early, args.metrics_fd))
    return 0
