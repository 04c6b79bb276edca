"""Checking a signal before it is stored, for callers that run no engine (CLI, dashboard).

With the workflow's code at hand, the name must be one a step awaits and the payload must
decode into the type that step declares. Without it, the name is checked against what the
live nodes record (each engine records, per step, the signal names it awaits); the payload
is then any JSON. Both refuse before anything is written.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .db.operator_store import OperatorStore
from .engine.codec import DEFAULT_MAX_PAYLOAD_BYTES, check_size, encode_json, encode_typed
from .errors import NoEngine, ValidationError
from .spec import WorkflowSpec

_decode = msgspec.json.Decoder()


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


async def names_by_nodes(store: OperatorStore, workflow: str) -> list[str] | None:
    """The signal names `workflow`'s steps await per the live nodes; None if none knows it."""
    knowing = False
    names: dict[str, None] = {}
    for node in await store.nodes_live(now=None):
        described = _decode.decode(node.workflows).get(workflow)
        if described is None:
            continue
        knowing = True
        for awaited in described["steps"].values():
            names.update(dict.fromkeys(awaited))
    return list(names) if knowing else None


async def check_name_by_nodes(store: OperatorStore, workflow: str, name: str) -> None:
    """Refuse a name no step of `workflow` awaits, as recorded by the live nodes.

    Raises `NoEngine` when no live engine knows the workflow (the name cannot be checked),
    `ValidationError` when none of its steps awaits `name`.
    """
    names = await names_by_nodes(store, workflow)
    if names is None:
        raise NoEngine(
            f"no live engine knows workflow {workflow!r}, so the signal name cannot be "
            "checked: pass --app MODULE:ENGINE to check it against the code"
        )
    if name not in names:
        raise ValidationError(
            f"{workflow} awaits no signal named {name!r} "
            f"(it awaits: {', '.join(names) or 'none'}, per the live engines)"
        )
