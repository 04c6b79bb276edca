"""start and start_many on real PostgreSQL: handles, uniqueness, validation, timing, routing."""

from __future__ import annotations

import asyncio
import random
from datetime import timedelta, timezone
from typing import Any

import asyncpg
import msgspec
import pytest

import gendurable as gd
from gendurable.entries import columns, new_row
from gendurable.outcome import ChildEntry
from gendurable.records import LIVE_STATUSES
from gendurable.testing import MakeEngine
from recordings import recorded

RAN: list[str] = recorded([])


@gd.workflow(name="start.order")
class Order:
    class State(msgspec.Struct):
        amount: int
        note: str | None = None

    @gd.step
    async def run(self, state: State, ctx: gd.Context) -> gd.Outcome:
        RAN.append(ctx.key or f"#{ctx.id}")
        return gd.done({"amount": state.amount})


@gd.workflow(name="start.mailer", queue="mail")
class Mailer:
    @gd.step
    async def send(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.queue)


@gd.workflow(name="start.loose")
class Loose:
    @gd.step
    async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(state)


@gd.workflow(name="start.metered", queue="metered", priority=5, max_attempts=7, version=2)
class Metered:
    """Every column a start writes differs from `Order`'s: queue, priority, start step, its
    attempts and rate limit (partitioned by the state, weighted), the state's version."""

    class State(msgspec.Struct):
        tenant: str = "acme"

    @gd.step(start=True, rate_limit="api", partition=lambda s: s.tenant, weight=2, max_attempts=3)
    async def call(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    @gd.upgrade(from_version=1)
    def up(self, state: dict[str, Any]) -> dict[str, Any]:
        return state


async def _rows(db: asyncpg.Connection, schema: str, where: str = "true") -> list[asyncpg.Record]:
    return await db.fetch(
        f"SELECT id, workflow, key, status::text, queue, priority, run_at, concurrency_key, "
        f'state::text FROM "{schema}".instances WHERE {where} ORDER BY id'
    )


async def _count(db: asyncpg.Connection, schema: str) -> int:
    return int(await db.fetchval(f'SELECT count(*) FROM "{schema}".instances'))


# -- start: handles and uniqueness --------------------------------------------------------


async def test_start_returns_a_created_handle_and_the_same_id_for_a_live_key(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Order], queues=None)

    first = await Order.start(key="o-1", state=Order.State(amount=10))
    again = await Order.start(key="o-1", state=Order.State(amount=99))
    other = await Order.start(key="o-2", state=Order.State(amount=20))

    assert first == gd.Handle(first.id, "o-1", True)
    assert again == gd.Handle(first.id, "o-1", False)
    assert other.created is True
    assert other.id != first.id
    rows = await _rows(db, gendurable_schema)
    assert [(r["key"], r["status"], r["state"]) for r in rows] == [
        ("o-1", "available", '{"note": null, "amount": 10}'),
        ("o-2", "available", '{"note": null, "amount": 20}'),
    ]


async def test_start_on_conflict_raise_raises_duplicate_key(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Order], queues=None)
    first = await Order.start(key="dup", state=Order.State(amount=1))

    with pytest.raises(gd.DuplicateKey, match="dup") as caught:
        await Order.start(key="dup", state=Order.State(amount=2), on_conflict="raise")

    assert caught.value.existing_id == first.id
    assert await _count(db, gendurable_schema) == 1


async def test_a_start_without_a_key_takes_the_plain_insert_and_one_with_a_key_the_dedup(
    make_engine: MakeEngine,
) -> None:
    """An unkeyed start cannot conflict: it goes in without ON CONFLICT (no speculative
    insertion). A keyed one goes through the statement that finds the key's live holder."""
    engine = await make_engine(workflows=[Order], queues=None)
    ran: list[str] = []
    row = engine.store.db.row

    async def spy(kind: Any, name: str, /, **values: Any) -> Any:
        ran.append(name)
        return await row(kind, name, **values)

    engine.store.db.row = spy  # type: ignore[method-assign]

    await Order.start(state=Order.State(amount=1))
    await Order.start(key="k", state=Order.State(amount=2))
    await Order.start(key="k", state=Order.State(amount=3))

    assert ran == ["instance_insert_unkeyed", "instance_insert", "instance_insert"]


async def test_an_unkeyed_start_stores_every_column_a_keyed_start_stores(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Metered], queues=None)
    options: dict[str, Any] = {
        "state": Metered.State(tenant="t1"),
        "queue": "q2",
        "priority": -4,
        "delay": timedelta(seconds=30),
        "concurrency_key": "c-1",
        "scope": ("available", "executing", "awaiting", "waiting", "done"),
    }
    keyed = await engine.start_instance(Metered.spec.name, key="k", **options)
    unkeyed = await engine.start_instance(Metered.spec.name, **options)

    async def stored(id: int) -> tuple[Any, ...]:
        row = await db.fetchrow(
            "SELECT workflow, queue, step, status::text, state::text, max_attempts, priority, "
            "run_at, scope::text[], concurrency_key, rate_limit, rate_partition, weight, "
            "state_version, trace_context, locked_by, locked_until, attempt, parent_id "
            f'FROM "{gendurable_schema}".instances WHERE id = $1',
            id,
        )
        assert row is not None
        return (*row.values(),)

    assert (unkeyed.created, unkeyed.key) == (True, None)
    assert await stored(unkeyed.id) == await stored(keyed.id)


async def test_start_unkeyed_instances_never_conflict(make_engine: MakeEngine) -> None:
    await make_engine(workflows=[Order], queues=None)

    a = await Order.start(state=Order.State(amount=1))
    b = await Order.start(state=Order.State(amount=1))

    assert a.created
    assert b.created
    assert a.key is None
    assert a.id != b.id


async def test_start_same_key_in_two_workflows_is_two_instances(make_engine: MakeEngine) -> None:
    await make_engine(workflows=[Order, Loose], queues=None)

    a = await Order.start(key="shared", state=Order.State(amount=1))
    b = await Loose.start(key="shared", state={"x": 1})

    assert a.created
    assert b.created
    assert a.id != b.id


async def test_start_after_done_creates_a_new_instance_with_the_default_scope(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Order])
    first = await Order.start(key="again", state=Order.State(amount=1))
    await engine.drain()
    assert (await Order.get(first.id)).status == "done"

    second = await Order.start(key="again", state=Order.State(amount=2))

    assert second.created is True
    assert second.id != first.id
    assert (await Order.get("again")).id == second.id  # the live one wins a lookup by key
    await engine.drain()
    assert RAN == ["again", "again"]


async def test_start_scope_with_done_keeps_the_key_after_done(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Order])
    scope = [*LIVE_STATUSES, "done"]
    first = await Order.start(key="once", state=Order.State(amount=1), scope=scope)
    await engine.drain()
    assert (await Order.get("once")).status == "done"

    second = await Order.start(key="once", state=Order.State(amount=2), scope=scope)
    plain = await Order.start(key="once", state=Order.State(amount=3))

    assert second == gd.Handle(first.id, "once", False)
    assert plain == gd.Handle(first.id, "once", False)
    with pytest.raises(gd.DuplicateKey):
        await Order.start(key="once", state=Order.State(amount=4), on_conflict="raise")
    await engine.drain()
    assert RAN == ["once"]


async def test_start_scope_without_failed_frees_the_key_after_failure(
    make_engine: MakeEngine,
) -> None:
    @gd.workflow(name="start.failing", max_attempts=1)
    class Failing:
        @gd.step
        async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.stop("no")

    engine = await make_engine(workflows=[Failing])
    scope = [*LIVE_STATUSES, "done"]
    first = await Failing.start(key="f", state={}, scope=scope)
    await engine.drain()
    assert (await Failing.get(first.id)).status == "failed"

    second = await Failing.start(key="f", state={}, scope=scope)

    assert second.created is True
    assert second.id != first.id
    await engine.drain()
    assert (await Failing.get(second.id)).status == "failed"


async def test_start_scope_must_name_every_live_status(make_engine: MakeEngine) -> None:
    await make_engine(workflows=[Order], queues=None)

    with pytest.raises(gd.ValidationError, match="live status"):
        await Order.start(key="s", state=Order.State(amount=1), scope=["done"])
    with pytest.raises(gd.ValidationError, match="unknown statuses"):
        await Order.start(key="s", state=Order.State(amount=1), scope=[*LIVE_STATUSES, "gone"])


# -- start: validation before anything is written ------------------------------------------


@pytest.mark.parametrize(
    "state",
    [
        Order.State(amount="ten"),  # type: ignore[arg-type]
        Order.State(amount=1, note=5),  # type: ignore[arg-type]
        {"amount": "ten"},
        {"amount": 1, "note": ["x"]},
        {"note": "no amount"},
        None,
        42,
        "amount",
    ],
    ids=[
        "struct-wrong-type",
        "struct-optional-wrong",
        "dict-wrong-type",
        "dict-optional-wrong",
        "dict-missing-field",
        "none-with-required",
        "int",
        "str",
    ],
)
async def test_start_bad_state_raises_validation_error_and_writes_nothing(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str, state: Any
) -> None:
    await make_engine(workflows=[Order], queues=None)

    with pytest.raises(gd.ValidationError, match=r"(?i)state"):
        await Order.start(key="bad", state=state)

    assert await _count(db, gendurable_schema) == 0


async def test_start_unencodable_untyped_state_raises_and_writes_nothing(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Loose], queues=None)

    with pytest.raises(gd.ValidationError, match="JSON"):
        await Loose.start(key="bad", state={"when": object()})

    assert await _count(db, gendurable_schema) == 0


async def test_start_dict_state_is_stored_as_the_state_type(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Order])

    await Order.start(key="d", state={"amount": 7})
    info = await Order.get("d")

    assert info.state == Order.State(amount=7)
    await engine.drain()
    assert await Order.result("d") == {"amount": 7}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"delay": timedelta(seconds=-1)}, "non-negative"),
        ({"delay": timedelta(seconds=1), "run_at": "x"}, "not both"),
        ({"priority": 40_000}, "priority"),
        ({"key": ""}, "key"),
        ({"on_conflict": "ignore"}, "on_conflict"),
    ],
    ids=["negative-delay", "delay-and-run-at", "priority-range", "empty-key", "on-conflict"],
)
async def test_start_bad_options_raise_validation_error_and_write_nothing(
    make_engine: MakeEngine,
    db: asyncpg.Connection,
    gendurable_schema: str,
    options: dict[str, Any],
    match: str,
) -> None:
    await make_engine(workflows=[Order], queues=None)
    options = {"key": "k", **options}

    with pytest.raises(gd.ValidationError, match=match):
        await Order.start(state=Order.State(amount=1), **options)

    assert await _count(db, gendurable_schema) == 0


async def test_start_naive_run_at_is_refused(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    await make_engine(workflows=[Order], queues=None)

    with pytest.raises(gd.ValidationError, match="timezone-aware"):
        await Order.start(
            state=Order.State(amount=1), run_at=manual_clock.now().replace(tzinfo=None)
        )


# -- start: timing, priority, queues, concurrency keys ---------------------------------------


async def test_start_delay_is_not_due_until_the_clock_passes_it(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Order])
    started_at = manual_clock.now()
    await Order.start(key="later", state=Order.State(amount=1), delay=timedelta(hours=1))

    await engine.drain()
    info = await Order.get("later")
    assert (info.status, info.run_at) == ("available", started_at + timedelta(hours=1))

    manual_clock.advance(timedelta(minutes=59, seconds=59))
    await engine.drain()
    assert (await Order.get("later")).status == "available"
    assert RAN == []

    manual_clock.advance(timedelta(seconds=1))
    await engine.drain()
    assert (await Order.get("later")).status == "done"
    assert RAN == ["later"]


async def test_start_run_at_is_not_due_until_the_clock_reaches_it(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Order])
    when = manual_clock.now() + timedelta(days=2)
    await Order.start(key="at", state=Order.State(amount=1), run_at=when)

    manual_clock.advance(timedelta(days=1))
    await engine.drain()
    assert (await Order.get("at")).run_at == when
    assert RAN == []

    manual_clock.set(when)
    await engine.drain()
    assert RAN == ["at"]


async def test_start_claims_by_priority_then_run_at_then_id(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Order], queues={"default": 1})
    hour = timedelta(hours=1)
    # (key, priority, run_at offset): none is due until the clock moves past them all.
    plan = [
        ("low-early", 0, 1 * hour),
        ("high-late", 5, 3 * hour),
        ("high-early", 5, 2 * hour),
        ("low-early-2", 0, 1 * hour),
        ("negative", -3, 1 * hour),
        ("low-late", 0, 4 * hour),
        ("top", 100, 4 * hour),
    ]
    now = manual_clock.now()
    for key, priority, offset in plan:
        await Order.start(
            key=key, state=Order.State(amount=1), priority=priority, run_at=now + offset
        )

    manual_clock.advance(5 * hour)
    await engine.drain()

    assert RAN == [
        "top",
        "high-early",
        "high-late",
        "low-early",
        "low-early-2",
        "low-late",
        "negative",
    ]


async def test_start_priority_defaults_to_the_workflow_priority(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    @gd.workflow(name="start.urgent", priority=7)
    class Urgent:
        @gd.step
        async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    await make_engine(workflows=[Urgent], queues=None)
    await Urgent.start(key="a", state={})
    await Urgent.start(key="b", state={}, priority=-2)

    rows = await _rows(db, gendurable_schema)
    assert [(r["key"], r["priority"]) for r in rows] == [("a", 7), ("b", -2)]


async def test_start_routes_to_the_workflow_queue_or_the_given_one(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    default_worker = await make_engine(workflows=[Mailer], queues={"default": 2})
    in_mail = await Mailer.start(key="m", state={})
    in_default = await Mailer.start(key="d", state={}, queue="default")

    await default_worker.drain()

    rows = {r["key"]: r for r in await _rows(db, gendurable_schema)}
    assert (rows["m"]["queue"], rows["m"]["status"]) == ("mail", "available")
    assert (rows["d"]["queue"], rows["d"]["status"]) == ("default", "done")

    mail_worker = await make_engine(workflows=[Mailer], queues={"mail": 1})
    await mail_worker.drain()

    assert await Mailer.result(in_mail.id, engine=mail_worker) == "mail"
    assert await Mailer.result(in_default.id, engine=default_worker) == "default"


async def test_start_stores_the_concurrency_key(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Order], queues=None)

    await Order.start(key="a", state=Order.State(amount=1), concurrency_key="account-7")
    await Order.start(key="b", state=Order.State(amount=1))
    await Order.start_many([Order.new("c", Order.State(amount=1), concurrency_key="account-9")])

    rows = await _rows(db, gendurable_schema)
    assert [(r["key"], r["concurrency_key"]) for r in rows] == [
        ("a", "account-7"),
        ("b", None),
        ("c", "account-9"),
    ]


# -- start_many ---------------------------------------------------------------------------


async def test_start_many_returns_handles_in_entry_order_with_created_flags(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Order, Loose], queues=None)
    live = await Order.start(key="b-live", state=Order.State(amount=1))

    handles = await Order.start_many(
        [
            Order.new("z-new", Order.State(amount=1)),
            Order.new("b-live", Order.State(amount=2)),
            Order.new(None, Order.State(amount=3)),
            Loose.new("z-new", {"loose": True}),
            Order.new("a-new", Order.State(amount=4)),
            Order.new("z-new", Order.State(amount=5)),
            Order.new(None, Order.State(amount=6)),
            Loose.new(None, {"n": 7}),
        ]
    )

    rows = {r["id"]: r for r in await _rows(db, gendurable_schema)}
    assert [(h.key, h.created) for h in handles] == [
        ("z-new", True),
        ("b-live", False),
        (None, True),
        ("z-new", True),
        ("a-new", True),
        ("z-new", False),  # a duplicate within the batch: the first entry's instance
        (None, True),
        (None, True),
    ]
    assert handles[1].id == live.id
    assert handles[5].id == handles[0].id
    assert len({h.id for h in handles}) == 7
    # each handle points at the row its entry made
    assert [(rows[h.id]["workflow"], rows[h.id]["state"]) for h in handles] == [
        ("start.order", '{"note": null, "amount": 1}'),
        ("start.order", '{"note": null, "amount": 1}'),  # the live one, unchanged
        ("start.order", '{"note": null, "amount": 3}'),
        ("start.loose", '{"loose": true}'),
        ("start.order", '{"note": null, "amount": 4}'),
        ("start.order", '{"note": null, "amount": 1}'),
        ("start.order", '{"note": null, "amount": 6}'),
        ("start.loose", '{"n": 7}'),
    ]
    assert len(rows) == 7


async def test_start_many_unkeyed_entries_each_make_an_instance(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Loose], queues=None)

    handles = await Loose.start_many([Loose.new(state={"i": i}) for i in range(25)])

    assert all(h.created and h.key is None for h in handles)
    states = {
        r["id"]: r["state"] for r in await _rows(db, gendurable_schema, "workflow = 'start.loose'")
    }
    assert [states[h.id] for h in handles] == [f'{{"i": {i}}}' for i in range(25)]


async def test_start_many_unkeyed_entries_of_interleaved_workflows_get_their_own_handles(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Loose, Mailer], queues=None)
    entries = [
        (Loose if i % 3 else Mailer).new(None if i % 2 else f"k{i}", {"i": i}) for i in range(12)
    ]

    handles = await Loose.start_many(entries)

    stored = {r["id"]: (r["workflow"], r["state"]) for r in await _rows(db, gendurable_schema)}
    assert [stored[h.id] for h in handles] == [
        (e.workflow, f'{{"i": {i}}}') for i, e in enumerate(entries)
    ]


async def test_start_many_entries_keep_their_options(
    make_engine: MakeEngine,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    await make_engine(workflows=[Mailer], queues=None)

    await Mailer.start_many(
        [
            Mailer.new("a", {}),
            Mailer.new("b", {}, queue="default", priority=3, delay=timedelta(minutes=5)),
        ]
    )

    rows = {r["key"]: r for r in await _rows(db, gendurable_schema)}
    now = manual_clock.now()
    assert (rows["a"]["queue"], rows["a"]["priority"], rows["a"]["run_at"]) == ("mail", 0, now)
    assert (rows["b"]["queue"], rows["b"]["priority"], rows["b"]["run_at"]) == (
        "default",
        3,
        now + timedelta(minutes=5),
    )


async def test_start_many_rows_store_what_start_stores_whether_the_batch_shares_a_column_or_not(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    """A batch sends a column once when all its rows hold the same value, else one value per
    row: either way each row stores what `start` stores for the same entry."""
    engine = await make_engine(workflows=[Order, Mailer, Metered], queues=None)
    every = ("available", "executing", "awaiting", "waiting", "done")

    def mixed(tag: str) -> list[ChildEntry]:  # rows differing in every column
        return [
            Order.new(f"{tag}-o", Order.State(amount=1)),
            Metered.new(
                f"{tag}-m",
                Metered.State(tenant="t1"),
                queue="q2",
                priority=-4,
                delay=timedelta(seconds=30),
                concurrency_key="c-1",
                scope=every,
            ),
            Mailer.new(None, {"x": 1}),
            Metered.new(f"{tag}-m2", Metered.State(tenant="t2")),
        ]

    def shared(tag: str) -> list[ChildEntry]:  # rows alike but for key and state
        return [
            Metered.new(f"{tag}-{i}", Metered.State(tenant="t"), priority=9, scope=every)
            for i in range(3)
        ]

    async def stored(handles: list[gd.Handle], tag: str) -> list[tuple[Any, ...]]:
        rows = []
        for h in handles:
            row = await db.fetchrow(
                "SELECT workflow, queue, step, state::text, max_attempts, priority, run_at, "
                "key, scope::text[], concurrency_key, rate_limit, rate_partition, weight, "
                f'state_version, parent_id, spawn_index FROM "{gendurable_schema}".instances '
                "WHERE id = $1",
                h.id,
            )
            assert row is not None
            rows.append((*row.values(),))
        return [tuple(v.replace(tag, "") if isinstance(v, str) else v for v in r) for r in rows]

    for entries in (mixed, shared):
        one_by_one = [
            await engine.start_instance(
                e.workflow,
                key=e.key,
                state=e.state,
                queue=e.queue,
                priority=e.priority,
                delay=e.delay,
                concurrency_key=e.concurrency_key,
                scope=e.scope,
            )
            for e in entries("one")
        ]
        batch = await engine.start_many(entries("many"))

        assert all(h.created for h in batch)
        assert await stored(batch, "many") == await stored(one_by_one, "one")


async def test_a_batch_of_rows_each_with_its_own_run_at_or_delay_stores_each_exactly(
    make_engine: MakeEngine,
    manual_clock: gd.ManualClock,
    db: asyncpg.Connection,
    gendurable_schema: str,
) -> None:
    """Times and intervals that differ per row travel as text: each comes back to the
    microsecond, whatever its zone (no entry of `start_many` has a `run_at` of its own, but
    the batch insert takes one per row)."""
    engine = await make_engine(workflows=[Loose], queues=None)
    now = manual_clock.now()
    zone = timezone(timedelta(hours=-3, minutes=-30))
    at = [now + timedelta(days=400, microseconds=7), (now + timedelta(hours=5)).astimezone(zone)]
    delays = [timedelta(days=2, seconds=5, microseconds=999_999), timedelta(microseconds=1)]
    rows = [new_row(Loose.spec, Loose.new(f"at-{i}", {}), run_at=t) for i, t in enumerate(at)]
    rows += [new_row(Loose.spec, Loose.new(f"in-{i}", {}, delay=d)) for i, d in enumerate(delays)]
    params = columns(rows)
    assert params["run_at_rows"] is not None  # the path under test: one value per row
    assert params["delay_rows"] is not None

    await engine.store.instance_insert_many(columns=params, parent_id=None, now=now)

    stored = {
        r["key"]: r["run_at"]
        for r in await db.fetch(f'SELECT key, run_at FROM "{gendurable_schema}".instances')
    }
    assert stored == {
        "at-0": at[0],
        "at-1": at[1],
        "in-0": now + delays[0],
        "in-1": now + delays[1],
    }


async def test_start_many_bad_entry_writes_nothing(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Order, Loose], queues=None)

    with pytest.raises(gd.ValidationError, match="State"):
        await Order.start_many(
            [Order.new("ok", Order.State(amount=1)), Order.new("bad", {"amount": "x"})]
        )
    with pytest.raises(gd.ValidationError, match="not served"):
        await Order.start_many([Order.new("ok", Order.State(amount=1)), Mailer.new("m", {})])

    assert await _count(db, gendurable_schema) == 0


async def test_start_many_empty_returns_no_handles(make_engine: MakeEngine) -> None:
    await make_engine(workflows=[Order], queues=None)

    assert await Order.start_many([]) == []


async def test_start_many_inserts_twenty_thousand_entries_in_one_call(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Order], queues=None)
    entries = [Order.new(f"k{i:05d}", Order.State(amount=i)) for i in range(20_000)]
    entries[7] = Order.new(None, Order.State(amount=7))

    handles = await Order.start_many(entries)

    assert len(handles) == 20_000
    assert all(h.created for h in handles)
    assert [h.key for h in handles[:9]] == [f"k{i:05d}" if i != 7 else None for i in range(9)]
    assert len({h.id for h in handles}) == 20_000
    assert await _count(db, gendurable_schema) == 20_000
    amount = await db.fetchval(
        f"SELECT (state->>'amount')::int FROM \"{gendurable_schema}\".instances WHERE id = $1",
        handles[12_345].id,
    )
    assert amount == 12_345


@pytest.mark.race
async def test_start_many_racing_engines_over_overlapping_keys_never_deadlock(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    first = await make_engine(workflows=[Order], queues=None)
    second = await make_engine(workflows=[Order], queues=None)
    rng = random.Random(20240601)
    rounds, width = 60, 120

    for n in range(rounds):
        keys = [f"r{n:02d}-{i:03d}" for i in range(width)]
        # overlapping halves, one in ascending and one in shuffled or descending order
        mine = keys[: width * 3 // 4]
        theirs = keys[width // 4 :]
        if n % 2:
            theirs = theirs[::-1]
        else:
            rng.shuffle(theirs)
            rng.shuffle(mine)
        ours, other = await asyncio.gather(
            Order.start_many([Order.new(k, Order.State(amount=1)) for k in mine], engine=first),
            Order.start_many([Order.new(k, Order.State(amount=2)) for k in theirs], engine=second),
        )
        by_key_ours = {h.key: h for h in ours}
        by_key_other = {h.key: h for h in other}
        for key in set(by_key_ours) & set(by_key_other):
            a, b = by_key_ours[key], by_key_other[key]
            assert a.id == b.id, key
            assert a.created != b.created, key  # exactly one side created it

    per_key = await db.fetch(
        f'SELECT key, count(*) AS n FROM "{gendurable_schema}".instances GROUP BY key'
    )
    assert len(per_key) == rounds * width
    assert {r["n"] for r in per_key} == {1}


@pytest.mark.race
async def test_start_racing_engines_on_one_key_create_exactly_one_instance(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    # Guarantee 5 under real concurrency: separate pools start the same key at once; the
    # loser must get the winner's id even though the winner committed after its snapshot.
    engines = [await make_engine(workflows=[Order], queues=None) for _ in range(3)]
    rounds = 200

    for n in range(rounds):
        handles = await asyncio.gather(
            *(
                Order.start(key=f"same-{n}", state=Order.State(amount=i), engine=engine)
                for i, engine in enumerate(engines)
            )
        )
        assert len({h.id for h in handles}) == 1, handles
        assert sum(h.created for h in handles) == 1, handles

    per_key = await db.fetch(
        f'SELECT key, count(*) AS n FROM "{gendurable_schema}".instances GROUP BY key'
    )
    assert len(per_key) == rounds
    assert {r["n"] for r in per_key} == {1}
