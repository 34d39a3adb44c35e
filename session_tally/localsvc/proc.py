"""Small process helpers shared by the local Kafka and PostgreSQL services."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

HOST = "127.0.0.1"


class ServiceError(Exception):
    """A service could not be installed, started or stopped; the message says why (with log lines)."""


def say(message: str) -> None:
    """Progress for the person at the terminal: on stderr, so stdout stays parseable."""
    print(f"services: {message}", file=sys.stderr, flush=True)


def services_dir() -> Path:
    """``$SESSION_TALLY_SERVICES_DIR``, else ``.services`` in the current directory (absolute)."""
    configured = os.environ.get("SESSION_TALLY_SERVICES_DIR", "")
    return (Path(configured) if configured else Path.cwd() / ".services").absolute()


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME", "") or str(Path.home() / ".cache")
    return Path(base) / "session-tally"


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock, so two `services up` (or an `up` and a `down`) never interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return f"({path} does not exist)"
    kept = text.splitlines()[-lines:]
    return "\n".join(kept) if kept else f"({path} is empty)"


def log_excerpt(title: str, path: Path, lines: int = 30) -> str:
    return f"--- last {lines} lines of {path} ({title}) ---\n{tail(path, lines)}\n--- end of {path.name} ---"


def read_pid(path: Path) -> int | None:
    try:
        first = path.read_text().split()[0]
        return int(first)
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live process (a zombie child of ours is reaped and counts as dead)."""
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def port_open(port: int, host: str = HOST, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def free_port(host: str = HOST) -> int:
    """A TCP port nobody listens on now (the kernel's choice; free until somebody else takes it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], deadline_s: float, interval_s: float = 0.1) -> bool:
    """Poll ``condition`` until it holds (True) or ``deadline_s`` seconds have passed (False)."""
    end = time.monotonic() + deadline_s
    while True:
        if condition():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(interval_s)


def terminate(pid: int, name: str, deadline_s: float = 60.0) -> None:
    """SIGTERM, wait up to ``deadline_s`` for a clean exit, then SIGKILL."""
    if not pid_alive(pid):
        return
    started = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_until(lambda: not pid_alive(pid), deadline_s, 0.2):
        say(f"{name}: stopped (pid {pid}) in {time.monotonic() - started:.1f} s")
        return
    say(f"{name}: still running after {deadline_s:.0f} s, sending SIGKILL to pid {pid}")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 10.0, 0.1)


def run(
    cmd: Sequence[str],
    *,
    what: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 600.0,
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; on failure raise ServiceError with its output."""
    try:
        result = subprocess.run(
            list(cmd),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise ServiceError(f"{what}: timed out after {timeout_s:.0f} s: {' '.join(cmd)}") from exc
    except FileNotFoundError as exc:
        raise ServiceError(f"{what}: command not found: {cmd[0]}") from exc
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-30:]
        raise ServiceError(f"{what} failed (exit {result.returncode}): {' '.join(cmd)}\n" + "\n".join(output))
    return result


def ensure_command(name: str, package: str, why: str) -> str:
    """The path of command ``name``, installing Debian's ``package`` first when it is not on PATH."""
    found = shutil.which(name)
    if found is None:
        apt_install([package], why)
        found = shutil.which(name)
    if found is None:
        raise ServiceError(f"{why}: {name} still not found after installing {package}")
    return found


def apt_install(packages: Sequence[str], why: str) -> None:
    """Install Debian packages (root only): ``apt-get update`` then ``apt-get install -y``."""
    if shutil.which("apt-get") is None:
        raise ServiceError(f"{why}: install {' '.join(packages)} (no apt-get on this machine)")
    prefix: list[str] = []
    if os.geteuid() != 0:
        if shutil.which("sudo") is None:
            raise ServiceError(f"{why}: run as root, or install {' '.join(packages)} yourself")
        prefix = ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    say(f"{why}: apt-get install {' '.join(packages)} (takes a minute)")
    started = time.monotonic()
    run([*prefix, "apt-get", "update", "-q"], what="apt-get update", env=env)
    run(
        [*prefix, "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        what=f"apt-get install {' '.join(packages)}",
        env=env,
    )
    say(f"installed {' '.join(packages)} in {time.monotonic() - started:.1f} s")


def find_process(*needles: str) -> tuple[int, str] | None:
    """The first process (pid, command line) whose command line contains every one of ``needles``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        line = cmdline(int(entry.name))
        if line and all(needle in line for needle in needles):
            return int(entry.name), line
    return None
