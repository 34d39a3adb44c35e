"""Worker processes for the pipeline benchmark: started, watched and stopped (every child stopped in a finally)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from session_tally.bench.common import READY_PREFIX, BenchError
from session_tally.config import Settings

# ---------------------------------------------------------------------------------------- workers


class WorkerPool:
    """Worker processes of one phase; ``stop()`` is safe to call more than once."""

    def __init__(self, logdir: Path, label: str) -> None:
        self.logdir = logdir
        self.label = label
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []
        self.peak_rss_mb: list[float] = []
        self.exit_codes: list[int] = []

    def start(self, count: int, settings: Settings, batch_size: int, clock: str | None, http: bool = False) -> float:
        """Start ``count`` workers; returns the wall-clock time (s) just before the first one started. With
        ``http`` each serves /metrics on a free loopback port (named in its "ready" line), else none."""
        env = dict(os.environ) | settings.as_env() | {"PYTHONUNBUFFERED": "1"}
        args = [
            sys.executable, "-m", "session_tally", "worker", "--http-host", "127.0.0.1",
            "--http-port", "0" if http else "-1", "--log-level", "WARNING", "--batch-size", str(batch_size),
        ]  # fmt: skip
        if clock:
            args += ["--clock", clock]
        started = time.time()
        for i in range(count):
            log_path = self.logdir / f"{self.label}-worker{i + 1}.log"
            with open(log_path, "ab") as log:
                self.procs.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT))
            self.logs.append(log_path)
        return started

    def check_alive(self) -> None:
        for proc, log in zip(self.procs, self.logs, strict=True):
            if proc.poll() is not None:
                tail = log.read_text(errors="replace")[-3000:]
                raise BenchError(f"worker pid {proc.pid} exited with status {proc.returncode}; log {log}:\n{tail}")

    def all_ready(self) -> bool:
        """Every worker printed its "ready" line (started its subscriber, relay and clock)."""
        return all(READY_PREFIX in log.read_text(errors="replace") for log in self.logs)

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            self.check_alive()
            if self.all_ready():
                return
            if time.monotonic() > deadline:
                raise BenchError(f"workers not ready after {timeout_s} s (logs in {self.logdir})")
            time.sleep(0.1)

    def read_peak_rss(self) -> list[float]:
        """VmHWM (peak resident set) of every running worker, in MB."""
        peaks = []
        for proc in self.procs:
            with contextlib.suppress(OSError, ValueError), open(f"/proc/{proc.pid}/status", encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        peaks.append(round(int(line.split()[1]) / 1024, 1))
                        break
        self.peak_rss_mb = peaks
        return peaks

    def stop(self, timeout_s: float = 30.0) -> list[int]:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        codes = []
        deadline = time.monotonic() + timeout_s
        for proc in self.procs:
            try:
                codes.append(proc.wait(max(0.1, deadline - time.monotonic())))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait(10))
        self.exit_codes = codes
        return codes
