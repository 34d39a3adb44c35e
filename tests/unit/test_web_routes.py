"""The web app's role rules and privacy, without Kafka or PostgreSQL: the app is built without its
lifespan (nothing connects), the view is filled by hand, the writer and the audit read are replaced
by recorders. The same rules are driven through a real browser and the real pipeline in tests/e2e."""

from __future__ import annotations

import json
import re
import warnings
from decimal import Decimal
from typing import Any

import pytest

with warnings.catch_warnings():  # Starlette 1.x suggests another httpx package for its test client
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from session_tally.config import Settings
from storage.reads import AuditRow
from web import routes_pages
from web.app import create_app
from web.bus import Writer
from web.users import Users, hash_password

NOTE = "PRIVATE-note-about-the-budget"


def _users() -> Users:
    def user(uid: str, role: str, **more: Any) -> dict[str, Any]:
        return {"id": uid, "role": role, "password_hash": hash_password(uid + "-pw"), **more}

    return Users.from_document(
        {
            "user": [
                user("ada", "program_admin", orgs=["org-1"]),
                user("pat", "participant", paths=["path-1"]),
                user("fay", "facilitator", paths=["path-1"]),
                user("sue", "support"),
            ]
        }
    )


class Recorder(Writer):
    """The real writer (envelopes built and validated by the domain's models), sending to a list."""

    def __init__(self, pending: Any) -> None:
        super().__init__(Settings(), pending)
        self.sent: list[tuple[str, bytes, dict[str, Any]]] = []

    async def _send(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent.append((topic, key, json.loads(value)))

    @property
    def calls(self) -> list[tuple[Any, ...]]:
        return [
            (
                d["actor"]["id"],
                d["actor"]["role"],
                d["type"],
                d["org_id"],
                d["data"],
                {k: d[k] for k in ("program_id", "path_id") if k in d},
            )
            for _topic, _key, d in self.sent
        ]


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch) -> Any:
    application = create_app(Settings(), _users(), secret="test-secret")
    web = application.state.web
    web.view.ready = True
    web.view.apply_tally(
        {
            "path_id": "path-1",
            "program_id": "prog-1",
            "org_id": "org-1",
            "authorized_hours": 10,
            "authorized_source": "path",
            "used_minutes": 720,
            "pending_minutes": 60,
            "upcoming_minutes": 60,
            "used_hours": 12,
            "remaining_hours": -2,
            "meetings_by_status": {},
            "version": 3,
            "as_of": "2026-03-10T12:00:00Z",
        }
    )
    web.view.apply_tally(
        {
            "path_id": "path-2",
            "program_id": "prog-1",
            "org_id": "org-1",
            "authorized_hours": None,
            "authorized_source": None,
            "used_minutes": 0,
            "pending_minutes": 0,
            "upcoming_minutes": 0,
            "used_hours": 0,
            "remaining_hours": None,
            "meetings_by_status": {},
            "version": 1,
            "as_of": "2026-03-10T12:00:00Z",
        }
    )
    web.view.apply_status(
        {
            "meeting_id": "m1",
            "path_id": "path-1",
            "program_id": "prog-1",
            "org_id": "org-1",
            "status": "unconfirmed",
            "disputed": False,
            "start": "2026-03-10T10:00:00Z",
            "end": "2026-03-10T11:00:00Z",
            "minutes": 60,
            "version": 1,
            "as_of": "2026-03-10T12:00:00Z",
        }
    )
    web.writer = Recorder(web.pending)

    async def audit(_engine: Any, path_ids: list[str], limit: int = 500) -> list[AuditRow]:
        return [AuditRow("path_note", "e0", "path-1", None, "ada", "program_admin", 0, NOTE, None, Decimal(10))]

    monkeypatch.setattr(routes_pages.reads, "audit", audit)
    return application


def _client(app: Any, user: str) -> tuple[TestClient, str]:
    client = TestClient(app)  # not as a context manager: the lifespan (Kafka, PostgreSQL) never runs
    page = client.get("/login")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    signed = client.post("/login", data={"user": user, "password": user + "-pw", "csrf": csrf}, follow_redirects=False)
    assert signed.status_code == 303, signed.text
    home = client.get("/")
    return client, re.search(r'name="csrf-token" content="([^"]+)"', home.text).group(1)  # type: ignore[union-attr]


def test_sign_in_needs_the_right_password_and_a_csrf_token(app: Any) -> None:
    client = TestClient(app)
    assert client.get("/", follow_redirects=False).status_code == 303  # to /login
    page = client.get("/login")
    csrf = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    assert client.post("/login", data={"user": "pat", "password": "pat-pw"}).status_code == 403  # no token
    wrong = client.post("/login", data={"user": "pat", "password": "nope", "csrf": csrf})
    assert wrong.status_code == 400 and "Wrong user name or password" in wrong.text
    assert "session_tally" not in wrong.cookies or "user" not in wrong.text


def test_the_participant_gets_no_edit_icon_and_no_admin_text(app: Any) -> None:
    client, _csrf = _client(app, "pat")
    page = client.get("/paths/path-1")
    assert page.status_code == 200
    assert 'id="fig-remaining"' in page.text and "negative" in page.text
    assert "edit-hours-button" not in page.text and 'id="edit-hours"' not in page.text
    assert NOTE not in page.text
    assert "Did this meeting occur?" in page.text  # participants answer
    assert client.get("/paths/path-2").status_code == 403  # not a member
    assert client.get("/programs/new").status_code == 403
    assert client.get("/orgs").status_code == 403


def test_the_admin_gets_the_edit_icon_and_the_note(app: Any) -> None:
    client, _csrf = _client(app, "ada")
    page = client.get("/paths/path-1")
    assert "edit-hours-button" in page.text and 'id="edit-hours"' in page.text and NOTE in page.text
    assert client.get("/paths/path-2").status_code == 200  # every path of the admin's org


def test_a_forged_edit_from_a_participant_is_refused_and_never_published(app: Any) -> None:
    client, csrf = _client(app, "pat")
    forged = client.post("/paths/path-1/hours", data={"csrf": csrf, "authorized_hours": "99", "note": "x"})
    assert forged.status_code == 403
    coach, coach_csrf = _client(app, "fay")
    assert coach.post("/paths/path-1/hours", data={"csrf": coach_csrf, "authorized_hours": "99"}).status_code == 403
    assert app.state.web.writer.calls == []


def test_the_actor_is_the_signed_in_user_never_a_form_field(app: Any) -> None:
    client, csrf = _client(app, "ada")
    sent = client.post(
        "/paths/path-1/hours",
        data={"csrf": csrf, "authorized_hours": "12.5", "note": "ok", "actor_id": "sue", "role": "support"},
        follow_redirects=False,
    )
    assert sent.status_code == 303
    assert app.state.web.writer.calls == [
        (
            "ada",
            "program_admin",
            "path.authorized_hours_set",
            "org-1",
            {"authorized_hours": 12.5, "note": "ok"},
            {"program_id": "prog-1", "path_id": "path-1"},
        )
    ]
    topic, key, doc = app.state.web.writer.sent[0]
    assert (topic, key) == ("session-mgmt.path-events", b"path-1")  # path events keyed by path_id
    assert re.fullmatch(r"[0-9a-f-]{36}", doc["event_id"]) and doc["occurred_at"].endswith("Z")
    assert app.state.web.pending.for_path("ada", "path-1")[0].event_id == doc["event_id"]
    assert 'id="hours-pending"' in client.get("/paths/path-1").text  # shown as pending to its author
    learner, _ = _client(app, "pat")
    assert 'id="hours-pending"' not in learner.get("/paths/path-1").text  # and to nobody else
    assert client.post("/paths/path-1/hours", data={"authorized_hours": "1"}).status_code == 403  # no CSRF


def test_invalid_values_are_refused_before_anything_is_published(app: Any) -> None:
    client, csrf = _client(app, "ada")
    too_precise = client.post("/paths/path-1/hours", data={"csrf": csrf, "authorized_hours": "1.234"})
    assert too_precise.status_code == 400 and "at most 2 decimals" in too_precise.text
    assert client.post("/paths/path-1/hours", data={"csrf": csrf, "authorized_hours": "abc"}).status_code == 400
    assert app.state.web.writer.calls == []


def test_participant_answers_and_support_switches_orgs(app: Any) -> None:
    client, csrf = _client(app, "pat")
    sent = client.post(
        "/paths/path-1/meetings/m1/answer", data={"csrf": csrf, "occurred": "yes"}, follow_redirects=False
    )
    assert sent.status_code == 303
    assert client.post("/paths/path-1/meetings/m1/resolve", data={"csrf": csrf, "outcome": "upheld"}).status_code == 403
    assert client.post("/orgs", data={"csrf": csrf, "org_id": "org-1", "enabled": "on"}).status_code == 403
    support, support_csrf = _client(app, "sue")
    assert (
        support.post(
            "/orgs", data={"csrf": support_csrf, "org_id": "org-2", "enabled": "on"}, follow_redirects=False
        ).status_code
        == 303
    )
    assert app.state.web.writer.sent[1][:2] == ("session-mgmt.admin-events", b"org-2")  # keyed by org_id
    calls = app.state.web.writer.calls
    assert [(c[0], c[2], c[4]) for c in calls] == [
        ("pat", "meeting.confirmation_submitted", {"meeting_id": "m1", "occurred": True}),
        ("sue", "organization.session_management_set", {"enabled": True}),
    ]


def test_a_change_applied_while_the_program_page_reads_still_reloads_the_page(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The e2e test of the settings form once failed in CI: the pipeline applied the change while the
    program page read the program, so the page showed the old settings with nothing pending, and its
    script never reloaded it. What is pending is read before the program now."""
    from domain.model import Program
    from web.pending import Change

    web = app.state.web
    change = Change("ev-1", "sue", "program.settings_updated", "org-1", "prog-1", None, None, 0, {})
    web.pending.add(change)

    async def program_applied_meanwhile(_engine: Any, program_id: str) -> Program:
        web.pending.done(change)  # the pipeline's answer arrives during the read
        return Program(program_id, "org-1", True, None, 3600, Decimal(10), created_at=0)

    async def no_paths(_engine: Any, _program_id: str) -> list[str]:
        return []

    monkeypatch.setattr(routes_pages.reads, "program", program_applied_meanwhile)
    monkeypatch.setattr(routes_pages.reads, "program_paths", no_paths)
    client, _csrf = _client(app, "sue")
    page = client.get("/programs/prog-1")
    assert page.status_code == 200, page.text
    body = re.search(r"<body[^>]*>", page.text).group(0)  # type: ignore[union-attr]
    assert 'data-reload-on-notice="1"' in body and 'data-pending="1"' in body, body
