"""Server-sent events: open pages redraw themselves when the pipeline publishes something they show.

``/paths/{path_id}/stream`` sends ``tab`` (the Meetings tab's HTML for the signed-in user, rendered with
that user's role: admin-only text only for the org's admins) and ``notices`` (the user's own notices);
``/stream`` sends ``notices`` only. Each wake-up redraws the latest state (bursts are coalesced by the
hub). The first events, sent at once, carry the state at connection time: a change published between
the page's render and the connection is not missed. A comment line every 15 s keeps proxies from
closing an idle stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from web.routes_pages import tab_for, visible_path
from web.state import WebState, csrf_token, render_fragment, require_user, state
from web.users import User

KEEPALIVE_S = 15.0
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def _event(name: str, payload: dict[str, object]) -> str:
    return f"event: {name}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


def _notices(web: WebState, user: User) -> str:
    """The user's notices, and how many of its changes are still pending (a page that showed another
    number reloads itself to show the pipeline's answer)."""
    notices = web.pending.user_notices(user.id)
    html = render_fragment(web, "_notices.html", notices=notices)
    return _event("notices", {"html": html, "pending": len(web.pending.for_user(user.id))})


async def path_stream(request: Request) -> Response:
    user = require_user(request)
    web = state(request)
    pv = visible_path(web, user, request.path_params["path_id"])
    csrf = csrf_token(request)
    sub = web.hub.subscribe(user.id, [pv.path_id])
    sub.push({"connected"})  # first, the state now: what changed between the page's render and here

    async def events() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            while True:
                marks = await sub.next(KEEPALIVE_S)
                if "close" in marks:
                    return
                if not marks:
                    yield ": keep-alive\n\n"
                    continue
                context = await tab_for(web, user, pv)
                html = render_fragment(web, "_tab.html", csrf=csrf, **context)
                version = pv.tally["version"] if pv.tally else 0
                yield _event("tab", {"html": html, "version": version})
                yield _notices(web, user)
        finally:
            web.hub.unsubscribe(sub)

    return StreamingResponse(events(), media_type="text/event-stream", headers=HEADERS)


async def user_stream(request: Request) -> Response:
    user = require_user(request)
    web = state(request)
    sub = web.hub.subscribe(user.id)
    sub.push({"connected"})

    async def events() -> AsyncIterator[str]:
        try:
            yield "retry: 2000\n\n"
            while True:
                marks = await sub.next(KEEPALIVE_S)
                if "close" in marks:
                    return
                yield _notices(web, user) if marks else ": keep-alive\n\n"
        finally:
            web.hub.unsubscribe(sub)

    return StreamingResponse(events(), media_type="text/event-stream", headers=HEADERS)


ROUTES = [
    Route("/paths/{path_id}/stream", path_stream),
    Route("/stream", user_stream),
]
