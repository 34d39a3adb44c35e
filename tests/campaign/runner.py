"""Runs the chosen scenarios one after the other, each in its own stages, and prints the table.

A scenario that raises is a row with its error (the others still run). The table is Markdown, as
docs/reliability.md shows it; ``--json`` keeps every figure and each run's breakdown.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from tests.campaign.harness import CampaignError, Context, Scenario, say
from tests.campaign.row import Row


def registry() -> dict[str, Scenario]:
    """Every scenario, in the order the campaign runs them."""
    from tests.campaign import bad_input, crash, freeze, outages, rebalance, slow_db, soak

    scenarios = [
        crash.SCENARIO,
        *freeze.SCENARIOS,
        *rebalance.SCENARIOS,
        *outages.SCENARIOS,
        slow_db.SCENARIO,
        bad_input.SCENARIO,
        soak.SCENARIO,
    ]
    return {s.name: s for s in scenarios}


def select(names: Sequence[str], full: bool = False) -> list[Scenario]:
    """The scenarios named (a name, or the start of names: ``freeze`` is both freeze scenarios); without
    names, every scenario (``full``) or the quick set."""
    every = registry()
    if not names:
        return [s for s in every.values() if full or s.quick]
    chosen: list[Scenario] = []
    for name in names:
        found = [s for key, s in every.items() if key == name or key.startswith(name + "-")]
        if not found:
            raise CampaignError(f"no scenario {name!r}; there are: {', '.join(every)}")
        chosen += [s for s in found if s not in chosen]
    return chosen


def run_one(ctx: Context, scenario: Scenario) -> Row:
    say(f"== {scenario.name}: {scenario.summary} ({'full' if ctx.full else 'quick'})")
    started = time.monotonic()
    try:
        row = scenario.run(ctx)
    except Exception as exc:
        row = Row(scenario.name)
        row.errors.append(f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        say(f"== {scenario.name}: ERROR {type(exc).__name__}: {str(exc)[:2000]}")
    row.seconds = time.monotonic() - started
    say(f"== {scenario.name}: {row.outcome}; lost {row.lost}, duplicated {row.duplicated} ({row.seconds:.0f} s)")
    return row


def run_campaign(ctx: Context, scenarios: Sequence[Scenario]) -> list[Row]:
    return [run_one(ctx, s) for s in scenarios]


def _figures_text(row: Row) -> str:
    parts = []
    for name, value in row.figures.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items())
        elif isinstance(value, list):
            value = ", ".join(str(v) for v in value)
        parts.append(f"{name}: {value}")
    timed = [f"{name}: {'held' if held else 'EXCEEDED'}" for name, (held, t) in row.checks.items() if t]
    return "; ".join(parts + timed)


def table(rows: Sequence[Row]) -> str:
    columns = ("test", "runs", "faults injected", "input events", "lost", "duplicated", "byte-identical repeats")
    head = "| " + " | ".join((*columns, "outcome", "figures")) + " |"
    lines = [head, "|---" * (len(columns) + 2) + "|"]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.runs} | {r.faults_text()} | {r.events:,} | {r.lost} | {r.duplicated} | "
            f"{r.repeats:,} | {r.outcome} | {_figures_text(r)} |"
        )
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    """Where the figures come from: CPU model and count, memory, load, versions."""
    cpu = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "")
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def write_json(path: str, ctx: Context, rows: Sequence[Row], started: dict[str, Any]) -> None:
    doc = {
        "mode": "full" if ctx.full else "quick",
        "seed": ctx.seed,
        "machine_at_start": started,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "rows": [r.as_dict() for r in rows],
    }
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=2, default=str)
        fh.write("\n")
