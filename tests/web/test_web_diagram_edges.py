"""The dashboard's diagram draws exactly the arrows of `to_mermaid()`, each one visible.

For every example workflow and the README's `Expense`, the drawn arrows are read back from
the geometry of the SVG (`svg_edges`) and compared with the `a --> b` lines of the Mermaid
text.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

import gendurable as gd
from gendurable.spec import WorkflowSpec
from gendurable.web.diagram import diagram_svg
from svg_edges import MARKER, drawn_edges, mermaid_edges

ROOT = Path(__file__).resolve().parents[2]


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # msgspec resolves the Structs' annotations through it
    spec.loader.exec_module(module)
    return module


def _readme_module(directory: Path) -> ModuleType:
    """The README's first Python block, written to a real file (its steps' source is read)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^```python\n(.*?)^```$", text, re.DOTALL | re.MULTILINE)
    assert block is not None
    path = directory / "readme_expense.py"
    path.write_text(block.group(1))
    return _load(path, "gd_readme_expense")


def _specs(module: ModuleType) -> Iterator[WorkflowSpec]:
    for value in vars(module).values():
        spec = getattr(value, "spec", None)
        if isinstance(spec, WorkflowSpec) and spec.cls is value:
            yield spec


def _workflows() -> list[WorkflowSpec]:
    found: list[WorkflowSpec] = []
    for path in sorted((ROOT / "examples").glob("*.py")):
        found += _specs(_load(path, f"gd_diagram_example_{path.stem}"))
    return found


@pytest.fixture(scope="module")
def readme_expense(tmp_path_factory: pytest.TempPathFactory) -> WorkflowSpec:
    specs = list(_specs(_readme_module(tmp_path_factory.mktemp("readme"))))
    assert [s.name for s in specs] == ["Expense"]
    return specs[0]


# -- the tests --------------------------------------------------------------------------------


def test_web_diagram_has_workflows_to_compare() -> None:
    names = {s.name for s in _workflows()}
    assert {"hello", "expense", "orders.order", "orders.reserve", "tenants.call"} <= names


@pytest.mark.parametrize("spec", _workflows(), ids=lambda s: s.name)
def test_web_diagram_draws_the_mermaid_edges_of_every_example(spec: WorkflowSpec) -> None:
    assert Counter(drawn_edges(diagram_svg(spec))) == Counter(mermaid_edges(spec))


def test_web_diagram_draws_the_readme_decide_step_ending_and_moving_on(
    readme_expense: WorkflowSpec,
) -> None:
    drawn = drawn_edges(diagram_svg(readme_expense, current="decide", status="awaiting"))

    assert ("decide", MARKER) in drawn  # done or stop: the arrow to the end
    assert ("decide", "pay") in drawn
    assert Counter(drawn) == Counter(mermaid_edges(readme_expense))


def test_web_diagram_routes_a_long_edge_beside_the_steps_it_skips() -> None:
    @gd.workflow(name="diagram.skips")
    class Skips:
        @gd.step(start=True)
        async def a(self, state: object, ctx: gd.Context) -> gd.Outcome:
            if ctx.attempt:
                return gd.goto(self.d)
            return gd.goto(self.b)

        @gd.step
        async def b(self, state: object, ctx: gd.Context) -> gd.Outcome:
            return gd.goto(self.c)

        @gd.step
        async def c(self, state: object, ctx: gd.Context) -> gd.Outcome:
            if ctx.attempt:
                return gd.goto(self.a)
            return gd.goto(self.d)

        @gd.step
        async def d(self, state: object, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    assert Counter(drawn_edges(diagram_svg(Skips.spec))) == Counter(mermaid_edges(Skips.spec))


def test_web_diagram_routes_a_back_edge_around_the_steps_beside_it() -> None:
    @gd.workflow(name="diagram.beside")
    class Beside:
        @gd.step(start=True)
        async def a(self, state: object, ctx: gd.Context) -> gd.Outcome:
            if ctx.attempt:
                return gd.goto(self.c)
            return gd.goto(self.b)

        @gd.step
        async def b(self, state: object, ctx: gd.Context) -> gd.Outcome:
            if ctx.attempt:
                return gd.goto(self.a)  # back to a, with c beside b on its right
            return gd.done()

        @gd.step
        async def c(self, state: object, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    drawn = drawn_edges(diagram_svg(Beside.spec))

    assert ("b", "a") in drawn
    assert Counter(drawn) == Counter(mermaid_edges(Beside.spec))


def test_web_diagram_keeps_back_edges_of_the_first_and_last_layer_on_the_canvas() -> None:
    @gd.workflow(name="diagram.edges_of_the_canvas")
    class Endless:
        @gd.step
        async def orphan(self, state: object, ctx: gd.Context) -> gd.Outcome:
            # No edge reaches it (a computed goto could): it sits in the first layer.
            if ctx.attempt == 1:
                return gd.goto(self.one)
            if ctx.attempt == 2:
                return gd.goto(self.two)
            return gd.goto(self.three)

        @gd.step
        async def one(self, state: object, ctx: gd.Context) -> gd.Outcome:
            return gd.goto(self.orphan)

        @gd.step
        async def two(self, state: object, ctx: gd.Context) -> gd.Outcome:
            return gd.goto(self.orphan)

        @gd.step
        async def three(self, state: object, ctx: gd.Context) -> gd.Outcome:
            return gd.goto(self.orphan)

        @gd.step(start=True)
        async def a(self, state: object, ctx: gd.Context) -> gd.Outcome:
            return gd.goto(self.b)

        @gd.step
        async def b(self, state: object, ctx: gd.Context) -> gd.Outcome:
            return gd.goto(self.a)  # from the last layer: no end marker below it

    drawn = drawn_edges(diagram_svg(Endless.spec))

    # Four back edges, each in a lane of its own further into the gap it crosses: the last
    # ones run beyond the margin of the drawing, into room made for them.
    assert {("one", "orphan"), ("two", "orphan"), ("three", "orphan"), ("b", "a")} <= set(drawn)
    assert Counter(drawn) == Counter(mermaid_edges(Endless.spec))
