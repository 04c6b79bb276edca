"""Idempotent signals: `Flow.signal(..., idempotency_key=K)` stores a signal once per instance.

A resend with the same key stores nothing, wakes nothing and returns the first send's id,
for as long as the instance exists: after the signal was consumed, after the instance ended,
until the collector deletes it. The key is scoped to one instance, and a resend that is not
one (another name or payload under the same key) is refused. Concurrent sends of one key
store one signal. Time moves with the manual clock; rows are counted with plain SQL.
"""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

import gendurable as gd
from gendurable.testing import MakeEngine, RecorderFactory
from recordings import recorded

RACES = 60
SENDERS = 6

runs: list[list[tuple[str, Any]]] = recorded([])


@gd.workflow(name="idem.inbox")
class Inbox:
    """Consumes "item" signals one run at a time, parking again after each; "stop" ends it."""

    @gd.step(start=True)
    @gd.await_signals("item", "stop")
    async def collect(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        runs.append([(s.name, s.payload) for s in ctx.awaited])
        if any(s.name == "stop" for s in ctx.awaited):
            return gd.done([s.id for s in ctx.awaited])
        return gd.goto(self.collect)


@gd.workflow(name="idem.other")
class Other:
    @gd.step(start=True)
    @gd.await_signals("item")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


async def key_rows(db: asyncpg.Connection, schema: str) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        f'SELECT instance_id, idempotency_key, signal_id FROM "{schema}".signal_keys '
        "ORDER BY instance_id, idempotency_key"
    )
    return [tuple(r) for r in rows]


async def test_a_resend_with_the_same_key_stores_nothing_and_returns_the_first_id(
    make_engine: MakeEngine, rows: Any, recorder: RecorderFactory
) -> None:
    engine = await make_engine(workflows=[Inbox], queues=None)
    events = recorder(engine)
    handle = await Inbox.start(key="a")

    first = await Inbox.signal("a", "item", {"n": 1}, idempotency_key="k1")
    again = await Inbox.signal("a", "item", {"n": 1}, idempotency_key="k1")
    by_id = await Inbox.signal(handle.id, "item", {"n": 1}, idempotency_key="k1")
    other = await Inbox.signal("a", "item", {"n": 1}, idempotency_key="k2")
    plain = await Inbox.signal("a", "item", {"n": 1})

    assert first == again == by_id
    assert len({first, other, plain}) == 3
    assert [s["id"] for s in await rows.signals(handle.id)] == [first, other, plain]
    assert [e["signal_id"] for e in events.of(("signal", "delivered"))] == [first, other, plain]
    assert events.of(("signal", "duplicate")) == [
        {"workflow": "idem.inbox", "target": "a", "name": "item", "signal_id": first,
         "idempotency_key": "k1"},
        {"workflow": "idem.inbox", "target": handle.id, "name": "item", "signal_id": first,
         "idempotency_key": "k1"},
    ]  # fmt: skip


async def test_a_key_outlives_its_signal_once_consumed_and_a_resend_wakes_nothing(
    make_engine: MakeEngine, rows: Any
) -> None:
    engine = await make_engine(workflows=[Inbox])
    handle = await Inbox.start(key="a")
    await engine.drain()

    first = await Inbox.signal("a", "item", {"n": 1}, idempotency_key="k1")
    await engine.drain()
    assert runs == [[("item", {"n": 1})]]
    assert await rows.signals(handle.id) == []  # consumed; it awaits "item" again

    assert await Inbox.signal("a", "item", {"n": 1}, idempotency_key="k1") == first
    assert (await rows.instance(handle.id))["status"] == "awaiting"
    await engine.drain()
    assert runs == [[("item", {"n": 1})]]
    assert await rows.signals(handle.id) == []


async def test_a_resend_after_the_instance_ended_returns_the_first_id_until_it_is_collected(
    make_engine: MakeEngine,
    rows: Any,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    engine = await make_engine(workflows=[Inbox], gc_retention=timedelta(days=1))
    handle = await Inbox.start(key="a")
    first = await Inbox.signal("a", "stop", idempotency_key="k1")
    await engine.drain()
    assert (await rows.instance(handle.id))["status"] == "done"

    # The answer was lost and the client sends again: what the first send did stands.
    assert await Inbox.signal("a", "stop", idempotency_key="k1") == first
    assert await Inbox.signal(handle.id, "stop", idempotency_key="k1") == first
    with pytest.raises(gd.NoTarget):  # the key promises nothing for another signal
        await Inbox.signal("a", "stop", idempotency_key="k2")
    with pytest.raises(gd.NoTarget):  # nor for another instance
        await Inbox.signal("nobody", "stop", idempotency_key="k1")

    manual_clock.advance(timedelta(days=2))
    await engine.drain()  # the collector deletes the instance, and its keys with it
    assert await key_rows(db, gendurable_schema) == []
    with pytest.raises(gd.NoTarget):
        await Inbox.signal("a", "stop", idempotency_key="k1")


async def test_a_key_belongs_to_one_instance(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Inbox, Other])
    a = await Inbox.start(key="a")
    b = await Inbox.start(key="b")
    shared = await Other.start(key="a")  # another workflow, the same business key

    to_a = await Inbox.signal("a", "item", None, idempotency_key="k")
    to_b = await Inbox.signal("b", "item", None, idempotency_key="k")
    to_shared = await Other.signal("a", "item", None, idempotency_key="k")
    assert len({to_a, to_b, to_shared}) == 3

    # `a` ends; a new instance takes its business key: the key is the new one's to use.
    await Inbox.signal("a", "stop", None)
    await engine.drain()
    again = await Inbox.start(key="a")
    assert again.id != a.id
    to_again = await Inbox.signal("a", "item", None, idempotency_key="k")
    assert to_again not in (to_a, to_b, to_shared)  # stored anew (the engine may consume it)
    assert await key_rows(db, gendurable_schema) == [
        (a.id, "k", to_a), (b.id, "k", to_b), (shared.id, "k", to_shared),
        (again.id, "k", to_again),
    ]  # fmt: skip


async def test_a_key_is_not_found_through_another_workflow_with_the_same_business_key(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Inbox, Other])
    await Inbox.start(key="a")
    await Inbox.signal("a", "item", None, idempotency_key="k")
    await Other.start(key="a")
    await Other.signal("a", "item", None)
    await engine.drain()  # Other's `a` ended; Inbox's lives on with the key

    with pytest.raises(gd.NoTarget):
        await Other.signal("a", "item", None, idempotency_key="k")


@pytest.mark.parametrize(
    ("name", "payload"),
    [("item", {"n": 2}), ("item", None), ("stop", {"n": 1})],
    ids=["other payload", "no payload", "other name"],
)
async def test_reusing_a_key_for_another_signal_is_refused_and_stores_nothing(
    make_engine: MakeEngine, rows: Any, name: str, payload: Any
) -> None:
    await make_engine(workflows=[Inbox], queues=None)
    handle = await Inbox.start(key="a")
    first = await Inbox.signal("a", "item", {"n": 1}, idempotency_key="k")

    with pytest.raises(gd.IdempotencyConflict, match="idempotency key 'k'") as refused:
        await Inbox.signal("a", name, payload, idempotency_key="k")
    assert refused.value.signal_id == first
    assert [s["id"] for s in await rows.signals(handle.id)] == [first]


async def test_a_resend_is_the_same_payload_whatever_the_order_of_its_keys(
    make_engine: MakeEngine,
) -> None:
    await make_engine(workflows=[Inbox], queues=None)
    await Inbox.start(key="a")
    first = await Inbox.signal("a", "item", {"n": 1, "m": [1, 2]}, idempotency_key="k")

    assert await Inbox.signal("a", "item", {"m": [1, 2], "n": 1}, idempotency_key="k") == first


@pytest.mark.parametrize("key", ["", 7, b"k", "a\x00b", "k" * 256, "é" * 128])
async def test_a_bad_idempotency_key_is_refused_before_anything_is_stored(
    make_engine: MakeEngine, rows: Any, key: Any
) -> None:
    await make_engine(workflows=[Inbox], queues=None)
    await Inbox.start(key="a")

    with pytest.raises(gd.ValidationError, match="idempotency_key"):
        await Inbox.signal("a", "item", None, idempotency_key=key)
    assert await rows.signal_count() == 0
    assert await Inbox.signal("a", "item", None, idempotency_key="k" * 255) > 0


@pytest.mark.slow
@pytest.mark.race
async def test_concurrent_sends_of_one_key_store_one_signal_and_all_get_its_id(
    make_engine: MakeEngine, rows: Any
) -> None:
    # Senders on several client engines (their own pools) send one key at once to an
    # instance that awaits it, many times over: the database sees truly concurrent
    # deliveries, each waiting on the row lock of the one before. Exactly one is stored and
    # wakes the instance; every sender is answered with its id.
    worker = await make_engine(workflows=[Inbox])
    clients = [await make_engine(workflows=[Inbox], queues=None) for _ in range(3)]
    rng = random.Random()
    handle = await Inbox.start(key="a", engine=worker)
    await worker.drain()

    async def send(n: int, key: str) -> int:
        for _ in range(rng.randint(0, 3)):
            await asyncio.sleep(0)
        sent: int = await Inbox.signal(
            "a", "item", {"race": key}, idempotency_key=key, engine=clients[n % len(clients)]
        )
        return sent

    for race in range(RACES):
        key = f"race-{race}"
        ids = await asyncio.gather(*(send(n, key) for n in range(SENDERS)))
        assert len(set(ids)) == 1, f"race {race}: {SENDERS} sends stored {sorted(set(ids))}"
        await worker.drain()  # its own loop may have run it already, woken by the first
        assert await rows.signals(handle.id) == []
    # One run per race, each with the one signal stored: a second one stored would have
    # been seen by that run or have caused one more.
    assert runs == [[("item", {"race": f"race-{n}"})] for n in range(RACES)]


async def test_the_command_line_form_and_the_engine_form_share_keys(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Inbox], queues=None)
    await Inbox.start(key="a")
    first = await engine.signal("idem.inbox", "a", "item", {"n": 1}, idempotency_key="k")

    row = await engine.store.signal_deliver(
        workflow="idem.inbox", id=None, key="a", name="item",
        payload=msgspec.json.encode({"n": 1}), now=None, idempotency_key="k",
    )  # fmt: skip
    assert row is not None
    assert (row.signal_id, row.duplicate, row.same, row.woke) == (first, True, True, False)


async def test_a_keyed_signal_is_not_claimed_where_it_is_sent_so_that_it_can_be_repeated(
    make_engine: MakeEngine,
) -> None:
    # A local engine claims what an unkeyed signal wakes in the delivery itself; a keyed one
    # is repeated after a lost answer, and a repeat could not hand that claim back: its
    # wake goes through the queue.
    engine = await make_engine(workflows=[Inbox], local_starts=True)
    offered: list[str | None] = []
    deliver = engine.store.signal_deliver

    async def spy(*args: Any, **kwargs: Any) -> Any:
        offered.append(kwargs.get("locked_by"))
        return await deliver(*args, **kwargs)

    engine.store.signal_deliver = spy  # type: ignore[method-assign]
    await Inbox.start(key="a")
    await engine.drain()

    await Inbox.signal("a", "item", {"n": 1}, idempotency_key="k")
    await engine.drain()
    await Inbox.signal("a", "item", {"n": 2})
    await engine.drain()

    assert offered[0] is None
    assert offered[1] is not None
    assert runs == [[("item", {"n": 1})], [("item", {"n": 2})]]
