"""The policy rules, part 1: references (SPEC section 7, check 5 and its order) and the meeting
lifecycle (section 4) with every inclusive boundary: cancels, reschedules, confirmations."""

from __future__ import annotations

import pytest

from domain import reasons as R
from domain.engine import (
    APPLIED,
    PARKED,
    REJECTED,
    SKIPPED,
)
from domain.lifecycle import next_change_at
from domain.timefmt import DAY, HOUR, MINUTE
from tests.unit.rules_world import DEADLINE, END, START, US, W, World, kind, ready


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
