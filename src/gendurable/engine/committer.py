"""Apply a `Decision` to the database: one guarded statement per outcome."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from ..clock import Clock
from ..db.store import Store
from ..spec import WorkflowSpec
from ..telemetry import Telemetry
from .claim import Claimed
from .decide import Decision, Finish, MoveTo, Park, RetryLater


class Committer:
    """Commits decisions for claims held by `locked_by`; reports stale commits."""

    def __init__(
        self,
        store: Store,
        clock: Clock,
        telemetry: Telemetry,
        lease: timedelta,
        specs: Mapping[str, WorkflowSpec],
    ) -> None:
        self.specs = specs
        self.store = store
        self.clock = clock
        self.telemetry = telemetry
        self.lease = lease

    async def release(self, claim: Claimed) -> bool:
        """Give the claim back untouched: the instance is available again at once."""
        return await self.store.instance_release(claim.id, claim.locked_by, self.clock.now())

    async def apply(self, claim: Claimed, decision: Decision) -> bool:
        """Commit `decision` for `claim`; False (and `outcome.stale`) if the claim was lost."""
        now = self.clock.now()
        store = self.store
        if isinstance(decision, MoveTo):
            if decision.keep_claim:
                ok = await store.outcome_continue(
                    claim.id,
                    claim.locked_by,
                    decision.step,
                    decision.state,
                    self.lease,
                    now,
                    decision.consumed,
                )
            else:
                ok = await store.outcome_goto(
                    claim.id,
                    claim.locked_by,
                    decision.step,
                    decision.state,
                    decision.delay,
                    now,
                    decision.consumed,
                )
        elif isinstance(decision, Park):
            awaits = self.specs[claim.workflow].steps[decision.step].awaits
            assert awaits is not None
            # After a timeout a reawait waits for signals only: the passed deadline would
            # otherwise wake it again at once, a busy loop.
            keep_deadline = decision.reawait and not claim.timed_out
            timeout = None if decision.reawait and claim.timed_out else awaits.timeout
            ok, _ = await store.outcome_park(
                claim.id,
                claim.locked_by,
                decision.step,
                decision.state,
                awaits.names,
                timeout,
                decision.seen,
                decision.consumed,
                keep_deadline,
                now,
            )
        elif isinstance(decision, RetryLater):
            ok = await store.outcome_retry(
                claim.id, claim.locked_by, decision.state, decision.delay, decision.error, now
            )
        elif isinstance(decision, Finish):
            ok = await store.outcome_finish(
                claim.id,
                claim.locked_by,
                decision.status,
                decision.state,
                decision.result,
                decision.error,
                now,
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
