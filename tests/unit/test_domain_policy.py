"""The policy rules, part 2: disputes (SPEC section 4.4), the program policy in event time (section 2),
the org switch, waiting events, duplicates and the decisions of docs/policy.md."""

from __future__ import annotations

import pytest

from domain import reasons as R
from domain.engine import (
    APPLIED,
    DUPLICATE,
    PARKED,
    REJECTED,
    SKIPPED,
    expire_parked,
)
from domain.lifecycle import next_change_at
from domain.timefmt import DAY, HOUR
from tests.unit.rules_world import DEADLINE, END, START, US, World, kind, ready


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
