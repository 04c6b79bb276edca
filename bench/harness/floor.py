"""The PostgreSQL floor: the cheapest durable write a step could cost, measured in the run.

Single-row `UPDATE ... WHERE id = $1` transactions (autocommit, prepared), from `connections`
asyncpg connections for `seconds`, over a 10,000-row table of its own.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg


async def floor(dsn: str, connections: int, seconds: float = 3.0) -> float:
    """Transactions per second."""
    table = f"bench_floor_{uuid.uuid4().hex[:8]}"
    setup = await asyncpg.connect(dsn)
    await setup.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, n bigint NOT NULL)")
    await setup.execute(f"INSERT INTO {table} SELECT g, 0 FROM generate_series(1, 10000) g")
    await setup.execute(f"VACUUM ANALYZE {table}")
    conns = [await asyncpg.connect(dsn) for _ in range(connections)]
    done = 0

    async def hammer(conn: asyncpg.Connection, offset: int, stop_at: float) -> None:
        nonlocal done
        i = offset
        stmt = await conn.prepare(f"UPDATE {table} SET n = n + 1 WHERE id = $1")
        while time.perf_counter() < stop_at:
            await stmt.fetch(i % 10000 + 1)
            i += connections
            done += 1

    try:
        # A short warm-up (plans, buffers), then the measured window.
        warm = time.perf_counter() + 0.3
        await asyncio.gather(*(hammer(c, k, warm) for k, c in enumerate(conns)))
        done = 0
        started = time.perf_counter()
        stop_at = started + seconds
        await asyncio.gather(*(hammer(c, k, stop_at) for k, c in enumerate(conns)))
        elapsed = time.perf_counter() - started
    finally:
        for c in conns:
            await c.close()
        await setup.execute(f"DROP TABLE {table}")
        await setup.close()
    return done / elapsed
