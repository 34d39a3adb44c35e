"""The machine a benchmark runs on, and how a child process is timed."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from typing import Any

# ---------------------------------------------------------------------------------------- shared


def machine_info() -> dict[str, Any]:
    """CPU model, cores and Python: printed with every result (figures mean nothing without them)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(terse=True),
    }


def print_machine(info: dict[str, Any]) -> None:
    print(f"machine: {info['cpu']}, {info['cores']} cores; {info['python']} on {info['platform']}")


def run_measured(cmd: list[str], stdout: Any, stderr: Any) -> tuple[int, float, float]:
    """Run ``cmd``; return (exit status, wall seconds, peak RSS in MB) of that child process."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=stderr)
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    scale = 1024 * 1024 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return proc.returncode, elapsed, usage.ru_maxrss / scale
