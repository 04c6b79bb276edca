"""What every page of the dashboard shares: its settings, its own small pool, the templates
and the pages that say what went wrong.

The route modules (`overview`, `pages`, `actions`, `queue_actions`, `bulk`) take a `Site`;
`dashboard.Dashboard`, the ASGI application, is one, with their routes mounted. The pool
opens on the first request, not at construction, so the application can be mounted inside
another whose lifespan never reaches it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..db.connect import describe_dsn, redact
from ..db.migrator import check_version
from ..db.operator_store import OperatorStore
from ..db.pool import Database
from ..schedule import Schedule
from ..spec import WorkflowSpec
from . import csrf
from .format import FILTERS
from .params import FORM_TYPE, BadInput, parse_form, read_body


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


class Site:
    """The dashboard's settings, pool and rendering, as its routes use them."""

    def __init__(self, settings: Settings) -> None:
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

    # -- rendering --------------------------------------------------------------------------

    def require_actions(self) -> None:
        """Raise `ReadOnly` unless actions were allowed."""
        if not self.settings.allow_actions:
            raise ReadOnly(
                "this dashboard is read-only: start it with --allow-actions "
                "(or app(allow_actions=True)) to signal, cancel, retry, rewind or pause queues"
            )

    async def posted_form(self, request: Request) -> dict[str, str]:
        """The fields of a form post carrying this dashboard's CSRF token: `BadInput` for
        anything but a form post, `CsrfError` without a valid token."""
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != FORM_TYPE:
            raise BadInput(f"an action is a form post ({FORM_TYPE}), not {content_type[:60]!r}")
        form = parse_form(await read_body(request))
        csrf.check(
            self.settings.secret,
            cookie=request.cookies.get(csrf.COOKIE),
            form_token=form.pop(csrf.FIELD, None),
            headers=request.headers,
        )
        return form

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
