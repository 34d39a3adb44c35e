"""The web app's factory: the routes (web/routes_pages.py, web/routes_actions.py, web/stream.py), the
static files, the signed-cookie sessions and the error pages, around the shared state (web/state.py)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from web import routes_actions, routes_pages, stream
from web.state import HERE, SESSION_COOKIE, WebConfig, WebState, render
from web.users import Users


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 401 and request.method == "GET":
        from starlette.responses import RedirectResponse

        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
    return render(request, "error.html", status_code=exc.status_code, code=exc.status_code, message=exc.detail)


def create_app(settings: WebConfig, users: Users, secret: str | None = None) -> Starlette:
    """The ASGI app. ``secret`` signs the session cookies (random when None: sessions end on restart)."""

    web = WebState(settings, users)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await web.start()
        try:
            yield
        finally:
            await web.stop()

    routes = [
        *routes_pages.ROUTES,
        *routes_actions.ROUTES,
        *stream.ROUTES,
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(
                SessionMiddleware,
                secret_key=secret or secrets.token_urlsafe(32),
                session_cookie=SESSION_COOKIE,
                same_site="strict",
                https_only=False,
                max_age=12 * 3600,
            )
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.web = web
    return app


__all__ = ["create_app"]
