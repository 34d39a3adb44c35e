"""What `session-tally replay` is compared with: the traffic profiles of the generated streams, and the plain
``json.loads`` rate of the same file.

Invariant: the baseline is timed exactly as replay is (a child process started by :func:`run_measured`, its
wall time from start to exit, interpreter start-up included), so ``replay / json.loads`` compares the engine
with the least any Python reader of the file must do: decode every line once."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from session_tally.bench.machine import run_measured

PROFILES = ("default", "heavy")
HEAVY_PATHS = 10_000

# The child of the baseline: every line of the file through json.loads, nothing else (a line that is not
# JSON, e.g. the generator's truncated or non-UTF-8 bad input, counts as read). Prints "lines bad".
JSON_LOADS_SCRIPT = """\
import json, sys
loads = json.loads
lines = bad = 0
with open(sys.argv[1], "rb") as fh:
    for line in fh:
        lines += 1
        try:
            loads(line)
        except ValueError:
            bad += 1
print(lines, bad)
"""


def traffic_config(profile: str, seed: int, events: int, order_independent: bool = False) -> Any:
    """The generator's configuration of ``profile``.

    ``default``: the realistic mix (2 % bad input, 1 % duplicates, 1 % early events; paths scaled to the
    stream's length, 10,000 at 1,000,000 events; about 6 % of the lines rejected). ``heavy`` (issue 13: 10,000
    paths, ~15 % of the lines rejected): 10,000 paths at any length, 11 % bad input, 2 % duplicates, 2 % early
    events. Measured: 8 % bad input gives 12 % of the lines rejected (the bad input itself plus the later
    events of the meetings it broke, e.g. a confirmation of a meeting whose scheduling was rejected), 11 %
    gives 14.6 %; duplicates and early events are applied or ignored, not rejected, so they barely count."""
    from session_tally.traffic import TrafficConfig

    if profile == "default":
        return TrafficConfig(seed=seed, order_independent=order_independent)
    if profile == "heavy":
        # meetings * 10 = the stream length at which the generator stops scaling paths down: pinned to the
        # length asked for, a stream of any length has all HEAVY_PATHS paths
        return TrafficConfig(
            seed=seed,
            paths=HEAVY_PATHS,
            meetings=max(1, events // 10),
            bad_fraction=0.11,
            duplicate_fraction=0.02,
            early_fraction=0.02,
            order_independent=order_independent,
        )
    raise ValueError(f"unknown profile {profile!r} (one of {', '.join(PROFILES)})")


def json_loads_rate(path: Path, workdir: Path) -> dict[str, Any]:
    """Time ``json.loads`` of every line of ``path`` in a child process; lines/s and peak RSS."""
    out_path, err_path = workdir / "json_loads.out", workdir / "json_loads.err"
    cmd = [sys.executable, "-c", JSON_LOADS_SCRIPT, str(path)]
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        status, wall_s, rss_mb = run_measured(cmd, out, err)
    if status != 0:
        raise RuntimeError(f"json.loads baseline exited with status {status}: {err_path.read_text(errors='replace')}")
    lines, bad = (int(x) for x in out_path.read_text().split())
    return {
        "lines": lines,
        "not_json": bad,
        "seconds": round(wall_s, 3),
        "lines_per_s": round(lines / wall_s),
        "peak_rss_mb": round(rss_mb, 1),
    }
