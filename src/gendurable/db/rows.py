"""The typed rows statements return: one frozen Struct per result shape, named for what it is.

A row's fields are its statement's result columns, in order: the stores build rows
positionally (`Row(*record)`, the cheapest construction there is, on the claim's and the
commit's paths), and `tests/db/test_rows.py` checks every pairing against the prepared
statement. JSON columns (`state`, `result`, `error`, `payload`, ...) stay JSON bytes; the
engine decodes them with the types it knows.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec


class Row(msgspec.Struct, frozen=True, gc=False):
    """A row of a statement's result (frozen; no cycles, so the GC never tracks it)."""


# -- the engine: starts, the claim, commits, signals, lookups ----------------------------------


class InsertedInstance(Row, frozen=True):
    """What a start wrote (`created`), or the live instance that held its key; a row written
    claimed (`locked_by`) is run at once by the scheduler that reserved it."""

    id: int
    key: str | None
    queue: str
    run_at: datetime
    created: bool
    workflow: str
    step: str
    state: bytes | None
    attempt: int
    priority: int
    timed_out: bool
    await_seen: int
    children_from: int | None
    rate_limit: str | None
    rate_partition: str | None
    weight: int
    trace_context: str | None
    locked_by: str | None
    state_version: int
    waited: float
    notified: object


class CreatedInstance(Row, frozen=True):
    """A row a batch insert created (rows whose key was held are not returned)."""

    id: int
    workflow: str
    key: str | None
    notified: int


class KeyHolder(Row, frozen=True):
    """The instance holding a (workflow, key) a batch insert skipped."""

    workflow: str
    key: str
    id: int


class PickedRow(Row, frozen=True):
    """A due row the claim took: claimed for this worker (`go`), or deferred by its rate
    limit (`go` false: still available, due again at `run_at`, in `wait` seconds)."""

    id: int
    workflow: str
    step: str
    state: bytes | None
    attempt: int
    priority: int
    key: str | None
    queue: str
    timed_out: bool
    await_seen: int
    children_from: int | None
    go: bool
    unknown_limit: bool
    rate_limit: str | None
    rate_partition: str | None
    weight: int
    run_at: datetime
    wait: float
    trace_context: str | None
    waited: float
    state_version: int
    contended: int
    """Concurrency keys this claim took that have more due rows waiting (every row)."""


class PlainOutcome(Row, frozen=True):
    """One outcome of a plain group commit (`outcome_plain`): applied, or `busy` (its row or
    parent was locked by someone else: not applied, to send again)."""

    id: int
    busy: bool
    released: bool
    """A kept-claim move committed as a plain goto: its queue is paused."""


class CommittedOutcome(Row, frozen=True):
    """One outcome of a group commit: applied, or `busy` (its row or parent was locked by
    someone else: not applied, to send again)."""

    id: int
    cascaded: int | None
    woken_by_deadline: bool | None
    """For a park: woken at once by its passed deadline (True) or a signal there (False)."""
    busy: bool
    released: bool | None
    """A kept-claim move committed as a plain goto: its queue is paused."""


class LoadedChild(Row, frozen=True):
    """A child of a claimed parent's latest spawn; result and error as JSON bytes."""

    parent_id: int
    id: int
    key: str | None
    workflow: str
    status: str
    result: bytes | None
    error: bytes | None


class InboxSignal(Row, frozen=True):
    """A pending signal of an instance; payload as JSON bytes."""

    id: int
    instance_id: int
    name: str
    payload: bytes | None
    received_at: datetime
    trace_context: str | None


class WokenInstance(Row, frozen=True):
    """The instance a signal woke and claimed at once for a local scheduler."""

    id: int
    workflow: str
    step: str
    state: bytes | None
    attempt: int
    priority: int
    key: str | None
    queue: str
    timed_out: bool
    await_seen: int
    children_from: int | None
    rate_limit: str | None
    rate_partition: str | None
    weight: int
    trace_context: str | None
    waited: float
    state_version: int


class Delivery(Row, frozen=True):
    """A stored signal: whether it woke its instance, and, when a local scheduler claimed it
    at once (`claimed`), that instance (`woken`) with its whole inbox. With an idempotency
    key already used, the signal that key stored instead (`duplicate`; `same`: whether it
    had this name and payload), and nothing stored or woken."""

    signal_id: int
    instance_id: int
    duplicate: bool
    same: bool
    woke: bool
    claimed: bool
    notified: object
    inbox_ids: list[int] | None
    inbox_names: list[str] | None
    inbox_payloads: list[bytes | None] | None
    inbox_received: list[datetime] | None
    inbox_traces: list[str | None] | None
    woken: WokenInstance | None = None
    """Built from the statement's remaining columns when `claimed` (`WokenInstance`)."""


class CancelledInstance(Row, frozen=True):
    """An instance a cancel ended, with how many live descendants it cancelled."""

    id: int
    cascaded: int | None


class InstanceRow(Row, frozen=True):
    """One instance as stored (`get`, `result`, the CLI's addressing)."""

    id: int
    workflow: str
    key: str | None
    status: str
    step: str
    attempt: int
    state: bytes | None
    result: bytes | None
    error: bytes | None
    queue: str
    priority: int
    run_at: datetime
    locked_by: str | None
    locked_until: datetime | None
    await_names: list[str] | None
    await_deadline: datetime | None
    pending_children: int
    inserted_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    state_version: int


class InstanceStatus(Row, frozen=True):
    """Status, result and error of one instance (what `result()` polls)."""

    status: str
    result: bytes | None
    error: bytes | None


class ExplainedInstance(Row, frozen=True):
    """One instance with everything `get()`, `gendurable show` and the dashboard report,
    and why it waits (`blocked_*`, NULL when it does not)."""

    id: int
    workflow: str
    key: str | None
    status: str
    step: str
    attempt: int
    max_attempts: int
    state: bytes | None
    result: bytes | None
    error: bytes | None
    queue: str
    priority: int
    run_at: datetime
    locked_by: str | None
    locked_until: datetime | None
    await_names: list[str] | None
    await_deadline: datetime | None
    pending_children: int
    parent_id: int | None
    concurrency_key: str | None
    rate_limit: str | None
    rate_partition: str | None
    weight: int
    rescued: int
    inserted_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    blocked_reason: str | None
    blocked_until: datetime | None
    blocked_detail: str | None
    state_version: int


class UnknownStep(Row, frozen=True):
    """Due rows of a queue at a (workflow, step) this deploy does not know."""

    workflow: str
    step: str
    n: int
    first_id: int


class ReclaimedClaim(Row, frozen=True):
    """A claim a dead predecessor left, released at startup."""

    id: int
    workflow: str
    step: str


class ReplacedRateConfig(Row, frozen=True):
    """A limit as written at start, with the values it replaced (None: it was new)."""

    name: str
    old_allowed: int | None
    old_per_ms: int | None
    old_burst: int | None


# -- maintenance: the reaper, the collector, the node registry ---------------------------------


class RescuedClaim(Row, frozen=True):
    """An expired claim the reaper returned to its queue (or failed, its attempts spent)."""

    id: int
    workflow: str
    step: str
    queue: str
    status: str
    parent_id: int | None
    attempt: int
    notified: int
    cascaded: int | None


class ExpiredAwait(Row, frozen=True):
    """An awaiting instance whose deadline passed, made available again."""

    id: int
    workflow: str
    step: str
    queue: str
    key: str | None
    notified: int


class TerminalSweep(Row, frozen=True):
    """One batch of the terminal-rows sweep: deleted, read, and the cursor to go on from."""

    deleted: int
    scanned: int
    last_finished_at: datetime | None
    last_id: int | None


class BucketSweep(Row, frozen=True):
    """One batch of the rate-bucket sweep: deleted, read, and the cursor to go on from."""

    deleted: int
    scanned: int
    last_name: str | None
    last_partition: str | None


class PrunedNode(Row, frozen=True):
    """A node deleted past its expiry."""

    id: str
    name: str
    host: str
    pid: int
    last_seen: datetime


# -- operators: the deploy check, the command line, the dashboard ------------------------------


class LiveStep(Row, frozen=True):
    """Live rows at one (workflow, step)."""

    workflow: str
    step: str
    n: int
    example_id: int


class LiveQueue(Row, frozen=True):
    """Live rows of one workflow on one queue."""

    workflow: str
    queue: str
    n: int
    example_id: int


class AwaitedName(Row, frozen=True):
    """Parked rows of one (workflow, step) awaiting one signal name."""

    workflow: str
    step: str
    name: str
    n: int
    example_id: int


class LiveStateVersion(Row, frozen=True):
    """Live rows of one workflow whose state one version wrote."""

    workflow: str
    state_version: int
    n: int
    example_id: int


class StoredState(Row, frozen=True):
    """A live row's state as JSON bytes, with the version that wrote it."""

    id: int
    state: bytes
    state_version: int


class LiveNode(Row, frozen=True):
    """A node alive now, as `gendurable status` shows it; queues and workflows as JSON."""

    id: str
    name: str
    host: str
    pid: int
    schema: str
    queues: bytes
    workflows: bytes
    version: str
    heartbeat: timedelta
    started_at: datetime
    last_seen: datetime
    expires_at: datetime
    silent_for: timedelta


class StatusCount(Row, frozen=True):
    """Instances of one (workflow, status, queue), with the oldest due row's `run_at`."""

    workflow: str
    status: str
    queue: str
    count: int
    oldest_due: datetime | None
    now: datetime


class InstanceSummary(Row, frozen=True):
    """A line of `gendurable ls` and the dashboard's instance list."""

    id: int
    workflow: str
    key: str | None
    status: str
    step: str
    attempt: int
    queue: str
    priority: int
    run_at: datetime
    updated_at: datetime


class KeyedInstance(Row, frozen=True):
    """Per workflow, the live (else latest) instance holding a key."""

    id: int
    workflow: str
    status: str


class CountedChild(Row, frozen=True):
    """A child of an instance, with the parent's total count of children."""

    id: int
    workflow: str
    key: str | None
    status: str
    step: str
    spawn_index: int | None
    total: int


class RetryResult(Row, frozen=True):
    """What `gendurable retry` did: `retried` (the id) when the instance went back, else
    `status` (None: no such instance) and `holder` (who took its key) say why not."""

    status: str | None
    holder: int | None
    parent_id: int | None
    retried: int | None
    step: str | None
    notified: object


class EndedPerMinute(Row, frozen=True):
    """Instances that ended in one minute with one terminal status."""

    minute: datetime
    status: str
    count: int
    now: datetime


class OldestDue(Row, frozen=True):
    """The due row of a queue that has waited longest, and for how long (`behind`)."""

    queue: str
    id: int
    workflow: str
    key: str | None
    priority: int
    run_at: datetime
    behind: timedelta


class ChildSummary(Row, frozen=True):
    """A child of an instance on a page of the dashboard."""

    id: int
    workflow: str
    key: str | None
    status: str
    step: str
    spawn_index: int | None


class PendingSignal(Row, frozen=True):
    """A pending signal on a page of the dashboard; payload as JSON bytes."""

    id: int
    name: str
    payload: bytes | None
    received_at: datetime


class NodeSummary(Row, frozen=True):
    """A live node on a page of the dashboard; queues and workflows as JSON."""

    id: str
    name: str
    host: str
    pid: int
    queues: bytes
    workflows: bytes
    version: str
    started_at: datetime
    last_seen: datetime
    silent_for: timedelta


# -- schedules: their declaration, the ticker, the operators' list -----------------------------


class DeclaredSchedule(Row, frozen=True):
    """A schedule an engine declared, with what it held before (`previous`: None for a new
    one); `fresh` when it starts from now (its first tick to be set)."""

    name: str
    next_at: datetime
    previous: bytes | None
    previous_workflow: str | None
    was_disabled_at: datetime | None
    fresh: bool
    now: datetime


class DueSchedule(Row, frozen=True):
    """A schedule the tick transaction holds: its first unhandled instant, and the
    database's `now` (ticks are computed against it)."""

    name: str
    next_at: datetime
    now: datetime


class DisabledSchedule(Row, frozen=True):
    """A schedule disabled because no running engine refreshed it since `refreshed_at`."""

    name: str
    workflow: str
    refreshed_at: datetime


class PausedSchedule(Row, frozen=True):
    """A schedule just paused or resumed."""

    name: str
    workflow: str
    paused: bool


class StoredSchedule(Row, frozen=True):
    """A schedule as stored (its definition as JSON), with its last tick's instance (key and
    status None once garbage collection removed it)."""

    name: str
    workflow: str
    spec: bytes
    next_at: datetime
    last_at: datetime | None
    last_instance_id: int | None
    last_key: str | None
    last_status: str | None
    paused: bool
    disabled_at: datetime | None
    declared_by: str
    refreshed_at: datetime
    created_at: datetime


# -- repairs: many instances at once, rewinds --------------------------------------------------


class MatchCount(Row, frozen=True):
    """How many instances a bulk filter matches (up to its cap)."""

    n: int


class RetryVerdict(Row, frozen=True):
    """What a bulk retry page did to one id (see `instances_retry_many`)."""

    id: int
    verdict: str
    status: str | None
    holder: int | None
    parent_id: int | None
    notified: int


class CancelVerdict(Row, frozen=True):
    """What a bulk cancel page did to one id, with the descendants the page cancelled."""

    id: int
    verdict: str
    status: str | None
    cascaded: int


class Rewound(Row, frozen=True):
    """The answer of `instance_rewind`: `rewound` (the id) when it went back to `step`;
    otherwise `status` (None: no such row), `holder` and `parent_id` say why not."""

    status: str | None
    holder: int | None
    parent_id: int | None
    rewound: int | None
    step: str | None
    notified: object


# -- queue pauses ------------------------------------------------------------------------------


class StoredPause(Row, frozen=True):
    """A paused queue as stored: since when, and who paused it."""

    queue: str
    paused_at: datetime
    paused_by: str


class QueuePaused(Row, frozen=True):
    """The pause of a queue (`paused`: False when it was paused already: then its first
    `paused_at` and `paused_by`)."""

    queue: str
    paused_at: datetime
    paused_by: str
    paused: bool
    notified: object


class QueueResumed(Row, frozen=True):
    """The pause a resume ended."""

    queue: str
    paused_at: datetime
    paused_by: str
    notified: object


class DueQueue(Row, frozen=True):
    """A queue the poller asked about that holds due rows, or is paused (`paused`)."""

    queue: str
    paused: bool
