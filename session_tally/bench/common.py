"""Shared pieces of the pipeline benchmark: constants and targets, the machine it runs on, progress and statistics."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from session_tally.config import Topics

READY_PREFIX = "session-tally worker ready: "
SEGMENTS = 5  # state growth: events/s per 1/SEGMENTS of the offsets applied
POLL_S = 0.2

TARGET_EVENTS_PER_S = 10_000
TARGET_NAIVE_RATIO = 20.0
TARGET_P99_MS = 250.0  # issue 13 (was 500 ms in issue "Performance")
TARGET_P99_AT_RATE = 2000.0
TARGET_RSS_MB = 200.0  # issue 13 (was 300 MB)
TARGET_RSS_EVENTS = 1_000_000

EXAMPLE = """\
examples:
  session-tally bench pipeline                                   # defaults: a few minutes on 2 cores
  session-tally bench pipeline --events 20000 --latency-seconds 5 --naive-events 1000
  session-tally bench pipeline --workers 1,2,3 --skip-latency --skip-naive   # scaling figures
  session-tally bench pipeline --events 1000000 --skip-latency --json bench-results/pipeline-1m.json

Needs Kafka and PostgreSQL (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL; `. .services/env`). Exit status 0 when
every phase ran (whatever the figures), 1 when a phase failed, 2 on bad options, 130 when interrupted.
"""


class BenchError(Exception):
    """A phase cannot go on (a worker died, the pipeline stalled, a service is missing)."""


# ---------------------------------------------------------------------------------------- machine


def machine_details() -> dict[str, Any]:
    from session_tally.bench.machine import machine_info

    info = machine_info()
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                info["ram_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    return info


def load_average() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def kafka_version() -> str:
    """The broker's version, read from the classpath of a local broker process (Kafka does not report its
    version over the wire); "unknown" when the broker is not a local process."""
    pattern = re.compile(rb"kafka_2\.\d+-(\d+\.\d+\.\d+)\.jar|kafka-(\d+\.\d+\.\d+)/lib")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"java" not in cmdline[:200] or b"kafka" not in cmdline:
            continue
        match = pattern.search(cmdline)
        if match:
            return (match.group(1) or match.group(2)).decode()
    return "unknown"


def command_line() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith("__main__.py"):
        return shlex.join([sys.executable, "-m", "session_tally", *argv[1:]])
    return shlex.join(argv)


# ---------------------------------------------------------------------------------------- small helpers


def say(message: str = "") -> None:
    print(message, flush=True)


class Progress:
    """A progress line on stderr about once a second (overwritten in place on a terminal)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.shown = False

    def show(self, text: str, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < 1.0:
            return
        self.last = now
        self.shown = True
        if self.tty:
            print("\r\033[K" + text, end="", file=sys.stderr, flush=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def done(self) -> None:
        if self.tty and self.shown:
            print("\r\033[K", end="", file=sys.stderr, flush=True)
        self.shown = False


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of already sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return float(sorted_values[rank - 1])


def rate(count: float, seconds: float | None) -> float | None:
    if seconds is None or seconds <= 0:
        return None
    return count / seconds


def fmt_rate(value: float | None, unit: str = "events/s") -> str:
    return "n/a" if value is None else f"{value:,.0f} {unit}"


def verdict(ok: bool | None) -> str:
    return "not measured" if ok is None else ("target met" if ok else "below target")


def with_prefix(prefix: str, outputs_prefix: str | None = None) -> Topics:
    """The five default topic names under ``prefix`` (outputs under ``outputs_prefix`` when given)."""
    names = Topics()
    out = prefix if outputs_prefix is None else outputs_prefix
    return Topics(
        admin_topic=prefix + names.admin_topic,
        path_topic=prefix + names.path_topic,
        tallies_topic=out + names.tallies_topic,
        statuses_topic=out + names.statuses_topic,
        rejected_topic=out + names.rejected_topic,
    )


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"
