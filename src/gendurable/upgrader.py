"""Bring a stored state up to its workflow's current version through its `@gd.upgrade` chain.

A row remembers the version of the code that wrote its state (`instances.state_version`).
When this code's version is higher, each upgrade from the row's version up runs in order
(1 to 2, then 2 to 3...), each on plain JSON exactly as it would be stored, and the result
is the state's JSON at the current version: the executor then decodes it for the step, and
commits it with the current version. Pure: no engine, no database.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .errors import StateUpgradeError
from .spec import WorkflowSpec

_encoder = msgspec.json.Encoder()
_plain: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


def uncovered(spec: WorkflowSpec, stored_version: int) -> str | None:
    """Why no upgrade leads a state of `stored_version` to `spec`'s version; None if one does.

    The compiler guarantees the upgrades form one unbroken chain ending at the current
    version, so a version is covered exactly when an upgrade starts from it.
    """
    if stored_version > spec.version:
        return (
            f"its state was written by version {stored_version} of the workflow, newer than "
            f"this code's version {spec.version}: run it with the newer code"
        )
    if stored_version < spec.version and stored_version not in spec.upgrades:
        oldest = min(spec.upgrades, default=None)
        declared = (
            "the workflow declares no @gd.upgrade"
            if oldest is None
            else f"its oldest upgrade starts from version {oldest}"
        )
        return (
            f"its state is of version {stored_version} and this code's is {spec.version}, but "
            f"{declared}: add @gd.upgrade(from_version={stored_version})"
        )
    return None


def upgrade_state(
    spec: WorkflowSpec,
    data: bytes | None,
    stored_version: int,
    obj: Any,
    *,
    what: str | None = None,
) -> bytes | None:
    """The JSON of `data` (written by `stored_version`) at `spec.version`.

    `obj` is the workflow object the upgrade methods are called on; `what` names the row in
    messages ("instance 12"). Raises `StateUpgradeError` when no upgrade covers the version,
    or when an upgrade raises or returns None or something that is not JSON.
    """
    if stored_version == spec.version or data is None:
        return data
    where = f"{spec.name} {what}: " if what else ""
    why = uncovered(spec, stored_version)
    if why is not None:
        raise StateUpgradeError(
            f"{where}{why}", stored_version=stored_version, version=spec.version
        )
    for start in range(stored_version, spec.version):
        fn = spec.upgrades[start]
        name = getattr(fn, "__name__", repr(fn))
        value = _plain.decode(data)
        try:
            upgraded = fn(obj, value)
            if upgraded is None and value is not None:
                raise TypeError("it returned None; return the upgraded state")
            data = _encoder.encode(upgraded)
        except Exception as exc:
            raise StateUpgradeError(
                f"{where}upgrade {name!r} from version {start} to {start + 1} "
                f"failed: {type(exc).__name__}: {exc}",
                stored_version=stored_version,
                version=spec.version,
            ) from exc
    return data
