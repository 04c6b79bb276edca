"""What the live engines record about a workflow, for callers that load no workflow code.

Every running engine records, per workflow it was given, its queue, steps, awaited signal
names and declared types (`maintenance.nodes.describe_workflows`). `recorded()` reads the
descriptions of one workflow from every live node; nodes running different code (a deploy
under way) may record different ones, and a value is then checked against each of them.
`recorded_or_refused()` refuses a workflow no live node knows and `unknown_workflow()`
words the error for a name nothing knows, with a suggestion.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec

from .db.operator_store import OperatorStore
from .errors import NoEngine, ValidationError
from .json_schema import UnsupportedSchema, schema_problem

_decode = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class Recorded:
    """The distinct descriptions of one workflow recorded by the live nodes (at least one)."""

    workflow: str
    descriptions: tuple[dict[str, Any], ...]

    def signal_names(self) -> list[str]:
        """Every signal name a step awaits, per any of the descriptions, in step order."""
        names: dict[str, None] = {}
        for described in self.descriptions:
            for awaited in described.get("steps", {}).values():
                names.update(dict.fromkeys(awaited))
        return list(names)

    def signal_types(self, name: str) -> Iterator[dict[str, Any] | None]:
        """The payload type of signal `name` per each description that awaits it (None:
        untyped); `ValidationError` when one predates recorded types."""
        for described in self.descriptions:
            signals = described.get("signals")
            if signals is None:
                raise ValidationError(
                    f"the live engines running {self.workflow} do not record payload types "
                    "(an older gendurable): pass --app MODULE:ENGINE to check the payload"
                )
            if name in signals:
                yield signals[name]


def check_value(recorded_type: dict[str, Any] | None, value: Any, what: str) -> None:
    """Refuse `value` (decoded JSON) unless it matches a recorded type (None: any JSON).

    The `ValidationError` names the expected type and the problem, in one line.
    """
    if recorded_type is None:
        return
    label = recorded_type.get("type", "its declared type")
    schema = recorded_type.get("schema")
    try:
        if schema is None:
            raise UnsupportedSchema("no JSON Schema was recorded for it")
        problem = schema_problem(schema, value)
    except UnsupportedSchema as exc:
        raise ValidationError(
            f"{what} is declared as {label}, which cannot be checked without the code "
            f"({exc}): pass --app MODULE:ENGINE"
        ) from None
    if problem is not None:
        raise ValidationError(f"{what} does not match {label}: {problem}")


async def recorded(store: OperatorStore, workflow: str) -> Recorded | None:
    """The descriptions of `workflow` by the live nodes; None when no live node knows it."""
    found: dict[bytes, dict[str, Any]] = {}
    for node in await store.nodes_live(now=None):
        described = _decode.decode(node.workflows).get(workflow)
        if described is not None:
            found.setdefault(msgspec.json.encode(described, order="sorted"), described)
    return Recorded(workflow, tuple(found.values())) if found else None


async def recorded_or_refused(store: OperatorStore, workflow: str, unchecked: str) -> Recorded:
    """`recorded(store, workflow)`, or `NoEngine` when no live node knows the workflow: with
    a near name when there is one, else saying why that matters (`unchecked`: "the signal
    cannot be checked: pass --app MODULE:ENGINE to check it against the code")."""
    found = await recorded(store, workflow)
    if found is not None:
        return found
    hint = did_you_mean(workflow, await known_workflows(store))
    raise NoEngine(
        f"no live engine knows workflow {workflow!r}{hint}"
        if hint
        else f"no live engine knows workflow {workflow!r}, so {unchecked}"
    )


async def known_workflows(store: OperatorStore) -> list[str]:
    """Every workflow a live node records or an instance has, sorted (reads every row)."""
    names = set(await store.instance_workflows())
    for node in await store.nodes_live(now=None):
        names.update(_decode.decode(node.workflows))
    return sorted(names)


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`; did you mean 'Approval'?` for a near miss of `name` among `known`, else ''."""
    candidates = [k for k in known if k != name]
    same = [k for k in candidates if k.casefold() == name.casefold()]
    close = same or difflib.get_close_matches(name, candidates, n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


async def unknown_workflow(store: OperatorStore, workflow: str) -> str | None:
    """Why `workflow` is unknown (with a suggestion), or None when a node or a row knows it."""
    known = await known_workflows(store)
    if workflow in known:
        return None
    listed = f" (known: {', '.join(known)})" if known and len(known) <= 10 else ""
    return (
        f"no workflow {workflow!r} is known: no live engine records it and no instance has "
        f"it{did_you_mean(workflow, known) or listed}"
    )
