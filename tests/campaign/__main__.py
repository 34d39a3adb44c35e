"""`python -m tests.campaign`: the fault campaign (docs/reliability.md, "Fault campaign").

Examples::

    . .services/env                                  # the running Kafka and PostgreSQL
    python -m tests.campaign --quick                 # every scenario at CI size (a few minutes)
    python -m tests.campaign --full --json out.json  # the issue's sizes (about 1.5 hours on 2 cores)
    python -m tests.campaign --full --only crash freeze --runs 2
    python -m tests.campaign --list

Exit status: 0 when every row is equal to replay with nothing lost or duplicated and every untimed
check held; 1 otherwise; 2 when the campaign cannot start (services not configured, unknown scenario).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from tests.campaign.harness import CampaignError, Context, Services, say
from tests.campaign.runner import machine, registry, run_campaign, select, table, write_json


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.campaign",
        description="Inject faults into the real pipeline (worker processes, Kafka, PostgreSQL) and check that "
        "every run ends equal to `replay`, with nothing lost or duplicated.",
        epilog=__doc__.split("Examples::", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, every scenario in a few minutes (default)")
    mode.add_argument(
        "--full", action="store_true", help="the issue's sizes (300,000-event backlogs, a 30-minute soak)"
    )
    p.add_argument("--only", nargs="+", metavar="NAME", default=[], help="run these scenarios (see --list)")
    p.add_argument("--runs", type=int, help="runs per scenario instead of each scenario's own count")
    p.add_argument("--json", metavar="FILE", help="write every row, figure and per-run breakdown to FILE")
    p.add_argument("--seed", type=int, default=20261201, help="seed of every random choice (default 20261201)")
    p.add_argument("--logs", metavar="DIR", help="where the workers' logs go (default: a new temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep each run's topics and schema (for inspection)")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = p.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        p.error("--runs must be 1 or more")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    # the campaign's own clients (publisher, readers) retry through the outages it causes: not news
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    if args.list:
        for scenario in registry().values():
            print(f"{scenario.name:20} {scenario.summary}{'' if scenario.quick else ' (long: --full or by name)'}")
        return 0
    try:
        scenarios = select(args.only, full=args.full)
        services = Services.from_env()
    except CampaignError as exc:
        print(f"campaign: {exc}", file=sys.stderr)
        return 2
    out_dir = Path(args.logs) if args.logs else Path(tempfile.mkdtemp(prefix="session-tally-campaign-"))
    ctx = Context(services, out_dir, full=args.full, runs=args.runs, seed=args.seed, keep=args.keep)
    started = machine()
    say(f"campaign ({'full' if args.full else 'quick'}): {', '.join(s.name for s in scenarios)}; logs in {out_dir}")
    say(f"machine: {started['cpu']}, {started['cores']} cores, load {started['load_average']}")
    rows = run_campaign(ctx, scenarios)
    print()
    print(table(rows))
    if args.json:
        write_json(args.json, ctx, rows, started)
        print(f"\nwritten: {args.json}")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
