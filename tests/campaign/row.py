"""One line of the campaign's table (:class:`Row`): what a scenario did, what it measured, whether it held."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Row:
    """One line of the campaign's table: what was done, what it measured, whether it held."""

    scenario: str
    runs: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    events: int = 0
    lost: int = 0
    duplicated: int = 0
    repeats: int = 0
    equal_runs: int = 0
    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # name -> (held, timed)
    errors: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # what made a check fail
    details: list[dict[str, Any]] = field(default_factory=list)  # per run: the verdict's breakdown
    series: list[dict[str, Any]] = field(default_factory=list)  # samples over time (the soak's), for --json
    seconds: float = 0.0

    def add_verdict(self, verdict: Any) -> None:
        self.runs += 1
        self.lost += verdict.lost
        self.duplicated += verdict.duplicated
        self.repeats += verdict.repeats
        self.equal_runs += int(verdict.equal)
        self.details.append(verdict.details)

    def check(self, name: str, held: bool, timed: bool = False, why: Sequence[str] = ()) -> None:
        """Record a named check; one that failed in any run stays failed (``why``: what made it fail)."""
        previous = self.checks.get(name, (True, timed))[0]
        self.checks[name] = (previous and held, timed)
        if not held:
            self.failures.extend(f"{name}: {reason}" for reason in why or ("",))

    @property
    def ok(self) -> bool:
        """Equal to replay in every run, nothing lost or duplicated, every untimed check held."""
        untimed = all(held for held, timed in self.checks.values() if not timed)
        return (
            not self.errors
            and self.runs > 0
            and self.equal_runs == self.runs
            and untimed
            and not (self.lost or self.duplicated)
        )

    @property
    def outcome(self) -> str:
        if self.errors:
            return "ERROR: " + self.errors[0].splitlines()[0][:200]
        text = "equal to replay" if self.equal_runs == self.runs else f"DIFFERS ({self.runs - self.equal_runs} runs)"
        failed = [name for name, (held, _timed) in self.checks.items() if not held]
        return text + ("; FAILED: " + ", ".join(failed) if failed else "")

    def faults_text(self) -> str:
        total = sum(self.faults.values())
        return f"{total}: " + ", ".join(f"{n} {kind}" for kind, n in self.faults.most_common()) if total else "0"

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "runs": self.runs,
            "faults": dict(self.faults),
            "input_events": self.events,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "byte_identical_repeats": self.repeats,
            "equal_runs": self.equal_runs,
            "outcome": self.outcome,
            "ok": self.ok,
            "checks": {k: {"held": h, "timed": t} for k, (h, t) in self.checks.items()},
            "figures": self.figures,
            "errors": self.errors,
            "check_failures": self.failures,
            "runs_detail": self.details,
            "samples": self.series,
            "seconds": round(self.seconds, 1),
        }
