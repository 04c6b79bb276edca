"""The decorators users write: `@workflow`, `@step`, `@await_signals`, `@upgrade`, `@job`.

Decorating only marks functions and hands the class to the compiler; the compiled
`WorkflowSpec` is attached as `Flow.spec`, together with the class-level API
(`start`, `start_many`, `signal`, `get`, `result`, `cancel`, `new`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, TypeVar, overload

from . import routing
from .compiler import compile_job, compile_workflow
from .errors import DefinitionError
from .limit import Backoff, Limit
from .outcome import ChildEntry
from .records import Handle, InstanceInfo
from .spec import WorkflowSpec

F = TypeVar("F", bound=Callable[..., Any])
C = TypeVar("C", bound=type)

STEP_MARK = "__gd_step__"
AWAIT_MARK = "__gd_await__"
UPGRADE_MARK = "__gd_upgrade__"


@dataclass(frozen=True, slots=True)
class StepOptions:
    """What `@step(...)` recorded on a function."""

    start: bool = False
    to: tuple[str, ...] = ()
    rate_limit: str | Limit | None = None
    weight: int = 1
    max_attempts: int | None = None
    timeout: timedelta | None = None
    partition: Callable[[Any], Any] | None = None


@dataclass(frozen=True, slots=True)
class AwaitOptions:
    """What `@await_signals(...)` recorded on a function."""

    names: tuple[str, ...]
    types: tuple[tuple[str, Any], ...]
    timeout: timedelta | None


@dataclass(frozen=True, slots=True)
class UpgradeOptions:
    """What `@upgrade(...)` recorded on a function."""

    from_version: Any


@overload
def step(fn: F, /) -> F: ...
@overload
def step(
    *,
    start: bool = False,
    to: str | Sequence[str] = (),
    rate_limit: str | Limit | None = None,
    weight: int = 1,
    partition: Callable[[Any], Any] | None = None,
    max_attempts: int | None = None,
    timeout: timedelta | None = None,
) -> Callable[[F], F]: ...
def step(
    fn: Any = None,
    /,
    *,
    start: bool = False,
    to: str | Sequence[str] = (),
    rate_limit: str | Limit | None = None,
    weight: int = 1,
    partition: Callable[[Any], Any] | None = None,
    max_attempts: int | None = None,
    timeout: timedelta | None = None,
) -> Any:
    """Mark a method `(self, state, ctx) -> Outcome` as a step.

    `to=` names targets the compiler cannot see in the source (computed `goto`s).
    `rate_limit=` (a limit name the engine configures, or an inline `gd.Limit`) makes every
    entry into the step (a start, a goto, a retry) take `weight` tokens from the bucket of
    (limit, `partition(state)`): `partition` is a function of the state, such as
    `lambda s: s.tenant`, computed when the move is committed.
    """
    targets = (to,) if isinstance(to, str) else tuple(to)
    options = StepOptions(start, targets, rate_limit, weight, max_attempts, timeout, partition)

    def mark(f: F) -> F:
        setattr(f, STEP_MARK, options)
        return f

    return mark(fn) if fn is not None else mark


def await_signals(*names: str, timeout: timedelta | None = None, **typed: Any) -> Callable[[F], F]:
    """Make a step wait until one of the named signals arrives, or `timeout` passes.

    `name=Type` decodes that signal's payload as `Type`; `name=None` or a positional name
    leaves it as plain JSON.
    """
    for n in names:
        if callable(n):  # bare `@gd.await_signals` received the method itself
            raise DefinitionError(
                f"{getattr(n, '__qualname__', n)!r}: @gd.await_signals needs signal names; "
                'write @gd.await_signals("approved", ...)'
            )
    options = AwaitOptions(
        names=tuple(names) + tuple(typed),
        types=tuple((n, None) for n in names) + tuple(typed.items()),
        timeout=timeout,
    )

    def mark(f: F) -> F:
        setattr(f, AWAIT_MARK, options)
        return f

    return mark


@overload
def upgrade(*, from_version: int) -> Callable[[F], F]: ...
@overload
def upgrade(fn: F, /) -> F: ...  # refused with a DefinitionError: a version is needed
def upgrade(fn: Any = None, /, *, from_version: Any = None) -> Any:
    """Mark a method `def up(self, state) -> state` as the upgrade of stored states written
    by version `from_version` of the workflow to version `from_version + 1`.

    It receives the state exactly as stored (plain JSON: dicts, lists, strings, numbers,
    booleans, None) and returns the JSON of the next version. A row written by an older
    version goes through every upgrade from its version up, in order, before a step (or
    `get()`) sees it. Upgrades are plain `def`s with no I/O: they may run more than once.
    """
    if fn is not None:  # bare `@gd.upgrade` received the method itself
        raise DefinitionError(
            f"{getattr(fn, '__qualname__', fn)!r}: @gd.upgrade needs the version it upgrades "
            "from; write @gd.upgrade(from_version=1)"
        )
    options = UpgradeOptions(from_version)

    def mark(f: F) -> F:
        setattr(f, UPGRADE_MARK, options)
        return f

    return mark


@overload
def workflow(cls: C, /) -> C: ...
@overload
def workflow(
    *,
    name: str | None = None,
    queue: str = "default",
    priority: int = 0,
    max_attempts: int = 5,
    backoff: Backoff | None = None,
    lease: timedelta | None = None,
    state: type | None = None,
    result: type | None = None,
    version: int = 1,
) -> Callable[[C], C]: ...
def workflow(
    cls: Any = None,
    /,
    *,
    name: str | None = None,
    queue: str = "default",
    priority: int = 0,
    max_attempts: int = 5,
    backoff: Backoff | None = None,
    lease: timedelta | None = None,
    state: type | None = None,
    result: type | None = None,
    version: int = 1,
) -> Any:
    """Compile a class of steps into a workflow; bad definitions raise `DefinitionError`.

    `version` is the version of the State's stored JSON: every state this code writes is
    stored with it. Raise it when a State change would no longer decode rows written by
    the code running now, and add an `@gd.upgrade(from_version=...)` method per version
    step (1 to 2, 2 to 3...) that turns the old JSON into the new.
    """

    def build(c: C) -> C:
        spec = compile_workflow(
            c,
            name=name,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            backoff=backoff or Backoff(),
            lease=lease,
            state=state,
            result=result,
            step_mark=STEP_MARK,
            await_mark=AWAIT_MARK,
            version=version,
            upgrade_mark=UPGRADE_MARK,
        )
        _bind_class_api(c, spec)
        return c

    return build(cls) if cls is not None else build


class Job:
    """A one-step workflow made by `@gd.job`; `await job.enqueue(args, ...)` runs it."""

    def __init__(self, spec: WorkflowSpec, fn: Callable[..., Any]) -> None:
        self.spec = spec
        self.fn = fn
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", spec.name)

    async def enqueue(
        self,
        args: Any = None,
        *,
        key: str | None = None,
        delay: timedelta | None = None,
        run_at: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        on_conflict: Literal["return", "raise"] = "return",
        engine: Any = None,
        concurrency_key: str | None = None,
        scope: Iterable[str] | None = None,
    ) -> Any:
        """Insert one run of the job; returns a `Handle` (`created=False` for a live key).

        `concurrency_key` and `scope` mean what they mean for `Flow.start`.
        """
        client = routing.resolve(self.spec.name, engine)
        return await client.start_instance(
            self.spec.name,
            key=key,
            state=args,
            delay=delay,
            run_at=run_at,
            priority=priority,
            queue=queue,
            on_conflict=on_conflict,
            concurrency_key=concurrency_key,
            scope=scope,
        )

    def new(self, args: Any = None, *, key: str | None = None, **options: Any) -> ChildEntry:
        """An entry for `spawn` or `start_many`, not yet inserted."""
        return ChildEntry(self.spec.name, key, args, **options)

    async def get(self, key_or_id: str | int, *, engine: Any = None) -> Any:
        """The `InstanceInfo` of one run."""
        return await routing.resolve(self.spec.name, engine).get(self.spec.name, key_or_id)

    async def result(
        self, key_or_id: str | int, timeout: float | None = None, *, engine: Any = None
    ) -> Any:
        """Wait for the run to end and return its result (raises `WorkflowFailed`)."""
        client = routing.resolve(self.spec.name, engine)
        return await client.result(self.spec.name, key_or_id, timeout)


def job(
    fn: Any = None,
    /,
    *,
    name: str | None = None,
    queue: str = "default",
    priority: int = 0,
    max_attempts: int = 20,
    backoff: Backoff | None = None,
    lease: timedelta | None = None,
    timeout: timedelta | None = None,
) -> Any:
    """Turn `async def perform(args, ctx)` into a durable one-shot job with retries."""

    def build(f: Callable[..., Any]) -> Job:
        spec = compile_job(
            f,
            name=name,
            queue=queue,
            priority=priority,
            max_attempts=max_attempts,
            backoff=backoff or Backoff(),
            lease=lease,
            timeout=timeout,
        )
        return Job(spec, f)

    return build(fn) if fn is not None else build


class Workflow:
    """Optional base class of a workflow: the class-level API, visible to type checkers.

    `@gd.workflow` gives every decorated class these methods; subclassing `gd.Workflow`
    only lets mypy and editors see them (`Expense.start(...)` type-checks).
    """

    spec: ClassVar[WorkflowSpec]

    @classmethod
    async def start(
        cls,
        key: str | None = None,
        state: Any = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: timedelta | None = None,
        run_at: datetime | None = None,
        concurrency_key: str | None = None,
        scope: Iterable[str] | None = None,
        on_conflict: Literal["return", "raise"] = "return",
        engine: Any = None,
    ) -> Handle:
        """Start an instance; returns `Handle(id, key, created)` (`created=False`: it was live)."""
        wf = cls.spec.name
        handle: Handle = await routing.resolve(wf, engine).start_instance(
            wf,
            key=key,
            state=state,
            queue=queue,
            priority=priority,
            delay=delay,
            run_at=run_at,
            concurrency_key=concurrency_key,
            scope=scope,
            on_conflict=on_conflict,
        )
        return handle

    @classmethod
    async def start_many(cls, entries: Iterable[ChildEntry], *, engine: Any = None) -> list[Handle]:
        """Insert many entries (from `Flow.new`) in one statement; handles in entry order."""
        handles: list[Handle] = await routing.resolve(cls.spec.name, engine).start_many(
            list(entries)
        )
        return handles

    @classmethod
    async def signal(
        cls,
        key_or_id: str | int,
        name: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
        engine: Any = None,
    ) -> int:
        """Deliver a durable signal to a live instance (its id); `NoTarget` when none is.

        With `idempotency_key`, a resend is safe: a signal the key already stored for the
        instance is not stored again, and its id is returned, for as long as the instance
        exists (even after it was consumed, even once the instance ended). Reusing the key
        for another name or payload raises `IdempotencyConflict`, storing nothing.
        """
        wf = cls.spec.name
        signal_id: int = await routing.resolve(wf, engine).signal(
            wf, key_or_id, name, payload, idempotency_key=idempotency_key
        )
        return signal_id

    @classmethod
    async def get(cls, key_or_id: str | int, *, engine: Any = None) -> InstanceInfo:
        """The `InstanceInfo` of an instance, by key (the live one first) or id."""
        wf = cls.spec.name
        info: InstanceInfo = await routing.resolve(wf, engine).get(wf, key_or_id)
        return info

    @classmethod
    async def result(
        cls, key_or_id: str | int, timeout: float | None = None, *, engine: Any = None
    ) -> Any:
        """Wait until the instance ends; its result, or `WorkflowFailed`/`ResultTimeout`."""
        wf = cls.spec.name
        return await routing.resolve(wf, engine).result(wf, key_or_id, timeout)

    @classmethod
    async def cancel(cls, key_or_id: str | int, *, engine: Any = None) -> None:
        """Cancel a live instance; `NoTarget` when none is live."""
        wf = cls.spec.name
        await routing.resolve(wf, engine).cancel(wf, key_or_id)

    @classmethod
    def new(cls, key: str | None = None, state: Any = None, **options: Any) -> ChildEntry:
        """An entry for `spawn` or `start_many`, not yet inserted."""
        return ChildEntry(cls.spec.name, key, state, **options)


CLASS_API = ("start", "start_many", "signal", "get", "result", "cancel", "new")


def _bind_class_api(cls: type, spec: WorkflowSpec) -> None:
    """Attach `spec` and the class-level API (the methods of `Workflow`) to `cls`."""
    cls.spec = spec  # type: ignore[attr-defined]
    if not issubclass(cls, Workflow):
        for name in CLASS_API:
            setattr(cls, name, Workflow.__dict__[name])
