"""Independent model of SPEC.md's `session-tally replay` semantics.

Usage: python -m tests.oracle.model EVENTS.jsonl --at T

A second implementation, written from the specification and its worked examples only, without
reading domain/: a test oracle (tests/unit/test_oracle.py compares `replay` with it on generated streams).
Where the specification is ambiguous the choice is marked with `OPT[...]` and can be flipped in
OPTIONS; the defaults are the readings of docs/policy.md.
"""

import json
import sys
from decimal import Decimal
from fractions import Fraction

from tests.oracle.schema import (
    ALLOWED,
    MAX_BYTES,
    OPTIONS,
    STATUSES,
    Reject,
    Skip,
    Wait,
    check_schema,
    fmt_ts,
    num_out,
    parse_duration,
    parse_ts,
    round2,
    valid_id,
)

# ---------------------------------------------------------------- state


class History:
    """A setting's value over event time: creation value + updates."""

    def __init__(self, initial):
        self.initial = initial
        self.updates = []  # (occurred_at, seq, value)

    def add(self, t, seq, v):
        self.updates.append((t, seq, v))

    def at(self, t):
        best = None
        for u in self.updates:
            if u[0] <= t and (best is None or (u[0], u[1]) > (best[0], best[1])):
                best = u
        return self.initial if best is None else best[2]

    def latest(self, upto=None):
        """(t, seq, value) of latest update (<= upto if given) or None."""
        best = None
        for u in self.updates:
            if upto is not None and u[0] > upto:
                continue
            if best is None or (u[0], u[1]) > (best[0], best[1]):
                best = u
        return best


class Program:
    def __init__(self, pid, org, verification, lcw, acw, hours):
        self.id = pid
        self.org = org
        self.verification = verification
        self.lcw = History(lcw)
        self.acw = History(acw)
        self.hours = History(hours)


class Meeting:
    def __init__(self, mid, path, start, end):
        self.id = mid
        self.path = path
        self.start = start
        self.end = end
        self.answer = None  # (occurred bool, t)
        self.cancel = None  # (kind, t)  kind in canceled/rescheduled
        self.dispute_open = False
        self.waived = False

    @property
    def minutes(self):
        return int((self.end - self.start).total_seconds() // 60)


class Engine:
    def __init__(self):
        self.seen = set()
        self.orgs = {}
        self.programs = {}
        self.paths = {}  # path_id -> program_id
        self.path_override = {}  # path_id -> History(None)
        self.meetings = {}
        self.waiting = []  # (line, event_id, ev, kind, key)
        self.rejected = []  # (line, event_id, reason)
        self.end_rejected = []
        self.seq = 0

    # -- policy helpers
    def deadline(self, m):
        prog = self.programs[self.paths[m.path]]
        return m.end + parse_duration(prog.acw.at(m.end))

    def is_late(self, m):
        prog = self.programs[self.paths[m.path]]
        _kind, t = m.cancel
        w = prog.lcw.at(t)
        if w is None:
            return False
        return t >= m.start - parse_duration(w)

    def status(self, m, T, for_dispute=False):
        if m.cancel and (not for_dispute or OPTIONS["dispute_ignores_cancel_time"] or m.cancel[1] <= T):
            if not self.is_late(m):
                return m.cancel[0]
            if m.waived:
                return "late_cancel_waived"
            return "late_canceled_pending" if self.deadline(m) > T else "late_canceled"
        if m.answer is not None:
            return "confirmed" if m.answer[0] else "did_not_occur"
        if m.start > T:
            return "upcoming"
        if self.deadline(m) > T:
            return "unconfirmed"
        return "auto_confirmed"

    # -- processing
    def process_line(self, lineno, raw):
        if len(raw) > MAX_BYTES:
            self.rejected.append((lineno, None, "too_large"))
            return
        try:
            text = raw.decode("utf-8")
            ev = json.loads(text, parse_float=Decimal, parse_constant=_bad_const)
        except Exception:
            self.rejected.append((lineno, None, "invalid_json"))
            return
        eid = ev.get("event_id") if isinstance(ev, dict) else None
        eid_out = eid if isinstance(eid, str) else None
        # SPEC 3: only a well-formed event_id marks a message as seen
        if valid_id(eid):
            if eid in self.seen:
                return  # duplicate
            self.seen.add(eid)
        try:
            check_schema(ev)
            self.check_role(ev)
        except Reject as r:
            self.rejected.append((lineno, eid_out, r.reason))
            return
        self.attempt(lineno, eid, ev)
        self.retry_waiting()

    def check_role(self, ev):
        if ev["actor"]["role"] not in ALLOWED[ev["type"]]:
            raise Reject("forbidden")

    def attempt(self, lineno, eid, ev):
        self.seq += 1
        try:
            self.apply(ev, self.seq)
        except Reject as r:
            self.rejected.append((lineno, eid, r.reason))
        except Wait as w:
            self.waiting.append((lineno, eid, ev, w.kind, w.key))
        except Skip:
            pass

    def retry_waiting(self):
        while True:
            ready = [w for w in self.waiting if self.exists(w[3], w[4])]
            if not ready:
                return
            w = min(ready, key=lambda x: x[0])
            self.waiting.remove(w)
            self.attempt(w[0], w[1], w[2])

    def exists(self, kind, key):
        return (key in self.programs) if kind == "program" else (key in self.meetings)

    def finish(self):
        for lineno, eid, _ev, kind, _key in sorted(self.waiting, key=lambda x: x[0]):
            self.end_rejected.append((lineno, eid, "unknown_program" if kind == "program" else "unknown_meeting"))
        self.waiting = []

    def apply(self, ev, seq):
        typ = ev["type"]
        data = ev["data"]
        t = parse_ts(ev["occurred_at"])
        org = ev["org_id"]
        if typ == "organization.session_management_set":
            self.orgs[org] = data["enabled"]
            return
        pid = ev["program_id"]
        if typ == "program.created":
            p = self.programs.get(pid)
            if p is not None and p.org != org:
                raise Reject("tenant_mismatch")
            if not self.orgs.get(org, False):
                raise Reject("session_management_disabled")
            if p is not None:
                raise Reject("program_exists")
            self.programs[pid] = Program(
                pid,
                org,
                data["session_verification"],
                data["late_cancel_window"],
                data.get("auto_confirm_window"),
                data["authorized_hours"],
            )
            return
        if typ == "program.settings_updated":
            p = self.programs.get(pid)
            if p is None:
                raise Wait("program", pid)
            if p.org != org:
                raise Reject("tenant_mismatch")
            if "late_cancel_window" in data:
                p.lcw.add(t, seq, data["late_cancel_window"])
            if "auto_confirm_window" in data:
                p.acw.add(t, seq, data["auto_confirm_window"])
            if "authorized_hours" in data:
                p.hours.add(t, seq, data["authorized_hours"])
            return
        # path and meeting events
        path = ev["path_id"]
        if path in self.paths and self.paths[path] != pid:
            raise Reject("tenant_mismatch")
        p = self.programs.get(pid)
        if p is None:
            raise Wait("program", pid)
        if p.org != org:
            raise Reject("tenant_mismatch")
        if not p.verification:
            self.paths.setdefault(path, pid)
            raise Skip()
        mid = data.get("meeting_id") if typ.startswith("meeting.") else None
        if mid is not None and mid in self.meetings and self.meetings[mid].path != path:
            raise Reject("tenant_mismatch")
        if typ == "meeting.rescheduled" and OPTIONS["new_id_tenant_check"]:
            nm = self.meetings.get(data["new_meeting_id"])
            if nm is not None and nm.path != path:
                raise Reject("tenant_mismatch")
        if typ == "meeting.scheduled" and mid in self.meetings:
            raise Reject("meeting_exists")
        if typ == "meeting.rescheduled" and data["new_meeting_id"] in self.meetings:
            raise Reject("meeting_exists")
        if typ == "meeting.rescheduled" and data["new_meeting_id"] == mid:
            # new id equals the (unknown) old id: it would be used by the time it applies
            pass
        if mid is not None and typ != "meeting.scheduled" and mid not in self.meetings:
            raise Wait("meeting", mid)
        # lifecycle
        if typ == "path.authorized_hours_set":
            self.paths.setdefault(path, pid)
            self.path_override.setdefault(path, History(None)).add(t, seq, data["authorized_hours"])
            return
        if typ == "meeting.scheduled":
            self.paths.setdefault(path, pid)
            self.meetings[mid] = Meeting(mid, path, parse_ts(data["start"]), parse_ts(data["end"]))
            return
        m = self.meetings[mid]
        if typ in ("meeting.canceled", "meeting.rescheduled"):
            if m.cancel is not None or m.answer is not None or not t < m.end:
                raise Reject("invalid_transition")
            if typ == "meeting.canceled":
                m.cancel = ("canceled", t)
            else:
                m.cancel = ("rescheduled", t)
                nid = data["new_meeting_id"]
                self.meetings[nid] = Meeting(nid, path, parse_ts(data["new_start"]), parse_ts(data["new_end"]))
            return
        if typ == "meeting.confirmation_submitted":
            if m.cancel is not None:
                raise Reject("invalid_transition")
            if m.answer is not None:
                raise Reject("already_answered")
            if t < m.start:
                raise Reject("meeting_not_started")
            if t > self.deadline(m):
                raise Reject("confirmation_window_closed")
            m.answer = (data["occurred"], t)
            return
        if typ == "meeting.disputed":
            role = ev["actor"]["role"]
            st = self.status(m, t, for_dispute=True)
            if m.dispute_open:
                raise Reject("invalid_transition")
            if role == "facilitator" and st != "late_canceled_pending":
                raise Reject("invalid_transition")
            if role == "participant" and st != "late_canceled":
                raise Reject("invalid_transition")
            m.dispute_open = True
            return
        if typ == "meeting.dispute_resolved":
            if not m.dispute_open:
                raise Reject("invalid_transition")
            m.dispute_open = False
            if data["outcome"] == "upheld":
                m.waived = True
            return
        raise AssertionError(typ)

    # -- output
    def auth_hours(self, path, T):
        prog = self.programs[self.paths[path]]
        upto = T if OPTIONS["auth_hours_at_T"] else None
        pl = prog.hours.latest(upto)
        prog_val = prog.hours.initial if pl is None else pl[2]
        ov = self.path_override.get(path)
        ol = ov.latest(upto) if ov else None
        if ol is not None and ol[2] is not None:
            if OPTIONS["auth_override_rule"] == "latest" and pl is not None and (pl[0], pl[1]) > (ol[0], ol[1]):
                pass
            else:
                return ol[2], "path"
        if prog_val is None:
            return None, None
        return prog_val, "program"

    def output(self, T):
        meetings = []
        by_path = {}
        for mid in sorted(self.meetings):
            m = self.meetings[mid]
            st = self.status(m, T)
            meetings.append(
                {
                    "meeting_id": mid,
                    "path_id": m.path,
                    "status": st,
                    "start": fmt_ts(m.start),
                    "end": fmt_ts(m.end),
                    "minutes": m.minutes,
                    "disputed": m.dispute_open,
                }
            )
            by_path.setdefault(m.path, []).append((m, st))
        tallies = []
        for path in sorted(self.paths):
            prog = self.programs[self.paths[path]]
            if not prog.verification:
                continue
            counts = {s: 0 for s in STATUSES}
            used = pending = upcoming = 0
            for m, st in by_path.get(path, []):
                counts[st] += 1
                if st in ("confirmed", "auto_confirmed", "late_canceled"):
                    used += m.minutes
                elif st in ("unconfirmed", "late_canceled_pending"):
                    pending += m.minutes
                elif st == "upcoming":
                    upcoming += m.minutes
            hours, source = self.auth_hours(path, T)
            used_h = round2(Fraction(used, 60))
            rem = None
            if hours is not None:
                rem = round2(Fraction(Decimal(hours)) - Fraction(used, 60))
            tallies.append(
                {
                    "path_id": path,
                    "program_id": prog.id,
                    "org_id": prog.org,
                    "authorized_hours": num_out(hours),
                    "authorized_source": source,
                    "used_minutes": used,
                    "pending_minutes": pending,
                    "upcoming_minutes": upcoming,
                    "used_hours": num_out(used_h),
                    "remaining_hours": num_out(rem),
                    "meetings_by_status": counts,
                    "as_of": fmt_ts(T),
                }
            )
        rejected = [{"line": l, "event_id": e, "reason": r} for (l, e, r) in sorted(self.rejected)]
        rejected += [{"line": l, "event_id": e, "reason": r} for (l, e, r) in self.end_rejected]
        return {"tallies": tallies, "meetings": meetings, "rejected": rejected}


def _bad_const(name):
    raise ValueError("non-standard JSON constant " + name)


def replay(raw_bytes, T):
    eng = Engine()
    lines = raw_bytes.split(b"\n")
    if lines and lines[-1] == b"":
        lines = lines[:-1]
    for i, raw in enumerate(lines, start=1):
        if raw == b"" or (OPTIONS["whitespace_blank"] and raw.strip() == b""):
            continue
        eng.process_line(i, raw)
    eng.finish()
    return eng.output(T)


def main(argv):
    path = argv[1]
    T = parse_ts(argv[argv.index("--at") + 1])
    data = sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    print(json.dumps(replay(data, T)))


if __name__ == "__main__":
    main(sys.argv)
