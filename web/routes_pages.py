"""The screens (GET): sign-in, home, Configurations, program settings, organizations, the Meetings tab,
the admin audit, health. Every page checks who may see it (see :mod:`web.users`)."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from domain import events as E
from storage import reads
from web.bus import now_us
from web.state import WebState, render, require_user, state
from web.tab import can_read_admin_text, tab_context
from web.users import User
from web.view import PathView
from web.wording import AUTO_CONFIRM_CHOICES, LATE_CANCEL_CHOICES

log = logging.getLogger("session_tally.web")
HOME_PROGRAMS = 40  # programs listed on the home page (the support desk may see thousands)


async def db_read(coro: Any, default: Any) -> Any:
    """A storage read; ``default`` when the database cannot answer yet (no tables before the first
    worker migrated it, or PostgreSQL away): pages then say the figures are incomplete."""
    try:
        return await coro
    except Exception as exc:
        log.warning("database read failed: %s", str(exc).splitlines()[0] if str(exc) else exc)
        return default


def visible_path(web: WebState, user: User, path_id: str) -> PathView:
    pv = web.view.path(path_id)
    if pv is None or pv.tally is None:
        raise HTTPException(404, f"no Meetings tab for path {path_id} (yet)")
    if not user.sees_path(path_id, pv.org_id):
        raise HTTPException(403, "you are not a member of this path")
    return pv


async def visible_programs(web: WebState, user: User) -> list[Any]:
    """The programs (domain Programs from PostgreSQL) this user may see."""
    if user.role == "support":
        return list(await db_read(reads.programs(web.db), []))
    if user.role == "program_admin":
        return list(await db_read(reads.programs(web.db, set(user.orgs)), []))
    ids = {pv.program_id for p in user.paths if (pv := web.view.path(p)) is not None}
    found = await db_read(reads.programs(web.db, {pv.org_id for p in user.paths if (pv := web.view.path(p))}), [])
    return [p for p in found if p.program_id in ids]


def visible_path_views(web: WebState, user: User, program_id: str) -> list[PathView]:
    return [pv for pv in web.view.paths_of_program(program_id) if user.sees_path(pv.path_id, pv.org_id)]


def settings_in_force(program: Any) -> dict[str, Any]:
    """The program's settings in force now, by the domain's own rules of the settings history."""
    now = now_us()
    return {
        "late_cancel_window": program.late_cancel_window_at(now),
        "auto_confirm_window": program.auto_confirm_window_at(now) if program.session_verification else None,
        "authorized_hours": program.authorized_hours_in_force(),
    }


async def home(request: Request) -> Response:
    user = require_user(request)
    web = state(request)
    programs = await visible_programs(web, user)
    q = request.query_params.get("q", "").strip().lower()
    if q:
        programs = [p for p in programs if q in f"{p.program_id} {p.name or ''} {p.org_id}".lower()]
    listing = [(p, visible_path_views(web, user, p.program_id)) for p in programs[:HOME_PROGRAMS]]
    mine = [pv for p in sorted(user.paths) if (pv := web.view.path(p)) is not None and pv.tally is not None]
    more = max(0, len(programs) - HOME_PROGRAMS)
    return render(
        request, "home.html", listing=listing, more=more, q=q, mine=mine, pending=web.pending.for_user(user.id)
    )


async def login_page(request: Request) -> Response:
    nxt = request.query_params.get("next", "/")
    return render(request, "login.html", next=nxt if nxt.startswith("/") and not nxt.startswith("//") else "/")


async def configurations(request: Request) -> Response:
    user = require_user(request)
    if user.role not in E.ALLOWED_ROLES[E.PROGRAM_CREATED]:
        raise HTTPException(403, "only program admins and the support desk create programs")
    web = state(request)
    orgs = sorted(user.orgs) if user.role == "program_admin" else sorted(await db_read(reads.orgs(web.db), {}))
    return render(
        request,
        "configurations.html",
        orgs=orgs,
        late_choices=LATE_CANCEL_CHOICES,
        auto_choices=AUTO_CONFIRM_CHOICES,
        form=dict(request.query_params),
        error=None,
    )


async def program_page(request: Request) -> Response:
    user = require_user(request)
    web = state(request)
    program_id = request.path_params["program_id"]
    # what is pending is read BEFORE the program: a change applied while the program is read then still
    # counts as pending on this page, whose script reloads it when the pipeline's answer arrives (read
    # after, it would show the old settings with nothing pending and never reload)
    pending = web.pending.for_program(user.id, program_id)
    pending_count = len(web.pending.for_user(user.id))
    program = await db_read(reads.program(web.db, program_id), None)
    if program is None:
        if pending:  # just created by this user: wait for the pipeline
            return render(
                request, "program_pending.html", program_id=program_id, pending=pending, pending_count=pending_count
            )
        raise HTTPException(404, f"program {program_id} is not known")
    paths = visible_path_views(web, user, program_id)
    if not user.sees_org(program.org_id) and not paths:
        raise HTTPException(403, "you are not a member of this program")
    registered = await db_read(reads.program_paths(web.db, program_id), [])
    return render(
        request,
        "program.html",
        program=program,
        settings=settings_in_force(program),
        paths=paths,
        registered=len(registered),
        pending=pending,
        pending_count=pending_count,
        can_change=user.role in E.ALLOWED_ROLES[E.SETTINGS_UPDATED],
        is_admin=can_read_admin_text(user, program.org_id),
        late_choices=LATE_CANCEL_CHOICES,
        auto_choices=AUTO_CONFIRM_CHOICES,
    )


async def orgs_page(request: Request) -> Response:
    user = require_user(request)
    if user.role not in E.ALLOWED_ROLES[E.ORG_SET]:
        raise HTTPException(403, "only the support desk switches session management")
    web = state(request)
    pending = web.pending.for_user(user.id)  # before the read, as on the program page
    orgs = await db_read(reads.orgs(web.db), {})
    known = sorted(set(orgs) | {u for x in web.users.by_id.values() for u in x.orgs})
    return render(request, "orgs.html", orgs=orgs, known=known, pending=pending, pending_count=len(pending))


async def path_page(request: Request) -> Response:
    user = require_user(request)
    web = state(request)
    pv = visible_path(web, user, request.path_params["path_id"])
    program = await db_read(reads.program(web.db, pv.program_id), None)
    context = await tab_for(web, user, pv)
    return render(request, "path.html", program=program, **context)


async def tab_for(web: WebState, user: User, pv: PathView) -> dict[str, Any]:
    """The Meetings tab's context for ``user`` (the latest path note only for the org's admins)."""
    note = None
    if can_read_admin_text(user, pv.org_id):
        rows = await db_read(reads.audit(web.db, [pv.path_id], limit=50), [])
        note = next((r for r in rows if r.kind == "path_note"), None)
    return tab_context(user, pv, web.pending.for_path(user.id, pv.path_id), note)


async def audit_page(request: Request) -> Response:
    user = require_user(request)
    web = state(request)
    program_id = request.path_params["program_id"]
    program = await db_read(reads.program(web.db, program_id), None)
    if program is None:
        raise HTTPException(404, f"program {program_id} is not known")
    if not can_read_admin_text(user, program.org_id):
        raise HTTPException(403, "the audit is for program admins and the support desk only")
    path_ids = await db_read(reads.program_paths(web.db, program_id), [])
    only = request.query_params.get("path")
    rows = await db_read(reads.audit(web.db, [only] if only and only in path_ids else path_ids), [])
    return render(request, "audit.html", program=program, rows=rows, path_ids=path_ids, only=only)


async def healthz(request: Request) -> Response:
    web = state(request)
    body = {
        "status": "ok" if web.view.ready and not web.reader.error else "starting",
        "ready": web.view.ready,
        "kafka": web.reader.error or "ok",
        "paths": len(web.view.paths),
        "meetings": len(web.view.meeting_path),
        "open_pages": len(web.hub),
        "pending": len(web.pending.open()),
    }
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


ROUTES = [
    Route("/", home),
    Route("/login", login_page, methods=["GET"]),
    Route("/programs/new", configurations, methods=["GET"]),
    Route("/programs/{program_id}", program_page, methods=["GET"]),
    Route("/programs/{program_id}/audit", audit_page, methods=["GET"]),
    Route("/orgs", orgs_page, methods=["GET"]),
    Route("/paths/{path_id}", path_page, methods=["GET"]),
    Route("/healthz", healthz),
]
