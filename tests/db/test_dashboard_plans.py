"""Every read of the web dashboard goes through an index: no statement of
`sql/dashboard.sql` scans or sorts a table, whatever its size (`instances_list`, the other
list the dashboard pages through, is checked in test_inspect_plans.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import asyncpg
import pytest

from gendurable.db.migrator import migrate
from gendurable.db.pool import init_connection
from gendurable.sql import statements

pytestmark = pytest.mark.fresh_schema

ROWS = 20_000


@pytest.fixture
async def filled(gendurable_dsn: str, gendurable_schema: str) -> AsyncIterator[asyncpg.Connection]:
    """20,000 instances (a tenth available, three priorities, terminal rows ended over two
    days, the first hundred each the parent of ~200), 20,000 signals, 2,000 nodes."""
    await migrate(gendurable_dsn, schema=gendurable_schema)
    conn = await asyncpg.connect(gendurable_dsn)
    await init_connection(conn)
    s = f'"{gendurable_schema}"'
    await conn.execute(
        f"""
        INSERT INTO {s}.instances
            (workflow, queue, step, status, priority, run_at, key, parent_id, inserted_at,
             updated_at, finished_at)
        SELECT 'wf-' || (g % 5), 'q-' || (g % 3), 'start',
               CASE WHEN g % 10 = 0 THEN 'available' ELSE 'done' END::{s}.status,
               g % 3, now() - interval '1 minute', 'key-' || g,
               CASE WHEN g > 100 THEN g % 100 + 1 END, now(), now(),
               CASE WHEN g % 10 = 0 THEN NULL ELSE now() - (g % 2880) * interval '1 minute' END
        FROM generate_series(1, {ROWS}) g
        """
    )
    await conn.execute(
        f"""
        INSERT INTO {s}.signals (instance_id, name, payload, received_at)
        SELECT g % {ROWS} + 1, 'go', NULL, now() FROM generate_series(1, {ROWS}) g
        """
    )
    await conn.execute(
        f"""
        INSERT INTO {s}.nodes (id, name, host, pid, schema, queues, workflows, version,
                               heartbeat, started_at, last_seen, expires_at)
        SELECT 'node-' || lpad(g::text, 5, '0'), 'n', 'h', g, 's', '{{}}', '{{}}', 'v',
               interval '5 s', now(), now(), now() + interval '1 hour'
        FROM generate_series(1, 2000) g
        """
    )
    for table in ("instances", "signals", "nodes"):
        await conn.execute(f"ANALYZE {s}.{table}")
    yield conn
    await conn.close()


@pytest.mark.parametrize(
    ("name", "args", "index"),
    [
        ("children_page", {"parent_id": 5, "after_id": None, "limit": 21}, "instances_parent"),
        ("children_page", {"parent_id": 5, "after_id": 15_000, "limit": 21}, "instances_parent"),
        ("inbox_page", {"instance_id": 7, "after_id": None, "limit": 21}, "signals_inbox"),
        ("inbox_page", {"instance_id": 7, "after_id": 9_000, "limit": 21}, "signals_inbox"),
        ("nodes_page", {"now": None, "after_id": None, "limit": 51}, "nodes_pkey"),
        ("nodes_page", {"now": None, "after_id": "node-01000", "limit": 51}, "nodes_pkey"),
        ("queue_oldest_due", {"queues": ["q-0", "q-1", "q-2"], "now": None}, "instances_pick"),
        ("throughput_by_minute", {"now": None, "minutes": 60}, "instances_terminal"),
    ],
)
async def test_dashboard_statement_reads_an_index_and_sorts_no_table(
    filled: asyncpg.Connection,
    gendurable_schema: str,
    name: str,
    args: dict[str, object],
    index: str,
) -> None:
    statement = statements(gendurable_schema)[name]

    plan = "\n".join(
        r[0] for r in await filled.fetch(f"EXPLAIN {statement.sql}", *statement.args(**args))
    )

    assert index in plan, plan
    assert "Seq Scan on instances" not in plan, plan
    assert "Seq Scan on signals" not in plan, plan
    assert "Seq Scan on nodes" not in plan, plan
    # The lists come in index order; the aggregates may sort what the index bounded (one
    # row per queue and priority; the last hour's endings), never the table.
    if name.endswith("_page"):
        assert "Sort" not in plan, plan


async def test_dashboard_oldest_due_row_is_the_one_waiting_longest(
    filled: asyncpg.Connection, gendurable_schema: str
) -> None:
    s = f'"{gendurable_schema}"'
    await filled.execute(
        f"UPDATE {s}.instances SET run_at = now() - interval '3 hours' WHERE id IN (20, 30)"
    )  # 30: q-0, priority 0; 20 would be q-2 (20 % 3) with priority 2
    await filled.execute(
        f"UPDATE {s}.instances SET run_at = now() + interval '1 day' WHERE id = 60"
    )  # not due: never the oldest due
    statement = statements(gendurable_schema)["queue_oldest_due"]

    rows = await filled.fetch(
        statement.sql, *statement.args(queues=["q-0", "q-2", "q-missing"], now=None)
    )

    expected = await filled.fetch(
        f"""
        SELECT DISTINCT ON (queue) queue, id FROM {s}.instances
        WHERE status = 'available' AND run_at <= now() AND queue = ANY ($1)
        ORDER BY queue, run_at, id
        """,
        ["q-0", "q-2", "q-missing"],
    )
    assert [(r["queue"], r["id"]) for r in rows] == [(r["queue"], r["id"]) for r in expected]
    assert [(r["queue"], r["id"]) for r in rows] == [("q-0", 30), ("q-2", 20)]


async def test_dashboard_throughput_counts_the_ends_of_its_window_only(
    filled: asyncpg.Connection, gendurable_schema: str
) -> None:
    # Terminal rows ended over two days: the statement reads (and bins) the last hour only,
    # so its cost is the rows of the window, never the table.
    s = f'"{gendurable_schema}"'
    statement = statements(gendurable_schema)["throughput_by_minute"]

    rows = await filled.fetch(statement.sql, *statement.args(now=None, minutes=60))

    now = rows[0]["now"]
    expected = await filled.fetchval(
        f"SELECT count(*) FROM {s}.instances WHERE status IN ('done', 'failed', 'cancelled') "
        "AND finished_at > $1::timestamptz - interval '60 minutes' AND finished_at <= $1",
        now,
    )
    assert 0 < sum(r["count"] for r in rows) == expected
    assert min(r["minute"] for r in rows) >= now - timedelta(minutes=60)
