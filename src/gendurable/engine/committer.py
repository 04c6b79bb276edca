"""Apply a `Decision` to the database, guarded by ownership of the claim.

Goto, continue, retry and terminal outcomes go through group commit (one guarded statement
per batch of outcomes that finished together); a park is its own two-statement transaction
(see `Store.outcome_park`), and so is a spawn (children first, then the parent). A guard that
no longer holds means the claim was lost: the outcome is dropped and reported as
`outcome.stale`. Every state written goes with its workflow's version (`versions`); an outcome
that keeps the stored state keeps its version too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

from ..clock import Clock
from ..db.store import Store
from ..telemetry import Telemetry
from .claim import Claimed
from .decide import Decision, Finish, MoveTo, Park, RetryLater, SpawnChildren
from .entries import columns
from .group_commit import BatchItem, GroupCommit


class Committer:
    """Commits decisions for claims held by `locked_by`; reports stale commits."""

    def __init__(
        self,
        store: Store,
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
        return await self.store.instance_release(claim.id, claim.locked_by, self.clock.now())

    async def apply(self, claim: Claimed, decision: Decision) -> bool:
        """Commit `decision` for `claim`; False (and `outcome.stale`) if the claim was lost."""
        now = self.clock.now()
        store = self.store
        version = self.versions.get(claim.workflow, 1)
        if isinstance(decision, MoveTo | RetryLater | Finish):
            item = _batch_item(claim, decision, self.leases[claim.workflow])
            ok = await self.group.submit(replace(item, state_version=version))
        elif isinstance(decision, Park):
            ok, woken = await store.outcome_park(
                claim.id,
                claim.locked_by,
                decision.step,
                decision.state,
                decision.names,
                decision.timeout,
                decision.seen,
                decision.consumed,
                decision.keep_deadline,
                now,
                decision.limit,
                decision.keep_children,
                version,
            )
            if woken:
                self.telemetry.emit(
                    ("await", "timeout"),
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
                claim.id,
                claim.locked_by,
                columns(children) if children else [],
                [(c.workflow, c.key) for c in children if c.key is not None],
                decision.then,
                decision.state,
                decision.consumed,
                decision.limit,
                now,
                claim.trace_context,
                version,
                [c.state_version for c in children],
            )
        else:
            raise TypeError(f"{type(decision).__name__} is not a committable decision")
        if not ok:
            self.telemetry.emit(
                ("outcome", "stale"),
                {},
                {
                    "id": claim.id,
                    "workflow": claim.workflow,
                    "step": claim.step,
                    "locked_by": claim.locked_by,
                    "decision": type(decision).__name__,
                },
            )
        return ok

    async def _flush(self, items: Sequence[BatchItem]) -> set[int]:
        arrays: list[list[Any]] = [[] for _ in range(14)]
        consumed: tuple[list[int], list[int]] = ([], [])
        for it in items:
            values = (
                it.id,
                it.locked_by,
                it.kind,
                it.step,
                it.state,
                it.delay,
                it.status,
                it.result,
                it.error,
                it.lease,
                it.limit.name,
                it.limit.partition,
                it.limit.weight,
                it.state_version,
            )
            for column, value in zip(arrays, values, strict=True):
                column.append(value)
            consumed[0].extend([it.id] * len(it.consumed))
            consumed[1].extend(it.consumed)
        return await self.store.outcome_batch(arrays, consumed, self.clock.now())


def _batch_item(
    claim: Claimed, decision: MoveTo | RetryLater | Finish, lease: timedelta
) -> BatchItem:
    """The group-commit form of a goto, continue, retry or terminal outcome."""
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
        )
    if isinstance(decision, RetryLater):
        return BatchItem(
            claim.id,
            claim.locked_by,
            "retry",
            state=decision.state,
            delay=decision.delay,
            error=decision.error,
        )
    return BatchItem(
        claim.id,
        claim.locked_by,
        "finish",
        state=decision.state,
        status=decision.status,
        result=decision.result,
        error=decision.error,
    )
