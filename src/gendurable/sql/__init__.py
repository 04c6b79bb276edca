"""All of gendurable's SQL: named statements in `*.sql` files and the migrations.

A statement file holds blocks that start with `-- name: <statement_name>`; the Store method
of the same name runs it. `__schema__` stands for the engine's schema, substituted once as a
validated, quoted identifier (never through `search_path`, which poolers do not keep).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from ..errors import ConfigError

SCHEMA_TOKEN = "__schema__"
_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_MAX_IDENTIFIER_BYTES = 63


def quote_schema(schema: str) -> str:
    """Return `schema` as a quoted SQL identifier, or raise `ConfigError` before any SQL runs.

    Any name PostgreSQL accepts works, except ones holding quotes, semicolons, NUL or other
    control characters, names over 63 bytes, and the reserved `pg_` prefix.
    """
    if not isinstance(schema, str) or not schema:
        raise ConfigError(f"schema must be a non-empty string, got {schema!r}")
    if len(schema.encode()) > _MAX_IDENTIFIER_BYTES:
        raise ConfigError(
            f"schema name {schema!r} is {len(schema.encode())} bytes; PostgreSQL allows "
            f"at most {_MAX_IDENTIFIER_BYTES}"
        )
    bad = sorted({c for c in schema if c in "\"';\\" or ord(c) < 32 or ord(c) == 127})
    if bad:
        raise ConfigError(
            f"schema name {schema!r} contains {', '.join(map(repr, bad))}; "
            "use letters, digits and underscores"
        )
    if schema.lower().startswith("pg_"):
        raise ConfigError(f"schema name {schema!r}: the pg_ prefix is reserved by PostgreSQL")
    return f'"{schema}"'


def schema_hash(schema: str) -> str:
    """A short stable digest of the schema, for NOTIFY channels and advisory-lock namespaces."""
    return hashlib.sha1(schema.encode()).hexdigest()[:16]


NO_TRANSACTION = re.compile(r"^--\s*gendurable:\s*no-transaction\s*$", re.MULTILINE)
"""The line that marks a migration file to run outside a transaction, statement by statement."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its version, name and SQL for a given schema."""

    version: int
    name: str
    sql: str
    checksum: str
    """sha256 (hex) of the file's text before substitution: the same for every schema."""
    transactional: bool = True
    """False for a file marked `-- gendurable: no-transaction` (see `migrations/README.md`)."""


def migration(name: str, text: str, schema: str) -> Migration:
    """The migration file `name` (`<version>_<what>.sql`) holding `text`, for `schema`."""
    return Migration(
        version=int(name.split("_", 1)[0]),
        name=name,
        sql=_substitute(text, schema),
        checksum=hashlib.sha256(text.encode()).hexdigest(),
        transactional=NO_TRANSACTION.search(text) is None,
    )


def _substitute(text: str, schema: str) -> str:
    return text.replace(SCHEMA_TOKEN, quote_schema(schema))


def migrations(schema: str) -> list[Migration]:
    """Every migration, in version order, with the schema substituted."""
    folder = resources.files(__package__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append(migration(entry.name, entry.read_text(encoding="utf-8"), schema))
    return sorted(found, key=lambda m: m.version)


def statements(schema: str) -> dict[str, str]:
    """Every named statement of every `*.sql` file here, with the schema substituted."""
    out: dict[str, str] = {}
    for entry in resources.files(__package__).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text()
        marks = list(_NAME_LINE.finditer(text))
        for i, mark in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            name = mark.group(1)
            if name in out:
                raise RuntimeError(f"statement {name!r} is defined twice")
            out[name] = _substitute(text[mark.end() : end].strip(), schema)
    return out
