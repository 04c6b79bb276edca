"""Apply a `Decision` to the database, guarded by ownership of the claim.

Goto, continue, retry, park and terminal outcomes go through group commit (one guarded
statement per batch of outcomes that finished together: `outcome_plain` when every one of
them is a goto, continue or end that enters no rate limit, whether or not it consumed
signals, else `outcome_batch`, which also retries and parks, a park's recheck of the inbox
in it, see `instances_parked`); a spawn is its own transaction (children first, then the
parent). A guard that no longer holds means the claim was lost: the outcome is dropped and
reported as `outcome.stale`. Every state written goes with its workflow's version
(`versions`); an outcome that keeps the stored state keeps its version too.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import msgspec

from ..clock import Clock
from ..db.engine_store import RELEASED, EngineStore
from ..entries import NO_LIMIT, columns
from ..events import AWAIT_TIMEOUT, OUTCOME_STALE
from ..telemetry import Telemetry
from .claimed import Claimed
from .decide import Decision, Finish, MoveTo, Park, RetryLater, SpawnChildren
from .group_commit import STALE, BatchItem, GroupCommit

_encoder = msgspec.json.Encoder()


class Applied(enum.Enum):
    """What `Committer.apply` did with a decision."""

    COMMITTED = "committed"
    STALE = "stale"
    """Dropped: the claim was lost (reported as `outcome.stale`)."""
    RELEASED = "released"
    """A kept-claim move committed as a plain goto: its queue is paused."""


class Committer:
    """Commits decisions for claims held by `locked_by`; reports stale commits."""

    def __init__(
        self,
        store: EngineStore,
        clock: Clock,
        telemetry: Telemetry,
        leases: Mapping[str, timedelta],
        versions: Mapping[str, int] | None = None,
    ) -> None:
        self.store = store
        self.group = GroupCommit(self._flush)
        self.clock = clock
        self.telemetry = telemetry
        self.leases = leases
        self.versions = versions or {}

    async def release(self, claim: Claimed) -> bool:
        """Give the claim back untouched: the instance is available again at once."""
        return await self.store.instance_release(
            id=claim.id, locked_by=claim.locked_by, now=self.clock.now()
        )

    async def apply(self, claim: Claimed, decision: Decision) -> Applied:
        """Commit `decision` for `claim`: `STALE` (and `outcome.stale`) if the claim was lost;
        `RELEASED` for a kept-claim move committed as a plain goto (its queue is paused:
        the claim is given up and the next step waits); else `COMMITTED`."""
        now = self.clock.now()
        store = self.store
        version = self.versions.get(claim.workflow, 1)
        if isinstance(decision, MoveTo | RetryLater | Finish | Park):
            item = _batch_item(claim, decision, self.leases[claim.workflow], version)
            result = await self.group.submit(item)
            ok = result is not STALE
            if result == RELEASED:
                return Applied.RELEASED
            if result is True:  # a park woken at once by its passed deadline
                assert isinstance(decision, Park)
                self.telemetry.emit(
                    AWAIT_TIMEOUT,
                    {},
                    {
                        "id": claim.id,
                        "workflow": claim.workflow,
                        "step": decision.step,
                        "key": claim.key,
                        "queue": claim.queue,
                    },
                )
        elif isinstance(decision, SpawnChildren):
            children = decision.children
            ok = await store.outcome_spawn(
                id=claim.id,
                locked_by=claim.locked_by,
                children=columns(children) if children else None,
                keys=[(c.workflow, c.key) for c in children if c.key is not None],
                then=decision.then,
                state=decision.state,
                state_version=version,
                max_attempts=decision.max_attempts,
                consumed=decision.consumed,
                limit=decision.limit,
                now=now,
                trace_context=claim.trace_context,
            )
        else:
            raise TypeError(f"{type(decision).__name__} is not a committable decision")
        if not ok:
            self.telemetry.emit(
                OUTCOME_STALE,
                {},
                {
                    "id": claim.id,
                    "workflow": claim.workflow,
                    "step": claim.step,
                    "locked_by": claim.locked_by,
                    "decision": type(decision).__name__,
                },
            )
        return Applied.COMMITTED if ok else Applied.STALE

    async def _flush(
        self, items: Sequence[BatchItem]
    ) -> tuple[dict[int, bool | str | None], set[int]]:
        # The general statement parses and plans for every kind of outcome; most batches
        # (steps that go on, or end) need only the lean one's part of it.
        if all(_plain(it) for it in items):
            return await self._flush_plain(items)
        return await self._flush_general(items)

    async def _flush_plain(
        self, items: Sequence[BatchItem]
    ) -> tuple[dict[int, bool | str | None], set[int]]:
        return await self.store.outcome_plain(
            ids=[it.id for it in items],
            locked_bys=[it.locked_by for it in items],
            kinds=[it.kind for it in items],
            steps=[it.step for it in items],
            states=[it.state for it in items],
            state_versions=[it.state_version for it in items],
            delays=[None if it.delay is None else it.delay.total_seconds() for it in items],
            leases=[None if it.lease is None else it.lease.total_seconds() for it in items],
            statuses=[it.status for it in items],
            results=[it.result for it in items],
            errors=[it.error for it in items],
            max_attempts=[it.max_attempts for it in items],
            queues=[it.queue for it in items],
            now=self.clock.now(),
            consumed_instances=[it.id for it in items for _ in it.consumed],
            consumed_signals=[signal for it in items for signal in it.consumed],
        )

    async def _flush_general(
        self, items: Sequence[BatchItem]
    ) -> tuple[dict[int, bool | str | None], set[int]]:
        fields: list[dict[str, Any]] = []
        states: list[bytes | None] = []
        results: list[bytes | None] = []
        errors: list[bytes | None] = []
        for n, it in enumerate(items, 1):
            fields.append(
                {
                    "n": n,
                    "id": it.id,
                    "locked_by": it.locked_by,
                    "kind": it.kind,
                    "step": it.step,
                    "delay_s": None if it.delay is None else it.delay.total_seconds(),
                    "status": it.status,
                    "lease_s": None if it.lease is None else it.lease.total_seconds(),
                    "rate_limit": it.limit.name,
                    "rate_partition": it.limit.partition,
                    "weight": it.limit.weight,
                    "state_version": it.state_version,
                    "await_names": it.await_names,
                    "keep_deadline": it.keep_deadline,
                    "seen": it.seen,
                    "keep_children": it.keep_children,
                    "consumed": it.consumed,
                    "max_attempts": it.max_attempts,
                    "queue": it.queue,
                }
            )
            states.append(it.state)
            results.append(it.result)
            errors.append(it.error)
        return await self.store.outcome_batch(
            outcomes=_encoder.encode(fields),
            states=states,
            results=results,
            errors=errors,
            now=self.clock.now(),
        )


def _plain(item: BatchItem) -> bool:
    """Whether `outcome_plain` can commit `item`: a goto, continue or finish that enters no
    rate limit."""
    return item.kind in _PLAIN_KINDS and item.limit == NO_LIMIT


_PLAIN_KINDS = frozenset({"goto", "continue", "finish"})


def _batch_item(
    claim: Claimed,
    decision: MoveTo | RetryLater | Finish | Park,
    lease: timedelta,
    version: int,
) -> BatchItem:
    """The group-commit form of a goto, continue, retry, park or terminal outcome."""
    if isinstance(decision, Park):
        return BatchItem(
            claim.id,
            claim.locked_by,
            "park",
            step=decision.step,
            state=decision.state,
            delay=decision.timeout,
            consumed=decision.consumed,
            limit=decision.limit,
            await_names=decision.names,
            keep_deadline=decision.keep_deadline,
            seen=decision.seen,
            keep_children=decision.keep_children,
            state_version=version,
            max_attempts=decision.max_attempts,
        )
    if isinstance(decision, MoveTo):
        return BatchItem(
            claim.id,
            claim.locked_by,
            "continue" if decision.keep_claim else "goto",
            step=decision.step,
            state=decision.state,
            delay=decision.delay,
            lease=lease,
            consumed=decision.consumed,
            limit=decision.limit,
            state_version=version,
            max_attempts=decision.max_attempts,
            queue=claim.queue,
        )
    if isinstance(decision, RetryLater):
        return BatchItem(
            claim.id,
            claim.locked_by,
            "retry",
            state=decision.state,
            delay=decision.delay,
            error=decision.error,
            state_version=version,
        )
    return BatchItem(
        claim.id,
        claim.locked_by,
        "finish",
        state=decision.state,
        status=decision.status,
        result=decision.result,
        error=decision.error,
        state_version=version,
    )
