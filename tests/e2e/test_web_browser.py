"""The Session Management screens in a real browser, through the real Kafka, PostgreSQL and a worker.

The tests run in order and tell one story on one pipeline (see conftest.py): the support desk switches
the organization on; a program admin creates a program on the Configurations screen; the scheduling
system publishes meetings; the Meetings tab shows the figures `replay` gives for the same events; a
participant gets no Edit icon and a forged Edit request is refused (403) and never reaches Kafka; the
admin edits the path's hours with a private note and the participant's open page updates by itself,
without the note, remaining going negative and red; answers, disputes and resolutions go through the
pipeline; a refusal by the pipeline is shown to the user who caused it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from typing import Any

import pytest

from domain.replay import replay
from domain.timefmt import DAY, HOUR, MINUTE, format_instant, instant_from_datetime
from tests.e2e.conftest import E2E, signed_in
from tests.integration.pipeline_helpers import publish_lines, read_raw_topic, wait_idle, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

PATH, OTHER_PATH = "path-e2e-1", "path-e2e-2"
RED = "rgb(192, 38, 45)"


def _run(coro: Any) -> Any:
    """Run a coroutine to its end in a thread of its own (Playwright's sync API owns this thread's loop)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _now() -> int:
    from datetime import UTC, datetime

    return instant_from_datetime(datetime.now(UTC))


def _meeting_lines(e2e: E2E, program_id: str, now: int) -> list[bytes]:
    """The scheduling system's events: 2 h auto-confirmed, 2 h confirmed, 1.5 h did not occur, 1 h
    awaiting confirmation, 1 h upcoming, 1 h late canceled (pending), 1 h canceled in time; one meeting
    on another path."""
    n = 0

    def ev(t: int, path: str, kind: str, actor: tuple[str, str], data: dict[str, Any]) -> bytes:
        nonlocal n
        n += 1
        doc = {
            "event_id": f"e2e-{uuid.uuid4()}",
            "type": kind,
            "schema_version": 1,
            "occurred_at": format_instant(t),
            "org_id": e2e.org,
            "program_id": program_id,
            "path_id": path,
            "actor": {"id": actor[0], "role": actor[1]},
            "data": data,
        }
        return json.dumps(doc).encode()

    system, pat = ("scheduler", "system"), ("pat", "participant")
    lines = []
    meetings = {
        "m1": (now - 10 * DAY, 120),
        "m2": (now - 9 * DAY, 120),
        "m3": (now - 8 * DAY, 90),
        "m4": (now - 2 * HOUR, 60),
        "m5": (now + 2 * DAY, 60),
        "m6": (now + 3 * HOUR, 60),
        "m7": (now + 5 * DAY, 60),
    }
    for mid, (start, minutes) in meetings.items():
        data = {"meeting_id": mid, "start": format_instant(start), "end": format_instant(start + minutes * MINUTE)}
        lines.append(ev(now - 20 * DAY, PATH, "meeting.scheduled", system, data))
    m2_end, m3_end = now - 9 * DAY + 120 * MINUTE, now - 8 * DAY + 90 * MINUTE
    lines.append(ev(m2_end + HOUR, PATH, "meeting.confirmation_submitted", pat, {"meeting_id": "m2", "occurred": True}))
    lines.append(
        ev(m3_end + HOUR, PATH, "meeting.confirmation_submitted", pat, {"meeting_id": "m3", "occurred": False})
    )
    lines.append(ev(now - 10 * MINUTE, PATH, "meeting.canceled", pat, {"meeting_id": "m6"}))
    lines.append(ev(now - DAY, PATH, "meeting.canceled", pat, {"meeting_id": "m7"}))
    data = {"meeting_id": "o1", "start": format_instant(now - 5 * DAY), "end": format_instant(now - 5 * DAY + HOUR)}
    lines.append(ev(now - 20 * DAY, OTHER_PATH, "meeting.scheduled", system, data))
    return lines


async def _input_records(e2e: E2E) -> list[bytes]:
    """Everything published to the input topics so far, in an order in which it was published: the
    admin topic first (one org: one partition), then the path topic partition by partition (a path's
    events share a partition, so their order is kept)."""
    t, bootstrap = e2e.settings.topics, e2e.settings.kafka_bootstrap_servers
    admin = await read_raw_topic(bootstrap, t.admin_events)
    paths = await read_raw_topic(bootstrap, t.path_events)
    return [r["value"] for r in admin] + [r["value"] for r in paths]


def _replayed_tally(e2e: E2E, path_id: str) -> dict[str, Any]:
    lines = _run(_input_records(e2e))
    doc = replay(lines, _now())
    return next(t for t in doc["tallies"] if t["path_id"] == path_id)


def _figures(page: Any) -> dict[str, str | None]:
    return {
        "authorized_hours": page.get_attribute("#fig-authorized", "data-hours"),
        "authorized_source": page.get_attribute("#fig-authorized", "data-source"),
        "used_minutes": page.get_attribute("#fig-used", "data-minutes"),
        "used_hours": page.get_attribute("#fig-used", "data-hours"),
        "remaining_hours": page.get_attribute("#fig-remaining", "data-hours"),
        "pending_minutes": page.get_attribute("#fig-pending", "data-minutes"),
        "upcoming_minutes": page.get_attribute("#fig-upcoming", "data-minutes"),
    }


def _as_shown(tally: dict[str, Any]) -> dict[str, str | None]:
    """A replay tally as the tab's data attributes carry it."""

    def text(value: Any) -> str:
        return "" if value is None else str(value)

    return {
        "authorized_hours": text(tally["authorized_hours"]),
        "authorized_source": text(tally["authorized_source"]),
        "used_minutes": text(tally["used_minutes"]),
        "used_hours": text(tally["used_hours"]),
        "remaining_hours": text(tally["remaining_hours"]),
        "pending_minutes": text(tally["pending_minutes"]),
        "upcoming_minutes": text(tally["upcoming_minutes"]),
    }


def _wait_figures(page: Any, want: dict[str, str | None], what: str) -> None:
    wait_until(lambda: _figures(page) == want, 20, what, interval_s=0.1)


# --------------------------------------------------------------------------------------------- story


def test_support_switches_the_organization_on(browser: Any, e2e: E2E) -> None:
    page = signed_in(browser, e2e, "sue")
    page.goto(e2e.url("/orgs"))
    row = page.locator(f'tr[data-org="{e2e.org}"] .org-state')
    assert row.inner_text() == "Off"  # listed from the users file, never switched yet
    page.locator(f'tr[data-org="{e2e.org}"] button').click()
    # the page shows the change as pending and reloads itself when PostgreSQL shows it
    page.locator(f'tr[data-org="{e2e.org}"] .org-state', has_text="On").wait_for()
    assert "Done: switching session management." in page.locator("#notices").inner_text()
    page.context.close()


def test_admin_creates_a_program_on_the_configurations_screen(browser: Any, e2e: E2E) -> None:
    page = signed_in(browser, e2e, "ada")
    page.goto(e2e.url("/programs/new"))
    assert page.locator("h1").inner_text() == "Configurations"
    labels = page.locator("#late_cancel_window option").all_inner_texts()
    assert labels[0] == "No late cancels" and "24 hours" in labels and "3 days" in labels
    page.fill("#name", "E2E Coaching")
    page.check("#session_verification")
    page.select_option("#late_cancel_window", label="24 hours")
    page.select_option("#auto_confirm_window", label="3 days")
    page.fill("#authorized_hours", "10")
    page.click("#continue")
    page.wait_for_url("**/programs/prog-e2e-coaching-*")
    program_id = page.url.rsplit("/", 1)[1]
    page.locator("#contact-support").wait_for()  # pending page reloads once the program exists
    settings = page.locator("dl.settings").inner_text()
    assert "24 hours" in settings and "3 days" in settings and "10" in settings
    assert "contact the support desk" in page.locator("#contact-support").inner_text()
    assert page.locator("#settings-form").count() == 0  # admins read, only support changes
    e2e.story["program_id"] = program_id
    page.context.close()


def test_meetings_tab_shows_the_figures_replay_gives(browser: Any, e2e: E2E) -> None:
    program_id = e2e.story["program_id"]
    now = _now()
    ends = _run(publish_lines(e2e.settings.kafka_bootstrap_servers, e2e.settings, _meeting_lines(e2e, program_id, now)))
    wait_idle(e2e.settings, ends, timeout_s=30)
    want = _replayed_tally(e2e, PATH)
    assert (want["used_minutes"], want["pending_minutes"], want["upcoming_minutes"]) == (240, 120, 60)
    page = signed_in(browser, e2e, "ada")
    page.goto(e2e.url(f"/paths/{PATH}"))
    _wait_figures(page, _as_shown(want), "the tab's figures equal replay's")
    assert page.locator("#fig-used .value").inner_text() == "4"
    assert page.locator("#fig-remaining .value").inner_text() == "6"
    assert page.locator("#fig-authorized .source").inner_text() == "the program's value"
    statuses = {
        r.get_attribute("data-meeting"): r.get_attribute("data-status") for r in page.locator("tr.meeting").all()
    }
    assert statuses == {
        "m1": "auto_confirmed",
        "m2": "confirmed",
        "m3": "did_not_occur",
        "m4": "unconfirmed",
        "m5": "upcoming",
        "m6": "late_canceled_pending",
    }  # m7 was canceled in time: no longer on the tab
    assert page.locator('tr[data-meeting="m1"] .status').inner_text() == "Confirmed automatically"
    page.context.close()


def test_participant_gets_no_edit_icon_and_a_forged_edit_is_refused(browser: Any, e2e: E2E) -> None:
    page = signed_in(browser, e2e, "pat")
    page.goto(e2e.url(f"/paths/{PATH}"))
    page.locator("#fig-authorized").wait_for()
    assert page.locator("#edit-hours-button").count() == 0
    assert page.locator("dialog#edit-hours").count() == 0
    csrf = page.get_attribute('meta[name="csrf-token"]', "content")
    forged = page.request.post(
        e2e.url(f"/paths/{PATH}/hours"), form={"csrf": csrf, "authorized_hours": "1", "note": "forged"}
    )
    assert forged.status == 403
    assert page.request.get(e2e.url(f"/paths/{OTHER_PATH}")).status == 403  # not a member
    assert page.request.get(e2e.url(f"/programs/{e2e.story['program_id']}/audit")).status == 403
    no_csrf = page.request.post(e2e.url(f"/paths/{PATH}/meetings/m4/answer"), form={"occurred": "yes"})
    assert no_csrf.status == 403
    path_events = _run(read_raw_topic(e2e.settings.kafka_bootstrap_servers, e2e.settings.topics.path_events))
    kinds = [json.loads(r["value"])["type"] for r in path_events]
    assert "path.authorized_hours_set" not in kinds  # the forged Edit never reached Kafka
    assert "meeting.confirmation_submitted" in kinds and kinds.count("meeting.confirmation_submitted") == 2
    page.context.close()


class StreamTap:
    """The raw bytes of one user's event stream of a path, read in a thread with that user's cookie."""

    def __init__(self, e2e: E2E, cookies: list[dict[str, Any]], path_id: str, until: bytes) -> None:
        import httpx

        self.data = b""
        self.done = threading.Event()
        jar = {c["name"]: c["value"] for c in cookies}

        def run() -> None:
            with (
                httpx.Client(cookies=jar, timeout=httpx.Timeout(5.0, read=30.0)) as client,
                client.stream("GET", e2e.url(f"/paths/{path_id}/stream")) as response,
            ):
                assert response.status_code == 200
                for chunk in response.iter_bytes():
                    self.data += chunk
                    if until in self.data:
                        break
            self.done.set()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()


def test_admin_edits_hours_and_the_participants_open_page_updates_without_the_note(browser: Any, e2e: E2E) -> None:
    note = f"PRIVATE-NOTE-{uuid.uuid4().hex}"
    learner = signed_in(browser, e2e, "pat")
    learner.goto(e2e.url(f"/paths/{PATH}"))
    learner.wait_for_function("window.sessionTallyStream !== undefined")
    learner.evaluate("window.__notReloaded = true")
    tap = StreamTap(e2e, learner.context.cookies(), PATH, until=b'data-hours=\\"3.5\\"')

    admin = signed_in(browser, e2e, "ada")
    admin.goto(e2e.url(f"/paths/{PATH}"))
    admin.click("#edit-hours-button")
    dialog = admin.locator("dialog#edit-hours")
    dialog.wait_for(state="visible")
    admin.fill("#edit-hours-value", "3.5")
    admin.fill("#edit-hours-note", note)
    admin.click("#edit-hours-save")
    admin.locator('#fig-authorized[data-hours="3.5"][data-source="path"]').wait_for()
    assert note in admin.locator("#latest-note").inner_text()  # admins see the note on the tab

    # the participant's page redraws itself (no reload) with the new figures, remaining negative and red
    learner.locator('#fig-authorized[data-hours="3.5"]').wait_for()
    assert learner.evaluate("window.__notReloaded") is True
    assert learner.evaluate("window.sessionTallyStream.updates") >= 1
    remaining = learner.locator("#fig-remaining")
    assert remaining.get_attribute("data-hours") == "-0.5"
    assert "negative" in (remaining.get_attribute("class") or "")
    assert learner.locator("#fig-remaining .value").inner_text() == "-0.5"
    assert learner.locator("#fig-remaining .value").evaluate("e => getComputedStyle(e).color") == RED
    assert note not in learner.content()
    assert learner.locator("#latest-note").count() == 0

    assert tap.done.wait(20), f"the participant's stream never carried the new hours: {tap.data[-500:]!r}"
    assert b"3.5" in tap.data and note.encode() not in tap.data and b"PRIVATE-NOTE" not in tap.data
    assert _figures(learner) == _as_shown(_replayed_tally(e2e, PATH))

    admin.goto(e2e.url(f"/programs/{e2e.story['program_id']}/audit"))
    row = admin.locator("#audit tr[data-kind=path_note]").first
    assert note in row.inner_text() and "ada" in row.inner_text() and "3.5" in row.inner_text()
    learner.context.close()
    admin.context.close()


def test_answers_disputes_and_resolutions_go_through_the_pipeline(browser: Any, e2e: E2E) -> None:
    learner = signed_in(browser, e2e, "pat")
    learner.goto(e2e.url(f"/paths/{PATH}"))
    row = learner.locator('tr[data-meeting="m4"]')
    assert "Did this meeting occur?" in row.inner_text()
    row.locator('button[value="yes"]').click()
    learner.locator('tr[data-meeting="m4"][data-status="confirmed"]').wait_for()
    assert learner.locator("#fig-used").get_attribute("data-minutes") == "300"

    coach = signed_in(browser, e2e, "fay")
    coach.goto(e2e.url(f"/paths/{PATH}"))
    coach.locator('tr[data-meeting="m6"] summary').click()
    coach.fill('tr[data-meeting="m6"] textarea[name=comment]', "agreed by phone")
    coach.locator('tr[data-meeting="m6"] button[type=submit]').click()
    coach.locator('tr[data-meeting="m6"][data-disputed="true"] .badge.disputed').wait_for()

    admin = signed_in(browser, e2e, "ada")
    admin.goto(e2e.url(f"/paths/{PATH}"))
    admin.locator('tr[data-meeting="m6"] summary').click()
    admin.locator('tr[data-meeting="m6"] button[value="upheld"]').click()
    admin.locator('tr[data-meeting="m6"][data-status="late_cancel_waived"]').wait_for()
    # the coach's open page followed, without the comment or the resolution note
    coach.locator('tr[data-meeting="m6"][data-status="late_cancel_waived"]').wait_for()
    assert "agreed by phone" not in coach.content()
    assert _figures(admin) == _as_shown(_replayed_tally(e2e, PATH))
    for page in (learner, coach, admin):
        page.context.close()


def test_a_refusal_by_the_pipeline_is_shown_to_the_user_who_caused_it(browser: Any, e2e: E2E) -> None:
    learner = signed_in(browser, e2e, "pat")
    learner.goto(e2e.url(f"/paths/{PATH}"))
    learner.wait_for_function("window.sessionTallyStream !== undefined")
    csrf = learner.get_attribute('meta[name="csrf-token"]', "content")
    # a stale page would still offer the answer: the web app publishes it, the pipeline refuses it
    sent = learner.request.post(
        e2e.url(f"/paths/{PATH}/meetings/m4/answer"), form={"csrf": csrf, "occurred": "no"}, max_redirects=0
    )
    assert sent.status == 303
    notice = learner.locator("#notices .notice.rejected")
    notice.wait_for()
    assert "this meeting was already answered" in notice.inner_text()
    other = signed_in(browser, e2e, "ada")
    other.goto(e2e.url(f"/paths/{PATH}"))
    assert other.locator("#notices .notice.rejected").count() == 0  # only its author is told
    assert learner.locator('tr[data-meeting="m4"]').get_attribute("data-status") == "confirmed"  # unchanged
    learner.context.close()
    other.context.close()


def test_only_the_support_desk_changes_program_settings(browser: Any, e2e: E2E) -> None:
    program_id = e2e.story["program_id"]
    admin = signed_in(browser, e2e, "ada")
    csrf = admin.get_attribute('meta[name="csrf-token"]', "content")
    refused = admin.request.post(
        e2e.url(f"/programs/{program_id}/settings"),
        form={"csrf": csrf, "late_cancel_window": "PT24H", "auto_confirm_window": "P3D", "authorized_hours": "50"},
    )
    assert refused.status == 403 and "contact the support desk" in refused.text()
    support = signed_in(browser, e2e, "sue")
    support.goto(e2e.url(f"/programs/{program_id}"))
    support.fill("#authorized_hours", "12")
    support.select_option("#late_cancel_window", label="No late cancels")
    support.click("#settings-form button[type=submit]")
    # pending, then the page reloads itself once PostgreSQL shows the new settings history
    support.locator("#notices .notice.done", has_text="changing the program settings").wait_for()
    support.locator('#authorized_hours[value="12"]').wait_for()  # the reloaded page, server-rendered
    assert support.input_value("#late_cancel_window") == ""  # No late cancels
    # the pipeline republished the tally of the path without an override; the path with one kept it
    other = support.locator(f'tr:has(a[href="/paths/{OTHER_PATH}"]) td.num').first
    wait_until(
        lambda: (support.reload() or True) and other.inner_text() == "12", 20, "path-e2e-2 at 12 h", interval_s=0.5
    )
    assert support.locator(f'tr:has(a[href="/paths/{PATH}"]) td.num').first.inner_text() == "3.5"
    admin.goto(e2e.url(f"/programs/{program_id}"))
    assert "No late cancels" in admin.locator("dl.settings").inner_text()
    for page in (admin, support):
        page.context.close()
