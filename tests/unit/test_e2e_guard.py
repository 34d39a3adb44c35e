"""The browser tests never skip silently under CI: without Debian's chromium they fail there."""

from __future__ import annotations

import pytest

from tests.e2e import conftest as e2e


def test_missing_chromium_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(e2e, "CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium"):
        e2e.chromium_or_fail()
    monkeypatch.setenv("CI", "")
    with pytest.raises(pytest.skip.Exception):
        e2e.chromium_or_fail()
