"""The interleaving matrix: every statement that locks or writes `instances`, `signals`,
`rate_buckets` (and the rate configs) acts on a row exactly as it does alone when another
transaction locks that row, updates it and commits while the statement runs.

READ COMMITTED re-checks a row another transaction updated while the statement waited for
its lock (EvalPlanQual) against the row's latest version; how that re-check runs depends on
the plan, and a planner setting must never change what a statement does. So each case below
runs under six plan settings on an empty and on a filled schema (`interleavings.PLANS`,
`interleavings.SIZES`). How a run goes, and what is compared, is in `interleavings.py`.

The concurrent update is harmless (a heartbeat's new row version, same values) unless a case
says otherwise: a `touch` that changes the row (the claim was lost, the instance ended) is
a guard the statement must re-check on the latest version, and the control then runs with
that change already committed.

A statement that takes rows with SKIP LOCKED (`skips=True`) passes over the held row and
takes it when run again; the two runs together must equal the control's one.

`test_every_writing_statement_has_a_case` lists the statements and the schema functions that
lock or write those tables, and fails for one with no case and no exemption.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import timedelta
from importlib import resources
from typing import Any

import msgspec
import pytest
import pytest_asyncio
from interleavings import (
    PLANS,
    SIZES,
    Case,
    Ids,
    Outcome,
    Rows,
    Schemas,
    Store,
    T,
    comparable,
    create_schemas,
    drop_schemas,
    run_case,
)

from commit_support import finish, move, park
from gendurable.entries import NO_LIMIT, NewRow, StepLimit, columns
from gendurable.errors import DuplicateKey
from gendurable.sql import statements

LEASE = timedelta(seconds=30)
SCHEDULER = "m:m@mhost-1-x"
TOKEN = f"{SCHEDULER}#1"
"""The claim name the case rows are executing under (`<scheduler>#<n>`)."""
OTHER = "m:m@mhost-2-y#1"
EXECUTING: dict[str, Any] = {
    "status": "executing",
    "locked_by": TOKEN,
    "locked_until": T + timedelta(seconds=10),
}
EXPIRED: dict[str, Any] = {**EXECUTING, "locked_until": T - timedelta(minutes=1)}
ENDED = "status = 'done', locked_by = NULL, locked_until = NULL, finished_at = updated_at"
CLAIM_LOST = f"locked_by = '{OTHER}'"
SPAWNED = (
    "INSERT INTO __schema__.instances (workflow, queue, step, state, status, run_at, parent_id, "
    "spawn_index, inserted_at, updated_at) VALUES ('m.flow', 'm', 'work', '{}', 'available', "
    "'2029-12-31 23:59:00+00', $1, 0, '2029-12-31 23:00:00+00', '2029-12-31 23:00:00+00')"
)
"""A child of the held row, inserted by the concurrent transaction (a spawn)."""
HEARTBEAT = "locked_until = locked_until + interval '20 seconds'"
"""A heartbeat's update of an executing row: a new lease, so a new index entry too."""


# -- setup and calls ----------------------------------------------------------------------


def rows(*specs: tuple[str, str, dict[str, Any]]) -> Callable[[Rows], Any]:
    """A setup inserting `specs` in order: ("i", role, columns) instances, ("s", role,
    {instance, name}) signals, ("c", role, config) configs, ("b", role, bucket) buckets."""

    async def setup(r: Rows) -> None:
        for kind, role, kw in specs:
            if kind == "i":
                await r.instance(role, **kw)
            elif kind == "s":
                await r.signal(role, **kw)
            elif kind == "c":
                await r.config(role, **kw)
            else:
                await r.bucket(role, **kw)

    return setup


def i(role: str, **kw: Any) -> tuple[str, str, dict[str, Any]]:
    return ("i", role, kw)


def sig(role: str, instance: str, name: str = "go") -> tuple[str, str, dict[str, Any]]:
    return ("s", role, {"instance": instance, "name": name})


def cfg(role: str, name: str, **kw: Any) -> tuple[str, str, dict[str, Any]]:
    return ("c", role, {"name": name, **kw})


def bucket(role: str, name: str, partition: str, **kw: Any) -> tuple[str, str, dict[str, Any]]:
    return ("b", role, {"name": name, "partition": partition, **kw})


def new(key: str | None) -> NewRow:
    """A start of `m.flow` on queue `m`, with the default scope."""
    return NewRow(
        workflow="m.flow",
        queue="m",
        step="work",
        state=b'{"n": 0}',
        max_attempts=5,
        priority=0,
        run_at=None,
        delay=None,
        key=key,
        scope=("available", "executing", "awaiting", "waiting"),
        concurrency_key=None,
        limit=NO_LIMIT,
    )


def retry(id: int, locked_by: str) -> dict[str, Any]:
    return {"id": id, "locked_by": locked_by, "kind": "retry", "delay_s": 5.0, "state_version": 1}


async def batch(store: Store, outcomes: Sequence[dict[str, Any]]) -> Any:
    """One group commit, encoded as the committer does (each outcome writes a new state)."""
    fields = [{"state_version": 1, **o, "n": n} for n, o in enumerate(outcomes, 1)]
    states: list[bytes | None] = [b'{"n": 2}'] * len(fields)
    results: list[bytes | None] = [b'{"r": 1}' if o["kind"] == "finish" else None for o in fields]
    errors: list[bytes | None] = [
        b'{"type": "boom"}' if o["kind"] == "retry" or o.get("status") == "failed" else None
        for o in fields
    ]
    return await store.outcome_batch(
        outcomes=msgspec.json.encode(fields), states=states, results=results, errors=errors, now=T
    )


async def plain(store: Store, outcomes: Sequence[dict[str, Any]]) -> Any:
    """One lean group commit (`outcome_plain`), encoded as the committer does (each outcome
    writes a new state)."""
    failed = [o.get("status") == "failed" for o in outcomes]
    return await store.outcome_plain(
        ids=[o["id"] for o in outcomes],
        locked_bys=[o["locked_by"] for o in outcomes],
        kinds=[o["kind"] for o in outcomes],
        steps=[o.get("step") for o in outcomes],
        states=[b'{"n": 2}'] * len(outcomes),
        state_versions=[1] * len(outcomes),
        delays=[o.get("delay_s") for o in outcomes],
        leases=[o.get("lease_s") for o in outcomes],
        statuses=[o.get("status") for o in outcomes],
        results=[b'{"r": 1}' if o["kind"] == "finish" else None for o in outcomes],
        errors=[b'{"type": "boom"}' if f else None for f in failed],
        max_attempts=[None] * len(outcomes),
        queues=[o.get("queue") for o in outcomes],
        now=T,
        consumed_instances=[o["id"] for o in outcomes for _ in o.get("consumed", ())],
        consumed_signals=[s for o in outcomes for s in o.get("consumed", ())],
    )


GROUP_COMMITS: dict[str, tuple[Callable[[Store, Sequence[dict[str, Any]]], Any], set[str]]] = {
    "outcome_batch": (batch, {"goto", "continue", "retry", "park", "done", "stop"}),
    "outcome_plain": (plain, {"goto", "continue", "done", "stop"}),
}
"""The two group-commit statements: how to send a batch, and the kinds each commits."""


async def spawn(
    store: Store, r: Rows, children: Sequence[NewRow], consumed: Sequence[str] = ()
) -> Any:
    """The spawn transaction of `parent` (children first, then the parent's update)."""
    try:
        return await store.outcome_spawn(
            id=r.id("parent"),
            locked_by=TOKEN,
            children=columns(children),
            keys=[(c.workflow, c.key) for c in children if c.key is not None],
            then="after",
            state=b'{"n": 2}',
            state_version=1,
            max_attempts=None,
            consumed=[r.id(s) for s in consumed],
            limit=StepLimit(),
            now=T,
        )
    except DuplicateKey as held:
        return ("duplicate", Ids((held.existing_id,)))


async def claim(store: Store, r: Rows, *, lean: bool = False) -> Any:
    """`instance_claim` itself, or (`lean`) the store's claim as the engine runs it: the lean
    claim first, from a store that has not seen the queue fall back yet."""
    store.general_claims.clear()
    return await store.instance_claim(
        queue="m",
        limit=10,
        locked_by=TOKEN,
        leases=[LEASE, LEASE],
        now=T,
        workflows=["m.flow", "m.flow"],
        steps=["work", "next"],
        lean=lean,
    )


async def claim_lean(store: Store, r: Rows) -> Any:
    return await claim(store, r, lean=True)


async def deliver(store: Store, r: Rows, *, local: bool = False, by_key: bool = False) -> Any:
    row = await store.signal_deliver(
        workflow="m.flow",
        id=None if by_key else r.id("r"),
        key="k1" if by_key else None,
        name="go",
        payload=b'{"v": 2}',
        now=T,
        trace_context=None,
        locked_by=TOKEN if local else None,
        lease=LEASE if local else None,
        queue="m" if local else None,
    )
    return row


def sweep_merge(first: Any, again: Any) -> Any:
    """A sweep's two runs: the rows deleted by either; the second run's counts otherwise."""
    return msgspec.structs.replace(again, deleted=first.deleted + again.deleted)


def busy(*held: str) -> Callable[[Outcome], bool]:
    """A group commit's first run: nothing committed, `held` reported busy (to send again)."""
    return lambda o: o.result == [{}, sorted(held)]


def inserted(o: Outcome) -> list[str]:
    return sorted(label for label in o.instances if label.startswith("new"))


# -- the group commit's outcomes -------------------------------------------------------------

KINDS: dict[str, tuple[Callable[[int], dict[str, Any]], str, tuple[str, ...]]] = {
    "goto": (lambda id: move(id, TOKEN, "next"), "available", ()),
    "continue": (lambda id: move(id, TOKEN, "next", lease=LEASE), "executing", ()),
    "retry": (lambda id: retry(id, TOKEN), "available", ()),
    "park": (
        lambda id: park(id, TOKEN, "wait", ["go"], timeout=LEASE),
        "awaiting",
        ("instances_parked",),
    ),
    "done": (lambda id: finish(id, TOKEN, "done"), "done", ("instances_ended",)),
    "stop": (lambda id: finish(id, TOKEN, "failed"), "failed", ("instances_ended",)),
}
"""Each kind of outcome: its fields for a row, the status it leaves, the functions it calls."""


def outcome_cases(statement: str) -> list[Case]:
    """Each kind of outcome `statement` commits, for a top-level row and for a child (whose
    end counts its parent down), with the row held, and for a child with its parent held;
    and for a row whose claim another worker took meanwhile (stale: nothing changes)."""
    commit, kinds = GROUP_COMMITS[statement]
    cases = []
    for kind, (fields, status, reaches) in KINDS.items():
        if kind not in kinds:
            continue
        ends = status in ("done", "failed")
        cases.append(
            Case(
                f"{statement}.{kind}",
                (statement,),
                rows(i("r", **EXECUTING), sig("s", "r", "other")),
                lambda st, r, fields=fields, commit=commit: commit(st, [fields(r.id("r"))]),
                hold="r",
                skips=True,
                skipped=busy("r"),
                touch=HEARTBEAT,
                reaches=reaches,
                expect=lambda o, status=status, ends=ends: (
                    o.result == [{"r": None}, []]
                    and o.status("r") == status
                    and (o.signals == {}) == ends
                ),
            )
        )
        # a lost claim: one guard for every kind, taken here on a claim kept, a park, an end
        if kind in ("continue", "park", "done"):
            cases.append(
                Case(
                    f"{statement}.{kind}_claim_lost",
                    (statement,),
                    rows(i("r", **EXECUTING)),
                    lambda st, r, fields=fields, commit=commit: commit(st, [fields(r.id("r"))]),
                    hold="r",
                    skips=True,
                    skipped=busy("r"),
                    touch=CLAIM_LOST,
                    expect=lambda o: o.result == [{}, []] and o.status("r") == "executing",
                )
            )
        for held in ("child", "parent"):
            cases.append(
                Case(
                    f"{statement}.{kind}_child" + ("_parent_held" if held == "parent" else ""),
                    (statement,),
                    rows(
                        i("parent", status="waiting", pending=1),
                        i("child", parent="parent", **EXECUTING),
                    ),
                    lambda st, r, fields=fields, commit=commit: commit(st, [fields(r.id("child"))]),
                    hold=held,
                    skips=True,
                    # a row that does not end needs no parent: it commits at once
                    skipped=busy("child")
                    if ends or held == "child"
                    else lambda o, status=status: (
                        o.result == [{"child": None}, []] and o.status("child") == status
                    ),
                    touch=HEARTBEAT if held == "child" else None,
                    reaches=reaches,
                    expect=lambda o, status=status, ends=ends: (
                        o.status("child") == status
                        and o.status("parent") == ("available" if ends else "waiting")
                        and o.row("parent")["pending_children"] == (0 if ends else 1)
                    ),
                )
            )
    return cases


def mixed(st: Store, r: Rows) -> Any:
    """One batch holding every kind of outcome, of top-level rows and children."""
    return batch(
        st,
        [fields(r.id(kind)) for kind, (fields, _, _) in KINDS.items()]
        + [finish(r.id("child"), TOKEN, "done")],
    )


def end_cases(statement: str) -> list[Case]:
    """Ends of siblings whose parent, or one of which, is held; the end of a parent whose
    live child is held (the cascade waits for it)."""
    commit = GROUP_COMMITS[statement][0]
    return [
        Case(
            f"{statement}.finish_siblings_parent_held",
            (statement,),
            rows(
                i("parent", status="waiting", pending=2),
                i("c1", parent="parent", **EXECUTING),
                i("c2", parent="parent", **EXECUTING),
            ),
            lambda st, r: commit(
                st, [finish(r.id("c1"), TOKEN, "done"), finish(r.id("c2"), TOKEN, "failed")]
            ),
            hold="parent",
            skips=True,
            skipped=busy("c1", "c2"),
            reaches=("instances_ended",),
            expect=lambda o: (
                o.result == [{"c1": None, "c2": None}, []]
                and o.status("parent") == "available"
                and o.row("parent")["pending_children"] == 0
            ),
        ),
        Case(
            f"{statement}.finish_siblings_one_held",
            (statement,),
            rows(
                i("parent", status="waiting", pending=2),
                i("c1", parent="parent", **EXECUTING),
                i("c2", parent="parent", **EXECUTING),
            ),
            lambda st, r: commit(
                st, [finish(r.id("c1"), TOKEN, "done"), finish(r.id("c2"), TOKEN, "done")]
            ),
            hold="c1",
            skips=True,
            skipped=lambda o: (
                o.result == [{"c2": None}, ["c1"]] and o.row("parent")["pending_children"] == 1
            ),
            touch=HEARTBEAT,
            reaches=("instances_ended",),
            expect=lambda o: (
                o.status("parent") == "available" and o.row("parent")["pending_children"] == 0
            ),
        ),
        Case(
            f"{statement}.finish_parent_child_held",
            (statement,),
            rows(
                i("parent", **EXECUTING),
                i("child", status="awaiting", parent="parent", await_names=["go"]),
            ),
            lambda st, r: commit(st, [finish(r.id("parent"), TOKEN, "done")]),
            hold="child",
            reaches=("instances_ended",),
            expect=lambda o: o.status("parent") == "done" and o.status("child") == "cancelled",
        ),
        # `instances_ended`'s fast path (nothing but the announcement to do): a row whose only
        # child has ended; and a batch where one row has an inbox, so nothing takes it.
        Case(
            f"{statement}.finish_child_ended_before",
            (statement,),
            rows(i("r", **EXECUTING), i("child", status="done", parent="r", finished_at=T)),
            lambda st, r: commit(st, [finish(r.id("r"), TOKEN, "done")]),
            hold="r",
            skips=True,
            skipped=busy("r"),
            touch=HEARTBEAT,
            reaches=("instances_ended",),
            expect=lambda o: (
                o.result == [{"r": None}, []]
                and o.status("r") == "done"
                and o.status("child") == "done"
            ),
        ),
        Case(
            f"{statement}.finish_plain_and_inbox",
            (statement,),
            rows(i("plain", **EXECUTING), i("inbox", **EXECUTING), sig("s", "inbox", "other")),
            lambda st, r: commit(
                st,
                [finish(r.id("plain"), TOKEN, "done"), finish(r.id("inbox"), TOKEN, "failed")],
            ),
            hold="plain",
            skips=True,
            skipped=lambda o: o.result == [{"inbox": None}, ["plain"]] and o.signals == {},
            touch=HEARTBEAT,
            reaches=("instances_ended",),
            expect=lambda o: (
                o.result == [{"inbox": None, "plain": None}, []]
                and o.status("plain") == "done"
                and o.status("inbox") == "failed"
                and o.signals == {}
            ),
        ),
    ]


def plain_mixed(st: Store, r: Rows) -> Any:
    """One lean batch holding every kind of outcome it commits, of top-level rows and a child."""
    kinds = GROUP_COMMITS["outcome_plain"][1]
    return plain(
        st,
        [fields(r.id(kind)) for kind, (fields, _, _) in KINDS.items() if kind in kinds]
        + [finish(r.id("child"), TOKEN, "done")],
    )


# -- the cases ----------------------------------------------------------------------------


# -- bulk pages and rewinds (sql/bulk.sql, sql/rewind.sql) --------------------------------

FAILED: dict[str, Any] = {"status": "failed", "finished_at": T - timedelta(hours=1),
                          "error": '{"type": "boom"}'}  # fmt: skip
RETRIED = "status = 'available', finished_at = NULL, error = NULL"
MOVED_ON = "status = 'available', pending_children = 0"
"""A parent's last live child ended: it no longer waits for that spawn."""


async def retry_page(st: Store, r: Rows, *roles: str) -> Any:
    verdicts = await st.instances_retry_many(ids=[r.id(x) for x in roles], now=T)
    return [dataclasses.asdict(v) for v in verdicts]


async def cancel_page(st: Store, r: Rows, *roles: str) -> Any:
    page = await st.instances_cancel_many(ids=[r.id(x) for x in roles], now=T)
    return {"verdicts": [dataclasses.asdict(v) for v in page.verdicts], "cascaded": page.cascaded}


async def rewind_to(st: Store, r: Rows, role: str) -> Any:
    answer = await st.instance_rewind(
        id=r.id(role),
        step="next",
        state=b'{"n": 3}',
        state_version=1,
        max_attempts=3,
        rate_limit=None,
        rate_partition=None,
        weight=1,
        now=T,
    )
    return answer


def page_merge(first: Any, again: Any) -> Any:
    """A page's two runs: each id's verdict from the first run, unless it was busy there (the
    second run judged it then)."""
    if isinstance(first, dict):
        return {
            "verdicts": page_merge(first["verdicts"], again["verdicts"]),
            "cascaded": first["cascaded"] + again["cascaded"],
        }
    kept = {v["id"]: v for v in first if v["verdict"] != "busy"}
    return [kept.get(v["id"], v) for v in again]


def verdicts(o: Outcome) -> dict[str, str]:
    """Each labelled id's verdict in a page's result."""
    found = o.result["verdicts"] if isinstance(o.result, dict) else o.result
    return {v["id"]: v["verdict"] for v in found}


def family(child: dict[str, Any], pending: int = 1) -> Callable[[Rows], Any]:
    """A parent of a live child and of `child` (one spawn), waiting for `pending` of them."""
    return rows(
        i("parent", status="waiting", pending=pending),
        i("child", parent="parent", **child),
        i("live", parent="parent", status="awaiting", await_names=["go"]),
    )


def bulk_cases() -> list[Case]:
    retry_one = ("instances_retry_many",)
    cancel_one = ("instances_cancel_many",)
    return [
        Case(
            "instances_retry_many.row_held",
            retry_one,
            rows(i("r1", **FAILED), i("r2", **FAILED)),
            lambda st, r: retry_page(st, r, "r1", "r2"),
            hold="r2",
            skips=True,
            merge=page_merge,
            skipped=lambda o: (
                verdicts(o) == {"r1": "retried", "r2": "busy"} and o.status("r2") == "failed"
            ),
            expect=lambda o: verdicts(o) == {"r1": "retried", "r2": "retried"},
        ),
        *(
            Case(
                f"instances_retry_many.{held}_held",
                retry_one,
                family(FAILED),
                lambda st, r: retry_page(st, r, "child"),
                hold=held,
                skips=True,
                merge=page_merge,
                skipped=lambda o: (
                    verdicts(o) == {"child": "busy"} and o.row("parent")["pending_children"] == 1
                ),
                expect=lambda o: (
                    verdicts(o) == {"child": "retried"} and o.row("parent")["pending_children"] == 2
                ),
            )
            for held in ("child", "parent")
        ),
        Case(
            "instances_retry_many.retried_meanwhile",
            retry_one,
            rows(i("r", **FAILED)),
            lambda st, r: retry_page(st, r, "r"),
            hold="r",
            touch=RETRIED,
            skips=True,
            merge=page_merge,
            skipped=lambda o: verdicts(o) == {"r": "busy"},
            expect=lambda o: (
                o.result[0]["verdict"] == "not_failed" and o.result[0]["status"] == "available"
            ),
        ),
        Case(
            "instances_retry_many.parent_moves_on_meanwhile",
            retry_one,
            family(FAILED),
            lambda st, r: retry_page(st, r, "child"),
            hold="parent",
            touch=MOVED_ON,
            skips=True,
            merge=page_merge,
            skipped=lambda o: verdicts(o) == {"child": "busy"},
            expect=lambda o: (
                verdicts(o) == {"child": "parent_not_waiting"} and o.status("child") == "failed"
            ),
        ),
        Case(
            "instances_cancel_many.row_held",
            cancel_one,
            rows(i("r1", status="awaiting", await_names=["go"]), i("r2", **EXECUTING)),
            lambda st, r: cancel_page(st, r, "r1", "r2"),
            hold="r2",
            touch=HEARTBEAT,
            skips=True,
            merge=page_merge,
            reaches=("instances_ended",),
            skipped=lambda o: (
                verdicts(o) == {"r1": "cancelled", "r2": "busy"} and o.status("r2") == "executing"
            ),
            expect=lambda o: verdicts(o) == {"r1": "cancelled", "r2": "cancelled"},
        ),
        Case(
            "instances_cancel_many.parent_held",
            cancel_one,
            family({"status": "awaiting", "await_names": ["go"]}, pending=2),
            lambda st, r: cancel_page(st, r, "child"),
            hold="parent",
            skips=True,
            merge=page_merge,
            reaches=("instances_ended",),
            skipped=lambda o: verdicts(o) == {"child": "busy"} and o.status("child") == "awaiting",
            expect=lambda o: (
                verdicts(o) == {"child": "cancelled"}
                and (o.status("parent"), o.row("parent")["pending_children"]) == ("waiting", 1)
            ),
        ),
        Case(
            "instances_cancel_many.ends_meanwhile",
            cancel_one,
            rows(i("r", **EXECUTING)),
            lambda st, r: cancel_page(st, r, "r"),
            hold="r",
            touch=ENDED,
            skips=True,
            merge=page_merge,
            skipped=lambda o: verdicts(o) == {"r": "busy"},
            expect=lambda o: verdicts(o) == {"r": "not_live"} and o.status("r") == "done",
        ),
        Case(
            "instances_cancel_many.cascade_child_held",
            cancel_one,
            rows(
                i("top", status="waiting", pending=2),
                i("c1", status="awaiting", parent="top", await_names=["go"]),
                i("c2", parent="top", **EXECUTING),
            ),
            lambda st, r: cancel_page(st, r, "top"),
            hold="c2",
            touch=HEARTBEAT,
            reaches=("instances_ended",),
            expect=lambda o: (
                o.result["cascaded"] == 2 and o.status("c1") == o.status("c2") == "cancelled"
            ),
        ),
    ]


def rewind_cases() -> list[Case]:
    cancelled = {"status": "cancelled", "finished_at": T - timedelta(hours=1)}
    return [
        Case(
            "instance_rewind.top_held",
            ("instance_rewind",),
            rows(i("r", **FAILED)),
            lambda st, r: rewind_to(st, r, "r"),
            hold="r",
            expect=lambda o: (
                o.result["rewound"] == "r"
                and (o.status("r"), o.row("r")["step"]) == ("available", "next")
            ),
        ),
        *(
            Case(
                f"instance_rewind.{held}_held",
                ("instance_rewind",),
                family(cancelled),
                lambda st, r: rewind_to(st, r, "child"),
                hold=held,
                expect=lambda o: (
                    o.result["rewound"] == "child" and o.row("parent")["pending_children"] == 2
                ),
            )
            for held in ("child", "parent")
        ),
        Case(
            "instance_rewind.parent_moves_on_meanwhile",
            ("instance_rewind",),
            family(cancelled),
            lambda st, r: rewind_to(st, r, "child"),
            hold="parent",
            touch=MOVED_ON,
            expect=lambda o: o.result["rewound"] is None and o.status("child") == "cancelled",
        ),
        Case(
            "instance_rewind.retried_meanwhile",
            ("instance_rewind",),
            rows(i("r", **FAILED)),
            lambda st, r: rewind_to(st, r, "r"),
            hold="r",
            touch=RETRIED,
            expect=lambda o: (
                o.result["rewound"] is None
                and o.result["status"] == "available"
                and o.row("r")["step"] == "work"
            ),
        ),
    ]


CASES: list[Case] = [
    # instance_insert: ON CONFLICT DO UPDATE locks the live holder of the key.
    Case(
        "instance_insert.key_held",
        ("instance_insert",),
        rows(i("holder", key="k1")),
        lambda st, r: st.instance_insert(row=new("k1"), now=T),
        hold="holder",
        expect=lambda o: o.result["created"] is False and o.result["id"] == "holder",
    ),
    Case(
        "instance_insert.local_start_key_held",
        ("instance_insert",),
        rows(i("holder", key="k1")),
        lambda st, r: st.instance_insert(row=new("k1"), now=T, locked_by=TOKEN, lease=LEASE),
        hold="holder",
        expect=lambda o: (
            o.result["created"] is False
            and o.status("holder") == "available"
            and o.row("holder")["locked_by"] is None
        ),
    ),
    Case(
        "instance_insert.local_start_key_freed",
        ("instance_insert",),
        rows(i("holder", key="k1")),
        lambda st, r: st.instance_insert(row=new("k1"), now=T, locked_by=TOKEN, lease=LEASE),
        hold="holder",
        touch=ENDED,
        expect=lambda o: o.result["created"] is True and o.status("new1") == "executing",
    ),
    # instance_insert_unkeyed: a plain insert locks no row it did not make, not even a live
    # instance of the same workflow (an unkeyed start has no key to look for).
    Case(
        "instance_insert_unkeyed.instance_held",
        ("instance_insert_unkeyed",),
        rows(i("holder")),
        lambda st, r: st.instance_insert(row=new(None), now=T, locked_by=TOKEN, lease=LEASE),
        hold="holder",
        may_wait=True,
        expect=lambda o: (
            o.result["created"] is True
            and o.status("new1") == "executing"
            and o.status("holder") == "available"
        ),
    ),
    # instance_insert_many: ON CONFLICT DO NOTHING waits for the holder's updater.
    Case(
        "instance_insert_many.key_held",
        ("instance_insert_many",),
        rows(i("holder", key="k1")),
        lambda st, r: st.instance_insert_many(
            columns=columns([new("k1"), new("k2")]), parent_id=None, now=T
        ),
        hold="holder",
        expect=lambda o: [row["key"] for row in o.result] == ["k2"] and inserted(o) == ["new1"],
    ),
    Case(
        "instance_insert_many.key_freed",
        ("instance_insert_many",),
        rows(i("holder", key="k1")),
        lambda st, r: st.instance_insert_many(
            columns=columns([new("k1"), new("k2")]), parent_id=None, now=T
        ),
        hold="holder",
        touch=ENDED,
        expect=lambda o: [row["key"] for row in o.result] == ["k1", "k2"],
    ),
    # The spawn: instance_insert_many (children) then outcome_spawn, one transaction.
    Case(
        "outcome_spawn.parent_held",
        ("outcome_spawn", "instance_insert_many"),
        rows(i("parent", **EXECUTING)),
        lambda st, r: spawn(st, r, [new("c1"), new("c2")]),
        hold="parent",
        touch=HEARTBEAT,
        expect=lambda o: (
            o.result is True
            and o.status("parent") == "waiting"
            and o.row("parent")["pending_children"] == 2
            and [o.row(c)["parent_id"] for c in inserted(o)] == ["parent", "parent"]
        ),
    ),
    Case(
        "outcome_spawn.consumed_signal_held",
        ("outcome_spawn",),
        rows(i("parent", **EXECUTING), sig("seen", "parent"), sig("late", "parent")),
        lambda st, r: spawn(st, r, [new("c1")], consumed=["seen"]),
        hold="seen",
        expect=lambda o: o.result is True and list(o.signals) == ["late"],
    ),
    Case(
        "outcome_spawn.child_key_held",
        ("outcome_spawn", "instance_insert_many"),
        rows(i("holder", key="c1"), i("parent", **EXECUTING)),
        lambda st, r: spawn(st, r, [new("c1"), new("c2")]),
        hold="holder",
        expect=lambda o: (
            o.result == ["duplicate", ["holder"]]
            and o.status("parent") == "executing"
            and inserted(o) == []
        ),
    ),
    Case(
        "outcome_spawn.claim_lost",
        ("outcome_spawn",),
        rows(i("parent", **EXECUTING)),
        lambda st, r: spawn(st, r, [new("c1")]),
        hold="parent",
        touch=CLAIM_LOST,
        expect=lambda o: o.result is False and inserted(o) == [],
    ),
    # instance_claim: rows SKIP LOCKED; buckets locked (waited for) in key order.
    Case(
        "instance_claim.row_held",
        ("instance_claim",),
        rows(i("a"), i("b", run_at=T - timedelta(minutes=2))),
        claim,
        hold="a",
        skips=True,
        skipped=lambda o: [r["id"] for r in o.result] == ["b"] and o.status("a") == "available",
        expect=lambda o: o.status("a") == o.status("b") == "executing",
    ),
    # instance_claim_lean: rows SKIP LOCKED; a held row with a key is passed over (as the
    # general claim passes over it), and claimed by the general claim once free.
    Case(
        "instance_claim_lean.row_held",
        ("instance_claim_lean",),
        rows(i("a"), i("b", run_at=T - timedelta(minutes=2))),
        claim_lean,
        hold="a",
        skips=True,
        skipped=lambda o: [r["id"] for r in o.result] == ["b"] and o.status("a") == "available",
        expect=lambda o: o.status("a") == o.status("b") == "executing",
    ),
    Case(
        "instance_claim_lean.keyed_row_held",
        ("instance_claim_lean", "instance_claim"),
        rows(i("keyed", concurrency_key="ck", run_at=T - timedelta(minutes=2)), i("plain")),
        claim_lean,
        hold="keyed",
        skips=True,
        skipped=lambda o: (
            [r["id"] for r in o.result] == ["plain"] and o.status("keyed") == "available"
        ),
        expect=lambda o: o.status("keyed") == o.status("plain") == "executing",
    ),
    Case(
        "instance_claim.concurrency_head_held",
        ("instance_claim",),
        rows(
            i("head", concurrency_key="ck", run_at=T - timedelta(minutes=2)),
            i("next", concurrency_key="ck"),
        ),
        claim,
        hold="head",
        skips=True,
        skipped=lambda o: o.result == [] and o.status("head") == "available",
        expect=lambda o: o.status("head") == "executing" and o.status("next") == "available",
    ),
    Case(
        "instance_claim.bucket_held",
        ("instance_claim",),
        rows(
            cfg("config", "m.api"),
            bucket("bucket", "m.api", "p", tokens=5, refreshed_at=T - timedelta(seconds=1)),
            i("r", rate_limit="m.api", rate_partition="p"),
        ),
        claim,
        hold="bucket",
        expect=lambda o: o.status("r") == "executing" and o.buckets[0]["granted"] == 1,
    ),
    Case(
        "instance_claim.rate_limited_row_held",
        ("instance_claim",),
        rows(
            cfg("config", "m.api"),
            bucket("bucket", "m.api", "p", tokens=5, refreshed_at=T),
            i("r1", rate_limit="m.api", rate_partition="p", run_at=T - timedelta(minutes=2)),
            i("r2", rate_limit="m.api", rate_partition="p"),
        ),
        claim,
        hold="r1",
        skips=True,
        skipped=lambda o: [r["id"] for r in o.result] == ["r2"] and o.buckets[0]["tokens"] == 4,
        # `granted` is what the last claim took: 2 in one run, 1 and 1 in two; the tokens
        # left are compared, so a held row is never charged.
        ignore=("buckets.granted",),
        expect=lambda o: (
            o.status("r1") == o.status("r2") == "executing" and o.buckets[0]["tokens"] == 3
        ),
    ),
    # instance_release: guarded UPDATE (waits).
    Case(
        "instance_release.row_held",
        ("instance_release",),
        rows(i("r", **EXECUTING)),
        lambda st, r: st.instance_release(id=r.id("r"), locked_by=TOKEN, now=T),
        hold="r",
        touch=HEARTBEAT,
        expect=lambda o: o.result is True and o.status("r") == "available",
    ),
    Case(
        "instance_release.claim_lost",
        ("instance_release",),
        rows(i("r", **EXECUTING)),
        lambda st, r: st.instance_release(id=r.id("r"), locked_by=TOKEN, now=T),
        hold="r",
        touch=CLAIM_LOST,
        expect=lambda o: o.result is False and o.status("r") == "executing",
    ),
    # instance_cancel: locks the row and its parent (waits), cascades in instances_ended.
    Case(
        "instance_cancel.top_held",
        ("instance_cancel",),
        rows(i("r", status="awaiting", await_names=["go"], await_deadline=T + LEASE)),
        lambda st, r: st.instance_cancel(id=r.id("r"), now=T),
        hold="r",
        reaches=("instances_ended",),
        expect=lambda o: o.result == 0 and o.status("r") == "cancelled",
    ),
    Case(
        "instance_cancel.executing_held",
        ("instance_cancel",),
        rows(i("r", **EXECUTING)),
        lambda st, r: st.instance_cancel(id=r.id("r"), now=T),
        hold="r",
        touch=HEARTBEAT,
        expect=lambda o: o.status("r") == "cancelled" and o.row("r")["locked_by"] is None,
    ),
    Case(
        "instance_cancel.child_held",
        ("instance_cancel",),
        rows(
            i("parent", status="waiting", pending=1),
            i("child", status="awaiting", parent="parent", await_names=["go"]),
        ),
        lambda st, r: st.instance_cancel(id=r.id("child"), now=T),
        hold="child",
        expect=lambda o: (
            o.status("child") == "cancelled"
            and o.status("parent") == "available"
            and o.row("parent")["pending_children"] == 0
        ),
    ),
    Case(
        "instance_cancel.child_parent_held",
        ("instance_cancel",),
        rows(
            i("parent", status="waiting", pending=1),
            i("child", status="awaiting", parent="parent", await_names=["go"]),
        ),
        lambda st, r: st.instance_cancel(id=r.id("child"), now=T),
        hold="parent",
        expect=lambda o: o.status("child") == "cancelled" and o.status("parent") == "available",
    ),
    Case(
        "instance_cancel.cascade_child_held",
        ("instance_cancel",),
        rows(
            i("top", status="waiting", pending=2),
            i("c1", status="awaiting", parent="top", await_names=["go"]),
            i("c2", parent="top", **EXECUTING),
        ),
        lambda st, r: st.instance_cancel(id=r.id("top"), now=T),
        hold="c2",
        touch=HEARTBEAT,
        reaches=("instances_ended",),
        expect=lambda o: o.result == 2 and o.status("c1") == o.status("c2") == "cancelled",
    ),
    Case(
        "instance_cancel.cascade_grandchild_held",
        ("instance_cancel",),
        rows(
            i("top", status="waiting", pending=1),
            i("child", status="waiting", parent="top", pending=1),
            i("grandchild", status="awaiting", parent="child", await_names=["go"]),
        ),
        lambda st, r: st.instance_cancel(id=r.id("top"), now=T),
        hold="grandchild",
        reaches=("instances_ended",),
        expect=lambda o: o.result == 2 and o.status("grandchild") == "cancelled",
    ),
    Case(
        "instance_cancel.cascade_child_ends_meanwhile",
        ("instance_cancel",),
        rows(i("top", status="waiting", pending=1), i("child", parent="top", **EXECUTING)),
        lambda st, r: st.instance_cancel(id=r.id("top"), now=T),
        hold="child",
        touch=ENDED,
        reaches=("instances_ended",),
        expect=lambda o: o.result == 0 and o.status("child") == "done",
    ),
    Case(
        "instance_cancel.cascade_spawn_meanwhile",
        ("instance_cancel",),
        rows(i("top", status="waiting", pending=1), i("child", parent="top", **EXECUTING)),
        lambda st, r: st.instance_cancel(id=r.id("top"), now=T),
        hold="child",
        # the child's spawn commits while the cascade waits: its children must go too
        touch="status = 'waiting', pending_children = 1, locked_by = NULL, locked_until = NULL",
        also=SPAWNED,
        reaches=("instances_ended",),
        expect=lambda o: o.result == 2 and o.status("new1") == "cancelled",
    ),
    Case(
        "instance_cancel.inbox_signal_held",
        ("instance_cancel",),
        rows(i("r", status="awaiting", await_names=["go"]), sig("s", "r", "other")),
        lambda st, r: st.instance_cancel(id=r.id("r"), now=T),
        hold="s",
        reaches=("instances_ended",),
        expect=lambda o: o.status("r") == "cancelled" and o.signals == {},
    ),
    Case(
        "instance_cancel.ended_held",
        ("instance_cancel",),
        rows(i("r", status="done", finished_at=T - timedelta(hours=1))),
        lambda st, r: st.instance_cancel(id=r.id("r"), now=T),
        hold="r",
        may_wait=True,
        expect=lambda o: o.result is None and o.status("r") == "done",
    ),
    Case(
        "instance_cancel.ends_meanwhile",
        ("instance_cancel",),
        rows(i("r", **EXECUTING)),
        lambda st, r: st.instance_cancel(id=r.id("r"), now=T),
        hold="r",
        touch=ENDED,
        expect=lambda o: o.result is None and o.status("r") == "done",
    ),
    # outcome_batch: rows and the parents they count down SKIP LOCKED (busy, sent again);
    # the consumed signals and the cascade's descendants are waited for.
    *outcome_cases("outcome_batch"),
    *outcome_cases("outcome_plain"),
    Case(
        "outcome_batch.mixed_one_held",
        ("outcome_batch",),
        rows(
            *(i(kind, **EXECUTING) for kind in KINDS),
            i("parent", status="waiting", pending=1),
            i("child", parent="parent", **EXECUTING),
        ),
        mixed,
        hold="park",
        skips=True,
        skipped=lambda o: o.result[1] == ["park"] and len(o.result[0]) == len(KINDS),
        touch=HEARTBEAT,
        reaches=("instances_parked", "instances_ended"),
        expect=lambda o: (
            len(o.result[0]) == len(KINDS) + 1
            and [o.status(kind) for kind in KINDS] == [s for _, s, _ in KINDS.values()]
            and o.status("parent") == "available"
        ),
    ),
    Case(
        "outcome_plain.mixed_one_held",
        ("outcome_plain",),
        rows(
            *(i(kind, **EXECUTING) for kind in GROUP_COMMITS["outcome_plain"][1]),
            i("parent", status="waiting", pending=1),
            i("child", parent="parent", **EXECUTING),
        ),
        plain_mixed,
        hold="done",
        skips=True,
        skipped=lambda o: o.result[1] == ["done"] and len(o.result[0]) == 4,
        touch=HEARTBEAT,
        reaches=("instances_ended",),
        expect=lambda o: (
            len(o.result[0]) == 5
            and [o.status(k) for k in ("goto", "continue", "done", "stop")]
            == ["available", "executing", "done", "failed"]
            and o.status("parent") == "available"
        ),
    ),
    Case(
        "outcome_batch.park_woken_by_signal",
        ("outcome_batch",),
        rows(i("r", **EXECUTING), sig("s", "r")),
        lambda st, r: batch(st, [park(r.id("r"), TOKEN, "wait", ["go"], timeout=LEASE)]),
        hold="r",
        skips=True,
        skipped=busy("r"),
        reaches=("instances_parked",),
        expect=lambda o: o.result[0] == {"r": False} and o.status("r") == "available",
    ),
    Case(
        "outcome_batch.park_woken_by_deadline",
        ("outcome_batch",),
        rows(i("r", await_deadline=T - timedelta(minutes=1), **EXECUTING)),
        lambda st, r: batch(
            st, [park(r.id("r"), TOKEN, "wait", ["go"], timeout=LEASE, keep_deadline=True)]
        ),
        hold="r",
        skips=True,
        skipped=busy("r"),
        reaches=("instances_parked",),
        expect=lambda o: o.result[0] == {"r": True} and o.row("r")["timed_out"] is True,
    ),
    Case(
        "outcome_batch.park_consumed_signal_held",
        ("outcome_batch",),
        rows(i("r", **EXECUTING), sig("seen", "r"), sig("late", "r", "other")),
        lambda st, r: batch(
            st,
            [
                park(
                    r.id("r"),
                    TOKEN,
                    "wait",
                    ["go"],
                    timeout=LEASE,
                    seen=r.id("seen"),
                    consumed=[r.id("seen")],
                )
            ],
        ),
        hold="seen",
        reaches=("instances_parked",),
        expect=lambda o: o.status("r") == "awaiting" and list(o.signals) == ["late"],
    ),
    Case(
        "outcome_batch.goto_consumed_signal_held",
        ("outcome_batch",),
        rows(i("r", **EXECUTING), sig("seen", "r"), sig("late", "r")),
        lambda st, r: batch(st, [{**move(r.id("r"), TOKEN, "next"), "consumed": [r.id("seen")]}]),
        hold="seen",
        expect=lambda o: o.status("r") == "available" and list(o.signals) == ["late"],
    ),
    *(
        Case(
            f"outcome_plain.{kind}_consumed_signal_held",
            ("outcome_plain",),
            rows(i("r", **EXECUTING), sig("seen", "r"), sig("late", "r")),
            lambda st, r, lease=lease: plain(
                st, [{**move(r.id("r"), TOKEN, "next", lease=lease), "consumed": [r.id("seen")]}]
            ),
            hold="seen",
            expect=lambda o, status=status: o.status("r") == status and list(o.signals) == ["late"],
        )
        for kind, lease, status in (
            ("goto", None, "available"),
            ("continue", LEASE, "executing"),
        )
    ),
    Case(
        # a row the commit could not take keeps the signals its step saw, for the resend
        "outcome_plain.consumed_one_held",
        ("outcome_plain",),
        rows(i("a", **EXECUTING), i("b", **EXECUTING), sig("sa", "a"), sig("sb", "b")),
        lambda st, r: plain(
            st,
            [{**move(r.id(x), TOKEN, "next"), "consumed": [r.id(f"s{x}")]} for x in ("a", "b")],
        ),
        hold="a",
        skips=True,
        skipped=lambda o: o.result == [{"b": None}, ["a"]] and list(o.signals) == ["sa"],
        touch=HEARTBEAT,
        expect=lambda o: o.status("a") == o.status("b") == "available" and o.signals == {},
    ),
    Case(
        # a claim lost meanwhile: the commit is stale, and the new owner's step will see the
        # signal the stale step saw
        "outcome_plain.consumed_claim_lost",
        ("outcome_plain",),
        rows(i("a", **EXECUTING), i("b", **EXECUTING), sig("sa", "a"), sig("sb", "b")),
        lambda st, r: plain(
            st,
            [{**move(r.id(x), TOKEN, "next"), "consumed": [r.id(f"s{x}")]} for x in ("a", "b")],
        ),
        hold="a",
        skips=True,
        skipped=lambda o: o.result == [{"b": None}, ["a"]] and list(o.signals) == ["sa"],
        touch=CLAIM_LOST,
        expect=lambda o: (
            o.result == [{"b": None}, []]
            and o.status("a") == "executing"
            and list(o.signals) == ["sa"]
        ),
    ),
    *end_cases("outcome_batch"),
    *end_cases("outcome_plain"),
    # signal_deliver: locks the live target (waits); flips an awaiting one.
    Case(
        "signal_deliver.wakes",
        ("signal_deliver",),
        rows(i("r", status="awaiting", await_names=["go"])),
        lambda st, r: deliver(st, r),
        hold="r",
        expect=lambda o: o.result["woke"] is True and o.status("r") == "available",
    ),
    Case(
        "signal_deliver.local_wake",
        ("signal_deliver",),
        rows(i("r", status="awaiting", await_names=["go"]), sig("s", "r", "other")),
        lambda st, r: deliver(st, r, local=True),
        hold="r",
        expect=lambda o: (
            o.result["claimed"] is True
            and o.result["inbox_ids"] == ["s", "signal1"]
            and o.row("r")["locked_by"] == TOKEN
        ),
    ),
    Case(
        "signal_deliver.by_key",
        ("signal_deliver",),
        rows(
            i("ended", key="k1", status="done", finished_at=T - timedelta(hours=1)),
            i("r", key="k1", status="awaiting", await_names=["go"]),
        ),
        lambda st, r: deliver(st, r, by_key=True),
        hold="r",
        expect=lambda o: o.result["instance_id"] == "r" and o.status("r") == "available",
    ),
    Case(
        "signal_deliver.executing",
        ("signal_deliver",),
        rows(i("r", **EXECUTING)),
        lambda st, r: deliver(st, r),
        hold="r",
        touch=HEARTBEAT,
        expect=lambda o: o.result["woke"] is False and list(o.signals) == ["signal1"],
    ),
    Case(
        "signal_deliver.parks_meanwhile",
        ("signal_deliver",),
        rows(i("r", **EXECUTING)),
        lambda st, r: deliver(st, r),
        hold="r",
        touch="status = 'awaiting', await_names = ARRAY['go'], locked_by = NULL, "
        "locked_until = NULL",
        expect=lambda o: o.result["woke"] is True and o.status("r") == "available",
    ),
    Case(
        "signal_deliver.awaits_other_meanwhile",
        ("signal_deliver",),
        rows(i("r", status="awaiting", await_names=["go"])),
        lambda st, r: deliver(st, r),
        hold="r",
        # a reawait for another name committed first: the signal waits in the inbox
        touch="await_names = ARRAY['other']",
        expect=lambda o: o.result["woke"] is False and o.status("r") == "awaiting",
    ),
    Case(
        "signal_deliver.woken_meanwhile",
        ("signal_deliver",),
        rows(i("r", status="awaiting", await_names=["go"])),
        lambda st, r: deliver(st, r),
        hold="r",
        touch="status = 'available', timed_out = true",
        expect=lambda o: o.result["woke"] is False and o.row("r")["timed_out"] is True,
    ),
    Case(
        "signal_deliver.ends_meanwhile",
        ("signal_deliver",),
        rows(i("r", status="awaiting", await_names=["go"])),
        lambda st, r: deliver(st, r),
        hold="r",
        touch=ENDED,
        expect=lambda o: o.result is None and o.signals == {},
    ),
    # Maintenance: SKIP LOCKED, except the cascade of an instance the reaper fails.
    Case(
        "await_expire.row_held",
        ("await_expire",),
        rows(i("r", status="awaiting", await_names=["go"], await_deadline=T - LEASE)),
        lambda st, r: st.await_expire(now=T, limit=100),
        hold="r",
        skips=True,
        skipped=lambda o: o.result == [] and o.status("r") == "awaiting",
        expect=lambda o: o.status("r") == "available" and o.row("r")["timed_out"] is True,
    ),
    Case(
        "await_expire.woken_meanwhile",
        ("await_expire",),
        rows(i("r", status="awaiting", await_names=["go"], await_deadline=T - LEASE)),
        lambda st, r: st.await_expire(now=T, limit=100),
        hold="r",
        # a signal woke it first (delivery leaves the deadline): no timeout any more
        touch="status = 'available', run_at = updated_at",
        skips=True,
        skipped=lambda o: o.result == [],
        expect=lambda o: o.result == [] and o.row("r")["timed_out"] is False,
    ),
    Case(
        "lease_extend.row_held",
        ("lease_extend",),
        rows(i("r", **EXECUTING)),
        lambda st, r: st.lease_extend(
            claims=[(r.id("r"), TOKEN)], workflows=["m.flow"], leases=[LEASE], now=T
        ),
        hold="r",
        skips=True,
        skipped=lambda o: o.result == 0,
        touch=HEARTBEAT,
        expect=lambda o: (
            o.result == 1 and o.row("r")["locked_until"].startswith("2030-01-01T00:00:30")
        ),
    ),
    Case(
        "lease_rescue.row_held",
        ("lease_rescue",),
        rows(i("r", **EXPIRED)),
        lambda st, r: st.lease_rescue(now=T, limit=100),
        hold="r",
        skips=True,
        skipped=lambda o: o.result == [] and o.status("r") == "executing",
        expect=lambda o: o.status("r") == "available" and o.row("r")["attempt"] == 1,
    ),
    Case(
        "lease_rescue.dying_child_parent_held",
        ("lease_rescue",),
        rows(
            i("parent", status="waiting", pending=1),
            i("child", parent="parent", attempt=4, max_attempts=5, **EXPIRED),
        ),
        lambda st, r: st.lease_rescue(now=T, limit=100),
        hold="parent",
        skips=True,
        skipped=lambda o: o.result == [] and o.status("child") == "executing",
        reaches=("instances_ended",),
        expect=lambda o: o.status("child") == "failed" and o.status("parent") == "available",
    ),
    Case(
        "lease_rescue.dying_parent_child_held",
        ("lease_rescue",),
        rows(
            i("parent", attempt=4, max_attempts=5, **EXPIRED),
            i("child", status="awaiting", parent="parent", await_names=["go"]),
        ),
        lambda st, r: st.lease_rescue(now=T, limit=100),
        hold="child",
        reaches=("instances_ended",),
        expect=lambda o: o.status("parent") == "failed" and o.status("child") == "cancelled",
    ),
    Case(
        "claims_reclaim.row_held",
        ("claims_reclaim",),
        rows(i("r", **EXPIRED)),
        lambda st, r: st.claims_reclaim(prefix="m:m@mhost-", now=T, limit=100),
        hold="r",
        skips=True,
        skipped=lambda o: o.result == [] and o.status("r") == "executing",
        expect=lambda o: o.status("r") == "available" and o.row("r")["attempt"] == 1,
    ),
    Case(
        "terminal_sweep.row_held",
        ("terminal_sweep",),
        rows(i("r", status="done", finished_at=T - timedelta(days=30))),
        lambda st, r: st.terminal_sweep(
            now=T,
            retention=timedelta(days=7),
            after_finished_at=None,
            after_id=None,
            limit=100,
        ),
        hold="r",
        skips=True,
        skipped=lambda o: o.result["deleted"] == 0 and "r" in o.instances,
        merge=sweep_merge,
        expect=lambda o: o.result["deleted"] == 1 and o.instances == {},
    ),
    Case(
        "terminal_sweep.child_of_live_parent",
        ("terminal_sweep",),
        rows(
            i("parent", status="waiting", pending=1),
            i("child", parent="parent", status="done", finished_at=T - timedelta(days=30)),
        ),
        lambda st, r: st.terminal_sweep(
            now=T,
            retention=timedelta(days=7),
            after_finished_at=None,
            after_id=None,
            limit=100,
        ),
        hold="child",
        skips=True,
        skipped=lambda o: o.result["deleted"] == 0,
        merge=sweep_merge,
        expect=lambda o: o.result["deleted"] == 0 and o.status("child") == "done",
    ),
    Case(
        "bucket_sweep.row_held",
        ("bucket_sweep",),
        rows(
            cfg("config", "m.api"),
            bucket("bucket", "m.api", "p", tokens=10, refreshed_at=T - timedelta(hours=1)),
        ),
        lambda st, r: st.bucket_sweep(now=T, after_name="l", after_partition="", limit=100),
        hold="bucket",
        skips=True,
        skipped=lambda o: o.result["deleted"] == 0 and len(o.buckets) == 1,
        merge=sweep_merge,
        expect=lambda o: o.result["deleted"] == 1 and o.buckets == [],
    ),
    # Rate configs: written in name order (waits); swept SKIP LOCKED.
    Case(
        "rate_config_write.row_held",
        ("rate_config_write",),
        rows(cfg("config", "m.api", allowed=5)),
        lambda st, r: st.rate_config_write(
            names=["m.api"], allowed=[20], per_ms=[60000], burst=[20], now=T
        ),
        hold="config",
        expect=lambda o: o.result[0]["old_allowed"] == 5 and o.configs[0]["allowed"] == 20,
    ),
    Case(
        "rate_config_refresh.row_held",
        ("rate_config_refresh",),
        rows(cfg("config", "m.api", allowed=5, updated_at=T - timedelta(hours=1))),
        lambda st, r: st.rate_config_refresh(
            names=["m.api"], allowed=[20], per_ms=[60000], burst=[20], now=T
        ),
        hold="config",
        expect=lambda o: (
            o.configs[0]["allowed"] == 5
            and o.configs[0]["updated_at"].startswith("2030-01-01T00:00:00")
        ),
    ),
    Case(
        "rate_config_sweep.row_held",
        ("rate_config_sweep",),
        rows(cfg("config", "m.old", updated_at=T - timedelta(hours=2))),
        lambda st, r: st.rate_config_sweep(now=T, ttl=timedelta(hours=1), limit=100),
        hold="config",
        skips=True,
        skipped=lambda o: o.result == 0 and len(o.configs) == 1,
        expect=lambda o: o.result == 1 and o.configs == [],
    ),
    # instance_retry: locks the instance, then its parent (waits).
    Case(
        "instance_retry.top_held",
        ("instance_retry",),
        rows(i("r", status="failed", finished_at=T - timedelta(hours=1), error='{"t": 1}')),
        lambda st, r: st.instance_retry(id=r.id("r"), now=T),
        hold="r",
        expect=lambda o: o.result["retried"] == "r" and o.status("r") == "available",
    ),
    Case(
        "instance_retry.child_held",
        ("instance_retry",),
        rows(
            i("parent", status="waiting", pending=1),
            i("failed", parent="parent", status="failed", finished_at=T - timedelta(hours=1)),
            i("live", parent="parent", status="awaiting", await_names=["go"]),
        ),
        lambda st, r: st.instance_retry(id=r.id("failed"), now=T),
        hold="failed",
        expect=lambda o: (
            o.result["retried"] == "failed" and o.row("parent")["pending_children"] == 2
        ),
    ),
    Case(
        "instance_retry.child_parent_held",
        ("instance_retry",),
        rows(
            i("parent", status="waiting", pending=1),
            i("failed", parent="parent", status="failed", finished_at=T - timedelta(hours=1)),
            i("live", parent="parent", status="awaiting", await_names=["go"]),
        ),
        lambda st, r: st.instance_retry(id=r.id("failed"), now=T),
        hold="parent",
        expect=lambda o: (
            o.result["retried"] == "failed" and o.row("parent")["pending_children"] == 2
        ),
    ),
    Case(
        "instance_retry.parent_moves_on_meanwhile",
        ("instance_retry",),
        rows(
            i("parent", status="waiting", pending=1),
            i("failed", parent="parent", status="failed", finished_at=T - timedelta(hours=1)),
            i("live", parent="parent", status="awaiting", await_names=["go"]),
        ),
        lambda st, r: st.instance_retry(id=r.id("failed"), now=T),
        hold="parent",
        # the last live child ended: the parent no longer waits for this spawn
        touch="status = 'available', pending_children = 0",
        expect=lambda o: o.result["retried"] is None and o.row("parent")["pending_children"] == 0,
    ),
    Case(
        "instance_retry.not_failed_held",
        ("instance_retry",),
        rows(i("r", status="awaiting", await_names=["go"])),
        lambda st, r: st.instance_retry(id=r.id("r"), now=T),
        hold="r",
        expect=lambda o: o.result["retried"] is None and o.result["status"] == "awaiting",
    ),
    Case(
        "instance_retry.retried_meanwhile",
        ("instance_retry",),
        rows(i("r", status="failed", finished_at=T - timedelta(hours=1))),
        lambda st, r: st.instance_retry(id=r.id("r"), now=T),
        hold="r",
        touch="status = 'available', finished_at = NULL",
        expect=lambda o: o.result["retried"] is None and o.result["status"] == "available",
    ),
    # bulk pages (sql/bulk.sql): rows and parents SKIP LOCKED (busy, done again); a page's
    # cascade waits for descendants as a single cancel's does.
    *bulk_cases(),
    # instance_rewind: locks the parent and the instance in id order (waits), as a retry.
    *rewind_cases(),
]

KNOWN: dict[tuple[str, str, str], str] = {}
"""(case, plan, size) known to fail, with why: strict xfails, so a fix must flip them.

Empty since the cancel's lock shape was fixed (`instance_cancel.child_held` lost the child
under 8 of the 14 plan/size pairs when the ids were locked through `IN (... UNION ALL ...)`).
"""


def params() -> list[Any]:
    out = []
    for case in CASES:
        for size in SIZES:
            for plan in PLANS:
                marks = []
                reason = KNOWN.get((case.id, plan, size))
                if reason is not None:
                    marks.append(pytest.mark.xfail(strict=True, reason=reason))
                out.append(
                    pytest.param(case, plan, size, id=f"{case.id}-{plan}-{size}", marks=marks)
                )
    return out


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def schemas(gendurable_dsn: str) -> AsyncIterator[Schemas]:
    made = await create_schemas(gendurable_dsn, f"t_matrix_{secrets.token_hex(4)}")
    yield made
    await drop_schemas(made)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(("case", "plan", "size"), params())
async def test_interleaving(schemas: Schemas, case: Case, plan: str, size: str) -> None:
    runs = await run_case(schemas, case, plan, size)

    control = runs.control
    assert case.expect(control), f"the control run did not do what {case.id} expects: {control}"
    if case.skipped is not None:
        assert runs.first is not None
        assert case.skipped(runs.first), f"the first run did not skip the held row: {runs.first}"
    control, interfered = comparable(control, case), comparable(runs.interfered, case)
    assert interfered.result == control.result
    assert interfered.instances == control.instances
    assert interfered.signals == control.signals
    assert interfered.buckets == control.buckets
    assert interfered.configs == control.configs
    assert await schemas.filler_fingerprint(size) == schemas.filler[size]


# -- which statements need a case ---------------------------------------------------------

TABLES = ("instances", "signals", "rate_buckets", "rate_configs")
WRITERS = ("instances_ended", "instances_parked")

_SCHEDULES = "locks or writes only `schedules` (tests/maintenance: held rows, racing processes)"
_PAUSES = (
    "writes only `paused_queues`; what it locks is the queue's advisory lock, which the "
    "statements starting steps try shared (tests/db/test_pause_races.py: claims held mid-way, "
    "claims and local starts racing a pause)"
)

EXEMPT: dict[str, str] = {
    "node_register": "writes only `nodes`, which no statement locks together with instances",
    "node_beat": "writes only `nodes`, which no statement locks together with instances",
    "node_prune": "writes only `nodes`, which no statement locks together with instances",
    "node_remove": "writes only `nodes`, which no statement locks together with instances",
    "schedule_declare": _SCHEDULES,
    "schedule_first": _SCHEDULES,
    "schedule_refresh": _SCHEDULES,
    "schedule_claim_due": _SCHEDULES,
    "schedule_advance": _SCHEDULES,
    "schedule_disable": _SCHEDULES,
    "schedule_pause": _SCHEDULES,
    "queue_pause": _PAUSES,
    "queue_resume": _PAUSES,
    "migration_record": "writes only `migrations` and `meta`, under the migration lock",
}
"""Statements that lock or write rows and need no case, each with why."""

_WRITE = re.compile(
    r"\b(?:UPDATE|DELETE\s+FROM|INSERT\s+INTO)\s+__schema__\.(\w+)|\bFOR\s+(?:NO\s+KEY\s+)?UPDATE\b"
    r"|\bFOR\s+(?:KEY\s+)?SHARE\b|__schema__\.(instances_ended|instances_parked)\s*\(",
    re.IGNORECASE,
)


def _code(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


def writing_statements() -> dict[str, set[str]]:
    """Each named statement that locks rows, writes a table or calls a writing function:
    what it touches (`lock` for a row lock)."""
    found: dict[str, set[str]] = {}
    for name, statement in statements("__schema__").items():
        code = _code(statement.sql.replace('"__schema__"', "__schema__"))
        touched = set()
        for match in _WRITE.finditer(code):
            touched.add(match.group(1) or match.group(2) or "lock")
        if touched:
            found[name] = touched
    return found


def writing_functions() -> set[str]:
    """The schema's functions whose body writes or locks rows."""
    folder = resources.files("gendurable.sql").joinpath("migrations")
    found = set()
    for entry in folder.iterdir():
        text = _code(entry.read_text())
        for m in re.finditer(
            r"CREATE OR REPLACE FUNCTION __schema__\.(\w+)\(.*?\$fn\$(.*?)\$fn\$", text, re.S
        ):
            if re.search(r"\b(UPDATE|DELETE\s+FROM|INSERT\s+INTO|FOR\s+UPDATE)\b", m.group(2)):
                found.add(m.group(1))
    return found


def test_every_writing_statement_has_a_case() -> None:
    writers = writing_statements()
    covered = {name for case in CASES for name in case.statements}
    missing = sorted(set(writers) - covered - set(EXEMPT))
    assert missing == [], f"statements with no interleaving case and no exemption: {missing}"
    assert sorted(covered - set(writers)) == [], "cases name statements that write nothing"
    assert sorted(set(EXEMPT) - set(writers)) == [], "exempt statements that write nothing"
    assert sorted(set(EXEMPT) & covered) == []
    # Exemptions are for other tables only: every statement that touches the matrix's tables
    # has a case.
    for name in EXEMPT:
        assert not writers[name] & {*TABLES, *WRITERS}, name


def test_every_writing_function_is_reached_by_a_case() -> None:
    functions = writing_functions()
    assert functions == set(WRITERS)
    reached = {f for case in CASES for f in case.reaches}
    assert reached == functions
    callers = writing_statements()
    for case in CASES:
        for f in case.reaches:
            assert any(f in callers.get(s, set()) for s in case.statements), (case.id, f)


def test_case_ids_are_unique_and_name_their_statement() -> None:
    ids = [case.id for case in CASES]
    assert len(ids) == len(set(ids))
    for case in CASES:
        assert case.id.split(".")[0] == case.statements[0], case.id
        # a statement that skips the held row says what its first run must show
        assert case.skips == (case.skipped is not None), case.id
