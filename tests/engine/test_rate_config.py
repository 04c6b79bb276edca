"""Rate-limit configuration: checked when the engine is built, written when it starts."""

from __future__ import annotations

import asyncio
import logging
import random
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from gendurable.db.engine_store import EngineStore
from gendurable.db.maintenance_store import MaintenanceStore
from gendurable.db.pool import Database
from gendurable.rate_configs import RateConfigs
from gendurable.testing import MakeEngine, ManualClock

DSN = "postgresql://nobody@127.0.0.1:1/none"  # never reached: the checks come first


@gd.workflow(name="rc.billing")
class Billing:
    @gd.step(rate_limit="bank", weight=3)
    async def pay(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.audit)

    @gd.step(rate_limit=gd.Limit(5, per=timedelta(seconds=2), burst=8))
    async def audit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="rc.plain")
class Plain:
    @gd.step
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


async def stored(db: asyncpg.Connection, schema: str) -> dict[str, tuple[int, int, int]]:
    rows = await db.fetch(f'SELECT name, allowed, per_ms, burst FROM "{schema}".rate_configs')
    return {r["name"]: (r["allowed"], r["per_ms"], r["burst"]) for r in rows}


# -- checks when the engine is built ------------------------------------------------------------


def test_rate_config_unknown_named_limit_fails_naming_workflow_step_and_limit() -> None:
    with pytest.raises(gd.ConfigError) as raised:
        gd.Engine(
            DSN, workflows=[Billing], queues={"default": 1}, rate_limits={"banks": gd.Limit(10)}
        )
    message = str(raised.value)
    assert "workflow 'rc.billing', step 'pay' uses rate limit 'bank'" in message
    assert "did you mean 'banks'?" in message
    assert "Engine(rate_limits={'bank': gd.Limit(...)})" in message


def test_rate_config_weight_above_burst_fails() -> None:
    with pytest.raises(gd.ConfigError) as raised:
        gd.Engine(
            DSN,
            workflows=[Billing],
            queues={"default": 1},
            rate_limits={"bank": gd.Limit(10, burst=2)},
        )
    assert str(raised.value) == (
        "workflow 'rc.billing', step 'pay': weight 3 is above the burst 2 of rate limit "
        "'bank', so it could never run; lower the weight or raise the limit's burst"
    )


def test_rate_config_weight_up_to_burst_and_inline_limits_pass() -> None:
    engine = gd.Engine(
        DSN,
        workflows=[Billing, Plain],
        queues={"default": 1},
        rate_limits={"bank": gd.Limit(1, burst=3)},
    )
    assert set(engine.config.rate_configs.limits) == {"bank", "rc.billing.audit"}


def test_rate_config_client_only_engine_does_not_check_steps() -> None:
    # A web process starts and signals; it runs no step, so it need not repeat the limits.
    engine = gd.Engine(DSN, workflows=[Billing])
    assert set(engine.config.rate_configs.limits) == {"rc.billing.audit"}


@pytest.mark.parametrize(
    ("rate_limits", "message"),
    [
        ([("bank", gd.Limit(1))], "rate_limits must be a mapping of names to gd.Limit"),
        ({"": gd.Limit(1)}, "rate_limits: names must be non-empty strings, got ''"),
        ({"bank": 10}, "rate limit 'bank': expected a gd.Limit, got 10"),
        (
            {"bank": gd.Limit(1, per=timedelta(microseconds=1500))},
            "rate limit 'bank': per must be a whole number of milliseconds",
        ),
        ({"bank": gd.Limit(2**31)}, "rate limit 'bank': allowed and burst must be at most"),
        ({"bank": gd.Limit(1, burst=2**31)}, "allowed and burst must be at most 2147483647"),
        (
            {"bank": gd.Limit(3), "rc.billing.audit": gd.Limit(6)},
            "rate limit 'rc.billing.audit' is both a step's inline limit",
        ),
    ],
)
def test_rate_config_refuses_bad_limits(rate_limits: Any, message: str) -> None:
    with pytest.raises(gd.ConfigError) as raised:
        gd.Engine(DSN, workflows=[Billing], rate_limits=rate_limits)
    assert message in str(raised.value)


def test_rate_config_engine_may_repeat_an_inline_limit_unchanged() -> None:
    same = gd.Limit(5, per=timedelta(seconds=2), burst=8)
    engine = gd.Engine(DSN, workflows=[Billing], rate_limits={"rc.billing.audit": same})
    assert engine.config.rate_configs.limits["rc.billing.audit"] == same


# -- the write at start -------------------------------------------------------------------------


async def test_rate_config_written_at_start_with_inline_limits(
    make_engine: MakeEngine,
    manual_clock: ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    await make_engine(
        workflows=[Billing],
        rate_limits={
            "bank": gd.Limit(100, per=timedelta(minutes=1)),
            "fx": gd.Limit(3, per=timedelta(milliseconds=250), burst=12),
        },
    )
    assert await stored(db, gendurable_schema) == {
        "bank": (100, 60_000, 100),
        "fx": (3, 250, 12),
        "rc.billing.audit": (5, 2_000, 8),
    }
    updated = await db.fetch(f'SELECT DISTINCT updated_at FROM "{gendurable_schema}".rate_configs')
    assert [r["updated_at"] for r in updated] == [manual_clock.now()]


async def test_rate_config_last_start_wins_and_warns(
    make_engine: MakeEngine,
    db: asyncpg.Connection,
    gendurable_schema: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = await make_engine(
        workflows=[Plain], rate_limits={"bank": gd.Limit(100), "fx": gd.Limit(1)}
    )
    with caplog.at_level(logging.WARNING, logger="gendurable.engine"):
        await make_engine(workflows=[Plain], rate_limits={"fx": gd.Limit(1)})  # the same: quiet
        assert [r for r in caplog.records if "rate limit" in r.getMessage()] == []
        await make_engine(
            workflows=[Plain],
            rate_limits={"bank": gd.Limit(50, per=timedelta(minutes=1), burst=10)},
        )
    assert await stored(db, gendurable_schema) == {"bank": (50, 60_000, 10), "fx": (1, 1000, 1)}
    (warning,) = [r.getMessage() for r in caplog.records if "rate limit" in r.getMessage()]
    assert warning == (
        "rate limit 'bank' was configured as allowed=100 per=1000ms burst=100 by an earlier "
        "start; this engine replaces it with allowed=50 per=60000ms burst=10 (the last engine "
        "to start wins)"
    )
    await first.stop()
    async with first:  # a restart makes it the last start again
        assert (await stored(db, gendurable_schema))["bank"] == (100, 1000, 100)


async def test_rate_config_engines_starting_together_never_deadlock(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    names = [f"limit-{i:03d}" for i in range(80)]
    configs = []
    for n in range(6):
        order = names[:]
        random.Random(n).shuffle(order)
        configs.append({name: gd.Limit(n + 1) for name in order})
    await make_engine(workflows=[Plain], queues=None)  # the schema exists before the race
    for _ in range(3):
        engines = [
            await make_engine(workflows=[Plain], queues=None, rate_limits=c, start=False)
            for c in configs
        ]
        await asyncio.gather(*(e.start() for e in engines))
        values = set((await stored(db, gendurable_schema)).values())
        assert len(values) == 1  # one engine's numbers for every limit: the last start's
        assert values <= {(n + 1, 1000, n + 1) for n in range(6)}
        await asyncio.gather(*(e.stop() for e in engines))


async def test_rate_config_writers_take_rows_in_key_order(
    gendurable_dsn: str, gendurable_schema: str, make_engine: MakeEngine
) -> None:
    # Many writers, each giving the same names in its own order, over rows that exist: the
    # upsert locks rows in the order it writes them, so only the server-side sort keeps two
    # writers from locking a and b in opposite orders (a deadlock PostgreSQL would report).
    await make_engine(workflows=[Plain], queues=None)
    dbs = [await Database.open(gendurable_dsn, gendurable_schema, max_size=2) for _ in range(4)]
    names = [f"n{i:03d}" for i in range(300)]
    try:

        async def writer(w: int) -> None:
            rng = random.Random(w)
            for round_ in range(25):
                order = names[:]
                rng.shuffle(order)
                limits = RateConfigs({name: gd.Limit(1 + (w + round_) % 7) for name in order})
                await EngineStore(dbs[w]).rate_config_write(**limits.columns(), now=None)
                await MaintenanceStore(dbs[w]).rate_config_refresh(**limits.columns(), now=None)

        await asyncio.gather(*(writer(w) for w in range(len(dbs))))
    finally:
        for db in dbs:
            await db.close()
