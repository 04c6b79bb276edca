"""The pages `gendurable docs` writes, rendered from compiled specs (no database)."""

from __future__ import annotations

import dataclasses
import sys
import types
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import flows
import msgspec
import pytest

import gendurable as gd
from gendurable.docgen import (
    load_module,
    module_page,
    page_name,
    workflow_page,
    workflows_of,
    write_pages,
)
from gendurable.errors import ConfigError
from gendurable.type_labels import type_label

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


def section(page: str, title: str) -> list[str]:
    """The lines of the section `title` (any heading level), up to the next heading."""
    lines = page.splitlines()
    start = next(i for i, line in enumerate(lines) if line.lstrip("#") == f" {title}")
    end = next(
        (i for i, line in enumerate(lines[start + 1 :], start + 1) if line.startswith("#")),
        len(lines),
    )
    return [line for line in lines[start + 1 : end] if line]


def test_docgen_workflows_of_lists_what_the_module_defines_in_order() -> None:
    assert [s.name for s in workflows_of(flows)] == ["order", "item", "notify"]


def test_docgen_page_opens_with_title_summary_and_docstring() -> None:
    page = workflow_page(flows.Order.spec)

    assert page.splitlines()[:7] == [
        "# order",
        "",
        "Workflow `order`, defined as `Order`, queue `orders`, priority 2, max attempts 4, "
        "lease 5 min, starts at `take`.",
        "",
        "Take an order, wait for payment, ship every line.",
        "",
        "Lines ship as child workflows, one per line.",
    ]


def test_docgen_page_holds_the_mermaid_diagram_of_the_spec() -> None:
    page = workflow_page(flows.Order.spec)

    assert f"## Diagram\n\n```mermaid\n{flows.Order.spec.to_mermaid()}```\n" in page


def test_docgen_steps_table_has_timeouts_attempts_limits_awaits_and_edges() -> None:
    rows = section(workflow_page(flows.Order.spec), "Steps")

    assert rows == [
        "| step | timeout | max attempts | rate limit | awaits | goes to |",
        "| --- | --- | --- | --- | --- | --- |",
        "| `take` (start) | 30 s | 4 |  |  | `wait_payment` |",
        "| `wait_payment` |  | 4 |  | `cancel`, `paid` | end, `ship` |",
        "| `ship` |  | 9 | `carrier`, weight 2 |  | `close` |",
        "| `close` |  | 4 | inline (10 per 1 min, burst 20), weight 1 |  | end |",
    ]


def test_docgen_signals_table_has_payload_types_and_timeouts() -> None:
    page = workflow_page(flows.Order.spec)

    assert section(page, "Signals")[2:] == [
        "| `wait_payment` | `cancel` | any JSON | 3 days |",
        "| `wait_payment` | `paid` | `Paid` | 3 days |",
    ]
    assert section(page, "`Paid`")[2:] == [
        "| `amount` | `int` | required |",
        "| `currency` | `Literal['EUR', 'USD']` | `'EUR'` |",
    ]


def test_docgen_children_names_the_spawned_workflows_and_jobs() -> None:
    # `Item.new` inside a comprehension assigned to the spawned list, `notify.new` appended
    # to it later: both resolve to the workflow names, not the Python names.
    assert flows.Order.spec.step("ship").spawns == ("Item", "notify")
    assert section(workflow_page(flows.Order.spec), "Children") == [
        "| step | spawns |",
        "| --- | --- |",
        "| `ship` | `item`, `notify` |",
    ]


def test_docgen_state_and_result_fields_with_types_and_defaults() -> None:
    page = workflow_page(flows.Order.spec)

    assert section(page, "State")[2:] == [
        "| `customer` | `str` | required |",
        "| `lines` | `list[Line]` | `list()` |",
        "| `paid` | `int | None` | `None` |",
        "| `tags` | `dict[str, str]` | `dict()` |",
    ]
    assert section(page, "Result")[2:] == ["| `shipped` | `int` | required |"]


def test_docgen_sections_without_content_are_left_out() -> None:
    page = workflow_page(flows.Item.spec)

    assert "## Signals" not in page
    assert "## Children" not in page
    assert section(page, "State")[2:] == [
        "| `sku` | `str` | required |",
        "| `quantity` | `int` | `1` |",
    ]
    assert section(page, "Result") == [
        "Untyped: any JSON value (declare a nested `Result` Struct to type it)."
    ]


def test_docgen_job_page_has_arguments_and_no_result() -> None:
    page = workflow_page(flows.notify.spec)

    assert page.startswith(
        "# notify\n\nJob `notify`, queue `mail`, priority 0, max attempts 20.\n\n"
        "Tell the customer the order shipped.\n"
    )
    assert section(page, "Steps")[2:] == ["| `perform` | 2 min | 20 |  |  | end |"]
    assert section(page, "Arguments") == [
        "Untyped: any JSON value (annotate `args` with a msgspec Struct to type it)."
    ]
    assert "## Result" not in page


def test_docgen_heading_level_shifts_every_heading() -> None:
    page = workflow_page(flows.Order.spec, level=2)

    headings = [line.split(" ")[0] for line in page.splitlines() if line.startswith("#")]
    assert headings == ["##", "###", "###", "###", "####", "###", "###", "###"]


def test_docgen_shows_the_partition_of_a_step_that_has_one() -> None:
    def by_customer(state: Any) -> str:
        return str(state.customer)

    spec = flows.Order.spec
    ship = dataclasses.replace(spec.step("ship"), partition=by_customer)
    partitioned = dataclasses.replace(spec, steps={**spec.steps, "ship": ship})

    row = next(r for r in section(workflow_page(partitioned), "Steps") if r.startswith("| `ship`"))
    assert row.endswith(
        " | `carrier`, weight 2, partition by `" + by_customer.__qualname__ + "` |  | `close` |"
    )


def test_docgen_shows_the_rate_limit_a_move_into_the_step_overrides() -> None:
    # The Tenants example: `route` moves to `call` with `goto(..., weight=2)` for an export.
    tenants = load_module(str(Path(__file__).parents[2] / "examples" / "tenants.py"))

    rows = section(module_page(tenants), "Steps")

    call = next(r for r in rows if r.startswith("| `call`"))
    assert call == (
        "| `call` |  | 5 | `partner_api`, weight 1, partition by `_tenant`; from `route`: "
        "`rate_limit='partner_api'`, `weight=2`, `partition=state.tenant` |  | end |"
    )
    route = next(r for r in rows if r.startswith("| `route`"))
    assert route == "| `route` (start) |  | 5 |  |  | `call` |"


@pytest.mark.parametrize(
    ("tp", "label"),
    [
        (int, "int"),
        (None, "None"),
        (Any, "Any"),
        (int | None, "int | None"),
        (list[flows.Line], "list[Line]"),
        (dict[str, list[int]], "dict[str, list[int]]"),
        (tuple[int, ...], "tuple[int, ...]"),
        (Literal["a", 1], "Literal['a', 1]"),
        (flows.Order.State, "State"),
        (timedelta, "timedelta"),
    ],
)
def test_docgen_type_label(tp: Any, label: str) -> None:
    assert type_label(tp) == label


def test_docgen_write_pages_writes_one_page_per_workflow(tmp_path: Path) -> None:
    written = write_pages(flows, tmp_path / "out")

    assert [p.name for p in written] == ["order.md", "item.md", "notify.md"]
    assert (tmp_path / "out" / "order.md").read_text() == workflow_page(flows.Order.spec)


def test_docgen_write_pages_refuses_a_module_without_workflows(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="defines no workflow"):
        write_pages(types.ModuleType("empty"), tmp_path)
    assert not tmp_path.joinpath("empty").exists()


@pytest.mark.parametrize(
    ("name", "file"),
    [("order", "order"), ("Outer.Inner", "Outer.Inner"), ("a/b c", "a_b_c"), ("..", "workflow")],
)
def test_docgen_page_name_is_safe_as_a_file_name(name: str, file: str) -> None:
    assert page_name(name) == file


def test_docgen_module_page_keeps_the_docstring_code_block_and_folds_the_source() -> None:
    page = module_page(flows, source="print('hi')\n")

    assert page.startswith(
        "# Orders: the workflows `gendurable docs` is tested on\n\n"
        "    gendurable docs flows -o out\n\nA paragraph after the code block.\n"
    )
    assert "\n## order\n" in page
    assert "\n## notify\n" in page
    assert page.endswith(
        "??? example \"Source: flows.py\"\n\n    ```python\n    print('hi')\n    ```\n"
    )


@pytest.mark.parametrize(
    ("doc", "start"),
    [
        # A first sentence wrapped over two lines is the whole title, not its first line.
        ("Orders: one per\nline item.\n\n    run it\n\nMore.",
         "# Orders: one per line item\n\n    run it\n\nMore.\n"),
        # A second sentence of the first paragraph opens the introduction.
        ("Hello. It greets\nyou.\n\nMore.", "# Hello\n\nIt greets you.\n\nMore.\n"),
        ("Just a title", "# Just a title\n"),
        ("Calls gd.step twice, e.g. here. Then stops.",
         "# Calls gd.step twice, e.g. here\n\nThen stops.\n"),
    ],
)  # fmt: skip
def test_docgen_module_page_title_is_the_first_sentence(doc: str, start: str) -> None:
    module = types.ModuleType("titled")
    module.__doc__ = doc

    assert module_page(module).startswith(start)


def test_docgen_example_pages_have_their_whole_first_sentence_as_title() -> None:
    orders = load_module(str(EXAMPLES / "orders.py"))

    assert module_page(orders).splitlines()[0] == (
        "# Orders: one child per line item reserves stock under a per-SKU concurrency key; "
        "the order then joins"
    )


def test_docgen_load_module_by_path_and_by_name(tmp_path: Path) -> None:
    path = tmp_path / "tiny_flow.py"
    path.write_text(
        "import gendurable as gd\n\n"
        "@gd.workflow(name='tiny')\nclass Tiny:\n"
        "    @gd.step\n    async def only(self, state, ctx):\n        return gd.done()\n"
    )

    by_path = load_module(str(path))

    assert [s.name for s in workflows_of(by_path)] == ["tiny"]
    assert load_module("flows") is flows


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("no_such_module_xyz", "cannot import 'no_such_module_xyz': ModuleNotFoundError"),
        ("missing/file.py", "no such file: missing/file.py"),
    ],
)
def test_docgen_load_module_errors_say_why(target: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_module(target)


def test_docgen_payload_struct_fields_once_even_when_two_steps_await_it() -> None:
    class Ping(msgspec.Struct):
        n: int

    @gd.workflow(name="pinged")
    class Pinged:
        @gd.step
        @gd.await_signals(ping=Ping)
        async def first(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.goto(self.second)

        @gd.step
        @gd.await_signals(ping=Ping)
        async def second(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    page = workflow_page(Pinged.spec)

    assert page.count("### `Ping`") == 1
    assert section(page, "Signals")[2:] == [
        "| `first` | `ping` | `Ping` | none |",
        "| `second` | `ping` | `Ping` | none |",
    ]


def test_docgen_load_module_by_path_never_shadows_another_module(tmp_path: Path) -> None:
    import json

    (tmp_path / "json.py").write_text("import gendurable as gd\n")

    module = load_module(str(tmp_path / "json.py"))

    assert module.__name__ == "gendurable_docs_json"
    assert sys.modules["json"] is json


@gd.workflow(name="person", version=3)
class Person:
    @gd.step
    async def greet(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    @gd.upgrade(from_version=1)
    def split_name(self, state: Any) -> Any:
        """Split `name` into `first` and `last`.

        Everything after the first space is the last name.
        """
        return state

    @gd.upgrade(from_version=2)
    def add_currency(self, state: Any) -> Any:
        return state


@gd.workflow(name="person", version=2)
class PersonWithoutUpgrades:
    @gd.step
    async def greet(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


def test_docgen_versioned_workflow_lists_its_state_upgrades() -> None:
    page = workflow_page(Person.spec)

    assert "max attempts 5, state version 3, starts at `greet`." in page.splitlines()[2]
    assert section(page, "State upgrades") == [
        "States are stored at version 3; older ones are upgraded, in order, before a step "
        "sees them.",
        "| from | to | upgrade | what it does |",
        "| --- | --- | --- | --- |",
        "| 1 | 2 | `split_name` | Split `name` into `first` and `last`. |",
        "| 2 | 3 | `add_currency` |  |",
    ]
    assert section(workflow_page(PersonWithoutUpgrades.spec), "State upgrades") == [
        "States are stored at version 2. No `@gd.upgrade` is declared: rows of older versions "
        "cannot run (`gendurable check` reports them)."
    ]
    assert "State upgrades" not in workflow_page(flows.Order.spec)  # version 1: no section


SCHEDULED = '''
"""Scheduled workflows."""
from datetime import timedelta
from typing import Any

import gendurable as gd


@gd.workflow(name="docs.report")
class Report:
    @gd.step(start=True)
    async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="docs.unscheduled")
class Unscheduled:
    @gd.step(start=True)
    async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


HOURLY = gd.Schedule(Report, every=timedelta(hours=1), name="hourly", missed="all", catch_up=5)
engine = gd.Engine(
    "postgresql://unused@localhost/unused",
    workflows=[Report, Unscheduled],
    schedules=[gd.Schedule(Report, cron="0 3 * * *", tz="Europe/Paris"), HOURLY],
)
'''


def test_docgen_pages_of_scheduled_workflows_state_their_schedules(tmp_path: Path) -> None:
    source = tmp_path / "scheduled_flows.py"
    source.write_text(SCHEDULED)
    module = load_module(str(source))

    [report, unscheduled] = write_pages(module, tmp_path / "out")
    page = module_page(module)

    assert section(report.read_text(), "Schedule") == [
        "| schedule | starts | ticks missed while no engine ran | instance keys |",
        "| --- | --- | --- | --- |",
        "| `hourly` | every hour | each starts, at most 5 | `hourly@<tick>` |",
        "| `docs.report` | At 03:00 every day (Europe/Paris) | the latest one starts "
        "| `docs.report@<tick>` |",
    ]
    assert "Schedule" not in unscheduled.read_text()
    assert page.count("## Schedule") == 1  # the report's section only
