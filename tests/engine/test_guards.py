"""The guards of the engine's statements, each pinned by the case it exists for.

Ownership (guarantee 2): a park, a spawn, a release and a heartbeat act only for the worker
that holds the claim; a worker whose claim was lost and taken over changes nothing. Claims
are played by hand (`instance_claim` with chosen worker ids, leases expired by the manual
clock and the reaper; group commits written as the committer sends them, `commit_support`),
on a client-only engine so that nothing else runs. A start claimed where it is made (a local
start) and a step chained on its claim are pinned the same way.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from commit_support import GROUP_COMMITS, commit, move, park
from gendurable.entries import NO_LIMIT, columns, new_row, new_rows
from gendurable.testing import MakeEngine
from recordings import recorded

LEASE = timedelta(seconds=30)
attempts: list[tuple[str, int]] = recorded([])
children_seen: list[tuple[str, int]] = recorded([])


@gd.workflow(name="guards.flow", lease=LEASE)
class Flow:
    @gd.step(start=True)
    async def first(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        attempts.append(("first", ctx.attempt))
        if ctx.attempt == 0:
            raise RuntimeError("once")
        return gd.goto(self.after, delay=timedelta(0))  # a new claim: its attempt is stored

    @gd.step
    async def after(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        attempts.append(("after", ctx.attempt))
        return gd.goto(self.wait)

    @gd.step
    @gd.await_signals("go", "extra", timeout=timedelta(hours=1))
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="guards.kid")
class Kid:
    @gd.step(start=True)
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="guards.waves")
class Waves:
    """Two spawns in a row: the second step sees only the second spawn's children."""

    @gd.step(start=True)
    async def first(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.spawn([Kid.new(key="w1-a"), Kid.new(key="w1-b")], then=self.second)

    @gd.step
    async def second(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.spawn([Kid.new(key="w2-a")], then=self.last)

    @gd.step
    async def last(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done([c.key for c in ctx.children])


@gd.workflow(name="guards.brood")
class Brood:
    """A spawn whose `then` step awaits, then a goto into another await."""

    @gd.step(start=True)
    async def hatch(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.spawn([Kid.new(key="brood-kid")], then=self.gather)

    @gd.step
    @gd.await_signals("go")
    async def gather(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        children_seen.append(("gather", len(ctx.children)))
        return gd.goto(self.wait)

    @gd.step
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        children_seen.append(("wait", len(ctx.children)))
        return gd.done()


class Rig:
    def __init__(self, engine: gd.Engine, db: asyncpg.Connection, schema: str) -> None:
        self.engine = engine
        self.store = engine.store
        self.db = db
        self.schema = schema

    @property
    def now(self) -> Any:
        return self.engine.clock.now()

    async def claim(self, locked_by: str, step: str = "first", queue: str = "default") -> list[int]:
        rows = await self.store.instance_claim(
            queue=queue,
            limit=10,
            locked_by=locked_by,
            leases=[LEASE],
            now=self.now,
            workflows=["guards.flow"],
            steps=[step],
        )
        return [r.id for r in rows if r.go]

    async def lose(self, id: int, step: str = "first", by: tuple[str, str] = ("w1", "w2")) -> None:
        """The first worker's claim of `id` expires and the second takes the instance over."""
        first, second = by
        assert await self.claim(first, step) == [id]
        self.engine.clock.advance(LEASE + timedelta(seconds=1))  # type: ignore[attr-defined]
        assert self.engine.reaper is not None
        assert (await self.engine.reaper.run_once()).rescued == 1
        assert await self.claim(second, step) == [id]

    async def row(self, id: int) -> asyncpg.Record:
        found = await self.db.fetchrow(
            "SELECT status::text AS status, step, locked_by, locked_until, attempt "
            f'FROM "{self.schema}".instances WHERE id = $1',
            id,
        )
        assert found is not None
        return found

    async def inbox(self, id: int) -> list[str]:
        rows = await self.db.fetch(
            f'SELECT name FROM "{self.schema}".signals WHERE instance_id = $1 ORDER BY id', id
        )
        return [r["name"] for r in rows]

    async def signal(self, id: int, name: str) -> int:
        found = await self.store.signal_deliver(
            workflow="guards.flow", id=id, key=None, name=name, payload=b"null", now=self.now
        )
        assert found is not None
        return found.signal_id

    async def park(self, id: int, locked_by: str, consumed: list[int]) -> bool:
        """A goto into `wait` that consumes `consumed`, group-committed; did it commit?"""
        done, busy = await commit(
            self.engine,
            [park(id, locked_by, "wait", ["go", "extra"], timeout=timedelta(hours=1),
                  consumed=consumed)],
        )  # fmt: skip
        assert busy == set()
        return id in done

    async def spawn(self, id: int, locked_by: str, consumed: list[int]) -> bool:
        rows = new_rows({"guards.kid": Kid.spec}, [Kid.new(key="kid")], what="spawn")
        return await self.store.outcome_spawn(
            id=id,
            locked_by=locked_by,
            children=columns(rows),
            keys=[("guards.kid", "kid")],
            then="wait",
            state=None,
            state_version=1,
            max_attempts=None,
            consumed=consumed,
            limit=NO_LIMIT,
            now=self.now,
        )

    async def count(self) -> int:
        return int(await self.db.fetchval(f'SELECT count(*) FROM "{self.schema}".instances'))


@pytest.fixture
async def rig(make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str) -> Rig:
    engine = await make_engine(workflows=[Flow, Kid], queues=None)
    return Rig(engine, db, gendurable_schema)


async def test_a_stale_park_changes_nothing_and_consumes_nothing(rig: Rig) -> None:
    id = (await Flow.start()).id
    seen = await rig.signal(id, "go")
    await rig.lose(id)

    assert await rig.park(id, "w1", [seen]) is False

    after = await rig.row(id)
    assert (after["status"], after["step"], after["locked_by"]) == ("executing", "first", "w2")
    assert await rig.inbox(id) == ["go"]
    assert await rig.park(id, "w2", [seen]) is True  # the owner's park commits
    assert await rig.inbox(id) == []


async def test_a_stale_spawn_inserts_no_child_and_changes_nothing(rig: Rig) -> None:
    id = (await Flow.start()).id
    seen = await rig.signal(id, "go")
    await rig.lose(id)

    assert await rig.spawn(id, "w1", [seen]) is False

    assert await rig.count() == 1
    after = await rig.row(id)
    assert (after["status"], after["locked_by"]) == ("executing", "w2")
    assert await rig.inbox(id) == ["go"]


async def test_a_spawn_consumes_exactly_the_signals_its_step_saw(rig: Rig) -> None:
    id = (await Flow.start()).id
    seen = await rig.signal(id, "go")
    assert await rig.claim("w1") == [id]
    await rig.signal(id, "extra")  # arrived while the step ran: it survives

    assert await rig.spawn(id, "w1", [seen]) is True

    assert await rig.inbox(id) == ["extra"]
    assert (await rig.row(id))["status"] == "waiting"


async def test_a_stale_release_leaves_the_new_owner_claim(rig: Rig) -> None:
    id = (await Flow.start()).id
    await rig.lose(id)

    assert await rig.store.instance_release(id=id, locked_by="w1", now=rig.now) is False

    after = await rig.row(id)
    assert (after["status"], after["locked_by"]) == ("executing", "w2")


async def test_a_heartbeat_extends_only_its_own_claims(rig: Rig) -> None:
    # Claims are named `<scheduler>#<n>`, and the heartbeat of scheduler "w1" names each claim
    # it runs by (id, name). Its claim w1#2 took `mine` and `dropped`, whose run ended without
    # its commit (the database was gone): only `mine` still runs. It lost `lost` (expired,
    # rescued) to "w10", a name that starts like its own, while its step still runs; it holds
    # `orphan` through a claim whose answer never reached it (it runs nothing there); and it
    # took `retaken` again, after its run as w1#3 expired, through a claim w1#5 whose answer
    # was lost too, while the w1#3 run goes on. Only `mine` is extended: the others must
    # expire, for the reaper to hand them out.
    lost = (await Flow.start()).id
    await rig.lose(lost, by=("w1#1", "w10#1"))
    retaken = (await Flow.start()).id
    assert await rig.claim("w1#3") == [retaken]
    await rig.db.execute(  # its lease expired and the reaper took it back (played by hand)
        f"UPDATE \"{rig.schema}\".instances SET status = 'available', locked_by = NULL, "
        "locked_until = NULL WHERE id = $1",
        retaken,
    )
    assert await rig.claim("w1#5") == [retaken]
    mine = (await Flow.start()).id
    dropped = (await Flow.start()).id
    assert await rig.claim("w1#2") == [mine, dropped]
    orphan = (await Flow.start()).id
    assert await rig.claim("w1#4") == [orphan]
    others = (lost, retaken, dropped, orphan)
    before = {id: (await rig.row(id))["locked_until"] for id in others}
    rig.engine.clock.advance(timedelta(seconds=10))  # type: ignore[attr-defined]

    extended = await rig.store.lease_extend(
        claims=[(mine, "w1#2"), (lost, "w1#1"), (retaken, "w1#3")],
        workflows=["guards.flow"],
        leases=[LEASE],
        now=rig.now,
    )

    assert extended == 1
    assert (await rig.row(mine))["locked_until"] == rig.now + LEASE
    assert {id: (await rig.row(id))["locked_until"] for id in others} == before


async def test_a_local_start_is_inserted_claimed_for_its_lease_and_only_when_it_creates(
    rig: Rig,
) -> None:
    # A start made where its queue runs (a scheduler with a free slot) inserts the row
    # claimed by that scheduler, for its lease, and tells nobody to claim it. A start that
    # finds its key held by a live instance claims nothing: that row stays as it was.
    queued = await rig.store.instance_insert(row=new_row(Flow.spec, Flow.new(key="q")), now=rig.now)
    heard: list[str] = []
    await rig.db.add_listener(rig.store.db.channel, lambda *args: heard.append(args[3]))

    local = await rig.store.instance_insert(
        row=new_row(Flow.spec, Flow.new(key="here")), now=rig.now, locked_by="s#1", lease=LEASE
    )
    again = await rig.store.instance_insert(
        row=new_row(Flow.spec, Flow.new(key="q")), now=rig.now, locked_by="s#2", lease=LEASE
    )
    await rig.db.execute("SELECT 1")  # delivers what was announced before it

    assert (local.created, local.locked_by) == (True, "s#1")
    after = await rig.row(local.id)
    assert (after["status"], after["locked_by"]) == ("executing", "s#1")
    assert after["locked_until"] == rig.now + LEASE
    assert (again.id, again.created) == (queued.id, False)
    after = await rig.row(queued.id)
    assert (after["status"], after["locked_by"]) == ("available", None)
    assert heard == []
    assert await rig.claim("w1") == [queued.id]  # the local row is nobody else's
    await rig.store.instance_insert(row=new_row(Flow.spec, Flow.new(key="later")), now=rig.now)
    await rig.db.execute("SELECT 1")
    assert heard == ["q:default"]  # a start that goes through the queue is announced


async def test_an_unkeyed_local_start_is_inserted_claimed_for_its_lease_and_told_to_nobody(
    rig: Rig,
) -> None:
    # The same guards in the plain insert an unkeyed start takes: claimed (executing) for
    # its lease only when a scheduler asked, announced only when it goes in unclaimed and due.
    heard: list[str] = []
    await rig.db.add_listener(rig.store.db.channel, lambda *args: heard.append(args[3]))

    local = await rig.store.instance_insert(
        row=new_row(Flow.spec, Flow.new()), now=rig.now, locked_by="s#1", lease=LEASE
    )
    await rig.db.execute("SELECT 1")  # delivers what was announced before it

    assert (local.created, local.key, local.locked_by) == (True, None, "s#1")
    after = await rig.row(local.id)
    assert (after["status"], after["locked_by"]) == ("executing", "s#1")
    assert after["locked_until"] == rig.now + LEASE
    assert heard == []
    later = Flow.new(delay=timedelta(minutes=1))  # due later: nothing to claim now
    await rig.store.instance_insert(row=new_row(Flow.spec, later), now=rig.now)
    await rig.db.execute("SELECT 1")
    assert heard == []
    queued = await rig.store.instance_insert(row=new_row(Flow.spec, Flow.new()), now=rig.now)
    await rig.db.execute("SELECT 1")
    assert (queued.created, queued.locked_by) == (True, None)
    after = await rig.row(queued.id)
    assert (after["status"], after["locked_by"], after["locked_until"]) == (
        "available",
        None,
        None,
    )
    assert heard == ["q:default"]
    assert await rig.claim("w1") == [queued.id]  # the local row is nobody else's


async def test_a_claim_lasts_its_lease_and_the_reaper_leaves_it_until_then(rig: Rig) -> None:
    id = (await Flow.start()).id
    assert await rig.claim("w1") == [id]
    assert (await rig.row(id))["locked_until"] == rig.now + LEASE
    assert rig.engine.reaper is not None

    rig.engine.clock.advance(LEASE)  # expired only once past locked_until
    assert (await rig.engine.reaper.run_once()).rescued == 0
    assert (await rig.row(id))["locked_by"] == "w1"


@pytest.mark.parametrize("statement", GROUP_COMMITS)
async def test_a_step_chained_on_its_claim_keeps_it_for_a_fresh_lease(
    rig: Rig, statement: str
) -> None:
    id = (await Flow.start()).id
    assert await rig.claim("w1") == [id]
    rig.engine.clock.advance(LEASE - timedelta(seconds=1))  # type: ignore[attr-defined]

    chained = [move(id, "w1", "after", lease=LEASE)]
    assert await commit(rig.engine, chained, statement=statement) == ({id: None}, set())

    after = await rig.row(id)
    assert (after["status"], after["step"], after["locked_by"]) == ("executing", "after", "w1")
    assert after["locked_until"] == rig.now + LEASE
    rig.engine.clock.advance(timedelta(seconds=2))  # type: ignore[attr-defined]
    assert rig.engine.reaper is not None
    assert (await rig.engine.reaper.run_once()).rescued == 0


async def test_a_claim_takes_rows_of_its_queue_and_of_known_steps_only(rig: Rig) -> None:
    elsewhere = (await Flow.start(queue="other")).id
    here = (await Flow.start()).id
    await rig.db.execute(  # a row at a step this deploy does not have (an older deploy's)
        f"UPDATE \"{rig.schema}\".instances SET step = 'gone' WHERE id = $1", here
    )
    unknown_step = here
    here = (await Flow.start()).id

    assert await rig.claim("w1") == [here]
    assert (await rig.row(elsewhere))["status"] == "available"
    assert (await rig.row(unknown_step))["status"] == "available"


async def test_a_goto_starts_the_next_step_at_attempt_zero(
    make_engine: MakeEngine, manual_clock: gd.ManualClock
) -> None:
    engine = await make_engine(workflows=[Flow, Kid])
    await Flow.start(key="a")
    await engine.drain()
    manual_clock.advance(timedelta(minutes=10))  # past the retry's backoff
    await engine.drain()

    assert attempts == [("first", 0), ("first", 1), ("after", 0)]
    assert (await Flow.get("a")).attempt == 0


async def test_cancel_cascade_leaves_ended_children_as_they_ended(rig: Rig) -> None:
    parent = (await Flow.start()).id
    await rig.db.execute(  # the parent waits for two children; one has already ended
        f"UPDATE \"{rig.schema}\".instances SET status = 'waiting', pending_children = 1 "
        "WHERE id = $1",
        parent,
    )
    kids = [Kid.new(key="ended"), Kid.new(key="live")]
    rows = new_rows({"guards.kid": Kid.spec}, kids, what="spawn")
    await rig.store.instance_insert_many(columns=columns(rows), parent_id=parent, now=rig.now)
    await rig.db.execute(
        f"UPDATE \"{rig.schema}\".instances SET status = 'done', finished_at = $1 "
        "WHERE key = 'ended'",
        rig.now,
    )

    await Flow.cancel(parent)

    assert (await Kid.get("ended")).status == "done"
    assert (await Kid.get("live")).status == "cancelled"


async def test_children_are_those_of_the_latest_spawn(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Waves, Kid])
    await Waves.start(key="p")
    await engine.drain()

    assert await Waves.result("p") == ["w2-a"]


async def test_children_stay_with_the_spawns_awaiting_step_and_leave_with_a_goto(
    make_engine: MakeEngine,
) -> None:
    # The spawn's `then` step awaits: it parks first, and its children are still there when
    # a signal wakes it. A goto into another await leaves them behind.
    engine = await make_engine(workflows=[Brood, Kid])
    await Brood.start(key="b")
    await engine.drain()
    await Brood.signal("b", "go")
    await engine.drain()
    await Brood.signal("b", "go")
    await engine.drain()

    assert children_seen == [("gather", 1), ("wait", 0)]
    assert (await Brood.get("b")).status == "done"
