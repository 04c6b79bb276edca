"""Turn a decorated class (or job function) into a `WorkflowSpec`, or fail at import.

Pure: no engine, no database. Every check raises `DefinitionError` naming the workflow, the
step and what to do about it; what compiles with something missing warns (`DefinitionWarning`).
"""

from __future__ import annotations

import ast
import difflib
import functools
import inspect
import os
import textwrap
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import msgspec
import msgspec.inspect

from .errors import DefinitionError, DefinitionWarning
from .limit import Backoff, Limit
from .outcome import OUTCOME_TYPES, Done
from .spec import END, AwaitSpec, MoveOverride, RetryPolicy, StepSpec, WorkflowSpec

RESERVED = frozenset(
    {"start", "start_many", "signal", "get", "result", "cancel", "new", "spec", "handle"}
)
"""Names the class API takes; a step may not use them."""

_TO_STEP = {"goto": 0}  # outcome constructor -> positional index of its step argument
_TO_SELF = {"retry", "reawait"}
_TO_END = {"done", "stop"}


def compile_workflow(
    cls: type,
    *,
    name: str | None,
    queue: str,
    priority: int,
    max_attempts: int,
    backoff: Backoff,
    lease: timedelta | None,
    state: type | None,
    result: type | None,
    step_mark: str,
    await_mark: str,
    version: int = 1,
    upgrade_mark: str | None = None,
) -> WorkflowSpec:
    """Compile the steps (and state upgrades) of `cls` into a frozen `WorkflowSpec`."""
    wf = name or cls.__qualname__
    where = f"workflow {wf!r}"
    _check_policy(where, queue, max_attempts, lease)
    if not _is_int(version) or version < 1:
        raise DefinitionError(f"{where}: version must be an int of at least 1, got {version!r}")

    state_type = state if state is not None else cls.__dict__.get("State")
    if state_type is not None and not _is_struct(state_type):
        raise DefinitionError(
            f"{where}: State must be a msgspec.Struct subclass, got {state_type!r}; "
            "declare `class State(msgspec.Struct): ...` inside the workflow"
        )
    result_type = result if result is not None else cls.__dict__.get("Result")
    result_decoder = _decoder(where, "Result", result_type)

    marked = [(n, f) for n, f in cls.__dict__.items() if callable(f)]
    for attr, fn in marked:
        if hasattr(fn, await_mark) and not hasattr(fn, step_mark):
            raise DefinitionError(
                f"{where}, {attr!r}: @await_signals is only allowed on a step; add @gd.step"
            )
    upgrades = _upgrades(where, marked, version, upgrade_mark, step_mark)
    step_fns = [(n, f) for n, f in marked if hasattr(f, step_mark)]
    if not step_fns:
        raise DefinitionError(f"{where} has no steps: mark at least one method with @gd.step")

    starts = [n for n, f in step_fns if getattr(f, step_mark).start]
    if len(starts) > 1:
        raise DefinitionError(
            f"{where} has two start steps ({', '.join(map(repr, starts))}): "
            "mark exactly one with @gd.step(start=True)"
        )
    start_step = starts[0] if starts else step_fns[0][0]

    names = [n for n, _ in step_fns]
    rate_limits: dict[str, Limit] = {}
    steps: dict[str, StepSpec] = {}
    unread: list[tuple[str, Any]] = []  # steps with no source and no `to=`: no edges known
    for step_name, fn in step_fns:
        at = f"{where}, step {step_name!r}"
        if step_name in RESERVED:
            raise DefinitionError(
                f"{at}: the name is taken by the class API ({', '.join(sorted(RESERVED))}); "
                "rename the step"
            )
        _check_own_name(at, fn, step_name)
        _check_params(at, fn, ("self", "state", "ctx"), "async def step(self, state, ctx)")
        opts = getattr(fn, step_mark)
        awaits = _await_spec(at, getattr(fn, await_mark, None))
        limit_name = _rate_limit(at, f"{wf}.{step_name}", opts.rate_limit, opts.weight, rate_limits)
        _check_partition(at, opts.partition, limit_name)
        _check_step_options(at, opts.max_attempts, opts.timeout)
        tree = _source_tree(fn)
        if tree is None and not opts.to:
            unread.append((step_name, fn))
        edges = _edges(at, tree, step_name, tuple(opts.to), names)
        steps[step_name] = StepSpec(
            name=step_name,
            fn=fn,
            is_async=inspect.iscoroutinefunction(fn),
            start=step_name == start_step,
            awaits=awaits,
            rate_limit=limit_name,
            weight=opts.weight,
            max_attempts=opts.max_attempts,
            timeout=opts.timeout,
            edges=edges,
            partition=opts.partition,
            spawns=_source_spawns(tree),
            overrides=_source_overrides(tree),
        )

    if unread:
        _warn_unread(where, unread)

    handler = cls.__dict__.get("handle")
    if handler is not None:
        _check_params(
            f"{where}, handle",
            handler,
            ("self", "error", "state", "ctx"),
            "def handle(self, error, state, ctx)",
        )
    return WorkflowSpec(
        name=wf,
        cls=cls,
        queue=queue,
        priority=priority,
        steps=MappingProxyType(steps),
        start_step=start_step,
        state_type=state_type,
        result_type=result_type,
        retry=RetryPolicy(max_attempts, backoff),
        lease=lease,
        rate_limits=MappingProxyType(rate_limits),
        handler=handler,
        state_decoder=_decoder(where, "State", state_type),
        result_decoder=result_decoder,
        version=version,
        upgrades=upgrades,
    )


def _upgrades(
    where: str,
    marked: list[tuple[str, Any]],
    version: int,
    upgrade_mark: str | None,
    step_mark: str,
) -> MappingProxyType[int, Callable[..., Any]]:
    """The `@upgrade` methods by `from_version`: one unbroken chain ending at `version`.

    The chain may start above 1 (rows of older versions are then refused at run time and
    reported by the deploy check), but may not skip a version: a row of the skipped one
    could never reach the current version.
    """
    found: dict[int, tuple[str, Callable[..., Any]]] = {}
    for attr, fn in marked:
        options = getattr(fn, upgrade_mark, None) if upgrade_mark else None
        if options is None:
            continue
        at = f"{where}, upgrade {attr!r}"
        if hasattr(fn, step_mark):
            raise DefinitionError(f"{at}: a method is a step or an upgrade, not both")
        if attr in RESERVED:
            raise DefinitionError(
                f"{at}: the name is taken by the class API ({', '.join(sorted(RESERVED))}); "
                "rename the upgrade"
            )
        start = options.from_version
        if not _is_int(start) or start < 1:
            raise DefinitionError(f"{at}: from_version must be an int of at least 1, got {start!r}")
        if start >= version:
            raise DefinitionError(
                f"{at}: from_version={start} must be below the workflow's version {version} "
                f"(it upgrades version {start} to {start + 1}); raise "
                f"@gd.workflow(version=...) to {start + 1}"
            )
        if start in found:
            raise DefinitionError(
                f"{at}: two upgrades from version {start} ({found[start][0]!r} and {attr!r}); "
                "keep one"
            )
        if inspect.iscoroutinefunction(fn):
            raise DefinitionError(
                f"{at}: an upgrade is a plain `def` (it turns stored JSON into JSON, with no "
                "I/O, whenever a row is read); write it as `def "
                f"{attr}(self, state)`"
            )
        _check_params(at, fn, ("self", "state"), f"def {attr}(self, state)")
        found[start] = (attr, fn)
    if found:
        missing = [v for v in range(min(found), version) if v not in found]
        if missing:
            chain = ", ".join(f"{v}->{v + 1} ({found[v][0]!r})" for v in sorted(found))
            raise DefinitionError(
                f"{where}: its upgrades ({chain}) skip version {missing[0]}: no "
                f"@gd.upgrade(from_version={missing[0]}) leads from version {missing[0]} to "
                f"{missing[0] + 1}, so a state could never reach version {version}; add it"
            )
    return MappingProxyType({v: fn for v, (_, fn) in sorted(found.items())})


def compile_job(
    fn: Callable[..., Any],
    *,
    name: str | None,
    queue: str,
    priority: int,
    max_attempts: int,
    backoff: Backoff,
    lease: timedelta | None,
    timeout: timedelta | None,
) -> WorkflowSpec:
    """Compile `perform(args, ctx)` into a one-step workflow named after the function."""
    wf = name or str(getattr(fn, "__qualname__", repr(fn)))
    where = f"job {wf!r}"
    _check_policy(where, queue, max_attempts, lease)
    if not callable(fn):
        raise DefinitionError(f"{where}: @gd.job decorates a function, got {fn!r}")
    _check_params(where, fn, ("args", "ctx"), "async def perform(args, ctx)")
    _check_step_options(where, None, timeout)
    args_type = _first_param_type(fn)
    if args_type is not None and not _is_struct(args_type):
        args_type = None  # only Struct annotations are enforced; others stay plain JSON
    step = StepSpec(
        name="perform",
        fn=_job_step(fn),
        is_async=inspect.iscoroutinefunction(fn),
        start=True,
        awaits=None,
        rate_limit=None,
        weight=1,
        max_attempts=None,
        timeout=timeout,
        edges=(END,),
    )
    return WorkflowSpec(
        name=wf,
        cls=None,
        queue=queue,
        priority=priority,
        steps=MappingProxyType({"perform": step}),
        start_step="perform",
        state_type=args_type,
        result_type=None,
        retry=RetryPolicy(max_attempts, backoff),
        lease=lease,
        rate_limits=MappingProxyType({}),
        handler=None,
        is_job=True,
        state_decoder=_decoder(where, "args", args_type),
    )


def _job_step(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Adapt `perform(args, ctx)` to a step: a returned value becomes `done(value)`."""

    def as_outcome(value: Any) -> Any:
        return value if isinstance(value, OUTCOME_TYPES) else Done(value)

    # wraps: the step keeps the job's name, module and docstring (the generated docs read them).
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def perform_async(_self: Any, args: Any, ctx: Any) -> Any:
            return as_outcome(await fn(args, ctx))

        return perform_async

    @functools.wraps(fn)
    def perform(_self: Any, args: Any, ctx: Any) -> Any:
        return as_outcome(fn(args, ctx))

    return perform


def _check_policy(where: str, queue: str, max_attempts: int, lease: timedelta | None) -> None:
    if not isinstance(queue, str) or not queue:
        raise DefinitionError(f"{where}: queue must be a non-empty string, got {queue!r}")
    if not _is_int(max_attempts) or max_attempts < 1:
        raise DefinitionError(f"{where}: max_attempts must be at least 1, got {max_attempts!r}")
    if lease is not None and (not isinstance(lease, timedelta) or lease <= timedelta(0)):
        raise DefinitionError(f"{where}: lease must be a positive timedelta, got {lease!r}")


def _check_step_options(where: str, max_attempts: int | None, timeout: timedelta | None) -> None:
    if max_attempts is not None and (not _is_int(max_attempts) or max_attempts < 1):
        raise DefinitionError(f"{where}: max_attempts must be at least 1, got {max_attempts!r}")
    if timeout is not None and (not isinstance(timeout, timedelta) or timeout <= timedelta(0)):
        raise DefinitionError(f"{where}: timeout must be a positive timedelta, got {timeout!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_own_name(where: str, fn: Any, attr: str) -> None:
    """Reject a step bound under a name other than its function's: `goto(self.x)` resolves
    a target by `__name__`, so the engine would look for a step that does not exist."""
    own = getattr(fn, "__name__", attr)
    if own == attr:
        return
    if own.startswith("__") and attr.endswith(own):
        raise DefinitionError(
            f"{where}: Python mangles names starting with two underscores, so the step "
            f"{own!r} is stored as {attr!r}; rename it to {own[1:]!r}"
        )
    raise DefinitionError(
        f"{where}: is bound to the function {own!r}, and goto(self.{attr}) would go to "
        f"{own!r}; define it as `def {attr}(self, state, ctx)` under its own name "
        "(a wrapping decorator needs functools.wraps)"
    )


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _decoder(where: str, what: str, tp: Any) -> msgspec.json.Decoder[Any]:
    if tp is None:
        return msgspec.json.Decoder()
    try:
        decoder = msgspec.json.Decoder(tp)
        info = msgspec.inspect.type_info(tp)
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"{where}: {what} type {tp!r} cannot be decoded: {exc}") from None
    if isinstance(info, msgspec.inspect.CustomType):  # accepted here, fails on every decode
        raise DefinitionError(
            f"{where}: {what} type {tp!r} cannot be decoded: msgspec does not know the class; "
            "make it a msgspec.Struct (or a dataclass)"
        )
    return decoder


def _check_params(where: str, fn: Any, expected: tuple[str, ...], shape: str) -> None:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        raise DefinitionError(
            f"{where}: cannot read its signature; write it as `{shape}`"
        ) from None
    positional = [
        p
        for p in params
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]
    extra = [p for p in params if p.kind in (p.KEYWORD_ONLY,) and p.default is p.empty]
    if len(positional) != len(expected) or extra:
        got = ", ".join(p.name for p in params)
        raise DefinitionError(
            f"{where}: takes ({got}) but must take {len(expected)} parameters "
            f"({', '.join(expected)}); write it as `{shape}`"
        )


def _await_spec(where: str, options: Any) -> AwaitSpec | None:
    if options is None:
        return None
    if not options.names:
        raise DefinitionError(
            f"{where}: @await_signals needs at least one signal name, "
            'e.g. @gd.await_signals("approved", rejected=Rejection)'
        )
    if len(set(options.names)) != len(options.names):
        raise DefinitionError(f"{where}: @await_signals names a signal twice: {options.names}")
    for n in options.names:
        if not isinstance(n, str) or not n:
            raise DefinitionError(f"{where}: signal names must be non-empty strings, got {n!r}")
        if "\x00" in n:  # PostgreSQL text cannot hold it: the park could never be stored
            raise DefinitionError(f"{where}: signal name {n!r} holds a NUL character")
    if options.timeout is not None and (
        not isinstance(options.timeout, timedelta) or options.timeout <= timedelta(0)
    ):
        raise DefinitionError(
            f"{where}: @await_signals timeout must be a positive timedelta, got {options.timeout!r}"
        )
    types = dict(options.types)
    decoders = {n: _decoder(where, f"payload of signal {n!r}", t) for n, t in types.items() if t}
    return AwaitSpec(
        tuple(options.names), MappingProxyType(types), options.timeout, MappingProxyType(decoders)
    )


def _rate_limit(
    where: str, inline_name: str, limit: Any, weight: Any, found: dict[str, Limit]
) -> str | None:
    if not _is_int(weight) or weight < 1:
        raise DefinitionError(f"{where}: weight must be a positive integer, got {weight!r}")
    if limit is None:
        return None
    if isinstance(limit, Limit):
        if weight > limit.capacity:
            raise DefinitionError(
                f"{where}: weight {weight} is above the burst {limit.capacity} of its rate "
                "limit, so it could never run; lower the weight or raise the limit's burst"
            )
        found[inline_name] = limit
        return inline_name
    if isinstance(limit, str) and limit:
        return limit
    raise DefinitionError(f"{where}: rate_limit must be a limit name or a gd.Limit, got {limit!r}")


def _check_partition(where: str, partition: Any, limit: str | None) -> None:
    if partition is None:
        return
    if not callable(partition):
        raise DefinitionError(
            f"{where}: partition must be a function of the state (lambda state: state.tenant), "
            f"got {partition!r}"
        )
    if limit is None:
        raise DefinitionError(
            f"{where}: partition= splits a rate limit into buckets, but the step has no "
            "rate_limit=; add one or drop partition="
        )


def _edges(
    where: str, tree: ast.AST | None, step: str, declared: tuple[str, ...], names: list[str]
) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for target in (*_source_targets(tree, step), *declared):
        if target != END and target not in names:
            hint = difflib.get_close_matches(target, names, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise DefinitionError(
                f"{where}: goes to unknown step {target!r}{suggestion} (steps: {', '.join(names)})"
            )
        found[target] = None
    return tuple(found)


def _source_tree(fn: Any) -> ast.AST | None:
    """The parsed source of `fn`; None without source (REPL, exec): only `to=` declares edges."""
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(fn)))
    except (OSError, TypeError, SyntaxError):
        return None


def _warn_unread(where: str, unread: list[tuple[str, Any]]) -> None:
    """One `DefinitionWarning` for the steps whose edges nothing declares, pointed at the
    user's code (the first frame outside this package), where the class is decorated."""
    steps = ", ".join(repr(name) for name, _ in unread)
    files = sorted({getattr(getattr(fn, "__code__", None), "co_filename", "?") for _, fn in unread})
    # `<stdin>`, `<string>`: code Python was handed as text; a real path whose file cannot be
    # read is a deployment without its .py files.
    why = "exec, stdin or a REPL" if all(f.startswith("<") for f in files) else "no .py file"
    plural = "s" if len(unread) > 1 else ""
    warnings.warn(
        f"{where}: the source of step{plural} {steps} cannot be read (defined in "
        f"{', '.join(files)}: {why}), so the compiler finds no edges there and "
        "the diagram and generated docs show none; declare them with "
        '@gd.step(to=[...]) (step names, "[*]" for done or stop)',
        DefinitionWarning,
        stacklevel=_outside_this_package(),
    )


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


def _outside_this_package() -> int:
    """The `stacklevel`, for a `warnings.warn` in the caller, of the first frame not in
    gendurable (however many of its frames lie between: `@gd.workflow` with or without
    arguments)."""
    frame = inspect.currentframe()
    level = 0
    while frame is not None and (level == 0 or frame.f_code.co_filename.startswith(_PACKAGE)):
        frame = frame.f_back
        level += 1
    return level


def _calls(tree: ast.AST) -> list[ast.Call]:
    """Every call in `tree`, in order of appearance."""
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
    calls.sort(key=lambda n: (n.lineno, n.col_offset))
    return calls


def _called(call: ast.Call) -> str | None:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)


def _source_targets(tree: ast.AST | None, step: str) -> Iterator[str]:
    """Targets of the outcome calls in a step's source, in order of appearance."""
    if tree is None:
        return
    for call in _calls(tree):
        called = _called(call)
        if called in _TO_END:
            yield END
        elif called in _TO_SELF:
            yield step
        elif called == "goto":
            arg = _argument(call, 0, "step")
            target = _target(arg)
            if target:
                yield target
        elif called == "spawn":
            target = _target(_argument(call, 1, "then"))
            if target:
                yield target


_OVERRIDES = ("rate_limit", "weight", "partition")
"""The options of `goto` that override the target step's rate limit for one move."""


def _source_overrides(tree: ast.AST | None) -> tuple[MoveOverride, ...]:
    """The `goto(...)` calls in a step's source that override their target's rate limit,
    with the options as written (for the generated docs)."""
    if tree is None:
        return ()
    found: dict[MoveOverride, None] = {}
    for call in _calls(tree):
        if _called(call) != "goto":
            continue
        target = _target(_argument(call, 0, "step"))
        options = tuple(
            (kw.arg, ast.unparse(kw.value)) for kw in call.keywords if kw.arg in _OVERRIDES
        )
        if target and options:
            found[MoveOverride(target, options)] = None
    return tuple(found)


def _source_spawns(tree: ast.AST | None) -> tuple[str, ...]:
    """The workflows a step spawns, as written: `X` of each `X.new(...)` inside a `spawn(...)`.

    The children may also be built before the call, in the variable `spawn` receives
    (`kids = [X.new(...) ...]`, `kids.append(X.new(...))`). References stay as written
    (`Child`, `jobs.send_mail`): the class may be defined after the step that spawns it.
    """
    if tree is None:
        return ()
    found: dict[str, None] = {}
    for call in _calls(tree):
        if _called(call) != "spawn":
            continue
        scopes: list[ast.AST] = [call]
        children = _argument(call, 0, "children")
        if isinstance(children, ast.Name):
            scopes += _built_in(tree, children.id)
        inner = [c for scope in scopes for c in _calls(scope)]
        for c in sorted(inner, key=lambda n: (n.lineno, n.col_offset)):
            ref = _dotted(c.func.value) if isinstance(c.func, ast.Attribute) else None
            if _called(c) == "new" and ref:
                found[ref] = None
    return tuple(found)


def _built_in(tree: ast.AST, variable: str) -> list[ast.AST]:
    """The expressions that fill `variable`: assigned to it, or appended or extended to it."""
    built: list[ast.AST] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign) and node.value:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == variable for t in targets):
                built.append(node.value)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("append", "extend", "insert")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == variable
        ):
            built.append(node)
    return built


def _dotted(node: ast.expr) -> str | None:
    """`a.b.c` for a chain of names and attributes; None for anything else."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


def _argument(call: ast.Call, index: int, keyword: str) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return call.args[index] if len(call.args) > index else None


def _target(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.attr if node.value.id in ("self", "cls") else None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _first_param_type(fn: Callable[..., Any]) -> Any:
    try:
        hints = inspect.get_annotations(fn, eval_str=True)
    except Exception:
        return None
    params = list(inspect.signature(fn).parameters)
    return hints.get(params[0]) if params else None
