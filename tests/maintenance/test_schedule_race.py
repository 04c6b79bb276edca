"""Exactly one instance per tick across engine processes racing the same due schedules."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

import gendurable as gd

pytestmark = pytest.mark.race

RACER = Path(__file__).with_name("race_ticks.py")
SCHEDULES = 10
ROUNDS = 150
LINE_TIMEOUT = 30.0


async def line_of(proc: asyncio.subprocess.Process) -> str:
    """The next line the process printed (fails after LINE_TIMEOUT seconds)."""
    assert proc.stdout is not None
    async with asyncio.timeout(LINE_TIMEOUT):
        return (await proc.stdout.readline()).decode().strip()


async def test_schedules_two_processes_racing_start_each_tick_exactly_once(
    gendurable_dsn: str, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    await gd.migrate(gendurable_dsn, schema=gendurable_schema)
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            str(RACER),
            gendurable_dsn,
            gendurable_schema,
            str(SCHEDULES),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    started: list[Counter[str]] = [Counter(), Counter()]
    now = datetime(2030, 1, 1, tzinfo=UTC)
    try:
        assert [await line_of(p) for p in procs] == ["ready", "ready"]
        for round in range(ROUNDS):
            # Mostly the next minute; now and then several at once (missed="all" catches up).
            now += timedelta(minutes=3 if round % 10 == 9 else 1)
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(f"{now.isoformat()}\n".encode())
                await proc.stdin.drain()
            for proc, seen in zip(procs, started, strict=True):
                word, *keys = (await line_of(proc)).split()
                assert word == "started"
                seen.update(keys)
    finally:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.close()
        codes = [await asyncio.wait_for(p.wait(), LINE_TIMEOUT) for p in procs]
    assert codes == [0, 0]

    ticks = int((now - datetime(2030, 1, 1, tzinfo=UTC)) / timedelta(minutes=1))
    expected = {
        f"s{i:02d}@{datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=m):%Y-%m-%dT%H:%M:%SZ}"
        for i in range(SCHEDULES)
        for m in range(1, ticks + 1)
    }
    keys = Counter(
        r["key"] for r in await db.fetch(f'SELECT key FROM "{gendurable_schema}".instances')
    )
    assert set(keys) == expected
    assert max(keys.values()) == 1  # one instance per tick
    assert sum(started, Counter()) == Counter(expected)  # each started by one process only
    assert all(seen for seen in started), "both processes started ticks: they did race"
