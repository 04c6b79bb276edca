"""Throughput over the last hour as a small stacked bar chart in inline SVG.

One bar per minute, stacked by how the instances ended (done, failed, cancelled). No
script and no external library: the chart is markup, with a `<title>` on every bar that
browsers show on hover.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from xml.sax.saxutils import escape

from ..db.rows import EndedPerMinute

ENDINGS = ("done", "failed", "cancelled")
"""The terminal statuses, bottom to top in each bar."""

_WIDTH = 640.0
_HEIGHT = 120.0
_LEFT = 34.0
_BOTTOM = 18.0
_TOP = 8.0


@dataclass(frozen=True, slots=True)
class Throughput:
    """Instances ended per minute over a window: `bins[i]` maps status to count."""

    start: datetime
    minutes: int
    bins: list[dict[str, int]]

    @property
    def total(self) -> int:
        """How many ended in the whole window."""
        return sum(sum(b.values()) for b in self.bins)

    def by_status(self) -> dict[str, int]:
        """How many ended in the window, per terminal status."""
        out = dict.fromkeys(ENDINGS, 0)
        for b in self.bins:
            for status, count in b.items():
                out[status] = out.get(status, 0) + count
        return out


def throughput(rows: Iterable[EndedPerMinute], now: datetime, minutes: int) -> Throughput:
    """Bin the rows of `throughput_by_minute` into `minutes` bins."""
    start = now - timedelta(minutes=minutes)
    bins: list[dict[str, int]] = [{} for _ in range(minutes)]
    for row in rows:
        index = int((row.minute - start) // timedelta(minutes=1))
        if 0 <= index < minutes:
            bins[index][row.status] = bins[index].get(row.status, 0) + row.count
    return Throughput(start, minutes, bins)


def throughput_svg(data: Throughput) -> str:
    """The chart as an `<svg>` element (trusted markup)."""
    peak = max((sum(b.values()) for b in data.bins), default=0)
    scale_top = max(peak, 1)
    plot_w = _WIDTH - _LEFT - 4
    plot_h = _HEIGHT - _BOTTOM - _TOP
    bar_w = plot_w / data.minutes
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {_WIDTH:.0f} {_HEIGHT:.0f}" width="{_WIDTH:.0f}" height="{_HEIGHT:.0f}" '
        f'aria-label="instances ended per minute over the last {data.minutes} minutes">',
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP + plot_h}" x2="{_WIDTH - 4}" '
        f'y2="{_TOP + plot_h}"/>',
        f'<text class="tick" x="{_LEFT - 4}" y="{_TOP + 8}" text-anchor="end">{peak}</text>',
        f'<text class="tick" x="{_LEFT - 4}" y="{_TOP + plot_h}" text-anchor="end">0</text>',
        f'<text class="tick" x="{_LEFT}" y="{_HEIGHT - 4}">-{data.minutes} min</text>',
        f'<text class="tick" x="{_WIDTH - 4}" y="{_HEIGHT - 4}" text-anchor="end">now</text>',
    ]
    for i, counts in enumerate(data.bins):
        total = sum(counts.values())
        if not total:
            continue
        x = _LEFT + i * bar_w + 0.5
        minute = data.start + timedelta(minutes=i)
        label = f"{minute:%H:%M} UTC: " + ", ".join(
            f"{counts.get(s, 0)} {s}" for s in ENDINGS if counts.get(s)
        )
        parts.append(f'<g class="bar"><title>{escape(label)}</title>')
        y = _TOP + plot_h
        for status in ENDINGS:
            count = counts.get(status, 0)
            if not count:
                continue
            h = plot_h * count / scale_top
            y -= h
            parts.append(
                f'<rect class="{status}" x="{x:.1f}" y="{y:.1f}" '
                f'width="{max(bar_w - 1, 1):.1f}" height="{h:.1f}"/>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)
