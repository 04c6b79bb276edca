"""Checking a start before it is stored, for callers that run no engine (`gendurable start`).

With the workflow's code at hand, the row is built as `Flow.start` builds it. Without it,
it is built from what the live nodes record: the workflow's queue, priority and version,
its first step and that step's rate limit, and the State's type (as JSON Schema), which the
state must match. Both refuse before anything is written.
"""

from __future__ import annotations

from typing import Any

from .codec import DEFAULT_MAX_PAYLOAD_BYTES, check_size, encode_json
from .db.operator_store import OperatorStore
from .entries import NO_LIMIT, NewRow, StepLimit, check_key, new_row
from .errors import ValidationError
from .outcome import ChildEntry
from .records import LIVE_STATUSES
from .spec import WorkflowSpec
from .workflow_records import (
    check_value,
    recorded_or_refused,
)

_START_FIELDS = ("queue", "priority", "version", "start")
"""What every live node must agree on to start an instance without the code."""


def row_by_code(spec: WorkflowSpec, key: str | None, state: Any) -> NewRow:
    """The row `Flow.start(key=key, state=state)` would insert (`ValidationError` if bad)."""
    row = new_row(spec, ChildEntry(spec.name, key, state))
    check_size(row.state, DEFAULT_MAX_PAYLOAD_BYTES, f"{spec.name} state")
    return row


async def row_by_nodes(store: OperatorStore, workflow: str, key: str | None, state: Any) -> NewRow:
    """The row for a new instance of `workflow`, built from what the live nodes record.

    `state` (decoded JSON; None for a State whose fields all have defaults) must match the
    recorded State type. Raises `NoEngine` when no live engine knows the workflow, and
    `ValidationError` for a bad key or state, or when the nodes' records cannot build the
    row (nodes that disagree, a start step whose rate limit is partitioned by a function).
    """
    found = await recorded_or_refused(
        store,
        workflow,
        "the state cannot be checked: pass --app MODULE:ENGINE to start it with the code",
    )
    described = found.descriptions[0]
    starts = {tuple(repr(d.get(f)) for f in _START_FIELDS) for d in found.descriptions}
    if len(starts) > 1:
        raise ValidationError(
            f"the live engines record different definitions of {workflow} (a deploy under "
            "way?): pass --app MODULE:ENGINE to start it with the code"
        )
    start = described.get("start")
    if start is None or "state" not in described:
        raise ValidationError(
            f"the live engines running {workflow} do not record how it starts (an older "
            "gendurable): pass --app MODULE:ENGINE"
        )
    if start["partitioned"]:
        raise ValidationError(
            f"{workflow} starts at step {start['step']!r}, whose rate limit is partitioned by "
            "a function of the state that only the code can run: pass --app MODULE:ENGINE"
        )
    check_key(key)
    what = f"{workflow} state"
    if state is None and any(d["state"] is not None for d in found.descriptions):
        state = {}  # a State whose fields all have defaults may be omitted, as in Flow.start
    for d in found.descriptions:
        check_value(d["state"], state, what)
    data = check_size(encode_json(state, what), DEFAULT_MAX_PAYLOAD_BYTES, what)
    limit = start["rate_limit"]
    return NewRow(
        workflow=workflow,
        queue=described["queue"],
        step=start["step"],
        state=data,
        max_attempts=start["max_attempts"],
        priority=described["priority"],
        run_at=None,
        delay=None,
        key=key,
        scope=LIVE_STATUSES,
        concurrency_key=None,
        limit=NO_LIMIT if limit is None else StepLimit(limit, None, start["weight"]),
        state_version=described["version"],
    )
