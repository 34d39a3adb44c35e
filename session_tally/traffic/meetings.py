"""Paths and meetings of the traffic simulation: what each meeting's life publishes (internal).

A mixin of :class:`session_tally.traffic.sim.Simulation`. When a path schedules a meeting, the meeting's
fate is decided at once (it happens and is answered or not, or it is canceled or rescheduled, inside the
late-cancel window or not) and its follow-up events are put on the simulation's heap at their event
times; handlers publish them when their time comes, judging lateness with the program settings in force
then, as the engine will.
"""

from __future__ import annotations

from typing import Any

from session_tally.traffic.core import SimCore
from session_tally.traffic.model import (
    CANCEL_REASONS,
    CANCELED,
    COMMENTS,
    DAY_S,
    HOUR_S,
    LATE_CANCELED,
    MINUTE_S,
    NOTES,
    P_CANCEL,
    P_HOURS_SET,
    P_RESCHEDULE,
    PATH_HOURS,
    RESCHEDULED,
    SimMeeting,
    SimPath,
)


class MeetingLife(SimCore):
    def _start_time(self, t: int) -> int:
        rnd = self.rnd()
        if self.timing.calendar:
            if rnd < 0.2:
                lead = self.between(2 * HOUR_S, DAY_S)
            elif rnd < 0.9:
                lead = self.between(DAY_S, 8 * DAY_S)
            else:
                lead = self.between(8 * DAY_S, 21 * DAY_S)
            start = (t + lead) // DAY_S * DAY_S + 7 * HOUR_S + 900 * int(self.rnd() * 53)  # 07:00 .. 20:00
            while start < t + 30 * MINUTE_S:
                start += DAY_S
            return start
        if rnd < 0.6:
            lead = self.between(MINUTE_S // 3, 30 * MINUTE_S)  # some start during a short demo
        elif rnd < 0.95:
            lead = self.between(30 * MINUTE_S, 6 * HOUR_S)
        else:
            lead = self.between(6 * HOUR_S, 3 * DAY_S)
        return (t + lead) // MINUTE_S * MINUTE_S + MINUTE_S

    def _duration(self) -> int:
        minutes = self.pick(self.timing.durations)
        return minutes * MINUTE_S + (30 if self.rnd() < 0.03 else 0)  # a few end on a half minute

    def new_meeting(self, path: SimPath, start: int, end: int) -> SimMeeting:
        self.meeting_count += 1
        m = SimMeeting(f"{self.tag}m-{self.meeting_count:06d}", path, start, end)
        recent = path.recent
        if len(recent) >= 8:
            del recent[0]
        recent.append(m)
        return m

    def _tick(self, path: SimPath, _b: Any, t: int) -> None:
        """A path schedules its next meeting (and now and then gets its authorized hours set)."""
        rnd = self.rnd
        if t - self.ctl_t >= self.ctl_window:  # steer the rate of the stream towards its target
            ratio = (self.n_normal - self.ctl_n) / ((t - self.ctl_t) * self.rate_normal)
            self.gap_factor = min(20.0, max(0.05, self.gap_factor * min(1.25, max(0.8, ratio))))
            self.ctl_t, self.ctl_n = t, self.n_normal
        self.push(t + 1 + int(self.base_gap * self.gap_factor * (0.5 + rnd())), self._tick, path)
        if rnd() < P_HOURS_SET:
            self._hours_set(path, t)
        start = self._start_time(t)
        m = self.new_meeting(path, start, start + self._duration())
        follows = self._plan(m, t)
        r = rnd()
        actor, role = (
            (path.learner, "participant")
            if r < 0.4
            else (path.coach, "facilitator")
            if r < 0.75
            else ("scheduler", "system")
            if r < 0.9
            else (path.prog.admin, "program_admin")
        )
        tagged = self.path_tagged(
            path,
            "meeting.scheduled",
            t,
            actor,
            role,
            f'{{"meeting_id":"{m.mid}","start":"{self.fmt(m.start)}","end":"{self.fmt(m.end)}"}}',
        )
        if follows and rnd() < self.p_early:
            m.held = tagged
        else:
            self.emit(tagged)
            m.avail = self.now
            if path.registered_at is None:
                self._register(path)

    def _hours_set(self, path: SimPath, t: int) -> None:
        actor, role = (path.prog.admin, "program_admin") if self.rnd() < 0.85 else (self.pick(self.support), "support")
        note = f',"note":{self.pick(NOTES)}' if self.rnd() < 0.8 else ""
        data = f'{{"authorized_hours":{self.pick(PATH_HOURS)}{note}}}'
        self.emit(self.path_tagged(path, "path.authorized_hours_set", t, actor, role, data))
        if path.registered_at is None:
            self._register(path)

    def _plan(self, m: SimMeeting, t0: int) -> bool:
        """Decide what becomes of meeting `m` (created at t0); True when some event will name it."""
        r = self.rnd()
        if r < P_CANCEL:
            self.push(self._change_time(m, t0), self._on_cancel, m)
            return True
        if r < P_CANCEL + P_RESCHEDULE:
            self.push(self._change_time(m, t0), self._on_reschedule, m)
            return True
        return self._plan_answers(m, t0)

    def _change_time(self, m: SimMeeting, t0: int) -> int:
        """When a cancel or reschedule happens: before the late-cancel window or (often) inside it."""
        lo = t0 + MINUTE_S
        window = m.path.prog.lcw
        s, e = m.start, m.end
        if window is not None and self.rnd() < 0.45:
            a = max(lo, s - window)
            t = self.between(a, max(a, s + (e - s) // 2))
        else:
            hi = s - (window or 0) - MINUTE_S
            t = self.between(lo, hi) if hi > lo else self.between(lo, max(lo, s - MINUTE_S))
        return min(t, e - 1)

    def _plan_answers(self, m: SimMeeting, t0: int) -> bool:
        rnd = self.rnd
        acw = m.path.prog.acw
        s, e = m.start, m.end
        deadline = e + acw
        follows = False
        if rnd() < 0.03 and s - t0 > 3 * MINUTE_S:  # answered before it started: meeting_not_started
            self.push(self.between(t0 + MINUTE_S, s - MINUTE_S), self._on_answer, m, ("participant", True))
            follows = True
        v = rnd()
        if v < 0.80:
            delay = MINUTE_S + int(min(self.rng.expovariate(1.0) * self.timing.answer_mean, acw - 10 * MINUTE_S))
            t = e + delay
            role = "program_admin" if rnd() < 0.05 else "participant"
            self.push(t, self._on_answer, m, (role, rnd() < 0.9))
            if rnd() < 0.04:  # a second answer: already_answered
                self.push(t + self.between(MINUTE_S, acw // 2), self._on_answer, m, ("participant", rnd() < 0.5))
            if rnd() < 0.02:  # the coach answers: forbidden
                self.push(e + self.between(MINUTE_S, acw // 2), self._on_answer, m, ("facilitator", True))
            return True
        if v < 0.85:  # answered too late: confirmation_window_closed
            self.push(
                deadline + self.between(MINUTE_S, 72 * self.timing.unit),
                self._on_answer,
                m,
                ("participant", True),
            )
            return True
        return follows  # nobody answers: auto-confirmed at the deadline

    def _actor(self, m: SimMeeting, role: str) -> str:
        if role == "participant":
            return m.path.learner
        if role == "facilitator":
            return m.path.coach
        if role == "program_admin":
            return m.path.prog.admin
        if role == "support":
            return self.pick(self.support)
        return "scheduler"

    def _on_answer(self, m: SimMeeting, spec: tuple[str, bool], t: int) -> None:
        role, occurred = spec
        data = f'{{"meeting_id":"{m.mid}","occurred":{"true" if occurred else "false"}}}'
        self.emit_meeting_event(m, "meeting.confirmation_submitted", t, self._actor(m, role), role, data)

    def _change_role(self) -> str:
        r = self.rnd()
        return "participant" if r < 0.45 else "facilitator" if r < 0.75 else "program_admin" if r < 0.9 else "system"

    def _is_late(self, m: SimMeeting, t: int) -> bool:
        window = m.path.prog.lcw
        return window is not None and t >= m.start - window

    def _on_cancel(self, m: SimMeeting, _b: Any, t: int) -> None:
        late = self._is_late(m, t)
        role = self._change_role()
        reason = f',"reason":{self.pick(CANCEL_REASONS)}' if self.rnd() < 0.7 else ""
        self.emit_meeting_event(
            m, "meeting.canceled", t, self._actor(m, role), role, f'{{"meeting_id":"{m.mid}"{reason}}}'
        )
        m.changed = self.now
        if late:
            m.state = LATE_CANCELED
            self._plan_disputes(m, t)
        else:
            m.state = CANCELED
            if self.rnd() < 0.03:  # disputing an ordinary cancellation: invalid_transition
                self.push(t + self.between(MINUTE_S, 24 * self.timing.unit), self._on_dispute, m, "facilitator")

    def _on_reschedule(self, m: SimMeeting, _b: Any, t: int) -> None:
        late = self._is_late(m, t)
        role = self._change_role()
        start = self._start_time(max(t, m.start))
        new = self.new_meeting(m.path, start, start + (m.end - m.start if self.rnd() < 0.7 else self._duration()))
        data = (
            f'{{"meeting_id":"{m.mid}","new_meeting_id":"{new.mid}","new_start":"{self.fmt(new.start)}",'
            f'"new_end":"{self.fmt(new.end)}"}}'
        )
        self.emit_meeting_event(m, "meeting.rescheduled", t, self._actor(m, role), role, data)
        new.avail = m.changed = self.now
        self._plan(new, t)
        if late:
            m.state = LATE_CANCELED
            self._plan_disputes(m, t)
        else:
            m.state = RESCHEDULED

    def _plan_disputes(self, m: SimMeeting, t: int) -> None:
        """After a late cancel: the coach disputes while pending, the learner once final, or nobody."""
        m.deadline = deadline = m.end + m.path.prog.acw
        unit = self.timing.unit
        d = self.rnd()
        if d < 0.25 and deadline - t > 3 * MINUTE_S:
            self.push(self.between(t + MINUTE_S, deadline - MINUTE_S), self._on_dispute, m, "facilitator")
        elif d < 0.40:
            self.push(deadline + self.between(MINUTE_S, 120 * unit), self._on_dispute, m, "participant")
        elif d < 0.43 and deadline - t > 3 * MINUTE_S:  # the learner too early: invalid_transition
            self.push(self.between(t + MINUTE_S, deadline - MINUTE_S), self._on_dispute, m, "participant")
        elif d < 0.45:  # resolving what nobody disputed: rejected
            self.push(t + self.between(unit, 48 * unit), self._on_resolve, m)

    def _on_dispute(self, m: SimMeeting, role: str, t: int) -> None:
        comment = f',"comment":{self.pick(COMMENTS)}' if self.rnd() < 0.8 else ""
        self.emit_meeting_event(
            m, "meeting.disputed", t, self._actor(m, role), role, f'{{"meeting_id":"{m.mid}"{comment}}}'
        )
        valid = (
            m.state == LATE_CANCELED
            and not m.open
            and not m.waived
            and ((role == "facilitator" and t < m.deadline) or (role == "participant" and t >= m.deadline))
        )
        if valid:
            m.open = True
            if self.rnd() < 0.85:
                unit = self.timing.unit
                self.push(t + self.between(unit, 72 * unit), self._on_resolve, m)

    def _on_resolve(self, m: SimMeeting, _b: Any, t: int) -> None:
        role = "program_admin" if self.rnd() < 0.7 else "support"
        upheld = self.rnd() < 0.45
        note = f',"note":{self.pick(NOTES)}' if self.rnd() < 0.6 else ""
        data = f'{{"meeting_id":"{m.mid}","outcome":"{"upheld" if upheld else "rejected"}"{note}}}'
        self.emit_meeting_event(m, "meeting.dispute_resolved", t, self._actor(m, role), role, data)
        if not m.open:
            return
        m.open = False
        if upheld:
            m.waived = True
        elif self.rnd() < 0.2:  # disputed again after a rejection
            t2 = t + self.between(self.timing.unit, 48 * self.timing.unit)
            self.push(t2, self._on_dispute, m, "participant" if t2 >= m.deadline else "facilitator")
