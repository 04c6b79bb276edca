"""Checking a signal before it is stored, for callers that run no engine (CLI, dashboard).

With the workflow's code at hand, the name must be one a step awaits and the payload must
decode into the type that step declares. Without it, both are checked against what the
live nodes record (each engine records, per step, the signal names it awaits, and each
payload's type as JSON Schema). Both refuse before anything is written.
"""

from __future__ import annotations

from typing import Any

from .codec import DEFAULT_MAX_PAYLOAD_BYTES, check_size, encode_json, encode_typed
from .db.operator_store import OperatorStore
from .errors import ValidationError
from .spec import WorkflowSpec
from .workflow_records import (
    check_value,
    recorded,
    recorded_or_refused,
)


def payload_by_code(spec: WorkflowSpec, name: str, payload: Any) -> bytes:
    """`payload` encoded for signal `name` of `spec`, checked against its declared type.

    Raises `ValidationError` when no step awaits `name` or the payload does not match.
    """
    awaited, tp, decoder = spec.signal_type(name)
    if not awaited:
        raise ValidationError(
            f"{spec.name} awaits no signal named {name!r} "
            f"(it awaits: {', '.join(spec.signal_names()) or 'none'})"
        )
    if tp is not None and decoder is not None:
        data = encode_typed(payload, tp, decoder, f"payload of signal {name!r}")
        return check_size(data, DEFAULT_MAX_PAYLOAD_BYTES, f"payload of signal {name!r}")
    return payload_untyped(name, payload)


def payload_untyped(name: str, payload: Any) -> bytes:
    """`payload` encoded as plain JSON for signal `name`, within the default payload limit
    (`ValidationError` otherwise)."""
    what = f"payload of signal {name!r}"
    return check_size(encode_json(payload, what), DEFAULT_MAX_PAYLOAD_BYTES, what)


async def payload_by_nodes(store: OperatorStore, workflow: str, name: str, payload: Any) -> bytes:
    """`payload` encoded for signal `name` of `workflow`, checked against what the live
    nodes record: the name must be one a step awaits, the payload must match the type
    recorded for it (by every live node that knows the workflow).

    Raises `NoEngine` when no live engine knows the workflow (nothing can be checked; the
    message suggests a near name), `ValidationError` for a bad name or payload.
    """
    found = await recorded_or_refused(
        store,
        workflow,
        "the signal cannot be checked: pass --app MODULE:ENGINE to check it against the code",
    )
    names = found.signal_names()
    if name not in names:
        raise ValidationError(
            f"{workflow} awaits no signal named {name!r} "
            f"(it awaits: {', '.join(names) or 'none'}, per the live engines)"
        )
    what = f"payload of signal {name!r}"
    for declared in found.signal_types(name):
        check_value(declared, payload, what)
    return payload_untyped(name, payload)


async def payload_labels_by_nodes(store: OperatorStore, workflow: str) -> dict[str, str] | None:
    """Each signal name of `workflow` with its payload type in words, per the live nodes;
    None when no live node knows the workflow."""
    found = await recorded(store, workflow)
    if found is None:
        return None
    labels = {}
    for name in found.signal_names():
        try:
            declared = {_label(d) for d in found.signal_types(name)}
        except ValidationError:
            declared = {"any JSON (unchecked: start the dashboard with --app)"}
        labels[name] = " or ".join(sorted(declared))
    return labels


def _label(declared: dict[str, Any] | None) -> str:
    return "any JSON" if declared is None else str(declared.get("type"))
