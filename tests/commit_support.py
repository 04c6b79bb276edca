"""Group commits written by hand in tests: outcomes sent through `outcome_batch`, or through
`outcome_plain` (the lean statement of plain gotos, continues and ends), as the engine's
committer encodes them (`Committer._flush`), busy ones sent again."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import msgspec

import gendurable as gd
from gendurable.db.engine_store import plain_outcome_params


def park(
    id: int,
    locked_by: str,
    step: str,
    names: Sequence[str],
    *,
    timeout: timedelta | None = None,
    seen: int = 0,
    consumed: Sequence[int] = (),
    keep_deadline: bool = False,
    keep_children: bool = False,
) -> dict[str, Any]:
    """The plain fields of a park (a goto into an await, or a reawait with `keep_deadline`)."""
    return {
        "id": id,
        "locked_by": locked_by,
        "kind": "park",
        "step": step,
        "delay_s": None if timeout is None else timeout.total_seconds(),
        "weight": 1,
        "state_version": 1,
        "await_names": list(names),
        "keep_deadline": keep_deadline,
        "seen": seen,
        "keep_children": keep_children,
        "consumed": list(consumed),
    }


def move(
    id: int, locked_by: str, step: str, *, lease: timedelta | None = None, queue: str = "default"
) -> dict[str, Any]:
    """The plain fields of a goto: with `lease`, one that keeps its claim (a continue: the
    worker runs `step` at once, for a fresh lease, unless its `queue` is paused)."""
    return {
        "id": id,
        "locked_by": locked_by,
        "kind": "goto" if lease is None else "continue",
        "step": step,
        "lease_s": None if lease is None else lease.total_seconds(),
        "weight": 1,
        "state_version": 1,
        "consumed": [],
        "queue": queue,
    }


def finish(id: int, locked_by: str, status: str) -> dict[str, Any]:
    """The plain fields of a terminal outcome (its result: JSON null)."""
    return {"id": id, "locked_by": locked_by, "kind": "finish", "status": status}


GROUP_COMMITS = ("outcome_batch", "outcome_plain")
"""The two group-commit statements, for tests that hold for both."""


async def commit(
    engine: gd.Engine,
    outcomes: Sequence[dict[str, Any]],
    *,
    now: datetime | Any | None = ...,
    conn: asyncpg.Connection | None = None,
    statement: str = "outcome_batch",
) -> tuple[dict[int, bool | str | None], set[int]]:
    """One group commit (`statement`): for each committed id, whether a park among them was
    woken at once by its deadline (True), by a signal (False) or not (None), `"released"`
    for a kept-claim move made a plain goto; and the ids whose row someone else held (busy).
    On `conn` (a transaction the test holds open) when given, else through the store."""
    when = engine.clock.now() if now is ... else now
    if statement == "outcome_plain":
        return await _commit_plain(engine, outcomes, when, conn)
    fields = [{**o, "n": n} for n, o in enumerate(outcomes, 1)]
    nulls: list[bytes | None] = [None] * len(fields)
    results: list[bytes | None] = [b"null" if o["kind"] == "finish" else None for o in fields]
    encoded = msgspec.json.encode(fields)
    store = engine.store
    if conn is None:
        return await store.outcome_batch(
            outcomes=encoded, states=nulls, results=results, errors=nulls, now=when
        )
    statement = store.db.sql["outcome_batch"]
    rows = await conn.fetch(
        statement.sql,
        *statement.args(outcomes=encoded, states=nulls, results=results, errors=nulls, now=when),
    )
    done: dict[int, bool | str | None] = {
        int(r["id"]): "released" if r["released"] else r["woken_by_deadline"]
        for r in rows
        if not r["busy"]
    }
    return done, {int(r["id"]) for r in rows if r["busy"]}


async def _commit_plain(
    engine: gd.Engine,
    outcomes: Sequence[dict[str, Any]],
    when: datetime | None,
    conn: asyncpg.Connection | None,
) -> tuple[dict[int, bool | str | None], set[int]]:
    for o in outcomes:
        if o["kind"] not in ("goto", "continue", "finish"):
            raise ValueError(f"outcome_plain commits no {o['kind']}: {o}")
    args: dict[str, Any] = {
        "ids": [o["id"] for o in outcomes],
        "locked_bys": [o["locked_by"] for o in outcomes],
        "kinds": [o["kind"] for o in outcomes],
        "steps": [o.get("step") for o in outcomes],
        "states": [None for _ in outcomes],
        "state_versions": [o.get("state_version", 1) for o in outcomes],
        "delays": [o.get("delay_s") for o in outcomes],
        "leases": [o.get("lease_s") for o in outcomes],
        "statuses": [o.get("status") for o in outcomes],
        "results": [b"null" if o["kind"] == "finish" else None for o in outcomes],
        "errors": [None for _ in outcomes],
        "max_attempts": [o.get("max_attempts") for o in outcomes],
        "queues": [o.get("queue") for o in outcomes],
        "now": when,
        "consumed_instances": [o["id"] for o in outcomes for _ in o.get("consumed", ())],
        "consumed_signals": [s for o in outcomes for s in o.get("consumed", ())],
    }
    if conn is None:
        return await engine.store.outcome_plain(**args)
    statement = engine.store.db.sql["outcome_plain"]
    rows = await conn.fetch(statement.sql, *statement.bind(plain_outcome_params(**args)))
    done: dict[int, bool | str | None] = {
        int(r["id"]): "released" if r["released"] else None for r in rows if not r["busy"]
    }
    return done, {int(r["id"]) for r in rows if r["busy"]}


async def finish_batch(
    engine: gd.Engine,
    outcomes: Sequence[tuple[int, str, str]],
    *,
    now: datetime | Any | None = ...,
    statement: str = "outcome_batch",
) -> set[int]:
    """Commit `(id, locked_by, status)` terminal outcomes in one group commit; the ids
    committed. Outcomes whose rows someone held for a moment (a claim of the parent, say)
    come back busy and are sent again."""
    pending = list(outcomes)
    committed: set[int] = set()
    while pending:
        done, busy = await commit(
            engine, [finish(*o) for o in pending], now=now, statement=statement
        )
        committed |= set(done)
        pending = [o for o in pending if o[0] in busy]
    return committed
