"""The step function: (state, message) -> outcomes, mutating the state (and recording the changes).

Every input ends as exactly one of: applied, duplicate, skipped (verification off), parked (waiting for
the program or meeting it names; retried in arrival order as soon as that exists) or rejected with a
reason of SPEC section 7. Checks run in the order of SPEC section 7:

1. the message itself (``too_large``, ``invalid_json``)       -> :func:`domain.events.parse`
2. a duplicate well-formed ``event_id``                        -> duplicate, nothing else happens
   (a missing or malformed id never marks a message as seen: it is rejected each time it arrives)
3. the schema                                                  -> :func:`domain.events.validate`
4. the actor's role                                            -> ``forbidden``
5. the references (tenancy, org switch, existence; unknown program/meeting -> wait)
6. the lifecycle rules of SPEC section 4

A rejected event changes no state (its well-formed event id is remembered, so that a re-delivery is a
duplicate).
A decision taken when an event is processed (a rejection, which answer counted) stands; statuses are
derived later from the recorded facts (:mod:`domain.lifecycle`).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any, NamedTuple

from domain import events as E
from domain import reasons as R
from domain.lifecycle import deadline, status_at
from domain.model import (
    BY_CANCEL,
    BY_RESCHEDULE,
    LATE_CANCELED,
    LATE_CANCELED_PENDING,
    NOT_CANCELED,
    AuditEntry,
    Meeting,
    ParkedEvent,
    Path,
    Program,
    SettingsUpdate,
    State,
)

APPLIED = "applied"
DUPLICATE = "duplicate"
SKIPPED = "skipped"
PARKED = "parked"
REJECTED = "rejected"

WAIT_PROGRAM = "program"
WAIT_MEETING = "meeting"
_WAIT_REASON = {WAIT_PROGRAM: R.UNKNOWN_PROGRAM, WAIT_MEETING: R.UNKNOWN_MEETING}
_ALLOWED_ROLES = E.ALLOWED_ROLES


class Outcome(NamedTuple):
    """What became of one input (or of one retried waiting event). Immutable; a named tuple rather than
    a frozen dataclass because one is built per message and that is 2x cheaper."""

    kind: str
    event_id: str | None
    reason: str | None = None
    detail: str = ""
    ref: Any = None
    event: Any = None  # the validated event, when it got that far

    @property
    def waiting_for(self) -> str | None:
        return self.reason if self.kind == PARKED else None


def decode(raw: bytes | None) -> tuple[str | None, Any]:
    """The stateless part of the checks (1 and 3): (readable event_id, typed event or Invalid).

    The pipeline decodes a whole batch first to learn which rows it must load; the duplicate check
    (2) still runs before the schema verdict is used, in :func:`process_decoded`.
    """
    event = E.decode_fast(raw)
    if event is not None:
        return event.event_id, event
    parsed = E.parse(raw)
    if isinstance(parsed, E.Invalid):
        return None, parsed
    assert raw is not None  # parse() rejects a null value
    return E.readable_event_id(parsed), E.validate(parsed, E.may_hold_nul(raw))


def dedup_id(event_id: str | None, decoded: Any) -> str | None:
    """The id under which a message is checked for duplicates and remembered, or None (never a
    duplicate): a validated event's id is well-formed (its envelope was checked), any other is checked
    here. ``decoded`` is what :func:`decode` gave, or the parsed JSON object."""
    return event_id if isinstance(decoded, E.Envelope) else E.dedup_event_id(event_id)


def process_message(state: State, raw: bytes | None, ref: Any = None) -> list[Outcome]:
    """Run one raw message through every check; returns its outcome and those of retried events."""
    event = E.decode_fast(raw)  # the common valid meeting event, validated straight from bytes
    if event is not None:
        return _process_checked(state, event.event_id, event, ref, validated=True)
    parsed = E.parse(raw)
    if isinstance(parsed, E.Invalid):
        return [Outcome(REJECTED, None, parsed.reason, parsed.detail, ref)]
    assert raw is not None  # parse() rejects a null value
    event_id = E.readable_event_id(parsed)
    return _process_checked(state, event_id, parsed, ref, validated=False, nul_possible=E.may_hold_nul(raw))


def process_decoded(state: State, event_id: str | None, decoded: Any, ref: Any = None) -> list[Outcome]:
    """Like :func:`process_message` for the result of :func:`decode`."""
    if event_id is None and isinstance(decoded, E.Invalid):
        return [Outcome(REJECTED, decoded.event_id, decoded.reason, decoded.detail, ref)]
    return _process_checked(state, event_id, decoded, ref, validated=True)


def release_waiting(state: State, keys: list[tuple[str, str]]) -> list[Outcome]:
    """Retry, in arrival order, the events waiting for these (kind, key) pairs (pipeline safety net
    for programs or meetings that came into existence without releasing their waiters)."""
    outcomes: list[Outcome] = []
    _drain(state, keys, outcomes)
    return outcomes


def _process_checked(
    state: State, event_id: str | None, parsed: Any, ref: Any, validated: bool, nul_possible: bool = True
) -> list[Outcome]:
    seen_id = dedup_id(event_id, parsed)
    if seen_id is not None:
        if seen_id in state.seen:
            return [Outcome(DUPLICATE, seen_id, ref=ref)]
        state.seen.add(seen_id)
        if state.changes is not None:
            state.changes.seen.append(seen_id)
    event = parsed if validated else E.validate(parsed, nul_possible)
    if isinstance(event, E.Invalid):
        return [Outcome(REJECTED, event_id, event.reason, event.detail, ref)]
    if event.actor.role not in _ALLOWED_ROLES[event.type]:  # E.role_allowed, inlined
        return [
            Outcome(REJECTED, event_id, R.FORBIDDEN, f"role {event.actor.role} may not send {event.type}", ref, event)
        ]
    return process_event(state, event, ref)


def process_event(state: State, event: Any, ref: Any = None) -> list[Outcome]:
    """Checks 5 and 6 for a valid event, then retry the waiting events its creations released."""
    created: list[tuple[str, str]] = []
    outcomes = [_apply(state, event, ref, created, None)]
    if created and state.waiting:
        waiting = state.waiting
        for key in created:
            if key in waiting:
                _drain(state, created, outcomes)
                break
    return outcomes


def expire_parked(state: State, should_expire: Callable[[ParkedEvent], bool]) -> list[Outcome]:
    """Reject waiting events (``unknown_program``/``unknown_meeting``), in arrival order."""
    out: list[Outcome] = []
    for seq in sorted(state.parked):
        item = state.parked[seq]
        if not should_expire(item):
            continue
        _unpark(state, item)
        reason = _WAIT_REASON[item.wait_kind]
        out.append(
            Outcome(
                REJECTED,
                item.event.event_id,
                reason,
                f"{item.wait_kind} {item.wait_key} never came",
                item.ref,
                item.event,
            )
        )
    return out


# ------------------------------------------------------------------------------------------ internals


def _drain(state: State, created: list[tuple[str, str]], outcomes: list[Outcome]) -> None:
    heap: list[tuple[int, ParkedEvent]] = []

    def release(key: tuple[str, str]) -> None:
        for item in state.waiting.pop(key, ()):
            heapq.heappush(heap, (item.seq, item))

    for key in created:
        release(key)
    while heap:
        _, item = heapq.heappop(heap)
        _unpark(state, item, keep_waiting_index=True)
        more: list[tuple[str, str]] = []
        outcomes.append(_apply(state, item.event, item.ref, more, item.seq))
        for key in more:
            release(key)


def _unpark(state: State, item: ParkedEvent, keep_waiting_index: bool = False) -> None:
    del state.parked[item.seq]
    if not keep_waiting_index:
        waiting = state.waiting.get((item.wait_kind, item.wait_key))
        if waiting is not None:
            waiting.remove(item)
            if not waiting:
                del state.waiting[(item.wait_kind, item.wait_key)]
    if state.changes is not None:
        state.changes.parked.pop(item.seq, None)
        state.changes.unparked.add(item.seq)


def _park(state: State, event: Any, kind: str, key: str, ref: Any, seq: int | None) -> Outcome:
    if seq is None:
        seq = state.next_seq
        state.next_seq += 1
    item = ParkedEvent(seq, event, kind, key, ref)
    state.parked[seq] = item
    state.waiting.setdefault((kind, key), []).append(item)
    if state.changes is not None:
        state.changes.parked[seq] = item
        state.changes.unparked.discard(seq)
    return Outcome(PARKED, event.event_id, _WAIT_REASON[kind], f"waiting for {kind} {key}", ref, event)


def _reject(event: Any, reason: str, detail: str, ref: Any) -> Outcome:
    return Outcome(REJECTED, event.event_id, reason, detail, ref, event)


def _touch_path(state: State, path: Path) -> None:
    path.changes += 1
    if state.changes is not None:
        state.changes.paths.add(path.path_id)


def _register_path(state: State, event: Any, program: Program) -> Path:
    path = state.paths.get(event.path_id)
    if path is None:
        path = Path(event.path_id, program.program_id, program.org_id)
        state.paths[event.path_id] = path
        if state.changes is not None:
            state.changes.new_paths.add(path.path_id)
            state.changes.paths.add(path.path_id)
    return path


_ADMIN_TYPES = E.ADMIN_TYPES
_PATH_HOURS_SET = E.PATH_HOURS_SET
_SCHEDULED = E.SCHEDULED
_RESCHEDULED = E.RESCHEDULED


def _apply(state: State, event: Any, ref: Any, created: list[tuple[str, str]], seq: int | None) -> Outcome:
    kind = event.type
    if kind in _ADMIN_TYPES:
        return _apply_admin(state, event, ref, created, seq)

    # references of path and meeting events, in the order of SPEC section 7
    path = state.paths.get(event.path_id)
    if path is not None and path.program_id != event.program_id:
        return _reject(event, R.TENANT_MISMATCH, f"path {path.path_id} belongs to program {path.program_id}", ref)
    program = state.programs.get(event.program_id)
    if program is None:
        return _park(state, event, WAIT_PROGRAM, event.program_id, ref, seq)
    if program.org_id != event.org_id:
        return _reject(event, R.TENANT_MISMATCH, f"program {program.program_id} belongs to org {program.org_id}", ref)
    if not program.session_verification:
        if path is None:
            _register_path(state, event, program)
        return Outcome(SKIPPED, event.event_id, None, "session verification is off", ref, event)

    if kind == _PATH_HOURS_SET:
        if path is None:
            path = _register_path(state, event, program)
        hours = event.data.authorized_hours
        if path.override_at is None or event.occurred_at >= path.override_at:
            path.override_hours = hours
            path.override_at = event.occurred_at
        _touch_path(state, path)
        _audit(state, "path_note", event, None, event.data.note, authorized_hours=hours)
        return Outcome(APPLIED, event.event_id, None, "", ref, event)

    data = event.data
    meeting = state.meetings.get(data.meeting_id)
    if meeting is not None and meeting.path_id != event.path_id:
        return _reject(event, R.TENANT_MISMATCH, f"meeting {meeting.meeting_id} belongs to path {meeting.path_id}", ref)
    if kind == _SCHEDULED:
        if meeting is not None:
            return _reject(event, R.MEETING_EXISTS, f"meeting {data.meeting_id} exists", ref)
        if path is None:
            path = _register_path(state, event, program)
        _create_meeting(state, data.meeting_id, path, data.start, data.end, created)
        path.changes += 1  # _touch_path, inlined
        if state.changes is not None:
            state.changes.paths.add(path.path_id)
        return Outcome(APPLIED, event.event_id, None, "", ref, event)
    if kind == _RESCHEDULED and data.new_meeting_id in state.meetings:
        return _reject(event, R.MEETING_EXISTS, f"meeting {data.new_meeting_id} exists", ref)
    if meeting is None:
        return _park(state, event, WAIT_MEETING, data.meeting_id, ref, seq)

    assert path is not None  # a known meeting's path is registered
    outcome = _lifecycle(state, event, program, path, meeting, ref, created)
    if outcome is None:
        path.changes += 1  # _touch_path, inlined, and the meeting marked changed
        if state.changes is not None:
            state.changes.meetings.add(meeting.meeting_id)
            state.changes.paths.add(path.path_id)
        return Outcome(APPLIED, event.event_id, None, "", ref, event)
    return outcome


def _create_meeting(
    state: State, meeting_id: str, path: Path, start: int, end: int, created: list[tuple[str, str]]
) -> None:
    meeting = Meeting(meeting_id, path.path_id, start, end)
    state.meetings[meeting_id] = meeting
    created.append((WAIT_MEETING, meeting_id))
    if state.changes is not None:
        state.changes.new_meetings.add(meeting_id)
        state.changes.meetings.add(meeting_id)


def _lifecycle(
    state: State, event: Any, program: Program, path: Path, m: Meeting, ref: Any, created: list[tuple[str, str]]
) -> Outcome | None:
    """SPEC section 4 at ``t = occurred_at``; None when the event is applied."""
    kind = event.type
    t = event.occurred_at
    if kind == E.CANCELED or kind == E.RESCHEDULED:
        if m.cancel_kind != NOT_CANCELED:
            return _reject(event, R.INVALID_TRANSITION, "the meeting was already canceled or rescheduled", ref)
        if m.answer is not None:
            return _reject(event, R.INVALID_TRANSITION, "the meeting already has an answer", ref)
        if t >= m.end:
            return _reject(event, R.INVALID_TRANSITION, "the meeting has ended", ref)
        m.cancel_kind = BY_CANCEL if kind == E.CANCELED else BY_RESCHEDULE
        m.cancel_at = t
        if kind == E.RESCHEDULED:
            d = event.data
            _create_meeting(state, d.new_meeting_id, path, d.new_start, d.new_end, created)
        return None
    if kind == E.CONFIRMATION:
        if m.cancel_kind != NOT_CANCELED:
            return _reject(event, R.INVALID_TRANSITION, "the meeting was canceled or rescheduled", ref)
        if m.answer is not None:
            return _reject(event, R.ALREADY_ANSWERED, "the first valid answer is final", ref)
        if t < m.start:
            return _reject(event, R.MEETING_NOT_STARTED, "answered before the meeting started", ref)
        if t > deadline(m, program):
            return _reject(event, R.CONFIRMATION_WINDOW_CLOSED, "answered after the auto-confirm deadline", ref)
        m.answer = event.data.occurred
        m.answer_at = t
        return None
    if kind == E.DISPUTED:
        if m.dispute_open:
            return _reject(event, R.INVALID_TRANSITION, "a dispute is already open", ref)
        status = status_at(m, program, t)
        needed = LATE_CANCELED_PENDING if event.actor.role == "facilitator" else LATE_CANCELED
        if status != needed:
            return _reject(
                event,
                R.INVALID_TRANSITION,
                f"a {event.actor.role} may dispute only a {needed} meeting; it is {status}",
                ref,
            )
        m.dispute_open = True
        _audit(state, "dispute", event, m.meeting_id, event.data.comment)
        return None
    if kind == E.DISPUTE_RESOLVED:
        if not m.dispute_open:
            return _reject(event, R.INVALID_TRANSITION, "no open dispute", ref)
        m.dispute_open = False
        if event.data.outcome == "upheld":
            m.waived = True
        _audit(state, "dispute_resolution", event, m.meeting_id, event.data.note, outcome=event.data.outcome)
        return None
    raise AssertionError(f"unhandled type {kind}")  # pragma: no cover


def _apply_admin(state: State, event: Any, ref: Any, created: list[tuple[str, str]], seq: int | None) -> Outcome:
    kind = event.type
    if kind == E.ORG_SET:
        state.orgs[event.org_id] = event.data.enabled
        if state.changes is not None:
            state.changes.orgs.add(event.org_id)
        return Outcome(APPLIED, event.event_id, ref=ref, event=event)
    program = state.programs.get(event.program_id)
    if kind == E.PROGRAM_CREATED:
        if program is not None and program.org_id != event.org_id:
            return _reject(
                event, R.TENANT_MISMATCH, f"program {program.program_id} belongs to org {program.org_id}", ref
            )
        if not state.orgs.get(event.org_id, False):
            return _reject(event, R.SESSION_MANAGEMENT_DISABLED, f"session management is off for {event.org_id}", ref)
        if program is not None:
            return _reject(event, R.PROGRAM_EXISTS, f"program {program.program_id} exists", ref)
        d = event.data
        state.programs[event.program_id] = Program(
            program_id=event.program_id,
            org_id=event.org_id,
            session_verification=d.session_verification,
            late_cancel_window=d.late_cancel_window,
            auto_confirm_window=d.auto_confirm_window,
            authorized_hours=d.authorized_hours,
            created_at=event.occurred_at,
            name=d.name,
        )
        created.append((WAIT_PROGRAM, event.program_id))
        if state.changes is not None:
            state.changes.programs.add(event.program_id)
            state.changes.new_programs.add(event.program_id)
        return Outcome(APPLIED, event.event_id, ref=ref, event=event)
    # program.settings_updated
    if program is None:
        return _park(state, event, WAIT_PROGRAM, event.program_id, ref, seq)
    if program.org_id != event.org_id:
        return _reject(event, R.TENANT_MISMATCH, f"program {program.program_id} belongs to org {program.org_id}", ref)
    d = event.data
    update = SettingsUpdate(occurred_at=event.occurred_at)
    if d.has("late_cancel_window"):
        update.late_cancel_window = d.late_cancel_window
    if d.has("auto_confirm_window"):
        update.auto_confirm_window = d.auto_confirm_window
    if d.has("authorized_hours"):
        update.authorized_hours = d.authorized_hours
    program.add_update(update)
    if state.changes is not None:
        state.changes.programs.add(program.program_id)
        state.changes.programs_with_new_policy.add(program.program_id)
    return Outcome(APPLIED, event.event_id, ref=ref, event=event)


def _audit(state: State, kind: str, event: Any, meeting_id: str | None, text: str | None, **extra: Any) -> None:
    if state.changes is None:
        return
    state.changes.audit.append(
        AuditEntry(
            kind,
            event.event_id,
            event.path_id,
            meeting_id,
            event.actor.id,
            event.actor.role,
            event.occurred_at,
            text,
            **extra,
        )
    )
