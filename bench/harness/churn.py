"""churn: bloat under steady churn. Does the engine slow down, or its tables keep growing,
when instances are inserted, updated and deleted for a long time?

One engine runs `ThreeSteps` (w1's `a -> b -> c -> done`) at `concurrency` while a feeder in
the same process starts instances with `start_many` in batches of `batch`, keeping at most
`backlog` started-but-unfinished instances; the collector runs every `gc_interval` and
deletes terminal instances older than `gc_retention`. So `instances` sees, per instance, an
insert, four updates (the claim, two steps run back to back, the finish) and a delete, at a
steady rate, with autovacuum as the server runs it (this module changes no setting; it
prints the ones that matter).

Every `every` finished instances the window closes: the feeder and the claims pause, the
running steps finish, and the window's line is printed with its throughput, the CPU a step
cost (this process and the server's, autovacuum included), the WAL it wrote, the CPU other
processes of the machine took meanwhile (the noise), the sizes of `instances` and `signals`
and of each of their indexes, their `pg_stat_user_tables` counters (dead and live tuples,
autovacuum runs, HOT updates), and the sizes of a bloat-free copy of the live rows (a
temporary table with the same indexes, rolled back; its read prunes pages as any reader
does). Then floor(8) is measured (2 s) and the run resumes. Each window's ratio is to the
mean of the floor measured just before it and just after it. The closing line compares the
end with the start (the median of the last windows against the first ones): throughput as
a ratio to the floor, the CPU and WAL a step cost, and how much each relation grew.
The last window drains the backlog: its live rows fall, so its size ratios to the copy rise.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg

import gendurable as gd

from .ab import AbError, working_commit
from .counting import COUNTER
from .engines import bench_engine
from .env import BenchEnv
from .floor import floor
from .flows import QUEUE, ThreeSteps
from .meters import CpuWindow
from .report import emit

SETTINGS = (
    "autovacuum",
    "autovacuum_naptime",
    "autovacuum_max_workers",
    "autovacuum_vacuum_threshold",
    "autovacuum_vacuum_scale_factor",
    "autovacuum_vacuum_insert_threshold",
    "autovacuum_vacuum_insert_scale_factor",
    "autovacuum_analyze_scale_factor",
    "autovacuum_vacuum_cost_delay",
    "autovacuum_vacuum_cost_limit",
    "vacuum_cost_limit",
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "fsync",
    "synchronous_commit",
)
"""Server settings printed at the start of the run (none is changed)."""

SIZES = """
SELECT c.relname AS name,
       pg_relation_size(c.oid) AS heap_bytes,
       pg_indexes_size(c.oid) AS indexes_bytes,
       pg_total_relation_size(c.oid) AS total_bytes,
       (SELECT jsonb_object_agg(ic.relname, pg_relation_size(ic.oid))
          FROM pg_index x JOIN pg_class ic ON ic.oid = x.indexrelid
         WHERE x.indrelid = c.oid) AS index_bytes,
       to_jsonb(s) AS stats
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE n.nspname = $1 AND c.relname = ANY ($2::text[])
"""

TABLES = ("instances", "signals")

COUNTERS = (
    "n_live_tup",
    "n_dead_tup",
    "n_tup_ins",
    "n_tup_upd",
    "n_tup_hot_upd",
    "n_tup_newpage_upd",
    "n_tup_del",
    "autovacuum_count",
    "autoanalyze_count",
    "vacuum_count",
    "last_autovacuum",
    "last_autoanalyze",
    "total_autovacuum_time",
)
"""The `pg_stat_user_tables` columns each window reports (those the server has)."""


def check(args: Any) -> str | None:
    """What is wrong with the churn options, in one line, or None."""
    if args.against:
        return "churn is not an A/B workload: drop --against"
    if args.with_peers:
        return "churn runs gendurable only: drop --with-peers"
    if args.instances is not None and args.instances < 1:
        return f"--instances must be at least 1, got {args.instances}"
    if args.every < 1:
        return f"--every must be at least 1, got {args.every}"
    if min(args.concurrency) < 1:
        return f"--concurrency must be at least 1, got {min(args.concurrency)}"
    if not 1 <= args.batch <= args.backlog:
        return f"--batch must be between 1 and --backlog ({args.backlog}), got {args.batch}"
    if args.gc_retention < 0:
        return f"--gc-retention must be >= 0 seconds, got {args.gc_retention}"
    if not 0 < args.gc_interval <= 3600:
        return f"--gc-interval must be > 0 and at most 3600 seconds, got {args.gc_interval}"
    return None


@dataclass
class Progress:
    """Steps and finished instances, counted from the engine's `step.stop` events; `reach(n)`
    returns once `n` instances have finished."""

    steps: int = 0
    finished: int = 0
    _waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)

    def attach(self, engine: gd.Engine) -> None:
        engine.telemetry.attach("bench.churn", self._on_stop, [("step", "stop")])

    def _on_stop(self, event: Any, measurements: Any, meta: Any) -> None:
        self.steps += 1
        if meta["decision"] != "Finish":
            return
        self.finished += 1
        if self._waiters and self._waiters[0][0] <= self.finished:
            due = [w for w in self._waiters if w[0] <= self.finished]
            self._waiters = [w for w in self._waiters if w[0] > self.finished]
            for _, future in due:
                if not future.done():
                    future.set_result(None)

    async def reach(self, target: int) -> None:
        if self.finished >= target:
            return
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        self._waiters.sort(key=lambda w: w[0])
        await future


class Feeder:
    """Starts `total` instances with `start_many`, `batch` at a time, never more than
    `backlog` unfinished; `pause()` / `resume()` hold it between windows."""

    def __init__(
        self, engine: gd.Engine, progress: Progress, total: int, batch: int, backlog: int
    ) -> None:
        self.engine = engine
        self.progress = progress
        self.total = total
        self.batch = batch
        self.backlog = backlog
        self.started = 0
        self._go = asyncio.Event()
        self._go.set()
        self._idle = asyncio.Event()
        self._idle.set()

    async def run(self) -> None:
        while self.started < self.total:
            await self._go.wait()
            n = min(self.batch, self.total - self.started)
            # Room for the whole batch: wait until enough of the backlog has finished.
            await self.progress.reach(self.started + n - self.backlog)
            await self._go.wait()
            self._idle.clear()
            try:
                entries = [ThreeSteps.new(key=f"c{self.started + i}") for i in range(n)]
                await ThreeSteps.start_many(entries, engine=self.engine)
                self.started += n
            finally:
                self._idle.set()

    async def pause(self) -> None:
        """No start after this returns (one in flight finishes first)."""
        self._go.clear()
        await self._idle.wait()

    def resume(self) -> None:
        self._go.set()


async def settings(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch(
        "SELECT name, current_setting(name) AS value FROM pg_settings "
        "WHERE name = ANY ($1::text[])",
        list(SETTINGS),
    )
    return {r["name"]: r["value"] for r in rows}


async def sizes(conn: asyncpg.Connection, schema: str) -> dict[str, dict[str, Any]]:
    """Per table: heap, indexes (each and all), total bytes and its counters."""
    out: dict[str, dict[str, Any]] = {}
    for row in await conn.fetch(SIZES, schema, list(TABLES)):
        stats = _json(row["stats"])
        out[row["name"]] = {
            "heap_bytes": row["heap_bytes"],
            "indexes_bytes": row["indexes_bytes"],
            "total_bytes": row["total_bytes"],
            "index_bytes": dict(sorted(_json(row["index_bytes"]).items())),
            **{name: stats[name] for name in COUNTERS if name in stats},
        }
    return out


def _json(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value or {})


def _machine_busy() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine so far (all cores, from /proc/stat;
    steal counts as busy: another guest had the core)."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    total = sum(fields[:8])
    return (total - idle) / _TICK, total / _TICK


_TICK = os.sysconf("SC_CLK_TCK")


@dataclass
class Window:
    """What one window cost besides the engine's CPU: the machine's CPU (so the load of
    other processes is known) and the WAL written."""

    cpu: CpuWindow
    busy0: float = 0.0
    wal0: int = 0
    others_cores: float = 0.0
    wal_bytes: int = 0

    async def start(self, conn: asyncpg.Connection) -> Window:
        self.wal0 = await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        self.busy0 = _machine_busy()[0]
        self.cpu.start()
        return self

    async def stop(self, conn: asyncpg.Connection) -> Window:
        self.cpu.stop()
        busy = _machine_busy()[0] - self.busy0
        ours = self.cpu.client_s + (self.cpu.server_s or 0.0)
        self.others_cores = max(0.0, (busy - ours) / self.cpu.wall_s)
        wal = await conn.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")
        self.wal_bytes = int(wal - self.wal0)
        return self


async def fresh_copy(conn: asyncpg.Connection, schema: str) -> dict[str, Any]:
    """The sizes of a bloat-free `instances` holding the same live rows: a temporary copy,
    its indexes built anew from the same definitions, in a transaction rolled back."""
    table = f"{schema}.instances"
    defs = await conn.fetch(
        "SELECT ic.relname AS name, pg_get_indexdef(x.indexrelid) AS def FROM pg_index x "
        "JOIN pg_class ic ON ic.oid = x.indexrelid WHERE x.indrelid = $1::regclass",
        f'"{schema}".instances',
    )
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(f'CREATE TEMP TABLE churn_fresh AS SELECT * FROM "{schema}".instances')
        for d in defs:
            sql = d["def"].replace(f" ON {table} ", " ON churn_fresh ")
            if sql == d["def"]:
                raise RuntimeError(f"unexpected index definition: {sql}")
            await conn.execute(sql)
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM churn_fresh) AS rows, "
            "pg_relation_size('churn_fresh') AS heap_bytes, "
            "pg_indexes_size('churn_fresh') AS indexes_bytes, "
            "(SELECT jsonb_object_agg(ic.relname, pg_relation_size(ic.oid)) FROM pg_index x "
            " JOIN pg_class ic ON ic.oid = x.indexrelid "
            " WHERE x.indrelid = 'churn_fresh'::regclass) AS index_bytes"
        )
    finally:
        await tx.rollback()
    return {
        "rows": row["rows"],
        "heap_bytes": row["heap_bytes"],
        "indexes_bytes": row["indexes_bytes"],
        "index_bytes": dict(sorted(_json(row["index_bytes"]).items())),
    }


def _rss_mb() -> float:
    pages = int(open("/proc/self/statm").read().split()[1])  # noqa: SIM115
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


def _hot(now: dict[str, Any], before: dict[str, Any]) -> float | None:
    updates = now["n_tup_upd"] - before.get("n_tup_upd", 0)
    hot = now["n_tup_hot_upd"] - before.get("n_tup_hot_upd", 0)
    return round(hot / updates, 3) if updates else None


async def run(
    env: BenchEnv,
    *,
    instances: int,
    every: int,
    concurrency: int,
    backlog: int,
    batch: int,
    gc_retention: float,
    gc_interval: float,
) -> None:
    check = await asyncpg.connect(env.dsn)
    try:
        try:
            commit, dirty = working_commit()
        except AbError:  # not run from a git checkout
            commit, dirty = None, None
        emit(
            bench="churn-settings",
            commit=commit,
            engine_dirty=dirty,
            server=await settings(check),
            instances=instances,
            every=every,
            concurrency=concurrency,
            backlog=backlog,
            batch=batch,
            gc_retention_s=gc_retention,
            gc_interval_s=gc_interval,
        )
        async with bench_engine(
            env.dsn,
            [ThreeSteps],
            {QUEUE: concurrency},
            gc_retention=timedelta(seconds=gc_retention),
            gc_interval=timedelta(seconds=gc_interval),
        ) as (engine, _):
            began = time.perf_counter()
            windows = await _windows(
                env, engine, check, instances, every, concurrency, backlog, batch
            )
            wall = time.perf_counter() - began
    finally:
        await check.close()
    _close(windows, wall)


async def _windows(
    env: BenchEnv,
    engine: gd.Engine,
    check: asyncpg.Connection,
    instances: int,
    every: int,
    concurrency: int,
    backlog: int,
    batch: int,
) -> list[dict[str, Any]]:
    progress = Progress()
    progress.attach(engine)
    scheduler = engine.schedulers[QUEUE]
    warm = [ThreeSteps.new(key=f"warm{i}") for i in range(concurrency)]
    await ThreeSteps.start_many(warm, engine=engine)
    await progress.reach(len(warm))
    base_finished = progress.finished
    feeder = Feeder(engine, progress, instances, batch, backlog)
    feeder.total += base_finished  # the warm-up's instances count as finished already
    feeder.started = base_finished
    before_stats = await sizes(check, engine.schema)
    start_sizes = before_stats
    floor_before = await floor(env.dsn, 8, seconds=2.0)
    windows: list[dict[str, Any]] = []
    feeding = asyncio.create_task(feeder.run(), name="churn-feeder")
    try:
        done = 0
        while done < instances:
            target = min(done + every, instances)
            COUNTER.reset()
            window = await Window(CpuWindow(env.postmaster)).start(check)
            steps0, finished0 = progress.steps, progress.finished
            scheduler.resume_claiming()
            feeder.resume()
            await _until(progress.reach(base_finished + target), feeding)
            await feeder.pause()
            scheduler.stop_claiming()
            await scheduler.idle()
            await window.stop(check)
            steps = progress.steps - steps0
            done = progress.finished - base_finished
            now = await sizes(check, engine.schema)
            fresh = await fresh_copy(check, engine.schema)
            floor_after = await floor(env.dsn, 8, seconds=2.0)
            line = _window_line(
                len(windows) + 1,
                window,
                steps=steps,
                finished=progress.finished - finished0,
                done=done,
                started=feeder.started - base_finished,
                now=now,
                before=before_stats,
                fresh=fresh,
            )
            line["sizes"] = now
            env.report.hold()
            env.report.add(line)
            env.report.release(floor_before, floor_after)
            windows.append(line)
            before_stats, floor_before = now, floor_after
    finally:
        feeding.cancel()
        await asyncio.gather(feeding, return_exceptions=True)
    windows.insert(0, {"window": 0, "finished": 0, "sizes": start_sizes})
    return windows


async def _until(waiting: Any, feeding: asyncio.Task[None]) -> None:
    """Await `waiting`, but fail at once if the feeder failed."""
    wait = asyncio.ensure_future(waiting)
    await asyncio.wait({wait, feeding}, return_when=asyncio.FIRST_COMPLETED)
    if not wait.done() and feeding.done() and feeding.exception() is not None:
        wait.cancel()
        feeding.result()  # raises what stopped it
    await wait


def _window_line(
    number: int,
    window: Window,
    *,
    steps: int,
    finished: int,
    done: int,
    started: int,
    now: dict[str, dict[str, Any]],
    before: dict[str, dict[str, Any]],
    fresh: dict[str, Any],
) -> dict[str, Any]:
    inst = now["instances"]
    cpu = window.cpu
    per = cpu.per(max(steps, 1))
    return {
        "bench": "churn",
        "system": "gendurable",
        "variant": f"window {number}",
        "window": number,
        "finished": done,
        "started": started,
        "seconds": round(cpu.wall_s, 2),
        "steps": steps,
        "rate": round(steps / cpu.wall_s),
        "unit": "steps/s",
        "instances_per_s": round(finished / cpu.wall_s),
        "statements_per_step": round(COUNTER.total / max(steps, 1), 4),
        "client_cpu_ms_per_step": per["client_cpu_ms_per"],
        "server_cpu_ms_per_step": per["server_cpu_ms_per"],
        "wal_bytes_per_step": round(window.wal_bytes / max(steps, 1)),
        "other_processes_cores": round(window.others_cores, 2),
        "client_rss_mb": _rss_mb(),
        "instances_heap_bytes": inst["heap_bytes"],
        "instances_indexes_bytes": inst["indexes_bytes"],
        "instances_total_bytes": inst["total_bytes"],
        "signals_total_bytes": now["signals"]["total_bytes"],
        "live_rows": fresh["rows"],
        "heap_vs_fresh_copy": round(inst["heap_bytes"] / max(fresh["heap_bytes"], 8192), 2),
        "indexes_vs_fresh_copy": round(
            inst["indexes_bytes"] / max(fresh["indexes_bytes"], 8192), 2
        ),
        "fresh_copy": fresh,
        "n_live_tup": inst.get("n_live_tup"),
        "n_dead_tup": inst.get("n_dead_tup"),
        "autovacuum_count": inst.get("autovacuum_count"),
        "last_autovacuum": _iso(inst.get("last_autovacuum")),
        "hot_update_ratio_window": _hot(inst, before.get("instances", {})),
        "hot_update_ratio_run": _hot(inst, {}),
    }


def _iso(value: Any) -> str | None:
    return None if value is None else str(value)


def _growth(windows: list[dict[str, Any]], k: int, pick: Any) -> dict[str, Any]:
    """Growth of one size over the first `k` windows and over the last `k`."""
    values = [pick(w["sizes"]) for w in windows]
    first = values[k] - values[0]
    last = values[-1] - values[-1 - k]
    return {
        "start": values[0],
        "after_first": values[k],
        "peak": max(values),
        "end": values[-1],
        "growth_first": first,
        "growth_last": last,
        "last_vs_first": round(last / first, 3) if first > 0 else None,
    }


def _close(windows: list[dict[str, Any]], wall: float) -> None:
    measured = windows[1:]
    n = len(measured)
    if n == 0:
        return
    k = min(3, max(1, n // 2))
    first, last = measured[:k], measured[-k:]

    def median(values: list[float]) -> float:
        ordered = sorted(values)
        mid = len(ordered) // 2
        return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2

    start_ratio = median([w["ratio_to_floor8"] for w in first])
    end_ratio = median([w["ratio_to_floor8"] for w in last])
    start_rate = median([w["rate"] for w in first])
    end_rate = median([w["rate"] for w in last])

    def cpu(w: dict[str, Any]) -> float:
        return float(w["client_cpu_ms_per_step"] + (w["server_cpu_ms_per_step"] or 0.0))

    # The machine's noise cancels out of the CPU a step costs (client + server, autovacuum
    # included): the same work at the end as at the start costs the same, unless bloat
    # makes PostgreSQL read or write more for it.
    start_cpu = median([cpu(w) for w in first])
    end_cpu = median([cpu(w) for w in last])
    start_wal = median([w["wal_bytes_per_step"] for w in first])
    end_wal = median([w["wal_bytes_per_step"] for w in last])
    relations: dict[str, dict[str, Any]] = {}
    for table in TABLES:
        relations[f"{table} total"] = _growth(windows, k, lambda s, t=table: s[t]["total_bytes"])
        relations[f"{table} heap"] = _growth(windows, k, lambda s, t=table: s[t]["heap_bytes"])
        for index in windows[-1]["sizes"][table]["index_bytes"]:
            relations[index] = _growth(
                windows, k, lambda s, t=table, i=index: s[t]["index_bytes"].get(i, 0)
            )
    total = relations["instances total"]
    # Levelled off: the last k windows added at most a tenth of what the first k added.
    levelled = total["growth_last"] <= 0.1 * max(total["growth_first"], 0)
    # Autovacuum truncates the heap's empty tail now and then, so a size goes down and up
    # again between its visits, and windows shorter than its cadence (naptime) catch it on
    # the way up. The highest size of the second half of the run against that of the first
    # half does not depend on where a window falls in that cycle: at most 1.1 is level.
    half = max(1, len(windows) // 2)
    totals = [w["sizes"]["instances"]["total_bytes"] for w in windows]
    peak_first, peak_second = max(totals[1 : half + 1] or totals), max(totals[half + 1 :] or totals)
    peaks = round(peak_second / peak_first, 3) if peak_first > 0 else None
    final = windows[-1]["sizes"]["instances"]
    emit(
        bench="churn-summary",
        windows=n,
        compared_windows=k,
        instances=measured[-1]["finished"],
        seconds=round(sum(w["seconds"] for w in measured), 1),
        wall_seconds_with_floors=round(wall, 1),
        start_ratio_to_floor8=start_ratio,
        end_ratio_to_floor8=end_ratio,
        end_vs_start=round(end_ratio / start_ratio, 3),
        end_vs_start_raw_rate=round(end_rate / start_rate, 3),
        cpu_ms_per_step_start=round(start_cpu, 4),
        cpu_ms_per_step_end=round(end_cpu, 4),
        cpu_per_step_end_vs_start=round(end_cpu / start_cpu, 3),
        wal_bytes_per_step_start=start_wal,
        wal_bytes_per_step_end=end_wal,
        other_processes_cores_start=median([w["other_processes_cores"] for w in first]),
        other_processes_cores_end=median([w["other_processes_cores"] for w in last]),
        target_end_vs_start=0.9,
        throughput_held=end_ratio / start_ratio >= 0.9,
        sizes_levelled_off=levelled,
        peak_second_half_vs_first=peaks,
        peaks_levelled_off=peaks is not None and peaks <= 1.1,
        hot_update_ratio_run=_hot(final, {}),
        relations=relations,
    )
    print(_table(measured, relations, k), file=sys.stderr, flush=True)


def _mb(value: int) -> str:
    return f"{value / 2**20:.1f}"


def _table(measured: list[dict[str, Any]], relations: dict[str, Any], k: int) -> str:
    head = (
        "window | finished | steps/s | instances/s | floor(8) | ratio to floor(8) | drift | "
        "other processes, cores | CPU ms/step (client + server) | WAL bytes/step | "
        "heap MB | indexes MB | total MB | heap ÷ fresh | indexes ÷ fresh | signals MB | "
        "live | dead | autovacuums | HOT (window) | last autovacuum"
    )
    rows = ["| " + head + " |", "| " + " | ".join(["---"] * (head.count("|") + 1)) + " |"]
    for w in measured:
        cells = [
            w["window"],
            f"{w['finished']:,}",
            f"{w['rate']:,}",
            f"{w['instances_per_s']:,}",
            f"{w['floor8_tx_per_s']:,}",
            w["ratio_to_floor8"],
            w["floor8_drift"],
            w["other_processes_cores"],
            f"{w['client_cpu_ms_per_step']} + {w['server_cpu_ms_per_step']}",
            f"{w['wal_bytes_per_step']:,}",
            _mb(w["instances_heap_bytes"]),
            _mb(w["instances_indexes_bytes"]),
            _mb(w["instances_total_bytes"]),
            w["heap_vs_fresh_copy"],
            w["indexes_vs_fresh_copy"],
            _mb(w["signals_total_bytes"]),
            f"{w['n_live_tup']:,}",
            f"{w['n_dead_tup']:,}",
            w["autovacuum_count"],
            w["hot_update_ratio_window"],
            (w["last_autovacuum"] or "")[11:19],
        ]
        rows.append("| " + " | ".join(str(c) for c in cells) + " |")
    rows += [
        "",
        f"| relation | start MB | peak MB | end MB | growth, first {k} windows | "
        f"growth, last {k} | last ÷ first |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, g in relations.items():
        rows.append(
            f"| {name} | {_mb(g['start'])} | {_mb(g['peak'])} | {_mb(g['end'])} | "
            f"{_mb(g['growth_first'])} | {_mb(g['growth_last'])} | {g['last_vs_first']} |"
        )
    return "\n".join(rows)
