"""State upgrades without a database: the compiler refuses a bad chain at import, naming the
workflow and the method; `upgrade_state` runs a good one in order on plain JSON."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec
import pytest

import gendurable as gd
from gendurable.upgrader import uncovered, upgrade_state


@contextmanager
def definition_error(*fragments: str) -> Iterator[None]:
    """Expect a `DefinitionError` whose message contains every fragment."""
    with pytest.raises(gd.DefinitionError) as info:
        yield
    message = str(info.value)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"{missing} not in {message!r}"


def flow(version: int, **upgrades: Any) -> Any:
    """An undecorated workflow class with one step and the given upgrade methods."""

    async def run(self: Any, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    return type("Flow", (), {"run": gd.step(run), **upgrades})


def up(from_version: int) -> Any:
    """A well-formed upgrade from `from_version` that records its version in the state."""

    def fn(self: Any, state: Any) -> Any:
        return {**state, "trail": [*state.get("trail", []), from_version]}

    return gd.upgrade(from_version=from_version)(fn)


# -- the compiler ----------------------------------------------------------------------------


def test_upgrade_chain_with_a_gap_names_the_missing_version() -> None:
    with definition_error(
        "workflow 'order': its upgrades (1->2 ('one'), 3->4 ('three')) skip version 2",
        "no @gd.upgrade(from_version=2) leads from version 2 to 3",
        "a state could never reach version 4; add it",
    ):
        gd.workflow(name="order", version=4)(flow(4, one=up(1), three=up(3)))


def test_upgrade_chain_that_stops_before_the_version_is_a_gap() -> None:
    with definition_error("workflow 'order'", "skip version 2"):
        gd.workflow(name="order", version=3)(flow(3, one=up(1)))


@pytest.mark.parametrize(("version", "start"), [(2, 2), (2, 3), (1, 1)])
def test_upgrade_from_version_not_below_the_version_fails(version: int, start: int) -> None:
    with definition_error(
        "workflow 'order', upgrade 'late'",
        f"from_version={start} must be below the workflow's version {version}",
        f"raise @gd.workflow(version=...) to {start + 1}",
    ):
        gd.workflow(name="order", version=version)(flow(version, late=up(start)))


def test_two_upgrades_from_one_version_name_both_methods() -> None:
    with definition_error(
        "workflow 'order', upgrade 'again': two upgrades from version 1 ('first' and 'again')",
        "keep one",
    ):
        gd.workflow(name="order", version=2)(flow(2, first=up(1), again=up(1)))


@pytest.mark.parametrize("start", [0, -1, "1", 1.0, True, None])
def test_upgrade_from_version_not_a_positive_int_fails(start: Any) -> None:
    with definition_error(
        "workflow 'order', upgrade 'bad'",
        f"from_version must be an int of at least 1, got {start!r}",
    ):
        gd.workflow(name="order", version=3)(flow(3, bad=up(start)))


@pytest.mark.parametrize("version", [0, -2, "2", 2.0, False])
def test_workflow_version_not_a_positive_int_fails(version: Any) -> None:
    with definition_error(
        "workflow 'order': version must be an int of at least 1", f"got {version!r}"
    ):
        gd.workflow(name="order", version=version)(flow(1))


def test_upgrade_with_a_wrong_signature_shows_the_shape() -> None:
    def extra(self: Any, state: Any, ctx: Any) -> Any:
        return state

    with definition_error(
        "workflow 'order', upgrade 'extra': takes (self, state, ctx)",
        "must take 2 parameters (self, state); write it as `def extra(self, state)`",
    ):
        gd.workflow(name="order", version=2)(flow(2, extra=gd.upgrade(from_version=1)(extra)))


def test_upgrade_written_async_asks_for_a_plain_def() -> None:
    async def fetch(self: Any, state: Any) -> Any:
        return state

    with definition_error(
        "workflow 'order', upgrade 'fetch': an upgrade is a plain `def`",
        "write it as `def fetch(self, state)`",
    ):
        gd.workflow(name="order", version=2)(flow(2, fetch=gd.upgrade(from_version=1)(fetch)))


def test_upgrade_that_is_also_a_step_fails() -> None:
    def both(self: Any, state: Any) -> Any:
        return state

    marked = gd.step(gd.upgrade(from_version=1)(both))
    with definition_error("workflow 'order', upgrade 'both': a method is a step or an upgrade"):
        gd.workflow(name="order", version=2)(flow(2, both=marked))


def test_upgrade_with_a_class_api_name_asks_for_rename() -> None:
    with definition_error(
        "workflow 'order', upgrade 'get': the name is taken by the class API", "rename the upgrade"
    ):
        gd.workflow(name="order", version=2)(flow(2, get=up(1)))


def test_upgrade_bare_decorator_asks_for_the_version() -> None:
    with definition_error("@gd.upgrade needs the version it upgrades from", "from_version=1"):

        @gd.upgrade
        def v1(self: Any, state: Any) -> Any:
            return state


def test_upgrade_chain_may_start_above_one() -> None:
    spec = gd.workflow(name="order", version=4)(flow(4, two=up(2), three=up(3))).spec

    assert spec.version == 4
    assert list(spec.upgrades) == [2, 3]
    assert uncovered(spec, 1) == (
        "its state is of version 1 and this code's is 4, but its oldest upgrade starts from "
        "version 2: add @gd.upgrade(from_version=1)"
    )


def test_workflow_without_version_is_version_one_without_upgrades() -> None:
    spec = gd.workflow(name="order")(flow(1)).spec

    assert spec.version == 1
    assert dict(spec.upgrades) == {}


# -- running a chain -------------------------------------------------------------------------


@gd.workflow(name="person", version=3)
class Person(gd.Workflow):
    """v1 stored {"name": "Ada Lovelace"}; v2 split the name; v3 added a currency."""

    class State(msgspec.Struct):
        first: str
        last: str
        currency: str

    @gd.step
    async def run(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    @gd.upgrade(from_version=1)
    def split_name(self, state: dict[str, Any]) -> dict[str, Any]:
        first, _, last = state.pop("name").partition(" ")
        return {**state, "first": first, "last": last}

    @gd.upgrade(from_version=2)
    def add_currency(self, state: dict[str, Any]) -> dict[str, Any]:
        return {**state, "currency": "EUR"}


def test_upgrade_state_applies_the_chain_in_order() -> None:
    data = upgrade_state(Person.spec, b'{"name":"Ada Lovelace"}', 1, Person(), what="instance 1")

    assert data is not None
    assert Person.spec.state_decoder.decode(data) == Person.State("Ada", "Lovelace", "EUR")


def test_upgrade_state_from_the_middle_of_the_chain_runs_only_the_rest() -> None:
    data = upgrade_state(Person.spec, b'{"first":"A","last":"B"}', 2, Person(), what="instance 1")

    assert data == b'{"first":"A","last":"B","currency":"EUR"}'


def test_upgrade_state_at_the_current_version_is_untouched() -> None:
    raw = b'{"first":"A","last":"B","currency":"USD"}'

    assert upgrade_state(Person.spec, raw, 3, Person(), what="instance 1") is raw


def test_each_upgrade_sees_plain_json_as_stored() -> None:
    seen: list[Any] = []

    @gd.workflow(name="tuples", version=3)
    class Tuples(gd.Workflow):
        @gd.step
        async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

        @gd.upgrade(from_version=1)
        def one(self, state: Any) -> Any:
            return {"items": (1, 2)}  # a tuple: stored as a JSON array

        @gd.upgrade(from_version=2)
        def two(self, state: Any) -> Any:
            seen.append(state)
            return state

    upgrade_state(Tuples.spec, b"{}", 1, Tuples(), what="instance 1")

    assert seen == [{"items": [1, 2]}]


@pytest.mark.parametrize(
    ("stored", "message"),
    [
        (
            4,
            "person instance 7: its state was written by version 4 of the workflow, newer than "
            "this code's version 3: run it with the newer code",
        ),
        (
            0,
            "person instance 7: its state is of version 0 and this code's is 3, but its oldest "
            "upgrade starts from version 1: add @gd.upgrade(from_version=0)",
        ),
    ],
)
def test_upgrade_state_without_a_path_says_why(stored: int, message: str) -> None:
    with pytest.raises(gd.StateUpgradeError) as info:
        upgrade_state(Person.spec, b"{}", stored, Person(), what="instance 7")

    assert str(info.value) == message
    assert (info.value.stored_version, info.value.version) == (stored, 3)


def test_upgrade_that_raises_is_named_with_its_versions() -> None:
    with pytest.raises(gd.StateUpgradeError) as info:
        upgrade_state(Person.spec, b'{"nom":"Ada"}', 1, Person(), what="instance 7")

    assert str(info.value) == (
        "person instance 7: upgrade 'split_name' from version 1 to 2 failed: KeyError: 'name'"
    )
    assert isinstance(info.value.__cause__, KeyError)


def test_upgrade_that_returns_none_is_refused() -> None:
    @gd.workflow(name="forgetful", version=2)
    class Forgetful(gd.Workflow):
        @gd.step
        async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

        @gd.upgrade(from_version=1)
        def in_place(self, state: Any) -> None:
            state["x"] = 1  # mutates, forgets to return

    with pytest.raises(gd.StateUpgradeError, match="returned None; return the upgraded state"):
        upgrade_state(Forgetful.spec, b"{}", 1, Forgetful(), what="instance 1")
