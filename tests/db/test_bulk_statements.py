"""The page statements of bulk operations (`sql/bulk.sql`) against real rows: what a filter
selects, and that a page judges and changes every row exactly as the single-row statement,
run on each row in id order, does (`instance_retry`, `instance_cancel`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from gendurable.bulk import retry_verdict
from gendurable.db.repair_store import Match, RepairStore
from gendurable.testing import MakeEngine
from raw_rows import Leaf, insert


@pytest.fixture
async def engine(make_engine: MakeEngine) -> gd.Engine:
    """A client-only engine: nothing runs by itself; the test calls each statement."""
    return await make_engine(workflows=[Leaf], queues=None)


@pytest.fixture
def repairs(engine: gd.Engine) -> RepairStore:
    return RepairStore(engine.store.db)


class Table:
    """Rows of `raw.leaf` written and read with plain SQL."""

    def __init__(self, db: asyncpg.Connection, schema: str, engine: gd.Engine) -> None:
        self.db = db
        self.schema = schema
        self.engine = engine

    async def add(self, **columns: Any) -> int:
        now = self.engine.clock.now()
        assert now is not None
        extra = {k: columns.pop(k) for k in list(columns) if k in _EXTRA}
        id = await insert(self.db, self.schema, now, **columns)
        for name, value in extra.items():
            await self.set(id, name, value)
        return id

    async def set(self, id: int, column: str, value: Any) -> None:
        cast = _EXTRA[column]
        await self.db.execute(
            f'UPDATE "{self.schema}".instances SET {column} = $2{cast} WHERE id = $1', id, value
        )

    async def get(self, id: int) -> tuple[Any, ...]:
        found = await self.db.fetchrow(
            "SELECT status::text, attempt, pending_children, error IS NULL AS cleared, "
            f'finished_at IS NULL AS unfinished FROM "{self.schema}".instances WHERE id = $1',
            id,
        )
        return tuple(found) if found is not None else ()


_EXTRA = {
    "children_from": "::bigint",
    "error": "::text::jsonb",
    "finished_at": "::timestamptz",
    "scope": "::text[]::" + "status[]",
    "queue": "::text",
    "workflow": "::text",
}


@pytest.fixture
def table(db: asyncpg.Connection, gendurable_schema: str, engine: gd.Engine) -> Table:
    _EXTRA["scope"] = f'::text[]::"{gendurable_schema}".status[]'
    return Table(db, gendurable_schema, engine)


Family = dict[str, int]


async def retry_family(t: Table, tag: str) -> Family:
    """Every case `instance_retry` tells apart, keyed by role (keys carry `tag`)."""
    ids: Family = {}
    ids["root"] = await t.add(status="failed")
    ids["held"] = await t.add(status="failed", key=f"{tag}-held")
    ids["holder"] = await t.add(status="available", key=f"{tag}-held")
    ids["mother"] = await t.add(status="waiting", pending=1)
    ids["kid"] = await t.add(status="failed", parent=ids["mother"])
    ids["father"] = await t.add(status="waiting", pending=1)
    ids["twin1"] = await t.add(status="failed", parent=ids["father"])
    ids["twin2"] = await t.add(status="failed", parent=ids["father"])
    ids["moved_on"] = await t.add(status="available")
    ids["orphan"] = await t.add(status="failed", parent=ids["moved_on"])
    ids["old_spawn"] = await t.add(status="waiting", pending=1)
    ids["stale_kid"] = await t.add(status="failed", parent=ids["old_spawn"])
    await t.set(ids["old_spawn"], "children_from", ids["stale_kid"] + 1)
    ids["live"] = await t.add(status="awaiting")
    ids["done"] = await t.add(status="done")
    ids["same1"] = await t.add(status="failed", key=f"{tag}-same")
    ids["same2"] = await t.add(status="failed", key=f"{tag}-same")
    ids["kept"] = await t.add(status="failed", key=f"{tag}-kept")
    await t.set(ids["kept"], "scope", ["available", "executing", "awaiting", "waiting", "failed"])
    ids["behind_kept"] = await t.add(status="failed", key=f"{tag}-kept")
    return ids


RETRY_TARGETS = ("root", "held", "kid", "twin1", "twin2", "orphan", "stale_kid", "live",
                 "done", "same1", "same2", "kept", "behind_kept")  # fmt: skip


async def test_retry_many_agrees_with_instance_retry_row_by_row(
    engine: gd.Engine, repairs: RepairStore, table: Table
) -> None:
    paged = await retry_family(table, "paged")
    single = await retry_family(table, "single")
    missing = max(single.values()) + 1000

    verdicts = await repairs.instances_retry_many(
        ids=[paged[r] for r in RETRY_TARGETS] + [missing], now=None
    )
    answers = {}
    for role in sorted(RETRY_TARGETS, key=lambda r: single[r]):
        row = await repairs.instance_retry(id=single[role], now=None)
        answers[role] = (retry_verdict(row.retried, row.status, row.holder), row.holder)

    by_id = {v.id: v for v in verdicts}
    assert by_id[missing].verdict == "gone"
    names = {**{v: k for k, v in paged.items()}, **{v: k for k, v in single.items()}}
    for role in RETRY_TARGETS:
        got = by_id[paged[role]]
        verdict, holder = answers[role]
        assert (got.verdict, names.get(got.holder)) == (verdict, names.get(holder)), role
    assert answers["root"][0] == "retried"
    assert {r for r, (v, _) in answers.items() if v == "retried"} == {
        "root", "kid", "twin1", "twin2", "same1", "kept",
    }  # fmt: skip
    assert answers["held"] == ("key_held", single["holder"])
    assert answers["same2"] == ("key_held", single["same1"])
    assert answers["behind_kept"] == ("key_held", single["kept"])
    for role in paged:
        assert await table.get(paged[role]) == await table.get(single[role]), role
    assert (await table.get(paged["father"]))[2] == 3  # both twins counted back in
    assert (await table.get(paged["kid"]))[:2] == ("available", 0)


async def cancel_family(t: Table) -> Family:
    ids: Family = {}
    ids["root"] = await t.add(status="available")
    ids["executing"] = await t.add(status="executing", locked_by="w1")
    ids["mother"] = await t.add(status="waiting", pending=2)
    ids["kid"] = await t.add(status="awaiting", parent=ids["mother"])
    ids["sibling"] = await t.add(status="available", parent=ids["mother"])
    ids["top"] = await t.add(status="waiting", pending=1)
    ids["middle"] = await t.add(status="waiting", pending=1, parent=ids["top"])
    ids["bottom"] = await t.add(status="awaiting", parent=ids["middle"])
    ids["done"] = await t.add(status="done")
    ids["failed"] = await t.add(status="failed")
    return ids


CANCEL_TARGETS = ("root", "executing", "kid", "top", "middle", "done", "failed")


async def test_cancel_many_agrees_with_instance_cancel_row_by_row(
    engine: gd.Engine, repairs: RepairStore, table: Table
) -> None:
    paged = await cancel_family(table)
    single = await cancel_family(table)

    page = await repairs.instances_cancel_many(ids=[paged[r] for r in CANCEL_TARGETS], now=None)
    cascaded = 0
    ended = set()
    for role in sorted(CANCEL_TARGETS, key=lambda r: single[r]):
        answer = await engine.store.instance_cancel(id=single[role], now=None)
        if answer is not None:
            ended.add(role)
            cascaded += answer

    for role in paged:
        assert await table.get(paged[role]) == await table.get(single[role]), role
    verdicts = {v.id: v.verdict for v in page.verdicts}
    assert {r for r in CANCEL_TARGETS if verdicts[paged[r]] == "cancelled"} == {
        "root", "executing", "kid", "top", "middle",
    }  # fmt: skip
    # One by one, cancelling `top` took `middle` with it; the page ends both itself.
    assert ended == {"root", "executing", "kid", "top"}
    assert (verdicts[paged["done"]], verdicts[paged["failed"]]) == ("not_live", "not_live")
    assert (page.cascaded, cascaded) == (1, 2)  # `bottom`; and `middle`, `bottom`
    assert await table.get(paged["mother"]) == ("waiting", 0, 1, True, True)
    assert (await table.get(paged["bottom"]))[0] == "cancelled"
    assert (await table.get(paged["sibling"]))[0] == "available"


async def test_cancel_many_leaves_a_parent_it_ends_uncounted_by_its_children(
    repairs: RepairStore, table: Table
) -> None:
    # A parent and its child on one page: both end, and the child does not count down the
    # parent it ended with (a count below zero would wake nothing, but it is wrong).
    mother = await table.add(status="waiting", pending=1)
    kid = await table.add(status="available", parent=mother)

    page = await repairs.instances_cancel_many(ids=[kid, mother], now=None)

    assert [(v.id, v.verdict) for v in page.verdicts] == [(mother, "cancelled"), (kid, "cancelled")]
    assert page.cascaded == 0
    assert (await table.get(mother))[:3] == ("cancelled", 0, 1)


Pick = Callable[..., Awaitable[list[int]]]


async def test_matching_selects_by_each_filter(
    engine: gd.Engine, repairs: RepairStore, table: Table
) -> None:
    now = engine.clock.now()
    assert now is not None
    base = await table.add(status="failed", key="inv-1", step="work")
    await table.set(base, "error", '{"type": "builtins.TimeoutError", "message": "Bank DOWN"}')
    await table.set(base, "finished_at", now - timedelta(minutes=30))
    other_status = await table.add(status="done", key="inv-2")
    other_step = await table.add(status="failed", key="inv-3", step="wait")
    other_error = await table.add(status="failed", key="inv-4")
    await table.set(other_error, "error", '{"type": "ValueError", "message": "bad amount"}')
    old = await table.add(status="failed", key="inv-5")
    await table.set(old, "finished_at", now - timedelta(hours=3))
    other_key = await table.add(status="failed", key="ord-1")
    other_queue = await table.add(status="failed", key="inv-6", queue="mail")
    other_workflow = await table.add(status="failed", key="inv-7", workflow="raw.other")
    everything = [base, other_status, other_step, other_error, old, other_key, other_queue,
                  other_workflow]  # fmt: skip

    async def pick(after: int = 0, limit: int = 100, **only: Any) -> list[int]:
        match = Match(**{"statuses": ("failed", "done"), **only})
        found = await repairs.instances_matching(match, after=after, limit=limit, now=now)
        if not after and limit == 100:
            count = await repairs.instances_matching_count(match, limit=None, now=now)
            assert count == len(found)
        return found

    assert await pick() == everything
    assert await pick(statuses=("failed",)) == [i for i in everything if i != other_status]
    assert await pick(workflow="raw.other") == [other_workflow]
    assert await pick(step="wait") == [other_step]
    assert await pick(error_contains="bank down") == [base]
    assert await pick(error_contains="timeouterror") == [base]
    assert await pick(since=timedelta(hours=1)) == [base]
    assert await pick(key_prefix="ord-") == [other_key]
    assert await pick(queue="mail") == [other_queue]
    assert await pick(after=old) == [other_key, other_queue, other_workflow]
    assert await pick(limit=2) == [base, other_status]
    capped = Match(statuses=("failed", "done"))
    assert await repairs.instances_matching_count(capped, limit=3, now=now) == 3


async def _rewind(repairs: RepairStore, id: int, step: str, **changes: Any) -> Any:
    entry = {"state": None, "state_version": None, "max_attempts": 3, "rate_limit": None,
             "rate_partition": None, "weight": 1, **changes}  # fmt: skip
    return await repairs.instance_rewind(id=id, step=step, now=None, **entry)


async def test_rewind_keeps_the_children_of_its_own_step_and_forgets_them_elsewhere(
    repairs: RepairStore, table: Table, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    # Two parents cancelled while they waited for their children (the cascade cancelled the
    # children; a cancelled parent is not counted down, so pending_children stayed).
    same = await table.add(status="cancelled", step="wait", pending=2)
    other = await table.add(status="cancelled", step="wait", pending=2)
    kids = [await table.add(status="cancelled", parent=p) for p in (same, same, other)]
    await table.set(same, "children_from", kids[0])
    await table.set(other, "children_from", kids[2])
    await db.execute(
        f'UPDATE "{gendurable_schema}".instances SET await_seen = 7, timed_out = true, '
        "result = 'null' WHERE id = ANY ($1)",
        [same, other],
    )

    back = await _rewind(repairs, same, "wait", state_version=9)  # no state: version kept
    moved = await _rewind(repairs, other, "work", state=b'{"n": 1}', state_version=4)

    assert (back.rewound, moved.rewound) == (same, other)
    found = {
        r["id"]: dict(r)
        for r in await db.fetch(
            "SELECT id, status::text, step, children_from, pending_children, await_seen, "
            "timed_out, result IS NULL AS no_result, state::text, state_version, max_attempts "
            f'FROM "{gendurable_schema}".instances WHERE id = ANY ($1)',
            [same, other],
        )
    }
    assert found[same] == {
        "id": same, "status": "available", "step": "wait", "children_from": kids[0],
        "pending_children": 0, "await_seen": 0, "timed_out": False, "no_result": True,
        "state": "null", "state_version": 1, "max_attempts": 3,
    }  # fmt: skip
    assert found[other] == {
        **found[same], "id": other, "step": "work", "children_from": None,
        "state": '{"n": 1}', "state_version": 4,
    }  # fmt: skip
    assert [(await table.get(k))[0] for k in kids] == ["cancelled"] * 3


async def test_rewind_refuses_a_live_or_done_instance_and_writes_nothing(
    repairs: RepairStore, table: Table
) -> None:
    live = await table.add(status="awaiting", step="wait")
    done = await table.add(status="done")

    answers = [await _rewind(repairs, id, "work") for id in (live, done, live + 1000)]

    assert [(a.status, a.rewound) for a in answers] == [
        ("awaiting", None), ("done", None), (None, None),
    ]  # fmt: skip
    assert (await table.get(live))[0] == "awaiting"
    assert (await table.get(done))[0] == "done"
