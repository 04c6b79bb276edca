"""Graceful drain: SIGTERM to a worker process, and `engine.stop(timeout=...)` in process.

Steps that finish within the drain timeout commit; the claims of the others are released at
once (status `available`, no lock), so another node takes them without waiting for the lease.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from datetime import timedelta
from typing import Any

import asyncpg
from e2e_app import QUEUE, Chore
from e2e_support import Marks, SpawnWorker, row

import gendurable as gd
from gendurable.cli.runner import READY
from gendurable.testing import MakeEngine, RecorderFactory
from recordings import recorded

DRAIN_TIMEOUT = 1.0
LEASE = 60.0


async def test_drain_sigterm_releases_the_claim_without_waiting_for_the_lease(
    make_engine: MakeEngine,
    spawn_worker: SpawnWorker,
    marks: Marks,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    worker = await spawn_worker(
        E2E_HANG="1", E2E_LEASE=str(LEASE), E2E_DRAIN_TIMEOUT=str(DRAIN_TIMEOUT)
    )
    client = await make_engine(workflows=[Chore], queues=None)
    handle = await Chore.start(key="drain-1", engine=client)
    await marks.wait("drain-1", "work")
    assert (await row(db, gendurable_schema, handle.id))["status"] == "executing"

    sent = time.monotonic()
    worker.send(signal.SIGTERM)
    code = await worker.wait_exit(timeout=DRAIN_TIMEOUT + 10)
    took = time.monotonic() - sent

    assert code == 0, worker.describe()
    # It waited for the hanging step up to the drain timeout, and not much longer.
    assert DRAIN_TIMEOUT <= took < DRAIN_TIMEOUT + 5, took
    assert worker.lines == [READY, "gendurable worker draining", "gendurable worker stopped"]
    released = await row(db, gendurable_schema, handle.id)
    assert released["status"] == "available"
    assert released["locked_by"] is None
    assert released["locked_until"] is None
    assert released["step"] == "work"
    assert released["attempt"] == 0  # a release is not a crash: no attempt was used
    assert released["rescued"] == 0

    # Another engine takes it at once: long before the 60 s lease would have expired.
    finisher = await make_engine(
        workflows=[Chore], queues={QUEUE: 2}, lease=timedelta(seconds=LEASE)
    )
    result = await Chore.result("drain-1", timeout=15, engine=finisher)

    assert time.monotonic() - sent < 20
    assert result == {"worked": 1, "finished": 1, "pid": os.getpid()}
    assert marks.runs("drain-1", "work") == [(0, worker.pid), (0, os.getpid())]
    assert marks.runs("drain-1", "finish") == [(0, os.getpid())]


async def test_drain_sigterm_on_an_idle_worker_exits_at_once(spawn_worker: SpawnWorker) -> None:
    worker = await spawn_worker(E2E_DRAIN_TIMEOUT="30")

    sent = time.monotonic()
    worker.send(signal.SIGINT)
    code = await worker.wait_exit(timeout=15)

    assert code == 0, worker.describe()
    assert time.monotonic() - sent < 10  # nothing to wait for: far below the drain timeout
    assert worker.lines[-1] == "gendurable worker stopped"


# --- in process --------------------------------------------------------------------------------

ENTERED: dict[str, asyncio.Event] = recorded({})
NAP: dict[str, float] = recorded({})


@gd.workflow(name="e2e.drain.napper")
class Napper:
    """Naps `NAP[key]` seconds (a stand-in for real work), then is done."""

    @gd.step
    async def nap(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        assert ctx.key is not None
        ENTERED[ctx.key].set()
        await asyncio.sleep(NAP[ctx.key])
        return gd.done({"napped": ctx.key})


async def test_drain_stop_commits_short_steps_and_releases_long_ones(
    make_engine: MakeEngine,
    recorder: RecorderFactory,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    NAP.update(short=0.2, long=3600.0)
    for key in NAP:
        ENTERED[key] = asyncio.Event()
    engine = await make_engine(workflows=[Napper], lease=timedelta(seconds=LEASE), start=False)
    events = recorder(engine)
    await engine.start()
    short = await Napper.start(key="short")
    long = await Napper.start(key="long")
    async with asyncio.timeout(10):
        await asyncio.gather(*(e.wait() for e in ENTERED.values()))

    started = time.monotonic()
    await engine.stop(timeout=1.5)
    took = time.monotonic() - started

    assert 1.5 <= took < 5, took
    done = await row(db, gendurable_schema, short.id)
    assert (done["status"], done["locked_by"]) == ("done", None)
    assert [e["id"] for e in events.of(("step", "stop"))] == [short.id]
    released = await row(db, gendurable_schema, long.id)
    assert released["status"] == "available"
    assert released["locked_by"] is None
    assert released["locked_until"] is None
    assert released["attempt"] == 0
    assert events.of(("outcome", "stale")) == []

    # The released instance is taken by the next engine right away.
    NAP["long"] = 0.0
    await make_engine(workflows=[Napper], lease=timedelta(seconds=LEASE))
    assert await Napper.result(long.id, timeout=10) == {"napped": "long"}
    assert await Napper.result(short.id, timeout=1) == {"napped": "short"}


async def test_drain_stop_claims_nothing_new(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    NAP.update(busy=3600.0, later=0.0)
    ENTERED.update(busy=asyncio.Event(), later=asyncio.Event())
    engine = await make_engine(workflows=[Napper], queues={"default": 1})
    client = await make_engine(workflows=[Napper], queues=None)
    await Napper.start(key="busy", engine=client)
    async with asyncio.timeout(10):
        await ENTERED["busy"].wait()

    stopping = asyncio.create_task(engine.stop(timeout=1.0))
    # The slot frees when `busy` is cancelled; what was started meanwhile is not claimed.
    later = await Napper.start(key="later", engine=client)
    await stopping

    assert not ENTERED["later"].is_set()
    waiting = await row(db, gendurable_schema, later.id)
    assert (waiting["status"], waiting["locked_by"]) == ("available", None)
