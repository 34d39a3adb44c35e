"""What a test needs from the machine beyond Python: a missing tool skips the test on a laptop and FAILS it
under CI (``CI`` set: .ci/run installs every tool, so a skip there would hide a test that matters)."""

from __future__ import annotations

import os
import shutil

import pytest


def under_ci() -> bool:
    """``CI`` is set to something other than a no (``.ci/run`` sets ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(message: str) -> None:
    """Fail (under CI) or skip (elsewhere) with ``message``."""
    if under_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def tool(name: str, debian_package: str | None = None) -> str:
    """The path of the command ``name``; else :func:`unavailable`, naming the Debian package."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (Debian: apt-get install {debian_package or name}; .ci/run installs it)")
    assert path is not None
    return path
