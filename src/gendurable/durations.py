"""Durations for people: written (diagrams, generated pages, tables, logs) and read (the
command line's `--since 2h`)."""

from __future__ import annotations

from datetime import timedelta

_TEN_SECONDS = timedelta(seconds=10)
_LETTERS = (("d", "d"), ("h", "h"), ("m", "m"), ("s", "s"))
_WORDS = ((" day", " days"), (" h", " h"), (" min", " min"), (" s", " s"))


def format_duration(
    span: timedelta | None, *, words: bool = False, sep: str = " ", approximate: bool = False
) -> str:
    """A duration for people; empty for None, a minus sign before a negative one.

    Exact by default, to the microsecond: `2d`, `1h 30m`, `0.25s`; `sep=""` writes `1h30m`
    (a Mermaid label holds no colon, and the diagrams keep their labels short). `words=True`
    writes the units of the generated pages: `3 days`, `1 h 30 min`, `0.5 s`.
    `approximate=True` writes an age, as tables and log lines show one: the two largest
    units, in whole seconds from 10 s up and in tenths below (`2d 3h`, `5m 12s`, `4.0s`).
    """
    if span is None:
        return ""
    if span < timedelta(0):
        return "-" + format_duration(-span, words=words, sep=sep, approximate=approximate)
    units = _WORDS if words else _LETTERS
    if approximate and span < _TEN_SECONDS:
        return f"{span.total_seconds():.1f}{units[3][0]}"
    minutes, seconds = divmod(span.seconds, 60)
    hours, minutes = divmod(minutes, 60)
    counts = (span.days, hours, minutes, seconds)
    parts = [f"{n}{unit[n > 1]}" for n, unit in zip(counts[:3], units, strict=False) if n]
    fraction = "" if approximate else f".{span.microseconds:06d}".rstrip("0").rstrip(".")
    if seconds or fraction or not parts:
        parts.append(f"{seconds}{fraction}{units[3][0]}")
    return sep.join(parts[:2] if approximate else parts)


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
