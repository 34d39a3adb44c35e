"""The policy rules: references (SPEC section 7, check 5 and its order), the meeting lifecycle
(section 4) with every inclusive boundary, the program policy in event time (section 2), waiting events,
duplicates, and the decisions of docs/policy.md. Each test drives the real entry point
(``process_message`` on raw bytes) and reads statuses with ``status_at``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from domain import reasons as R
from domain.engine import (
    APPLIED,
    DUPLICATE,
    PARKED,
    REJECTED,
    SKIPPED,
    Outcome,
    expire_parked,
    process_message,
)
from domain.lifecycle import deadline, next_change_at, status_at
from domain.model import State
from domain.timefmt import DAY, HOUR, MINUTE, format_instant, parse_instant

US = 1


def t(text: str) -> int:
    return parse_instant(text)


START = t("2026-03-10T10:00:00Z")
END = t("2026-03-10T11:00:00Z")
W = 24 * HOUR  # the late-cancel window of the default program
ACW = 3 * DAY  # its auto-confirm window
DEADLINE = END + ACW


class World:
    """One engine state and a way to send it events (each a fresh event id unless given)."""

    def __init__(self) -> None:
        self.state = State()
        self.count = 0
        self.outcomes: list[Outcome] = []

    def send(
        self,
        type_: str,
        at: int | str = "2026-03-01T09:00:00Z",
        *,
        role: str | None = None,
        org: str = "org-1",
        program: str = "prog-1",
        path: str = "path-1",
        event_id: str | None = None,
        **data: Any,
    ) -> Outcome:
        self.count += 1
        obj: dict[str, Any] = {
            "event_id": event_id if event_id is not None else f"ev-{self.count}",
            "type": type_,
            "schema_version": 1,
            "occurred_at": at if isinstance(at, str) else format_instant(at),
            "org_id": org,
        }
        if type_ != "organization.session_management_set":
            obj["program_id"] = program
        if not type_.startswith(("organization.", "program.")):
            obj["path_id"] = path
        obj["actor"] = {"id": "user-1", "role": role or DEFAULT_ROLE[type_]}
        obj["data"] = {k: (format_instant(v) if k in TIME_KEYS and isinstance(v, int) else v) for k, v in data.items()}
        self.outcomes = process_message(self.state, json.dumps(obj).encode(), self.count)
        return self.outcomes[0]

    # shorthands
    def org(self, enabled: bool = True, org: str = "org-1", **kw: Any) -> Outcome:
        return self.send("organization.session_management_set", "2026-01-01T00:00:00Z", org=org, enabled=enabled, **kw)

    def program(
        self,
        program: str = "prog-1",
        *,
        lcw: str | None = "PT24H",
        acw: str | None = "P3D",
        hours: Any = 10,
        verification: bool = True,
        org: str = "org-1",
        at: str = "2026-01-02T00:00:00Z",
        **kw: Any,
    ) -> Outcome:
        return self.send(
            "program.created",
            at,
            program=program,
            org=org,
            session_verification=verification,
            late_cancel_window=lcw,
            auto_confirm_window=acw,
            authorized_hours=hours,
            **kw,
        )

    def settings(self, at: int | str, program: str = "prog-1", **fields: Any) -> Outcome:
        return self.send("program.settings_updated", at, program=program, **fields)

    def schedule(self, mid: str = "m1", start: int = START, end: int = END, **kw: Any) -> Outcome:
        return self.send(
            "meeting.scheduled",
            kw.pop("at", "2026-03-01T09:00:00Z"),
            meeting_id=mid,
            start=start,
            end=end,
            **kw,
        )

    def cancel(self, at: int | str, mid: str = "m1", **kw: Any) -> Outcome:
        return self.send("meeting.canceled", at, meeting_id=mid, **kw)

    def reschedule(
        self, at: int | str, new: str = "m2", mid: str = "m1", start: int | None = None, **kw: Any
    ) -> Outcome:
        new_start = START + 2 * DAY if start is None else start
        return self.send(
            "meeting.rescheduled",
            at,
            meeting_id=mid,
            new_meeting_id=new,
            new_start=new_start,
            new_end=new_start + HOUR,
            **kw,
        )

    def confirm(self, at: int | str, occurred: bool = True, mid: str = "m1", **kw: Any) -> Outcome:
        return self.send("meeting.confirmation_submitted", at, meeting_id=mid, occurred=occurred, **kw)

    def dispute(self, at: int | str, role: str, mid: str = "m1", **kw: Any) -> Outcome:
        return self.send("meeting.disputed", at, role=role, meeting_id=mid, **kw)

    def resolve(self, at: int | str, outcome: str, mid: str = "m1", **kw: Any) -> Outcome:
        return self.send("meeting.dispute_resolved", at, meeting_id=mid, outcome=outcome, **kw)

    def status(self, at: int, mid: str = "m1") -> str:
        meeting = self.state.meetings[mid]
        program = self.state.programs[self.state.paths[meeting.path_id].program_id]
        return status_at(meeting, program, at)

    def deadline(self, mid: str = "m1") -> int:
        meeting = self.state.meetings[mid]
        return deadline(meeting, self.state.programs[self.state.paths[meeting.path_id].program_id])


DEFAULT_ROLE = {
    "organization.session_management_set": "support",
    "program.created": "program_admin",
    "program.settings_updated": "support",
    "path.authorized_hours_set": "program_admin",
    "meeting.scheduled": "facilitator",
    "meeting.rescheduled": "participant",
    "meeting.canceled": "participant",
    "meeting.confirmation_submitted": "participant",
    "meeting.disputed": "facilitator",
    "meeting.dispute_resolved": "program_admin",
}
TIME_KEYS = {"start", "end", "new_start", "new_end"}


def kind(outcome: Outcome) -> tuple[str, str | None]:
    return outcome.kind, outcome.reason


def ready(**program: Any) -> World:
    """Org on, prog-1 created (PT24H / P3D / 10 h unless told), meeting m1 on path-1 (10:00-11:00)."""
    w = World()
    w.org()
    assert w.program(**program).kind == APPLIED
    assert w.schedule().kind == APPLIED
    return w


# ====================================================================================== references


def test_path_of_another_program_is_a_mismatch_even_before_the_program_is_known() -> None:
    w = ready()
    assert kind(w.schedule("m2", program="prog-9")) == (REJECTED, R.TENANT_MISMATCH)
    assert "prog-9" not in w.state.programs and not w.state.parked


def test_unknown_program_waits() -> None:
    w = World()
    w.org()
    out = w.schedule(path="path-9", program="prog-9")
    assert (out.kind, out.reason, out.waiting_for) == (PARKED, R.UNKNOWN_PROGRAM, R.UNKNOWN_PROGRAM)
    assert "path-9" not in w.state.paths  # a waiting event does not register its path


def test_program_of_another_org_is_a_mismatch() -> None:
    w = ready()
    assert kind(w.schedule("m2", org="org-2", path="path-2")) == (REJECTED, R.TENANT_MISMATCH)
    assert "path-2" not in w.state.paths
    assert kind(w.cancel(START - HOUR, org="org-2")) == (REJECTED, R.TENANT_MISMATCH)


def test_org_mismatch_comes_before_verification_off_skipping() -> None:
    w = World()
    w.org()
    w.program(verification=False, acw=None)
    assert kind(w.schedule(org="org-2")) == (REJECTED, R.TENANT_MISMATCH)
    assert kind(w.schedule()) == (SKIPPED, None)


def test_verification_off_skips_before_meeting_checks_and_registers_the_path() -> None:
    w = World()
    w.org()
    w.program("off", verification=False, acw=None, lcw=None, hours=None)
    for out in (
        w.schedule(program="off"),
        w.schedule(program="off"),  # would be meeting_exists
        w.cancel(START, mid="nowhere", program="off"),  # would wait
        w.send("path.authorized_hours_set", program="off", authorized_hours=5),
    ):
        assert kind(out) == (SKIPPED, None)
    assert w.state.paths["path-1"].program_id == "off"
    assert w.state.meetings == {}
    w.program("on")
    assert kind(w.schedule("m5", program="on")) == (REJECTED, R.TENANT_MISMATCH)


def test_meeting_of_another_path_is_a_mismatch_before_meeting_exists() -> None:
    w = ready()
    assert kind(w.schedule("m1", path="path-2")) == (REJECTED, R.TENANT_MISMATCH)
    assert "path-2" not in w.state.paths
    assert kind(w.cancel(START - HOUR, path="path-2")) == (REJECTED, R.TENANT_MISMATCH)
    assert kind(w.confirm(END, path="path-2")) == (REJECTED, R.TENANT_MISMATCH)


def test_meeting_id_already_used_on_the_same_path() -> None:
    w = ready()
    assert kind(w.schedule("m1")) == (REJECTED, R.MEETING_EXISTS)


def test_new_meeting_id_used_anywhere_is_meeting_exists() -> None:
    w = ready()
    w.schedule("other", path="path-2")
    assert kind(w.reschedule(START - 2 * DAY, new="other")) == (REJECTED, R.MEETING_EXISTS)
    assert kind(w.reschedule(START - 2 * DAY, new="m1")) == (REJECTED, R.MEETING_EXISTS)
    assert w.status(START - DAY) == "upcoming"


def test_meeting_exists_comes_before_waiting_for_the_meeting() -> None:
    w = ready()
    assert kind(w.reschedule(START - 2 * DAY, mid="ghost", new="m1")) == (REJECTED, R.MEETING_EXISTS)


def test_unknown_meeting_waits() -> None:
    w = ready()
    out = w.cancel(START - HOUR, mid="ghost")
    assert (out.kind, out.reason) == (PARKED, R.UNKNOWN_MEETING)


def test_program_created_checks_in_order() -> None:
    w = World()
    w.org()
    assert kind(w.program("p", org="org-2")) == (REJECTED, R.SESSION_MANAGEMENT_DISABLED)  # org-2 never on
    w.program("p")
    assert kind(w.program("p", org="org-2")) == (REJECTED, R.TENANT_MISMATCH)  # before the switch
    w.org(False)
    assert kind(w.program("p")) == (REJECTED, R.SESSION_MANAGEMENT_DISABLED)  # before program_exists
    w.org(True)
    assert kind(w.program("p")) == (REJECTED, R.PROGRAM_EXISTS)


def test_settings_update_waits_for_its_program_and_checks_the_org() -> None:
    w = World()
    w.org()
    out = w.settings("2026-03-01T00:00:00Z", late_cancel_window="PT48H")
    assert (out.kind, out.reason) == (PARKED, R.UNKNOWN_PROGRAM)
    created = w.program()
    assert created.kind == APPLIED
    assert [o.kind for o in w.outcomes] == [APPLIED, APPLIED]  # the update was retried
    assert kind(w.send("program.settings_updated", org="org-2", authorized_hours=3)) == (
        REJECTED,
        R.TENANT_MISMATCH,
    )


def test_settings_update_on_a_verification_off_program_is_applied() -> None:
    w = World()
    w.org()
    w.program(verification=False, acw=None)
    assert kind(w.settings("2026-03-01T00:00:00Z", authorized_hours=4)) == (APPLIED, None)


def test_ids_are_global_across_orgs() -> None:
    w = ready()
    w.org(org="org-2")
    assert kind(w.program("prog-1", org="org-2")) == (REJECTED, R.TENANT_MISMATCH)
    w.program("prog-2", org="org-2")
    assert kind(w.schedule("m1", org="org-2", program="prog-2", path="path-9")) == (
        REJECTED,
        R.TENANT_MISMATCH,
    )


# ============================================================================= check order overall


def test_role_is_checked_before_references() -> None:
    w = World()
    w.org()
    out = w.send("meeting.confirmation_submitted", role="facilitator", program="prog-9", meeting_id="m1", occurred=True)
    assert kind(out) == (REJECTED, R.FORBIDDEN)
    assert not w.state.parked


def test_references_are_checked_before_lifecycle() -> None:
    w = ready()
    w.cancel(START - 2 * DAY)
    assert kind(w.cancel(START - HOUR, org="org-2")) == (
        REJECTED,
        R.TENANT_MISMATCH,
    )  # not invalid_transition


def test_rejected_events_change_nothing() -> None:
    w = ready()
    before = (dict(w.state.paths), dict(w.state.meetings), w.state.paths["path-1"].changes)
    w.cancel(END)  # invalid_transition
    w.schedule("m1")  # meeting_exists
    w.schedule("m7", org="org-2", path="path-7")  # tenant_mismatch
    w.confirm(START - 1)  # meeting_not_started
    assert (dict(w.state.paths), dict(w.state.meetings), w.state.paths["path-1"].changes) == before
    assert w.state.meetings["m1"].cancel_kind == 0 and w.state.meetings["m1"].answer is None


# ========================================================================================== clock


def test_status_from_the_clock_with_inclusive_boundaries() -> None:
    w = ready()
    assert w.deadline() == DEADLINE
    assert w.status(START - US) == "upcoming"
    assert w.status(START) == "unconfirmed"
    assert w.status(END) == "unconfirmed"
    assert w.status(DEADLINE - US) == "unconfirmed"
    assert w.status(DEADLINE) == "auto_confirmed"
    m = w.state.meetings["m1"]
    program = w.state.programs["prog-1"]
    assert next_change_at(m, program, START - HOUR) == START
    assert next_change_at(m, program, START) == DEADLINE
    assert next_change_at(m, program, DEADLINE) is None


def test_minutes_drop_a_partial_minute() -> None:
    w = ready()
    w.schedule("m2", START, START + 30 * MINUTE + 59 * 1_000_000 + 999_999)
    assert w.state.meetings["m2"].minutes == 30


# =============================================================================== cancel / reschedule


def test_cancel_exactly_at_start_minus_window_is_late() -> None:
    w = ready()
    assert kind(w.cancel(START - W)) == (APPLIED, None)
    assert w.status(START) == "late_canceled_pending"


def test_cancel_one_microsecond_before_the_window_is_not_late() -> None:
    w = ready()
    w.cancel(START - W - US)
    assert w.status(START) == "canceled"
    assert w.status(DEADLINE + DAY) == "canceled"


def test_late_cancel_is_pending_until_the_deadline_then_final() -> None:
    w = ready()
    w.cancel(START - HOUR)
    assert w.status(START - 2 * HOUR) == "late_canceled_pending"  # the recorded cancel counts at any T
    assert w.status(DEADLINE - US) == "late_canceled_pending"
    assert w.status(DEADLINE) == "late_canceled"
    m, program = w.state.meetings["m1"], w.state.programs["prog-1"]
    assert next_change_at(m, program, START) == DEADLINE
    assert next_change_at(m, program, DEADLINE) is None


def test_no_late_cancels_when_the_window_is_null() -> None:
    w = ready(lcw=None)
    w.cancel(START + 30 * MINUTE)
    assert w.status(DEADLINE) == "canceled"


def test_cancel_allowed_until_just_before_the_end() -> None:
    w = ready()
    assert kind(w.cancel(END - US)) == (APPLIED, None)
    assert w.status(END) == "late_canceled_pending"


@pytest.mark.parametrize("offset", [0, US, DAY])
def test_cancel_at_or_after_the_end_is_invalid(offset: int) -> None:
    w = ready()
    assert kind(w.cancel(END + offset)) == (REJECTED, R.INVALID_TRANSITION)
    assert kind(w.reschedule(END + offset)) == (REJECTED, R.INVALID_TRANSITION)
    assert "m2" not in w.state.meetings


def test_cancel_twice_or_after_an_answer_is_invalid() -> None:
    w = ready()
    w.cancel(START - 2 * DAY)
    assert kind(w.cancel(START - DAY)) == (REJECTED, R.INVALID_TRANSITION)
    assert kind(w.reschedule(START - DAY)) == (REJECTED, R.INVALID_TRANSITION)
    w2 = ready()
    w2.confirm(START + 10 * MINUTE)
    assert kind(w2.cancel(START + 20 * MINUTE)) == (REJECTED, R.INVALID_TRANSITION)
    assert kind(w2.reschedule(START + 20 * MINUTE)) == (REJECTED, R.INVALID_TRANSITION)


def test_reschedule_not_late_moves_the_meeting() -> None:
    w = ready()
    new_start = START + 2 * DAY
    assert kind(w.reschedule(START - W - US, new="m2", start=new_start)) == (APPLIED, None)
    assert w.status(START) == "rescheduled"
    assert w.status(START, "m2") == "upcoming"
    assert w.state.meetings["m2"].start == new_start and w.state.meetings["m2"].path_id == "path-1"
    # later events use the new id
    assert kind(w.cancel(START, mid="m1")) == (REJECTED, R.INVALID_TRANSITION)
    assert kind(w.confirm(new_start + HOUR, mid="m2")) == (APPLIED, None)
    assert w.status(new_start + HOUR, "m2") == "confirmed"


def test_reschedule_late_is_a_late_cancel_plus_a_new_meeting() -> None:
    w = ready()
    w.reschedule(START - W, new="m2")
    assert w.status(START) == "late_canceled_pending"
    assert w.status(DEADLINE) == "late_canceled"
    assert w.status(START, "m2") == "upcoming"


def test_a_rescheduled_meeting_may_be_moved_earlier_or_into_the_past() -> None:
    w = ready()
    assert kind(w.reschedule(START - 3 * DAY, new="m2", start=START - 5 * DAY)) == (APPLIED, None)
    assert w.status(START - 5 * DAY, "m2") == "unconfirmed"
    assert w.status(START, "m2") == "auto_confirmed"


def test_the_new_meeting_follows_its_own_clock_and_rules() -> None:
    w = ready()
    new_start = START + 2 * DAY
    w.reschedule(START - W, new="m2", start=new_start)
    assert kind(w.cancel(new_start - W, mid="m2")) == (APPLIED, None)
    assert w.status(new_start, "m2") == "late_canceled_pending"


# ==================================================================================== confirmation


def test_confirmation_boundaries() -> None:
    w = ready()
    assert kind(w.confirm(START - US)) == (REJECTED, R.MEETING_NOT_STARTED)
    assert kind(w.confirm(DEADLINE + US)) == (REJECTED, R.CONFIRMATION_WINDOW_CLOSED)
    assert kind(w.confirm(START)) == (APPLIED, None)
    w2 = ready()
    assert kind(w2.confirm(DEADLINE)) == (APPLIED, None)  # exactly at the deadline


def test_answers() -> None:
    w = ready()
    w.confirm(END, occurred=True)
    assert w.status(START - DAY) == "confirmed"  # a recorded answer counts at any T
    assert w.status(DEADLINE + DAY) == "confirmed"
    w2 = ready()
    w2.confirm(END, occurred=False)
    assert w2.status(DEADLINE) == "did_not_occur"
    assert next_change_at(w2.state.meetings["m1"], w2.state.programs["prog-1"], START) is None


def test_the_first_valid_answer_is_final() -> None:
    w = ready()
    assert kind(w.confirm(START - HOUR, occurred=False)) == (REJECTED, R.MEETING_NOT_STARTED)
    w.confirm(END, occurred=True)
    assert kind(w.confirm(END + HOUR, occurred=False)) == (REJECTED, R.ALREADY_ANSWERED)
    assert w.status(DEADLINE) == "confirmed"


def test_confirmation_check_order() -> None:
    # canceled beats everything
    w = ready()
    w.cancel(START - 2 * DAY)
    assert kind(w.confirm(START - HOUR)) == (REJECTED, R.INVALID_TRANSITION)
    assert kind(w.confirm(DEADLINE + DAY)) == (REJECTED, R.INVALID_TRANSITION)
    # already answered beats the times
    w = ready()
    w.confirm(END)
    assert kind(w.confirm(START - HOUR)) == (REJECTED, R.ALREADY_ANSWERED)
    assert kind(w.confirm(DEADLINE + DAY)) == (REJECTED, R.ALREADY_ANSWERED)


@pytest.mark.parametrize("how", ["late cancel", "reschedule", "late reschedule", "waived"])
def test_no_answer_for_a_meeting_that_left_the_schedule(how: str) -> None:
    w = ready()
    if how == "late cancel":
        w.cancel(START - HOUR)
    elif how == "reschedule":
        w.reschedule(START - 2 * DAY)
    elif how == "late reschedule":
        w.reschedule(START - HOUR)
    else:
        w.cancel(START - HOUR)
        w.dispute(START - 30 * MINUTE, "facilitator")
        w.resolve(START, "upheld")
    assert kind(w.confirm(END)) == (REJECTED, R.INVALID_TRANSITION)


def test_program_admin_may_answer() -> None:
    w = ready()
    assert kind(w.confirm(END, role="program_admin")) == (APPLIED, None)


def test_a_confirmation_in_time_counts_whenever_it_is_processed() -> None:
    """Event time decides: replay the same answer after the clock passed the deadline."""
    w = ready()
    assert w.status(DEADLINE + DAY) == "auto_confirmed"
    w.confirm(DEADLINE - HOUR, occurred=False)
    assert w.status(DEADLINE + DAY) == "did_not_occur"


# ======================================================================================== disputes


def late_canceled() -> World:
    w = ready()
    w.cancel(START - HOUR)
    return w


def test_facilitator_disputes_a_pending_late_cancel() -> None:
    w = late_canceled()
    assert kind(w.dispute(DEADLINE - US, "facilitator")) == (APPLIED, None)
    assert w.state.meetings["m1"].dispute_open


def test_facilitator_cannot_dispute_once_final() -> None:
    w = late_canceled()
    assert kind(w.dispute(DEADLINE, "facilitator")) == (REJECTED, R.INVALID_TRANSITION)


def test_participant_disputes_a_final_late_cancel() -> None:
    w = late_canceled()
    assert kind(w.dispute(DEADLINE - US, "participant")) == (REJECTED, R.INVALID_TRANSITION)
    assert kind(w.dispute(DEADLINE, "participant")) == (APPLIED, None)


@pytest.mark.parametrize("role", ["program_admin", "support", "system"])
def test_roles_that_may_never_dispute(role: str) -> None:
    w = late_canceled()
    assert kind(w.dispute(DEADLINE, role)) == (REJECTED, R.FORBIDDEN)


@pytest.mark.parametrize("role", ["facilitator", "participant", "system"])
def test_roles_that_may_not_resolve(role: str) -> None:
    w = late_canceled()
    w.dispute(START, "facilitator")
    assert kind(w.resolve(START + HOUR, "upheld", role=role)) == (REJECTED, R.FORBIDDEN)


@pytest.mark.parametrize("setup", ["upcoming", "unconfirmed", "confirmed", "canceled", "rescheduled", "auto_confirmed"])
@pytest.mark.parametrize("role", ["facilitator", "participant"])
def test_dispute_in_another_status_is_invalid(setup: str, role: str) -> None:
    w = ready()
    at = START - 2 * DAY
    if setup == "unconfirmed":
        at = START
    elif setup == "confirmed":
        w.confirm(END)
        at = END + HOUR
    elif setup == "canceled":
        w.cancel(START - 2 * DAY)
        at = DEADLINE + DAY
    elif setup == "rescheduled":
        w.reschedule(START - 2 * DAY)
        at = DEADLINE + DAY
    elif setup == "auto_confirmed":
        at = DEADLINE
    assert w.status(at) == setup
    assert kind(w.dispute(at, role)) == (REJECTED, R.INVALID_TRANSITION)


def test_one_open_dispute_at_a_time() -> None:
    w = late_canceled()
    w.dispute(START, "facilitator")
    assert kind(w.dispute(START + HOUR, "facilitator")) == (REJECTED, R.INVALID_TRANSITION)
    assert kind(w.dispute(DEADLINE, "participant")) == (REJECTED, R.INVALID_TRANSITION)


def test_rejected_resolution_keeps_the_status_and_allows_another_dispute() -> None:
    w = late_canceled()
    w.dispute(START, "facilitator")
    assert kind(w.resolve(START + HOUR, "rejected")) == (APPLIED, None)
    assert not w.state.meetings["m1"].dispute_open
    assert w.status(START + 2 * HOUR) == "late_canceled_pending"
    assert w.status(DEADLINE) == "late_canceled"
    assert kind(w.dispute(START + 2 * HOUR, "facilitator")) == (APPLIED, None)
    assert kind(w.resolve(START + 3 * HOUR, "rejected", role="support")) == (APPLIED, None)
    assert kind(w.dispute(DEADLINE, "participant")) == (APPLIED, None)


def test_upheld_resolution_waives_and_ends_disputes() -> None:
    w = late_canceled()
    w.dispute(START, "facilitator")
    assert kind(w.resolve(START + HOUR, "upheld")) == (APPLIED, None)
    assert w.status(START + 2 * HOUR) == "late_cancel_waived"
    assert w.status(DEADLINE + DAY) == "late_cancel_waived"
    assert next_change_at(w.state.meetings["m1"], w.state.programs["prog-1"], START) is None
    assert kind(w.dispute(START + 2 * HOUR, "facilitator")) == (REJECTED, R.INVALID_TRANSITION)
    assert kind(w.dispute(DEADLINE, "participant")) == (REJECTED, R.INVALID_TRANSITION)


def test_resolving_without_an_open_dispute_is_invalid() -> None:
    w = late_canceled()
    assert kind(w.resolve(START, "upheld")) == (REJECTED, R.INVALID_TRANSITION)
    w.dispute(START, "facilitator")
    w.resolve(START + HOUR, "rejected")
    assert kind(w.resolve(START + 2 * HOUR, "upheld")) == (REJECTED, R.INVALID_TRANSITION)
    assert w.status(DEADLINE) == "late_canceled"


def test_disputed_flag_while_open() -> None:
    w = late_canceled()
    w.dispute(START, "facilitator")
    assert w.state.meetings["m1"].dispute_open is True
    w.resolve(START + HOUR, "rejected")
    assert w.state.meetings["m1"].dispute_open is False


def test_dispute_status_is_judged_at_the_dispute_time_from_all_recorded_facts() -> None:
    """Decision: the status "at t" is status_at(t) over everything recorded, including a cancel
    recorded with a later occurred_at."""
    w = late_canceled()  # canceled at START - 1 h
    assert kind(w.dispute(START - 2 * HOUR, "facilitator")) == (APPLIED, None)


# =================================================================== policy in event time (section 2)


def test_settings_change_is_not_retroactive_for_cancels() -> None:
    w = ready()
    w.settings(START - 3 * DAY, late_cancel_window="P3D")
    w.cancel(START - 3 * DAY - US)  # before the change: W = 24 h, not late
    assert w.status(START) == "canceled"


def test_settings_change_holds_from_its_occurred_at_inclusive() -> None:
    w = ready()
    w.settings(START - 3 * DAY, late_cancel_window="P3D")
    w.cancel(START - 3 * DAY)  # at the change: W = 3 days, late
    assert w.status(START) == "late_canceled_pending"


def test_settings_change_processed_after_the_cancel_still_moves_it() -> None:
    w = ready()
    w.cancel(START - 2 * DAY)
    assert w.status(START) == "canceled"
    w.settings(START - 5 * DAY, late_cancel_window="P3D")
    assert w.status(START) == "late_canceled_pending"
    w.settings(START - 4 * DAY, late_cancel_window=None)
    assert w.status(START) == "canceled"


def test_auto_confirm_window_in_force_at_the_meeting_end() -> None:
    w = ready()
    w.settings(END, auto_confirm_window="P5D")  # exactly at the end: applies
    assert w.deadline() == END + 5 * DAY
    w2 = ready()
    w2.settings(END + US, auto_confirm_window="P5D")  # after the end: does not
    assert w2.deadline() == END + 3 * DAY


def test_deadline_change_processed_late_moves_auto_confirmation_but_not_decisions() -> None:
    w = ready()
    w.schedule("m2")
    assert kind(w.confirm(END + 2 * DAY)) == (APPLIED, None)  # in time under P3D
    w.settings(START - DAY, auto_confirm_window="PT24H")
    assert w.deadline("m2") == END + DAY
    assert w.status(END + DAY, "m2") == "auto_confirmed"
    assert w.status(END + DAY) == "confirmed"  # the answer accepted earlier stands
    assert kind(w.confirm(END + 2 * DAY, mid="m2")) == (REJECTED, R.CONFIRMATION_WINDOW_CLOSED)


def test_settings_tie_on_occurred_at_later_processed_wins() -> None:
    w = ready()
    w.settings(START - 5 * DAY, late_cancel_window="P3D")
    w.settings(START - 5 * DAY, late_cancel_window="PT1H")
    w.cancel(START - 2 * HOUR)
    assert w.status(START) == "canceled"
    w.settings(START - 5 * DAY, late_cancel_window="P3D")
    assert w.status(START) == "late_canceled_pending"


def test_settings_update_carries_only_its_own_fields() -> None:
    w = ready()
    w.settings(START - 5 * DAY, late_cancel_window="P3D")
    w.settings(START - 4 * DAY, authorized_hours=3)  # no late_cancel_window: P3D still holds
    w.cancel(START - 2 * DAY)
    assert w.status(START) == "late_canceled_pending"
    assert w.deadline() == DEADLINE


def test_creation_values_hold_until_the_first_update_even_if_it_is_dated_before_creation() -> None:
    w = ready()
    w.settings("2025-12-01T00:00:00Z", late_cancel_window="PT1H")  # before program.created's time
    w.cancel(START - 2 * HOUR)
    assert w.status(START) == "canceled"


def test_program_admin_cannot_change_settings() -> None:
    w = ready()
    assert kind(w.settings(START - 5 * DAY, late_cancel_window="P3D", role="program_admin")) == (
        REJECTED,
        R.FORBIDDEN,
    )


# ================================================================================ organization switch


def test_switch_counts_in_processing_order_and_only_for_later_programs() -> None:
    w = World()
    assert kind(w.program("p0")) == (REJECTED, R.SESSION_MANAGEMENT_DISABLED)  # off by default
    w.send("organization.session_management_set", "2030-01-01T00:00:00Z", enabled=True)
    assert kind(w.program("p1", at="2020-01-01T00:00:00Z")) == (APPLIED, None)  # event time irrelevant
    w.send("organization.session_management_set", "2019-01-01T00:00:00Z", enabled=False)
    assert kind(w.program("p2")) == (REJECTED, R.SESSION_MANAGEMENT_DISABLED)
    assert kind(w.schedule(program="p1")) == (APPLIED, None)  # existing program unaffected
    w.org(True)
    assert kind(w.program("p2")) == (APPLIED, None)


def test_only_support_switches() -> None:
    w = World()
    assert kind(w.org(True, role="program_admin")) == (REJECTED, R.FORBIDDEN)
    assert kind(w.program()) == (REJECTED, R.SESSION_MANAGEMENT_DISABLED)


def test_switch_per_org() -> None:
    w = World()
    w.org(True, org="org-1")
    assert kind(w.program("p", org="org-2")) == (REJECTED, R.SESSION_MANAGEMENT_DISABLED)


# ======================================================================================== waiting


def test_waiting_events_are_retried_in_arrival_order_when_the_program_arrives() -> None:
    w = World()
    w.org()
    w.cancel(START - HOUR, event_id="a")  # waits for the program, then for the meeting
    w.schedule(event_id="b")  # waits for the program
    w.confirm(END, event_id="c")  # waits for the program
    w.program()
    assert [(o.event_id, o.kind, o.reason) for o in w.outcomes] == [
        ("ev-5", APPLIED, None),
        ("a", PARKED, R.UNKNOWN_MEETING),
        ("b", APPLIED, None),
        ("a", APPLIED, None),  # released by b, before c (arrival order)
        ("c", REJECTED, R.INVALID_TRANSITION),  # the meeting was canceled first
    ]
    assert w.status(START) == "late_canceled_pending"
    assert not w.state.parked and not w.state.waiting


def test_waiting_reschedule_creates_the_meeting_others_wait_for() -> None:
    w = World()
    w.org()
    w.program()
    w.confirm(START + 2 * DAY + HOUR, mid="m2", event_id="c2")  # waits for m2
    w.reschedule(START - 2 * DAY, new="m2", event_id="r")  # waits for m1
    w.schedule(event_id="s")
    assert [(o.event_id, o.kind) for o in w.outcomes] == [("s", APPLIED), ("r", APPLIED), ("c2", APPLIED)]
    assert w.status(DEADLINE + 9 * DAY, "m2") == "confirmed"


def test_a_rejected_creation_releases_nobody() -> None:
    w = World()
    w.schedule()  # waits for prog-1
    assert kind(w.program()) == (REJECTED, R.SESSION_MANAGEMENT_DISABLED)
    assert len(w.state.parked) == 1


def test_retried_event_meets_a_program_with_verification_off() -> None:
    w = World()
    w.org()
    w.schedule(path="path-z")
    w.program(verification=False, acw=None)
    assert [o.kind for o in w.outcomes] == [APPLIED, SKIPPED]
    assert w.state.paths["path-z"].program_id == "prog-1"


def test_expired_waiting_events_are_rejected_in_arrival_order() -> None:
    w = World()
    w.org()
    w.program()
    w.confirm(END, mid="ghost", event_id="g")
    w.schedule(program="prog-9", path="path-9", event_id="p")
    w.cancel(START, mid="ghost2", event_id="g2")
    out = expire_parked(w.state, lambda item: True)
    assert [(o.event_id, o.reason, o.ref) for o in out] == [
        ("g", R.UNKNOWN_MEETING, 3),
        ("p", R.UNKNOWN_PROGRAM, 4),
        ("g2", R.UNKNOWN_MEETING, 5),
    ]
    assert not w.state.parked and not w.state.waiting


def test_expire_only_what_the_predicate_selects() -> None:
    w = World()
    w.org()
    w.program()
    w.confirm(END, mid="ghost", event_id="g")
    w.confirm(END, mid="ghost2", event_id="g2")
    out = expire_parked(w.state, lambda item: item.event.event_id == "g2")
    assert [o.event_id for o in out] == ["g2"]
    w.schedule("ghost")
    assert [(o.event_id, o.kind) for o in w.outcomes] == [("ev-5", APPLIED), ("g", APPLIED)]


# ===================================================================================== duplicates


@pytest.mark.parametrize("first", ["applied", "rejected", "forbidden", "parked", "skipped", "schema"])
def test_a_redelivered_event_id_is_a_duplicate_whatever_became_of_the_first(first: str) -> None:
    w = World()
    w.org()
    w.program()
    w.program("off", verification=False, acw=None)
    if first == "applied":
        w.schedule(event_id="x")
    elif first == "rejected":
        w.schedule(event_id="x", org="org-2")
    elif first == "forbidden":
        w.schedule(event_id="x", role="support")
    elif first == "parked":
        w.cancel(START, event_id="x")
    elif first == "skipped":
        w.schedule(event_id="x", program="off", path="path-off")
    else:
        w.schedule(event_id="x", start=END, end=START)
    meetings_before = set(w.state.meetings)
    for _ in range(3):
        out = w.schedule("m9", event_id="x")  # different content, same id
        assert (out.kind, out.event_id) == (DUPLICATE, "x")
    assert set(w.state.meetings) == meetings_before


def test_a_parked_event_delivered_again_is_applied_once() -> None:
    w = World()
    w.org()
    w.program()
    w.confirm(END, event_id="c")
    w.confirm(END, event_id="c")
    w.schedule()
    assert [o.kind for o in w.outcomes] == [APPLIED, APPLIED]
    assert w.status(END) == "confirmed"
    assert kind(w.confirm(END, event_id="c")) == (DUPLICATE, None)


# =============================================================================== path registration


def test_path_registered_by_the_first_applied_or_skipped_event() -> None:
    w = World()
    w.org()
    w.program()
    w.program("p2")
    w.send("path.authorized_hours_set", authorized_hours=None)
    assert w.state.paths["path-1"].program_id == "prog-1"
    assert kind(w.schedule(program="p2")) == (REJECTED, R.TENANT_MISMATCH)


def test_version_counts_applied_events_touching_the_path() -> None:
    w = ready()
    w.cancel(END)  # rejected: no change
    w.confirm(END)
    w.send("path.authorized_hours_set", authorized_hours=3)
    assert w.state.paths["path-1"].changes == 3


# ============================================================================ decisions (docs/policy.md)


def test_events_of_a_meeting_are_not_compared_with_the_schedule_time() -> None:
    """Decision 23: a cancel dated before its meeting.scheduled's own occurred_at is accepted."""
    w = World()
    w.org()
    w.program()
    w.schedule(at="2026-03-05T00:00:00Z")
    assert kind(w.cancel("2026-03-01T00:00:00Z")) == (APPLIED, None)
    assert w.status(START) == "canceled"


def test_dispute_stays_open_when_a_late_settings_change_unlates_the_cancel() -> None:
    """Decision 25."""
    w = late_canceled()  # canceled at START - 1 h under a 24 h window
    w.dispute(START, "facilitator")
    w.settings(START - 5 * DAY, late_cancel_window=None)
    assert w.status(START) == "canceled"
    assert w.state.meetings["m1"].dispute_open
    assert kind(w.resolve(START + HOUR, "upheld")) == (APPLIED, None)
    assert w.status(START + 2 * HOUR) == "canceled"  # waiving a cancel that is not late changes nothing


def test_meeting_ids_of_skipped_events_are_not_used() -> None:
    """Decision 19."""
    w = World()
    w.org()
    w.program("off", verification=False, acw=None)
    w.program("on")
    assert kind(w.schedule("m1", program="off", path="path-off")) == (SKIPPED, None)
    assert kind(w.schedule("m1", program="on", path="path-on")) == (APPLIED, None)


def test_program_hours_update_dated_before_creation_still_wins() -> None:
    """Decision 26."""
    w = ready()
    w.settings("2025-06-01T00:00:00Z", authorized_hours=3)
    assert w.state.programs["prog-1"].authorized_hours_in_force() == 3


def test_program_hours_latest_in_event_time_ties_to_later_processed() -> None:
    w = ready()
    w.settings("2026-03-05T00:00:00Z", authorized_hours=20)
    w.settings("2026-03-04T00:00:00Z", authorized_hours=40)  # older: not in force
    assert w.state.programs["prog-1"].authorized_hours_in_force() == 20
    w.settings("2026-03-05T00:00:00Z", authorized_hours=None)  # tie: later processed wins
    assert w.state.programs["prog-1"].authorized_hours_in_force() is None
