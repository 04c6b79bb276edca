"""Token-bucket rate limits enforced at claim time, moved by the manual clock."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

import gendurable as gd
from gendurable.testing import MakeEngine, RecorderFactory
from recordings import recorded

MINUTE = timedelta(minutes=1)
ran: list[str] = recorded([])


@gd.workflow(name="limits.call")
class Call:
    class State(msgspec.Struct):
        tenant: str = "acme"
        label: str = ""

    @gd.step(start=True, rate_limit="api", partition=lambda s: s.tenant)
    async def call(self, state: State, ctx: gd.Context) -> gd.Outcome:
        ran.append(state.label)
        return gd.done()


@gd.workflow(name="limits.heavy")
class Heavy:
    class State(msgspec.Struct):
        label: str = ""

    @gd.step(start=True, rate_limit="api", weight=2)
    async def call(self, state: State, ctx: gd.Context) -> gd.Outcome:
        ran.append(state.label)
        return gd.done()


@gd.workflow(name="limits.free")
class Free:
    class State(msgspec.Struct):
        label: str = ""

    @gd.step(start=True)
    async def run(self, state: State, ctx: gd.Context) -> gd.Outcome:
        ran.append(state.label)
        return gd.done()


def api(allowed: int, burst: int | None = None) -> dict[str, gd.Limit]:
    return {"api": gd.Limit(allowed, per=MINUTE, burst=burst)}


async def bucket(db: asyncpg.Connection, schema: str, partition: str = "") -> asyncpg.Record:
    found = await db.fetchrow(
        f'SELECT tokens, granted, refreshed_at FROM "{schema}".rate_buckets '
        "WHERE name = 'api' AND partition = $1",
        partition,
    )
    assert found is not None
    return found


async def test_a_bucket_grants_its_burst_then_one_row_per_refilled_token(
    make_engine: MakeEngine, manual_clock: gd.ManualClock, recorder: RecorderFactory
) -> None:
    engine = await make_engine(workflows=[Call], rate_limits=api(3))
    rec = recorder(engine)
    for i in range(5):
        await Call.start(key=f"c{i}", state=Call.State(label=f"c{i}"))

    await engine.drain()
    assert ran == ["c0", "c1", "c2"]
    throttled = rec.of(("rate_limit", "throttled"))
    assert {(t["limit"], t["partition"]) for t in throttled} == {("api", "acme")}
    assert sum(t["denied"] for t in throttled) == 2  # c3 and c4, each deferred once
    # c3 waits for the next token (20 s at 3 per minute), c4 for the one after.
    c3 = await Call.get("c3")
    assert c3.run_at == manual_clock.now() + timedelta(seconds=20)

    manual_clock.advance(timedelta(seconds=19))
    await engine.drain()
    assert ran == ["c0", "c1", "c2"]
    manual_clock.advance(timedelta(seconds=1))
    await engine.drain()
    assert ran == ["c0", "c1", "c2", "c3"]
    manual_clock.advance(timedelta(seconds=20))
    await engine.drain()
    assert ran == ["c0", "c1", "c2", "c3", "c4"]


async def test_weights_take_the_urgency_ordered_prefix_that_fits(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Heavy, Call], rate_limits=api(60, burst=5))
    # A light row behind the third heavy one (a lower priority: a batch inserts rows in key
    # order, so ids do not follow the list): one token would be left, but the prefix is
    # strict, so it waits behind the heavy row instead of overtaking it. One statement
    # starts all four, so that one claim sees them together (started one by one, the
    # background claim loop may take the heavy rows first and defer the third, and the
    # light row, alone in the next claim, then fits, as it should).
    await Heavy.start_many(
        [Heavy.new(key=f"h{i}", state=Heavy.State(label=f"h{i}")) for i in range(3)]
        + [Call.new(key="light", state=Call.State(tenant="", label="light"), priority=-1)]
    )

    await engine.drain()

    assert ran == ["h0", "h1"]
    row = await bucket(db, gendurable_schema)
    assert row["tokens"] == pytest.approx(1.0)
    assert row["granted"] == 4


async def test_a_tenants_exhausted_partition_does_not_delay_another_tenant(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Call], rate_limits=api(2))
    for i in range(10):
        await Call.start(key=f"a{i}", state=Call.State(tenant="a", label=f"a{i}"))
    for i in range(2):
        await Call.start(key=f"b{i}", state=Call.State(tenant="b", label=f"b{i}"))

    await engine.drain()

    assert sorted(ran) == ["a0", "a1", "b0", "b1"]


async def test_rows_held_by_a_limit_never_block_unlimited_rows_behind_them(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Call, Free], rate_limits=api(1), queues={"default": 4})
    for i in range(40):
        await Call.start(key=f"l{i}", state=Call.State(label=f"l{i}"))
    for i in range(10):
        await Free.start(key=f"f{i}", state=Free.State(label=f"f{i}"))

    await engine.drain()

    assert sorted(r for r in ran if r.startswith("f")) == sorted(f"f{i}" for i in range(10))
    assert [r for r in ran if r.startswith("l")] == ["l0"]


@gd.workflow(name="limits.router")
class Router:
    class State(msgspec.Struct):
        weight: int = 3
        limit: str = "api"

    @gd.step(start=True)
    async def route(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.send, rate_limit=state.limit, weight=state.weight, partition="acme")

    @gd.step
    async def send(self, state: State, ctx: gd.Context) -> gd.Outcome:
        ran.append("sent")
        return gd.done()


async def test_a_goto_overrides_the_limit_weight_and_partition_for_one_move(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Router], rate_limits=api(60, burst=10))
    await Router.start(key="r")

    await engine.drain()

    assert ran == ["sent"]
    row = await bucket(db, gendurable_schema, "acme")
    assert row["tokens"] == pytest.approx(7.0)


async def test_a_weight_above_the_burst_goes_to_the_error_path(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Router], rate_limits=api(60, burst=10))
    handle = await Router.start(key="r", state=Router.State(weight=11))

    await engine.drain()

    info = await Router.get(handle.id)
    assert info.status == "available"  # retrying: the error path chose backoff
    assert "above the burst 10" in info.error["message"]
    assert ran == []


async def test_an_unknown_limit_leaves_the_row_waiting_and_says_so(
    make_engine: MakeEngine, manual_clock: gd.ManualClock, recorder: RecorderFactory
) -> None:
    engine = await make_engine(workflows=[Router], rate_limits=api(60))
    rec = recorder(engine)
    handle = await Router.start(key="r", state=Router.State(limit="nobody-configures-this"))

    await engine.drain()

    (unknown,) = rec.of(("rate_limit", "unknown"))
    assert unknown["limit"] == "nobody-configures-this"
    info = await Router.get(handle.id)
    assert (info.status, info.step) == ("available", "send")
    assert info.run_at > manual_clock.now()
    assert ran == []


async def test_a_swept_bucket_is_recreated_by_the_claim(
    make_engine: MakeEngine,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engine = await make_engine(workflows=[Call], rate_limits=api(1))
    await Call.start(key="first", state=Call.State(label="first"))
    await engine.drain()
    await db.execute(f'DELETE FROM "{gendurable_schema}".rate_buckets')

    await Call.start(key="second", state=Call.State(label="second"))
    await engine.drain()

    assert ran == ["first", "second"]  # a recreated bucket starts full
    row = await bucket(db, gendurable_schema, "acme")
    assert row["tokens"] == pytest.approx(0.0)


async def test_tokens_refill_from_the_engine_clock_up_to_the_burst(
    make_engine: MakeEngine,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engine = await make_engine(workflows=[Call], rate_limits=api(6, burst=4))
    for i in range(4):
        await Call.start(key=f"x{i}", state=Call.State(label=f"x{i}"))
    await engine.drain()
    assert len(ran) == 4

    manual_clock.advance(timedelta(hours=1))  # refills to the burst, never past it
    for i in range(6):
        await Call.start(key=f"y{i}", state=Call.State(label=f"y{i}"))
    await engine.drain()

    assert len(ran) == 8
    row = await bucket(db, gendurable_schema, "acme")
    assert row["tokens"] == pytest.approx(0.0)
    assert row["refreshed_at"] == manual_clock.now()


@pytest.mark.fresh_schema
async def test_a_claim_without_rate_limited_rows_pays_nothing_for_the_limiter(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Free, Call], rate_limits=api(60), queues=None)
    for i in range(20):
        await Free.start(key=f"f{i}")
    await db.execute(f"SET search_path = {gendurable_schema}")

    statement = engine.store.db.sql["instance_claim"]
    raw = await db.fetchval(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + statement.sql,
        *statement.args(
            queue="default",
            limit=10,
            locked_by="w",
            workflows=["limits.free"],
            steps=["run"],
            leases=[timedelta(seconds=30)],
            now=None,
            unknown_limit_wait=timedelta(seconds=5),
        ),
        column=0,
    )
    plan = json.loads(raw)

    nodes = list(_walk(plan[0]["Plan"]))
    buckets = [n for n in nodes if n.get("Relation Name") == "rate_buckets"]
    configs = [n for n in nodes if n.get("Relation Name") == "rate_configs"]
    assert buckets
    assert configs
    # The bucket upsert received no row and no config was read.
    assert all(n["Actual Rows"] == 0 for n in buckets)
    assert all(n.get("Actual Loops", 0) == 0 or n["Actual Rows"] == 0 for n in configs)


def _walk(node: dict[str, Any]) -> Any:
    yield node
    for child in node.get("Plans", ()):
        yield from _walk(child)
