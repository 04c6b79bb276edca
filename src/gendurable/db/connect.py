"""Opening connections: DSN resolution and checks before anything is written."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from urllib.parse import parse_qs, unquote, urlsplit

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


DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
"""Failures to reach or use the database (as opposed to bugs): `describe_failure` words them."""

_URL_PASSWORD = re.compile(r"(://[^/@:\s]*:)[^@\s]*@")
_KV_PASSWORD = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def dsn_passwords(dsn: str | None) -> list[str]:
    """The passwords a DSN carries (URL, `password=` query or key=value), and `$PGPASSWORD`."""
    found = []
    if dsn:
        if "://" in dsn:
            try:
                parts = urlsplit(dsn)
                if parts.password:
                    found += [parts.password, unquote(parts.password)]
                found += parse_qs(parts.query).get("password", [])
            except ValueError:
                pass
        found += [m.group(2).strip("'") for m in _KV_PASSWORD.finditer(dsn)]
    if os.environ.get("PGPASSWORD"):
        found.append(os.environ["PGPASSWORD"])
    return [p for p in found if p]


def redact(text: str, dsns: Iterable[str | None] = ()) -> str:
    """`text` with every password of `dsns` (and any `user:password@` in a URL) masked."""
    for dsn in dsns:
        for password in sorted(dsn_passwords(dsn), key=len, reverse=True):
            text = text.replace(password, "***")
    text = _URL_PASSWORD.sub(r"\1***@", text)
    return _KV_PASSWORD.sub(r"\1***", text)


def describe_dsn(dsn: str | None) -> str:
    """Where a DSN points, without its password: "database 'app' on host:5432 as bob"."""
    if not dsn or "://" not in dsn:
        return "the database"
    try:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        host = parts.hostname or (query.get("host") or ["localhost"])[0]
        port = parts.port
    except ValueError:
        return "the database"
    text = "the database"
    if parts.path.strip("/"):
        text = f"database {unquote(parts.path.strip('/'))!r}"
    text += f" on {host}:{port}" if port else f" on {host}"
    if parts.username:
        text += f" as {unquote(parts.username)}"
    return text


def describe_failure(exc: BaseException, dsn: str | None) -> str:
    """One line saying why the database at `dsn` could not be reached or used; no password."""
    where = describe_dsn(dsn)
    if isinstance(exc, asyncpg.InvalidPasswordError):
        text = f"authentication failed for {where}: {exc}"
    elif isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        text = f"the server refused the connection to {where}: {exc}"
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        text = f"cannot connect to {where}: {exc}"
    elif isinstance(exc, TimeoutError):
        text = f"timed out reaching {where}"
    elif isinstance(exc, ConnectionRefusedError) or "Connect call failed" in str(exc):
        text = f"cannot reach {where}: connection refused (is the server running?)"
    elif isinstance(exc, OSError):
        text = f"cannot reach {where}: {exc.strerror or exc}"
    elif isinstance(exc, asyncpg.PostgresError):
        text = f"database error: {exc}"
    else:
        text = f"database error on {where}: {type(exc).__name__}: {exc}"
    return redact(" ".join(text.split()), [dsn])
