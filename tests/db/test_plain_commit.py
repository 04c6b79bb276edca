"""The lean group commit, `outcome_plain`: batches of plain gotos, continues and ends
(whether or not they consumed signals) go through it, everything else through
`outcome_batch`, and it writes exactly what `outcome_batch` writes for the outcomes it
takes, inboxes included. Its guards (ownership, SKIP LOCKED, the parent it counts down, a
paused queue, the signals it deletes) are also in the tests of both statements:
test_interleavings, test_skip_locked, test_lock_order, test_lock_rechecks, test_pause_races,
test_guards and test_terminal_effects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from commit_support import GROUP_COMMITS, commit, finish
from gendurable.engine.committer import Committer
from gendurable.engine.group_commit import BatchItem
from gendurable.entries import StepLimit
from gendurable.records import TERMINAL_STATUSES
from gendurable.testing import MakeEngine
from raw_rows import Leaf, insert

LEASE = timedelta(seconds=30)
PAUSED = "held"
"""A queue the tests pause: a continue in it is committed as a plain goto."""
SLOW_POLL = timedelta(seconds=60)
"""A poll interval no test waits out: results must arrive through NOTIFY."""

# What a row holds before its outcome: every column a plain outcome keeps or resets.
PRIOR = (
    "SET attempt = 2, max_attempts = 5, timed_out = true, await_seen = 7, "
    "error = '{\"was\": 1}', result = '\"old\"', rate_limit = 'api', rate_partition = 'p', "
    "weight = 3, children_from = 5, state = '{\"s\": 0}', state_version = 1"
)
IGNORED = ("id", "key", "parent_id", "spawn_index", "inserted_at")
"""Columns that differ between the twin rows by construction."""


@pytest.fixture
async def engine(make_engine: MakeEngine) -> gd.Engine:
    """A client-only engine: nothing runs by itself; the test commits by hand."""
    return await make_engine(workflows=[Leaf], queues=None)


def committer(engine: gd.Engine) -> Committer:
    return Committer(engine.store, engine.clock, engine.telemetry, {}, {"raw.leaf": 2})


def outcomes(ids: Sequence[int]) -> list[BatchItem]:
    """One outcome of each plain kind, for the rows `ids` (see `twins`)."""
    goto, kept, keeps_state, released, done, failed, child, stale = ids
    return [
        BatchItem(goto, "w1", "goto", step="wait", state=b'{"s": 1}', state_version=2,
                  delay=timedelta(seconds=30), max_attempts=9, queue="default"),
        BatchItem(kept, "w1", "continue", step="wait", state=b'{"s": 2}', state_version=2,
                  lease=timedelta(seconds=45), queue="default"),
        BatchItem(keeps_state, "w1", "continue", step="wait", lease=LEASE, queue="default"),
        BatchItem(released, "w1", "continue", step="wait", state=b'{"s": 3}', state_version=2,
                  lease=LEASE, queue=PAUSED),
        BatchItem(done, "w1", "finish", status="done", result=b'{"r": 1}'),
        BatchItem(failed, "w1", "finish", status="failed", state=b'{"s": 4}', state_version=2,
                  error=b'{"type": "Boom"}'),
        BatchItem(child, "w1", "finish", status="done", result=b"null"),
        BatchItem(stale, "w1", "goto", step="wait", queue="default"),
    ]  # fmt: skip


async def twins(db: asyncpg.Connection, schema: str, engine: gd.Engine) -> tuple[int, list[int]]:
    """A waiting parent and the eight executing rows `outcomes` commits (the seventh its
    child, the eighth claimed by another worker), with the same past as `PRIOR`."""
    now = engine.clock.now()
    assert now is not None
    parent = await insert(db, schema, now, status="waiting", pending=2)
    ids = []
    for n in range(8):
        ids.append(
            await insert(
                db, schema, now, status="executing", locked_by="w2" if n == 7 else "w1",
                locked_until=now + LEASE, parent=parent if n == 6 else None,
            )
        )  # fmt: skip
    await db.execute(f'UPDATE "{schema}".instances {PRIOR} WHERE id = ANY($1)', ids)
    return parent, ids


async def columns(db: asyncpg.Connection, schema: str, ids: Sequence[int]) -> list[dict[str, Any]]:
    rows = await db.fetch(
        f'SELECT * FROM "{schema}".instances WHERE id = ANY($1) ORDER BY id', list(ids)
    )
    return [{k: v for k, v in r.items() if k not in IGNORED} for r in rows]


async def test_the_plain_commit_writes_what_the_general_one_writes(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await engine.pause(PAUSED)
    commits = committer(engine)
    general_parent, general = await twins(db, gendurable_schema, engine)
    plain_parent, plain = await twins(db, gendurable_schema, engine)

    by_general = await commits._flush_general(outcomes(general))
    by_plain = await commits._flush_plain(outcomes(plain))

    assert by_general == (
        {general[0]: None, general[1]: None, general[2]: None, general[3]: "released",
         general[4]: None, general[5]: None, general[6]: None},
        set(),
    )  # fmt: skip
    renamed = {g: p for g, p in zip(general, plain, strict=True)}
    assert by_plain == ({renamed[id]: answer for id, answer in by_general[0].items()}, set())
    assert await columns(db, gendurable_schema, [general_parent, *general]) == await columns(
        db, gendurable_schema, [plain_parent, *plain]
    )
    parent = await db.fetchrow(
        f'SELECT status::text AS status, pending_children FROM "{gendurable_schema}".instances '
        "WHERE id = $1",
        plain_parent,
    )
    assert dict(parent) == {"status": "waiting", "pending_children": 1}  # counted down, once
    stale = await db.fetchrow(
        f'SELECT status::text AS status, step FROM "{gendurable_schema}".instances WHERE id = $1',
        plain[7],
    )
    assert dict(stale) == {"status": "executing", "step": "work"}


def shaped(shape: str, ids: Sequence[int]) -> list[BatchItem]:
    """A batch whose rows share every column but the id (sent once each), or, for
    `owners`, differ in their worker (sent per row; the third row is another worker's)."""
    if shape == "owners":
        owners = ["w1", "w2", "w1"]
        return [
            BatchItem(id, owner, "goto", step="wait", state=b'{"s": 1}', queue="default")
            for id, owner in zip(ids, owners, strict=True)
        ]
    return [
        {
            "gotos": BatchItem(id, "w1", "goto", step="wait", state=b'{"s": 1}', state_version=2,
                               delay=timedelta(seconds=30), max_attempts=9, queue="default"),
            "continues": BatchItem(id, "w1", "continue", step="wait", state=b'{"s": 2}',
                                   state_version=2, lease=timedelta(seconds=45),
                                   max_attempts=4, queue="default"),
            "ends": BatchItem(id, "w1", "finish", status="failed", state=b'{"s": 4}',
                              state_version=2, result=b'{"r": 1}', error=b'{"type": "Boom"}'),
        }[shape]
        for id in ids
    ]  # fmt: skip


@pytest.mark.parametrize("shape", ["gotos", "continues", "ends", "owners"])
async def test_the_plain_commit_writes_a_column_sent_once_or_per_row_as_the_general_one(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str, shape: str
) -> None:
    now = engine.clock.now()
    assert now is not None
    commits = committer(engine)
    twins: list[list[int]] = []
    for _ in range(2):
        twins.append(
            [
                await insert(db, gendurable_schema, now, status="executing", locked_by=owner,
                             locked_until=now + LEASE)
                for owner in ("w1", "w2", "w2")
            ]
        )  # fmt: skip
        await db.execute(f'UPDATE "{gendurable_schema}".instances {PRIOR} WHERE id = ANY($1)',
                         twins[-1])  # fmt: skip
    general, plain = twins
    if shape != "owners":  # every row this worker's
        await db.execute(
            f"UPDATE \"{gendurable_schema}\".instances SET locked_by = 'w1' WHERE id = ANY($1)",
            general + plain,
        )

    by_general = await commits._flush_general(shaped(shape, general))
    by_plain = await commits._flush_plain(shaped(shape, plain))

    committed = general[:2] if shape == "owners" else general
    assert by_general == (dict.fromkeys(committed), set())
    renamed = {g: p for g, p in zip(general, plain, strict=True)}
    assert by_plain == ({renamed[id]: None for id in committed}, set())
    assert await columns(db, gendurable_schema, general) == await columns(
        db, gendurable_schema, plain
    )


def _items(kind: str, id: int) -> list[BatchItem]:
    plain = BatchItem(id, "w1", "goto", step="wait", queue="default")
    return {
        "plain": [plain],
        "park": [plain, BatchItem(id + 1, "w1", "park", step="wait", await_names=("go",))],
        "retry": [plain, BatchItem(id + 1, "w1", "retry", delay=LEASE)],
        "consumed": [BatchItem(id, "w1", "goto", step="wait", consumed=(1,))],
        "limit": [BatchItem(id, "w1", "goto", step="wait", limit=StepLimit("api"))],
        "weight": [BatchItem(id, "w1", "goto", step="wait", limit=StepLimit(weight=2))],
    }[kind]


@pytest.mark.parametrize("kind", ["plain", "consumed", "park", "retry", "limit", "weight"])
async def test_a_batch_goes_through_the_plain_commit_only_when_all_its_outcomes_are_plain(
    engine: gd.Engine, kind: str
) -> None:
    sent: list[str] = []
    commits = committer(engine)

    async def general(*args: Any, **kwargs: Any) -> Any:
        sent.append("outcome_batch")
        return {}, set()

    async def plain(*args: Any, **kwargs: Any) -> Any:
        sent.append("outcome_plain")
        return {}, set()

    commits.store.outcome_batch = general  # type: ignore[method-assign]
    commits.store.outcome_plain = plain  # type: ignore[method-assign]

    await commits._flush(_items(kind, 1))

    assert sent == ["outcome_plain" if kind in ("plain", "consumed") else "outcome_batch"]


async def signal(db: asyncpg.Connection, schema: str, instance: int, name: str) -> int:
    id: int = await db.fetchval(
        f'INSERT INTO "{schema}".signals (instance_id, name, payload, received_at) '
        "VALUES ($1, $2, 'null', now()) RETURNING id",
        instance,
        name,
    )
    return id


async def inboxes(db: asyncpg.Connection, schema: str, ids: Sequence[int]) -> list[list[str]]:
    """The names of the signals left in each row's inbox, in arrival order."""
    left = []
    for id in ids:
        rows = await db.fetch(
            f'SELECT name FROM "{schema}".signals WHERE instance_id = $1 ORDER BY id', id
        )
        left.append([r["name"] for r in rows])
    return left


async def test_the_plain_commit_deletes_the_consumed_signals_the_general_one_deletes(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    """A goto, a continue and a continue made a goto (its queue paused) each delete the
    signal their step saw, not one that arrived since; a stale outcome (its claim taken by
    another worker) deletes nothing."""
    await engine.pause(PAUSED)
    commits = committer(engine)
    answers = []
    left = []
    for flush in (commits._flush_general, commits._flush_plain):
        now = engine.clock.now()
        assert now is not None
        ids = [
            await insert(db, gendurable_schema, now, status="executing",
                         locked_by="w2" if n == 3 else "w1", locked_until=now + LEASE)
            for n in range(4)
        ]  # fmt: skip
        seen = [await signal(db, gendurable_schema, id, "seen") for id in ids]
        for id in ids:
            await signal(db, gendurable_schema, id, "late")
        goto, kept, released, stale = ids
        items = [
            BatchItem(goto, "w1", "goto", step="wait", queue="default", consumed=(seen[0],)),
            BatchItem(kept, "w1", "continue", step="wait", lease=LEASE, queue="default",
                      consumed=(seen[1],)),
            BatchItem(released, "w1", "continue", step="wait", lease=LEASE, queue=PAUSED,
                      consumed=(seen[2],)),
            BatchItem(stale, "w1", "goto", step="wait", queue="default", consumed=(seen[3],)),
        ]  # fmt: skip
        done, busy = await flush(items)
        answers.append(([done.get(id, "stale") for id in ids], busy))
        left.append(await inboxes(db, gendurable_schema, ids))

    assert answers[0] == answers[1] == ([None, None, "released", "stale"], set())
    assert left[0] == left[1] == [["late"], ["late"], ["late"], ["seen", "late"]]


async def test_the_plain_commit_deletes_only_signals_of_the_instance_they_are_paired_with(
    engine: gd.Engine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    now = engine.clock.now()
    assert now is not None
    mover, other = [
        await insert(db, gendurable_schema, now, status="executing", locked_by="w1",
                     locked_until=now + LEASE)
        for _ in range(2)
    ]  # fmt: skip
    its_own = await signal(db, gendurable_schema, mover, "go")
    not_its = await signal(db, gendurable_schema, other, "go")

    done, busy = await engine.store.outcome_plain(
        ids=[mover],
        locked_bys=["w1"],
        kinds=["goto"],
        steps=["wait"],
        states=[None],
        state_versions=[1],
        delays=[None],
        leases=[None],
        statuses=[None],
        results=[None],
        errors=[None],
        max_attempts=[None],
        queues=["default"],
        now=now,
        consumed_instances=[mover, mover],
        consumed_signals=[its_own, not_its],
    )

    assert (done, busy) == ({mover: None}, set())
    assert await inboxes(db, gendurable_schema, [mover, other]) == [[], ["go"]]


@pytest.mark.parametrize("statement", GROUP_COMMITS)
async def test_every_result_waiter_wakes_when_one_commit_ends_their_instances(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str, statement: str
) -> None:
    engine = await make_engine(workflows=[Leaf], queues=None, poll_interval=SLOW_POLL)
    client = await make_engine(workflows=[Leaf], queues=None, poll_interval=SLOW_POLL)
    now = engine.clock.now()
    assert now is not None
    ids = [
        await insert(db, gendurable_schema, now, status="executing", locked_by="w1",
                     locked_until=now + LEASE)
        for _ in range(5)
    ]  # fmt: skip
    seen_live = 0
    all_live = asyncio.Event()
    original = client.store.instance_status

    async def instance_status(*, id: int) -> Any:
        nonlocal seen_live
        row = await original(id=id)
        if row is not None and row.status not in TERMINAL_STATUSES:
            seen_live += 1  # this waiter saw its instance live: from here on it must wait
            if seen_live == len(ids) + 1:
                all_live.set()
        return row

    client.store.instance_status = instance_status  # type: ignore[method-assign]
    waiters = [asyncio.create_task(Leaf.result(id, engine=client)) for id in [*ids, ids[0]]]
    async with asyncio.timeout(10):
        await all_live.wait()

    done, busy = await commit(engine, [finish(id, "w1", "done") for id in ids], statement=statement)

    assert (set(done), busy) == (set(ids), set())
    async with asyncio.timeout(10):  # no poll comes: only the announcements wake them
        assert await asyncio.gather(*waiters) == [None] * (len(ids) + 1)
