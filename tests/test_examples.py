"""Every example runs as a script and prints what it promises."""

from __future__ import annotations

import os

import asyncpg
import pytest

from example_runner import EXAMPLES, run_script


async def test_examples_hello_runs_three_steps_to_completion(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    env = {**os.environ, "GENDURABLE_DSN": gendurable_dsn}

    code, out, err = await run_script(EXAMPLES / "hello.py", "--schema", gendurable_schema, env=env)

    assert code == 0, err
    lines = out.splitlines()
    assert lines[:6] == [
        "The workflow's state diagram, in Mermaid (paste it into https://mermaid.live):",
        "stateDiagram-v2",
        "    [*] --> greet",
        "    greet --> punctuate",
        "    punctuate --> finish",
        "    finish --> [*]",
    ]
    assert "instance 1 is done at step 'finish'" in lines
    assert lines[-1] == "Hello, world!"
    conn = await asyncpg.connect(gendurable_dsn)
    try:
        row = await conn.fetchrow(
            "SELECT workflow, status::text, step, result->>'message' AS message,"
            f" state->>'greeting' AS greeting FROM \"{gendurable_schema}\".instances"
        )
    finally:
        await conn.close()
    assert dict(row) == {
        "workflow": "hello",
        "status": "done",
        "step": "finish",
        "message": "Hello, world!",
        "greeting": "Hello, world!",
    }


@pytest.mark.database
async def test_examples_hello_runs_on_the_embedded_server_without_a_dsn() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GENDURABLE_DSN"}

    code, out, err = await run_script(EXAMPLES / "hello.py", env=env)

    assert code == 0, err
    assert out.splitlines()[-1] == "Hello, world!"
    assert "is done at step 'finish'" in out


async def test_examples_tenants_throttles_the_big_tenant_and_not_the_small_ones(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    env = {**os.environ, "GENDURABLE_DSN": gendurable_dsn}

    code, out, err = await run_script(
        EXAMPLES / "tenants.py", "--schema", gendurable_schema, env=env
    )

    assert code == 0, err
    finished = [line.split(None, 1)[1].split() for line in out.splitlines()]
    tenants = [f[0] for f in finished]
    assert sorted(tenants) == ["big"] * 8 + ["small-a", "small-b"]
    # The burst (4 tokens) covers two export pages; the lookups of the other tenants come
    # from their own buckets and do not wait behind the big tenant's throttled pages.
    assert set(tenants[:4]) == {"big", "small-a", "small-b"}
    conn = await asyncpg.connect(gendurable_dsn)
    try:
        buckets = await conn.fetch(
            f'SELECT name, partition FROM "{gendurable_schema}".rate_buckets ORDER BY partition'
        )
        done = await conn.fetchval(
            f"SELECT count(*) FROM \"{gendurable_schema}\".instances WHERE status = 'done'"
        )
    finally:
        await conn.close()
    assert [tuple(b) for b in buckets] == [
        ("partner_api", "big"),
        ("partner_api", "small-a"),
        ("partner_api", "small-b"),
    ]
    assert done == 10


async def test_examples_nightly_starts_one_report_per_night(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    env = {**os.environ, "GENDURABLE_DSN": gendurable_dsn}

    code, out, err = await run_script(
        EXAMPLES / "nightly.py", "--schema", gendurable_schema, env=env
    )

    assert code == 0, err
    assert out.splitlines() == [
        "schedule 'nightly-report': At 03:00 every day (Europe/Paris)",
        "nightly-report@2030-01-02T02:00:00Z -> 2030-01-01: 50 orders",
        "nightly-report@2030-01-03T02:00:00Z -> 2030-01-02: 60 orders",
        "nightly-report@2030-01-04T02:00:00Z -> 2030-01-03: 70 orders",
    ]
    conn = await asyncpg.connect(gendurable_dsn)
    try:
        rows = await conn.fetch(
            f'SELECT key, status::text AS status FROM "{gendurable_schema}".instances ORDER BY id'
        )
        schedule = await conn.fetchrow(
            f'SELECT last_at, next_at FROM "{gendurable_schema}".schedules'
        )
    finally:
        await conn.close()
    # The first night's report is older than a day by the end: garbage collection took it.
    assert [(r["key"], r["status"]) for r in rows] == [
        (f"nightly-report@2030-01-0{d}T02:00:00Z", "done") for d in (3, 4)
    ]
    assert schedule["last_at"].isoformat() == "2030-01-04T02:00:00+00:00"
    assert schedule["next_at"].isoformat() == "2030-01-05T02:00:00+00:00"
