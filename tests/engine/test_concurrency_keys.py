"""Guarantee 6: instances sharing a concurrency key never execute at the same time.

The engine-level test runs instances of two keys on a queue with room for all of them and
watches the steps; the claim-level tests play the claims by hand (`instance_claim` with
chosen worker ids) to pin each of the three things that hold the guarantee: a key already
executing is passed over, one batch takes one row per key, and two claims running at once
pass over each other's keys; the unique index is the database's own refusal underneath.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from gendurable.testing import MakeEngine

LEASE = timedelta(seconds=30)
running: Counter[str] = Counter()
most: Counter[str] = Counter()
ran: list[str] = []


@pytest.fixture(autouse=True)
def _reset() -> None:
    running.clear()
    most.clear()
    ran.clear()


@gd.workflow(name="ck.serial")
class Serial:
    @gd.step(start=True)
    async def work(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        ck = state["ck"]
        running[ck] += 1
        most[ck] = max(most[ck], running[ck])
        for _ in range(20):  # stay in flight while the scheduler fills its free slots
            await asyncio.sleep(0)
        running[ck] -= 1
        ran.append(ctx.key or "")
        return gd.done()


async def test_concurrency_key_instances_never_execute_at_once(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Serial], queues={"default": 8})
    for i in range(4):
        for ck in ("a", "b"):
            await Serial.start(key=f"{ck}{i}", state={"ck": ck}, concurrency_key=ck)
    await engine.drain()

    assert sorted(ran) == sorted(f"{ck}{i}" for i in range(4) for ck in ("a", "b"))
    assert most == {"a": 1, "b": 1}
    # Within a key the most urgent (here: the oldest) runs first.
    assert [k for k in ran if k.startswith("a")] == ["a0", "a1", "a2", "a3"]


class Claims:
    """Hand-played claims on the default queue of a client-only engine."""

    def __init__(self, engine: gd.Engine) -> None:
        self.engine = engine
        self.store = engine.store

    async def start(self, key: str, ck: str | None) -> int:
        handle = await Serial.start(key=key, state={"ck": ck}, concurrency_key=ck)
        return handle.id

    def args(self, limit: int, locked_by: str) -> list[Any]:
        return [
            "default",
            limit,
            locked_by,
            [LEASE],
            self.engine.clock.now(),
            ["ck.serial"],
            ["work"],
            self.store.key_lock_namespace,
            timedelta(seconds=5),
        ]

    async def claim(self, locked_by: str, limit: int = 10) -> set[int]:
        rows = await self.store.instance_claim(*self.args(limit, locked_by)[:7])
        return {r["id"] for r in rows if r["go"]}


@pytest.fixture
async def claims(make_engine: MakeEngine) -> Claims:
    return Claims(await make_engine(workflows=[Serial], queues=None))


async def test_claim_takes_the_most_urgent_row_of_each_key_in_one_batch(claims: Claims) -> None:
    a = [await claims.start(f"a{i}", "a") for i in range(3)]
    b = [await claims.start(f"b{i}", "b") for i in range(2)]
    free = await claims.start("free", None)

    assert await claims.claim("w1") == {a[0], b[0], free}


async def test_claim_passes_over_a_key_executing_elsewhere(claims: Claims) -> None:
    a = [await claims.start(f"a{i}", "a") for i in range(2)]
    assert await claims.claim("w1", limit=1) == {a[0]}
    behind = await claims.start("behind", None)  # queued after a1: not held up by it

    assert await claims.claim("w2") == {behind}
    assert await claims.claim("w3") == set()


async def test_concurrent_claims_pass_over_each_others_keys(claims: Claims) -> None:
    # A claim whose transaction is still open holds its key (an advisory lock of its own
    # namespace): a second claim passes over the key's other rows instead of waiting on it.
    a = [await claims.start(f"a{i}", "a") for i in range(2)]
    b = await claims.start("b0", "b")
    async with claims.store.pool.acquire() as conn:
        tx = conn.transaction()
        await tx.start()
        first = await conn.fetch(claims.store.sql["instance_claim"], *claims.args(1, "w1"))
        assert [r["id"] for r in first] == [a[0]]
        async with asyncio.timeout(10):
            assert await claims.claim("w2") == {b}
        await tx.commit()
    assert await claims.claim("w3") == set()  # a1 waits for a0, which still executes


async def test_the_database_refuses_two_executing_rows_of_one_key(
    claims: Claims, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    a = [await claims.start(f"a{i}", "a") for i in range(2)]
    await db.execute(
        f"UPDATE \"{gendurable_schema}\".instances SET status = 'executing' WHERE id = $1", a[0]
    )
    with pytest.raises(asyncpg.UniqueViolationError):
        await db.execute(
            f"UPDATE \"{gendurable_schema}\".instances SET status = 'executing' WHERE id = $1",
            a[1],
        )
