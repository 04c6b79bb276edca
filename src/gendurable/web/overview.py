"""The overview page: counts by workflow x status x queue, queues behind (and paused),
throughput, nodes, schedules.

Its numbers are read by six statements (one of them a pass over the table: the counts),
so they are cached for the refresh interval and shared by every viewer: ten open tabs
cost the database what one does. The live part of the page is re-fetched as an HTML
fragment every `refresh` seconds by the page's small script.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..db.queue_store import QueueStore
from ..db.rows import NodeSummary, OldestDue, StoredSchedule
from ..db.schedule_store import ScheduleStore
from ..records import ALL_STATUSES, QueuePause
from .chart import Throughput, throughput, throughput_svg
from .params import text
from .site import Site

NOTICES = {
    "pause": "Queue paused: no engine starts a new step of it until it is resumed.",
    "resume": "Queue resumed: its due instances run again.",
}
"""What a queue action says after its redirect (`/?done=...`); other values show nothing."""

THROUGHPUT_MINUTES = 60
NODES_SHOWN = 50
"""Live nodes listed on the overview (a larger fleet says how many more there are)."""

_decode = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class GridRow:
    """Counts of one (workflow, queue) by status."""

    workflow: str
    queue: str
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One queue: due rows, the one waiting longest, the engines that run it, and its pause
    (None: not paused)."""

    queue: str
    due: int
    oldest: OldestDue | None
    engines: int
    slots: int
    paused: QueuePause | None = None


@dataclass(frozen=True, slots=True)
class NodeRow:
    """One live engine."""

    name: str
    host: str
    pid: int
    queues: dict[str, int]
    workflows: list[str]
    version: str
    started_at: datetime
    silent_for: timedelta


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """One schedule: its definition in words, state, ticks and the last tick's instance."""

    name: str
    workflow: str
    description: str
    state: str
    next_at: datetime | None
    last_at: datetime | None
    last_id: int | None
    last_status: str | None


def schedule_rows(rows: Sequence[StoredSchedule]) -> list[ScheduleRow]:
    """The rows of `schedules_list` as the pages show them (no next tick while paused or
    disabled)."""
    out = []
    for r in rows:
        state = "disabled" if r.disabled_at else "paused" if r.paused else "active"
        out.append(
            ScheduleRow(
                name=r.name,
                workflow=r.workflow,
                description=str(_decode.decode(r.spec).get("description", "")),
                state=state,
                next_at=r.next_at if state == "active" else None,
                last_at=r.last_at,
                last_id=r.last_instance_id,
                last_status=r.last_status,
            )
        )
    return out


@dataclass(frozen=True, slots=True)
class OverviewData:
    """Everything the overview shows, as read at `read_at`."""

    grid: list[GridRow]
    totals: dict[str, int]
    queues: list[QueueRow]
    throughput: Throughput
    chart: str
    nodes: list[NodeRow]
    more_nodes: bool
    read_at: datetime
    schedules: list[ScheduleRow] = field(default_factory=list)
    statuses: Sequence[str] = field(default=ALL_STATUSES)


class Overview:
    """Reads the overview's numbers, at most once per refresh interval for all viewers."""

    def __init__(self, site: Site) -> None:
        self.site = site
        self._cached: tuple[float, OverviewData] | None = None
        self._reading: asyncio.Lock | None = None

    async def get(self) -> OverviewData:
        """The numbers, read now or shared from a read less than `refresh` seconds old."""
        ttl = self.site.settings.refresh
        if self._cached is not None and time.monotonic() - self._cached[0] < ttl:
            return self._cached[1]
        if self._reading is None:
            self._reading = asyncio.Lock()
        async with self._reading:  # one read at a time; the others wait and share it
            if self._cached is not None and time.monotonic() - self._cached[0] < ttl:
                return self._cached[1]
            data = await self._read()
            self._cached = (time.monotonic(), data)
            return data

    def forget(self) -> None:
        """Drop the shared numbers: an action changed them (the next view reads again)."""
        self._cached = None

    async def _read(self) -> OverviewData:
        store = await self.site.store()
        counts = await store.status_counts(now=None)
        nodes = await store.nodes_page(now=None, after_id=None, limit=NODES_SHOWN + 1)
        due_queues = sorted({r.queue for r in counts if r.oldest_due is not None})
        oldest = await store.queue_oldest_due(queues=due_queues, now=None) if due_queues else []
        ended = await store.throughput_by_minute(now=None, minutes=THROUGHPUT_MINUTES)
        schedules = await ScheduleStore(store.db).schedules_list()
        pauses = {
            r.queue: QueuePause(r.queue, r.paused_at, r.paused_by)
            for r in await QueueStore(store.db).queue_pauses()
        }
        first = counts[:1] or ended[:1]
        now: datetime = first[0].now if first else datetime.now(UTC)

        grid: dict[tuple[str, str], dict[str, int]] = {}
        totals = dict.fromkeys(ALL_STATUSES, 0)
        due: dict[str, int] = {}
        for r in counts:
            grid.setdefault((r.workflow, r.queue), {})[r.status] = r.count
            totals[r.status] = totals.get(r.status, 0) + r.count
            if r.oldest_due is not None:
                due[r.queue] = due.get(r.queue, 0) + r.count
            else:
                due.setdefault(r.queue, 0)
        node_rows = [_node(n) for n in nodes[:NODES_SHOWN]]
        served: dict[str, list[int]] = {}
        for n in node_rows:
            for queue, concurrency in n.queues.items():
                served.setdefault(queue, []).append(concurrency)
        by_queue = {r.queue: r for r in oldest}
        queues = [
            QueueRow(
                queue=q,
                due=due.get(q, 0),
                oldest=by_queue.get(q),
                engines=len(served.get(q, [])),
                slots=sum(served.get(q, [])),
                paused=pauses.get(q),
            )
            for q in sorted(set(due) | set(served) | set(pauses))
        ]
        data = throughput(ended, now, THROUGHPUT_MINUTES)
        return OverviewData(
            grid=[GridRow(w, q, c) for (w, q), c in sorted(grid.items())],
            totals=totals,
            queues=queues,
            throughput=data,
            chart=throughput_svg(data),
            nodes=node_rows,
            more_nodes=len(nodes) > NODES_SHOWN,
            read_at=now,
            schedules=schedule_rows(schedules),
        )


def _node(row: NodeSummary) -> NodeRow:
    return NodeRow(
        name=row.name,
        host=row.host,
        pid=row.pid,
        queues={str(q): int(c) for q, c in _decode.decode(row.queues).items()},
        workflows=list(_decode.decode(row.workflows)),
        version=row.version,
        started_at=row.started_at,
        silent_for=row.silent_for,
    )


def routes(site: Site, overview: Overview) -> list[BaseRoute]:
    """`/` (the page) and `/overview/live` (its refreshed part)."""

    async def page(request: Request) -> Response:
        data = await overview.get()
        done = text(request.query_params.get("done"), "done")
        return site.render(
            request,
            "overview.html",
            {"data": data, "page": "overview", "notice": NOTICES.get(done or "")},
        )

    async def live(request: Request) -> Response:
        data = await overview.get()
        return site.render(request, "overview_live.html", {"data": data})

    return [
        Route("/", page, methods=["GET"], name="overview"),
        Route("/overview/live", live, methods=["GET"], name="overview_live"),
    ]
