"""Every worked example in tests/scenarios/ through the real command line.

Each folder holds ``events.jsonl``, ``at.txt`` (the time T) and ``expected.json``; the test runs
``python -m session_tally replay events.jsonl --at T`` in a subprocess, exactly as a user would, and
compares its output with ``expected.json`` (SPEC section 6):

- ``version`` and ``as_of`` are left out of the expected tallies (``as_of`` must still be T, and
  ``version`` an integer);
- timestamps compare as instants (``2026-03-10T10:00:00Z`` equals ``2026-03-10T11:00:00+01:00``);
- hours compare rounded to 2 decimals;
- the output may carry more fields than expected (the contract grows only by optional fields), but
  every expected field must be there with the expected value.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest

SCENARIOS = Path(__file__).parents[1] / "scenarios"
REPO = Path(__file__).resolve().parents[2]

TIME_FIELDS = {"start", "end", "as_of"}
HOUR_FIELDS = {"authorized_hours", "used_hours", "remaining_hours"}
TALLY_FIELDS = {
    "path_id", "program_id", "org_id", "authorized_hours", "authorized_source", "used_minutes",
    "pending_minutes", "upcoming_minutes", "used_hours", "remaining_hours", "meetings_by_status",
    "version", "as_of",
}  # fmt: skip
MEETING_FIELDS = {"meeting_id", "path_id", "status", "start", "end", "minutes", "disputed"}
REJECTED_FIELDS = {"line", "event_id", "reason"}
STATUSES = {
    "upcoming", "unconfirmed", "confirmed", "auto_confirmed", "did_not_occur", "late_canceled_pending",
    "late_canceled", "late_cancel_waived", "canceled", "rescheduled",
}  # fmt: skip


def scenario_dirs() -> list[Path]:
    return sorted(p for p in SCENARIOS.iterdir() if p.is_dir() and (p / "events.jsonl").exists())


def instant(text: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime (``Z`` accepted), for comparing instants."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    assert value.tzinfo is not None, f"naive timestamp {text!r}"
    return value


def hours(value: Any) -> Any:
    if value is None:
        return None
    assert isinstance(value, int | float) and not isinstance(value, bool), f"hours must be a number: {value!r}"
    return Decimal(repr(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def normalize(value: Any, key: str | None = None, keep: dict[str, Any] | None = None) -> Any:
    """Timestamps -> instants, hours -> 2-decimal Decimals, recursively; ``keep`` projects objects on
    the keys of the corresponding expected object."""
    if isinstance(value, dict):
        keys = value.keys() if keep is None else keep.keys()
        return {
            k: normalize(value[k], k, keep[k] if keep is not None and isinstance(keep[k], dict) else None)
            for k in keys
            if k in value
        }
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if key in TIME_FIELDS and isinstance(value, str):
        return instant(value)
    if key in HOUR_FIELDS:
        return hours(value)
    return value


def run_replay(folder: Path) -> tuple[dict[str, Any], str]:
    at = (folder / "at.txt").read_text().strip()
    proc = subprocess.run(
        [sys.executable, "-m", "session_tally", "replay", str(folder / "events.jsonl"), "--at", at],
        cwd=REPO,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    return json.loads(proc.stdout), at


def check_shapes(actual: dict[str, Any], at: str) -> None:
    """What must hold whatever the scenario: the fields of SPEC sections 5 and 6 and their orders."""
    assert {"tallies", "meetings", "rejected"} <= actual.keys()
    for t in actual["tallies"]:
        assert t.keys() >= TALLY_FIELDS, TALLY_FIELDS - t.keys()
        assert instant(t["as_of"]) == instant(at)
        assert isinstance(t["version"], int) and not isinstance(t["version"], bool)
        assert set(t["meetings_by_status"]) == STATUSES  # every status, zeros included
    for m in actual["meetings"]:
        assert m.keys() >= MEETING_FIELDS, MEETING_FIELDS - m.keys()
        assert m["start"].endswith("Z") and m["end"].endswith("Z")  # written in UTC with a Z
    for r in actual["rejected"]:
        assert r.keys() >= REJECTED_FIELDS
    path_ids = [t["path_id"] for t in actual["tallies"]]
    assert path_ids == sorted(path_ids)
    meeting_ids = [m["meeting_id"] for m in actual["meetings"]]
    assert meeting_ids == sorted(meeting_ids)


@pytest.mark.parametrize("folder", scenario_dirs(), ids=lambda p: p.name)
def test_scenario(folder: Path) -> None:
    expected = json.loads((folder / "expected.json").read_text())
    actual, at = run_replay(folder)
    check_shapes(actual, at)

    for t in expected["tallies"]:
        t.pop("version", None)
        t.pop("as_of", None)
    assert [t["path_id"] for t in actual["tallies"]] == [t["path_id"] for t in expected["tallies"]]
    for got, want in zip(actual["tallies"], expected["tallies"], strict=True):
        assert normalize(got, keep=want) == normalize(want), f"tally of {want['path_id']}"
    assert [m["meeting_id"] for m in actual["meetings"]] == [m["meeting_id"] for m in expected["meetings"]]
    for got, want in zip(actual["meetings"], expected["meetings"], strict=True):
        assert normalize(got, keep=want) == normalize(want), f"meeting {want['meeting_id']}"
    got_rejected = [{k: r[k] for k in REJECTED_FIELDS} for r in actual["rejected"]]
    assert got_rejected == expected["rejected"]


def test_every_scenario_is_listed_in_the_readme() -> None:
    readme = (SCENARIOS / "README.md").read_text()
    for folder in scenario_dirs():
        assert f"`{folder.name}`" in readme, f"{folder.name} is not described in tests/scenarios/README.md"
        assert (folder / "at.txt").exists() and (folder / "expected.json").exists()


def test_normalizer_compares_instants_and_hours() -> None:
    assert normalize({"start": "2026-03-10T10:00:00Z"}) == normalize({"start": "2026-03-10T11:00:00+01:00"})
    assert normalize({"used_hours": 2.5}) == normalize({"used_hours": 2.50})
    assert normalize({"used_hours": 2}) == normalize({"used_hours": 2.0})
    assert normalize({"remaining_hours": -0.17}) != normalize({"remaining_hours": -0.16})
    assert normalize({"remaining_hours": None}) == {"remaining_hours": None}
    assert normalize({"a": 1, "b": 2}, keep={"a": 0}) == {"a": 1}
