"""The engine's statements: starts, the claim, commits, spawns, signals, lookups.

Every method runs one named statement (`sql/instances.sql`, `signals.sql`, `explain.sql`,
`rate_configs.sql`, and the heartbeat and startup reclaim of `maintenance.sql`) through the
`Database`, with keyword arguments, and returns typed rows (`db/rows.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NotRequired, Protocol, TypedDict

import asyncpg
import msgspec
from typing_extensions import Unpack

from ..entries import InstanceColumns
from ..errors import DuplicateKey
from .pool import Database
from .rows import (
    CancelledInstance,
    CommittedOutcome,
    CreatedInstance,
    Delivery,
    DueQueue,
    ExplainedInstance,
    InboxSignal,
    InsertedInstance,
    InstanceRow,
    InstanceStatus,
    KeyHolder,
    LoadedChild,
    PickedRow,
    PlainOutcome,
    ReclaimedClaim,
    ReplacedRateConfig,
    UnknownStep,
    WokenInstance,
)


class StepLimitValue(Protocol):
    """The rate limit a step takes (`entries.StepLimit`)."""

    @property
    def name(self) -> str | None: ...
    @property
    def partition(self) -> str | None: ...
    @property
    def weight(self) -> int: ...


class NewInstance(Protocol):
    """One instance to insert, every column encoded (`entries.NewRow`)."""

    @property
    def workflow(self) -> str: ...
    @property
    def queue(self) -> str: ...
    @property
    def step(self) -> str: ...
    @property
    def state(self) -> bytes: ...
    @property
    def max_attempts(self) -> int: ...
    @property
    def priority(self) -> int: ...
    @property
    def run_at(self) -> datetime | None: ...
    @property
    def delay(self) -> timedelta | None: ...
    @property
    def key(self) -> str | None: ...
    @property
    def scope(self) -> tuple[str, ...]: ...
    @property
    def concurrency_key(self) -> str | None: ...
    @property
    def limit(self) -> StepLimitValue: ...
    @property
    def state_version(self) -> int: ...


RELEASED = "released"
"""`outcome_batch`'s answer for a kept-claim move whose queue is paused: committed as a
plain goto, the claim given up."""

_DELIVERY_HEAD = len(Delivery.__struct_fields__) - 1
"""`signal_deliver`'s columns before the woken instance's (`Delivery.woken`)."""


class _Stale(Exception):
    """The spawning parent's claim was lost: roll the spawn back."""


class _Held(Exception):
    """Children keys already held: roll the spawn back."""

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__(keys)
        self.keys = keys


GENERAL_CLAIMS = 16
"""Claims of a queue that run `instance_claim` at once after its lean claim met a row with a
concurrency key or a rate limit (so a queue of such rows is scanned twice once in 17 claims)."""


class EngineStore:
    """The statements the engine runs on one schema (its client, schedulers and commits)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.general_claims: dict[str, int] = {}
        """Per queue, how many claims still go straight to `instance_claim` (see there)."""

    # -- starts (instances.sql) --------------------------------------------------------------

    async def instance_insert(
        self,
        *,
        row: NewInstance,
        now: datetime | None,
        trace_context: str | None = None,
        locked_by: str | None = None,
        lease: timedelta | None = None,
    ) -> InsertedInstance:
        """Insert one instance or return the live one holding its key.

        With `locked_by` (and its `lease`) a created row is claimed by that worker already.
        """
        limit = row.limit
        values: dict[str, Any] = dict(
            workflow=row.workflow,
            queue=row.queue,
            step=row.step,
            state=row.state,
            max_attempts=row.max_attempts,
            priority=row.priority,
            run_at=row.run_at,
            delay=row.delay,
            scope=list(row.scope),
            concurrency_key=row.concurrency_key,
            rate_limit=limit.name,
            rate_partition=limit.partition,
            weight=limit.weight,
            trace_context=trace_context,
            state_version=row.state_version,
            locked_by=locked_by,
            lease=lease,
            now=now,
        )
        if row.key is None:
            # Nothing can conflict with it: a plain insert, not a speculative one.
            inserted = await self.db.row(InsertedInstance, "instance_insert_unkeyed", **values)
        else:
            inserted = await self.db.row(InsertedInstance, "instance_insert", key=row.key, **values)
        assert inserted is not None
        return inserted

    async def instance_insert_many(
        self,
        *,
        columns: InstanceColumns,
        parent_id: int | None,
        now: datetime | None,
        trace_context: str | None = None,
    ) -> list[CreatedInstance]:
        """Insert a batch given as parallel columns; the rows created.

        Rows whose key another instance holds are skipped (see `instances_holding_keys`).
        """
        return await self.db.rows(
            CreatedInstance,
            "instance_insert_many",
            **columns,
            parent_id=parent_id,
            now=now,
            trace_context=trace_context,
        )

    async def instances_holding_keys(
        self, *, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        """The id of the instance holding each (workflow, key)."""
        holders = await self.db.rows(
            KeyHolder,
            "instances_holding_keys",
            workflows=[w for w, _ in keys],
            keys=[k for _, k in keys],
        )
        return {(h.workflow, h.key): h.id for h in holders}

    # -- the claim (instances.sql) -----------------------------------------------------------

    async def queues_due(
        self, *, queues: Sequence[str], now: datetime | None
    ) -> tuple[list[str], set[str]]:
        """The queues among `queues` that hold due rows and are not paused; the paused ones."""
        found = await self.db.rows(DueQueue, "queues_due", queues=list(queues), now=now)
        return [q.queue for q in found if not q.paused], {q.queue for q in found if q.paused}

    async def instance_claim(
        self,
        *,
        queue: str,
        limit: int,
        locked_by: str,
        workflows: Sequence[str],
        steps: Sequence[str],
        leases: Sequence[timedelta],
        now: datetime | None,
        unknown_limit_wait: timedelta = timedelta(seconds=5),
        lean: bool = True,
    ) -> list[PickedRow]:
        """Claim up to `limit` due instances of `queue` whose (workflow, step) is known.

        `workflows`, `steps` and `leases` are parallel: each claim lasts its pair's lease.
        Every returned row has `go`: True for a claim, False for a row the rate limiter
        deferred (still available, `throttled`). A claim that met a concurrency key another
        claim took after this one's snapshot is retried at once (the unique index refused it).

        A front of plain rows (no concurrency key, no rate limit) is claimed by
        `instance_claim_lean`, which answers a row of NULLs when it met a row with a key or a
        limit: then, and for the next `GENERAL_CLAIMS` claims of the queue, `instance_claim`
        claims (at once, with `lean=False`). Either way the same rows are claimed.
        """
        values: dict[str, object] = {
            "queue": queue, "limit": limit, "locked_by": locked_by,
            "workflows": list(workflows), "steps": list(steps), "leases": list(leases),
            "now": now,
        }  # fmt: skip
        if lean and self.general_claims.get(queue, 0) > 0:
            self.general_claims[queue] -= 1
        elif lean:
            rows = await self.db.rows(PickedRow, "instance_claim_lean", **values)
            if not rows or rows[0].id is not None:
                return rows
            # A row with a key or a limit at the front: claim with the general statement,
            # and keep doing so for a while rather than scan twice per claim.
            self.general_claims[queue] = GENERAL_CLAIMS
        for attempt in range(3):
            try:
                return await self.db.rows(
                    PickedRow,
                    "instance_claim",
                    **values,
                    unknown_limit_wait=unknown_limit_wait,
                )
            except asyncpg.UniqueViolationError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def instances_unknown(
        self,
        *,
        queue: str,
        workflows: Sequence[str],
        steps: Sequence[str],
        now: datetime | None,
    ) -> list[UnknownStep]:
        """Due rows of `queue` whose (workflow, step) is not among the known pairs."""
        return await self.db.rows(
            UnknownStep,
            "instances_unknown",
            queue=queue,
            workflows=list(workflows),
            steps=list(steps),
            now=now,
        )

    async def children_load(
        self, *, parent_ids: Sequence[int], first_ids: Sequence[int]
    ) -> list[LoadedChild]:
        """The children of each parent's latest spawn (from its first child's id), in spawn
        order."""
        return await self.db.rows(
            LoadedChild, "children_load", parent_ids=list(parent_ids), first_ids=list(first_ids)
        )

    async def inbox_load(self, *, ids: Sequence[int]) -> list[InboxSignal]:
        """Pending signals of the given instances, by instance then arrival."""
        return await self.db.rows(InboxSignal, "inbox_load", ids=list(ids))

    async def instance_release(self, *, id: int, locked_by: str, now: datetime | None) -> bool:
        """Give a claim back untouched; False when it was no longer ours."""
        return await self.db.guarded("instance_release", id=id, locked_by=locked_by, now=now)

    # -- heartbeats and startup reclaim (maintenance.sql) ------------------------------------

    async def lease_extend(
        self,
        *,
        claims: Sequence[tuple[int, str]],
        workflows: Sequence[str],
        leases: Sequence[timedelta],
        now: datetime | None,
    ) -> int:
        """Extend each claim `(id, locked_by)` still held under that name by its workflow's
        lease (`workflows` and `leases` parallel); how many."""
        status = await self.db.execute(
            "lease_extend",
            ids=[id for id, _ in claims],
            names=[name for _, name in claims],
            workflows=list(workflows),
            leases=list(leases),
            now=now,
        )
        return int(status.rsplit(" ", 1)[-1])

    async def claims_reclaim(
        self, *, prefix: str, now: datetime | None, limit: int
    ) -> list[ReclaimedClaim]:
        """Release expired claims whose `locked_by` starts with `prefix`."""
        return await self.db.rows(
            ReclaimedClaim, "claims_reclaim", prefix=prefix, now=now, limit=limit
        )

    # -- outcomes (instances.sql) ------------------------------------------------------------

    async def outcome_batch(
        self,
        *,
        outcomes: bytes,
        states: Sequence[bytes | None],
        results: Sequence[bytes | None],
        errors: Sequence[bytes | None],
        now: datetime | None,
    ) -> tuple[dict[int, bool | str | None], set[int]]:
        """Commit many outcomes in one statement (group commit).

        `outcomes` is the JSON array of their plain fields (see the statement); `states`,
        `results` and `errors` are parallel to it (JSON bytes or None). Returns, for each id
        whose guard held, whether a park among them was woken at once by its passed deadline
        (True), by a signal already there (False), `RELEASED` for a kept-claim move committed
        as a plain goto because its queue is paused, or None; and the ids whose row (or
        parent) someone else had locked: not committed, to send again.
        """
        committed = await self.db.rows(
            CommittedOutcome,
            "outcome_batch",
            outcomes=outcomes,
            states=list(states),
            results=list(results),
            errors=list(errors),
            now=now,
        )
        return _answers(committed)

    async def outcome_plain(
        self, **batch: Unpack[PlainBatch]
    ) -> tuple[dict[int, bool | str | None], set[int]]:
        """Commit a batch of plain gotos, continues and finishes (no rate limit entered) in
        one statement, leaner than `outcome_batch`, which it answers like: for each id whose
        guard held, `RELEASED` for a kept-claim move committed as a plain goto because its
        queue is paused, else None; and the ids whose row (or parent) someone else had
        locked: not committed, to send again. The signals the gotos and continues consumed
        come as pairs (`consumed_instances[k]`, `consumed_signals[k]`): each is deleted if
        its instance's outcome committed here.
        """
        params = plain_outcome_params(**batch)
        committed = await self.db.rows(PlainOutcome, "outcome_plain", **params)
        return _answers(committed)

    async def outcome_spawn(
        self,
        *,
        id: int,
        locked_by: str,
        children: InstanceColumns | None,
        keys: Sequence[tuple[str, str]],
        then: str,
        state: bytes | None,
        state_version: int,
        max_attempts: int | None,
        consumed: Sequence[int],
        limit: StepLimitValue,
        now: datetime | None,
        trace_context: str | None = None,
    ) -> bool:
        """Insert the children and make the parent wait for them, in one transaction.

        The children go in first (key locks), then the parent's guarded update (row lock):
        the order every writer keeps. False when the claim was lost (nothing is inserted);
        `DuplicateKey` naming the key when a child's key is held (nothing is inserted).
        `keys` are the children's (workflow, key) pairs, to name the one held;
        `trace_context` the parent's, so that the children join its trace. A new `state` is
        written with `state_version`; `max_attempts` are those `then` may use (None: the row
        keeps its own).
        """
        count = len(children["states"]) if children else 0
        insert = self.db.sql["instance_insert_many"]
        park = self.db.sql["outcome_spawn"]
        timeout = self.db.timeout

        async def spawn(conn: Any) -> tuple[bool, list[tuple[str, str]]]:
            async with conn.transaction():
                first: int | None = None
                held: list[tuple[str, str]] = []
                if children and count:
                    created = [
                        CreatedInstance(*r)
                        for r in await conn.fetch(
                            insert.sql,
                            *insert.args(
                                **children, parent_id=id, now=now, trace_context=trace_context
                            ),
                            timeout=timeout,
                        )
                    ]
                    made = {(c.workflow, c.key) for c in created}
                    held = [k for k in keys if k not in made] if len(created) < count else []
                    first = min((c.id for c in created), default=None)
                parked = await conn.fetchrow(
                    park.sql,
                    *park.args(
                        id=id,
                        locked_by=locked_by,
                        step=then,
                        state=state,
                        state_version=state_version,
                        pending=count,
                        children_from=first,
                        consumed=list(consumed),
                        rate_limit=limit.name,
                        rate_partition=limit.partition,
                        weight=limit.weight,
                        max_attempts=max_attempts,
                        now=now,
                    ),
                    timeout=timeout,
                )
                # The guard is checked before the keys: a repeat whose first attempt committed
                # (its answer lost) finds its own children holding their keys, and is stale.
                if parked is None:
                    raise _Stale()
                if held:
                    raise _Held(held)
                return True, []

        try:
            await self.db.retrying(spawn, idempotent=True)
        except _Stale:
            return False
        except _Held as held:
            holders = await self.instances_holding_keys(keys=held.keys)
            (workflow, key), *_ = held.keys
            raise DuplicateKey(
                f"spawn: {workflow} key {key!r} is held by instance {holders.get((workflow, key))}"
                + (f" (and {len(held.keys) - 1} more keys)" if len(held.keys) > 1 else "")
                + "; nothing of the spawn was inserted",
                existing_id=holders.get((workflow, key)),
            ) from None
        return True

    # -- signals (signals.sql) ---------------------------------------------------------------

    async def signal_deliver(
        self,
        *,
        workflow: str,
        id: int | None,
        key: str | None,
        name: str,
        payload: bytes,
        now: datetime | None,
        trace_context: str | None = None,
        locked_by: str | None = None,
        lease: timedelta | None = None,
        queue: str | None = None,
        idempotency_key: str | None = None,
    ) -> Delivery | None:
        """Store a signal for the live instance with `id` or `key` (waking it if it awaits
        `name`); None when there is none (nothing is stored).

        With `locked_by` (a scheduler of `queue`, and its `lease`), an instance of that
        queue the signal wakes is claimed by it at once (`claimed`, `woken`), with its inbox,
        unless the queue is paused. With `idempotency_key`, a signal that key already stored
        for the instance comes back instead (`duplicate`, and `same`: whether its name and
        payload were these), storing nothing; such a delivery is also retried through
        connection failures, being safe to repeat (unless it may claim: a repeat would not
        return the claim).
        """
        statement = self.db.sql["signal_deliver"]
        args = statement.args(
            workflow=workflow,
            id=id,
            key=key,
            name=name,
            payload=payload,
            now=now,
            trace_context=trace_context,
            locked_by=locked_by,
            lease=lease,
            queue=queue,
            idempotency_key=idempotency_key,
        )
        timeout = self.db.timeout

        async def deliver(conn: Any) -> asyncpg.Record | None:
            found: asyncpg.Record | None
            try:
                found = await conn.fetchrow(statement.sql, *args, timeout=timeout)
            except asyncpg.UniqueViolationError:
                if idempotency_key is None:
                    raise
                # A send of the same key committed after this statement's snapshot: nothing
                # was stored; run again, to find it (see the statement).
                found = await conn.fetchrow(statement.sql, *args, timeout=timeout)
            return found

        # Without a key a repeat could store the signal twice: retried only if never sent.
        record: asyncpg.Record | None = await self.db.retrying(
            deliver, idempotent=idempotency_key is not None and locked_by is None
        )
        if record is None:
            return None
        values = tuple(record)
        delivery = Delivery(*values[:_DELIVERY_HEAD])
        if not delivery.claimed:
            return delivery
        return msgspec.structs.replace(delivery, woken=WokenInstance(*values[_DELIVERY_HEAD:]))

    # -- lookups and cancel (instances.sql, explain.sql) -------------------------------------

    async def instance_by_id(self, *, id: int) -> InstanceRow | None:
        """The instance with this id, or None."""
        return await self.db.row(InstanceRow, "instance_by_id", id=id)

    async def instance_by_key(self, *, workflow: str, key: str) -> InstanceRow | None:
        """The live instance holding the key, else the latest that had it, else None."""
        return await self.db.row(InstanceRow, "instance_by_key", workflow=workflow, key=key)

    async def instance_status(self, *, id: int) -> InstanceStatus | None:
        """Status, result and error of one instance."""
        return await self.db.row(InstanceStatus, "instance_status", id=id)

    async def instance_explain(self, *, id: int, now: datetime | None) -> ExplainedInstance | None:
        """One instance with why it waits at `now` (`blocked_*`), or None."""
        return await self.db.row(ExplainedInstance, "instance_explain", id=id, now=now)

    async def instance_cancel(self, *, id: int, now: datetime | None) -> int | None:
        """Cancel a live instance with its live descendants; how many descendants, or None
        when it was not live."""
        cancelled = await self.db.row(CancelledInstance, "instance_cancel", id=id, now=now)
        return None if cancelled is None else cancelled.cascaded or 0

    # -- rate limits (rate_configs.sql) ------------------------------------------------------

    async def rate_config_write(
        self,
        *,
        names: Sequence[str],
        allowed: Sequence[int],
        per_ms: Sequence[int],
        burst: Sequence[int],
        now: datetime | None,
    ) -> list[ReplacedRateConfig]:
        """Store limits given as parallel arrays; each with the values it replaced."""
        return await self.db.rows(
            ReplacedRateConfig,
            "rate_config_write",
            names=list(names),
            allowed=list(allowed),
            per_ms=list(per_ms),
            burst=list(burst),
            now=now,
        )


class PlainBatch(TypedDict):
    """A batch of plain outcomes as parallel per-row sequences (`outcome_plain`'s input):
    delays and leases in seconds; consumed signals as pairs of instance and signal ids."""

    ids: Sequence[int]
    locked_bys: Sequence[str]
    kinds: Sequence[str]
    steps: Sequence[str | None]
    states: Sequence[bytes | None]
    state_versions: Sequence[int]
    delays: Sequence[float | None]
    leases: Sequence[float | None]
    statuses: Sequence[str | None]
    results: Sequence[bytes | None]
    errors: Sequence[bytes | None]
    max_attempts: Sequence[int | None]
    queues: Sequence[str | None]
    now: datetime | None
    consumed_instances: NotRequired[Sequence[int]]
    consumed_signals: NotRequired[Sequence[int]]


def plain_outcome_params(**batch: Unpack[PlainBatch]) -> dict[str, Any]:
    """The parameters of `outcome_plain` for a batch given as parallel per-row sequences
    (`EngineStore.outcome_plain`'s arguments): each column once or per row."""
    params: dict[str, Any] = {
        "ids": list(batch["ids"]),
        "now": batch["now"],
        "consumed_instances": list(batch.get("consumed_instances", ())),
        "consumed_signals": list(batch.get("consumed_signals", ())),
    }
    _once_or_rows(params, "kind", batch["kinds"], None)
    _once_or_rows(params, "locked_by", batch["locked_bys"], None)
    _once_or_rows(params, "queue", batch["queues"], None)
    _once_or_rows(params, "step", batch["steps"], None)
    _once_or_rows(params, "status", batch["statuses"], None)
    _once_or_rows(params, "state", batch["states"], _json_text)
    _once_or_rows(params, "result", batch["results"], _json_text)
    _once_or_rows(params, "error", batch["errors"], _json_text)
    _once_or_rows(params, "state_version", batch["state_versions"], _number_text)
    _once_or_rows(params, "max_attempts", batch["max_attempts"], _number_text)
    _once_or_rows(params, "delay", batch["delays"], _number_text)
    _once_or_rows(params, "lease", batch["leases"], _number_text)
    return params


def _once_or_rows(
    params: dict[str, Any],
    name: str,
    values: Sequence[Any],
    text: Callable[[Any], str] | None,
) -> None:
    """Put column `name` of a statement's rows into `params`: once, as `name`, when every row
    holds the same value; else per row, as the text[] `<name>_rows` (then `name` is NULL),
    each value made text by `text` (None: it is text). JSON bytes are sent as their text."""
    count = len(values)
    first = values[0] if count else None
    if count == 0 or values.count(first) == count:
        params[name] = first.decode() if isinstance(first, bytes) else first
        params[f"{name}_rows"] = None
    else:
        params[name] = None
        params[f"{name}_rows"] = (
            list(values) if text is None else [None if v is None else text(v) for v in values]
        )


def _json_text(value: bytes) -> str:
    return value.decode()


def _number_text(value: float) -> str:
    return repr(value)


def _answers(
    committed: Sequence[CommittedOutcome] | Sequence[PlainOutcome],
) -> tuple[dict[int, bool | str | None], set[int]]:
    """A group commit's rows as its callers take them: what each committed id answers, and
    the ids that were busy."""
    done: dict[int, bool | str | None] = {}
    busy: set[int] = set()
    for outcome in committed:
        if outcome.busy:
            busy.add(outcome.id)
        elif outcome.released:
            done[outcome.id] = RELEASED
        else:
            done[outcome.id] = (
                outcome.woken_by_deadline if isinstance(outcome, CommittedOutcome) else None
            )
    return done, busy
