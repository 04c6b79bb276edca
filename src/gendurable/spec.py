"""The compiled, immutable form of a workflow: its transition table.

A `WorkflowSpec` is built once, at decoration time, by `gendurable.compiler`. The engine
reads it and never changes it. It renders itself as a Mermaid state diagram; the Markdown
page of it is `gendurable.docgen.workflow_page(spec)`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import msgspec

from .durations import format_duration
from .limit import Backoff, Limit

END = "[*]"
"""The edge target standing for a terminal outcome (`done` or `stop`)."""

START = "[*]"
"""The edge source standing for the start of an instance (only `diagram_edges()` has it).

Mermaid writes both the start and the end as `[*]`; one is only ever a source, the other
only ever a target, so an edge's position says which it is."""


@dataclass(frozen=True, slots=True)
class AwaitSpec:
    """What an awaiting step waits for: signal names, payload types, an optional timeout."""

    names: tuple[str, ...]
    types: Mapping[str, Any]
    timeout: timedelta | None
    decoders: Mapping[str, msgspec.json.Decoder[Any]] = field(repr=False, compare=False)

    def label(self) -> str:
        """`approved, rejected (timeout 2d)`: the names and the timeout, as diagrams show them."""
        text = ", ".join(self.names)
        if self.timeout is not None:
            text += f" (timeout {format_duration(self.timeout, sep='')})"
        return text

    def decode(self, name: str, raw: bytes) -> Any:
        """Decode a stored payload for signal `name` into its declared type."""
        decoder = self.decoders.get(name)
        if decoder is None:
            return msgspec.json.decode(raw)
        return decoder.decode(raw)


@dataclass(frozen=True, slots=True)
class MoveOverride:
    """A `goto(target, rate_limit=..., weight=..., partition=...)` in a step's source: the
    rate-limit options the move overrides, each as written (`("weight", "2")`)."""

    target: str
    options: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step: its function, options and outgoing edges."""

    name: str
    fn: Callable[..., Any] = field(repr=False, compare=False)
    is_async: bool
    start: bool
    awaits: AwaitSpec | None
    rate_limit: str | None
    weight: int
    max_attempts: int | None
    timeout: timedelta | None
    edges: tuple[str, ...]
    partition: Callable[[Any], Any] | None = field(default=None, repr=False, compare=False)
    spawns: tuple[str, ...] = ()
    """The workflows this step's `spawn(...)` calls start, as written in its source (`Child`)."""
    overrides: tuple[MoveOverride, ...] = ()
    """The moves in this step's source that override their target's rate limit."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How failed steps are retried before the instance is marked failed."""

    max_attempts: int
    backoff: Backoff


@dataclass(frozen=True, slots=True)
class WorkflowSpec:
    """A compiled workflow: everything the engine needs to run its instances."""

    name: str
    cls: type | None = field(repr=False, compare=False)
    queue: str
    priority: int
    steps: Mapping[str, StepSpec]
    start_step: str
    state_type: Any
    result_type: Any
    retry: RetryPolicy
    lease: timedelta | None
    rate_limits: Mapping[str, Limit]
    handler: Callable[..., Any] | None = field(repr=False, compare=False)
    is_job: bool = False
    state_decoder: msgspec.json.Decoder[Any] = field(
        default_factory=lambda: msgspec.json.Decoder(), repr=False, compare=False
    )
    result_decoder: msgspec.json.Decoder[Any] = field(
        default_factory=lambda: msgspec.json.Decoder(), repr=False, compare=False
    )
    version: int = 1
    """The `@gd.workflow(version=)` of this code: every state it writes is stored with it."""
    upgrades: Mapping[int, Callable[..., Any]] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False
    )
    """`from_version` -> the `@gd.upgrade` method turning a state of that version into the
    next; the compiler guarantees they form one unbroken chain up to `version`."""

    def step(self, name: str) -> StepSpec:
        """The step called `name`; `KeyError` when there is none."""
        return self.steps[name]

    def max_attempts(self, step: str) -> int:
        """The attempts step `step` may use: its own `max_attempts`, else the workflow's."""
        return self.steps[step].max_attempts or self.retry.max_attempts

    def edges(self) -> list[tuple[str, str]]:
        """Every (source, target) edge, in step order; `END` stands for a terminal outcome."""
        return [(s.name, t) for s in self.steps.values() for t in s.edges]

    def diagram_edges(self) -> list[tuple[str, str]]:
        """Every arrow of the workflow's state diagram, in order: `(START, start step)`, then
        `edges()`. `to_mermaid()` writes these and the dashboard draws these, no others."""
        return [(START, self.start_step), *self.edges()]

    def signal_type(self, name: str) -> tuple[bool, Any, msgspec.json.Decoder[Any] | None]:
        """(awaited by some step, declared payload type or None, its decoder or None)."""
        found = False
        for s in self.steps.values():
            if s.awaits and name in s.awaits.names:
                tp = s.awaits.types.get(name)
                if tp is not None:
                    return True, tp, s.awaits.decoders.get(name)
                found = True
        return found, None, None

    def signal_names(self) -> tuple[str, ...]:
        """Every signal name some step awaits, in step order, without repeats."""
        seen: dict[str, None] = {}
        for s in self.steps.values():
            if s.awaits:
                seen.update(dict.fromkeys(s.awaits.names))
        return tuple(seen)

    def to_mermaid(self) -> str:
        """Render the transition table as a Mermaid `stateDiagram-v2`."""
        (start, first), *edges = self.diagram_edges()
        lines = ["stateDiagram-v2", f"    {start} --> {first}"]
        named = {first} | {n for edge in edges for n in edge}
        for s in self.steps.values():
            if s.awaits:
                label = s.awaits.label()
                # With one description Mermaid draws it instead of the name; with two it draws
                # the first as a title over the rest, so the step keeps its name.
                lines.append(f"    {s.name} : {s.name}")
                lines.append(f"    {s.name} : awaits {label}")
            elif s.name not in named:
                lines.append(f"    {s.name}")  # no edge names it (computed gotos): declare it
        for source, target in edges:
            lines.append(f"    {source} --> {target}")
        return "\n".join(lines) + "\n"
