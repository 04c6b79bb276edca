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


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_LONGEST = 100 * 366 * 86400


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `2h`, `1d`, `1w`, or several together (`1h30m`); `ValueError` otherwise."""
    rest = text.strip().lower()
    if not rest:
        raise ValueError("a duration such as 30m, 2h or 1d is needed")
    seconds = 0
    while rest:
        digits = len(rest) - len(rest.lstrip("0123456789"))
        if digits == 0 or digits == len(rest) or rest[digits] not in _UNITS:
            raise ValueError(
                f"{text!r} is not a duration: write a number and a unit (s, m, h, d or w), "
                "such as 30m, 2h or 1d12h"
            )
        seconds += int(rest[:digits]) * _UNITS[rest[digits]]
        rest = rest[digits + 1 :]
    if seconds > _LONGEST:
        raise ValueError(f"{text!r} is longer than 100 years")
    return timedelta(seconds=seconds)
