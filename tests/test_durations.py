"""One writer of durations for the diagrams, the generated pages and the ages of tables and
logs (`durations.format_duration`): each keeps the words the others' tests and docs rely on."""

from __future__ import annotations

from datetime import timedelta

import pytest

from gendurable.durations import format_duration

S = timedelta(seconds=1)


@pytest.mark.parametrize(
    ("span", "diagram", "page", "age"),
    [
        (timedelta(0), "0s", "0 s", "0.0s"),
        (S / 4, "0.25s", "0.25 s", "0.2s"),
        (4 * S, "4s", "4 s", "4.0s"),
        (12.7 * S, "12.7s", "12.7 s", "12s"),
        (timedelta(minutes=2), "2m", "2 min", "2m"),
        (timedelta(minutes=4, seconds=12), "4m12s", "4 min 12 s", "4m 12s"),
        (timedelta(hours=1, minutes=30), "1h30m", "1 h 30 min", "1h 30m"),
        (timedelta(days=1), "1d", "1 day", "1d"),
        (timedelta(days=3), "3d", "3 days", "3d"),
        (
            timedelta(days=2, hours=3, minutes=4, seconds=5),
            "2d3h4m5s",
            "2 days 3 h 4 min 5 s",
            "2d 3h",
        ),
    ],
)
def test_durations_each_style_writes_its_words(
    span: timedelta, diagram: str, page: str, age: str
) -> None:
    assert format_duration(span, sep="") == diagram
    assert format_duration(span, words=True) == page
    assert format_duration(span, approximate=True) == age


def test_durations_none_is_empty_and_a_negative_span_is_signed() -> None:
    assert format_duration(None, approximate=True) == ""
    assert format_duration(-4 * S, approximate=True) == "-4.0s"
    assert format_duration(-timedelta(minutes=90)) == "-1h 30m"
