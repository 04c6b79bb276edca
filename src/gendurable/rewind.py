"""Rewind: restart a failed or cancelled instance at a named step, for callers that run no
engine (`gendurable retry KEY --step S [--state JSON]`, the dashboard's instance page).

What the instance is given is checked before anything is written, as a start is
(`start_check`): with the workflow's code at hand, the step must be one of its steps and a
replacement state must decode into its State; without it, both are checked against what
every live engine records (its steps, and the State's type as JSON Schema). Either way the
row then gets what a move into that step gets from the engine: the step's attempts and its
rate limit (bucket, partition, weight).

The statement (`instance_rewind`) then refuses, writing nothing, an instance that is not
failed or cancelled, one whose key another live instance now holds (naming it), and a child
whose parent no longer waits for it. A rewound instance's cancelled descendants stay
cancelled; a rewound child counts in its parent's pending children again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .codec import DEFAULT_MAX_PAYLOAD_BYTES, check_size, encode_json, encode_typed
from .db.operator_store import OperatorStore
from .db.repair_store import RepairStore
from .db.rows import Rewound
from .entries import NO_LIMIT, StepLimit, step_limit
from .errors import ValidationError
from .spec import WorkflowSpec
from .workflow_records import (
    check_value,
    did_you_mean,
    recorded_or_refused,
)

KEEP: Any = object()
"""The state argument meaning: keep the stored state."""

REWINDABLE = ("failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Entry:
    """What a rewind writes: the step, the replacement state (None: keep the stored one)
    with the workflow version that wrote it, and what an entry into the step takes."""

    step: str
    state: bytes | None
    state_version: int | None
    max_attempts: int
    limit: StepLimit


def entry_by_code(
    spec: WorkflowSpec,
    step: str,
    state: Any = KEEP,
    *,
    stored_state: bytes | None = None,
    stored_version: int | None = None,
) -> Entry:
    """The entry into `step` of `spec` with `state` (decoded JSON, or `KEEP` the stored
    `stored_state` of `stored_version`). `ValidationError` for an unknown step or a state
    that is not a State."""
    found = spec.steps.get(step)
    if found is None:
        raise ValidationError(_unknown_step(spec.name, step, list(spec.steps)))
    what = f"{spec.name} state"
    data: bytes | None = None
    if state is not KEEP:
        data = encode_typed(state, spec.state_type, spec.state_decoder, what)
        check_size(data, DEFAULT_MAX_PAYLOAD_BYTES, what)
    elif found.partition is not None and stored_version != spec.version:
        raise ValidationError(
            f"step {step!r} has a rate limit partitioned by a function of the state, and the "
            f"stored state is of version {stored_version}, not this code's {spec.version}: "
            "pass a state of the current version"
        )
    limit = step_limit(spec, found, data if data is not None else stored_state)
    return Entry(
        step,
        data,
        None if data is None else spec.version,
        spec.max_attempts(step),
        limit,
    )


async def entry_by_nodes(
    store: OperatorStore, workflow: str, step: str, state: Any = KEEP
) -> Entry:
    """The entry into `step` of `workflow`, per what every live node records about it.

    Raises `NoEngine` when no live engine knows the workflow, `ValidationError` for an
    unknown step, a state that does not match the recorded State type, or when the records
    cannot say what the entry takes (nodes that disagree, an older gendurable, a step
    whose rate limit is partitioned by a function only the code can run).
    """
    found = await recorded_or_refused(
        store,
        workflow,
        "the step and state cannot be checked: pass --app MODULE:ENGINE to check them against "
        "the code",
    )
    steps = [list(d.get("steps", {})) for d in found.descriptions]
    if not all(step in names for names in steps):
        known = [s for names in steps for s in names]
        if any(step in names for names in steps):
            raise ValidationError(
                f"not every live engine running {workflow} knows step {step!r} (a deploy "
                "under way?): pass --app MODULE:ENGINE to rewind it with the code"
            )
        raise ValidationError(_unknown_step(workflow, step, list(dict.fromkeys(known))))
    entries = {repr((d.get("entry") or {}).get(step)) for d in found.descriptions}
    versions = {d.get("version") for d in found.descriptions}
    described = found.descriptions[0]
    entry = (described.get("entry") or {}).get(step)
    if entry is None:
        raise ValidationError(
            f"the live engines running {workflow} do not record what entering a step takes "
            "(an older gendurable): pass --app MODULE:ENGINE"
        )
    if len(entries) > 1 or (state is not KEEP and len(versions) > 1):
        raise ValidationError(
            f"the live engines record different definitions of {workflow} (a deploy under "
            "way?): pass --app MODULE:ENGINE to rewind it with the code"
        )
    if entry["partitioned"]:
        raise ValidationError(
            f"step {step!r} of {workflow} has a rate limit partitioned by a function of the "
            "state that only the code can run: pass --app MODULE:ENGINE"
        )
    data: bytes | None = None
    if state is not KEEP:
        what = f"{workflow} state"
        for d in found.descriptions:
            check_value(d["state"], state, what)
        data = check_size(encode_json(state, what), DEFAULT_MAX_PAYLOAD_BYTES, what)
    limit = entry["rate_limit"]
    return Entry(
        step,
        data,
        None if data is None else described["version"],
        entry["max_attempts"],
        NO_LIMIT if limit is None else StepLimit(limit, None, entry["weight"]),
    )


async def rewind(
    repairs: RepairStore, id: int, entry: Entry, now: datetime | None = None
) -> Rewound:
    """Write `entry` into instance `id` (see `instance_rewind` for the refusals)."""
    return await repairs.instance_rewind(
        id=id,
        step=entry.step,
        state=entry.state,
        state_version=entry.state_version,
        max_attempts=entry.max_attempts,
        rate_limit=entry.limit.name,
        rate_partition=entry.limit.partition,
        weight=entry.limit.weight,
        now=now,
    )


def refusal(what: str, answer: Rewound) -> str | None:
    """Why the rewind of `what` ("cli.flaky instance 12") was refused, in one sentence;
    None when it went back."""
    if answer.rewound is not None:
        return None
    if answer.status is None:
        return f"{what} no longer exists"
    if answer.status not in REWINDABLE:
        return f"{what} is {answer.status}: only a failed or cancelled instance can be rewound"
    if answer.holder is not None:
        return (
            f"{what} cannot be rewound: live instance {answer.holder} now holds its key "
            "(cancel it first, or start a new instance)"
        )
    return (
        f"{what} cannot be rewound: its parent {answer.parent_id} no longer waits for it "
        "(rewind the parent to the step that spawns it instead)"
    )


def _unknown_step(workflow: str, step: str, steps: list[str]) -> str:
    hint = did_you_mean(step, steps)
    return f"{workflow} has no step {step!r}{hint} (its steps: {', '.join(sorted(steps))})"
