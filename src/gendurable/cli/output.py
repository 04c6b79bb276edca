"""How commands print: readable tables for people, `--json` for scripts, one-line errors.

Tables go to stdout, errors to stderr as one line `gendurable <command>: error: <why>`,
with every DSN password masked. JSON is one document on stdout: timestamps as ISO 8601
strings in UTC, durations in seconds, stored JSON (state, payloads) embedded as stored.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TextIO

import msgspec

from ..blocked import format_utc
from ..durations import format_duration


class UserError(Exception):
    """A mistake the user can fix (unknown key, unreachable server...): one line, exit 1."""


def error_line(command: str, message: str) -> str:
    """The single line an error is reported as."""
    return f"gendurable {command}: error: {' '.join(message.split())}"


def print_error(command: str, message: str, stream: TextIO | None = None) -> None:
    """Report an error in one line on stderr."""
    print(error_line(command, message), file=stream or sys.stderr)


def _plain(value: Any) -> Any:
    """Datetimes in UTC and durations in seconds, all the way down."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def print_json(value: Any) -> None:
    """Print `value` as indented JSON (datetimes in UTC, timedeltas in seconds)."""
    print(msgspec.json.format(msgspec.json.encode(_plain(value)), indent=2).decode())


def raw_json(data: bytes | None) -> Any:
    """Stored JSON bytes, embedded as they are in `print_json` output (None stays null)."""
    return None if data is None else msgspec.Raw(data)


def compact_json(data: bytes | None) -> str:
    """Stored JSON bytes as one line of text for a table."""
    return "null" if data is None else msgspec.json.format(data, indent=0).decode()


def when(moment: datetime | None) -> str:
    """A timestamp for a table (UTC); empty for None."""
    return "" if moment is None else format_utc(moment)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: a header, a rule, one line per row; number columns align right."""
    cells = [[_cell(v) for v in row] for row in rows]
    numeric = [
        bool(rows)
        and all(isinstance(row[i], int | float) and not isinstance(row[i], bool) for row in rows)
        for i in range(len(headers))
    ]
    widths = [max([len(h)] + [len(row[i]) for row in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        out = [
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ]
        return "  ".join(out).rstrip()

    lines = [line(list(headers)), line(["-" * w for w in widths])]
    lines += [line(row) for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, timedelta):
        return format_duration(value, approximate=True)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return " ".join(str(value).split())


def fields(pairs: Iterable[tuple[str, Any]]) -> str:
    """Aligned `name  value` lines (the `show` layout); multi-line values are indented."""
    items = [(name, value) for name, value in pairs]
    width = max((len(name) for name, _ in items), default=0)
    out = []
    for name, value in items:
        text = value if isinstance(value, str) else _cell(value)
        first, *rest = text.splitlines() or [""]
        out.append(f"{name.ljust(width)}  {first}".rstrip())
        out += [f"{' ' * width}  {line}".rstrip() for line in rest]
    return "\n".join(out)
