"""The state and helpers shared by the parts of the traffic simulation (internal).

Formatting is cached (one string per day, one per second of the day), ids come from the seeded RNG, and
records are built from f-string templates: the generator's speed is mostly here.
"""

from __future__ import annotations

import heapq
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from session_tally.traffic.config import Record, Tagged, TrafficConfig
from session_tally.traffic.model import (
    CALENDAR,
    DAY_S,
    EVENTS_PER_MEETING,
    LIVE,
    MINUTE_S,
    SimMeeting,
    SimPath,
    SimProgram,
)

T = TypeVar("T")
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}
_HMS: list[str] = []


def _hms() -> list[str]:
    if not _HMS:
        _HMS.extend(f"{h:02d}:{m:02d}:{s:02d}Z" for h in range(24) for m in range(60) for s in range(60))
    return _HMS


class SimCore:
    """The state of one simulation and the helpers every part of it uses."""

    def __init__(self, config: TrafficConfig, events: int) -> None:
        self.cfg = config
        self.events = events
        self.rng = random.Random(f"{config.seed}:{config.run_tag}" if config.run_tag else config.seed)
        self.tag = config.run_tag
        self.rnd = self.rng.random
        self.getrandbits = self.rng.getrandbits
        self.base = int(config.epoch.timestamp())
        self.now = self.base
        self.timing = CALENDAR if config.rate is None else LIVE
        self.out: deque[Tagged] = deque()
        self.heap: list[tuple[int, int, Callable[[Any, Any, int], None], Any, Any]] = []
        self.seq = 0
        self.days: dict[int, str] = {}
        self.hms = _hms()
        self.meeting_count = 0
        self.n_normal = 0
        self.far_count = 0
        self.settings_count = 0
        self.ring: list[Tagged] = []
        self.org_enabled: dict[str, bool] = {}
        self.orgs: list[str] = []
        self.programs: list[SimProgram] = []  # accepted ones
        self.created: list[SimProgram] = []  # accepted and published
        self.paths: list[SimPath] = []
        self.started: list[SimPath] = []  # registered paths
        self.vstarted: list[SimPath] = []  # registered paths of verification-on programs
        self.mid_paths: list[SimPath] = []  # paths of programs created mid-stream
        self.support = tuple(f"support-{k}" for k in range(1, 5))
        self._size()
        self.p_early = min(1.0, config.early_fraction * 2.6)
        # set by the setup: the rate controller and the admin activity
        self.bulk_t0 = self.ctl_t = self.ctl_n = 0
        self.ctl_window = 1
        self.gap_factor = 1.0
        self.admin_gap = 1.0

    # ---------------------------------------------------------------- sizes and rates
    def _size(self) -> None:
        cfg = self.cfg
        if cfg.rate is None:
            reference = max(1, cfg.meetings * 10)
            f = min(1.0, max(self.events, 0) / reference)
            self.n_paths = max(3, round(cfg.paths * f))
            self.n_programs = max(6, min(cfg.programs, round(cfg.programs * math.sqrt(f))))
            self.n_orgs = max(4, min(cfg.orgs, round(cfg.orgs * math.sqrt(f))))
            normal = max(1.0, self.events * (1 - cfg.bad_fraction - cfg.duplicate_fraction))
            self.rate_normal = normal / self.timing.horizon
        else:
            # enough paths that each one schedules at most about one meeting every 4 s (times are whole seconds)
            self.n_paths = max(3, cfg.paths, math.ceil(4 * cfg.rate / EVENTS_PER_MEETING))
            self.n_programs = max(6, cfg.programs)
            self.n_orgs = max(4, cfg.orgs)
            self.rate_normal = max(1e-6, cfg.rate * (1 - cfg.bad_fraction - cfg.duplicate_fraction))
        self.n_orgs = min(self.n_orgs, self.n_programs)
        # each path schedules a meeting every `base_gap` seconds on average
        self.base_gap = self.n_paths * EVENTS_PER_MEETING / self.rate_normal

    # ---------------------------------------------------------------- formatting
    def fmt(self, t: int) -> str:
        d, r = divmod(t, DAY_S)
        prefix = self.days.get(d)
        if prefix is None:
            prefix = self.days[d] = datetime.fromtimestamp(d * DAY_S, UTC).strftime("%Y-%m-%dT")
        return prefix + self.hms[r]

    def eid(self) -> str:
        h = f"{self.getrandbits(128):032x}"
        return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"

    def settings_time(self) -> str:
        """occurred_at of a program.settings_updated published now."""
        if self.cfg.order_independent:
            self.far_count += 1
            return self.fmt(self.base + 3650 * DAY_S + self.far_count * MINUTE_S)
        return self.fmt(self.now)

    def path_tagged(
        self, path: SimPath, typ: str, t: int, actor: str, role: str, data: str, early: bool = False
    ) -> Tagged:
        value = (
            f'{{"event_id":"{self.eid()}","type":"{typ}","schema_version":1,"occurred_at":"{self.fmt(t)}",'
            f'{path.head},"actor":{{"id":"{actor}","role":"{role}"}},"data":{data}}}'
        )
        return Tagged(self.now, typ, Record("path", path.key, value.encode()), early)

    def admin_tagged(
        self, typ: str, ts: str, org: str, program: str | None, actor: str, role: str, data: str
    ) -> Tagged:
        prog = f'"program_id":"{program}",' if program is not None else ""
        value = (
            f'{{"event_id":"{self.eid()}","type":"{typ}","schema_version":1,"occurred_at":"{ts}",'
            f'"org_id":"{org}",{prog}"actor":{{"id":"{actor}","role":"{role}"}},"data":{data}}}'
        )
        return Tagged(self.now, typ, Record("admin", org.encode(), value.encode()))

    def emit(self, tagged: Tagged) -> None:
        self.out.append(tagged)
        self.n_normal += 1

    def emit_meeting_event(self, m: SimMeeting, typ: str, t: int, actor: str, role: str, data: str) -> None:
        """Publish an event about `m`; if its meeting.scheduled was held back, it follows right after."""
        held = m.held
        if held is None:
            self.emit(self.path_tagged(m.path, typ, t, actor, role, data))
            return
        self.emit(self.path_tagged(m.path, typ, t, actor, role, data, early=True))
        self.emit(held._replace(at=self.now))
        m.held = None
        m.avail = self.now
        if m.path.registered_at is None:
            self._register(m.path)

    def push(self, t: int, fn: Callable[[Any, Any, int], None], a: Any, b: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, fn, a, b))

    def pick(self, seq: Sequence[T]) -> T:
        return seq[int(self.rnd() * len(seq))]

    def between(self, lo: int, hi: int) -> int:
        return lo + int(self.rnd() * (hi - lo)) if hi > lo else lo

    def _register(self, path: SimPath) -> None:
        """The path's first record that will be applied (or skipped) is out: it is registered now."""
        path.registered_at = self.now
        self.started.append(path)
        if path.prog.verification:
            self.vstarted.append(path)
