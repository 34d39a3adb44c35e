"""The changes (POST): sign-in and out, program creation and settings, the organization switch, a path's
authorized hours, answers, disputes and resolutions.

Each handler: CSRF check (:func:`web.app.checked_form`), then the role and membership check (403 before
anything is published), then the form's values as event data, validated and published by
:class:`web.bus.Writer` with the signed-in user as the actor. The result is a redirect to the page that
shows the change as pending until the pipeline's answer comes back.
"""

from __future__ import annotations

import re
import secrets
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from domain import events as E
from storage import reads
from web.bus import InvalidChange
from web.routes_pages import db_read, settings_in_force, visible_path
from web.state import WebState, checked_form, render, require_user, state
from web.tab import can_edit_hours
from web.users import User
from web.wording import AUTO_CONFIRM_CHOICES, LATE_CANCEL_CHOICES

_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
FIELD_LABELS = {
    "late_cancel_window": "Late-cancellation window (1 hour to 30 days)",
    "auto_confirm_window": "Auto-confirm window (1 hour to 90 days)",
    "authorized_hours": "Authorized hours (0 to 100000, at most 2 decimals)",
    "note": "Note (at most 2000 characters)",
    "comment": "Comment (at most 2000 characters)",
    "program_id": "Program id",
    "org_id": "Organization",
}


class FormError(ValueError):
    pass


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _friendly(detail: str) -> str:
    """A validation detail ("data.authorized_hours: Value error, ...") named after the form's field."""
    where, _, what = detail.partition(": ")
    field = where.split(".")[-1]
    label = FIELD_LABELS.get(field)
    what = what.removeprefix("Value error, ")
    return f"{label}: {what}" if label else detail


def parse_hours(text: str) -> int | float | None:
    """The form's hours ("" = not applicable / back to the program's value) as a JSON number."""
    text = text.strip().replace(",", ".")
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise FormError(f"Authorized hours: {text!r} is not a number") from exc
    if not value.is_finite():
        raise FormError("Authorized hours: not a number")
    return int(value) if value == value.to_integral_value() else float(value)


def parse_duration_choice(form: dict[str, str], name: str, allow_none: bool) -> str | None:
    """A window chosen from the list, or "custom" with a whole number of hours or days."""
    choice = form.get(name, "")
    if choice == "custom":
        amount, unit = form.get(f"{name}_amount", "").strip(), form.get(f"{name}_unit", "hours")
        if not amount.isdigit() or int(amount) < 1:
            raise FormError("A custom window is a whole number of hours or days")
        return f"P{int(amount)}D" if unit == "days" else f"PT{int(amount)}H"
    allowed = {v for _label, v in (LATE_CANCEL_CHOICES if allow_none else AUTO_CONFIRM_CHOICES)}
    if choice not in allowed:
        raise FormError("Choose a window from the list")
    return choice or None


async def _publish(web: WebState, user: User, event_type: str, org_id: str, data: dict[str, Any], **ids: Any) -> Any:
    from aiokafka.errors import KafkaError

    try:
        return await web.writer.publish(user, event_type, org_id, data, **ids)
    except KafkaError as exc:
        raise HTTPException(503, f"Kafka cannot be reached; nothing was sent ({exc})") from exc


# ---------------------------------------------------------------------------------------------- sign-in


async def login(request: Request) -> Response:
    form = await checked_form(request)
    web = state(request)
    user = web.users.authenticate(form.get("user", "").strip(), form.get("password", ""))
    nxt = form.get("next", "/")
    nxt = nxt if nxt.startswith("/") and not nxt.startswith("//") else "/"
    if user is None:
        return render(request, "login.html", status_code=400, error="Wrong user name or password.", next=nxt)
    request.session.clear()
    request.session["user"] = user.id
    request.session["csrf"] = secrets.token_urlsafe(32)
    return _redirect(nxt)


async def logout(request: Request) -> Response:
    await checked_form(request)
    request.session.clear()
    return _redirect("/login")


# ------------------------------------------------------------------------------------------- programs


def _new_program_id(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40] or "program"
    return f"prog-{slug}-{secrets.token_hex(3)}"


async def create_program(request: Request) -> Response:
    user = require_user(request)
    form = await checked_form(request)
    if user.role not in E.ALLOWED_ROLES[E.PROGRAM_CREATED]:
        raise HTTPException(403, "only program admins and the support desk create programs")
    web = state(request)
    org_id = form.get("org_id", "").strip()
    try:
        if not _ID.match(org_id):
            raise FormError("Organization: choose one")
        if not user.sees_org(org_id):
            raise HTTPException(403, f"you are not an admin of organization {org_id}")
        name = form.get("name", "").strip()
        if not name or len(name) > 200:
            raise FormError("Program name: 1 to 200 characters")
        program_id = form.get("program_id", "").strip() or _new_program_id(name)
        if not _ID.match(program_id):
            raise FormError("Program id: 1-128 characters, letters, digits and . _ : -")
        verification = form.get("session_verification") == "on"
        data = {
            "name": name,
            "session_verification": verification,
            "late_cancel_window": parse_duration_choice(form, "late_cancel_window", allow_none=True),
            "auto_confirm_window": parse_duration_choice(form, "auto_confirm_window", allow_none=False),
            "authorized_hours": parse_hours(form.get("authorized_hours", "")),
        }
        await _publish(web, user, E.PROGRAM_CREATED, org_id, data, program_id=program_id)
    except (FormError, InvalidChange) as exc:
        message = _friendly(str(exc)) if isinstance(exc, InvalidChange) else str(exc)
        orgs = sorted(user.orgs) if user.role == "program_admin" else sorted(await db_read(reads.orgs(web.db), {}))
        return render(
            request,
            "configurations.html",
            status_code=400,
            orgs=orgs,
            late_choices=LATE_CANCEL_CHOICES,
            auto_choices=AUTO_CONFIRM_CHOICES,
            form=form,
            error=message,
        )
    return _redirect(f"/programs/{program_id}")


async def update_settings(request: Request) -> Response:
    user = require_user(request)
    form = await checked_form(request)
    if user.role not in E.ALLOWED_ROLES[E.SETTINGS_UPDATED]:
        raise HTTPException(403, "only the support desk changes a program's settings; contact the support desk")
    web = state(request)
    program_id = request.path_params["program_id"]
    program = await db_read(reads.program(web.db, program_id), None)
    if program is None:
        raise HTTPException(404, f"program {program_id} is not known")
    current = settings_in_force(program)
    try:
        late = parse_duration_choice(form, "late_cancel_window", allow_none=True)
        auto = parse_duration_choice(form, "auto_confirm_window", allow_none=False)
        hours = parse_hours(form.get("authorized_hours", ""))
        data: dict[str, Any] = {}
        if _duration_us(late) != current["late_cancel_window"]:
            data["late_cancel_window"] = late
        if program.session_verification and _duration_us(auto) != current["auto_confirm_window"]:
            data["auto_confirm_window"] = auto
        if (None if hours is None else Decimal(str(hours))) != current["authorized_hours"]:
            data["authorized_hours"] = hours
        if not data:
            raise FormError("Nothing changed")
        await _publish(web, user, E.SETTINGS_UPDATED, program.org_id, data, program_id=program_id)
    except (FormError, InvalidChange) as exc:
        message = _friendly(str(exc)) if isinstance(exc, InvalidChange) else str(exc)
        raise HTTPException(400, message) from exc
    return _redirect(f"/programs/{program_id}")


def _duration_us(text: str | None) -> int | None:
    from domain.timefmt import parse_duration

    return None if text is None else parse_duration(text)


async def switch_org(request: Request) -> Response:
    user = require_user(request)
    form = await checked_form(request)
    if user.role not in E.ALLOWED_ROLES[E.ORG_SET]:
        raise HTTPException(403, "only the support desk switches session management")
    org_id = form.get("org_id", "").strip()
    if not _ID.match(org_id):
        raise HTTPException(400, "Organization id: 1-128 characters, letters, digits and . _ : -")
    await _publish(state(request), user, E.ORG_SET, org_id, {"enabled": form.get("enabled") == "on"})
    return _redirect("/orgs")


# ----------------------------------------------------------------------------------------------- paths


async def set_hours(request: Request) -> Response:
    user = require_user(request)
    form = await checked_form(request)
    web = state(request)
    pv = visible_path(web, user, request.path_params["path_id"])
    if not can_edit_hours(user, pv):
        raise HTTPException(403, "only program admins change a path's authorized hours")
    try:
        data: dict[str, Any] = {"authorized_hours": parse_hours(form.get("authorized_hours", ""))}
        note = form.get("note", "").strip()
        if note:
            data["note"] = note
        await _publish(web, user, E.PATH_HOURS_SET, pv.org_id, data, program_id=pv.program_id, path_id=pv.path_id)
    except (FormError, InvalidChange) as exc:
        message = _friendly(str(exc)) if isinstance(exc, InvalidChange) else str(exc)
        raise HTTPException(400, message) from exc
    return _redirect(f"/paths/{pv.path_id}")


async def meeting_action(request: Request) -> Response:
    """Answer "Did this meeting occur?", dispute a late cancel, or resolve a dispute."""
    user = require_user(request)
    form = await checked_form(request)
    web = state(request)
    pv = visible_path(web, user, request.path_params["path_id"])
    meeting_id, action = request.path_params["meeting_id"], request.path_params["action"]
    meeting = pv.meetings.get(meeting_id)
    if meeting is None:
        raise HTTPException(404, f"meeting {meeting_id} is not on this path")
    event_type = {"answer": E.CONFIRMATION, "dispute": E.DISPUTED, "resolve": E.DISPUTE_RESOLVED}.get(action)
    if event_type is None:
        raise HTTPException(404, "no such action")
    if user.role not in E.ALLOWED_ROLES[event_type] or (action == "resolve" and not user.sees_org(pv.org_id)):
        raise HTTPException(403, "your role may not do this")
    data: dict[str, Any] = {"meeting_id": meeting_id}
    if action == "answer":
        if form.get("occurred") not in ("yes", "no"):
            raise HTTPException(400, "answer yes or no")
        data["occurred"] = form["occurred"] == "yes"
    elif action == "dispute":
        if form.get("comment", "").strip():
            data["comment"] = form["comment"].strip()
    else:
        if form.get("outcome") not in ("upheld", "rejected"):
            raise HTTPException(400, "choose upheld or rejected")
        data["outcome"] = form["outcome"]
        if form.get("note", "").strip():
            data["note"] = form["note"].strip()
    # no check of the meeting's status here: a stale page may offer an action the pipeline now refuses;
    # it is published all the same, and the refusal comes back to the user as a notice
    try:
        await _publish(web, user, event_type, pv.org_id, data, program_id=pv.program_id, path_id=pv.path_id)
    except InvalidChange as exc:
        raise HTTPException(400, _friendly(str(exc))) from exc
    return _redirect(f"/paths/{pv.path_id}")


ROUTES = [
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/programs", create_program, methods=["POST"]),
    Route("/programs/{program_id}/settings", update_settings, methods=["POST"]),
    Route("/orgs", switch_org, methods=["POST"]),
    Route("/paths/{path_id}/hours", set_hours, methods=["POST"]),
    Route("/paths/{path_id}/meetings/{meeting_id}/{action}", meeting_action, methods=["POST"]),
]
