"""The web dashboard (the `web` extra: `pip install 'gendurable[web]'`).

`gendurable web --dsn ...` serves it; `gendurable.web.app(dsn=..., schema=...)` returns it
as an ASGI application to mount in your own (Starlette, FastAPI, any ASGI router). It reads
the schema through its own small pool and, only when `allow_actions=True`, signals,
cancels, retries and rewinds instances (one, or all a filter matches). `import gendurable`
never imports it or its dependencies.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ..db.connect import DSN_ENV, check_dsn, resolve_dsn
from ..engine.engine import Engine
from ..errors import ConfigError
from ..loader import load_engine
from ..schedule import Schedule
from ..spec import WorkflowSpec
from ..sql import quote_schema

if TYPE_CHECKING:
    from .dashboard import Dashboard

__all__ = ["EXTRA_HINT", "app"]

EXTRA_HINT = "the dashboard needs the web extra: pip install 'gendurable[web]'"

DEFAULT_POOL = 3
"""Connections the dashboard opens at most (its own pool, separate from any engine's)."""


def app(
    dsn: str | None = None,
    schema: str = "gendurable",
    *,
    engine: Engine | str | None = None,
    allow_actions: bool = False,
    pool_size: int = DEFAULT_POOL,
    refresh: float = 5.0,
    secret: str | bytes | None = None,
) -> Dashboard:
    """The dashboard of `schema` on `dsn` (default `$GENDURABLE_DSN`), as an ASGI app.

    - `engine`: an `Engine` (or `"module:engine"`) whose workflow code the dashboard uses
      to draw diagrams, show workflow pages (with the engine's schedules of each workflow)
      and check signal payloads against their declared types. Only its workflows and
      schedules are read; it is never started.
    - `allow_actions`: off by default (read-only); on, the instance page can signal,
      cancel, retry and rewind, and the instance list retry or cancel everything its filter
      matches, through CSRF-protected forms.
    - `pool_size`: the most connections the dashboard holds (opened on the first request).
    - `refresh`: seconds between live updates of the overview; its numbers are read at
      most once per interval, whatever the number of viewers.
    - `secret`: the key of the CSRF tokens; random per process by default (give several
      replicas behind one address the same secret).

    Raises `ConfigError` at once for a missing or malformed DSN, an invalid schema name,
    bad options, or when the `web` extra is not installed. Nothing connects until the
    first request; `await dashboard.close()` closes the pool (done at the app's shutdown
    when it runs as the top-level ASGI app).
    """
    try:
        from .dashboard import Dashboard
        from .site import Settings
    except ImportError as exc:
        raise ConfigError(f"{EXTRA_HINT} ({exc})") from None
    resolved = resolve_dsn(dsn)
    if resolved is None:
        raise ConfigError(f"no database: pass dsn=... or set {DSN_ENV}")
    check_dsn(resolved)
    quote_schema(schema)
    if not 1 <= pool_size <= 20:
        raise ConfigError(f"pool_size must be between 1 and 20, got {pool_size}")
    if not 1.0 <= refresh <= 3600.0:
        raise ConfigError(f"refresh must be between 1 and 3600 seconds, got {refresh}")
    source: str | None = None
    if isinstance(engine, str):
        source, engine = engine, load_engine(engine)
    specs: Mapping[str, WorkflowSpec] = engine.specs if engine is not None else {}
    schedules: tuple[Schedule, ...] = engine.config.schedules if engine is not None else ()
    if isinstance(secret, str):
        secret = secret.encode()
    return Dashboard(
        Settings(
            dsn=resolved,
            schema=schema,
            specs=dict(specs),
            schedules=schedules,
            allow_actions=allow_actions,
            pool_size=pool_size,
            refresh=refresh,
            secret=secret or secrets.token_bytes(32),
            source=source,
        )
    )
