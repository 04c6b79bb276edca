"""How the pages write values: timestamps in UTC, ages, pretty JSON, attempts "2 of 5"
(the Jinja filters)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import msgspec

from ..attempts import attempt_of, error_where
from ..blocked import format_utc
from ..durations import format_duration

MAX_JSON_SHOWN = 256 * 1024
"""Bytes of stored JSON a page shows before cutting it (a huge state stays readable)."""


def utc(moment: datetime | None) -> str:
    """`2026-12-02 10:00:03 UTC`; empty for None."""
    if moment is None:
        return ""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def minute(moment: datetime | None) -> str:
    """`2026-12-02 10:00 UTC` (seconds when not on a whole minute); empty for None."""
    return "" if moment is None else format_utc(moment)


def pretty(data: bytes | None) -> str:
    """Stored JSON bytes indented for reading; `null` for None; cut past `MAX_JSON_SHOWN`."""
    if data is None:
        return "null"
    text = msgspec.json.format(data, indent=2).decode()
    if len(text) > MAX_JSON_SHOWN:
        return text[:MAX_JSON_SHOWN] + f"\n... ({len(text) - MAX_JSON_SHOWN} more characters)"
    return text


def compact(data: bytes | None) -> str:
    """Stored JSON bytes on one line; `null` for None."""
    if data is None:
        return "null"
    text = msgspec.json.format(data, indent=0).decode()
    return text if len(text) <= 200 else text[:200] + "..."


def path_part(value: Any) -> str:
    """A value quoted for use as one segment of a URL path."""
    return quote(str(value), safe="")


FILTERS: dict[str, Callable[..., Any]] = {
    "utc": utc,
    "minute": minute,
    "age": functools.partial(format_duration, approximate=True),
    "pretty": pretty,
    "compact": compact,
    "path_part": path_part,
    "attempt_of": attempt_of,
    "error_where": error_where,
}
