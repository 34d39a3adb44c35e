"""Semantic-heavy generator: well-formed events, dense lifecycles on few meetings,
settings changes around the critical instants, disputes, heavy reordering.

python -m tests.oracle.gen2 SEED OUT.jsonl -> prints JSON list of --at values
"""

import json
import random
import sys
from datetime import UTC, datetime, timedelta

from tests.oracle.gen import distinct_instants, dur_td, ts, write_stream

BASE = datetime(2026, 3, 10, tzinfo=UTC)
LCW = ["PT1H", "PT24H", "PT2H", "P2D", None, "PT90M"]
ACW = ["PT1H", "PT2H", "P1D", "P3D", "PT24H"]
HOURS = [10, 2.5, None, 0, 0.29, 1.15, 3]


class G2:
    def __init__(self, seed):
        self.r = random.Random(seed)
        self.n = 0
        self.meet = {}  # id -> (path, start, end)
        self.crit = set()

    def env(self, typ, t, role, data, prog="p1", path="a", org="org-1"):
        self.n += 1
        e = {
            "event_id": "e%d" % self.n,
            "type": typ,
            "schema_version": 1,
            "occurred_at": ts(t, self.r),
            "org_id": org,
            "actor": {"id": "u1", "role": role},
            "data": data,
        }
        if prog is not None:
            e["program_id"] = prog
        if path is not None:
            e["path_id"] = path
        return e

    def near(self, t):
        r = self.r
        return t + r.choice(
            [timedelta(0)] * 4
            + [
                timedelta(seconds=-1),
                timedelta(seconds=1),
                timedelta(minutes=-30),
                timedelta(minutes=30),
                timedelta(hours=-1),
                timedelta(hours=1),
            ]
        )

    def stream(self):
        r = self.r
        out = []
        head = [
            self.env(
                "organization.session_management_set",
                BASE - timedelta(days=100),
                "support",
                {"enabled": True},
                prog=None,
                path=None,
            )
        ]
        self.lcw = r.choice(LCW)
        self.acw = r.choice(ACW)
        head.append(
            self.env(
                "program.created",
                BASE - timedelta(days=90),
                r.choice(["support", "program_admin"]),
                {
                    "session_verification": True,
                    "late_cancel_window": self.lcw,
                    "auto_confirm_window": self.acw,
                    "authorized_hours": r.choice(HOURS),
                },
                path=None,
            )
        )
        if r.random() < 0.3:
            # second program, maybe in another org / toggled org
            if r.random() < 0.5:
                head.append(
                    self.env(
                        "organization.session_management_set",
                        BASE - timedelta(days=99),
                        "support",
                        {"enabled": r.random() < 0.7},
                        prog=None,
                        path=None,
                        org="org-2",
                    )
                )
            head.append(
                self.env(
                    "program.created",
                    BASE - timedelta(days=90),
                    "support",
                    {
                        "session_verification": r.random() < 0.7,
                        "late_cancel_window": r.choice(LCW),
                        "auto_confirm_window": r.choice(ACW),
                        "authorized_hours": r.choice(HOURS),
                    },
                    prog="p2",
                    path=None,
                    org=r.choice(["org-1", "org-2"]),
                )
            )
        W = dur_td(self.lcw) if self.lcw else timedelta(hours=24)
        A = dur_td(self.acw)
        ids = ["m1", "m2", "m3", "n1", "n2"]
        for mid in ids[: r.randint(1, 3)]:
            start = BASE + timedelta(hours=r.randint(-72, 72))
            end = start + timedelta(minutes=r.choice([30, 60, 61, 45]))
            path = r.choice(["a", "a", "b"])
            prog = "p1" if r.random() < 0.9 else "p2"
            self.meet[mid] = (path, start, end, prog)
            self.crit.update([start, end, end + A, start - W])
            out.append(
                self.env(
                    "meeting.scheduled",
                    start - timedelta(days=3),
                    r.choice(["participant", "system"]),
                    {"meeting_id": mid, "start": ts(start, r), "end": ts(end, r)},
                    path=path,
                    prog=prog,
                )
            )
        for _ in range(r.randint(3, 14)):
            mid = r.choice(list(self.meet))
            path, st, en, prog = self.meet[mid]
            k = r.random()
            if k < 0.2:
                t = self.near(r.choice([st - W, st - 2 * W, st, en - timedelta(seconds=1)]))
                out.append(
                    self.env(
                        "meeting.canceled",
                        t,
                        r.choice(["participant", "facilitator", "system"]),
                        {"meeting_id": mid},
                        path=path,
                        prog=prog,
                    )
                )
            elif k < 0.3:
                t = self.near(r.choice([st - W, st - 2 * W, st]))
                nid = r.choice([i for i in ids if i not in self.meet] or ["m9"])
                ns = st + timedelta(hours=r.choice([-5, 5, 30]))
                ne = ns + timedelta(minutes=60)
                if nid not in self.meet:
                    self.meet[nid] = (path, ns, ne, prog)
                self.crit.update([ns, ne, ne + A])
                out.append(
                    self.env(
                        "meeting.rescheduled",
                        t,
                        r.choice(["participant", "facilitator"]),
                        {"meeting_id": mid, "new_meeting_id": nid, "new_start": ts(ns, r), "new_end": ts(ne, r)},
                        path=path,
                        prog=prog,
                    )
                )
            elif k < 0.45:
                t = self.near(r.choice([st, en, en + A, en + A / 2]))
                out.append(
                    self.env(
                        "meeting.confirmation_submitted",
                        t,
                        r.choice(["participant", "program_admin"]),
                        {"meeting_id": mid, "occurred": r.random() < 0.6},
                        path=path,
                        prog=prog,
                    )
                )
            elif k < 0.65:
                t = self.near(r.choice([en + A, en, st, en + A + timedelta(hours=5), st - W]))
                out.append(
                    self.env(
                        "meeting.disputed",
                        t,
                        r.choice(["participant", "facilitator"]),
                        {"meeting_id": mid},
                        path=path,
                        prog=prog,
                    )
                )
                if r.random() < 0.4:
                    out.append(
                        self.env(
                            "meeting.dispute_resolved",
                            t + timedelta(hours=1),
                            r.choice(["program_admin", "support"]),
                            {"meeting_id": mid, "outcome": r.choice(["upheld", "rejected"])},
                            path=path,
                            prog=prog,
                        )
                    )
            elif k < 0.78:
                out.append(
                    self.env(
                        "meeting.dispute_resolved",
                        en + timedelta(hours=r.randint(-5, 100)),
                        r.choice(["program_admin", "support"]),
                        {"meeting_id": mid, "outcome": r.choice(["upheld", "rejected"])},
                        path=path,
                        prog=prog,
                    )
                )
            elif k < 0.92:
                data = {}
                while not data:
                    if r.random() < 0.5:
                        data["late_cancel_window"] = r.choice(LCW)
                    if r.random() < 0.5:
                        data["auto_confirm_window"] = r.choice(ACW)
                    if r.random() < 0.3:
                        data["authorized_hours"] = r.choice(HOURS)
                t = self.near(r.choice([st - W, st, en, en + A, st - 2 * W, BASE - timedelta(days=200)]))
                out.append(self.env("program.settings_updated", t, "support", data, path=None, prog=prog))
            else:
                out.append(
                    self.env(
                        "path.authorized_hours_set",
                        self.near(en),
                        r.choice(["program_admin", "support"]),
                        {"authorized_hours": r.choice([*HOURS, None])},
                        path=path,
                        prog=prog,
                    )
                )
        # reorder: move some events before their program/meeting, shuffle a window
        if r.random() < 0.5:
            r.shuffle(out)
        else:
            for _ in range(r.randint(0, 4)):
                i = r.randrange(len(out))
                e = out.pop(i)
                out.insert(r.randrange(len(out) + 1), e)
        if r.random() < 0.2:
            # program created late: everything waits
            return [json.dumps(e) for e in [head[0], *out, *head[1:]]]
        if r.random() < 0.1:
            out.append(json.loads(json.dumps(r.choice(out))))  # duplicate
        return [json.dumps(e) for e in head + out]

    def at_values(self):
        r = self.r
        crit = sorted(self.crit)
        vals = []
        for _ in range(4):
            c = r.choice(crit)
            vals.append(c + r.choice([timedelta(0), timedelta(seconds=-1), timedelta(0)]))
        vals.append(BASE + timedelta(days=30))
        return distinct_instants(vals)


def generate(seed, path):
    return write_stream(G2(seed), path)


if __name__ == "__main__":
    print(json.dumps(generate(int(sys.argv[1]), sys.argv[2])))
