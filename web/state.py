"""What every route of the web app shares: its state (settings, users, the view, pending changes, the
Kafka reader and writer, the database) and the sign-in, CSRF and rendering helpers.

Invariants kept here for every route:
- a request's user comes only from the signed session cookie (Starlette's SessionMiddleware,
  itsdangerous); the actor of every published event is that user, never a form field;
- every POST carries the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``),
  compared in constant time; a POST without it is refused with 403 before anything else;
- a user reaches only what :class:`web.users.User` says it sees (403 otherwise, 404 for unknown ids).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from pathlib import Path
from typing import Any, Protocol

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from domain.timefmt import format_instant
from web import wording
from web.bus import Reader, Writer
from web.pending import Pending
from web.users import User, Users
from web.view import Hub, View


class WebConfig(Protocol):
    """What the web app needs of the product's settings (session_tally.config.Settings is one): the Kafka
    connection, the topic names and the database. The CLI hands them in; the web app reads no
    environment itself."""

    @property
    def kafka(self) -> Any: ...

    @property
    def topics(self) -> Any: ...

    @property
    def database_url(self) -> str: ...

    @property
    def db_schema(self) -> str: ...


log = logging.getLogger("session_tally.web")
HERE = Path(__file__).resolve().parent
SESSION_COOKIE = "session_tally"
ADMIN_POLL_S = 0.5


class WebState:
    """Everything the routes share: settings, users, the view, pending changes, Kafka ends, database."""

    def __init__(self, settings: WebConfig, users: Users) -> None:
        self.settings = settings
        self.users = users
        self.view = View()
        self.pending = Pending()
        self.hub = Hub()
        self.writer = Writer(settings, self.pending)
        self.reader = Reader(settings, self.view, self.pending, self.hub)
        self.db: Any = None
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        env = self.templates.env
        env.globals.update(
            status_words=wording.status_words,
            reason_words=wording.reason_words,
            duration_words=wording.duration_words,
            hours_words=wording.hours_words,
            minutes_as_hours=wording.minutes_as_hours,
            role_words=wording.role_words,
            length_words=wording.length_words,
            window_choice=wording.window_choice,
            form_choice=wording.form_choice,
        )
        env.filters["when"] = _when
        env.filters["iso"] = lambda us: "" if us is None else format_instant(us)
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from storage.db import async_engine

        self.db = async_engine(self.settings.database_url, self.settings.db_schema, pool_size=3)
        await self.writer.start()
        await self.reader.start()
        self._poller = asyncio.create_task(self._poll_admin_changes(), name="web-admin-poller")

    async def stop(self) -> None:
        self.hub.close()
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._poller
        await self.reader.stop()
        await self.writer.stop()
        if self.db is not None:
            await self.db.dispose()

    async def _poll_admin_changes(self) -> None:
        """Settle pending organization and program changes once PostgreSQL shows their effect."""
        from storage import reads

        while True:
            await asyncio.sleep(ADMIN_POLL_S)
            open_admin = [c for c in self.pending.open() if c.path_id is None]
            if not open_admin:
                continue
            try:
                orgs = await reads.orgs(self.db)
                programs = {}
                for pid in {c.program_id for c in open_admin if c.program_id}:
                    found = await reads.program(self.db, pid)
                    if found is not None:
                        programs[pid] = found
            except Exception as exc:  # tables not created yet, database away: try again
                log.debug("admin poll: %s", exc)
                continue
            for change in self.pending.settle_admin(orgs, programs):
                self.hub.notify(change.user_id)


def _when(us: int | None) -> str:
    """µs since the epoch -> "2026-03-10 10:00 UTC" (pages turn <time> elements into local time)."""
    if us is None:
        return ""
    from domain.timefmt import datetime_from_instant

    return datetime_from_instant(us).strftime("%Y-%m-%d %H:%M UTC")


def state(request: Request) -> WebState:
    return request.app.state.web  # type: ignore[no-any-return]


def current_user(request: Request) -> User | None:
    user_id = request.session.get("user")
    return None if not isinstance(user_id, str) else state(request).users.get(user_id)


def require_user(request: Request) -> User:
    user = current_user(request)
    if user is None:
        raise HTTPException(401, "sign in first")
    return user


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return token


async def checked_form(request: Request) -> dict[str, str]:
    """The POSTed form fields after the CSRF check (403 when the token is missing or wrong)."""
    form = await request.form()
    sent = request.headers.get("x-csrf-token") or form.get("csrf")
    expected = request.session.get("csrf")
    if not isinstance(sent, str) or not isinstance(expected, str) or not hmac.compare_digest(sent, expected):
        raise HTTPException(403, "the form has expired or did not come from this site; reload the page")
    return {k: v for k, v in form.items() if isinstance(v, str)}


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The page ``name`` with ``context`` over the base context (user, notices, ``pending_count``: a page
    that reloads when a pending change is answered passes the count it read before its own reads)."""
    user = current_user(request)
    web = state(request)
    notices = web.pending.user_notices(user.id) if user else []
    base = {
        "user": user,
        "csrf": csrf_token(request),
        "notices": notices,
        "ready": web.view.ready,
        "pending_count": len(web.pending.for_user(user.id)) if user else 0,
    }
    response: HTMLResponse = web.templates.TemplateResponse(request, name, base | context, status_code=status_code)
    return response


def render_fragment(web: WebState, name: str, **context: Any) -> str:
    return web.templates.get_template(name).render(**context)
