"""`session-tally worker`: one member of the consumer group."""

from __future__ import annotations

import argparse
import asyncio
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
  SESSION_TALLY_BATCH_SIZE=2000 session-tally worker --batch-size 500   # the flag wins: 500
  curl -s 127.0.0.1:8085/healthz; curl -s 127.0.0.1:8085/metrics
  curl -s 127.0.0.1:8085/livez; curl -s 127.0.0.1:8085/readyz   # liveness and readiness probes

A bad value (flag or variable) stops the worker at once with one line naming it, exit status 2.
"""


def register(sub: Any) -> None:
    p = sub.add_parser(
        "worker",
        help="run one member of the consumer group (consumers + relay + clock)",
        description=(
            "Run one session-tally worker until SIGTERM/SIGINT. Every option below but --clock and "
            "--log-level overrides the environment variable it names (`session-tally config show` lists "
            "what the environment sets)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--clock", metavar="T", help="freeze the clock at T (RFC 3339); default: wall clock")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO (default), WARNING, ERROR")
    p.set_defaults(func=run, setting_flags="worker")  # --batch-size, --http-host, --log-format...: cli.py adds them

    q = sub.add_parser(
        "producers",
        help="run only the outbox relay, the clock and the waiting-event janitor (a worker starts one itself)",
        description="Run the producer side of a worker until SIGTERM/SIGINT (started by `session-tally worker`).",
    )
    q.add_argument("--clock", metavar="T", help="freeze the clock at T (RFC 3339)")
    q.add_argument("--log-level", default="INFO", help="DEBUG, INFO (default), WARNING, ERROR")
    q.add_argument("--metrics-fd", type=int, help=argparse.SUPPRESS)  # the worker's pipe (session_tally/child.py)
    q.set_defaults(func=run_producers, setting_flags="producers")  # --graceful-timeout, --log-format


def run(args: argparse.Namespace) -> int:
    from domain.timefmt import parse_instant
    from session_tally.config import Settings
    from session_tally.logs import configure as configure_logging
    from session_tally.runtime import WorkerOptions, run_worker

    settings = Settings.from_command_line(args)
    configure_logging(args.log_level, settings.worker.log_format)
    clock = parse_instant(args.clock) if args.clock else None
    worker = settings.worker
    options = WorkerOptions(
        clock=clock,
        max_records=worker.batch_size,
        batch_timeout_ms=worker.batch_timeout_ms,
        http_host=worker.http_host,
        http_port=worker.http_port,
        graceful_timeout_s=worker.graceful_timeout_s,
        instance_id=worker.instance_id,
        producers=worker.producers,
        stall_timeout_s=worker.stall_timeout_s,
        log_level=args.log_level,
        log_format=worker.log_format,
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

    settings = Settings.from_command_line(args)
    configure_logging(args.log_level, settings.worker.log_format)
    clock = parse_instant(args.clock) if args.clock else None
    asyncio.run(run_producers_process(settings, clock, settings.worker.graceful_timeout_s, early, args.metrics_fd))
    return 0
