"""New instances as rows: what `start`, `start_many` and `spawn` insert, encoded and checked.

One place turns a `ChildEntry` (or the options of `Flow.start`) into the columns of a row:
the validated state, the queue and priority defaults of its workflow, the key's scope and
the rate limit of its start step. Nothing here touches the database, so a bad entry is
refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from .codec import encode_typed
from .errors import DuplicateKey, ValidationError
from .limit import Limit
from .outcome import ChildEntry
from .records import ALL_STATUSES, LIVE_STATUSES
from .spec import StepSpec, WorkflowSpec


@dataclass(frozen=True, slots=True)
class StepLimit:
    """The rate limit an entry into a step takes: bucket (limit, partition), `weight` tokens."""

    name: str | None = None
    partition: str | None = None
    weight: int = 1


NO_LIMIT = StepLimit()


@dataclass(frozen=True, slots=True)
class NewRow:
    """One instance to insert, every column encoded."""

    workflow: str
    queue: str
    step: str
    state: bytes
    max_attempts: int
    priority: int
    run_at: datetime | None
    delay: timedelta | None
    key: str | None
    scope: tuple[str, ...]
    concurrency_key: str | None
    limit: StepLimit
    state_version: int = 1
    """The version of the workflow that encoded `state` (`@gd.workflow(version=)`)."""


def new_row(spec: WorkflowSpec, entry: ChildEntry, *, run_at: datetime | None = None) -> NewRow:
    """Encode `entry` (an instance of `spec`) as a row, or raise `ValidationError`."""
    check_key(entry.key, "key")
    check_key(entry.concurrency_key, "concurrency_key")
    check_timing(entry.delay, run_at)
    state = encode_state(spec, entry.state)
    step = spec.steps[spec.start_step]
    return NewRow(
        workflow=spec.name,
        queue=_queue(entry.queue, spec.queue),
        step=step.name,
        state=state,
        max_attempts=spec.max_attempts(step.name),
        priority=spec.priority if entry.priority is None else check_priority(entry.priority),
        run_at=run_at,
        delay=entry.delay,
        key=entry.key,
        scope=check_scope(entry.scope),
        concurrency_key=entry.concurrency_key,
        limit=step_limit(spec, step, state),
        state_version=spec.version,
    )


def new_rows(
    specs: Mapping[str, WorkflowSpec], entries: Sequence[Any], *, what: str
) -> list[NewRow]:
    """Rows for a spawn's entries, in entry order; a key twice in the batch is refused."""
    rows: list[NewRow] = []
    seen: set[tuple[str, str]] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, ChildEntry):
            raise ValidationError(f"{what} takes entries from Flow.new(...), got {entry!r} at {i}")
        spec = specs.get(entry.workflow)
        if spec is None:
            raise ValidationError(
                f"{what} entry {i}: workflow {entry.workflow!r} is not served by this engine; "
                "add it to Engine(workflows=[...])"
            )
        if entry.key is not None:
            if (entry.workflow, entry.key) in seen:
                raise DuplicateKey(
                    f"{what} names {entry.workflow} key {entry.key!r} twice", existing_id=0
                )
            seen.add((entry.workflow, entry.key))
        rows.append(new_row(spec, entry))
    return rows


class InstanceColumns(TypedDict):
    """Instances to insert as parallel arrays (`columns`), by parameter name
    of `instance_insert_many`."""

    workflows: list[str]
    queues: list[str]
    steps: list[str]
    states: list[bytes]
    max_attempts: list[int]
    priorities: list[int]
    run_ats: list[datetime | None]
    delays: list[timedelta | None]
    keys: list[str | None]
    scopes: list[str]
    concurrency_keys: list[str | None]
    rate_limits: list[str | None]
    rate_partitions: list[str | None]
    weights: list[int]
    state_versions: list[int]


def columns(rows: Sequence[NewRow]) -> InstanceColumns:
    """The parallel arrays `instance_insert_many` takes, by parameter name."""
    return InstanceColumns(
        workflows=[r.workflow for r in rows],
        queues=[r.queue for r in rows],
        steps=[r.step for r in rows],
        states=[r.state for r in rows],
        max_attempts=[r.max_attempts for r in rows],
        priorities=[r.priority for r in rows],
        run_ats=[r.run_at for r in rows],
        delays=[r.delay for r in rows],
        keys=[r.key for r in rows],
        scopes=["{" + ",".join(r.scope) + "}" for r in rows],
        concurrency_keys=[r.concurrency_key for r in rows],
        rate_limits=[r.limit.name for r in rows],
        rate_partitions=[r.limit.partition for r in rows],
        weights=[r.limit.weight for r in rows],
        state_versions=[r.state_version for r in rows],
    )


def step_limit(
    spec: WorkflowSpec,
    step: StepSpec,
    state: bytes | Any,
    *,
    name: str | None = None,
    weight: int | None = None,
    partition: str | None = None,
    limits: Mapping[str, Limit] | None = None,
) -> StepLimit:
    """The rate limit an entry into `step` takes, with a per-move override.

    `state` is the state the step will see (bytes are decoded only when the step computes a
    partition from it). A weight above the limit's burst is refused: it could never be
    granted and would hold its bucket's queue forever.
    """
    limit = name or step.rate_limit
    if limit is None:
        if weight is not None or partition is not None:
            raise ValidationError(
                f"step {step.name!r} has no rate limit; weight= and partition= need rate_limit="
            )
        return NO_LIMIT
    tokens = weight if weight is not None else (step.weight if name is None else 1)
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValidationError(f"weight must be a positive integer, got {tokens!r}")
    known = (limits or {}).get(limit) or spec.rate_limits.get(limit)
    if known is not None and tokens > known.capacity:
        raise ValidationError(
            f"step {step.name!r}: weight {tokens} is above the burst {known.capacity} of rate "
            f"limit {limit!r}, so it could never run; lower the weight or raise the burst"
        )
    part = partition
    if part is None and name is None and step.partition is not None:
        value = spec.state_decoder.decode(state) if isinstance(state, bytes) else state
        try:
            part = str(step.partition(value))
        except Exception as exc:
            raise ValidationError(
                f"step {step.name!r}: its partition function failed on the state: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    if part is not None and not isinstance(part, str):
        raise ValidationError(f"partition must be a string, got {part!r}")
    if part is not None:
        check_text(part, "partition")
    return StepLimit(limit, part, tokens)


def encode_state(spec: WorkflowSpec, state: Any) -> bytes:
    """Validate and encode a start state; a State with all defaults may be omitted."""
    if state is None and spec.state_type is not None:
        state = {}
    return encode_typed(state, spec.state_type, spec.state_decoder, f"{spec.name} state")


MAX_KEY_BYTES = 2000
"""The longest key, concurrency key, queue or partition, in UTF-8 bytes: each is indexed,
and a btree entry holds at most 2704 bytes."""


def check_key(key: Any, what: str = "key") -> None:
    """A key is a non-empty string or None (see `check_text`)."""
    if key is not None and (not isinstance(key, str) or not key):
        raise ValidationError(f"{what} must be a non-empty string or None, got {key!r}")
    if key is not None:
        check_text(key, what)


def check_text(text: str, what: str, max_bytes: int = MAX_KEY_BYTES) -> str:
    """Refuse a string PostgreSQL cannot store or index: a NUL character, a lone surrogate
    (not UTF-8), more than `max_bytes` bytes."""
    if "\x00" in text:
        raise ValidationError(
            f"{what} {_short(text)} holds a NUL character (\\x00), which PostgreSQL text "
            "cannot store"
        )
    try:
        size = len(text.encode())
    except UnicodeEncodeError as exc:
        raise ValidationError(f"{what} {_short(text)} is not valid UTF-8: {exc.reason}") from None
    if size > max_bytes:
        raise ValidationError(
            f"{what} {_short(text)} is {size:,} bytes of UTF-8, above the limit of "
            f"{max_bytes:,} (it is indexed)"
        )
    return text


def _short(text: str) -> str:
    """`text` as a repr, cut in the middle when long (error messages stay readable)."""
    return repr(text) if len(text) <= 60 else f"{text[:40]!r}...{text[-10:]!r}"


def check_timing(delay: timedelta | None, run_at: datetime | None) -> None:
    """`delay` or `run_at` (not both); a non-negative delay, an aware datetime."""
    if delay is not None and run_at is not None:
        raise ValidationError("pass delay= or run_at=, not both")
    if delay is not None and (not isinstance(delay, timedelta) or delay < timedelta(0)):
        raise ValidationError(f"delay must be a non-negative timedelta, got {delay!r}")
    if run_at is not None and (not isinstance(run_at, datetime) or run_at.tzinfo is None):
        raise ValidationError(f"run_at must be a timezone-aware datetime, got {run_at!r}")


def check_priority(priority: Any) -> int:
    """A priority fits PostgreSQL's smallint."""
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not -32768 <= priority <= 32767
    ):
        raise ValidationError(f"priority must be an int in [-32768, 32767], got {priority!r}")
    return priority


def check_scope(scope: Any) -> tuple[str, ...]:
    """The statuses keeping a key reserved: every live one, plus any terminal ones chosen."""
    if scope is None:
        return LIVE_STATUSES
    if isinstance(scope, str):
        raise ValidationError(f"scope must be a list of statuses, got the string {scope!r}")
    chosen = tuple(dict.fromkeys(scope))
    unknown = [s for s in chosen if s not in ALL_STATUSES]
    if unknown:
        raise ValidationError(f"scope has unknown statuses {unknown}; choose from {ALL_STATUSES}")
    missing = [s for s in LIVE_STATUSES if s not in chosen]
    if missing:
        raise ValidationError(
            f"scope must include every live status; missing {missing} "
            "(a key is always reserved while its instance runs)"
        )
    return chosen


def _queue(queue: Any, default: str) -> str:
    if queue is None:
        return default
    if not isinstance(queue, str) or not queue:
        raise ValidationError(f"queue must be a non-empty string, got {queue!r}")
    return check_text(queue, "queue")
