"""New instances as rows: what `start`, `start_many` and `spawn` insert, encoded and checked.

One place turns a `ChildEntry` (or the options of `Flow.start`) into the columns of a row:
the validated state, the queue and priority defaults of its workflow, the key's scope and
the rate limit of its start step. Nothing here touches the database, so a bad entry is
refused before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import attrgetter
from typing import Any

import msgspec

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


class NewRow(msgspec.Struct, frozen=True, gc=False):
    """One instance to insert, every column encoded.

    A Struct, not a dataclass: `start_many` builds one per entry, and a Struct is made about
    ten times faster than a frozen dataclass. Left out of the garbage collector's tracking
    (`gc=False`): its fields are strings, numbers, times, a tuple of strings and a
    `StepLimit`, none of which can lead back to it, so it is never part of a cycle.
    """

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
    if entry.key is not None:
        check_key(entry.key, "key")
    if entry.concurrency_key is not None:
        check_key(entry.concurrency_key, "concurrency_key")
    if entry.delay is not None or run_at is not None:
        check_timing(entry.delay, run_at)
    state = encode_state(spec, entry.state)
    step = spec.steps[spec.start_step]
    return NewRow(
        spec.name,
        spec.queue if entry.queue is None else _queue(entry.queue, spec.queue),
        step.name,
        state,
        step.max_attempts or spec.retry.max_attempts,
        spec.priority if entry.priority is None else check_priority(entry.priority),
        run_at,
        entry.delay,
        entry.key,
        LIVE_STATUSES if entry.scope is None else check_scope(entry.scope),
        entry.concurrency_key,
        NO_LIMIT if step.rate_limit is None else step_limit(spec, step, state),
        spec.version,
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


InstanceColumns = dict[str, Any]
"""Instances to insert, as the parameters of `instance_insert_many` (`columns`)."""


def _interval(delay: timedelta) -> str:
    return f"{delay.days} days {delay.seconds} seconds {delay.microseconds} microseconds"


def _texts(convert: Callable[[Any], str]) -> Callable[[list[Any]], list[str | None]]:
    return lambda values: [None if v is None else convert(v) for v in values]


_SHARED: tuple[tuple[str, Callable[[NewRow], Any], Callable[[list[Any]], list[Any]]], ...] = (
    ("workflow", attrgetter("workflow"), list),
    ("queue", attrgetter("queue"), list),
    ("step", attrgetter("step"), list),
    ("max_attempts", attrgetter("max_attempts"), _texts(str)),
    ("priority", attrgetter("priority"), _texts(str)),
    ("run_at", attrgetter("run_at"), _texts(datetime.isoformat)),
    ("delay", attrgetter("delay"), _texts(_interval)),
    ("key", attrgetter("key"), list),
    ("scope", attrgetter("scope"), _texts(lambda s: "{" + ",".join(s) + "}")),
    ("concurrency_key", attrgetter("concurrency_key"), list),
    ("rate_limit", attrgetter("limit.name"), list),
    ("rate_partition", attrgetter("limit.partition"), list),
    ("weight", attrgetter("limit.weight"), _texts(str)),
    ("state_version", attrgetter("state_version"), _texts(str)),
)
"""The columns `instance_insert_many` takes once for a batch, or as `<name>_rows` (text, the
form PostgreSQL's input of the column's type reads) when the rows differ in it."""


def columns(rows: Sequence[NewRow]) -> InstanceColumns:
    """`rows` as the parameters of `instance_insert_many`: the states (`"states"`, one per
    row), and each other column once when every row holds the same value, else as an
    array."""
    params: InstanceColumns = {"states": [r.state.decode() for r in rows]}
    count = len(rows)
    for name, get, texts in _SHARED:
        values = list(map(get, rows))
        first = values[0] if values else None
        if values.count(first) == count:
            params[name] = list(first) if name == "scope" and first else first
            params[f"{name}_rows"] = None
        else:
            params[name] = None
            params[f"{name}_rows"] = texts(values)
    return params


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
