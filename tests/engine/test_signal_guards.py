"""The guards of signal delivery and await deadlines, each pinned by the case it exists for.

Statements are played by hand on a client-only engine, in transactions the test opens, so
that each interleaving happens exactly as written (DESIGN §8, lost wake-up); parks are group
commits written as the committer sends them (`commit_support`). A delivery that claims what
it wakes for a scheduler of this process (a local wake) is pinned the same way.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from commit_support import commit, park
from gendurable.testing import MakeEngine

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)


@gd.workflow(name="sigguards.flow")
class Flow:
    @gd.step(start=True)
    async def first(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.wait)

    @gd.step
    @gd.await_signals("go", timeout=HOUR)
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.later)

    @gd.step
    @gd.await_signals("later")
    async def later(self, state: Any, ctx: gd.Context) -> gd.Outcome:
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

    async def claim(self, locked_by: str, step: str, lease: timedelta = DAY) -> list[int]:
        rows = await self.store.instance_claim(
            queue="default",
            limit=10,
            locked_by=locked_by,
            leases=[lease],
            now=self.now,
            workflows=["sigguards.flow"],
            steps=[step],
        )
        return [r.id for r in rows if r.go]

    def park(self, id: int, locked_by: str, **more: Any) -> dict[str, Any]:
        """The group-commit form of a goto into `wait` (what the committer sends)."""
        return park(id, locked_by, "wait", ["go"], timeout=HOUR, **more)

    async def parked(self) -> int:
        """A fresh instance parked in `wait` (by the worker "w1")."""
        id = (await Flow.start()).id
        assert await self.claim("w1", "first") == [id]
        assert await commit(self.engine, [self.park(id, "w1")]) == ({id: None}, set())
        return id

    async def deliver(self, conn: Any, id: int, name: str, *, locked_by: str | None = None) -> Any:
        """Deliver `name` on `conn`; with `locked_by`, as a scheduler of the default queue
        with a free slot (a local wake claims what it wakes)."""
        statement = self.store.db.sql["signal_deliver"]
        return await conn.fetchrow(
            statement.sql,
            *statement.args(
                workflow="sigguards.flow",
                id=id,
                key=None,
                name=name,
                payload=b"null",
                now=self.now,
                trace_context=None,
                locked_by=locked_by,
                lease=None if locked_by is None else DAY,
                queue=None if locked_by is None else "default",
                idempotency_key=None,
            ),
        )

    async def row(self, id: int) -> asyncpg.Record:
        found = await self.db.fetchrow(
            "SELECT status::text AS status, step, locked_by, locked_until, timed_out "
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


@pytest.fixture
async def rig(make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str) -> Rig:
    return Rig(await make_engine(workflows=[Flow], queues=None), db, gendurable_schema)


async def test_a_signal_committing_after_the_parks_recheck_still_wakes_it(rig: Rig) -> None:
    # The group commit parks the row and rechecks its inbox (`instances_parked`) under the
    # row lock, in a transaction that commits later; a delivery racing it sends its signal
    # after the recheck looked. It must still wake the instance: it waits for the park's
    # lock and then sees the row awaiting.
    id = (await Flow.start()).id
    assert await rig.claim("w1", "first") == [id]
    async with rig.store.db.pool.acquire() as parking, rig.store.db.pool.acquire() as send:
        park_tx, send_tx = parking.transaction(), send.transaction()
        await park_tx.start()
        parked = await commit(rig.engine, [rig.park(id, "w1")], conn=parking)
        assert parked == ({id: None}, set())  # parked, and the recheck found nothing
        await send_tx.start()
        delivery = asyncio.create_task(rig.deliver(send, id, "go"))
        async with asyncio.timeout(10):  # the delivery waits for the park's lock, or is done
            while not delivery.done() and not await rig.db.fetchval(  # noqa: ASYNC110 (no event for a lock wait)
                "SELECT count(*) FROM pg_locks WHERE NOT granted"
            ):
                await asyncio.sleep(0.01)
        await park_tx.commit()
        async with asyncio.timeout(10):
            delivered = await delivery
        await send_tx.commit()

    assert delivered["woke"] is True
    assert (await rig.row(id))["status"] == "available"


async def test_a_signal_never_wakes_an_executing_instance(rig: Rig) -> None:
    id = await rig.parked()
    async with rig.store.db.pool.acquire() as conn:
        assert (await rig.deliver(conn, id, "go"))["woke"] is True
        assert await rig.claim("w2", "wait") == [id]  # running `wait`: its awaits still set

        # A scheduler of its queue with a free slot would claim what it wakes: not this.
        again = await rig.deliver(conn, id, "go", locked_by="s#1")

    assert (again["woke"], bool(again["claimed"])) == (False, False)
    after = await rig.row(id)
    assert (after["status"], after["locked_by"]) == ("executing", "w2")
    assert await rig.inbox(id) == ["go", "go"]


async def test_a_signal_of_a_name_the_step_does_not_await_is_kept_without_waking(
    rig: Rig,
) -> None:
    id = await rig.parked()
    async with rig.store.db.pool.acquire() as conn:
        later = await rig.deliver(conn, id, "later")

    assert later["woke"] is False
    assert (await rig.row(id))["status"] == "awaiting"
    assert await rig.inbox(id) == ["later"]


async def test_an_await_deadline_never_wakes_an_instance_running_again(rig: Rig) -> None:
    id = await rig.parked()
    async with rig.store.db.pool.acquire() as conn:
        assert (await rig.deliver(conn, id, "go"))["woke"] is True
    assert await rig.claim("w2", "wait") == [id]
    rig.engine.clock.advance(2 * HOUR)  # type: ignore[attr-defined]
    assert rig.engine.reaper is not None

    report = await rig.engine.reaper.run_once()

    assert report.timed_out == 0
    after = await rig.row(id)
    assert (after["status"], after["locked_by"], after["timed_out"]) == ("executing", "w2", False)


async def test_a_reawait_past_its_deadline_wakes_at_once_as_timed_out(rig: Rig) -> None:
    # The deadline passed while the step ran: parking again with it wakes in the same
    # transaction, without waiting for the reaper.
    id = await rig.parked()
    async with rig.store.db.pool.acquire() as conn:
        seen = (await rig.deliver(conn, id, "go"))["signal_id"]
    assert await rig.claim("w2", "wait") == [id]
    rig.engine.clock.advance(2 * HOUR)  # type: ignore[attr-defined]
    heard: list[str] = []
    await rig.db.add_listener(rig.store.db.channel, lambda *args: heard.append(args[3]))

    parked = await commit(rig.engine, [rig.park(id, "w2", seen=seen, keep_deadline=True)])
    await rig.db.execute("SELECT 1")  # delivers what was announced before it

    assert parked == ({id: True}, set())  # committed, and woken by the deadline
    assert heard == ["q:default"]  # announced to its queue, like any wake
    after = await rig.row(id)
    assert (after["status"], after["timed_out"]) == ("available", True)


async def test_a_reawait_past_its_deadline_with_only_another_steps_signal_is_timed_out(
    rig: Rig,
) -> None:
    # A signal newer than the seen mark, but of a name `wait` does not await (it is for
    # `later`), sits in the inbox when the reawait's deadline has passed. The deadline is
    # what wakes it: timed out, with nothing awaited, not a wake by that signal.
    id = await rig.parked()
    async with rig.store.db.pool.acquire() as conn:
        seen = (await rig.deliver(conn, id, "go"))["signal_id"]
        assert await rig.claim("w2", "wait") == [id]
        kept = await rig.deliver(conn, id, "later")  # executing: kept, wakes nothing
    assert kept["woke"] is False
    rig.engine.clock.advance(2 * HOUR)  # type: ignore[attr-defined]

    parked = await commit(rig.engine, [rig.park(id, "w2", seen=seen, keep_deadline=True)])

    assert parked == ({id: True}, set())  # woken by the deadline, not by `later`
    after = await rig.row(id)
    assert (after["status"], after["timed_out"]) == ("available", True)
    assert await rig.inbox(id) == ["go", "later"]


async def test_a_local_wake_claims_the_instance_for_its_scheduler_with_its_own_inbox(
    rig: Rig,
) -> None:
    # A signal sent by an engine whose scheduler of the instance's queue has a free slot
    # claims what it wakes for that scheduler (for its lease) and brings the instance's
    # inbox along, the waking signal included; nobody is told to claim it. A delivery from
    # elsewhere wakes the instance for the queue and announces it.
    local, plain, other = await rig.parked(), await rig.parked(), await rig.parked()
    heard: list[str] = []
    await rig.db.add_listener(rig.store.db.channel, lambda *args: heard.append(args[3]))
    async with rig.store.db.pool.acquire() as conn:
        await rig.deliver(conn, other, "later")  # another instance's inbox
        kept = await rig.deliver(conn, local, "later")  # not awaited: kept, no wake
        woke = await rig.deliver(conn, local, "go", locked_by="s#1")
        woke_plain = await rig.deliver(conn, plain, "go")
    await rig.db.execute("SELECT 1")  # delivers what was announced before it

    assert (woke["woke"], woke["claimed"]) == (True, True)
    assert woke["inbox_ids"] == [kept["signal_id"], woke["signal_id"]]
    assert woke["inbox_names"] == ["later", "go"]
    after = await rig.row(local)
    assert (after["status"], after["locked_by"]) == ("executing", "s#1")
    assert after["locked_until"] == rig.now + DAY
    assert (woke_plain["woke"], woke_plain["claimed"]) == (True, False)
    after = await rig.row(plain)
    assert (after["status"], after["locked_by"]) == ("available", None)
    assert heard == ["q:default"]  # the plain wake only
    assert await rig.claim("w2", "wait") == [plain]


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("queue", "'other'"),  # the scheduler serves another queue
        ("concurrency_key", "'one-at-a-time'"),  # the claim checks the key
        ("rate_limit", "'api'"),  # the claim takes the tokens
        ("children_from", "id"),  # the claim loads the spawn's children
    ],
)
async def test_a_local_wake_leaves_to_the_claim_what_the_claim_must_check(
    rig: Rig, column: str, value: str
) -> None:
    id = await rig.parked()
    await rig.db.execute(
        f'UPDATE "{rig.schema}".instances SET {column} = {value} WHERE id = $1', id
    )
    async with rig.store.db.pool.acquire() as conn:
        woke = await rig.deliver(conn, id, "go", locked_by="s#1")

    assert (woke["woke"], woke["claimed"]) == (True, False)
    after = await rig.row(id)
    assert (after["status"], after["locked_by"]) == ("available", None)


async def test_a_delivery_brings_the_woken_instance_only_when_it_claimed_it(rig: Rig) -> None:
    # The store builds `Delivery.woken` from the statement's last columns only for a local
    # wake: a wake left to the claim (here: another queue's scheduler asked) brings none,
    # so that nothing adopts an instance this process does not hold.
    local, elsewhere = await rig.parked(), await rig.parked()

    claimed = await rig.store.signal_deliver(
        workflow="sigguards.flow", id=local, key=None, name="go", payload=b"null",
        now=rig.now, locked_by="s#1", lease=DAY, queue="default",
    )  # fmt: skip
    woke = await rig.store.signal_deliver(
        workflow="sigguards.flow", id=elsewhere, key=None, name="go", payload=b"null",
        now=rig.now, locked_by="s#2", lease=DAY, queue="other",
    )  # fmt: skip

    assert claimed is not None
    assert claimed.claimed
    assert claimed.woken is not None
    assert (claimed.woken.id, claimed.woken.step) == (local, "wait")
    assert woke is not None
    assert (woke.woke, woke.claimed, woke.woken) == (True, False, None)


async def test_a_delivery_naming_a_queue_but_no_scheduler_claims_nothing(rig: Rig) -> None:
    # Only a delivery made for a scheduler (its claim's name, `locked_by`) claims what it
    # wakes: a queue given alone claims nothing.
    id = await rig.parked()
    statement = rig.store.db.sql["signal_deliver"]
    async with rig.store.db.pool.acquire() as conn:
        woke = await conn.fetchrow(
            statement.sql,
            *statement.args(
                workflow="sigguards.flow", id=id, key=None, name="go", payload=b"null",
                now=rig.now, trace_context=None, locked_by=None, lease=None, queue="default",
                idempotency_key=None,
            ),
        )  # fmt: skip

    assert (woke["woke"], woke["claimed"]) == (True, False)
    after = await rig.row(id)
    assert (after["status"], after["locked_by"]) == ("available", None)
