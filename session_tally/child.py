"""`--producers process`: the relay, clock and janitor in a child process (`session-tally producers`)
that the worker starts and stops, and that dies with it (Linux PR_SET_PDEATHSIG, even on SIGKILL).

The child prints its counters once a second as one line ``METRICS {json}``; the worker merges them into
its own /metrics and passes every other line through.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from session_tally.config import Settings

METRICS_PREFIX = "METRICS "


def _libc_prctl() -> Any:
    import ctypes

    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except OSError:  # not glibc Linux: the child then outlives a SIGKILLed worker and stops on its own
        return None


_PRCTL = _libc_prctl()  # resolved in the parent: the forked child must not import or lock anything


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGTERM when the worker dies, even by SIGKILL (Linux PR_SET_PDEATHSIG).
    Only a C call runs between fork and exec (no import, no lock), so threads in the parent are safe."""
    if _PRCTL is not None:
        _PRCTL(1, 15)  # PR_SET_PDEATHSIG, SIGTERM


def start_producers_child(settings: Settings, graceful_timeout_s: float, clock: int | None) -> subprocess.Popen[bytes]:
    """`session-tally producers` with this worker's settings, as a child that dies with this process."""
    env = dict(os.environ) | settings.as_env()
    args = [sys.executable, "-m", "session_tally", "producers", "--graceful-timeout", str(graceful_timeout_s)]
    if clock is not None:
        from domain.timefmt import format_instant

        args += ["--clock", format_instant(clock)]
    return subprocess.Popen(args, env=env, preexec_fn=die_with_parent, stdout=subprocess.PIPE)


def metrics_line(counters: dict[str, float]) -> str:
    return METRICS_PREFIX + json.dumps(counters)


def merge_child_metrics(child: subprocess.Popen[bytes], metrics: Any) -> None:
    """Copy the child's ``METRICS {json}`` lines into this worker's metrics; pass other lines through
    (runs in a thread until the child's stdout closes)."""
    assert child.stdout is not None
    for raw in child.stdout:
        line = raw.decode("utf-8", "replace")
        if line.startswith(METRICS_PREFIX):
            try:
                metrics.counters.update(json.loads(line[len(METRICS_PREFIX) :]))
            except ValueError:
                pass
        else:
            sys.stdout.write(line)
            sys.stdout.flush()
