"""The event-time simulation behind :func:`session_tally.traffic.generate` (internal).

A discrete-event simulation: a heap of pending actions ordered by event time (a path's next meeting,
a meeting's cancellation, an answer, a dispute, a settings change ...). Popping an action appends the
records it publishes to a small output queue; the main loop hands those out and mixes in duplicates and
bad input. So the stream is in event-time order, except for the deliberate early events, and the state
kept is only what is still pending.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from typing import Any

from session_tally.traffic.bad import BadInputs
from session_tally.traffic.config import Tagged
from session_tally.traffic.meetings import MeetingLife
from session_tally.traffic.model import (
    AUTHORIZED_HOURS,
    DAY_S,
    EVENTS_PER_MEETING,
    HOUR_S,
    PROGRAM_NAMES,
    SimPath,
    SimProgram,
)


class Simulation(MeetingLife, BadInputs):
    """One generated stream: ``Simulation(config, events).run()`` yields its records."""

    # ---------------------------------------------------------------- the stream
    def run(self) -> Iterator[Tagged]:
        total = self.events
        if total <= 0:
            return
        self._setup()
        inject_from = len(self.out)
        out = self.out
        heap = self.heap
        heappop = heapq.heappop
        rnd = self.rnd
        ring = self.ring
        bad_p = self.cfg.bad_fraction
        mix_p = bad_p + self.cfg.duplicate_fraction
        n = 0
        pair_pending = False
        while n < total:
            if not out:
                if not heap:  # nothing left to simulate (cannot happen with recurring path ticks)
                    return
                t, _, fn, a, b = heappop(heap)
                self.now = t
                fn(a, b, t)
                continue
            if n >= inject_from and not pair_pending and rnd() < mix_p:
                if rnd() * mix_p < bad_p:
                    extra = self.bad()
                elif ring:
                    held = ring[int(rnd() * len(ring))]
                    extra = Tagged(self.now, "duplicate", held.record)
                else:
                    extra = None
                if extra is not None:
                    yield extra
                    n += 1
                    continue
            tagged = out.popleft()
            if tagged.early:
                if total - n < 2:  # no room for the scheduled that must follow: publish only that
                    tagged = out.popleft()
                else:
                    pair_pending = True
            else:
                pair_pending = False
            yield tagged
            n += 1
            if len(ring) < 512:
                ring.append(tagged)
            else:
                ring[int(rnd() * 512)] = tagged

    # ---------------------------------------------------------------- setup: orgs and programs
    def _setup(self) -> None:
        rnd = self.rnd
        timing = self.timing
        n_orgs = self.n_orgs
        self.orgs = [f"org-{i}" for i in range(1, n_orgs + 1)]
        n_disabled = max(1, n_orgs // 10)
        disabled = self.orgs[-n_disabled:]
        toggled = self.orgs[-n_disabled - 1]
        enabled = self.orgs[:-n_disabled]
        step = 600 if timing.calendar else 0  # live: the setup is published at once
        t = self.base

        def tick() -> int:
            nonlocal t
            t += self.between(step // 2 + 1, step * 3 // 2 + 2) if step else 0
            self.now = t
            return t

        for org in enabled:
            self._org_set(org, True, tick())
        self._org_set(disabled[0], False, tick())  # explicitly off; the others were never switched on
        # programs: spread over the enabled orgs, a few big ones
        programs: list[SimProgram] = []
        for n in range(1, self.n_programs + 1):
            org = enabled[(n - 1) % len(enabled)] if n <= len(enabled) else self.pick(enabled)
            verification = n % 7 != 3  # about one program in seven has no Meetings tab
            p = SimProgram(
                n,
                org,
                verification,
                self.pick(timing.late_cancel_windows),
                self.pick(timing.auto_confirm_windows),
                self.tag,
            )
            p.hours = self.pick(AUTHORIZED_HOURS)
            programs.append(p)
        self.programs = programs
        n_mid = round(0.1 * len(programs)) if timing.calendar else 0
        first = len(enabled)  # the first programs give every enabled org one from the start
        mid = set(self.rng.sample(range(first, len(programs)), min(n_mid, max(0, len(programs) - first))))
        extra = len(programs)
        toggled_done = False
        for i, p in enumerate(programs):
            if i in mid:
                self.push(self.base + self.between(timing.horizon // 10, timing.horizon // 2), self._create, p)
                continue
            if p.org == toggled and not toggled_done:
                self._create(p, None, tick())
                toggled_done = True
                self._org_set(toggled, False, tick())
                extra += 1
                self._created_rejected(extra, toggled, tick())
                self._org_set(toggled, True, tick())
                continue
            self._create(p, None, tick())
        for org in disabled:
            extra += 1
            self._created_rejected(extra, org, tick())
        # paths: assigned to accepted programs with skewed sizes
        weights = [1.0 + 4.0 * (rnd() ** 3) for _ in programs]
        chosen = self.rng.choices(programs, weights=weights, k=self.n_paths)
        for i, p in enumerate(programs[: self.n_paths]):  # every program gets at least one path
            chosen[i] = p
        self.paths = [SimPath(n, p, self.tag) for n, p in enumerate(chosen, start=1)]
        bulk = t + (DAY_S if timing.calendar else 1)
        # at first there is nothing to follow up yet: paths schedule faster until answers come in
        self.ctl_t, self.ctl_n, self.gap_factor = bulk, self.n_normal, 1 / EVENTS_PER_MEETING
        self.ctl_window = timing.horizon // 200 if timing.calendar else 10
        for path in self.paths:
            if path.prog.created_at is None:  # created mid-stream: starts after
                continue
            self.push(bulk + int(rnd() * self.base_gap * self.gap_factor), self._tick, path)
        self.mid_paths = [p for p in self.paths if p.prog.created_at is None]
        # the support desk and program admins touch program settings now and then
        self.admin_gap = timing.horizon / (1.5 * len(programs))
        self.push(bulk + int(rnd() * self.admin_gap), self._settings_tick, None)
        if timing.calendar:  # the toggled org is switched off for good later on
            self.push(self.base + timing.horizon * 6 // 10, self._org_off, toggled)
        self.now = self.base

    def _org_set(self, org: str, enabled: bool, t: int) -> None:
        self.org_enabled[org] = enabled
        data = '{"enabled":true}' if enabled else '{"enabled":false}'
        self.emit(
            self.admin_tagged(
                "organization.session_management_set",
                self.fmt(t),
                org,
                None,
                self.pick(self.support),
                "support",
                data,
            )
        )

    def _org_off(self, org: str, _b: Any, t: int) -> None:
        self._org_set(org, False, t)

    def _program_created(self, p: SimProgram, org: str, t: int) -> None:
        acw = f',"auto_confirm_window":"{p.acw_name}"' if p.verification or self.rnd() < 0.5 else ""
        lcw = "null" if p.lcw_name is None else f'"{p.lcw_name}"'
        name = f'"name":"{PROGRAM_NAMES[p.n % len(PROGRAM_NAMES)]} {p.n}",' if self.rnd() < 0.9 else ""
        verification = "true" if p.verification else "false"
        data = (
            f'{{{name}"session_verification":{verification},"late_cancel_window":{lcw}'
            f'{acw},"authorized_hours":{p.hours}}}'
        )
        actor, role = (p.admin, "program_admin") if self.rnd() < 0.8 else (self.pick(self.support), "support")
        self.emit(self.admin_tagged("program.created", self.fmt(t), org, p.pid, actor, role, data))

    def _create(self, p: SimProgram, _b: Any, t: int) -> None:
        self._program_created(p, p.org, t)
        p.created_at = self.now
        self.created.append(p)
        for path in self.mid_paths:
            if path.prog is p:
                self.push(t + self.between(HOUR_S, 2 * DAY_S), self._tick, path)

    def _created_rejected(self, n: int, org: str, t: int) -> None:
        """A program.created for an org that is switched off (session_management_disabled)."""
        timing = self.timing
        p = SimProgram(
            n, org, True, self.pick(timing.late_cancel_windows), self.pick(timing.auto_confirm_windows), self.tag
        )
        p.hours = self.pick(AUTHORIZED_HOURS)
        self._program_created(p, org, t)

    def _settings_tick(self, _a: Any, _b: Any, t: int) -> None:
        self.push(t + 1 + int(self.rng.expovariate(1.0) * self.admin_gap), self._settings_tick, None)
        if not self.created:
            return
        p: SimProgram = self.pick(self.created)
        timing = self.timing
        fields: list[str] = []
        lcw = acw = None
        r = self.rnd()
        if r < 0.5:
            lcw = self.pick(timing.late_cancel_windows)
            value = "null" if lcw[0] is None else f'"{lcw[0]}"'
            fields.append(f'"late_cancel_window":{value}')
        if r > 0.3:
            acw = self.pick(timing.auto_confirm_windows)
            fields.append(f'"auto_confirm_window":"{acw[0]}"')
        hours = None
        if r < 0.1 or r > 0.6:
            hours = self.pick(AUTHORIZED_HOURS)
            fields.append(f'"authorized_hours":{hours}')
        data = "{" + ",".join(fields) + "}"
        self.settings_count += 1
        if self.rnd() < 0.08 or self.settings_count == 2:  # a program admin tries: forbidden
            actor, role = p.admin, "program_admin"
        else:
            actor, role = self.pick(self.support), "support"
            if not self.cfg.order_independent:  # in force from now (far in the future otherwise)
                if lcw is not None:
                    p.lcw_name, p.lcw = lcw
                if acw is not None:
                    p.acw_name, p.acw = acw
                if hours is not None:
                    p.hours = hours
        self.emit(self.admin_tagged("program.settings_updated", self.settings_time(), p.org, p.pid, actor, role, data))
