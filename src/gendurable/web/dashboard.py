"""The dashboard application: a `Site` with every page's routes, its error pages and its
security headers.

`Dashboard` is an ASGI application (Starlette routes, Jinja2 templates). Run as the
top-level app it closes its pool at shutdown, and `await dashboard.close()` does so when
mounted. Database failures become a 503 page that names the database without its password;
bad input a 400 naming the field.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..db.connect import DATABASE_ERRORS, describe_failure
from ..errors import ConfigError, NoTarget
from . import actions, bulk, csrf, overview, pages, queue_actions
from .params import BadInput
from .site import ReadOnly, Settings, Site

_log = logging.getLogger("gendurable.web")

STATIC = __file__.rsplit("/", 1)[0] + "/static"

SECURITY_HEADERS = {
    # Everything the pages use is served by the dashboard itself: no CDN, no inline script.
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}


class Dashboard(Site):
    """The dashboard as an ASGI application; see `gendurable.web.app`."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        numbers = overview.Overview(self)
        routes: list[BaseRoute] = [
            *overview.routes(self, numbers),
            *pages.routes(self),
            *actions.routes(self),
            *queue_actions.routes(self, numbers),
            *bulk.routes(self),
            Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
        ]
        self._app = Starlette(
            routes=routes,
            lifespan=self._lifespan,
            exception_handlers={
                BadInput: self._bad_input,
                csrf.CsrfError: self._forbidden,
                ReadOnly: self._forbidden,
                NoTarget: self._not_found,
                HTTPException: self._http_error,
                ConfigError: self._unavailable,
                **dict.fromkeys(DATABASE_ERRORS, self._unavailable),
            },
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _with_headers(self._app, scope, receive, send)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        await self.close()

    # -- error pages ------------------------------------------------------------------------

    async def _bad_input(self, request: Request, exc: Exception) -> Response:
        return self.error_page(request, 400, "Bad request", str(exc))

    async def _forbidden(self, request: Request, exc: Exception) -> Response:
        title = "Read-only" if isinstance(exc, ReadOnly) else "Refused"
        return self.error_page(request, 403, title, str(exc))

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        return self.error_page(request, 404, "Not found", str(exc))

    async def _http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            return self.error_page(request, 404, "Not found", "no such page")
        return self.error_page(request, exc.status_code, "Error", str(exc.detail))

    async def _unavailable(self, request: Request, exc: Exception) -> Response:
        if isinstance(exc, ConfigError):
            message = str(exc)
        else:
            message = describe_failure(exc, self.settings.dsn)
            _log.warning("dashboard: %s", message)
        return self.error_page(request, 503, "Database unavailable", message)


async def _with_headers(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Run `app`, adding the security headers to every HTTP response."""
    if scope["type"] != "http":
        await app(scope, receive, send)
        return

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            present = {name.lower() for name, _ in headers}
            for name, value in SECURITY_HEADERS.items():
                if name.encode() not in present:
                    headers.append((name.encode(), value.encode()))
            message = {**message, "headers": headers}
        await send(message)

    await app(scope, receive, send_with_headers)
