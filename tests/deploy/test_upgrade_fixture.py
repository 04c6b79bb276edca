"""Upgrading a populated database: the one gendurable 0.1.0 left (`fixtures/`, made by
`make_fixture.py`), with instances in every status, restored into a fresh schema. This code
migrates it (accepting the checksums 0.1.0 recorded), `gendurable check` finds nothing it
would strand, and its engine finishes every instance."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import upgrade_flows as flows
from make_fixture import DUMP, EXPECTED, INFO

import gendurable as gd
from gendurable.cli import main
from gendurable.sql import migrations
from gendurable.testing import MakeEngine

pytestmark = pytest.mark.fresh_schema

HERE = Path(__file__).resolve().parent
FIXTURE: dict[str, Any] = json.loads(INFO.read_text())


async def restore(dsn: str, schema: str) -> None:
    """The fixture's schema and rows, under `schema`."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(DUMP.read_text().replace(FIXTURE["schema"], schema))
    finally:
        await conn.close()


async def check(dsn: str, schema: str) -> tuple[int, str, str]:
    """`gendurable check upgrade_flows:engine`, run as an operator would before a deploy."""
    env = {**os.environ, "UPGRADE_SCHEMA": schema, "GENDURABLE_DSN": dsn}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "gendurable.cli", "check", "upgrade_flows:engine", "--full"),
        cwd=HERE,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def statuses(db: asyncpg.Connection, schema: str) -> dict[str, str]:
    rows = await db.fetch(f'SELECT key, status::text FROM "{schema}".instances')
    return {r["key"]: r["status"] for r in rows}


async def test_the_fixture_holds_an_instance_in_every_status(
    gendurable_dsn: str, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    await restore(gendurable_dsn, gendurable_schema)

    assert await statuses(db, gendurable_schema) == EXPECTED
    throttled = await db.fetch(
        f'SELECT key FROM "{gendurable_schema}".instances WHERE throttled ORDER BY key'
    )
    assert [r["key"] for r in throttled] == ["throttled-1", "throttled-2"]
    recorded = await db.fetch(f'SELECT name, applied_by FROM "{gendurable_schema}".migrations')
    assert [tuple(r) for r in recorded] == [("0001_initial.sql", "gendurable 0.1.0")]


async def test_a_database_made_by_0_1_0_upgrades_and_the_current_engine_finishes_it(
    gendurable_dsn: str,
    gendurable_schema: str,
    db: asyncpg.Connection,
    make_engine: MakeEngine,
    manual_clock: gd.ManualClock,
) -> None:
    schema = gendurable_schema
    await restore(gendurable_dsn, schema)

    assert await gd.migrate(gendurable_dsn, schema=schema) == migrations(schema)[-1].version
    recorded = await db.fetch(f'SELECT name FROM "{schema}".migrations ORDER BY version')
    assert [r["name"] for r in recorded] == [m.name for m in migrations(schema)]

    code, out, err = await check(gendurable_dsn, schema)
    assert (code, err) == (0, ""), out
    assert "strand" not in out.replace("nothing would strand", "")

    manual_clock.set(datetime.fromisoformat(FIXTURE["clock"]))
    engine = await make_engine(workflows=flows.WORKFLOWS)
    await flows.Approval.signal("awaiting-signal", "approve", {"by": "ops"}, engine=engine)
    for n in range(2):
        await flows.Part.signal(f"waiting-children/{n}", "go", engine=engine)
    retry = ["retry", "failed", "--workflow", "upgrade.fragile", "--schema", schema]
    assert await asyncio.to_thread(main, [*retry, "--dsn", gendurable_dsn]) == 0

    # Deadlines, throttled calls (one an hour), the scheduled run and the dead claim's lease
    # all come due as the clock moves on.
    for _ in range(12):
        await engine.drain()
        if set((await statuses(db, schema)).values()) <= {"done", "cancelled"}:
            break
        manual_clock.advance(timedelta(hours=6))

    assert await statuses(db, schema) == {
        key: "cancelled" if key == "cancelled" else "done" for key in EXPECTED
    }
    rows = await db.fetch(f'SELECT key, result, rescued FROM "{schema}".instances')
    results = {r["key"]: json.loads(r["result"]) for r in rows if r["result"] is not None}
    assert results == {
        "awaiting-signal": {"item": "awaiting-signal", "approved_by": "ops"},
        "awaiting-deadline": {"item": "awaiting-deadline", "approved_by": "nobody"},
        "waiting-children": 10,
        "waiting-children/0": 0,
        "waiting-children/1": 10,
        "throttled-0": "called 0",
        "throttled-1": "called 1",
        "throttled-2": "called 2",
        "failed": 42,
        "scheduled": 15,
        "done": 21,
        "executing": "finished after its claim expired",
    }
    assert {r["key"]: r["rescued"] for r in rows if r["rescued"]} == {"executing": 1}
    # Results 0.1.0 wrote decode with today's types.
    assert await flows.Approval.result("awaiting-signal", engine=engine) == flows.Approval.Result(
        item="awaiting-signal", approved_by="ops"
    )
    assert await flows.simple.result("done", engine=engine) == 21
