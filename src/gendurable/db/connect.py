"""Opening connections: DSN resolution and checks before anything is written.

A DSN is a PostgreSQL URL (`postgresql://user:pw@host:5432/db`) or a libpq key=value string
(`host=db port=5432 user=bob dbname=app`). asyncpg takes only URLs, so every connection
goes through `asyncpg_dsn`, which turns a key=value string into the same URL.

A DSN may name several hosts (`postgresql://h1:5432,h2:5432/db?target_session_attrs=read-write`
or `host=h1,h2 port=5432,5432 target_session_attrs=read-write`): every connection (the pool's,
the listener's, the command line's) goes through `Hosts`, which tries them one at a time.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import asyncpg

from ..errors import ConfigError

DSN_ENV = "GENDURABLE_DSN"


def resolve_dsn(dsn: str | None) -> str | None:
    """`dsn`, else `$GENDURABLE_DSN`, else None (the caller may fall back to embedded)."""
    return dsn or os.environ.get(DSN_ENV) or None


def check_dsn(dsn: str) -> None:
    """Refuse a DSN that is not a PostgreSQL URL or key=value string, before connecting."""
    hosts_of(asyncpg_dsn(dsn))


def asyncpg_dsn(dsn: str) -> str:
    """`dsn` as the URL asyncpg connects with: a URL as it is, a key=value string converted.

    Raises `ConfigError` (one line, never holding a value of the DSN) for anything else: a
    URL of another scheme, a malformed key=value string, a keyword asyncpg cannot honour.
    """
    if not isinstance(dsn, str):
        raise ConfigError(f"dsn must be a non-empty string, got {type(dsn).__name__}")
    if not dsn.strip():
        raise ConfigError("dsn must be a non-empty string, got a blank one")
    if "://" in dsn:
        if not dsn.startswith(("postgres://", "postgresql://")):
            scheme = dsn.split("://", 1)[0]
            raise ConfigError(
                f"dsn scheme {scheme!r} is not PostgreSQL; use postgresql://user@host:5432/db"
            )
        return dsn
    # Every keyword goes into the query string, where asyncpg reads each one by name: no
    # netloc to build, so a unix-socket directory, an IPv6 address or a password holding
    # '@', ':' or '/' needs nothing but percent-encoding.
    pairs = parse_conninfo(dsn)
    query = "&".join(f"{k}={quote(v, safe='')}" for k, v in pairs.items() if v)
    return f"postgresql://?{query}" if query else "postgresql://"


CONNINFO_KEYWORDS = frozenset(
    {
        "host",
        "port",
        "dbname",
        "user",
        "password",
        "passfile",
        "sslmode",
        "sslcert",
        "sslkey",
        "sslrootcert",
        "sslcrl",
        "sslpassword",
        "ssl_min_protocol_version",
        "ssl_max_protocol_version",
        "target_session_attrs",
        "krbsrvname",
        "gsslib",
        "service",
        "application_name",
    }
)
"""The libpq keywords a key=value DSN may use: those asyncpg reads from a URL."""

_NOT_SUPPORTED = {
    "hostaddr": "give the address as host=",
    "connect_timeout": "the engine's statement_timeout bounds connecting",
    "options": "set server options with ALTER ROLE ... SET",
}


def parse_conninfo(dsn: str) -> dict[str, str]:
    """The keywords of a libpq key=value string, with libpq's quoting rules.

    A value is a run of non-blank characters or a single-quoted string; a backslash escapes
    the next character in both. Raises `ConfigError` naming the keyword at fault, never a
    value (which may be a password).
    """
    pairs: dict[str, str] = {}
    i, n = 0, len(dsn)
    while True:
        while i < n and dsn[i].isspace():
            i += 1
        if i == n:
            return pairs
        start = i
        while i < n and not dsn[i].isspace() and dsn[i] != "=":
            i += 1
        keyword = dsn[start:i]
        while i < n and dsn[i].isspace():
            i += 1
        if i == n or dsn[i] != "=" or not keyword:
            where = f"after {keyword!r}" if keyword in CONNINFO_KEYWORDS else f"at {start + 1}"
            raise ConfigError(
                f"invalid dsn: expected keyword=value pairs or a postgresql:// URL; no '=' {where}"
            )
        i += 1
        while i < n and dsn[i].isspace():
            i += 1
        value, i = _conninfo_value(dsn, i, keyword)
        if keyword not in CONNINFO_KEYWORDS:
            hint = _NOT_SUPPORTED.get(keyword)
            raise ConfigError(
                f"invalid dsn: keyword {keyword!r} is not supported"
                + (f" ({hint})" if hint else f"; use one of {', '.join(sorted(CONNINFO_KEYWORDS))}")
            )
        pairs[keyword] = value


def _conninfo_value(dsn: str, i: int, keyword: str) -> tuple[str, int]:
    """The value starting at `i` and the index after it."""
    quoted = i < len(dsn) and dsn[i] == "'"
    i += quoted
    out: list[str] = []
    while i < len(dsn):
        c = dsn[i]
        if c == "\\" and i + 1 < len(dsn):
            out.append(dsn[i + 1])
            i += 2
            continue
        if (quoted and c == "'") or (not quoted and c.isspace()):
            return "".join(out), i + quoted
        out.append(c)
        i += 1
    if quoted:
        raise ConfigError(f"invalid dsn: the quoted value of {keyword!r} has no closing quote")
    return "".join(out), i


def hosts_of(url: str) -> list[tuple[str, int]]:
    """The (host, port) pairs a PostgreSQL URL names, in order, as asyncpg reads them.

    Hosts come from the URL's authority (`h1:5432,[::1]:5433`) or else from its `host`
    query parameter (`?host=h1,h2&port=5432,5433`, which a key=value DSN becomes); a host
    without a port takes the `port` parameter's (one for all, or one each), else
    `$PGPORT`'s, else 5432. Empty when the URL names no host (asyncpg's defaults apply).
    """
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    specs = parts.netloc.rpartition("@")[2]
    hosts: list[tuple[str, str]] = []
    if specs:
        for spec in specs.split(","):
            if spec.startswith("["):
                address, _, rest = spec[1:].partition("]")
                hosts.append((unquote(address), rest.removeprefix(":")))
            else:
                address, _, port = spec.partition(":")
                hosts.append((unquote(address), unquote(port)))
        ports = _default_ports(None, len(hosts))
    elif query.get("host"):
        hosts = [(h, "") for h in query["host"].split(",")]
        ports = _default_ports(query.get("port"), len(hosts))
    else:
        return []
    try:
        return [(h, int(p or ports[i])) for i, (h, p) in enumerate(hosts)]
    except ValueError:
        raise ConfigError("invalid dsn: a port is not a number") from None


def _default_ports(given: str | None, count: int) -> list[str]:
    ports = (given or os.environ.get("PGPORT") or "5432").split(",")
    if len(ports) == 1:
        return ports * count
    if len(ports) != count:
        raise ConfigError(f"invalid dsn: {len(ports)} ports for {count} hosts")
    return ports


HOST_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.TargetServerAttributeNotMatched,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.TooManyConnectionsError,
)
"""Why a host could not be used that lets the next one be tried (as libpq does; a refused
login, a missing database or a bad setting end the attempt)."""


class Hosts:
    """Connects to the first usable host of a DSN, trying them one at a time.

    asyncpg tries a DSN's hosts within one timeout, so a first host that hangs (a dead
    machine drops packets, a stuck server accepts and never answers) takes all of it and the
    next host is never tried. Here each host gets an equal share of what remains of the
    timeout, and the host that last gave a connection is tried first: after a failover, only
    the first connections wait on the dead primary. `target_session_attrs` is checked on each
    host. When every host fails, the last failure to reach one is raised, else asyncpg's
    `TargetServerAttributeNotMatched` (every host answered, none was what was asked for).
    """

    def __init__(self, dsn: str) -> None:
        self.url = asyncpg_dsn(dsn)
        self.hosts = hosts_of(self.url)
        self._first = 0

    async def connect(self, *args: Any, timeout: float | None = 60.0, **kwargs: Any) -> Any:
        """`asyncpg.connect(self.url, ...)` host by host; also the pool's `connect` hook
        (which passes the URL it was given as the only positional argument)."""
        limit = 60.0 if timeout is None else timeout  # asyncpg's default
        if len(self.hosts) < 2:
            return await asyncpg.connect(self.url, timeout=limit, **kwargs)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        order = self.hosts[self._first :] + self.hosts[: self._first]
        unreachable: BaseException | None = None
        mismatch: BaseException | None = None
        for left, (host, port) in zip(range(len(order), 0, -1), order, strict=True):
            share = max(deadline - loop.time(), 0.0) / left
            try:
                conn = await asyncpg.connect(
                    self.url, host=host, port=port, timeout=share, **kwargs
                )
            except HOST_FAILURES as exc:
                if isinstance(exc, asyncpg.TargetServerAttributeNotMatched):
                    mismatch = exc
                else:
                    unreachable = exc
                continue
            self._first = self.hosts.index((host, port))
            return conn
        failure = unreachable or mismatch
        assert failure is not None
        raise failure


async def connect(dsn: str | None, *, timeout: float = 10.0) -> asyncpg.Connection:
    """One connection to `dsn` (or `$GENDURABLE_DSN`), with errors that say what to fix."""
    resolved = resolve_dsn(dsn)
    if resolved is None:
        raise ConfigError(
            f"no database: pass dsn=... or set {DSN_ENV} "
            "(or install gendurable[embedded] and use the embedded server)"
        )
    try:
        conn: asyncpg.Connection = await Hosts(resolved).connect(timeout=timeout)
    except (ValueError, asyncpg.ClientConfigurationError) as exc:
        raise ConfigError(f"invalid dsn: {exc}") from None
    return conn


DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.TargetServerAttributeNotMatched,
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
        else:
            try:
                password = parse_conninfo(dsn).get("password")
            except ConfigError:
                password = None
            if password:  # as written, and as the converted URL carries it
                found += [password, quote(password, safe="")]
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
    if not dsn:
        return "the database"
    try:
        url = asyncpg_dsn(dsn)
        parts = urlsplit(url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        hosts = hosts_of(url)
        if len(hosts) > 1:
            where = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in hosts)
        else:
            host = parts.hostname or query.get("host") or "localhost"
            port = parts.port or query.get("port")
            where = f"{host}:{port}" if port else host
    except (ValueError, ConfigError):
        return "the database"
    text = "the database"
    database = unquote(parts.path.strip("/")) or query.get("dbname")
    if database:
        text = f"database {database!r}"
    text += f" on {where}"
    user = unquote(parts.username or "") or query.get("user")
    if user:
        text += f" as {user}"
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
    elif isinstance(exc, asyncpg.TargetServerAttributeNotMatched):
        text = (
            f"no host of {where} is what target_session_attrs asks for "
            "(in a failover: none is writable yet)"
        )
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
