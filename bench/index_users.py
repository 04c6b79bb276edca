"""Which named statements read an index, before and after the migrations that follow 0.1.0.

    python bench/index_users.py INDEX [INDEX ...] [--release DIR] [--rows 20000]

Before an index is dropped, every statement that reads it must be found, in this tree and in
the release whose engines may still run beside it during a rolling deploy. This script
creates a schema as 0.1.0 left it (`0001_initial.sql` only) in an embedded PostgreSQL (or
`$GENDURABLE_DSN`), fills `instances` with `--rows` analyzed rows in every status (a tenth
executing, with leases, keys and parents; signals for some), and PREPAREs every named
statement of this tree and, with `--release DIR`, of the release wheel unpacked in DIR
(`python -m zipfile -e tests/deploy/fixtures/gendurable-0.1.0-py3-none-any.whl DIR`). Each
is explained with `EXPLAIN EXECUTE` under generic plans (`plan_cache_mode =
force_generic_plan`: values unknown to the planner, so NULLs stand in for them), once with
the default costs and once with `enable_seqscan = off` (the settings the engine's
connections are to use): a generic plan does not depend on the values, and with sequential
scans off the planner takes any index that can serve. The statements whose plans read one of
the INDEXes are listed; then the later migrations are applied and their plans shown again,
with what they read instead and whether any scans `instances` sequentially. Custom plans
(with real values) of the statements found are for the tests to check
(tests/db/test_hot_updates.py does for the lease's).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import asyncpg

from gendurable.db.migrator import migrate_connection
from gendurable.db.pool import init_connection
from gendurable.db.schema_admin import drop_schema
from gendurable.embedded import embedded_dsn
from gendurable.sql import migrations, statements

SCHEMA = "bench_index_users"
MODES = {
    "generic": "SET plan_cache_mode = force_generic_plan; RESET enable_seqscan",
    "generic+noseqscan": "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off",
}


def release_statements(root: Path, schema: str) -> dict[str, str]:
    """The named statements of the release unpacked at `root`, read by its own loader (in a
    process of their own: its package is also named gendurable)."""
    code = (
        "import json, sys; from gendurable.sql import statements; "
        "print(json.dumps({n: str(getattr(s, 'sql', s)) "
        "for n, s in statements(sys.argv[1]).items()}))"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(
        [sys.executable, "-c", code, schema], env=env, check=True, capture_output=True, text=True
    ).stdout
    loaded: dict[str, str] = json.loads(out)
    return loaded


def tree_statements(schema: str) -> dict[str, str]:
    return {name: s.sql for name, s in statements(schema).items()}


async def fill(conn: asyncpg.Connection, rows: int) -> None:
    s = f'"{SCHEMA}"'
    await conn.execute(
        f"""
        INSERT INTO {s}.instances
            (workflow, queue, step, status, priority, run_at, key, parent_id, locked_by,
             locked_until, await_names, await_deadline, concurrency_key, inserted_at,
             updated_at, finished_at)
        SELECT 'wf-' || (g % 5), 'q-' || (g % 3), 'start',
               (ARRAY['available','executing','awaiting','waiting','done','done','done',
                      'done','failed','cancelled'])[1 + g % 10]::{s}.status,
               g % 3, now() - interval '1 minute', 'key-' || g,
               CASE WHEN g > 100 THEN g % 100 + 1 END,
               CASE WHEN g % 10 = 1 THEN 'node-' || (g % 7) || '-1-x' END,
               CASE WHEN g % 10 = 1 THEN now() + (g % 60) * interval '1 second' END,
               CASE WHEN g % 10 = 2 THEN ARRAY['go'] END,
               CASE WHEN g % 10 = 2 THEN now() + interval '1 hour' END,
               CASE WHEN g % 50 = 0 THEN 'ck-' || (g % 200) END,
               now(), now(),
               CASE WHEN g % 10 >= 4 THEN now() - (g % 2880) * interval '1 minute' END
        FROM generate_series(1, $1::int) g
        """,
        rows,
    )
    await conn.execute(
        f"INSERT INTO {s}.signals (instance_id, name, payload, received_at) "
        f"SELECT g, 'go', NULL, now() FROM generate_series(3, $1::int, 10) g",
        rows,
    )
    for table in ("instances", "signals"):
        await conn.execute(f"ANALYZE {s}.{table}")


async def plan(conn: asyncpg.Connection, sql: str, mode: str) -> str | None:
    """The generic plan of `sql` under `mode`, or None when it cannot be prepared."""
    await conn.execute(MODES[mode])
    try:
        await conn.execute(f"PREPARE probe AS {sql}")
    except asyncpg.PostgresError:
        return None
    try:
        count = int(
            await conn.fetchval(
                "SELECT cardinality(parameter_types) FROM pg_prepared_statements "
                "WHERE name = 'probe'"
            )
        )
        nulls = ", ".join(["NULL"] * count)
        rows = await conn.fetch(f"EXPLAIN EXECUTE probe{f'({nulls})' if count else ''}")
        return "\n".join(r[0] for r in rows)
    except asyncpg.PostgresError as exc:
        return f"(not explained: {exc})"
    finally:
        await conn.execute("DEALLOCATE probe")


def reads(text: str) -> list[str]:
    """The relations and indexes a plan reads, in order of appearance."""
    found = re.findall(
        r"(Seq Scan on \w+|(?:Index|Index Only|Bitmap Index) Scan (?:Backward )?"
        r"(?:using|on) \w+)",
        text,
    )
    return list(dict.fromkeys(found))


async def survey(
    conn: asyncpg.Connection, sets: dict[str, dict[str, str]], indexes: list[str]
) -> dict[tuple[str, str], dict[str, str]]:
    """(origin, name) -> mode -> plan, for the statements whose plans read one of `indexes`;
    prints how many statements were explained, and which could not be."""
    users: dict[tuple[str, str], dict[str, str]] = {}
    for origin, named in sets.items():
        unplanned = []
        for name, sql in sorted(named.items()):
            plans = {m: await plan(conn, sql, m) for m in MODES}
            if any(p is None or p.startswith("(not explained") for p in plans.values()):
                unplanned.append(name)
            if any(p and any(ix in p for ix in indexes) for p in plans.values()):
                users[(origin, name)] = {m: p or "" for m, p in plans.items()}
        print(
            json.dumps(
                {
                    "bench": "index_users-survey",
                    "of": origin,
                    "statements": len(named),
                    "not_explained": unplanned,
                    "reading": sorted(n for o, n in users if o == origin),
                }
            ),
            flush=True,
        )
    return users


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("indexes", nargs="+")
    parser.add_argument("--release", type=Path, help="a release wheel, unpacked")
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    sets = {"tree": tree_statements(SCHEMA)}
    if args.release:
        sets["release"] = release_statements(args.release, SCHEMA)
    async with embedded_dsn() as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            await init_connection(conn)
            await migrate_connection(conn, schema=SCHEMA, steps=migrations(SCHEMA)[:1])
            await fill(conn, args.rows)
            before = await survey(conn, sets, args.indexes)
            await conn.execute("RESET ALL")
            await migrate_connection(conn, schema=SCHEMA)
            await conn.execute(f'ANALYZE "{SCHEMA}".instances')
            for (origin, name), plans in before.items():
                after = {m: await plan(conn, sets[origin][name], m) or "" for m in MODES}
                print(
                    json.dumps(
                        {
                            "bench": "index_users",
                            "statement": name,
                            "of": origin,
                            "before": {m: reads(p) for m, p in plans.items()},
                            "after": {m: reads(p) for m, p in after.items()},
                            "seq_scan_of_instances_after": {
                                m: "Seq Scan on instances" in p for m, p in after.items()
                            },
                        }
                    ),
                    flush=True,
                )
        finally:
            await conn.close()
            await drop_schema(dsn, SCHEMA)


if __name__ == "__main__":
    asyncio.run(main())
