"""`--producers process`: the relay, clock and janitor in a child process (`session-tally producers`)
that the worker starts and stops, and that dies with it (Linux PR_SET_PDEATHSIG, even on SIGKILL).

Metrics: the worker hands the child the write end of a pipe (``--metrics-fd``); once a second (and when
it stops) the child writes its metrics' :meth:`~session_tally.metrics.Metrics.snapshot` there as one
JSON line, and a thread of the worker hands each line to ``Metrics.merge_child``, so the worker's
/metrics shows both processes' counters and histograms added up (session_tally/metrics.py). A pipe of
its own keeps the metrics out of the child's stdout and stderr, which the child shares with the worker
(its log lines and its ``session-tally producers ready`` line appear in the worker's output as they
are). prometheus_client's multiprocess mode was the alternative: it needs its directory set before the
library is imported, files to clean up per process, and cannot remove a series (the lag of a
partition no longer owned), so it was not taken.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from typing import IO, Any

from session_tally.config import Settings


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


def start_producers_child(
    settings: Settings,
    graceful_timeout_s: float,
    clock: int | None,
    metrics: Any,
    log_level: str = "INFO",
    log_format: str = "text",
) -> subprocess.Popen[bytes]:
    """`session-tally producers` with this worker's settings and logging, as a child that dies with this
    process; its metrics flow into ``metrics`` (a thread reads them until the child's pipe closes)."""
    read_fd, write_fd = os.pipe()
    env = dict(os.environ) | settings.as_env()
    args = [sys.executable, "-m", "session_tally", "producers", "--graceful-timeout", str(graceful_timeout_s)]
    args += ["--log-level", log_level, "--log-format", log_format, "--metrics-fd", str(write_fd)]
    if clock is not None:
        from domain.timefmt import format_instant

        args += ["--clock", format_instant(clock)]
    try:
        child = subprocess.Popen(args, env=env, preexec_fn=die_with_parent, pass_fds=(write_fd,))
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)  # the child has its copy: the pipe closes when the child ends
    reader = os.fdopen(read_fd, "rb")
    threading.Thread(target=merge_child_metrics, args=(reader, metrics), name="child-metrics", daemon=True).start()
    return child


def merge_child_metrics(pipe: IO[bytes], metrics: Any) -> None:
    """Hand each snapshot line of the child to ``metrics.merge_child`` until the pipe closes."""
    with pipe:
        for raw in pipe:
            try:
                snapshot = json.loads(raw)
            except ValueError:
                continue
            if isinstance(snapshot, dict):
                metrics.merge_child(snapshot)


class MetricsPipe:
    """The child's end: writes snapshots to ``--metrics-fd`` (nothing when started by hand without one)."""

    def __init__(self, fd: int | None) -> None:
        self.out = None if fd is None else os.fdopen(fd, "w", encoding="utf-8")

    def send(self, metrics: Any) -> None:
        if self.out is None:
            return
        try:
            self.out.write(json.dumps(metrics.snapshot(), separators=(",", ":")) + "\n")
            self.out.flush()
        except (OSError, ValueError):  # the worker is gone: nobody to tell
            self.out = None

    def close(self) -> None:
        if self.out is not None:
            try:
                self.out.close()
            except OSError:
                pass
            self.out = None
