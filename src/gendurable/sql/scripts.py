"""Reading a migration that runs outside a transaction: its statements, one by one.

A file marked `-- gendurable: no-transaction` is sent a statement at a time (PostgreSQL runs
`CREATE INDEX CONCURRENTLY` only outside a transaction block), so the migrator needs its
statements split, and needs to know which of them build an index concurrently.
"""

from __future__ import annotations

import re

# What a statement's text holds, left to right: what the split passes over whole (comments,
# literals, quoted identifiers, dollar-quoted bodies), or a semicolon that ends a statement.
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
    | (?P<end>;)
    """,
    re.VERBOSE | re.DOTALL,
)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.DOTALL)
_CONCURRENT_INDEX = re.compile(
    r"""^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?P<guard>IF\s+NOT\s+EXISTS\s+)?
        (?:"(?P<quoted>(?:[^"]|"")+)"|(?P<plain>[A-Za-z_][A-Za-z0-9_$]*))\s+ON\s""",
    re.IGNORECASE | re.VERBOSE,
)
# Statements whose lock conflicts with no writer of the table: waiting for it blocks no worker.
_WAITS_HARMLESSLY = re.compile(
    r"^(?:CREATE\s+(?:UNIQUE\s+)?INDEX|DROP\s+INDEX|REINDEX\s+\w+)\s+CONCURRENTLY\b",
    re.IGNORECASE,
)


def split_statements(text: str) -> list[str]:
    """The statements of `text`, each without its semicolon; comment-only pieces dropped."""
    out: list[str] = []
    start = 0
    for found in _LEXEME.finditer(text):
        if found.group("end"):
            out.append(text[start : found.start()])
            start = found.end()
    out.append(text[start:])
    return [piece.strip() for piece in out if _code(piece)]


def _code(statement: str) -> str:
    """`statement` without its comments and surrounding blanks."""
    return _COMMENTS.sub(" ", statement).strip()


def concurrent_index(statement: str) -> str | None:
    """The name of the index a `CREATE INDEX CONCURRENTLY` statement builds, else None.

    `ValueError` for one without `IF NOT EXISTS`: a run cut short must be safe to repeat.
    """
    found = _CONCURRENT_INDEX.match(_code(statement))
    if found is None:
        return None
    name = found.group("plain") or found.group("quoted").replace('""', '"')
    if not found.group("guard"):
        raise ValueError(
            f"CREATE INDEX CONCURRENTLY {name}: write IF NOT EXISTS, so that a migration cut "
            "short can run again"
        )
    return name


def waits_harmlessly(statement: str) -> bool:
    """Whether `statement` may wait for locks as long as it needs: it builds or drops an index
    concurrently, which blocks no reader or writer while it waits."""
    return _WAITS_HARMLESSLY.match(_code(statement)) is not None
