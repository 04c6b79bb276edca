"""Failover (issue [O] item 1): the primary dies, the synchronous standby is promoted, and
every engine carries on against it by itself, losing nothing that was committed.

A primary and its synchronous streaming standby run as two local clusters (`standby_pair`).
Every engine is given both hosts from the start, the standby second, with
`target_session_attrs=read-write`: two `gendurable worker` processes serving `chaos_app` (one
given the URL form, one libpq's key=value form) and the test process's client-only engine,
which starts roots (packs that collect signals, lonely packs that time out, trees of
children and grandchildren, accounts that go through the queue with a delay, rate-limited
calls) in waves and sends the packs' signals. Mid-run the test reads what the primary shows
as committed and SIGKILLs the primary's postmaster. Once every engine has been unable to
write for longer than the lease (the first host refuses connections, the second is not
writable: their claims expire), it reads the claims then live from the standby, promotes it
and clears its inherited `synchronous_standby_names`. Nothing else is done for the engines:
no worker is restarted. Then, from the new primary:

- every instance ends as its inputs call for, and every invariant of the chaos run holds
  (`chaos_checks`: no signal lost or consumed twice, each child counted once, no concurrency
  key overlap, the rate limit kept, each committed state the last execution's);
- what the primary showed before the kill is all there (`check_snapshot_kept`);
- a step ran twice only if it was in flight at the kill, under one of those claims
  (`check_reruns_in_flight`);
- each worker and the client hold a LISTEN connection on the new primary, both workers ran
  steps there and are still running, logged no error, and drain and exit 0 on SIGTERM;
- the command line reads the instances through the key=value form of both hosts.

How long the engines took to resume is printed (`pytest -s` shows it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import chaos_app
import pytest
from chaos_checks import Executions, Root, check_all, planned_instances
from chaos_run import ChaosConfig, Client, Slot, Workers, make_plan, read_log
from e2e_support import eventually
from failover_checks import Snapshot, check_reruns_in_flight, check_snapshot_kept, stored_for_sure
from standby_pair import StandbyPair, standby_pair

import gendurable as gd

pytestmark = [pytest.mark.crash, pytest.mark.database, pytest.mark.slow]

HERE = Path(__file__).resolve().parent

CONFIG = ChaosConfig(
    instances=500,
    workers=2,
    concurrency=8,
    lease=3.0,
    submit_seconds=8.0,
    pack_timeout=40.0,
    linger_timeout=1.5,
    tenants=6,
)
ACCOUNT_SPREAD = 4
"""Each of the plan's concurrency keys becomes this many for the accounts."""
KILL_AFTER_EXITS = 120
"""Step executions that must have ended before the kill: the run is well under way."""
KILL_AFTER_SHARE = 0.35
"""...and this share of the waves submitted: starts and signals are still coming."""


@pytest.fixture
async def pair() -> AsyncIterator[StandbyPair]:
    clusters = standby_pair()
    made = await asyncio.to_thread(clusters.__enter__)
    try:
        yield made
    finally:
        await asyncio.to_thread(clusters.__exit__, None, None, None)


async def _fetch(dsn: str, query: str, *args: Any) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        return [dict(r) for r in await conn.fetch(query, *args)]
    finally:
        await conn.close()


async def _progress(dsn: str, schema: str) -> tuple[int, int]:
    """(rows, live rows), or (-1, -1) while the database cannot be reached."""
    try:
        [row] = await _fetch(
            dsn,
            f"SELECT count(*) AS n, count(*) FILTER (WHERE status NOT IN "
            f"('done', 'failed', 'cancelled')) AS live FROM \"{schema}\".instances",
        )
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        return -1, -1
    return int(row["n"]), int(row["live"])


async def _snapshot(dsn: str, schema: str) -> Snapshot:
    rows = await _fetch(
        dsn,
        f"SELECT id, workflow, key, status::text AS status, state, result "
        f'FROM "{schema}".instances',
    )
    signals = await _fetch(
        dsn,
        f"SELECT (g.payload->>'sid')::int AS sid, i.key FROM \"{schema}\".signals g "
        f'JOIN "{schema}".instances i ON i.id = g.instance_id',
    )
    return Snapshot(rows, [(s["sid"], s["key"]) for s in signals])


def _exits(log: Path) -> int:
    try:
        return log.read_bytes().count(b'"ev":"exit"')
    except FileNotFoundError:
        return 0


async def _submit(
    client: Client, roots: list[Root], slots: list[Slot], submitted: list[int]
) -> None:
    """Start `roots` in waves across the window, calls first (as the chaos run does); count
    the waves in `submitted[0]`."""
    by_key: dict[str, list[Slot]] = {}
    for s in slots:
        by_key.setdefault(s.key, []).append(s)
    waves = int(CONFIG.submit_seconds / CONFIG.wave_interval)
    calls = [r for r in roots if r.workflow == chaos_app.Call.spec.name]
    others = [r for r in roots if r.workflow != chaos_app.Call.spec.name]
    size = -(-len(others) // waves)
    call_size = -(-len(calls) // max(1, int(waves * CONFIG.call_window)))
    tasks = []
    began = time.monotonic()
    for w in range(waves):
        chunk = others[w * size : (w + 1) * size] + calls[w * call_size : (w + 1) * call_size]
        if chunk:
            tasks.append(asyncio.create_task(client.start_wave(chunk, by_key)))
        submitted[0] = w + 1
        # Pacing the load, not waiting for anything: each wave goes out on its own.
        await asyncio.sleep(max(0.0, began + (w + 1) * CONFIG.wave_interval - time.monotonic()))
    await asyncio.gather(*tasks)
    await client.settle()


def _gendurable_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.split(".")[0] == "gendurable"]


def _said_unavailable(caplog: pytest.LogCaptureFixture, logger: str) -> bool:
    """Whether this process's `logger` warned that the database was unreachable."""
    return any(
        r.name == logger and r.levelno < logging.ERROR and " unavailable" in r.getMessage()
        for r in _gendurable_records(caplog)
    )


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """This process's gendurable errors."""
    return [r.getMessage() for r in _gendurable_records(caplog) if r.levelno >= logging.ERROR]


def _stderr(workers: list[Workers]) -> list[str]:
    return [p.stderr.read_text(errors="replace") for w in workers for p in w.procs]


@pytest.mark.timeout(300)
async def test_failover_to_the_synchronous_standby_loses_nothing_and_every_engine_resumes(
    pair: StandbyPair, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seed = random.randrange(2**32)
    print(f"seed {seed}")
    rng = random.Random(seed)
    schema = f"failover_{uuid.uuid4().hex[:10]}"
    log = tmp_path / "effects.jsonl"
    env = dict(os.environ)
    env.update(
        CHAOS_SCHEMA=schema,
        CHAOS_LOG=str(log),
        CHAOS_LEASE=str(CONFIG.lease),
        CHAOS_CONCURRENCY=str(CONFIG.concurrency),
        CHAOS_PACK_TIMEOUT=str(CONFIG.pack_timeout),
        CHAOS_LINGER_TIMEOUT=str(CONFIG.linger_timeout),
        PYTHONPATH=os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p),
        PYTHONUNBUFFERED="1",
    )
    client_engine = gd.Engine(
        pair.dsn,
        workflows=chaos_app.WORKFLOWS,
        name=f"failover-client-{schema}",
        schema=schema,
        rate_limits=chaos_app.RATE_LIMITS,
        statement_timeout=timedelta(seconds=10),
        pool_size=10,
    )
    workers = []
    for form, dsn in (("url", pair.dsn), ("kv", pair.conninfo)):
        folder = tmp_path / f"worker-{form}"
        folder.mkdir()
        workers.append(Workers({**env, "CHAOS_DSN": dsn}, folder, 1))
    client = Client(client_engine, pair.dsn, schema, rng, CONFIG.single_share)
    roots, slots = make_plan(CONFIG, rng, schema)
    # Each key's accounts run one step at a time: spread them, or the run lasts as long as
    # the longest key's queue rather than the failover.
    roots = [
        dataclasses.replace(
            r, concurrency_key=f"{r.concurrency_key}.{rng.randrange(ACCOUNT_SPREAD)}"
        )
        if r.workflow == chaos_app.Account.spec.name
        else r
        for r in roots
    ]
    client.plan.roots = roots
    planned = planned_instances(roots)
    submitted = [0]
    submitting: asyncio.Task[None] | None = None
    snapshot = Snapshot()
    marks: dict[str, float] = {}
    with caplog.at_level(logging.WARNING, logger="gendurable"):
        await client_engine.start()  # migrates the schema before the workers come
        try:
            await asyncio.gather(*(w.start_all() for w in workers))
            pids = [p.pid for w in workers for p in w.procs]
            marks["began"] = time.monotonic()
            submitting = asyncio.create_task(_submit(client, roots, slots, submitted))

            async def under_way() -> bool:
                waves = CONFIG.submit_seconds / CONFIG.wave_interval
                return _exits(log) >= KILL_AFTER_EXITS and submitted[0] >= KILL_AFTER_SHARE * waves

            await eventually(under_way, timeout=60, what="the run getting under way")
            snapshot = await _snapshot(pair.primary.dsn, schema)
            waves_at_kill = submitted[0]
            marks["killed"] = time.monotonic()
            await asyncio.to_thread(pair.primary.kill)

            async def down_past_the_lease() -> bool:
                # Until the standby is promoted no host takes a session: the first refuses
                # connections, the second is not writable (target_session_attrs). Claims
                # outlive their lease meanwhile: steps in flight at the kill get rescued.
                logs = _stderr(workers)
                return _said_unavailable(caplog, "gendurable.listener") and all(
                    max(map(int, _DOWN_FOR.findall(text)), default=0) >= CONFIG.lease + 2
                    for text in logs
                )

            await eventually(
                down_past_the_lease, timeout=60, what="every engine down past the lease"
            )
            marks["noticed"] = time.monotonic()
            # The standby holds what the primary had committed when it died: its claims
            # then are the steps in flight at the kill.
            executing = await _fetch(
                pair.standby.dsn,
                f"SELECT id, (state->>'n')::int AS n, attempt FROM \"{schema}\".instances "
                f"WHERE status = 'executing'",
            )
            in_flight = {(r["id"], r["n"], r["attempt"]) for r in executing}
            await asyncio.to_thread(pair.promote)
            marks["writable"] = time.monotonic()
            await submitting

            async def all_ended() -> bool:
                rows, live = await _progress(pair.standby.dsn, schema)
                return rows == planned and live == 0

            await eventually(
                all_ended, timeout=120, what=f"all {planned} instances ending", interval=0.2
            )
            marks["ended"] = time.monotonic()

            async def listening() -> bool:
                # Each listener's connection ran LISTEN, and nothing else, on the new primary.
                rows = await _fetch(
                    pair.standby.dsn,
                    "SELECT count(*) AS n FROM pg_stat_activity WHERE query LIKE 'LISTEN %'",
                )
                return int(rows[0]["n"]) == 1 + len(workers)

            await eventually(
                listening,
                timeout=60,
                interval=0.2,
                what="a listener of every engine on the new primary",
            )
            assert [p.proc.returncode for w in workers for p in w.procs] == [None, None]
            counts = await _status_on_the_command_line(pair.conninfo, schema)
            assert counts == {"done": planned}
        finally:
            exits = [code for w in workers for code in await w.stop_all()]
            # Nothing is left of the submission unless the test failed half-way: then its
            # retries (up to two minutes each) must not hold the teardown.
            unfinished = [*client.tasks, *([submitting] if submitting else [])]
            for task in unfinished:
                task.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)
            await client_engine.stop(timeout=5)

    assert exits == [0, 0]
    logs = _stderr(workers)
    for text in logs:
        assert "reachable again" in text
        assert "Traceback" not in text
        assert " ERROR " not in text
    assert _errors(caplog) == []
    rows = await _fetch(
        pair.standby.dsn,
        f"SELECT id, workflow, key, status::text AS status, step, state, result, error, "
        f"parent_id, spawn_index, pending_children, locked_by, concurrency_key, "
        f'rate_partition, attempt, rescued FROM "{schema}".instances ORDER BY id',
    )
    [leftover] = await _fetch(pair.standby.dsn, f'SELECT count(*) AS n FROM "{schema}".signals')
    records, bad_lines = read_log(log)
    assert bad_lines == 0
    runs = Executions(records)
    marked = stored_for_sure(client.plan.sent, snapshot)
    invariants = [
        *check_all(
            rows,
            records,
            client.plan,
            leftover_signals=int(leftover["n"]),
            burst=chaos_app.LIMIT.capacity,
            rate=chaos_app.LIMIT.allowed / chaos_app.LIMIT.per.total_seconds(),
            start_delay=CONFIG.start_delay,
        ),
        check_snapshot_kept(rows, snapshot),
        check_reruns_in_flight(runs, in_flight),
    ]
    for inv in invariants:
        print(json.dumps(inv.as_json()))
    resumed = [
        min((e.t0 for e in runs.all if e.enter["pid"] == pid and e.t0 > marks["writable"]),
            default=None)
        for pid in pids
    ]  # fmt: skip
    print(_timings(marks, resumed, logs, snapshot, marked, planned, waves_at_kill))
    assert None not in resumed, "a worker ran no step on the new primary"
    broken = [i for i in invariants if not i.ok]
    assert not broken, "\n".join(
        f"{i.name}: {i.problem_count} problems, e.g. {i.problems[:3]}" for i in broken
    )
    # The primary died mid-run: otherwise the checks above prove little.
    assert 0 < len(snapshot.rows) < planned


async def _status_on_the_command_line(dsn: str, schema: str) -> dict[str, int]:
    """`gendurable status --json` through `dsn`: instances per status."""
    status = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gendurable", "status", "--json", "--schema", schema, "--dsn", dsn,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await status.communicate()
    assert status.returncode == 0, err.decode()
    counts: dict[str, int] = {}
    for r in json.loads(out):
        counts[r["status"]] = counts.get(r["status"], 0) + r["count"]
    return counts


_DOWN_FOR = re.compile(r"gendurable\.store: database unavailable for (\d+)s")
_BACK = re.compile(r"(\S+): (the LISTEN connection|database) reachable again after ([\d.]+)s")


def _timings(
    marks: dict[str, float],
    resumed: list[float | None],
    logs: list[str],
    snapshot: Snapshot,
    marked: int,
    planned: int,
    waves: int,
) -> str:
    """What the failover took, for the test's output."""
    killed, writable = marks["killed"], marks["writable"]
    outages = [
        ", ".join(f"{what} {seconds}s" for _, what, seconds in _BACK.findall(text)) for text in logs
    ]
    firsts = ", ".join(f"{t - writable:.2f}s" if t is not None else "never" for t in resumed)
    return (
        f"failover: the primary was killed {killed - marks['began']:.1f}s into the run "
        f"({waves} waves submitted, {len(snapshot.rows)} rows and {len(snapshot.signals)} "
        f"signals committed, {marked} of them signals the client was unsure of); every "
        f"engine had been down past the lease {marks['noticed'] - killed:.1f}s after the "
        f"kill; the promoted standby took "
        f"writes {writable - killed:.2f}s after the kill; the workers' first steps on it "
        f"began {firsts} later; outages as the workers logged them: {outages}; all "
        f"{planned} instances ended {marks['ended'] - killed:.1f}s after the kill"
    )
