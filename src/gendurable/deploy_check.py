"""The deploy check: would this engine's code strand any live row?

Run before a deploy with the *new* code (`gendurable check app.module:engine`, or
`await check_engine(engine)`): it compares the compiled workflows with the live rows of the
engine's schema and reports each kind of row the new code could not carry on:

- `workflow_not_served`: live rows of a workflow the engine does not serve;
- `queue_not_served`: live rows on a queue that neither a live engine nor the checked
  engine runs (they would wait forever for an engine to claim them);
- `step_removed`: live rows at a step the workflow no longer has;
- `signal_removed`: parked rows awaiting a signal their step no longer declares;
- `state_version_uncovered`: live rows whose state version no `@gd.upgrade` leads to the
  workflow's current version (older than its oldest upgrade, or newer than the code);
- `state_undecodable`: stored states that no longer decode into the State type (the oldest
  `sample` rows of each workflow, or every row with `full=True`), naming the field; a state
  of an older version is upgraded first, so an upgrade that fails on it is reported here.

Rows whose state an upgrade will bring to the current version are counted in the report's
`upgrades` (information, not a problem).

Each check is one function from the live rows to problems (`CHECKS`), so a new kind of
problem is one more function. The check only reads: nothing is written or locked.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from .db.connect import check_dsn, resolve_dsn
from .db.migrator import check_version
from .db.operator_store import OperatorStore
from .db.pool import Database
from .db.rows import LiveStep
from .engine.engine import Engine
from .errors import ConfigError, EngineError, StateUpgradeError
from .spec import WorkflowSpec
from .upgrader import uncovered, upgrade_state

ProblemKind = Literal[
    "workflow_not_served",
    "queue_not_served",
    "step_removed",
    "signal_removed",
    "state_version_uncovered",
    "state_undecodable",
]

DEFAULT_SAMPLE = 1000
"""States decoded per workflow unless `full=True`."""

PAGE = 500
"""Rows read per statement when every state is decoded."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One kind of row the checked code would strand, with how many and an example id."""

    kind: ProblemKind
    workflow: str
    count: int
    example_id: int
    step: str | None = None
    signal: str | None = None
    field: str | None = None
    detail: str = ""
    state_version: int | None = None
    queue: str | None = None

    def __str__(self) -> str:
        rows = f"{self.count} live row{'s' if self.count != 1 else ''} of {self.workflow!r}"
        example = f"(example id {self.example_id})"
        if self.kind == "workflow_not_served":
            return f"{self.kind}: {rows} {example}: this engine does not serve the workflow"
        if self.kind == "queue_not_served":
            return (
                f"{self.kind}: {rows} on queue {self.queue!r} {example}: no live engine runs "
                "the queue, nor does this engine"
            )
        if self.kind == "step_removed":
            return f"{self.kind}: {rows} at step {self.step!r} {example}: no such step any more"
        if self.kind == "signal_removed":
            return (
                f"{self.kind}: {rows} await signal {self.signal!r} at step {self.step!r} "
                f"{example}: the step no longer declares it"
            )
        if self.kind == "state_version_uncovered":
            return (
                f"{self.kind}: {rows} hold a state of version {self.state_version} {example}: "
                + self.detail
            )
        where = f" (field {self.field!r})" if self.field else ""
        return f"{self.kind}: {rows} hold a state that no longer decodes{where} {example}: " + (
            self.detail
        )

    def to_dict(self) -> dict[str, Any]:
        """The problem as a JSON-ready dict (`gendurable check --json`)."""
        return {
            "kind": self.kind,
            "workflow": self.workflow,
            "count": self.count,
            "example_id": self.example_id,
            "step": self.step,
            "signal": self.signal,
            "field": self.field,
            "detail": self.detail,
            "state_version": self.state_version,
            "queue": self.queue,
        }


@dataclass(frozen=True, slots=True)
class Upgrade:
    """Live rows whose state the checked code will upgrade when it next reads them."""

    workflow: str
    from_version: int
    to_version: int
    count: int
    example_id: int

    def __str__(self) -> str:
        return (
            f"state_upgrade: {self.count} live row{'s' if self.count != 1 else ''} of "
            f"{self.workflow!r} hold a state of version {self.from_version}, upgraded to "
            f"version {self.to_version} when next read (example id {self.example_id})"
        )

    def to_dict(self) -> dict[str, Any]:
        """The upgrade as a JSON-ready dict (`gendurable check --json`)."""
        return {
            "workflow": self.workflow,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "count": self.count,
            "example_id": self.example_id,
        }


@dataclass(frozen=True, slots=True)
class CheckReport:
    """What `check_engine(engine)` found: `ok` when no live row would be stranded.

    `upgrades` lists the rows an `@gd.upgrade` chain will carry to the current version: they
    are fine, and listed so a deploy knows what its upgrades will touch.
    """

    problems: tuple[Problem, ...]
    live_rows: int
    states_decoded: int
    full: bool
    upgrades: tuple[Upgrade, ...] = ()

    @property
    def ok(self) -> bool:
        """True when nothing would strand."""
        return not self.problems

    def summary(self) -> str:
        """One line: how much was checked and the verdict."""
        scope = "every live state" if self.full else "a sample of live states"
        verdict = "nothing would strand" if self.ok else f"{len(self.problems)} problem(s)"
        upgraded = sum(u.count for u in self.upgrades)
        if upgraded:
            verdict += f"; {upgraded} row(s) will have their state upgraded"
        return (
            f"checked {self.live_rows} live row(s) and decoded {self.states_decoded} "
            f"({scope}): {verdict}"
        )

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return {
            "ok": self.ok,
            "live_rows": self.live_rows,
            "states_decoded": self.states_decoded,
            "full": self.full,
            "problems": [p.to_dict() for p in self.problems],
            "upgrades": [u.to_dict() for u in self.upgrades],
        }


@dataclass
class _Live:
    """What the checks share: the served specs, the store and the live (workflow, step) rows."""

    specs: Mapping[str, WorkflowSpec]
    store: OperatorStore
    steps: list[LiveStep]
    full: bool
    sample: int
    objects: Mapping[str, Any] = field(default_factory=dict)
    queues: frozenset[str] = frozenset()
    """The queues the checked engine runs."""
    states_decoded: int = field(default=0)
    upgrades: list[Upgrade] = field(default_factory=list)


Check = Callable[[_Live], Awaitable[list[Problem]]]


async def _workflows_not_served(live: _Live) -> list[Problem]:
    totals: dict[str, list[int]] = {}
    for r in live.steps:
        if r.workflow not in live.specs:
            count, first = totals.setdefault(r.workflow, [0, r.example_id])
            totals[r.workflow] = [count + r.n, min(first, r.example_id)]
    return [
        Problem("workflow_not_served", wf, count, first) for wf, (count, first) in totals.items()
    ]


async def _queues_not_served(live: _Live) -> list[Problem]:
    served = set(live.queues)
    for node in await live.store.nodes_live(now=None):
        served.update(msgspec.json.decode(node.queues))
    return [
        Problem("queue_not_served", r.workflow, r.n, r.example_id, queue=r.queue)
        for r in await live.store.check_live_queues()
        if r.queue not in served
    ]


async def _steps_removed(live: _Live) -> list[Problem]:
    return [
        Problem("step_removed", r.workflow, r.n, r.example_id, step=r.step)
        for r in live.steps
        if r.workflow in live.specs and r.step not in live.specs[r.workflow].steps
    ]


async def _signals_removed(live: _Live) -> list[Problem]:
    problems = []
    for r in await live.store.check_awaited_names():
        spec = live.specs.get(r.workflow)
        step = spec.steps.get(r.step) if spec else None
        if step is None:
            continue  # reported as a missing workflow or step already
        if step.awaits is None or r.name not in step.awaits.names:
            problems.append(
                Problem(
                    "signal_removed",
                    r.workflow,
                    r.n,
                    r.example_id,
                    step=r.step,
                    signal=r.name,
                )
            )
    return problems


async def _state_versions(live: _Live) -> list[Problem]:
    """Rows of another state version: counted when an upgrade covers them, else problems."""
    problems = []
    for r in await live.store.check_state_versions():
        spec = live.specs.get(r.workflow)
        version = r.state_version
        if spec is None or version == spec.version:
            continue
        why = uncovered(spec, version)
        if why is None:
            live.upgrades.append(Upgrade(spec.name, version, spec.version, r.n, r.example_id))
        else:
            problems.append(
                Problem(
                    "state_version_uncovered",
                    spec.name,
                    r.n,
                    r.example_id,
                    detail=why,
                    state_version=version,
                )
            )
    return problems


async def _states_undecodable(live: _Live) -> list[Problem]:
    problems = []
    served = {r.workflow for r in live.steps if r.workflow in live.specs}
    for workflow in sorted(served):
        spec = live.specs[workflow]
        if spec.state_type is None and not spec.upgrades:
            continue  # untyped state: any JSON decodes
        failures: dict[str, tuple[int, int, str | None]] = {}
        async for id, raw, version in _states(live, workflow):
            if uncovered(spec, version):
                continue  # reported as `state_version_uncovered` already
            live.states_decoded += 1
            try:
                data = upgrade_state(spec, raw, version, live.objects.get(workflow))
                if data is not None:
                    spec.state_decoder.decode(data)
            except (msgspec.DecodeError, StateUpgradeError) as exc:
                message = str(exc)
                name = field_of(message) if isinstance(exc, msgspec.DecodeError) else None
                count, first, name = failures.get(message, (0, id, name))
                failures[message] = (count + 1, min(first, id), name)
        problems += [
            Problem("state_undecodable", workflow, count, first, field=name, detail=message)
            for message, (count, first, name) in failures.items()
        ]
    return problems


async def _states(live: _Live, workflow: str) -> AsyncIterator[tuple[int, bytes, int]]:
    """(id, raw state, its version) of the rows to decode: the oldest `sample`, or all, page
    by page."""
    if not live.full:
        for r in await live.store.check_states_oldest(workflow=workflow, limit=live.sample):
            yield r.id, r.state, r.state_version
        return
    after = 0
    while True:
        page = await live.store.check_states_page(workflow=workflow, after_id=after, limit=PAGE)
        for r in page:
            yield r.id, r.state, r.state_version
        if len(page) < PAGE:
            return
        after = page[-1].id


CHECKS: tuple[Check, ...] = (
    _workflows_not_served,
    _queues_not_served,
    _steps_removed,
    _signals_removed,
    _state_versions,
    _states_undecodable,
)
"""Every check, in report order; a new kind of problem is one more function here."""

_PATH = re.compile(r"at `\$((?:\.\w+|\[\d+\])*)`")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def field_of(message: str) -> str | None:
    """The field a msgspec validation message names (`amount`, `items[0].sku`), if any."""
    path = _PATH.search(message)
    missing = _MISSING.search(message)
    parts = path.group(1).lstrip(".") if path else ""
    if missing:
        return f"{parts}.{missing.group(1)}" if parts else missing.group(1)
    return parts or None


async def check_store(
    specs: Mapping[str, WorkflowSpec],
    store: OperatorStore,
    *,
    full: bool = False,
    sample: int = DEFAULT_SAMPLE,
    objects: Mapping[str, Any] | None = None,
    queues: Iterable[str] = (),
) -> CheckReport:
    """Run every check of `specs` against the live rows behind `store`.

    `objects` are the workflow objects (by name) that `@gd.upgrade` methods are called on;
    `queues` the queues the checked engine runs (besides those of the live nodes).
    """
    _check_sample(sample)
    live = _Live(
        specs,
        store,
        await store.check_live_steps(),
        full,
        sample,
        objects or {},
        frozenset(queues),
    )
    problems: list[Problem] = []
    for check in CHECKS:
        problems += await check(live)
    return CheckReport(
        problems=tuple(problems),
        live_rows=sum(r.n for r in live.steps),
        states_decoded=live.states_decoded,
        full=full,
        upgrades=tuple(live.upgrades),
    )


async def check_engine(
    engine: Engine, *, full: bool = False, sample: int = DEFAULT_SAMPLE, dsn: str | None = None
) -> CheckReport:
    """Check `engine`'s workflows against its schema: would deploying its code strand live
    rows? `gendurable check` runs this.

    A running engine is checked through its own pool; a stopped one opens a small pool of
    its own for the check (on `dsn`, else the engine's, else `$GENDURABLE_DSN`) and never
    starts the engine, so no step runs. A missing or outdated schema raises `ConfigError`.
    """
    _check_sample(sample)
    if dsn is None:
        try:
            return await check_store(
                engine.specs,
                OperatorStore(engine.store.db),
                full=full,
                sample=sample,
                objects=engine.workflow_objects,
                queues=engine.config.queues,
            )
        except EngineError:
            pass  # not running: check through a pool of our own
    target = resolve_dsn(dsn or engine.dsn)
    if target is None:
        raise ConfigError(
            "no database to check: pass --dsn, set GENDURABLE_DSN or give the engine a dsn"
        )
    check_dsn(target)
    timeout = engine.config.statement_timeout.total_seconds()
    db = await Database.open(target, engine.schema, min_size=1, max_size=1, timeout=timeout)
    try:
        async with db.pool.acquire() as conn:
            await check_version(conn, schema=engine.schema)
        return await check_store(
            engine.specs,
            OperatorStore(db),
            full=full,
            sample=sample,
            objects=engine.workflow_objects,
            queues=engine.config.queues,
        )
    finally:
        await db.close(grace=2.0)


def _check_sample(sample: int) -> None:
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise ConfigError(f"sample must be an int of at least 1, got {sample!r}")
