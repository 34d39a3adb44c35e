"""Differential test: `session-tally replay` against an independent model of the specification
(tests/oracle/model.py, written without reading domain/), on generated streams.

Two generators: ``gen`` is heavy on bad input (malformed JSON, boundary sizes, bad timestamps,
durations and hours, wrong roles, duplicates with the same and other content, unknown references,
reordering, organization switches, verification off); ``gen2`` on semantics (well-formed events, dense
lifecycles on few meetings, settings changes and answers on the window edges, disputes, heavy
reordering) with `--at` values at starts, ends and deadlines and one second before them.

The product side runs exactly what the CLI runs (its line reader, `Replay`, the JSON encoder)."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from domain.replay import Replay
from domain.timefmt import parse_instant
from session_tally.commands.replay import _feed
from tests.oracle import gen, gen2, model

SEEDS = 300  # per generator; about 5 s in all


def product(raw: bytes, at: str) -> dict[str, Any]:
    replay = Replay()
    _feed(replay, io.BytesIO(raw), False)
    return json.loads(json.dumps(replay.document(parse_instant(at))))  # type: ignore[no-any-return]


def normal(doc: dict[str, Any]) -> dict[str, Any]:
    """Timestamps as instants, hours as decimals, without the tally version (numbering differs)."""

    def instant(s: str) -> str:
        parsed = model.parse_ts(s)
        return parsed.isoformat() if parsed else f"BAD:{s}"

    def number(x: Any) -> str | None:
        return None if x is None else str(Decimal(str(x)).normalize())

    tallies = []
    for t in doc["tallies"]:
        t = dict(t)
        t.pop("version", None)
        t["as_of"] = instant(t["as_of"])
        for k in ("authorized_hours", "used_hours", "remaining_hours"):
            t[k] = number(t[k])
        tallies.append(t)
    meetings = [dict(m, start=instant(m["start"]), end=instant(m["end"])) for m in doc["meetings"]]
    return {"tallies": tallies, "meetings": meetings, "rejected": doc["rejected"]}


@pytest.mark.parametrize("generator", [gen, gen2], ids=["bad-input", "semantics"])
@pytest.mark.parametrize("seed", range(SEEDS))
def test_replay_equals_the_independent_model(generator: Any, seed: int, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    ats = generator.generate(seed, str(path))
    raw = path.read_bytes()
    assert ats and raw.count(b"\n") >= 5
    for at in ats:
        want = normal(json.loads(json.dumps(model.replay(raw, model.parse_ts(at)))))
        got = normal(product(raw, at))
        for part in ("rejected", "meetings", "tallies"):
            assert got[part] == want[part], f"{part} differ at --at {at} (seed {seed}, stream {path})"


def test_the_oracle_passes_every_worked_example() -> None:
    """The model is only an oracle if it gets the specification's own examples right."""
    scenarios = sorted(p for p in (Path(__file__).parents[1] / "scenarios").iterdir() if p.is_dir())
    assert len(scenarios) >= 12
    for scenario in scenarios:
        at = (scenario / "at.txt").read_text().strip()
        got = normal(json.loads(json.dumps(model.replay((scenario / "events.jsonl").read_bytes(), model.parse_ts(at)))))
        expected = json.loads((scenario / "expected.json").read_text())
        for t in expected["tallies"]:
            t.setdefault("as_of", at)
        want = normal(expected)
        for part in ("rejected", "meetings"):
            assert got[part] == want[part], (scenario.name, part)
        for g, w in zip(got["tallies"], want["tallies"], strict=True):
            assert {k: v for k, v in g.items() if k != "as_of"} == {k: v for k, v in w.items() if k != "as_of"}, (
                scenario.name
            )
