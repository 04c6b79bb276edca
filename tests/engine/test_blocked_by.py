"""`InstanceInfo.blocked_by`: why an instance that is not running waits, at the clock's now.

Each reason is set up with the engine where the feature runs today, and with SQL where the
state comes from a feature still being built (children, throttling, concurrency, buckets):
those rows are exactly what the engine will write, and the explanation reads only rows.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from gendurable.testing import MakeEngine, RecorderFactory


@gd.workflow(name="bb.flow")
class Flow:
    @gd.step(start=True)
    async def first(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.decide)

    @gd.step
    @gd.await_signals("approved", "rejected", timeout=timedelta(days=2))
    async def decide(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="bb.failing", backoff=gd.Backoff(base=timedelta(minutes=1), jitter=0.0))
class Failing:
    @gd.step(start=True)
    async def call(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        raise RuntimeError("the bank is down\nand more lines")


@gd.workflow(name="bb.recovered", backoff=gd.Backoff(base=timedelta(minutes=1), jitter=0.0))
class Recovered:
    @gd.step(start=True)
    async def call(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        if ctx.attempt == 0:
            raise RuntimeError("the bank is down")
        return gd.goto(self.report, delay=timedelta(hours=1))

    @gd.step
    async def report(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


GATE: dict[str, asyncio.Event] = {}
"""The event `Blocking` waits on, made by the test on its own loop."""


@gd.workflow(name="bb.blocking")
class Blocking:
    @gd.step(start=True)
    async def hold(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        await GATE["release"].wait()
        return gd.done()


@gd.workflow(name="bb.orders", queue="orders")
class Orders:
    @gd.step(start=True)
    async def take(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


class Sql:
    """Plain SQL on the test schema (`S.` stands for it)."""

    def __init__(self, db: asyncpg.Connection, schema: str) -> None:
        self.db = db
        self.schema = schema

    def _q(self, statement: str) -> str:
        return statement.replace("S.", f'"{self.schema}".')

    async def execute(self, statement: str, *args: Any) -> None:
        await self.db.execute(self._q(statement), *args)

    async def fetchrow(self, statement: str, *args: Any) -> asyncpg.Record:
        row = await self.db.fetchrow(self._q(statement), *args)
        assert row is not None
        return row


@pytest.fixture
def sql(db: asyncpg.Connection, gendurable_schema: str) -> Sql:
    return Sql(db, gendurable_schema)


async def _served(make_engine: MakeEngine, *workflows: Any) -> gd.Engine:
    """An engine running the default queue for `workflows`, not claiming (rows stay put)."""
    engine = await make_engine(workflows=list(workflows), queues={"default": 2})
    scheduler = engine.schedulers["default"]
    scheduler.stop_claiming()
    await scheduler.run_once()  # waits out a claim already under way (same lock), claims nothing
    return engine


# -- not waiting: executing and terminal ----------------------------------------------------


async def test_blocked_by_is_none_while_executing_and_once_terminal(
    make_engine: MakeEngine, recorder: RecorderFactory
) -> None:
    GATE["release"] = asyncio.Event()
    engine = await make_engine(workflows=[Blocking])
    events = recorder(engine)
    await Blocking.start(key="b")
    await events.wait(("step", "start"), workflow="bb.blocking")

    running = await Blocking.get("b")
    GATE["release"].set()
    await Blocking.result("b", timeout=10)
    ended = await Blocking.get("b")

    assert (running.status, running.blocked_by) == ("executing", None)
    assert (ended.status, ended.blocked_by) == ("done", None)


# -- not due yet ----------------------------------------------------------------------------


async def test_blocked_by_scheduled_until_run_at(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    await _served(make_engine, Flow)
    await Flow.start(key="later", delay=timedelta(hours=1, seconds=5))

    blocked = (await Flow.get("later")).blocked_by

    assert blocked == gd.BlockedBy(
        "scheduled", manual_clock.now() + timedelta(hours=1, seconds=5), ""
    )
    assert str(blocked) == "scheduled until 2030-01-01 01:00:05 UTC"


async def test_blocked_by_backoff_after_a_failed_attempt(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Failing])
    await Failing.start(key="f")
    await engine.drain()

    info = await Failing.get("f")

    assert (info.status, info.attempt) == ("available", 1)
    assert info.blocked_by == gd.BlockedBy(
        "backoff",
        manual_clock.now() + timedelta(minutes=1),
        "attempt 1 of 5 failed: RuntimeError: the bank is down",
    )
    assert str(info.blocked_by) == (
        "backing off: attempt 1 of 5 failed: RuntimeError: the bank is down "
        "until 2030-01-01 00:01 UTC"
    )


async def test_blocked_by_scheduled_after_a_step_that_failed_once_moved_on(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    # The error of the failed attempt stays on the row after the retry succeeded, but the
    # next step starts at attempt 0: its delay is a schedule, not a backoff.
    engine = await make_engine(workflows=[Recovered])
    await Recovered.start(key="r")
    await engine.drain()  # attempt 0 fails: backing off for a minute
    backing_off = (await Recovered.get("r")).blocked_by
    manual_clock.advance(timedelta(minutes=1))
    await engine.drain()  # attempt 1 moves on to `report`, an hour later

    info = await Recovered.get("r")

    assert backing_off is not None
    assert backing_off.reason == "backoff"
    assert (info.status, info.step, info.attempt) == ("available", "report", 0)
    assert info.blocked_by == gd.BlockedBy("scheduled", manual_clock.now() + timedelta(hours=1), "")


async def test_blocked_by_rate_limit_when_the_limiter_deferred_it(
    make_engine: MakeEngine, manual_clock: gd.ManualClock, sql: Sql
) -> None:
    await _served(make_engine, Flow)
    handle = await Flow.start(key="t")
    # What the claim writes when a bucket cannot grant: run_at is when the tokens come.
    await sql.execute(
        "UPDATE S.instances SET throttled = true, rate_limit = 'bank', rate_partition = 'acme',"
        " run_at = $2 WHERE id = $1",
        handle.id,
        manual_clock.now() + timedelta(seconds=30),
    )

    blocked = (await Flow.get("t")).blocked_by

    assert blocked == gd.BlockedBy(
        "rate_limit", manual_clock.now() + timedelta(seconds=30), "bucket 'bank' partition 'acme'"
    )
    assert str(blocked) == (
        "rate-limited: bucket 'bank' partition 'acme' until 2030-01-01 00:00:30 UTC"
    )


# -- parked ---------------------------------------------------------------------------------


async def test_blocked_by_awaiting_names_and_deadline(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Flow])
    await Flow.start(key="a")
    await engine.drain()

    info = await Flow.get("a")

    assert info.status == "awaiting"
    assert str(info.blocked_by) == "awaiting approved or rejected until 2030-01-03 00:00 UTC"
    assert info.blocked_by is not None
    assert (info.blocked_by.reason, info.blocked_by.detail) == ("awaiting", "approved or rejected")


async def test_blocked_by_children_counts_only_the_latest_spawn(
    make_engine: MakeEngine, sql: Sql
) -> None:
    await _served(make_engine, Flow)
    parent = await Flow.start(key="p")
    old = await Flow.start(key="old-child")  # of an earlier spawn: not counted
    kids = [await Flow.start(key=f"kid-{i}") for i in range(3)]
    await sql.execute(
        "UPDATE S.instances SET parent_id = $1 WHERE id = ANY ($2::bigint[])",
        parent.id,
        [old.id, *(k.id for k in kids)],
    )
    await sql.execute(
        "UPDATE S.instances SET status = 'waiting', pending_children = 2, children_from = $2 "
        "WHERE id = $1",
        parent.id,
        kids[0].id,
    )

    blocked = (await Flow.get("p")).blocked_by

    assert blocked == gd.BlockedBy("children", None, "2 of 3 pending")
    assert str(blocked) == "waiting for children: 2 of 3 pending"


# -- due, and why it does not run -----------------------------------------------------------


async def test_blocked_by_queue_when_no_live_engine_runs_its_queue(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    # The new user's trap: a workflow on queue "orders" given to an engine running "default".
    await make_engine(workflows=[Orders], queues={"default": 4})
    await Orders.start(key="o")

    blocked = (await Orders.get("o")).blocked_by

    assert blocked == gd.BlockedBy("queue", None, "no live engine serves queue 'orders'")
    assert str(blocked) == "queued: no live engine serves queue 'orders'"
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("'bb.orders', whose queue 'orders' it does not run" in m for m in warned)


async def test_blocked_by_queue_for_a_client_only_deploy(make_engine: MakeEngine) -> None:
    await make_engine(workflows=[Flow], queues=None)
    await Flow.start(key="c")

    blocked = (await Flow.get("c")).blocked_by

    assert blocked == gd.BlockedBy("queue", None, "no live engine serves queue 'default'")


async def test_blocked_by_queue_waiting_for_a_free_slot(make_engine: MakeEngine) -> None:
    await _served(make_engine, Flow)
    await Flow.start(key="due")

    blocked = (await Flow.get("due")).blocked_by

    assert blocked == gd.BlockedBy("queue", None, "due; waiting for a free slot on queue 'default'")
    assert str(blocked) == "queued: due; waiting for a free slot on queue 'default'"


async def test_blocked_by_unknown_workflow_or_step(make_engine: MakeEngine, sql: Sql) -> None:
    engine = await _served(make_engine, Flow)
    ghost = await Flow.start(key="ghost")
    renamed = await Flow.start(key="renamed")
    await sql.execute("UPDATE S.instances SET workflow = 'gone.flow' WHERE id = $1", ghost.id)
    await sql.execute("UPDATE S.instances SET step = 'vanished' WHERE id = $1", renamed.id)

    ghost_blocked = (await engine.get("gone.flow", ghost.id)).blocked_by
    renamed_blocked = (await Flow.get("renamed")).blocked_by

    assert ghost_blocked == gd.BlockedBy(
        "unknown", None, "no live engine knows workflow 'gone.flow'"
    )
    assert str(ghost_blocked) == "unknown: no live engine knows workflow 'gone.flow'"
    assert renamed_blocked == gd.BlockedBy(
        "unknown", None, "no live engine knows step 'vanished' of workflow 'bb.flow'"
    )


async def test_blocked_by_unknown_when_the_engines_of_its_queue_do_not_know_it(
    make_engine: MakeEngine,
) -> None:
    # A rolling deploy: the web tier knows bb.flow, the workers running its queue do not.
    await make_engine(workflows=[Flow], queues=None, name="web")
    await _served(make_engine, Failing)
    await Flow.start(key="r", engine="web")

    blocked = (await Flow.get("r", engine="web")).blocked_by

    assert blocked == gd.BlockedBy(
        "unknown",
        None,
        "no live engine serving queue 'default' knows step 'first' of workflow 'bb.flow'",
    )


async def test_blocked_by_concurrency_names_the_key_and_its_holder(
    make_engine: MakeEngine, sql: Sql
) -> None:
    await _served(make_engine, Flow)
    holder = await Flow.start(key="h", concurrency_key="acct-7")
    await Flow.start(key="w", concurrency_key="acct-7")
    await sql.execute(
        "UPDATE S.instances SET status = 'executing', locked_by = 'elsewhere', "
        "locked_until = now() + interval '1 hour' WHERE id = $1",
        holder.id,
    )

    blocked = (await Flow.get("w")).blocked_by

    assert blocked == gd.BlockedBy(
        "concurrency", None, f"concurrency key 'acct-7' is held by instance {holder.id}"
    )
    assert str(blocked) == f"serialized: concurrency key 'acct-7' is held by instance {holder.id}"


async def test_blocked_by_rate_limit_for_a_limit_no_engine_configured(
    make_engine: MakeEngine, sql: Sql
) -> None:
    await _served(make_engine, Flow)
    handle = await Flow.start(key="u")
    await sql.execute("UPDATE S.instances SET rate_limit = 'bank' WHERE id = $1", handle.id)

    blocked = (await Flow.get("u")).blocked_by

    assert blocked == gd.BlockedBy(
        "rate_limit", None, "unknown limit 'bank': no engine configured it"
    )


async def test_blocked_by_rate_limit_says_when_the_bucket_has_the_tokens(
    make_engine: MakeEngine, manual_clock: gd.ManualClock, sql: Sql
) -> None:
    await _served(make_engine, Flow)
    short = await Flow.start(key="short")
    enough = await Flow.start(key="enough")
    fat = await Flow.start(key="fat")
    now = manual_clock.now()
    # 10 tokens a second, burst 10. Bucket '' (no partition): 0.5 tokens 100 ms ago, so 1.5
    # now; a weight of 3 needs 1.5 more, which take 150 ms. Bucket 'big' is full.
    await sql.execute(
        "INSERT INTO S.rate_configs (name, allowed, per_ms, burst) VALUES ('bank', 10, 1000, 10)"
    )
    await sql.execute(
        "INSERT INTO S.rate_buckets (name, partition, tokens, refreshed_at) VALUES "
        "('bank', '', 0.5, $1), ('bank', 'big', 10, $1)",
        now - timedelta(milliseconds=100),
    )
    await sql.execute(
        "UPDATE S.instances SET rate_limit = 'bank', weight = 3, "
        "rate_partition = CASE WHEN id = $2 THEN 'big' END WHERE id = ANY ($1::bigint[])",
        [short.id, enough.id],
        enough.id,
    )
    await sql.execute(
        "UPDATE S.instances SET rate_limit = 'bank', weight = 20, rate_partition = 'big' "
        "WHERE id = $1",
        fat.id,
    )

    short_blocked = (await Flow.get("short")).blocked_by
    enough_blocked = (await Flow.get("enough")).blocked_by
    fat_blocked = (await Flow.get("fat")).blocked_by

    assert short_blocked == gd.BlockedBy(
        "rate_limit", now + timedelta(milliseconds=150), "bucket 'bank'"
    )
    assert enough_blocked is not None
    assert enough_blocked.reason == "queue"
    assert fat_blocked == gd.BlockedBy(
        "rate_limit",
        None,
        "bucket 'bank' partition 'big': weight 20 exceeds its burst of 10, so it never fills",
    )


async def test_blocked_by_ranks_unknown_then_concurrency_then_rate_limit(
    make_engine: MakeEngine, sql: Sql
) -> None:
    await _served(make_engine, Flow)
    holder = await Flow.start(key="h", concurrency_key="k")
    handle = await Flow.start(key="x", concurrency_key="k")
    await sql.execute("UPDATE S.instances SET rate_limit = 'nope' WHERE id = $1", handle.id)
    await sql.execute(
        "UPDATE S.instances SET status = 'executing', locked_by = 'elsewhere' WHERE id = $1",
        holder.id,
    )
    both = (await Flow.get("x")).blocked_by
    await sql.execute("UPDATE S.instances SET status = 'done' WHERE id = $1", holder.id)
    rate_only = (await Flow.get("x")).blocked_by
    await sql.execute("UPDATE S.instances SET step = 'vanished' WHERE id = $1", handle.id)
    unknown = (await Flow.get("x")).blocked_by

    assert [b.reason if b else None for b in (both, rate_only, unknown)] == [
        "concurrency",
        "rate_limit",
        "unknown",
    ]


async def test_blocked_by_ignores_nodes_past_their_expiry(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    engine = await _served(make_engine, Flow)
    await Flow.start(key="d")
    # Three heartbeats (10 s each with the default 30 s lease) without a refresh: dead.
    manual_clock.advance(timedelta(seconds=31))

    stale = (await Flow.get("d")).blocked_by
    await engine.drain()  # refreshes this engine's node
    fresh = (await Flow.get("d")).blocked_by

    assert stale == gd.BlockedBy("unknown", None, "no live engine knows workflow 'bb.flow'")
    assert fresh is not None
    assert fresh.reason == "queue"


# -- plain SQL ------------------------------------------------------------------------------


async def test_blocked_by_view_and_function_answer_plain_sql(
    make_engine: MakeEngine, manual_clock: gd.ManualClock, sql: Sql
) -> None:
    engine = await make_engine(workflows=[Flow])
    parked = await Flow.start(key="a")
    later = await Flow.start(key="later", delay=timedelta(seconds=20))
    ended = await Flow.start(key="ended", delay=timedelta(seconds=20))
    await Flow.cancel("ended")
    await engine.drain()

    view = await sql.db.fetch(
        f"SELECT id, status::text, blocked_reason, blocked_until, blocked_detail "
        f'FROM "{sql.schema}".instances_explained ORDER BY id'
    )
    at_clock = await sql.fetchrow(
        "SELECT b.* FROM S.instances i, S.blocked_by(i, $2) b WHERE i.id = $1",
        later.id,
        manual_clock.now() + timedelta(seconds=25),  # due; this engine's node still live
    )

    by_id = {r["id"]: r for r in view}
    assert (by_id[parked.id]["blocked_reason"], by_id[parked.id]["blocked_detail"]) == (
        "awaiting",
        "approved or rejected",
    )
    assert by_id[later.id]["blocked_reason"] == "scheduled"  # at the database's now
    assert by_id[ended.id]["status"] == "cancelled"
    assert by_id[ended.id]["blocked_reason"] is None
    # Evaluated at a given time the same row is due: a free slot is what it waits for.
    assert (at_clock["reason"], at_clock["detail"]) == (
        "queue",
        "due; waiting for a free slot on queue 'default'",
    )
