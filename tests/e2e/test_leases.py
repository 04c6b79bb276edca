"""Leases: claim identity, heartbeat, the reaper (also several at once), startup reclaim.

In process, on real PostgreSQL. The manual clock moves leases past their end; the reaper and
the heartbeat are run by hand (`run_once()`, `heartbeat()`), except in the one test that
checks the background heartbeat with the system clock.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from e2e_support import eventually, row

import gendurable as gd
from gendurable.db.maintenance_store import MaintenanceStore
from gendurable.events import REAPER_RESCUED
from gendurable.maintenance.reaper import Reaper
from gendurable.telemetry import Telemetry
from gendurable.testing import MakeEngine, RecorderFactory
from recordings import recorded

LEASE = timedelta(minutes=5)
BRIEF = timedelta(minutes=1)

ENTERED: dict[str, asyncio.Event] = recorded({})
GATES: dict[str, asyncio.Event] = recorded({})


def gate(*keys: str) -> None:
    for key in keys:
        ENTERED[key] = asyncio.Event()
        GATES[key] = asyncio.Event()


@gd.workflow(name="e2e.leases.held", max_attempts=3)
class Held:
    """Holds its claim until the test opens the key's gate."""

    @gd.step
    async def hold(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        if ctx.key in GATES:
            ENTERED[ctx.key].set()
            await GATES[ctx.key].wait()
        return gd.done({"attempt": ctx.attempt})


@gd.workflow(name="e2e.leases.brief", lease=BRIEF)
class Brief:
    """Like `Held`, with a lease of its own."""

    @gd.step
    async def hold(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        ENTERED[ctx.key].set()
        await GATES[ctx.key].wait()
        return gd.done()


@gd.workflow(name="e2e.leases.many", max_attempts=100)
class Many:
    @gd.step
    async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


async def entered(*keys: str) -> None:
    async with asyncio.timeout(10):
        await asyncio.gather(*(ENTERED[k].wait() for k in keys))


async def fake_claim(engine: gd.Engine, locked_by: str, limit: int, workflow: Any) -> list[int]:
    """Claim due rows as a worker that will never commit (it crashed)."""
    spec = workflow.spec
    rows = await engine.store.instance_claim(
        queue=spec.queue,
        limit=limit,
        locked_by=locked_by,
        leases=[LEASE] * len(spec.steps),
        now=engine.clock.now(),
        workflows=[spec.name] * len(spec.steps),
        steps=list(spec.steps),
    )
    return sorted(r.id for r in rows)


# --- claims and the heartbeat ------------------------------------------------------------------


async def test_leases_claim_records_worker_identity_and_lease_end(
    make_engine: MakeEngine,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    gate("a")
    engine = await make_engine(workflows=[Held], clock=manual_clock, lease=LEASE)
    handle = await Held.start(key="a")
    await entered("a")

    claim = await row(db, gendurable_schema, handle.id)
    scheduler = engine.schedulers["default"]
    host = re.escape(socket.gethostname())
    pattern = rf"{re.escape(engine.name)}:default@{host}-{os.getpid()}-[0-9a-f]+#[0-9]+"
    assert re.fullmatch(pattern, claim["locked_by"]), claim["locked_by"]
    assert claim["locked_by"].startswith(scheduler.locked_by + "#")
    assert claim["status"] == "executing"
    assert claim["locked_until"] == manual_clock.now() + LEASE

    GATES["a"].set()
    assert await Held.result("a", timeout=10) == {"attempt": 0}


async def test_leases_queues_of_one_engine_have_distinct_worker_ids(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Held], queues={"a": 1, "b": 1}, clock=manual_clock)
    a, b = engine.schedulers["a"].locked_by, engine.schedulers["b"].locked_by
    assert a.startswith(f"{engine.name}:a@")
    assert b.startswith(f"{engine.name}:b@")
    assert a.rsplit("-", 1)[1] != b.rsplit("-", 1)[1]


async def test_leases_heartbeat_extends_every_running_claim_in_one_statement(
    make_engine: MakeEngine,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    gate("a", "b")
    engine = await make_engine(
        workflows=[Held, Brief], queues={"default": 2}, clock=manual_clock, lease=LEASE
    )
    handles = [await Held.start(key="a"), await Brief.start(key="b")]
    await entered("a", "b")  # both slots busy: the engine claims nothing else
    ids = [h.id for h in handles]
    query = (
        f'SELECT id, locked_until, xmin::text AS tx FROM "{gendurable_schema}".instances '
        "WHERE id = ANY($1) ORDER BY id"
    )
    claimed = await db.fetch(query, ids)
    # Each claim lasts its workflow's lease (Brief has its own, Held the engine's).
    assert [r["locked_until"] for r in claimed] == [
        manual_clock.now() + LEASE,
        manual_clock.now() + BRIEF,
    ]
    other = await make_engine(workflows=[Held], queues=None, clock=manual_clock)
    foreign = await Held.start(key="foreign", engine=other)
    [foreign_id] = await fake_claim(other, "someone:default@elsewhere-1-x", 1, Held)
    assert foreign_id == foreign.id

    manual_clock.advance(timedelta(seconds=30))
    extended = await engine.schedulers["default"].heartbeat()

    assert extended == 2
    rows = await db.fetch(query, ids)
    assert [r["locked_until"] for r in rows] == [
        manual_clock.now() + LEASE,
        manual_clock.now() + BRIEF,
    ]
    assert len({r["tx"] for r in rows}) == 1  # one transaction wrote both: one statement
    untouched = await row(db, gendurable_schema, foreign.id)
    assert untouched["locked_until"] == manual_clock.now() - timedelta(seconds=30) + LEASE

    for key in ("a", "b"):
        GATES[key].set()
    await engine.drain()
    # Nothing runs any more: the heartbeat has nothing to extend.
    assert await engine.schedulers["default"].heartbeat() == 0


async def test_leases_heartbeat_keeps_a_step_longer_than_its_lease_claimed(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    gate("long")
    engine = await make_engine(
        workflows=[Held],
        lease=timedelta(seconds=1.5),
        reap_interval=timedelta(seconds=0.05),
        start=False,
    )
    events = recorder(engine)
    await engine.start()
    handle = await Held.start(key="long")
    await entered("long")

    seen: set[Any] = set()

    async def extended_three_times() -> bool:
        claim = await row(db, gendurable_schema, handle.id)
        assert claim["status"] == "executing", claim
        seen.add(claim["locked_until"])
        return len(seen) >= 4

    # ~3 leases long: without the heartbeat, the reaper would have taken it back.
    await eventually(extended_three_times, timeout=15, what="three heartbeats")
    GATES["long"].set()

    assert await Held.result("long", timeout=10) == {"attempt": 0}
    assert events.of(("reaper", "rescued")) == []
    assert (await row(db, gendurable_schema, handle.id))["rescued"] == 0


# --- the reaper --------------------------------------------------------------------------------


async def test_leases_reaper_returns_expired_claims_with_the_attempt_counted(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engine = await make_engine(workflows=[Held], queues=None, clock=manual_clock)
    events = recorder(engine)
    handle = await Held.start(key="crashy")
    assert await fake_claim(engine, "gone:default@host-1-dead", 1, Held) == [handle.id]
    assert engine.reaper is not None

    manual_clock.advance(LEASE - timedelta(seconds=1))
    early = await engine.reaper.run_once()
    assert (early.rescued, early.failed) == (0, 0)
    assert (await row(db, gendurable_schema, handle.id))["status"] == "executing"

    manual_clock.advance(timedelta(seconds=2))
    report = await engine.reaper.run_once()

    assert (report.rescued, report.failed) == (1, 0)
    back = await row(db, gendurable_schema, handle.id)
    assert back["status"] == "available"
    assert (back["locked_by"], back["locked_until"]) == (None, None)
    assert back["attempt"] == 1
    assert back["rescued"] == 1
    assert back["run_at"] == manual_clock.now()
    [event] = events.of(("reaper", "rescued"))
    assert (event["id"], event["status"]) == (handle.id, "available")
    assert event["attempt"] == 1
    # Run again: nothing more to do.
    again = await engine.reaper.run_once()
    assert (again.rescued, again.failed) == (0, 0)


async def test_leases_reaper_fails_an_instance_that_keeps_crashing_its_worker(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engine = await make_engine(workflows=[Held], queues=None, clock=manual_clock)
    events = recorder(engine)
    handle = await Held.start(key="doomed")
    assert engine.reaper is not None
    max_attempts = Held.spec.retry.max_attempts
    assert max_attempts == 3

    statuses = []
    for crash in range(max_attempts):
        assert await fake_claim(engine, f"w:default@host-{crash}-dead", 1, Held) == [handle.id]
        manual_clock.advance(LEASE + timedelta(seconds=1))
        await engine.reaper.run_once()
        statuses.append((await row(db, gendurable_schema, handle.id))["status"])

    assert statuses == ["available"] * (max_attempts - 1) + ["failed"]
    final = await row(db, gendurable_schema, handle.id)
    assert final["locked_by"] is None
    assert final["finished_at"] == manual_clock.now()
    with pytest.raises(gd.WorkflowFailed) as failed:
        await Held.result("doomed", timeout=5)
    assert failed.value.status == "failed"
    assert failed.value.error["type"] == "crashed"
    assert "hold" in failed.value.error["message"]
    assert "w:default@host-2-dead" in failed.value.error["message"]
    assert [e["status"] for e in events.of(("reaper", "rescued"), id=handle.id)] == [
        "available",
        "available",
        "failed",
    ]
    # It does not cycle: no more rescues, and nobody can claim it.
    manual_clock.advance(LEASE * 2)
    assert (await engine.reaper.run_once()).rescued == 0
    assert await fake_claim(engine, "w:default@host-9-x", 1, Held) == []


@pytest.mark.race
async def test_leases_concurrent_reapers_rescue_each_row_once(
    make_engine: MakeEngine,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    rows, rounds = 240, 3
    engines = [
        await make_engine(workflows=[Many], queues=None, clock=manual_clock, pool_size=6)
        for _ in range(2)
    ]
    await Many.start_many([Many.new() for _ in range(rows)], engine=engines[0])
    # Small batches and several reapers per pool: many interleaved lease_rescue statements.
    reapers: list[tuple[Reaper, list[dict[str, Any]]]] = []
    for engine in engines:
        for _ in range(3):
            seen: list[dict[str, Any]] = []
            telemetry = Telemetry()
            telemetry.attach(
                "seen",
                lambda _e, _m, meta, seen=seen: seen.append(dict(meta)),
                events=[REAPER_RESCUED],
            )
            reapers.append(
                (Reaper(MaintenanceStore(engine.store.db), manual_clock, telemetry, batch=7), seen)
            )

    for round in range(1, rounds + 1):
        claimed = await fake_claim(engines[1], f"x:default@h-{round}-dead", rows, Many)
        assert len(claimed) == rows
        manual_clock.advance(LEASE + timedelta(seconds=1))
        for _, seen in reapers:
            seen.clear()

        async with asyncio.timeout(60):  # a deadlock would hang (or raise) here
            reports = await asyncio.gather(
                *(reaper.run_once() for reaper, _ in reapers for _ in range(3))
            )

        assert sum(r.rescued for r in reports) == rows
        rescued_ids = sorted(m["id"] for _, seen in reapers for m in seen)
        assert rescued_ids == claimed  # every row once, none twice
        counts = await db.fetch(
            f'SELECT status::text, attempt, rescued, count(*) AS n FROM "{gendurable_schema}"'
            ".instances GROUP BY 1, 2, 3"
        )
        assert [dict(c) for c in counts] == [
            {"status": "available", "attempt": round, "rescued": round, "n": rows}
        ]


# --- startup reclaim ---------------------------------------------------------------------------


async def test_leases_startup_reclaims_expired_claims_of_a_dead_predecessor(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    name = "reclaimer"
    host = socket.gethostname()
    dead = f"{name}:default@{host}-{os.getpid() + 100_000}-0ld0ld"
    client = await make_engine(workflows=[Held], queues=None, clock=manual_clock)
    handles = [await Held.start(key=f"orphan-{i}", engine=client) for i in range(3)]
    assert await fake_claim(client, dead, 3, Held) == [h.id for h in handles]
    # Claims of another engine name and of another host: the reaper's business, not ours.
    not_ours = [await Held.start(key=f"other-{i}", engine=client) for i in range(2)]
    await fake_claim(client, f"someone-else:default@{host}-1-0ld", 1, Held)
    await fake_claim(client, f"{name}:default@not-{host}-1-0ld", 1, Held)
    manual_clock.advance(LEASE + timedelta(seconds=1))

    engine = await make_engine(workflows=[Held], name=name, clock=manual_clock, start=False)
    events = recorder(engine)
    await engine.start()

    [reclaimed] = events.of(("scheduler", "reclaimed"))
    assert reclaimed["count"] == 3
    assert reclaimed["queue"] == "default"
    assert reclaimed["locked_by"] == engine.schedulers["default"].locked_by
    for handle in handles:
        assert await Held.result(handle.id, timeout=10, engine=engine) == {"attempt": 1}
        assert (await row(db, gendurable_schema, handle.id))["rescued"] == 1
    for handle in not_ours:
        still = await row(db, gendurable_schema, handle.id)
        assert (still["status"], still["rescued"]) == ("executing", 0)


async def test_leases_startup_leaves_unexpired_claims_of_a_predecessor_alone(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    name = "twin"
    # Same engine name, queue and host: a live twin (say, another container with this pid).
    twin = f"{name}:default@{socket.gethostname()}-{os.getpid()}-7w1n"
    client = await make_engine(workflows=[Held], queues=None, clock=manual_clock)
    handle = await Held.start(key="live", engine=client)
    assert await fake_claim(client, twin, 1, Held) == [handle.id]
    manual_clock.advance(LEASE - timedelta(seconds=1))

    engine = await make_engine(workflows=[Held], name=name, clock=manual_clock, start=False)
    events = recorder(engine)
    await engine.start()
    await engine.drain()

    assert events.of(("scheduler", "reclaimed")) == []
    kept = await row(db, gendurable_schema, handle.id)
    assert (kept["status"], kept["locked_by"]) == ("executing", twin)
    assert (kept["attempt"], kept["rescued"]) == (0, 0)


async def test_leases_startup_reclaim_ignores_hosts_whose_name_extends_ours(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    name = "prefixed"
    # Host "<ours>-2" (web vs web-2) is another machine, even though its worker ids start
    # with our "<engine>:<queue>@<host>-" prefix.
    neighbour = f"{name}:default@{socket.gethostname()}-2-{os.getpid()}-0ld0ld"
    client = await make_engine(workflows=[Held], queues=None, clock=manual_clock)
    handle = await Held.start(key="neighbour", engine=client)
    assert await fake_claim(client, neighbour, 1, Held) == [handle.id]
    manual_clock.advance(LEASE + timedelta(seconds=1))

    engine = await make_engine(
        workflows=[Held], name=name, queues={"default": 1}, clock=manual_clock, start=False
    )
    events = recorder(engine)
    await engine.start()

    assert events.of(("scheduler", "reclaimed")) == []
    kept = await row(db, gendurable_schema, handle.id)
    assert (kept["status"], kept["locked_by"]) == ("executing", neighbour)
