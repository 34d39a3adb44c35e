"""Malformed and invalid messages for the traffic simulation (internal to session_tally.traffic).

Each builder makes one message of one kind of :data:`session_tally.traffic.BAD_KINDS`, built around real
state (a registered path, a meeting already published, a program already created) so that it gets
exactly the rejection reason listed in ``BAD_KIND_REASONS`` and changes nothing. A builder returns None
when the stream has nothing yet to build its kind from (no ended meeting yet, ...); that kind is then
tried again at the next bad slot.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from producers.routing import route
from session_tally.traffic.config import (
    BAD_KINDS,
    CROSS_PARTITION_BAD_KINDS,
    ORDER_DEPENDENT_BAD_KINDS,
    Record,
    Tagged,
    TrafficConfig,
)
from session_tally.traffic.core import SimCore
from session_tally.traffic.model import DAY_S, HOUR_S, MINUTE_S, SCHEDULED, SimMeeting, SimPath, SimProgram

# About this many too-large messages per million (they are 66 KB each).
TOO_LARGE_PER_EVENT = 4e-6
UNKNOWN_TYPES = (
    "meeting.teleported",
    "meeting.confirmed",
    "path.renamed",
    "program.deleted",
    "Meeting.Scheduled",
)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class BadInputs(SimCore):
    """The bad-input builders of :class:`session_tally.traffic.sim.Simulation`."""

    def __init__(self, config: TrafficConfig, events: int) -> None:
        super().__init__(config, events)
        left_out: frozenset[str] = frozenset()
        if self.cfg.order_independent:
            left_out = ORDER_DEPENDENT_BAD_KINDS
        elif self.cfg.spec_ordered:
            left_out = CROSS_PARTITION_BAD_KINDS
        kinds = [k for k in BAD_KINDS if k not in left_out]
        self.bad_kinds = [k for k in kinds if k != "too_large"]
        self.bad_todo = list(kinds)  # every kind appears once early on, then at random
        self.rng.shuffle(self.bad_todo)
        self.p_too_large = min(1.0, TOO_LARGE_PER_EVENT / self.cfg.bad_fraction) if self.cfg.bad_fraction > 0 else 0
        self.ghosts = 0
        self.builders: dict[str, Callable[[], bytes | None]] = {k: getattr(self, "_bad_" + k) for k in kinds}

    def bad(self) -> Tagged | None:
        if not self.started:
            return None
        if self.bad_todo:
            for i, kind in enumerate(self.bad_todo):
                value = self.builders[kind]()
                if value is not None:
                    del self.bad_todo[i]
                    return self._bad_tagged(kind, value)
        kind = "too_large" if self.rnd() < self.p_too_large else self.pick(self.bad_kinds)
        value = self.builders[kind]()
        return None if value is None else self._bad_tagged(kind, value)

    def _bad_tagged(self, kind: str, value: bytes) -> Tagged:
        topic, key = route(value)
        return Tagged(self.now, "bad:" + kind, Record(topic, key, value))

    # ------------------------------------------------------------------ material
    def _ghost(self, prefix: str) -> str:
        self.ghosts += 1
        return f"{self.tag}{prefix}-ghost-{self.ghosts}"

    def _fresh_mid(self) -> str:
        self.ghosts += 1
        return f"{self.tag}m-x{self.ghosts:06d}"

    def _path(self, verification: bool = False) -> SimPath | None:
        paths = self.vstarted if verification else self.started
        for _ in range(4):
            if not paths:
                return None
            path: SimPath = self.pick(paths)
            if path.registered_at is not None and path.registered_at < self.now:
                return path
        return None

    def _meeting(self, ok: Callable[[SimMeeting], bool]) -> SimMeeting | None:
        """A published meeting of a registered verification-on path that satisfies `ok`."""
        for _ in range(6):
            path = self._path(verification=True)
            if path is None:
                return None
            for m in reversed(path.recent):
                if m.avail is not None and m.avail < self.now and ok(m):
                    return m
        return None

    def _envelope(
        self,
        path: SimPath,
        typ: str,
        t: int,
        role: str,
        data: dict[str, Any],
        m: SimMeeting | None = None,
    ) -> dict[str, Any]:
        prog = path.prog
        actor = {"participant": path.learner, "facilitator": path.coach, "program_admin": prog.admin}.get(
            role, "support-1" if role == "support" else "scheduler"
        )
        return {
            "event_id": self.eid(),
            "type": typ,
            "schema_version": 1,
            "occurred_at": self.fmt(t),
            "org_id": prog.org,
            "program_id": prog.pid,
            "path_id": path.pid,
            "actor": {"id": actor, "role": role},
            "data": data,
        }

    def _new_schedule(self, path: SimPath, mid: str | None = None) -> dict[str, Any]:
        start = self.now + self.between(2 * HOUR_S, 5 * DAY_S)
        start -= start % (15 * MINUTE_S)
        data = {
            "meeting_id": mid or self._fresh_mid(),
            "start": self.fmt(start),
            "end": self.fmt(start + HOUR_S),
        }
        return self._envelope(path, "meeting.scheduled", self.now, "participant", data)

    def _recent_event(self, path: SimPath) -> dict[str, Any]:
        """A plausible event about one of the path's meetings (or a new one)."""
        m = path.recent[-1] if path.recent else None
        if m is None or self.rnd() < 0.3:
            return self._new_schedule(path)
        if self.rnd() < 0.5:
            return self._envelope(
                path,
                "meeting.confirmation_submitted",
                self.now,
                "participant",
                {"meeting_id": m.mid, "occurred": True},
            )
        return self._envelope(path, "meeting.canceled", self.now, "participant", {"meeting_id": m.mid})

    def _admin(
        self,
        typ: str,
        p: SimProgram,
        role: str,
        data: dict[str, Any],
        org: str | None = None,
        ts: str | None = None,
    ) -> dict[str, Any]:
        return {
            "event_id": self.eid(),
            "type": typ,
            "schema_version": 1,
            "occurred_at": ts or (self.settings_time() if typ == "program.settings_updated" else self.fmt(self.now)),
            "org_id": org or p.org,
            "program_id": p.pid,
            "actor": {"id": p.admin if role == "program_admin" else "support-2", "role": role},
            "data": data,
        }

    def _created_program(self, min_age_s: int = 0) -> SimProgram | None:
        created = [p for p in self.created if p.created_at is not None and p.created_at < self.now - min_age_s]
        return self.pick(created) if created else None

    # ------------------------------------------------------------------ the message itself
    def _bad_truncated_json(self) -> bytes | None:
        path = self._path()
        if path is None:
            return None
        value = _dumps(self._recent_event(path))
        return value[: self.between(len(value) // 3, len(value) - 1)]

    def _bad_non_utf8(self) -> bytes | None:
        path = self._path()
        if path is None:
            return None
        event = self._recent_event(path)
        event["data"]["reason"] = "Zoë's Termin fällt aus"
        return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode("latin-1")

    def _bad_too_large(self) -> bytes | None:
        path = self._path()
        if path is None:
            return None
        event = self._recent_event(path)
        sentence = "The participant pasted the whole e-mail thread into the reason field. "
        event["data"]["reason"] = sentence * (66_000 // len(sentence) + 1)
        return _dumps(event)

    # ------------------------------------------------------------------ schema
    def _bad_missing_field(self) -> bytes | None:
        path = self._path()
        if path is None:
            return None
        event = self._recent_event(path)
        field = self.pick(
            (
                "occurred_at",
                "actor",
                "event_id",
                "type",
                "schema_version",
                "org_id",
                "program_id",
                "path_id",
                "data.meeting_id",
            )
        )
        if field == "data.meeting_id":
            del event["data"]["meeting_id"]
        else:
            del event[field]
        return _dumps(event)

    def _bad_naive_timestamp(self) -> bytes | None:
        path = self._path()
        if path is None:
            return None
        event = self._new_schedule(path)
        field = self.pick(("occurred_at", "start", "end"))
        if field == "occurred_at":
            event["occurred_at"] = event["occurred_at"].rstrip("Z")
        else:
            event["data"][field] = event["data"][field].rstrip("Z")
        return _dumps(event)

    def _bad_bad_id(self) -> bytes | None:
        path = self._path()
        if path is None:
            return None
        event = self._new_schedule(path)
        r = self.rnd()
        if r < 0.4:
            event["data"]["meeting_id"] = event["data"]["meeting_id"].replace("m-x", "m/x")
        elif r < 0.6:
            event["path_id"] = path.pid.replace("-", "/")
        elif r < 0.8:
            event["actor"]["id"] = "Jane Doe"
        else:
            event["event_id"] = "evt-" + "".join(self.eid() for _ in range(4))  # > 128 chars
        return _dumps(event)

    def _bad_duration(self, values: tuple[str, ...]) -> bytes | None:
        p = self._created_program()
        if p is None:
            return None
        field = self.pick(("late_cancel_window", "auto_confirm_window"))
        return _dumps(self._admin("program.settings_updated", p, "support", {field: self.pick(values)}))

    def _bad_duration_months(self) -> bytes | None:
        return self._bad_duration(("P1M", "P1Y", "P2M", "P1MT2H"))

    def _bad_duration_fraction(self) -> bytes | None:
        return self._bad_duration(("PT1.5H", "P0.5D", "PT36.5H", "P1,5D"))

    def _bad_hours(self, values: tuple[float, ...]) -> bytes | None:
        hours = self.pick(values)
        if self.rnd() < 0.5:
            p = self._created_program()
            if p is None:
                return None
            return _dumps(self._admin("program.settings_updated", p, "support", {"authorized_hours": hours}))
        path = self._path()
        if path is None:
            return None
        data = {"authorized_hours": hours, "note": "typo in the budget sheet"}
        return _dumps(self._envelope(path, "path.authorized_hours_set", self.now, "program_admin", data))

    def _bad_hours_three_decimals(self) -> bytes | None:
        return self._bad_hours((12.345, 7.125, 0.001, 20.505))

    def _bad_hours_negative(self) -> bytes | None:
        return self._bad_hours((-5, -0.5, -12.25))

    def _bad_path_id_on_program_event(self) -> bytes | None:
        path = self._path()
        if path is None:
            return None
        event = self._admin("program.settings_updated", path.prog, "support", {"authorized_hours": 30})
        event["path_id"] = path.pid  # one of the program's own paths
        return _dumps(event)

    def _bad_start_not_before_end(self) -> bytes | None:
        path = self._path()
        if path is None:
            return None
        event = self._new_schedule(path)
        data = event["data"]
        if self.rnd() < 0.5:
            data["end"] = data["start"]
        else:
            data["start"], data["end"] = data["end"], data["start"]
        return _dumps(event)

    def _bad_longer_than_24h(self) -> bytes | None:
        path = self._path()
        if path is None:
            return None
        event = self._new_schedule(path)
        start = self.now + DAY_S
        event["data"]["start"] = self.fmt(start)
        event["data"]["end"] = self.fmt(
            start + self.pick((DAY_S + MINUTE_S, DAY_S + 15 * MINUTE_S, 30 * HOUR_S, 3 * DAY_S))
        )
        return _dumps(event)

    def _bad_unknown_type(self) -> bytes | None:
        path = self._path()
        if path is None:
            return None
        event = self._recent_event(path)
        event["type"] = self.pick(UNKNOWN_TYPES)
        return _dumps(event)

    def _bad_schema_version_2(self) -> bytes | None:
        path = self._path()
        if path is None:
            return None
        event = self._recent_event(path)
        event["schema_version"] = self.pick((2, 2, 3))
        return _dumps(event)

    # ------------------------------------------------------------------ role
    def _bad_wrong_role(self) -> bytes | None:
        path = self._path()
        if path is None:
            return None
        r = self.rnd()
        if r < 0.25:
            event = self._envelope(path, "path.authorized_hours_set", self.now, "participant", {"authorized_hours": 99})
        elif r < 0.5:
            event = self._new_schedule(path)
            event["actor"] = {"id": "support-3", "role": "support"}
        elif r < 0.75:  # an upstream service answering for the participant
            mid = path.recent[-1].mid if path.recent else self._fresh_mid()
            event = self._envelope(
                path,
                "meeting.confirmation_submitted",
                self.now,
                "system",
                {"meeting_id": mid, "occurred": True},
            )
        else:
            org = path.prog.org
            return _dumps(
                {
                    "event_id": self.eid(),
                    "type": "organization.session_management_set",
                    "schema_version": 1,
                    "occurred_at": self.fmt(self.now),
                    "org_id": org,
                    "actor": {"id": path.prog.admin, "role": "program_admin"},
                    "data": {"enabled": False},
                }
            )
        return _dumps(event)

    # ------------------------------------------------------------------ references
    def _bad_unknown_meeting(self) -> bytes | None:
        path = self._path(verification=True)
        if path is None:
            return None
        mid = self._ghost("m")
        if self.rnd() < 0.5:
            data: dict[str, Any] = {"meeting_id": mid, "occurred": True}
            return _dumps(self._envelope(path, "meeting.confirmation_submitted", self.now, "participant", data))
        return _dumps(self._envelope(path, "meeting.canceled", self.now, "facilitator", {"meeting_id": mid}))

    def _bad_unknown_program(self) -> bytes | None:
        p = self._created_program()
        if p is None:
            return None
        ghost = self._ghost("prog")
        if self.rnd() < 0.3:
            event = self._admin("program.settings_updated", p, "support", {"authorized_hours": 15})
            event["program_id"] = ghost
            return _dumps(event)
        start = self.now + self.between(HOUR_S, 3 * DAY_S)
        start -= start % (15 * MINUTE_S)
        return _dumps(
            {
                "event_id": self.eid(),
                "type": "meeting.scheduled",
                "schema_version": 1,
                "occurred_at": self.fmt(self.now),
                "org_id": p.org,
                "program_id": ghost,
                "path_id": ghost.replace("prog", "path"),
                "actor": {"id": "scheduler", "role": "system"},
                "data": {
                    "meeting_id": self._ghost("m"),
                    "start": self.fmt(start),
                    "end": self.fmt(start + HOUR_S),
                },
            }
        )

    def _other_org(self, org: str) -> str:
        others = [o for o in self.orgs if o != org]
        return self.pick(others)

    def _bad_tenant_mismatch_org(self) -> bytes | None:
        path = self._path()
        if path is None:
            return None
        event = self._recent_event(path)
        event["org_id"] = self._other_org(path.prog.org)
        return _dumps(event)

    def _bad_tenant_mismatch_path(self) -> bytes | None:
        path = self._path()
        if path is None:
            return None
        others = [
            p for p in self.created if p is not path.prog and p.created_at is not None and p.created_at < self.now
        ]
        if not others:
            return None
        other: SimProgram = self.pick(others)
        event = self._recent_event(path)
        event["org_id"], event["program_id"] = other.org, other.pid
        return _dumps(event)

    def _bad_meeting_of_other_path(self) -> bytes | None:
        m = self._meeting(lambda m: True)
        path = self._path(verification=True)
        if m is None or path is None or path is m.path:
            return None
        return _dumps(self._envelope(path, "meeting.canceled", self.now, "facilitator", {"meeting_id": m.mid}))

    def _bad_program_in_other_org(self) -> bytes | None:
        # the copy is keyed by the other org: another partition than the original, so no order between
        # the two. In a live stream it names a program created a while ago (else a worker may read the
        # copy first, create the program in the wrong org and reject the whole program's traffic)
        p = self._created_program(0 if self.timing.calendar else 60)
        if p is None:
            return None
        data = {
            "name": "Copy",
            "session_verification": True,
            "late_cancel_window": "PT24H",
            "auto_confirm_window": "P3D",
            "authorized_hours": 10,
        }
        return _dumps(self._admin("program.created", p, "program_admin", data, org=self._other_org(p.org)))

    def _bad_program_exists(self) -> bytes | None:
        p = self._created_program()
        if p is None or not self.org_enabled.get(p.org):
            return None
        data = {
            "name": "Re-import",
            "session_verification": True,
            "late_cancel_window": None,
            "auto_confirm_window": "P7D",
            "authorized_hours": None,
        }
        return _dumps(self._admin("program.created", p, "support", data))

    def _bad_meeting_exists(self) -> bytes | None:
        m = self._meeting(lambda m: True)
        if m is None:
            return None
        if self.rnd() < 0.7:
            return _dumps(self._new_schedule(m.path, m.mid))
        start = self.now + DAY_S
        data = {
            "meeting_id": m.mid,
            "new_meeting_id": m.mid,
            "new_start": self.fmt(start),
            "new_end": self.fmt(start + HOUR_S),
        }
        return _dumps(self._envelope(m.path, "meeting.rescheduled", self.now, "facilitator", data))

    # ------------------------------------------------------------------ lifecycle
    def _bad_cancel_after_end(self) -> bytes | None:
        now = self.now
        m = self._meeting(lambda m: m.end <= now)
        if m is None:
            return None
        return _dumps(
            self._envelope(
                m.path,
                "meeting.canceled",
                now,
                "participant",
                {"meeting_id": m.mid, "reason": "forgot to cancel"},
            )
        )

    def _bad_confirm_canceled(self) -> bytes | None:
        now = self.now
        m = self._meeting(lambda m: m.state != SCHEDULED and m.changed is not None and m.changed < now)
        if m is None:
            return None
        return _dumps(
            self._envelope(
                m.path,
                "meeting.confirmation_submitted",
                now,
                "participant",
                {"meeting_id": m.mid, "occurred": True},
            )
        )
