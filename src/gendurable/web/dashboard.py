"""The dashboard application: settings, its own small pool, rendering and error pages.

`Dashboard` is an ASGI application (Starlette routes, Jinja2 templates). It opens its pool
on the first request, not at construction, so it can be mounted inside another ASGI app
whose lifespan never reaches it; run as the top-level app it closes the pool at shutdown,
and `await dashboard.close()` does so when mounted. Database failures become a 503 page
that names the database without its password; bad input a 400 naming the field.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..db.connect import DATABASE_ERRORS, describe_dsn, describe_failure, redact
from ..db.migrator import check_version
from ..db.operator_store import OperatorStore
from ..db.pool import Database
from ..errors import ConfigError, NoTarget
from ..schedule import Schedule
from ..spec import WorkflowSpec
from . import csrf
from .format import FILTERS
from .params import BadInput

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


@dataclass(frozen=True, slots=True)
class Settings:
    """What a dashboard serves and how (built by `gendurable.web.app`)."""

    dsn: str
    schema: str
    specs: Mapping[str, WorkflowSpec]
    allow_actions: bool
    pool_size: int
    refresh: float
    secret: bytes
    source: str | None
    """Where the workflow code came from (`module:engine`), shown on the workflow pages."""
    schedules: tuple[Schedule, ...] = ()
    """The schedules of the code's engine: their workflows' pages state them."""


class ReadOnly(Exception):
    """An action was asked of a read-only dashboard."""


class Dashboard:
    """The dashboard as an ASGI application; see `gendurable.web.app`."""

    def __init__(self, settings: Settings) -> None:
        from . import actions, bulk, overview, pages, queue_actions  # route modules need it

        self.settings = settings
        self.database = describe_dsn(settings.dsn)
        self._store: OperatorStore | None = None
        self._opening: asyncio.Lock | None = None
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("gendurable.web", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.filters.update(FILTERS)
        self.overview = overview.Overview(self)
        routes: list[BaseRoute] = [
            *overview.routes(self),
            *pages.routes(self),
            *actions.routes(self),
            *queue_actions.routes(self),
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

    # -- the pool ---------------------------------------------------------------------------

    async def store(self) -> OperatorStore:
        """The dashboard's store, opened (and the schema checked) on first use."""
        if self._store is not None:
            return self._store
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._store is None:
                self._store = await self._open()
        return self._store

    async def _open(self) -> OperatorStore:
        s = self.settings
        db = await Database.open(s.dsn, s.schema, min_size=1, max_size=s.pool_size, timeout=10.0)
        db.retry_for = 0.0  # a page reports an outage at once instead of hanging
        try:
            async with db.pool.acquire() as conn:
                await check_version(conn, schema=s.schema)
        except BaseException:
            await db.close(grace=2.0)
            raise
        return OperatorStore(db)

    async def close(self) -> None:
        """Close the pool (the next request opens it again)."""
        store, self._store = self._store, None
        if store is not None:
            await store.db.close(grace=5.0)

    @asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        yield
        await self.close()

    # -- rendering --------------------------------------------------------------------------

    def require_actions(self) -> None:
        """Raise `ReadOnly` unless actions were allowed."""
        if not self.settings.allow_actions:
            raise ReadOnly(
                "this dashboard is read-only: start it with --allow-actions "
                "(or app(allow_actions=True)) to signal, cancel, retry, rewind or pause queues"
            )

    def render(
        self, request: Request, template: str, context: Mapping[str, Any], status: int = 200
    ) -> HTMLResponse:
        """Render `template` with the common context (base path, CSRF token...)."""
        cookie = csrf.valid_cookie(request.cookies.get(csrf.COOKIE))
        fresh = cookie is None
        if cookie is None:
            cookie = csrf.new_cookie()
        base = request.scope.get("root_path", "").rstrip("/")
        html = self.templates.get_template(template).render(
            base=base,
            schema=self.settings.schema,
            database=self.database,
            allow_actions=self.settings.allow_actions,
            refresh=self.settings.refresh,
            served=bool(self.settings.specs),
            csrf_field=csrf.FIELD,
            csrf_token=csrf.token(self.settings.secret, cookie),
            **context,
        )
        response = HTMLResponse(redact(html, [self.settings.dsn]), status_code=status)
        if fresh:
            response.set_cookie(
                csrf.COOKIE, cookie, path=base or "/", httponly=True, samesite="strict"
            )
        return response

    def error_page(self, request: Request, status: int, title: str, message: str) -> Response:
        """A page saying what went wrong, in words, with no password in it."""
        id = str(request.path_params.get("id", ""))
        back = f"/instances/{id}" if id.isascii() and id.isdigit() and status != 404 else None
        return self.render(
            request,
            "error.html",
            {"title": title, "message": redact(message, [self.settings.dsn]), "back": back},
            status=status,
        )

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
