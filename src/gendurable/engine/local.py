"""Work that runs where it is made: rows claimed by a local scheduler as they are written.

When the process that starts an instance also runs its queue and has a free slot there, the
start inserts the row as `executing`, claimed by that scheduler, and runs it at once. This
saves the notification, the claim statement and the wait for them, which is most of what a
start costs. Only plain entries qualify (due now, no await, no rate limit, no concurrency
key: those are the claim's business), and only while the queue is drained, so a start never
overtakes due rows. A crash between the insert and the step is the same as a crash after a
claim: the lease expires and the reaper hands the row to another worker.

A signal that wakes an instance of a local queue does the same: the delivery statement claims
it for the scheduler whose slot it reserved, and returns its inbox with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from ..entries import NewRow
from ..spec import WorkflowSpec
from .scheduler import Scheduler


@dataclass(frozen=True, slots=True)
class Runner:
    """A slot reserved on a local scheduler for one start."""

    scheduler: Scheduler
    locked_by: str
    lease: timedelta


class LocalRunner:
    """Finds a local scheduler with a free slot for a new row, and reserves it."""

    def __init__(
        self,
        specs: Mapping[str, WorkflowSpec],
        schedulers: Mapping[str, Scheduler],
        leases: Mapping[str, timedelta],
    ) -> None:
        self.specs = specs
        self.schedulers = schedulers
        self.leases = leases

    def runner_for_queue(self, spec: WorkflowSpec) -> Runner | None:
        """A reserved slot on the scheduler of `spec`'s queue (for what a signal wakes)."""
        scheduler = self.schedulers.get(spec.queue)
        token = scheduler.reserve() if scheduler is not None else None
        if scheduler is None or token is None:
            return None
        return Runner(scheduler, token, self.leases[spec.name])

    def runner_for(self, row: NewRow) -> Runner | None:
        """A reserved slot for `row`, or None when it must go through the queue."""
        scheduler = self.schedulers.get(row.queue)
        if scheduler is None:
            return None
        if row.run_at is not None or (row.delay is not None and row.delay > timedelta(0)):
            return None
        if row.limit.name is not None or row.concurrency_key is not None:
            return None
        spec = self.specs.get(row.workflow)
        if spec is None or spec.steps[row.step].awaits is not None:
            return None
        token = scheduler.reserve()
        if token is None:
            return None
        return Runner(scheduler, token, self.leases[row.workflow])
