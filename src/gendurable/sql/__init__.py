"""All of gendurable's SQL: named statements in `*.sql` files and the migrations.

Writing a statement (the conventions every `*.sql` file here keeps):

- A statement file holds blocks that start with `-- name: <statement_name>`; the store
  method of the same name runs it (`db/engine_store.py`, `db/maintenance_store.py`,
  `db/schedule_store.py`, `db/operator_store.py`, `db/repair_store.py`), so one grep finds
  the SQL, its method and its tests.
- Parameters are named, `:name` (lower case, digits, underscores), and the store binds them
  by keyword. At load each statement is rewritten once to PostgreSQL's `$1..$n`, numbered in
  order of first use, a name used twice being one parameter; `Statement.params` keeps the
  names in that order and `Statement.args(**values)` lays values out for them. Not a
  parameter: `::type` casts, anything in a string literal, a quoted identifier, a comment or
  a dollar-quoted body, and a colon right after a word, a digit, `]`, `)` or `[` (an array
  slice: `a[1:n]`, `a[lo:hi]`, `a[:n]` are slices; write `a[(:n)]` to index by a parameter).
  Positional `$1` in a statement is refused at load.
- Values fixed for a schema are tokens substituted at load, never parameters:
  `__schema__` (the schema as a validated, quoted identifier, never through `search_path`,
  which poolers do not keep), `__channel__` (the schema's NOTIFY channel, a string literal),
  `__key_lock_prefix__` (the namespace of its concurrency-key advisory locks, a string
  literal), `__live__` and `__terminal__` (the status lists `('available', 'executing',
  'awaiting', 'waiting')` and `('done', 'failed', 'cancelled')`, written out in full so that
  `status IN __live__` reads as the literal list the planner matches partial indexes with).
  Migrations get the same tokens (and released ones are frozen: `migrations/README.md`).
- Every statement takes `now` as a nullable parameter, `coalesce(:now::timestamptz, now())`:
  NULL lets PostgreSQL own time (production), the manual clock passes its own (tests).
- A statement's result columns are the fields, in order, of its typed row (`db/rows.py`):
  rows are built positionally, and a test checks that the two agree.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

from ..errors import ConfigError
from ..records import LIVE_STATUSES, TERMINAL_STATUSES

SCHEMA_TOKEN = "__schema__"
_NAME_LINE = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_MAX_IDENTIFIER_BYTES = 63

# What a statement's text holds, left to right: what the rewrite passes over untouched
# (comments, literals, quoted identifiers, dollar-quoted bodies), a positional parameter
# (refused), or a named one: a colon after no word, digit, bracket or colon (so neither
# half of a `::` cast, nor an array slice's bound).
_LEXEME = re.compile(
    r"""
      (?P<skip>
          --[^\n]*
        | /\*.*?\*/
        | (?<![\w])[Ee]'(?:[^'\\]|\\.|'')*'
        | '(?:[^']|'')*'
        | "(?:[^"]|"")*"
        | \$(?P<tag>[A-Za-z_]\w*|)\$.*?\$(?P=tag)\$
      )
    | (?P<positional>\$\d+)
    | (?<![\w\])\[:]):(?P<name>[a-z_][a-z0-9_]*)
    """,
    re.VERBOSE | re.DOTALL,
)


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


def channel(schema: str) -> str:
    """The NOTIFY channel of `schema` (`__channel__`): channels are database-wide."""
    return f"gendurable_{schema_hash(schema)}"


def key_lock_prefix(schema: str) -> str:
    """What the claim's advisory lock of a concurrency key hashes before the key
    (`__key_lock_prefix__`): advisory locks are database-wide."""
    return f"gendurable:ck:{schema}:"


@dataclass(frozen=True, slots=True)
class Statement:
    """One named statement: `sql` as sent (`$n` placeholders), `params` the name of each."""

    name: str
    sql: str
    params: tuple[str, ...]
    """`params[i]` is the name of `$<i+1>`."""

    def args(self, **values: Any) -> tuple[Any, ...]:
        """The values in placeholder order; `TypeError` unless exactly `params` are given."""
        return self.bind(values)

    def bind(self, values: Mapping[str, Any]) -> tuple[Any, ...]:
        """`args` of a mapping already built (the stores' calls: no copy of it)."""
        params = self.params
        if len(values) == len(params):
            try:
                return tuple([values[p] for p in params])
            except KeyError:
                pass
        missing = [p for p in params if p not in values]
        unknown = sorted(set(values) - set(params))
        raise TypeError(
            f"statement {self.name!r} takes {', '.join(params) or 'no parameters'}"
            + (f"; missing {', '.join(missing)}" if missing else "")
            + (f"; unknown {', '.join(unknown)}" if unknown else "")
        )


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
        sql=_substitute(text, _tokens(schema)),
        checksum=hashlib.sha256(text.encode()).hexdigest(),
        transactional=NO_TRANSACTION.search(text) is None,
    )


def bind_names(name: str, text: str) -> tuple[str, tuple[str, ...]]:
    """`text` with each `:param` rewritten to `$n`, and the names in `$n` order.

    `ValueError` for a positional `$n` (statements name their parameters).
    """
    order: dict[str, int] = {}

    def rewrite(found: re.Match[str]) -> str:
        if found.group("positional"):
            raise ValueError(
                f"statement {name!r}: positional parameter {found.group('positional')}; "
                "name it (:name)"
            )
        param = found.group("name")
        if param is None:
            return found.group(0)
        number = order.setdefault(param, len(order) + 1)
        return f"${number}"

    return _LEXEME.sub(rewrite, text), tuple(order)


def _tokens(schema: str) -> dict[str, str]:
    return {
        SCHEMA_TOKEN: quote_schema(schema),
        "__channel__": f"'{channel(schema)}'",
        "__key_lock_prefix__": f"'{key_lock_prefix(schema)}'",
        "__live__": _status_list(LIVE_STATUSES),
        "__terminal__": _status_list(TERMINAL_STATUSES),
    }


def _status_list(statuses: tuple[str, ...]) -> str:
    return "(" + ", ".join(f"'{s}'" for s in statuses) + ")"


def _substitute(text: str, tokens: dict[str, str]) -> str:
    for token, value in tokens.items():
        text = text.replace(token, value)
    return text


def migrations(schema: str) -> list[Migration]:
    """Every migration, in version order, with the tokens substituted."""
    folder = resources.files(__package__).joinpath("migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            found.append(migration(entry.name, entry.read_text(encoding="utf-8"), schema))
    return sorted(found, key=lambda m: m.version)


def statements(schema: str) -> dict[str, Statement]:
    """Every named statement of every `*.sql` file here, for `schema` (a fresh dict)."""
    tokens = _tokens(schema)
    return {
        name: Statement(name, _substitute(sql, tokens), params)
        for name, (sql, params) in _parsed().items()
    }


@functools.cache
def _parsed() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Each statement's text, parameters rewritten, tokens not yet substituted."""
    out: dict[str, tuple[str, tuple[str, ...]]] = {}
    for name, text in _blocks():
        if name in out:
            raise RuntimeError(f"statement {name!r} is defined twice")
        out[name] = bind_names(name, text)
    return out


def _blocks() -> Iterator[tuple[str, str]]:
    for entry in sorted(resources.files(__package__).iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text()
        marks = list(_NAME_LINE.finditer(text))
        for i, mark in enumerate(marks):
            end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
            yield mark.group(1), text[mark.end() : end].strip()
