"""The lean group commit, `outcome_plain`: batches of plain gotos, continues and ends go
through it, everything else through `outcome_batch`, and it writes exactly what
`outcome_batch` writes for the outcomes it takes. Its guards (ownership, SKIP LOCKED, the
parent it counts down, a paused queue) are also in the tests of both statements:
test_skip_locked, test_lock_order, test_lock_rechecks, test_pause_races, test_guards and
test_terminal_effects.
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


@pytest.mark.parametrize("kind", ["plain", "park", "retry", "consumed", "limit", "weight"])
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

    assert sent == ["outcome_plain" if kind == "plain" else "outcome_batch"]


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
