"""Opening connections: DSN resolution and checks before anything is written."""

from __future__ import annotations

import os

import asyncpg

from ..errors import ConfigError

DSN_ENV = "GENDURABLE_DSN"


def resolve_dsn(dsn: str | None) -> str | None:
    """`dsn`, else `$GENDURABLE_DSN`, else None (the caller may fall back to embedded)."""
    return dsn or os.environ.get(DSN_ENV) or None


def check_dsn(dsn: str) -> None:
    """Refuse a DSN that is not a PostgreSQL URL or key=value string, before connecting."""
    if not isinstance(dsn, str) or not dsn.strip():
        raise ConfigError(f"dsn must be a non-empty string, got {dsn!r}")
    if "://" in dsn and not dsn.startswith(("postgres://", "postgresql://")):
        scheme = dsn.split("://", 1)[0]
        raise ConfigError(
            f"dsn scheme {scheme!r} is not PostgreSQL; use postgresql://user@host:5432/db"
        )


async def connect(dsn: str | None, *, timeout: float = 10.0) -> asyncpg.Connection:
    """One connection to `dsn` (or `$GENDURABLE_DSN`), with errors that say what to fix."""
    resolved = resolve_dsn(dsn)
    if resolved is None:
        raise ConfigError(
            f"no database: pass dsn=... or set {DSN_ENV} "
            "(or install gendurable[embedded] and use the embedded server)"
        )
    check_dsn(resolved)
    try:
        return await asyncpg.connect(resolved, timeout=timeout)
    except (ValueError, asyncpg.ClientConfigurationError) as exc:
        raise ConfigError(f"invalid dsn: {exc}") from None
