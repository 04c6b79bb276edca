"""Markdown pages generated from compiled workflows (`gendurable docs`, the mkdocs hook).

A page says what a user of the workflow needs without reading its code: the docstring, the
Mermaid state diagram, the steps with their timeouts, attempts and rate limits, the signals
each step awaits with their payload types, the children it spawns, and the fields of its
State and Result. Everything comes from the `WorkflowSpec`, so the page cannot drift from
the code; the pages are Markdown for mkdocs (Material renders the `mermaid` fences).

A workflow that a `gd.Schedule` starts says so on its page, with when. The spec does not
know its schedules: they are found in the module, as `gd.Schedule` values, lists of them,
or the `schedules=` of its `gd.Engine`s (`schedules_of`).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import re
import sys
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from .durations import format_duration
from .errors import ConfigError
from .schedule import Schedule
from .spec import END, StepSpec, WorkflowSpec
from .type_labels import type_label


def workflows_of(module: types.ModuleType) -> list[WorkflowSpec]:
    """The workflows and jobs `module` defines (not those it imports), in definition order."""
    found: dict[str, WorkflowSpec] = {}
    for obj in vars(module).values():
        spec = getattr(obj, "spec", None)
        if isinstance(spec, WorkflowSpec) and _owner(spec).__module__ == module.__name__:
            found.setdefault(spec.name, spec)
    return list(found.values())


def schedules_of(module: types.ModuleType) -> list[Schedule]:
    """The schedules `module` holds: `gd.Schedule` values, lists and tuples of them, and
    the `schedules=` of its engines; each once, in the order found."""
    found: dict[int, Schedule] = {}
    for obj in vars(module).values():
        config = getattr(obj, "config", None)
        candidates = getattr(config, "schedules", None) if config is not None else None
        if candidates is None:
            candidates = obj if isinstance(obj, list | tuple) else [obj]
        for item in candidates:
            if isinstance(item, Schedule):
                found.setdefault(id(item), item)
    return list(found.values())


def load_module(target: str) -> types.ModuleType:
    """Import `target`, a module name (`app.flows`) or the path of a `.py` file.

    Raises `ConfigError` saying why when it cannot be imported.
    """
    path = Path(target)
    if target.endswith(".py") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"no such file: {target}")
        name = path.stem
        loaded = getattr(sys.modules.get(name), "__file__", None)
        if loaded is not None and Path(loaded).resolve() != path.resolve():
            name = f"gendurable_docs_{name}"  # never shadow another module of that name
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot import {target}: not a Python module")
        module = importlib.util.module_from_spec(spec)
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)  # like `python file.py`: its neighbours import
        sys.modules[name] = module  # dataclasses and msgspec look their module up by name
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise ConfigError(f"cannot import {target}: {type(exc).__name__}: {exc}") from None
        return module
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules of the working directory import
    try:
        return importlib.import_module(target)
    except Exception as exc:
        raise ConfigError(f"cannot import {target!r}: {type(exc).__name__}: {exc}") from None


def write_pages(module: types.ModuleType, directory: Path) -> list[Path]:
    """Write one page per workflow of `module` into `directory`; the paths written.

    Raises `ConfigError` when the module defines no workflow.
    """
    specs = workflows_of(module)
    if not specs:
        raise ConfigError(
            f"{module.__name__!r} defines no workflow: decorate a class with @gd.workflow "
            "or a function with @gd.job"
        )
    directory.mkdir(parents=True, exist_ok=True)
    schedules = schedules_of(module)
    written = []
    for spec in specs:
        path = directory / f"{page_name(spec.name)}.md"
        path.write_text(workflow_page(spec, schedules=schedules))
        written.append(path)
    return written


def page_name(workflow: str) -> str:
    """A file name for `workflow`'s page: its name with anything unsafe replaced by `_`."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", workflow).strip(".") or "workflow"


def module_page(module: types.ModuleType, *, source: str | None = None) -> str:
    """One page for a whole module (the mkdocs site's example pages).

    The first sentence of the module docstring is the title (however many lines it wraps
    over) and the rest its introduction; every workflow follows as a section; `source`,
    when given, ends the page in a folded block.
    """
    title, intro = _title_and_intro(inspect.cleandoc(module.__doc__ or module.__name__))
    out = [f"# {title}", ""]
    if intro.strip():
        out += [intro.strip("\n"), ""]  # keep the indentation of a leading code block
    schedules = schedules_of(module)
    for spec in workflows_of(module):
        out.append(workflow_page(spec, level=2, schedules=schedules))
    if source is not None:
        file = getattr(module, "__file__", None) or module.__name__
        out += [f'??? example "Source: {Path(file).name}"', ""]
        out += [_indent(f"```python\n{source.rstrip()}\n```"), ""]
    return "\n".join(out)


def _title_and_intro(doc: str) -> tuple[str, str]:
    """The first sentence of `doc` (its first paragraph joined into one line, up to a
    sentence end), without its final period, and the text after it."""
    paragraph, blank, rest = doc.partition("\n\n")
    joined = " ".join(line.strip() for line in paragraph.splitlines())
    end = _SENTENCE_END.search(joined)
    title, more = (joined[: end.end()], joined[end.end() :].lstrip()) if end else (joined, "")
    intro = "\n\n".join(part for part in (more, rest) if part) if blank or more else ""
    return title.rstrip(".").strip(), intro


_SENTENCE_END = re.compile(r"[.!?](?=\s+[A-Z`(\"'])")
"""Where a first sentence ends: a stop before the capital (or quote) that starts the next."""


def workflow_page(spec: WorkflowSpec, *, level: int = 1, schedules: Sequence[Schedule] = ()) -> str:
    """The Markdown page of one workflow (or job); its title is a heading of `level`.

    Those of `schedules` that start it are listed under "Schedule".
    """
    h = "#" * level
    kind = "Job" if spec.is_job else "Workflow"
    out = [f"{h} {spec.name}", ""]
    out += [_summary(spec, kind), ""]
    doc = _docstring(spec)
    if doc:
        out += [doc, ""]
    own = [s for s in schedules if s.workflow == spec.name]
    if own:
        out += [f"{h}# Schedule", "", *_schedules_table(own), ""]
    out += [f"{h}# Diagram", "", "```mermaid", spec.to_mermaid().rstrip(), "```", ""]
    out += [f"{h}# Steps", "", *_steps_table(spec), ""]
    awaits = _awaits_table(spec)
    if awaits:
        out += [f"{h}# Signals", "", *awaits, ""]
        for tp in _payload_structs(spec):
            out += [f"{h}## `{type_label(tp)}`", "", *_fields(tp, "payload"), ""]
    children = _children_table(spec)
    if children:
        out += [f"{h}# Children", "", *children, ""]
    state_title = "Arguments" if spec.is_job else "State"
    out += [f"{h}# {state_title}", "", *_fields(spec.state_type, state_title.lower()), ""]
    if spec.version > 1:
        out += [f"{h}# State upgrades", "", *_upgrades(spec), ""]
    if not spec.is_job:
        out += [f"{h}# Result", "", *_fields(spec.result_type, "result"), ""]
    return "\n".join(out)


# -- parts of a page -----------------------------------------------------------------------


def _summary(spec: WorkflowSpec, kind: str) -> str:
    where = _qualified_name(spec)
    parts = [
        f"{kind} `{spec.name}`"
        + (f", defined as `{where}`" if where not in ("", spec.name) else ""),
        f"queue `{spec.queue}`",
        f"priority {spec.priority}",
        f"max attempts {spec.retry.max_attempts}",
    ]
    if spec.lease is not None:
        parts.append(f"lease {format_duration(spec.lease, words=True)}")
    if spec.version > 1:
        parts.append(f"state version {spec.version}")
    if not spec.is_job:
        parts.append(f"starts at `{spec.start_step}`")
    return ", ".join(parts) + "."


MISSED_WORDS = {
    "skip": "skipped",
    "latest": "the latest one starts",
    "all": "each starts, at most {catch_up}",
}


def _schedules_table(schedules: Sequence[Schedule]) -> list[str]:
    """When the workflow starts by itself: one row per schedule."""
    rows = [
        "| schedule | starts | ticks missed while no engine ran | instance keys |",
        "| --- | --- | --- | --- |",
    ]
    for schedule in schedules:
        missed = MISSED_WORDS[schedule.missed].format(catch_up=schedule.catch_up)
        rows.append(
            f"| `{schedule.name}` | {schedule.describe()} | {missed} | `{schedule.name}@<tick>` |"
        )
    return rows


def _upgrades(spec: WorkflowSpec) -> list[str]:
    """The `@gd.upgrade` chain that carries older stored states to the current version."""
    if not spec.upgrades:
        return [
            f"States are stored at version {spec.version}. No `@gd.upgrade` is declared: "
            "rows of older versions cannot run (`gendurable check` reports them)."
        ]
    oldest = min(spec.upgrades)
    lines = [
        f"States are stored at version {spec.version}; older ones are upgraded, in order, "
        "before a step sees them"
        + (f" (versions below {oldest} cannot be)." if oldest > 1 else "."),
        "",
        "| from | to | upgrade | what it does |",
        "| --- | --- | --- | --- |",
    ]
    for start, fn in spec.upgrades.items():
        doc = inspect.getdoc(fn) or ""
        summary = doc.split("\n\n", 1)[0].replace("\n", " ").replace("|", "\\|")
        lines.append(f"| {start} | {start + 1} | `{fn.__name__}` | {summary} |")
    return lines


def _docstring(spec: WorkflowSpec) -> str:
    doc = getattr(_owner(spec), "__doc__", None)
    return inspect.cleandoc(doc) if isinstance(doc, str) and doc.strip() else ""


def _steps_table(spec: WorkflowSpec) -> list[str]:
    rows = [
        "| step | timeout | max attempts | rate limit | awaits | goes to |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for step in spec.steps.values():
        name = f"`{step.name}`" + (" (start)" if step.start and not spec.is_job else "")
        timeout = format_duration(step.timeout, words=True) if step.timeout else ""
        attempts = str(step.max_attempts or spec.retry.max_attempts)
        awaits = ", ".join(f"`{n}`" for n in step.awaits.names) if step.awaits else ""
        targets = ", ".join("end" if t == END else f"`{t}`" for t in step.edges)
        cells = [name, timeout, attempts, _rate_limit(spec, step), awaits, targets]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def _rate_limit(spec: WorkflowSpec, step: StepSpec) -> str:
    """The step's own rate limit, then the moves into it that override it (`goto(...,
    weight=2)` from another step), as written."""
    own = _own_rate_limit(spec, step)
    moves = [
        f"from `{source.name}`: "
        + ", ".join(f"`{name}={value}`".replace("|", "\\|") for name, value in move.options)
        for source in spec.steps.values()
        for move in source.overrides
        if move.target == step.name
    ]
    return "; ".join([own, *moves] if own else moves)


def _own_rate_limit(spec: WorkflowSpec, step: StepSpec) -> str:
    if step.rate_limit is None:
        return ""
    limit = spec.rate_limits.get(step.rate_limit)
    text = f"`{step.rate_limit}`" if limit is None else "inline"
    if limit is not None:
        burst = f", burst {limit.capacity}" if limit.burst is not None else ""
        text += f" ({limit.allowed} per {format_duration(limit.per, words=True)}{burst})"
    text += f", weight {step.weight}"
    # `partition` arrives with per-tenant rate limits; shown whenever the spec has it.
    partition = getattr(step, "partition", None)
    if partition is not None:
        text += f", partition by `{_callable_name(partition)}`"
    return text


def _awaits_table(spec: WorkflowSpec) -> list[str]:
    rows = []
    for step in spec.steps.values():
        if step.awaits is None:
            continue
        timeout = (
            format_duration(step.awaits.timeout, words=True) if step.awaits.timeout else "none"
        )
        for name in step.awaits.names:
            tp = step.awaits.types.get(name)
            payload = f"`{type_label(tp)}`" if tp is not None else "any JSON"
            rows.append(f"| `{step.name}` | `{name}` | {payload} | {timeout} |")
    if not rows:
        return []
    return ["| step | signal | payload | timeout |", "| --- | --- | --- | --- |", *rows]


def _children_table(spec: WorkflowSpec) -> list[str]:
    rows = []
    for step in spec.steps.values():
        if not step.spawns:
            continue
        names = ", ".join(f"`{spawned_workflow(step, ref)}`" for ref in step.spawns)
        rows.append(f"| `{step.name}` | {names} |")
    if not rows:
        return []
    return ["| step | spawns |", "| --- | --- |", *rows]


def _payload_structs(spec: WorkflowSpec) -> list[Any]:
    """The Struct payload types of the awaited signals, each once, in step order."""
    seen: dict[Any, None] = {}
    for step in spec.steps.values():
        for tp in step.awaits.types.values() if step.awaits else ():
            if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
                seen[tp] = None
    return list(seen)


def spawned_workflow(step: StepSpec, reference: str) -> str:
    """The workflow name `reference` (as written in `step`'s source) stands for.

    Resolved in the step's module at call time (the spawned class may be defined after the
    step); the reference itself when it does not resolve to a workflow.
    """
    scope: Any = getattr(step.fn, "__globals__", {})
    obj: Any = None
    for i, part in enumerate(reference.split(".")):
        obj = scope.get(part) if i == 0 else getattr(obj, part, None)
        if obj is None:
            return reference
    spec = getattr(obj, "spec", None)
    return spec.name if isinstance(spec, WorkflowSpec) else reference


def _fields(tp: Any, what: str) -> list[str]:
    if tp is None:
        how = {
            "arguments": "annotate `args` with a msgspec Struct",
            "payload": "declare `name=Type` in `@gd.await_signals`",
        }.get(what, f"declare a nested `{what.title()}` Struct")
        return [f"Untyped: any JSON value ({how} to type it)."]
    if not (isinstance(tp, type) and issubclass(tp, msgspec.Struct)):
        return [f"`{type_label(tp)}`"]
    try:
        fields = msgspec.structs.fields(tp)
    except Exception:  # an annotation that does not resolve: show the Struct by name only
        return [f"`{type_label(tp)}` (its fields could not be read)"]
    if not fields:
        return [f"`{type_label(tp)}`, with no fields."]
    rows = ["| field | type | default |", "| --- | --- | --- |"]
    for f in fields:
        rows.append(f"| `{f.encode_name}` | `{type_label(f.type)}` | {_default(f)} |")
    return rows


def _default(field: msgspec.structs.FieldInfo) -> str:
    if field.required:
        return "required"
    if field.default is not msgspec.NODEFAULT:
        return f"`{field.default!r}`"
    return f"`{_callable_name(field.default_factory)}()`"


# -- formatting ----------------------------------------------------------------------------


def _callable_name(fn: Callable[..., Any] | None) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    return str(name)


def _qualified_name(spec: WorkflowSpec) -> str:
    """The class or function the workflow was defined as (without its module, which depends
    on how the code was imported)."""
    name = getattr(_owner(spec), "__qualname__", None)
    return name if isinstance(name, str) else ""


def _owner(spec: WorkflowSpec) -> Any:
    """What the spec was compiled from: the workflow class, or the job's function."""
    if spec.cls is not None:
        return spec.cls
    step = spec.steps[spec.start_step].fn
    return getattr(step, "__wrapped__", step)


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line if line else line for line in text.splitlines())
