"""The overview's throughput chart: minutes binned, bars stacked by ending."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from gendurable.db.rows import EndedPerMinute
from gendurable.web.chart import throughput, throughput_svg

SVG = "{http://www.w3.org/2000/svg}"
NOW = datetime(2026, 11, 2, 10, 30, 15, tzinfo=UTC)


def _row(minutes_ago: int, status: str, count: int) -> EndedPerMinute:
    start = NOW - timedelta(minutes=60)  # the statement bins from now - window
    return EndedPerMinute(start + timedelta(minutes=60 - minutes_ago), status, count, NOW)


def test_web_chart_bins_rows_by_minute_and_status() -> None:
    data = throughput(
        [_row(1, "done", 5), _row(1, "failed", 2), _row(60, "done", 1), _row(61, "done", 9)],
        NOW,
        60,
    )

    assert data.total == 8  # the row older than the window is left out
    assert data.bins[59] == {"done": 5, "failed": 2}
    assert data.bins[0] == {"done": 1}
    assert data.by_status() == {"done": 6, "failed": 2, "cancelled": 0}


def test_web_chart_stacks_each_minute_and_scales_to_the_busiest() -> None:
    data = throughput([_row(1, "done", 6), _row(1, "cancelled", 2), _row(30, "failed", 4)], NOW, 60)

    root = ET.fromstring(throughput_svg(data))
    bars = root.findall(f"{SVG}g[@class='bar']")

    assert len(bars) == 2
    busiest = bars[1]
    title = busiest.find(f"{SVG}title")
    assert title is not None
    assert title.text == "10:29 UTC: 6 done, 2 cancelled"
    heights = {r.attrib["class"]: float(r.attrib["height"]) for r in busiest.iter(f"{SVG}rect")}
    assert heights["done"] == 3 * heights["cancelled"]
    failed = bars[0].find(f"{SVG}rect")
    assert failed is not None
    assert float(failed.attrib["height"]) * 2 == heights["done"] + heights["cancelled"]


def test_web_chart_of_an_idle_hour_has_no_bars() -> None:
    root = ET.fromstring(throughput_svg(throughput([], NOW, 60)))

    assert root.findall(f"{SVG}g[@class='bar']") == []
