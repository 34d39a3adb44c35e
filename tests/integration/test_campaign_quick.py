"""The fault campaign's quick set (tests/campaign, docs/reliability.md "Fault campaign"), one test per
scenario, in CI; the long ones (the Kafka broker restarts and the soak) run with `make campaign`.

Each must end equal to `replay`, with nothing lost and nothing duplicated (both measured from the raw
output topics and PostgreSQL), and every untimed check held (a stale transaction never commits after a
freeze, every bad message rejected once and kept byte for byte, workers exit 0 on SIGTERM). Timed
checks (how long others were blocked by a frozen worker) are reported in the row, never asserted.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.campaign.harness import Context, Services
from tests.campaign.runner import registry, run_one, table

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("name", [name for name, scenario in registry().items() if scenario.quick])
def test_quick_scenario(name: str, kafka_bootstrap: str, database_url: str, tmp_path: Path) -> None:
    ctx = Context(Services(kafka_bootstrap, database_url), tmp_path)
    row = run_one(ctx, registry()[name])
    print(table([row]))
    assert not row.errors, row.errors[0]
    assert row.runs > 0 and row.equal_runs == row.runs, row.details
    assert row.lost == 0 and row.duplicated == 0, row.details
    failed = [check for check, (held, timed) in row.checks.items() if not held and not timed]
    assert not failed, (failed, row.failures, row.figures)
