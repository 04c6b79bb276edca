"""examples/orders.py runs as a script; its fan-out, join and per-SKU serialization hold."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import asyncpg

from example_runner import EXAMPLES, run_script

SCRIPT = EXAMPLES / "orders.py"
EXPECTED = [
    "o-1: confirmed: 2 apple, 1 pear",
    "o-2: confirmed: 2 apple, 1 fig",
    "o-3: rejected: plum out of stock (released 2 apple)",
    "stock left: 2 apple, 2 pear, 4 fig, 0 plum",
]


def _load_example(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # msgspec resolves the Structs' annotations through it
    spec.loader.exec_module(module)
    return module


orders = _load_example(SCRIPT, "example_orders")


async def test_example_orders_script_confirms_two_orders_and_rejects_one(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    env = {**os.environ, "GENDURABLE_DSN": gendurable_dsn}

    code, out, err = await run_script(SCRIPT, "--schema", gendurable_schema, env=env)

    assert code == 0, err
    assert out.splitlines() == EXPECTED
    conn = await asyncpg.connect(gendurable_dsn)
    try:
        rows = await conn.fetch(
            "SELECT c.key, c.workflow, c.status::text AS status, c.concurrency_key, "
            "p.key AS parent FROM "
            f'"{gendurable_schema}".instances c JOIN "{gendurable_schema}".instances p '
            "ON p.id = c.parent_id ORDER BY c.key"
        )
    finally:
        await conn.close()
    assert [tuple(r.values()) for r in rows] == [
        ("o-1/0", "orders.reserve", "done", "sku:apple", "o-1"),
        ("o-1/1", "orders.reserve", "done", "sku:pear", "o-1"),
        ("o-2/0", "orders.reserve", "done", "sku:apple", "o-2"),
        ("o-2/1", "orders.reserve", "done", "sku:fig", "o-2"),
        ("o-3/0", "orders.reserve", "done", "sku:apple", "o-3"),
        ("o-3/0/release", "orders.release", "done", "sku:apple", "o-3"),
        ("o-3/1", "orders.reserve", "failed", "sku:plum", "o-3"),
    ]


async def test_example_orders_reservations_of_one_sku_never_overlap(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    """The warehouse counts calls that worked on one SKU at once: the keys keep it at zero,
    although the stock queue runs eight steps at a time."""
    lines = await orders.main(gendurable_dsn, gendurable_schema)

    assert lines == EXPECTED
    assert orders.WAREHOUSE.overlaps == 0
    assert orders.WAREHOUSE.held == {
        "o-1/0": ("apple", 2),
        "o-1/1": ("pear", 1),
        "o-2/0": ("apple", 2),
        "o-2/1": ("fig", 1),
    }


async def test_example_orders_without_the_keys_the_warehouse_oversells(
    gendurable_dsn: str, gendurable_schema: str, tmp_path: Path
) -> None:
    """The same example with the concurrency key taken out: reservations of apples run at
    once, read the same count, and the stock left is wrong. This is what the key prevents."""
    source = SCRIPT.read_text()
    keyless = source.replace('concurrency_key=f"sku:{line.sku}",', "")
    assert keyless != source
    copy = tmp_path / "orders_keyless.py"
    copy.write_text(keyless)
    module = _load_example(copy, "example_orders_keyless")
    module.Warehouse = _meeting_warehouse(module)

    lines = await module.main(gendurable_dsn, gendurable_schema)

    assert module.WAREHOUSE.overlaps > 0
    assert lines[-1] != EXPECTED[-1]


def _meeting_warehouse(module: ModuleType) -> type:
    """The example's warehouse, but the first call on a SKU waits (at most 10 s) for a second
    one to start: without the key two reservations then surely overlap, however the machine
    happens to schedule the children (on a loaded machine one order's children could
    otherwise all end before the next order's spawn)."""

    class Meeting(module._Working):  # type: ignore[name-defined,misc]
        async def __aenter__(self) -> None:
            second = self.warehouse.second
            if self.sku in self.warehouse.busy:
                second.set()
            await super().__aenter__()
            if not second.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        await second.wait()

    class MeetingWarehouse(module.Warehouse):  # type: ignore[name-defined,misc]
        def __init__(self, stock: dict[str, int]) -> None:
            super().__init__(stock)
            self.second = asyncio.Event()

        def _working(self, sku: str) -> Any:
            return Meeting(self, sku)

    return MeetingWarehouse
