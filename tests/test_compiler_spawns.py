"""`StepSpec.spawns`: the workflows a step spawns, found in its source."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

import gendurable as gd

jobs = SimpleNamespace()  # stands for an imported module: `jobs.mail.new(...)`


@gd.workflow(name="spawner")
class Spawner:
    @gd.step
    async def literal(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.spawn([Child.new(key="a"), Other.new(key="b")], then=self.keyword)

    @gd.step
    async def keyword(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.spawn(children=[Child.new(key=k) for k in state], then="variable")

    @gd.step
    async def variable(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        kids = [Child.new(key=k) for k in state]
        kids.extend(Other.new(key=k) for k in state)
        kids += [jobs.mail.new({})]
        return gd.spawn(kids, then=self.none)

    @gd.step
    async def none(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        await ctx.engine.start_many([Child.new(key="not a child")])  # a start, not a spawn
        return gd.done()


@gd.workflow(name="child")
class Child:
    @gd.step
    async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


Other = Child


def test_compiler_spawns_from_a_literal_list_in_order() -> None:
    assert Spawner.spec.step("literal").spawns == ("Child", "Other")


def test_compiler_spawns_from_a_comprehension_passed_by_keyword() -> None:
    assert Spawner.spec.step("keyword").spawns == ("Child",)


def test_compiler_spawns_from_the_variable_spawn_receives() -> None:
    assert Spawner.spec.step("variable").spawns == ("Child", "Other", "jobs.mail")


def test_compiler_spawns_ignores_new_outside_a_spawn() -> None:
    assert Spawner.spec.step("none").spawns == ()


def test_compiler_spawns_empty_without_source() -> None:
    namespace: dict[str, Any] = {"gd": gd, "Any": Any}
    with pytest.warns(gd.DefinitionWarning, match="'nosource'"):
        exec(
            "@gd.workflow(name='nosource')\n"
            "class NoSource:\n"
            "    @gd.step\n"
            "    async def only(self, state, ctx):\n"
            "        return gd.spawn([Child.new()], then=self.only)\n",
            namespace,
        )
    assert namespace["NoSource"].spec.step("only").spawns == ()
