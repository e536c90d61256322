"""The Starlette app: server-rendered pages, no JavaScript, GET only.

Routes: ``/`` (overview and the group search box), ``/search?group=ID``
(redirects to the group page), ``/groups/{group_id}`` (the group page) and
``/healthz``. Every template is rendered with Jinja2 autoescaping on, so
tracker names, condition values and group ids (all user data) are shown as
text; responses carry a Content-Security-Policy that allows no script at
all. There is no write action: only GET and HEAD are routed.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2
from redis.exceptions import RedisError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from dashboard.auth import AuthMiddleware, Credentials
from dashboard.describe import time_text
from tracking.errors import BackendError, TrackingError

if TYPE_CHECKING:
    from config.settings import Settings
    from dashboard.source import Source

TEMPLATES = Path(__file__).parent / "templates"

_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
        b"form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Add the security headers above to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _SECURITY_HEADERS
            await send(message)

        await self.app(scope, receive, send_with_headers)


def environment() -> jinja2.Environment:
    """The templates, with autoescaping on for every template (not only ``.html``)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _number
    env.filters["when"] = time_text
    env.filters["group_url"] = lambda group_id: "/groups/" + quote(str(group_id), safe="")
    return env


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        value = int(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:,.6g}"


def create_app(
    settings: Settings | None = None, *, source: Source | None = None, notice: str | None = None
) -> Starlette:
    """The dashboard app over ``source`` (default: one built from ``settings``).

    ``notice`` is a line shown at the top of every page (e.g. "Showing the
    last tracking demo run").

    With credentials in the settings every request must carry them; without,
    none is asked (``serve`` then refuses any address but loopback).
    """
    if source is None:
        from config.settings import get_settings  # noqa: PLC0415
        from dashboard.source import Source  # noqa: PLC0415

        settings = settings or get_settings()
        source = Source(settings, flower_url=settings.flower_url)
    settings = settings or source.settings
    env = environment()

    def render(name: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(prefix=source.prefix, notice=notice, **context)
        return HTMLResponse(html, status_code=status)

    def overview(request: Request) -> Response:
        return render("overview.html", o=source.overview())

    def search(request: Request) -> Response:
        group = request.query_params.get("group", "").strip()
        if not group:
            return RedirectResponse("/", status_code=303)
        return RedirectResponse("/groups/" + quote(group, safe=""), status_code=303)

    def group(request: Request) -> Response:
        group_id = request.path_params["group_id"]
        try:
            page = source.group_page(group_id)
        except BackendError:
            raise
        except TrackingError as exc:  # a bad group id
            return render("error.html", status=400, title="Bad group id", message=str(exc))
        return render("group.html", g=page, status=200 if page.where != "nowhere" else 404)

    def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    def backend_error(request: Request, exc: Exception) -> Response:
        return render("error.html", status=503, title="Backend unavailable", message=str(exc))

    credentials = Credentials(
        settings.dashboard_token, settings.dashboard_user, settings.dashboard_password
    )
    middleware = [Middleware(SecurityHeaders)]
    if credentials.configured:
        middleware.append(Middleware(AuthMiddleware, credentials=credentials))
    app = Starlette(
        routes=[
            Route("/", overview, methods=["GET", "HEAD"]),
            Route("/search", search, methods=["GET", "HEAD"]),
            Route("/groups/{group_id:path}", group, methods=["GET", "HEAD"]),
            Route("/healthz", health, methods=["GET", "HEAD"]),
        ],
        middleware=middleware,
        exception_handlers={BackendError: backend_error, RedisError: backend_error},
    )
    app.state.source = source
    return app
