"""What one user sees on a path's Meetings tab, built from the view (tally and statuses as published).

Which actions are *offered* follows the roles table of SPEC section 3 (``ALLOWED_ROLES``) and the
dispute rules of SPEC section 4.4 on the published status; offering is a convenience, not a decision:
the pipeline judges every change and a refusal comes back as a notice.

Admin-only text (the path's latest note) is added to the context only for users who are admins of the
path's organization, so a participant's page and event stream never carry it.
"""

from __future__ import annotations

from typing import Any

from domain import events as E
from domain.timefmt import parse_instant
from web.bus import now_us
from web.users import User
from web.view import PathView
from web.wording import HIDDEN_STATUSES


def can_edit_hours(user: User, pv: PathView) -> bool:
    return user.role in E.ALLOWED_ROLES[E.PATH_HOURS_SET] and user.sees_org(pv.org_id)


def can_read_admin_text(user: User, org_id: str) -> bool:
    return user.is_admin and user.sees_org(org_id)


def offered(user: User, pv: PathView, meeting: dict[str, Any]) -> list[str]:
    """The actions shown for one meeting: "answer", "dispute", "resolve"."""
    status, disputed = meeting["status"], meeting["disputed"]
    actions = []
    if status == "unconfirmed" and user.role in E.ALLOWED_ROLES[E.CONFIRMATION]:
        actions.append("answer")
    may_dispute = (user.role == "facilitator" and status == "late_canceled_pending") or (
        user.role == "participant" and status == "late_canceled"
    )
    if not disputed and may_dispute and user.role in E.ALLOWED_ROLES[E.DISPUTED]:
        actions.append("dispute")
    if disputed and user.role in E.ALLOWED_ROLES[E.DISPUTE_RESOLVED] and user.sees_org(pv.org_id):
        actions.append("resolve")
    return actions


def tab_context(
    user: User, pv: PathView, pending: list[Any], latest_note: Any = None, now: int | None = None
) -> dict[str, Any]:
    """The template context of ``_tab.html`` for ``user`` (``pending``: the user's open changes of
    this path; ``latest_note``: the path's latest note, passed only for admins). Meetings are listed
    as upcoming (starting after ``now``, default the wall clock) and past; the statuses are the
    published ones."""
    shown = [m for m in pv.meetings.values() if m["status"] not in HIDDEN_STATUSES]
    starts = {m["meeting_id"]: parse_instant(m["start"]) for m in shown}
    now = now_us() if now is None else now
    ahead = [m for m in shown if starts[m["meeting_id"]] > now]  # also a late-canceled meeting of tomorrow
    upcoming = sorted(ahead, key=lambda m: starts[m["meeting_id"]])
    past = sorted((m for m in shown if m not in ahead), key=lambda m: starts[m["meeting_id"]], reverse=True)
    pending_meetings = {c.meeting_id: c for c in pending if c.meeting_id}
    pending_hours = next((c for c in reversed(pending) if c.type == E.PATH_HOURS_SET), None)
    return {
        "pv": pv,
        "tally": pv.tally,
        "upcoming": upcoming,
        "past": past,
        "actions": {m["meeting_id"]: offered(user, pv, m) for m in shown},
        "pending_meetings": pending_meetings,
        "pending_hours": pending_hours,
        "can_edit": can_edit_hours(user, pv),
        "latest_note": latest_note if can_read_admin_text(user, pv.org_id) else None,
        "user": user,
    }
