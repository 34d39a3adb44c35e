"""Random generator of edge-case-heavy event streams for session-tally replay.

python -m tests.oracle.gen SEED OUT.jsonl  -> writes the stream, prints a JSON list of --at values.
"""

import json
import random
import sys
from datetime import UTC, datetime, timedelta, timezone

BASE = datetime(2026, 3, 10, tzinfo=UTC)

ORGS = ["org-1", "org-1", "org-1", "org-2"]
PROGS = ["p1", "p1", "p1", "p2", "p2", "p3"]
PATHS = ["a", "b", "c", "B", "a.1"]
MEET_IDS = ["m1", "m2", "m3", "m4", "m5", "m6", "M1", "m-1", "m:1", "m10", "m1.0"]
LCW = ["PT1H", "PT24H", "P1D", "PT90M", "P2W", "P3D", None, "PT2H", "P30D", "P4W", "PT3600S", "P1DT12H"]
ACW = ["PT1H", "P3D", "P1W", "PT24H", "P90D", "PT2H", "P1DT1H", "PT90M"]
HOURS = [10, 2.5, None, 0, 0.29, 1.15, 100000, 3, 0.01, 7.75, 1.5]
BAD_DUR = [
    "P1M",
    "P1W2D",
    "PT0.5H",
    "P",
    "PT",
    "P31D",
    "PT59M",
    "P91D",
    "p1d",
    "1D",
    "P1Y",
    "-P1D",
    "P1DT",
    "PT1h",
    24,
    "P0D",
    "P30DT1S",
    "P13W",
]
BAD_HOURS = [1.234, -1, 100000.01, "10", True, 0.001, -0.01, 1e6]
ROLES = ["participant", "facilitator", "program_admin", "support", "system"]


def ts(dt, rnd):
    """format a datetime, sometimes with a non-UTC offset or fractional seconds."""
    r = rnd.random()
    if r < 0.8:
        return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if r < 0.9:
        off = timezone(timedelta(hours=rnd.choice([2, -5, 5.5])))
        d = dt.astimezone(off)
        s = d.strftime("%Y-%m-%dT%H:%M:%S")
        o = d.strftime("%z")
        return s + o[:3] + ":" + o[3:]
    if r < 0.95:
        return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def dur_td(s):
    import re

    m = re.match(r"^P(\d+)W$", s)
    if m:
        return timedelta(weeks=int(m.group(1)))
    m = re.match(r"^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$", s)
    d, h, mi, se = m.groups()
    return timedelta(days=int(d or 0), hours=int(h or 0), minutes=int(mi or 0), seconds=int(se or 0))


class Gen:
    def __init__(self, seed):
        self.r = random.Random(seed)
        self.n = 0
        self.events = []  # list of dicts (or raw strings)
        self.meetings = {}  # id -> (path, prog, org, start, end)
        self.progs = {}  # id -> dict(org, lcw, acw, hours)
        self.path_prog = {}
        self.times = set()

    def eid(self):
        self.n += 1
        return "e%d" % self.n

    def env(self, typ, t, org, actor_role, data, prog=None, path=None):
        e = {
            "event_id": self.eid(),
            "type": typ,
            "schema_version": 1,
            "occurred_at": ts(t, self.r),
            "org_id": org,
            "actor": {"id": "u%d" % self.r.randint(1, 3), "role": actor_role},
            "data": data,
        }
        if prog is not None:
            e["program_id"] = prog
        if path is not None:
            e["path_id"] = path
        return e

    def rt(self, spread_days=10):
        """random time near BASE on a 30 minute grid"""
        return BASE + timedelta(minutes=30 * self.r.randint(-24 * 2 * spread_days, 24 * 2 * spread_days))

    def jitter(self, t):
        return t + self.r.choice(
            [
                timedelta(0),
                timedelta(0),
                timedelta(0),
                timedelta(seconds=-1),
                timedelta(seconds=1),
                timedelta(minutes=-30),
                timedelta(minutes=30),
                timedelta(hours=-2),
                timedelta(hours=3),
            ]
        )

    def known_prog(self):
        if self.progs and self.r.random() < 0.9:
            return self.r.choice(sorted(self.progs))
        return self.r.choice(PROGS)

    def pick_role(self, good):
        if self.r.random() < 0.85:
            return self.r.choice(good)
        return self.r.choice(ROLES)

    # ---------------- event makers
    def org_set(self):
        org = self.r.choice(ORGS)
        role = "support" if self.r.random() < 0.9 else self.r.choice(ROLES)
        enabled = self.r.random() < 0.8
        return self.env("organization.session_management_set", self.rt(60), org, role, {"enabled": enabled})

    def prog_created(self):
        pid = self.r.choice(PROGS)
        org = self.r.choice(ORGS) if self.r.random() < 0.2 else (self.progs.get(pid, {}).get("org") or "org-1")
        ver = self.r.random() < 0.85
        lcw = self.r.choice(LCW)
        acw = self.r.choice(ACW)
        hours = self.r.choice(HOURS)
        data = {"name": "P", "session_verification": ver, "late_cancel_window": lcw, "authorized_hours": hours}
        if ver or self.r.random() < 0.3:
            data["auto_confirm_window"] = acw
        if self.r.random() < 0.1:
            data["name"] = self.r.choice([None, 5, "x" * 10])
        role = self.pick_role(["program_admin", "support"])
        if pid not in self.progs:
            self.progs[pid] = {"org": org, "lcw": lcw, "acw": acw, "hours": hours}
        return self.env("program.created", self.rt(60) - timedelta(days=40), org, role, data, prog=pid)

    def settings_update(self):
        pid = self.known_prog() if self.r.random() < 0.9 else "p9"
        org = self.progs.get(pid, {}).get("org", "org-1")
        if self.r.random() < 0.1:
            org = self.r.choice(ORGS)
        data = {}
        while not data:
            if self.r.random() < 0.5:
                data["late_cancel_window"] = self.r.choice(LCW)
            if self.r.random() < 0.5:
                data["auto_confirm_window"] = self.r.choice(ACW)
            if self.r.random() < 0.5:
                data["authorized_hours"] = self.r.choice(HOURS)
            if self.r.random() < 0.05:
                break
        role = "support" if self.r.random() < 0.8 else self.r.choice(ROLES)
        # time: somewhere among the meeting events (to fall between them)
        if self.meetings and self.r.random() < 0.6:
            mid = self.r.choice(list(self.meetings))
            _, _, _, st, en = self.meetings[mid]
            t = self.jitter(self.r.choice([st, en, st - timedelta(hours=24), st - timedelta(hours=1)]))
        else:
            t = self.rt()
        return self.env("program.settings_updated", t, org, role, data, prog=pid)

    def path_hours(self):
        path = self.r.choice([*PATHS, "z"])
        pid = self.path_prog.get(path) or self.known_prog()
        if self.r.random() < 0.15:
            pid = self.r.choice(PROGS)
        org = self.progs.get(pid, {}).get("org", "org-1")
        data = {"authorized_hours": self.r.choice([*HOURS, None, None])}
        if self.r.random() < 0.5:
            data["note"] = self.r.choice(["n", "x" * 2000, "y" * 2001, 5])
        role = self.pick_role(["program_admin", "support"])
        return self.env("path.authorized_hours_set", self.rt(), org, role, data, prog=pid, path=path)

    def scheduled(self, mid=None):
        mid = mid or self.r.choice(MEET_IDS)
        path = self.r.choice(PATHS)
        pid = self.path_prog.get(path) or self.known_prog()
        if self.r.random() < 0.1:
            pid = self.r.choice([*PROGS, "p9"])
        self.path_prog.setdefault(path, pid)
        org = self.progs.get(pid, {}).get("org", "org-1")
        if self.r.random() < 0.05:
            org = self.r.choice(ORGS)
        start = self.rt(6)
        length = self.r.choice(
            [
                timedelta(minutes=60),
                timedelta(minutes=45),
                timedelta(minutes=50),
                timedelta(minutes=90, seconds=30),
                timedelta(hours=24),
                timedelta(hours=24, seconds=1),
                timedelta(0),
                timedelta(minutes=-30),
                timedelta(minutes=20),
            ]
        )
        if self.r.random() < 0.8:
            length = self.r.choice([timedelta(minutes=60), timedelta(minutes=45), timedelta(minutes=50)])
        end = start + length
        self.times.update([start, end])
        if mid not in self.meetings and length > timedelta(0):
            self.meetings[mid] = (path, pid, org, start, end)
        role = self.pick_role(["participant", "facilitator", "program_admin", "system"])
        return self.env(
            "meeting.scheduled",
            start - timedelta(days=self.r.randint(1, 5)),
            org,
            role,
            {"meeting_id": mid, "start": ts(start, self.r), "end": ts(end, self.r)},
            prog=pid,
            path=path,
        )

    def meeting_ref(self):
        if self.meetings and self.r.random() < 0.9:
            mid = self.r.choice(list(self.meetings))
            path, pid, org, st, en = self.meetings[mid]
            if self.r.random() < 0.07:
                path = self.r.choice(PATHS)
            return mid, path, pid, org, st, en
        mid = self.r.choice([*MEET_IDS, "ghost"])
        path = self.r.choice(PATHS)
        pid = self.path_prog.get(path) or self.known_prog()
        return mid, path, pid, "org-1", self.rt(), self.rt()

    def windows(self, pid):
        p = self.progs.get(pid)
        lcw = p["lcw"] if p and p["lcw"] else "PT24H"
        acw = p["acw"] if p and p["acw"] else "P3D"
        return dur_td(lcw), dur_td(acw)

    def cancel_time(self, pid, st, en):
        W, _A = self.windows(pid)
        c = self.r.choice(
            [
                st - W,
                st - W - timedelta(seconds=1),
                st - W + timedelta(seconds=1),
                st - timedelta(minutes=5),
                en - timedelta(seconds=1),
                en,
                en + timedelta(minutes=1),
                st - 2 * W,
                st,
                st - timedelta(days=3),
            ]
        )
        return c

    def canceled(self):
        mid, path, pid, org, st, en = self.meeting_ref()
        t = self.cancel_time(pid, st, en)
        data = {"meeting_id": mid}
        if self.r.random() < 0.3:
            data["reason"] = "sick"
        role = self.pick_role(["participant", "facilitator", "program_admin", "system"])
        return self.env("meeting.canceled", t, org, role, data, prog=pid, path=path)

    def rescheduled(self):
        mid, path, pid, org, st, en = self.meeting_ref()
        t = self.cancel_time(pid, st, en)
        cand = [m for m in [*MEET_IDS, "n1", "n2", "n3"] if m not in self.meetings]
        nid = self.r.choice(cand) if cand and self.r.random() < 0.85 else self.r.choice(MEET_IDS)
        ns = st + timedelta(days=self.r.choice([1, 2, -1, 0]), hours=self.r.choice([0, 2]))
        ne = ns + self.r.choice([timedelta(minutes=60), timedelta(minutes=30), timedelta(minutes=45)])
        if self.r.random() < 0.05:
            ne = ns
        if nid not in self.meetings and ne > ns:
            self.meetings[nid] = (path, pid, org, ns, ne)
        self.times.update([ns, ne])
        role = self.pick_role(["participant", "facilitator", "program_admin", "system"])
        return self.env(
            "meeting.rescheduled",
            t,
            org,
            role,
            {"meeting_id": mid, "new_meeting_id": nid, "new_start": ts(ns, self.r), "new_end": ts(ne, self.r)},
            prog=pid,
            path=path,
        )

    def confirmation(self):
        mid, path, pid, org, st, en = self.meeting_ref()
        _W, A = self.windows(pid)
        dl = en + A
        self.times.add(dl)
        t = self.r.choice(
            [
                st,
                st - timedelta(seconds=1),
                en,
                dl,
                dl + timedelta(seconds=1),
                dl - timedelta(seconds=1),
                en + timedelta(hours=1),
                st + timedelta(minutes=10),
            ]
        )
        role = self.pick_role(["participant", "program_admin"])
        return self.env(
            "meeting.confirmation_submitted",
            t,
            org,
            role,
            {"meeting_id": mid, "occurred": self.r.random() < 0.7},
            prog=pid,
            path=path,
        )

    def disputed(self):
        mid, path, pid, org, st, en = self.meeting_ref()
        W, A = self.windows(pid)
        dl = en + A
        self.times.add(dl)
        t = self.r.choice(
            [
                dl,
                dl - timedelta(seconds=1),
                dl + timedelta(hours=1),
                en,
                st - timedelta(hours=1),
                st - W,
                st - timedelta(minutes=1),
            ]
        )
        role = self.pick_role(["facilitator", "participant"])
        data = {"meeting_id": mid}
        if self.r.random() < 0.3:
            data["comment"] = self.r.choice(["c", "x" * 2001])
        return self.env("meeting.disputed", t, org, role, data, prog=pid, path=path)

    def resolved(self):
        mid, path, pid, org, _st, en = self.meeting_ref()
        role = self.pick_role(["program_admin", "support"])
        data = {"meeting_id": mid, "outcome": self.r.choice(["upheld", "rejected", "upheld", "rejected", "maybe"])}
        if self.r.random() < 0.3:
            data["note"] = "ok"
        return self.env(
            "meeting.dispute_resolved", en + timedelta(days=self.r.randint(0, 6)), org, role, data, prog=pid, path=path
        )

    # ---------------- malformation
    def mutate(self, e):
        r = self.r
        e = json.loads(json.dumps(e))
        k = r.randint(0, 28)
        if k == 0:
            return json.dumps(e)[:-5]  # bad json
        if k == 1:
            return (json.dumps(e)[:-2] + ', "x": "\udcff"}').encode("utf-8", "surrogateescape")  # non-UTF8 byte
        if k == 2:
            # oversize near the boundary
            base = json.dumps(e)
            target = r.choice([65536, 65537, 70000, 65535])
            pad = target - len(base.encode()) - len(', "pad": ""')
            if pad < 0:
                return base
            e["pad"] = "x" * pad
            return json.dumps(e)
        if k == 3:
            del e[r.choice(["event_id", "type", "schema_version", "occurred_at", "org_id", "actor", "data"])]
        elif k == 4:
            e["schema_version"] = r.choice(["1", 1.0, True, 2, 0, None])
        elif k == 5:
            e["occurred_at"] = r.choice(
                [
                    "2026-03-01T09:00:00",
                    "2026-03-01 09:00:00Z",
                    "2026-02-30T09:00:00Z",
                    "2026-03-01T09:00Z",
                    "yesterday",
                    1700000000,
                    "2026-03-01t09:00:00z",
                    "2026-03-01T09:00:00.5Z",
                ]
            )
        elif k == 6:
            e["event_id"] = r.choice(
                ["bad id", "x" * 129, "x" * 128, "", 5, "ok:id.1-_", "\u00e9-1", "evt 1", "e\u00001"]
            )
        elif k == 7:
            if "path_id" in e:
                del e["path_id"]
            else:
                e["path_id"] = "a"
        elif k == 8:
            e["type"] = r.choice(["meeting.teleported", "Meeting.scheduled", 7, ""])
        elif k == 9:
            d = e["data"]
            for key in ("late_cancel_window", "auto_confirm_window"):
                if key in d:
                    d[key] = r.choice(BAD_DUR)
                    break
            else:
                d["start"] = "2026-03-10T10:00:00"
        elif k == 10:
            d = e["data"]
            if "authorized_hours" in d:
                d["authorized_hours"] = r.choice(BAD_HOURS)
            else:
                d["meeting_id"] = r.choice(["m/1", "", 1, None])
        elif k == 11:
            e["actor"] = r.choice(
                [
                    {"id": "u1"},
                    {"id": "u1", "role": "admin"},
                    {"role": "support"},
                    "support",
                    {"id": "u 1", "role": "support"},
                ]
            )
        elif k == 12:
            e["extra_field"] = {"whatever": [1, 2]}
            e["data"]["extra"] = True
        elif k == 13:
            return r.choice(["[]", "42", '"str"', "null", "{}", "   ", "", "\t"])
        elif k == 14:
            e["org_id"] = r.choice(["org 1", "", None, "org-2"])
        elif k == 15:
            e["program_id"] = r.choice(["p/1", None, "p2"])
        elif k == 16:
            e["data"] = r.choice([[], None, "x"])
        elif k == 17:
            d = e["data"]
            if "occurred" in d:
                d["occurred"] = r.choice(["yes", 1, None])
            elif "enabled" in d:
                d["enabled"] = r.choice(["true", 1])
            elif "session_verification" in d:
                d["session_verification"] = r.choice(["true", 1, None])
            else:
                d.pop(r.choice(list(d)) if d else "x", None)
        elif k == 18:
            # duplicate event id of an earlier event
            if self.n > 2:
                e["event_id"] = "e%d" % r.randint(1, self.n - 1)
        elif k == 19:
            e["schema_version"] = 2
            e["data"] = {}
        elif k == 20:
            e["type"] = "meeting.teleported"
            e["schema_version"] = 2
        elif k == 21:
            e["schema_version"] = 2
        elif k == 22:
            return json.dumps(e) + "\r"
        elif k == 23:
            return "NaN" if r.random() < 0.3 else json.dumps(e).replace('"data": {', '"data": {"nan": NaN, ', 1)
        elif k == 24:
            d = e["data"]
            if "authorized_hours" in d:
                d["authorized_hours"] = r.choice([100000, 100000.0, 0.1, 0.10, 1e2, 2.50, 0])
        elif k == 25:
            e["program_id"] = "p1"
            if e["type"].startswith("organization"):
                e["program_id"] = "p/bad"
        elif k == 26:
            return json.dumps(e, ensure_ascii=False).replace('"u', '"\u00e9u', 1)
        elif k == 27:
            e["data"]["meeting_id"] = e["data"].get("meeting_id", "m1")
            e["data"]["new_meeting_id"] = e["data"]["meeting_id"]
        elif k == 28:
            # U+0000 somewhere: a value, a key, deep in an unknown field
            spot = r.randint(0, 2)
            if spot == 0:
                e["data"]["note"] = "a\u0000b"
            elif spot == 1:
                e["data"]["k\u0000"] = 1
            else:
                e["extra"] = [{"deep": "\u0000"}]
        return json.dumps(e)

    def stream(self):
        r = self.r
        out = []
        # org setup
        for _ in range(r.randint(1, 3)):
            out.append(self.org_set())
        if r.random() < 0.9:
            e = self.env(
                "organization.session_management_set", BASE - timedelta(days=80), "org-1", "support", {"enabled": True}
            )
            out.insert(r.randint(0, len(out)), e)
        if r.random() < 0.85:
            # a good setup most of the time so that meeting logic is exercised
            out.insert(
                0,
                self.env(
                    "organization.session_management_set",
                    BASE - timedelta(days=90),
                    "org-1",
                    "support",
                    {"enabled": True},
                ),
            )
            for pid in ["p1", "p2"] if r.random() < 0.6 else ["p1"]:
                lcw, acw, hours = r.choice(LCW), r.choice(ACW), r.choice(HOURS)
                self.progs[pid] = {"org": "org-1", "lcw": lcw, "acw": acw, "hours": hours}
                out.append(
                    self.env(
                        "program.created",
                        BASE - timedelta(days=r.randint(20, 80)),
                        "org-1",
                        r.choice(["support", "program_admin"]),
                        {
                            "session_verification": r.random() < 0.93,
                            "late_cancel_window": lcw,
                            "auto_confirm_window": acw,
                            "authorized_hours": hours,
                        },
                        prog=pid,
                    )
                )
        for _ in range(r.randint(0, 3)):
            out.append(self.prog_created())
        if r.random() < 0.2:
            out.append(self.org_set())
            out.append(self.prog_created())
        makers = [
            (self.scheduled, 6),
            (self.canceled, 3),
            (self.rescheduled, 2),
            (self.confirmation, 3),
            (self.disputed, 3),
            (self.resolved, 2),
            (self.path_hours, 1),
            (self.settings_update, 1),
            (self.org_set, 0.3),
            (self.prog_created, 0.3),
        ]
        total = sum(w for _, w in makers)
        n = r.randint(5, 45)
        for _ in range(n):
            x = r.random() * total
            for f, w in makers:
                x -= w
                if x <= 0:
                    out.append(f())
                    break
        # out of order arrivals: move a few events earlier
        for _ in range(r.randint(0, 3)):
            if len(out) > 2:
                i = r.randrange(len(out))
                e = out.pop(i)
                out.insert(r.randrange(len(out) + 1), e)
        # duplicates (same content) and mutations
        lines = []
        for e in out:
            if r.random() < 0.08:
                lines.append(self.mutate(e))
            else:
                lines.append(json.dumps(e))
            if r.random() < 0.05:
                lines.append(json.dumps(e))  # same content duplicate
            if r.random() < 0.03:
                lines.append("")
            if r.random() < 0.04 and isinstance(e, dict):
                e2 = json.loads(json.dumps(e))
                e2["data"]["meeting_id"] = r.choice(MEET_IDS)
                lines.append(json.dumps(e2))  # same id different content
        return lines

    def at_values(self):
        r = self.r
        vals = [BASE + timedelta(days=r.randint(-3, 12))]
        times = sorted(self.times)
        for _ in range(3):
            if times:
                vals.append(r.choice(times) + r.choice([timedelta(0), timedelta(0), timedelta(seconds=-1)]))
        vals.append(BASE + timedelta(days=200))
        return distinct_instants(vals)


def distinct_instants(vals):
    """RFC 3339 UTC strings of ``vals``, first occurrence order, without repeats."""
    out = []
    for v in vals:
        s = v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if s not in out:
            out.append(s)
    return out


def write_stream(generator, path):
    """Write ``generator.stream()`` (str or bytes lines) to ``path``; return its --at values."""
    with open(path, "wb") as f:
        for line in generator.stream():
            if isinstance(line, str):
                line = line.encode("utf-8", "surrogatepass")
            f.write(line + b"\n")
    return generator.at_values()


def generate(seed, path):
    return write_stream(Gen(seed), path)


if __name__ == "__main__":
    print(json.dumps(generate(int(sys.argv[1]), sys.argv[2])))
