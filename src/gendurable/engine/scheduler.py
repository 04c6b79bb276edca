"""One scheduler per queue: claim due instances in batches and keep `concurrency` in flight.

It claims only when at least `min_demand` slots are free (fewer, larger claims under load),
and only when woken: by a notification, by a freed slot while its queue holds more than it
could take, by a timer for rows it deferred, or by the engine's poller (`engine/poller.py`),
which finds due rows nothing announced.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import math
import os
import socket
import uuid
from collections.abc import Sequence, Set
from datetime import timedelta

from ..clock import Clock
from ..db.engine_store import EngineStore
from ..db.outage import log_failure
from ..db.rows import PickedRow
from ..events import (
    CONCURRENCY_CONTENDED,
    RATE_LIMIT_THROTTLED,
    RATE_LIMIT_UNKNOWN,
    SCHEDULER_RECLAIMED,
    WORKFLOW_UNKNOWN,
)
from ..maintenance.loop import observed
from ..telemetry import Telemetry
from .claimed import Claimed, ClaimSource, StoredChild, StoredSignal
from .executor import Executor

_log = logging.getLogger("gendurable.scheduler")

GIVE_BACK_GRACE = 2.0
"""Seconds a stopping scheduler waits for a claim in flight, to release what it took."""


def worker_id(engine: str, queue: str) -> str:
    """`<engine>:<queue>@<host>-<pid>-<unique>`: each claim stores it in `locked_by`,
    followed by `#<claim number>`."""
    return f"{engine}:{queue}@{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Scheduler:
    """Claims and runs the due instances of one queue."""

    def __init__(
        self,
        *,
        engine_name: str,
        queue: str,
        concurrency: int,
        min_demand: int,
        store: EngineStore,
        clock: Clock,
        executor: Executor,
        known: Sequence[tuple[str, str, timedelta]],
        awaiting: frozenset[tuple[str, str]] = frozenset(),
        telemetry: Telemetry | None = None,
        paused: Set[str] = frozenset(),
    ) -> None:
        self.queue = queue
        self.concurrency = concurrency
        self.min_demand = min_demand  # within 1..concurrency: `EngineConfig.demand`
        self.store = store
        self.clock = clock
        self.executor = executor
        self.telemetry = telemetry or Telemetry()
        self.locked_by = worker_id(engine_name, queue)
        self.known_workflows = [w for w, _, _ in known]
        self.known_steps = [s for _, s, _ in known]
        self.known_leases = [lease for _, _, lease in known]
        leases = dict((w, lease) for w, _, lease in known)
        self.lease_workflows = list(leases)
        self.lease_values = list(leases.values())
        self.awaiting = awaiting
        # The queues the engine knows paused (shared, kept by `Pauses`): a paused queue's
        # scheduler does not even try to claim (the claim would refuse it anyway).
        self.paused = paused
        self.claimed_total = 0
        self.deferred_total = 0
        self.finished_total = 0
        self.claiming = True
        self._running: set[asyncio.Task[None]] = set()
        # The claim (instance id, claim name) each running task runs: the heartbeat extends
        # these claims only.
        self._running_claims: dict[asyncio.Task[None], tuple[int, str]] = {}
        self._claims_made = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._claim_lock = asyncio.Lock()
        self._timer: asyncio.TimerHandle | None = None
        self._reserved = 0  # slots promised to starts that insert their row claimed
        # Running tasks whose last outcome is on its way to the database: their slots are
        # claimed for again already, so that a claim overlaps the commit.
        self._committing: set[asyncio.Task[None]] = set()
        self.drained = True  # the last claim found fewer due rows than it could take
        self._wakes: list[float] = []  # loop times at which deferred rows become due

    def wake(self) -> None:
        """Ask the loop to claim now (new work was announced)."""
        self._wake.set()

    async def run_once(self) -> int:
        """Claim as many due instances as there are free slots and start them.

        Returns how many due rows the claim took off the front of the queue: the claimed
        ones plus those the rate limiter deferred (more may be due behind them).
        """
        async with self._claim_lock:
            free = self.concurrency - self._active() - self._reserved
            if not self.claiming or free < self.min_demand or self.queue in self.paused:
                # Work may have been announced that this claim could not take: the next
                # freed slot claims.
                self.drained = False
                return 0
            # A task of its own (named like the loop's, for logs), shielded from stop():
            # see `_give_back`.
            token = self._claim_token()
            current = asyncio.current_task()
            claim = asyncio.create_task(
                self.store.instance_claim(
                    queue=self.queue,
                    limit=free,
                    locked_by=token,
                    workflows=self.known_workflows,
                    steps=self.known_steps,
                    leases=self.known_leases,
                    now=self.clock.now(),
                ),
                name=current.get_name() if current is not None else None,
            )
            try:
                rows = await asyncio.shield(claim)
                claimed = [r for r in rows if r.go]
                self._report(rows, claimed)
                if len(claimed) < len(rows):
                    # Deferred rows are due when their tokens come: claim again then,
                    # rather than at the next poll.
                    self._wake_at({r.wait for r in rows if not r.go})
                inboxes = await self._inboxes(claimed)
                children = await self._children(claimed)
            except asyncio.CancelledError:
                await self._give_back(claim, token)
                raise
            loop = asyncio.get_running_loop()
            for row in claimed:
                self._start(
                    Claimed.from_row(
                        row,
                        token,
                        inboxes.get(row.id, ()),
                        children.get(row.id, ()),
                    ),
                    loop,
                )
            self.claimed_total += len(claimed)
            self.deferred_total += len(rows) - len(claimed)
            self.drained = len(rows) < free
            return len(rows)

    def reserve(self) -> str | None:
        """Promise a slot to work that will be written claimed by this scheduler; the claim's
        name (`locked_by` of the row), or None when there is no slot for it.

        Only while the queue is drained (its last claim found fewer due rows than free
        slots), so that a start never overtakes due rows waiting in the queue, and not
        paused. Each name must be followed by `adopt()` or `unreserve()`.
        """
        if not self.claiming or not self.drained or self.queue in self.paused:
            return None
        if self._active() + self._reserved >= self.concurrency:
            return None
        self._reserved += 1
        return self._claim_token()

    def unreserve(self) -> None:
        """Give back a slot `reserve()` promised (the row was not created claimed)."""
        self._reserved -= 1

    def adopt(self, row: ClaimSource, token: str, inbox: tuple[StoredSignal, ...] = ()) -> None:
        """Run a row claimed under `token` (from `reserve()`) elsewhere: by a start, by a
        signal's wake-up; in the slot reserved for it."""
        self._reserved -= 1
        self.claimed_total += 1
        self._start(Claimed.from_row(row, token, inbox), asyncio.get_running_loop())

    def _claim_token(self) -> str:
        """`<locked_by>#<n>`: the name the rows of this scheduler's n-th claim are locked by.

        A name per claim, not per scheduler: a commit repeated after its answer was lost, or
        a late one from a run whose lease expired, must not pass the ownership guard of a
        later claim of the same row by this same scheduler.
        """
        self._claims_made += 1
        return f"{self.locked_by}#{self._claims_made}"

    def _wake_at(self, waits: set[float]) -> None:
        """Wake the loop after each of these delays (seconds), rounded up to 10 ms (a wake a
        little early would find nothing due and set no new wake)."""
        now = asyncio.get_running_loop().time()
        for at in {math.ceil((now + max(wait, 0.0)) * 100) / 100 for wait in waits}:
            heapq.heappush(self._wakes, at)
        self._arm()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        while self._wakes and self._wakes[0] <= loop.time():
            heapq.heappop(self._wakes)
        if not self._wakes or not self.claiming:
            return
        if self._timer is not None:
            if self._timer.when() == self._wakes[0] and not self._timer.cancelled():
                return
            self._timer.cancel()
        self._timer = loop.call_at(self._wakes[0], self._timed_wake)

    def _timed_wake(self) -> None:
        self._timer = None
        self.wake()
        self._arm()

    async def _give_back(self, claim: asyncio.Task[list[PickedRow]], token: str) -> None:
        """Release the rows of a claim whose loop was cancelled (stop) before it started them.

        The statement may have committed on the server already: its rows would otherwise
        stay `executing` under this scheduler, with no step running them, for a whole lease.
        Bounded: with the database unreachable the claim is abandoned (it did not commit).
        """
        with contextlib.suppress(Exception):
            async with asyncio.timeout(GIVE_BACK_GRACE):
                for row in await claim:
                    if row.go:
                        await self.store.instance_release(
                            id=row.id, locked_by=token, now=self.clock.now()
                        )

    def _report(self, rows: Sequence[PickedRow], claimed: Sequence[PickedRow]) -> None:
        """Telemetry for rows a claim held back: busy concurrency keys, throttles, unknowns."""
        if rows and rows[0].contended:
            self.telemetry.emit(
                CONCURRENCY_CONTENDED,
                {"count": rows[0].contended},
                {"queue": self.queue},
            )
        if len(claimed) == len(rows):
            return
        buckets: dict[tuple[str, str | None], list[int]] = {}
        for row in rows:
            if row.rate_limit is not None:
                tally = buckets.setdefault((row.rate_limit, row.rate_partition), [0, 0, 0])
                tally[0 if row.go else 1] += 1
                tally[2] |= row.unknown_limit
        for (limit, partition), (granted, denied, unknown) in buckets.items():
            if not denied:
                continue
            waiting = [
                r
                for r in rows
                if not r.go and (r.rate_limit, r.rate_partition) == (limit, partition)
            ]
            meta = {
                "queue": self.queue,
                "limit": limit,
                "partition": partition,
                "first_id": min(r.id for r in waiting),
                "retry_at": min(r.run_at for r in waiting),
            }
            if unknown:
                _log.warning(
                    "queue %r: %d instance(s) wait on rate limit %r, which no engine "
                    "configures (first id %d); add it to Engine(rate_limits=...)",
                    self.queue,
                    denied,
                    limit,
                    meta["first_id"],
                )
                self.telemetry.emit(RATE_LIMIT_UNKNOWN, {"count": denied}, meta)
            else:
                self.telemetry.emit(
                    RATE_LIMIT_THROTTLED, {"granted": granted, "denied": denied}, meta
                )

    async def _children(self, rows: Sequence[PickedRow]) -> dict[int, tuple[StoredChild, ...]]:
        """Load the children of the claimed rows that come back from a spawn, in one query."""
        parents = [(r.id, r.children_from) for r in rows if r.children_from is not None]
        if not parents:
            return {}
        grouped: dict[int, list[StoredChild]] = {}
        loaded = await self.store.children_load(
            parent_ids=[p for p, _ in parents], first_ids=[f for _, f in parents]
        )
        for c in loaded:
            grouped.setdefault(c.parent_id, []).append(
                StoredChild(c.id, c.key, c.workflow, c.status, c.result, c.error)
            )
        return {id: tuple(cs) for id, cs in grouped.items()}

    async def _inboxes(self, rows: Sequence[PickedRow]) -> dict[int, tuple[StoredSignal, ...]]:
        """Load the inboxes of the claimed rows that sit at an awaiting step, in one query."""
        ids = [r.id for r in rows if (r.workflow, r.step) in self.awaiting]
        if not ids:
            return {}
        grouped: dict[int, list[StoredSignal]] = {}
        for sig in await self.store.inbox_load(ids=ids):
            grouped.setdefault(sig.instance_id, []).append(
                StoredSignal(sig.id, sig.name, sig.payload, sig.received_at, sig.trace_context)
            )
        return {id: tuple(sigs) for id, sigs in grouped.items()}

    async def idle(self) -> None:
        """Wait until no step of this queue is in flight."""
        await self._idle.wait()

    async def loop(self) -> None:
        """Claim whenever there may be work, until cancelled."""
        while True:
            self._wake.clear()
            try:
                claimed = await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # The engine's poller wakes this loop again while due rows wait.
                log_failure(
                    _log, exc, "claim on queue %r failed; retrying after the poll interval",
                    self.queue,
                )  # fmt: skip
                claimed = 0
            if claimed and self._active() < self.concurrency:
                continue  # the queue may hold more than this batch
            # No timeout: notifications, freed slots, timers and the engine's poller wake it.
            await self._wake.wait()

    async def reclaim(self) -> int:
        """Release, at once, expired claims a dead predecessor on this host left behind;
        how many (`scheduler.reclaimed` when any).

        Reported as the `maintenance.run` (or `.exception`) of task `reclaim`.
        """
        with observed(self.telemetry, "reclaim", self.queue) as run:
            prefix = self.locked_by.rsplit("-", 2)[0] + "-"
            rows = await self.store.claims_reclaim(prefix=prefix, now=self.clock.now(), limit=1000)
            run.rows = len(rows)
        if run.rows:
            self.telemetry.emit(
                SCHEDULER_RECLAIMED,
                {"count": run.rows},
                {"queue": self.queue, "locked_by": self.locked_by},
            )
        return run.rows

    async def report_unknown(self) -> int:
        """Report (log and telemetry `workflow.unknown`) due rows this deploy cannot run;
        how many.

        Such rows are never claimed: they wait, untouched, for a deploy that knows them.
        """
        found = await self.store.instances_unknown(
            queue=self.queue,
            workflows=self.known_workflows,
            steps=self.known_steps,
            now=self.clock.now(),
        )
        for unknown in found:
            _log.warning(
                "queue %r holds %d due instance(s) of %s at step %r (first id %d) that this "
                "deploy does not know; they are left untouched",
                self.queue,
                unknown.n,
                unknown.workflow,
                unknown.step,
                unknown.first_id,
            )
            self.telemetry.emit(
                WORKFLOW_UNKNOWN,
                {"count": unknown.n},
                {
                    "queue": self.queue,
                    "workflow": unknown.workflow,
                    "step": unknown.step,
                    "first_id": unknown.first_id,
                },
            )
        return sum(unknown.n for unknown in found)

    async def heartbeat(self) -> int:
        """Extend all running claims of this scheduler by their leases; how many.

        Reported as the `maintenance.run` (or `.exception`) of task `heartbeat`.
        """
        with observed(self.telemetry, "heartbeat", self.queue) as run:
            if self._running:
                run.rows = await self.store.lease_extend(
                    claims=list(self._running_claims.values()),
                    workflows=self.lease_workflows,
                    leases=self.lease_values,
                    now=self.clock.now(),
                )
            return run.rows

    def stop_claiming(self) -> None:
        """Claim nothing more; running steps go on.

        Not under the claim lock: a claim may be retrying against an unreachable database,
        and stop() must not wait for it (the engine cancels the claim loop right after).
        """
        self.claiming = False
        if self._timer is not None:
            self._timer.cancel()

    def resume_claiming(self) -> None:
        """Claim again after `stop_claiming()` (the loop picks up at its next wake)."""
        self.claiming = True
        self.wake()

    def cancel_running(self) -> list[asyncio.Task[None]]:
        """Cancel the running steps (their claims are then released by the caller)."""
        tasks = list(self._running)
        for task in tasks:
            task.cancel()
        return tasks

    def _start(self, claim: Claimed, loop: asyncio.AbstractEventLoop) -> None:
        task = loop.create_task(self._execute(claim), name=f"gendurable:{claim.id}")
        self._running.add(task)
        self._running_claims[task] = (claim.id, claim.locked_by)
        self._idle.clear()
        task.add_done_callback(self._finished)

    def _active(self) -> int:
        """Slots taken: running steps, not counting those only waiting for their commit."""
        return len(self._running) - len(self._committing)

    def _committing_now(self) -> None:
        """The current task's last outcome goes to its commit: its slot may be claimed for."""
        task = asyncio.current_task()
        if task is None or task not in self._running:
            return
        self._committing.add(task)
        if not self.drained:
            self._wake.set()

    async def _execute(self, claim: Claimed) -> None:
        try:
            await self.executor.run(claim, self._committing_now)
        except Exception as exc:
            # A commit that failed (database gone): the lease expires and the reaper
            # returns the instance; nothing was half-applied.
            log_failure(_log, exc, "instance %s: committing its outcome failed", claim.id)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._committing.discard(task)
        self._running_claims.pop(task, None)
        self.finished_total += 1
        if not self._running:
            self._idle.set()
        if not self.drained:
            # Due rows may be waiting for this slot. A drained queue needs no claim: new
            # work announces itself.
            self._wake.set()
