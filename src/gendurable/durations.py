"""Durations written for people (the command line's tables and the dashboard's pages)."""

from __future__ import annotations

from datetime import timedelta


def age(span: timedelta | None) -> str:
    """A duration: `2d 3h`, `5m 12s`, `0.4s` (the two largest units); empty for None."""
    if span is None:
        return ""
    seconds = span.total_seconds()
    if seconds < 0:
        return f"-{age(-span)}"
    if seconds < 10:
        return f"{seconds:.1f}s"
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s"))
    return " ".join([f"{n}{unit}" for n, unit in parts if n][:2])
