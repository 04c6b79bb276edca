"""Apply a `Decision` to the database: one guarded statement per outcome."""

from __future__ import annotations

from datetime import timedelta

from ..clock import Clock
from ..db.store import Store
from ..telemetry import Telemetry
from .claim import Claimed
from .decide import Decision, Finish, HandOff, MoveTo, Park, RetryLater


class Committer:
    """Commits decisions for claims held by `locked_by`; reports stale commits."""

    def __init__(self, store: Store, clock: Clock, telemetry: Telemetry, lease: timedelta) -> None:
        self.store = store
        self.clock = clock
        self.telemetry = telemetry
        self.lease = lease

    async def release(self, claim: Claimed) -> bool:
        """Give the claim back: the instance is available again at its current step."""
        return await self.store.outcome_goto(
            claim.id, claim.locked_by, claim.step, claim.state, None, self.clock.now()
        )

    async def apply(self, claim: Claimed, decision: Decision) -> bool:
        """Commit `decision` for `claim`; False (and `outcome.stale`) if the claim was lost."""
        now = self.clock.now()
        store = self.store
        if isinstance(decision, MoveTo):
            if decision.keep_claim:
                ok = await store.outcome_continue(
                    claim.id, claim.locked_by, decision.step, decision.state, self.lease, now
                )
            else:
                ok = await store.outcome_goto(
                    claim.id, claim.locked_by, decision.step, decision.state, decision.delay, now
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
        elif isinstance(decision, Park | HandOff):
            raise NotImplementedError(f"{type(decision).__name__} is committed elsewhere")
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
