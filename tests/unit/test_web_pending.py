"""Pending changes end when the pipeline's answer comes back: its effect in what it published, or its
rejection (matched by event id, told to its author only, in plain words)."""

from __future__ import annotations

from typing import Any

from domain.model import Program, SettingsUpdate
from web.pending import Change, Pending
from web.view import View


def _change(event_type: str, data: dict[str, Any], **ids: Any) -> Change:
    fields = {"program_id": "prog-1", "path_id": "path-1", "meeting_id": data.get("meeting_id")} | ids
    return Change(f"ev-{event_type}", "ada", event_type, "org-1", occurred_at=1000, data=data, **fields)


def _view(source: str | None, hours: Any, status: str = "unconfirmed", disputed: bool = False) -> View:
    view = View()
    view.apply_tally({"path_id": "path-1", "program_id": "prog-1", "org_id": "org-1", "version": 1,
                      "authorized_source": source, "authorized_hours": hours})  # fmt: skip
    view.apply_status({"path_id": "path-1", "meeting_id": "m1", "version": 1, "status": status,
                       "disputed": disputed})  # fmt: skip
    return view


def test_an_hours_change_settles_when_the_tally_shows_it() -> None:
    pending = Pending()
    change = _change("path.authorized_hours_set", {"authorized_hours": 3.5})
    pending.add(change)
    assert pending.settle_path("path-1", _view("program", 10)) == []
    assert pending.settle_path("path-1", _view("path", 4)) == []
    assert pending.settle_path("path-1", _view("path", 3.5)) == [change]
    assert change.state == "done" and pending.open() == []
    back = _change("path.authorized_hours_set", {"authorized_hours": None})
    pending.add(back)
    assert pending.settle_path("path-1", _view("path", 3.5)) == []
    assert pending.settle_path("path-1", _view("program", 10)) == [back]


def test_meeting_changes_settle_on_the_published_status() -> None:
    pending = Pending()
    answer = _change("meeting.confirmation_submitted", {"meeting_id": "m1", "occurred": False})
    dispute = _change("meeting.disputed", {"meeting_id": "m1"})
    pending.add(answer)
    pending.add(dispute)
    assert pending.settle_path("path-1", _view(None, None, "confirmed")) == []  # not what was asked
    assert pending.settle_path("path-1", _view(None, None, "did_not_occur", disputed=True)) == [answer, dispute]


def test_admin_changes_settle_on_what_postgresql_shows() -> None:
    pending = Pending()
    created = _change("program.created", {}, path_id=None)
    switched = _change("organization.session_management_set", {"enabled": True}, path_id=None, program_id=None)
    updated = _change("program.settings_updated", {"authorized_hours": 5}, path_id=None)
    for c in (created, switched, updated):
        pending.add(c)
    program = Program("prog-1", "org-1", True, None, 3600, None, created_at=999)
    assert pending.settle_admin({"org-1": False}, {"prog-1": program}) == []  # another creation time
    program.created_at = 1000
    program.updates = [SettingsUpdate(occurred_at=1000, authorized_hours=None)]
    assert pending.settle_admin({"org-1": True}, {"prog-1": program}) == [created, switched, updated]


def test_a_rejection_is_told_to_its_author_in_plain_words() -> None:
    pending = Pending()
    change = _change("meeting.confirmation_submitted", {"meeting_id": "m1", "occurred": True})
    pending.add(change)
    assert pending.rejected({"event_id": "someone-else", "reason": "forbidden"}) is None
    assert pending.rejected({"event_id": change.event_id, "reason": "already_answered"}) is change
    assert pending.rejected({"event_id": change.event_id, "reason": "already_answered"}) is None  # told once
    (notice,) = pending.user_notices("ada")
    assert notice.kind == "rejected" and "this meeting was already answered" in notice.text
    assert pending.user_notices("pat") == [] and pending.open() == []
