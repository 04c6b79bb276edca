"""Property: for any valid generated definition, compiling is deterministic, finds exactly the
edges written in the source (or declared with `to=`), and renders a diagram that names every
step and every edge; the dashboard's SVG draws the same edges, none of them behind a step.

Definitions are generated as source text. The first variant writes it to a real file and
imports it, so the compiler's source analysis reads it; the second `exec`s it, where there is
no source and only `to=` declares edges (and a step without `to=` is warned about).
"""

import importlib.util
import itertools
import keyword
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import gendurable as gd
from gendurable.compiler import RESERVED
from gendurable.docgen import workflow_page
from gendurable.spec import END, WorkflowSpec
from gendurable.web.diagram import diagram_svg
from svg_edges import drawn_edges, mermaid_edges

# Names the generated class body itself uses; a step called `gd` would shadow the module.
CLASS_BODY_NAMES = frozenset({"gd", "timedelta"})

EDGE_LINE = re.compile(r" {4}(\S+) --> (\S+)")
AWAIT_LINE = re.compile(r" {4}(\S+) : awaits [^:;\n]+")  # Mermaid ends a description at ':'
TITLE_LINE = re.compile(r" {4}(\S+) : \1")  # an awaiting step's name, kept as its title
STATE_LINE = re.compile(r" {4}(\S+)")

_module_ids = itertools.count()


def _identifier(pattern: str) -> st.SearchStrategy[str]:
    return st.from_regex(pattern, fullmatch=True).filter(lambda n: not keyword.iskeyword(n))


step_names = _identifier(r"_?[a-z][a-z0-9_]{0,10}").filter(
    lambda n: n not in RESERVED and n not in CLASS_BODY_NAMES
)
signal_names = _identifier(r"[a-z][a-z0-9_]{0,8}")
timeouts = st.timedeltas(min_value=timedelta(microseconds=1), max_value=timedelta(days=400))

TARGETED = ("goto_attr", "goto_str", "goto_kw", "spawn_then", "spawn_pos")
UNTARGETED = ("done", "stop", "retry")


@dataclass(frozen=True)
class StepDef:
    name: str
    start: bool
    outcomes: tuple[tuple[str, str], ...]  # (kind, target); target unused when untargeted
    to: tuple[str, ...]
    signals: tuple[str, ...]
    typed_signals: tuple[str, ...]  # rendered as `name=None`, after the positional ones
    timeout: timedelta | None
    awaits_above_step: bool

    def expected_edges(self, from_source: bool) -> tuple[str, ...]:
        found: list[str] = []
        if from_source:
            for kind, target in self.outcomes:
                if kind in TARGETED:
                    found.append(target)
                elif kind in ("done", "stop"):
                    found.append(END)
                else:  # retry, reawait
                    found.append(self.name)
        found.extend(self.to)
        return tuple(dict.fromkeys(found))

    @property
    def awaited(self) -> tuple[str, ...]:
        return self.signals + self.typed_signals


@st.composite
def definitions(draw: st.DrawFn) -> list[StepDef]:
    names = draw(st.lists(step_names, min_size=1, max_size=8, unique=True))
    start = draw(st.none() | st.sampled_from(names))
    steps = []
    for name in names:
        awaited = draw(st.lists(signal_names, max_size=3, unique=True))
        n_typed = draw(st.integers(0, len(awaited)))
        kinds = TARGETED + UNTARGETED + (("reawait",) if awaited else ())
        outcome = st.tuples(st.sampled_from(kinds), st.sampled_from(names))
        steps.append(
            StepDef(
                name=name,
                start=name == start,
                outcomes=tuple(draw(st.lists(outcome, min_size=1, max_size=4))),
                to=tuple(draw(st.lists(st.sampled_from(names), max_size=3))),
                signals=tuple(awaited[n_typed:]),
                typed_signals=tuple(awaited[:n_typed]),
                timeout=draw(st.none() | timeouts) if awaited else None,
                awaits_above_step=draw(st.booleans()),
            )
        )
    return steps


def _outcome_source(kind: str, target: str) -> str:
    return {
        "goto_attr": f"gd.goto(self.{target})",
        "goto_str": f"gd.goto({target!r})",
        "goto_kw": f"gd.goto(step=self.{target})",
        "spawn_then": f"gd.spawn([], then=self.{target})",
        "spawn_pos": f"gd.spawn([], {target!r})",
        "done": "gd.done()",
        "stop": 'gd.stop("chosen")',
        "retry": "gd.retry()",
        "reawait": "gd.reawait()",
    }[kind]


def _decorators(step: StepDef) -> list[str]:
    options = []
    if step.start:
        options.append("start=True")
    if step.to:
        options.append(f"to={list(step.to)!r}")
    step_line = f"@gd.step({', '.join(options)})" if options else "@gd.step"
    if not step.awaited:
        return [step_line]
    args = [repr(n) for n in step.signals] + [f"{n}=None" for n in step.typed_signals]
    if step.timeout is not None:
        t = step.timeout
        args.append(f"timeout=timedelta({t.days}, {t.seconds}, {t.microseconds})")
    await_line = f"@gd.await_signals({', '.join(args)})"
    return [await_line, step_line] if step.awaits_above_step else [step_line, await_line]


def render(steps: list[StepDef], *, with_bodies: bool) -> str:
    """The source of a module defining an undecorated class `Flow` with these steps."""
    lines = ["from datetime import timedelta", "", "import gendurable as gd", "", "", "class Flow:"]
    for step in steps:
        lines += [f"    {d}" for d in _decorators(step)]
        lines.append(f"    async def {step.name}(self, state, ctx):")
        outcomes = step.outcomes if with_bodies else (("done", ""),)
        *guarded, last = outcomes
        for attempt, (kind, target) in enumerate(guarded):
            lines.append(f"        if ctx.attempt == {attempt}:")
            lines.append(f"            return {_outcome_source(kind, target)}")
        lines.append(f"        return {_outcome_source(*last)}")
        lines.append("")
    return "\n".join(lines)


def load_file(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"gd_generated_{next(_module_ids)}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_exec(source: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"gd_generated_{next(_module_ids)}"}
    exec(compile(source, "<generated workflow>", "exec"), namespace)
    return namespace


def mermaid_states(diagram: str) -> Iterator[str]:
    """Every state a diagram names; fails on a line outside the subset the spec renders."""
    for line in diagram.splitlines()[1:]:
        match = EDGE_LINE.fullmatch(line)
        if match:
            yield from match.groups()
            continue
        match = (
            AWAIT_LINE.fullmatch(line) or TITLE_LINE.fullmatch(line) or STATE_LINE.fullmatch(line)
        )
        assert match, f"not a Mermaid state line: {line!r}"
        yield match.group(1)


def check_spec(spec: WorkflowSpec, steps: list[StepDef], *, from_source: bool) -> None:
    starts = [s.name for s in steps if s.start]
    start = starts[0] if starts else steps[0].name
    assert list(spec.steps) == [s.name for s in steps]
    assert spec.start_step == start
    expected_edges = []
    for step in steps:
        compiled = spec.step(step.name)
        assert compiled.edges == step.expected_edges(from_source)
        expected_edges += [(step.name, t) for t in compiled.edges]
        if step.awaited:
            assert compiled.awaits is not None
            assert compiled.awaits.names == step.awaited
            assert compiled.awaits.timeout == step.timeout
        else:
            assert compiled.awaits is None
    assert spec.edges() == expected_edges

    diagram = spec.to_mermaid()
    lines = diagram.splitlines()
    assert lines[:2] == ["stateDiagram-v2", f"    [*] --> {start}"]
    assert set(mermaid_states(diagram)) >= {s.name for s in steps}
    assert [line for line in lines if " --> " in line] == [f"    [*] --> {start}"] + [
        f"    {a} --> {b}" for a, b in expected_edges
    ]
    assert Counter(drawn_edges(diagram_svg(spec))) == Counter(mermaid_edges(spec))


def compile_twice(cls: type) -> tuple[WorkflowSpec, WorkflowSpec]:
    first = gd.workflow(name="flow")(cls).spec
    second = gd.workflow(name="flow")(cls).spec
    return first, second


def assert_same(a: WorkflowSpec, b: WorkflowSpec) -> None:
    assert a == b
    assert a is not b
    assert (list(a.steps), a.edges(), a.start_step) == (list(b.steps), b.edges(), b.start_step)
    assert a.to_mermaid() == b.to_mermaid()
    assert workflow_page(a) == workflow_page(b)


@pytest.fixture(scope="module")
def flow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("generated_flows")


@settings(max_examples=60, deadline=None)
@given(steps=definitions())
def test_compiler_source_edges_deterministic_and_drawn(
    flow_dir: Path, steps: list[StepDef]
) -> None:
    # A fresh file per example: linecache would serve a stale copy of a rewritten one.
    path = flow_dir / f"flow_{next(_module_ids)}.py"
    path.write_text(render(steps, with_bodies=True))
    first_module, second_module = load_file(path), load_file(path)

    first, again = compile_twice(first_module.Flow)
    second = gd.workflow(name="flow")(second_module.Flow).spec
    assert_same(first, again)
    assert_same(first, second)
    check_spec(first, steps, from_source=True)


@settings(max_examples=60, deadline=None)
@given(steps=definitions())
def test_compiler_declared_edges_deterministic_and_drawn(steps: list[StepDef]) -> None:
    namespace = load_exec(render(steps, with_bodies=False))

    unread = [s.name for s in steps if not s.to]
    if unread:  # no source and no `to=`: one warning per compile, naming exactly those steps
        with pytest.warns(gd.DefinitionWarning) as caught:
            first, again = compile_twice(namespace["Flow"])
        assert len(caught) == 2
        named = re.search(r"the source of steps? (.*) cannot be read", str(caught[0].message))
        assert named is not None
        assert named.group(1) == ", ".join(map(repr, unread))
    else:  # every step declares `to=`: silent (the suite turns a warning into an error)
        first, again = compile_twice(namespace["Flow"])
    assert_same(first, again)
    check_spec(first, steps, from_source=False)
