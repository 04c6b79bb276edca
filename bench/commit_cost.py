"""What the group commits of w1's steps cost, on the schema as 0.1.0 left it and as it is now.

    python bench/commit_cost.py [--batch 64] [--rounds 600] [--vacuum-every 50] [--without INDEX]

A storage change (a fillfactor, an index) changes what an update writes, not the statements:
so both shapes run this tree's statements, each in a schema of its own on one embedded
PostgreSQL (or `$GENDURABLE_DSN`). `0.1.0` is the schema migrated and then given back what
`0002_hot_updates.sql` changed (`fillfactor` reset, `instances_executing` dropped,
`instances_lease` created as `0001_initial.sql` defines it); `now` is the schema as migrated;
with `--without INDEX`, a third shape is `now` without that index (what dropping it would win
at most, whatever its statements would lose).

Each round, in each shape (the order rotating, so the machine's drift falls on both): a
client-only engine starts `--batch` instances of w1's workflow with one `start_many`, claims
them with one claim, and commits their three steps as a scheduler does: two group commits of
kept claims (`continue`: each row keeps its claim for its next step) and one of finishes;
then the collector deletes what the previous rounds finished (`terminal_sweep`, retention
0), so the table churns, and every `--vacuum-every` rounds both tables are vacuumed (a run
lasts about a minute, autovacuum's nap: without it, dead rows pile up and every statement of
both shapes slows down two to three times over the run). Each statement is timed as the
client sees it (a unix socket, so mostly the server's time). Per shape: the median of each
statement over the rounds, the HOT share of the updates (`pg_stat_user_tables`) and the
sizes at the end; then now ÷ 0.1.0 for each statement, the median of the per-round ratios.
One JSON line per shape, one for the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.ab import working_commit
from harness.flows import QUEUE, ThreeSteps

import gendurable as gd
from gendurable.db.maintenance_store import MaintenanceStore
from gendurable.db.migrator import migrate
from gendurable.db.schema_admin import drop_schema
from gendurable.embedded import embedded_dsn

LEASE = timedelta(seconds=30)
SHAPES = ("0.1.0", "now")
KINDS = ("insert", "claim", "continue_b", "continue_c", "finish", "sweep")


async def shape_0_1_0(conn: asyncpg.Connection, schema: str) -> None:
    """Give the migrated schema back what 0002_hot_updates.sql changed."""
    s = f'"{schema}"'
    await conn.execute(f"ALTER TABLE {s}.instances RESET (fillfactor)")
    await conn.execute(f"DROP INDEX {s}.instances_executing")
    await conn.execute(
        f"CREATE INDEX instances_lease ON {s}.instances (locked_until) WHERE status = 'executing'"
    )


def outcomes(ids: list[int], step: str | None) -> bytes:
    """The plain fields of a group commit, as the committer encodes them: kept claims moving
    to `step`, or finishes (`step` None)."""
    if step is None:
        rows = [
            {"n": n, "id": id, "locked_by": "bench#1", "kind": "finish", "status": "done"}
            for n, id in enumerate(ids, 1)
        ]
    else:
        rows = [
            {
                "n": n,
                "id": id,
                "locked_by": "bench#1",
                "kind": "continue",
                "step": step,
                "lease_s": LEASE.total_seconds(),
                "weight": 1,
                "state_version": 1,
                "consumed": [],
                "queue": QUEUE,
            }
            for n, id in enumerate(ids, 1)
        ]
    return msgspec.json.encode(rows)


async def timed(spent: dict[str, float], kind: str, call: Callable[[], Awaitable[Any]]) -> Any:
    start = time.perf_counter()
    result = await call()
    spent[kind] = time.perf_counter() - start
    return result


async def one_round(engine: gd.Engine, batch: int, serial: int) -> dict[str, float]:
    store = engine.store
    spent: dict[str, float] = {}
    now = None
    await timed(
        spent,
        "insert",
        lambda: ThreeSteps.start_many(
            [ThreeSteps.new(key=f"r{serial}-{i}") for i in range(batch)], engine=engine
        ),
    )
    claimed = await timed(
        spent,
        "claim",
        lambda: store.instance_claim(
            queue=QUEUE,
            limit=batch,
            locked_by="bench#1",
            workflows=[ThreeSteps.spec.name],
            steps=["a"],
            leases=[LEASE],
            now=now,
        ),
    )
    ids = [r.id for r in claimed]
    assert len(ids) == batch, f"claimed {len(ids)} of {batch}"
    nulls: list[bytes | None] = [None] * batch
    for kind, step in (("continue_b", "b"), ("continue_c", "c"), ("finish", None)):
        results: list[bytes | None] = [b"3"] * batch if kind == "finish" else nulls
        done, busy = await timed(
            spent,
            kind,
            lambda kind=kind, step=step, results=results: store.outcome_batch(
                outcomes=outcomes(ids, step),
                states=[b'{"n": 1}'] * batch if kind != "finish" else nulls,
                results=results,
                errors=nulls,
                now=now,
            ),
        )
        assert len(done) == batch, (kind, len(done))
        assert not busy, (kind, busy)
    await timed(
        spent,
        "sweep",
        lambda: MaintenanceStore(store.db).terminal_sweep(
            now=None,
            retention=timedelta(0),
            after_finished_at=None,
            after_id=None,
            limit=10 * batch,
        ),
    )
    return spent


async def table_figures(conn: asyncpg.Connection, schema: str, updates: int) -> dict[str, Any]:
    """The table's update counters and sizes, once the engine's backends (stopped) have
    reported all `updates`."""
    for _ in range(200):
        row = await conn.fetchrow(
            "SELECT n_tup_upd, n_tup_hot_upd, n_tup_newpage_upd, "
            "pg_relation_size(relid) AS heap, pg_indexes_size(relid) AS indexes "
            "FROM pg_stat_user_tables WHERE relid = $1::regclass",
            f'"{schema}".instances',
        )
        assert row is not None
        if row["n_tup_upd"] >= updates:
            return dict(row)
        await asyncio.sleep(0.05)
    raise SystemExit(f"bench/commit_cost.py: {schema} reported {row['n_tup_upd']} of {updates}")


def run_line(conn_version: str) -> str:
    """The first line of the output: what ran, on what, for the record."""
    commit, dirty = working_commit()
    return json.dumps(
        {
            "bench": "commit_cost-run",
            "commit": commit,
            "engine_dirty": dirty,
            "server": f"PostgreSQL {conn_version}",
            "command": " ".join(["python", *sys.argv]),
        }
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=600)
    parser.add_argument(
        "--vacuum-every", type=int, default=50, help="rounds between VACUUMs (0: autovacuum's)"
    )
    parser.add_argument(
        "--without", metavar="INDEX", help="a third shape: now, without INDEX (an upper bound)"
    )
    args = parser.parse_args()
    shapes = SHAPES + ((f"now-without-{args.without}",) if args.without else ())
    async with embedded_dsn() as dsn:
        schemas = {s: f"bench_commit_{i}" for i, s in enumerate(shapes)}
        engines: dict[str, gd.Engine] = {}
        conn = await asyncpg.connect(dsn)
        try:
            print(run_line(await conn.fetchval("SHOW server_version")), flush=True)
            for shape, schema in schemas.items():
                await migrate(dsn, schema=schema)
                if shape == "0.1.0":
                    await shape_0_1_0(conn, schema)
                elif shape != "now":
                    await conn.execute(f'DROP INDEX "{schema}"."{args.without}"')
                engines[shape] = gd.Engine(
                    dsn, workflows=[ThreeSteps], schema=schema, queues=None, name=f"c-{shape}"
                )
                await engines[shape].start()
            spent: dict[str, list[dict[str, float]]] = {shape: [] for shape in shapes}
            for n in range(args.rounds):
                order = shapes[n % len(shapes) :] + shapes[: n % len(shapes)]
                for shape in order:
                    spent[shape].append(await one_round(engines[shape], args.batch, n))
                if args.vacuum_every and (n + 1) % args.vacuum_every == 0:
                    for schema in schemas.values():
                        await conn.execute(f'VACUUM "{schema}".instances')
            for engine in engines.values():
                await engine.stop()
            engines.clear()
            for shape, schema in schemas.items():
                runs = spent[shape][args.rounds // 10 :]  # the first tenth warms up
                # a claim and three commits per row
                figures = await table_figures(conn, schema, 4 * args.batch * args.rounds)
                print(
                    json.dumps(
                        {
                            "bench": "commit_cost",
                            "shape": shape,
                            "batch": args.batch,
                            "rounds": args.rounds,
                            "median_ms": {
                                k: round(statistics.median(r[k] for r in runs) * 1000, 3)
                                for k in KINDS
                            },
                            "hot_share": round(figures["n_tup_hot_upd"] / figures["n_tup_upd"], 3),
                            "newpage_share": round(
                                figures["n_tup_newpage_upd"] / figures["n_tup_upd"], 3
                            ),
                            "heap_bytes": figures["heap"],
                            "indexes_bytes": figures["indexes"],
                        }
                    ),
                    flush=True,
                )
            old = spent["0.1.0"][args.rounds // 10 :]
            for shape in shapes[1:]:
                new = spent[shape][args.rounds // 10 :]
                print(
                    json.dumps(
                        {
                            "bench": "commit_cost-ratio",
                            "what": f"{shape} / 0.1.0, median of the per-round ratios "
                            "(below 1: cheaper)",
                            **{
                                k: round(
                                    statistics.median(
                                        b[k] / a[k] for a, b in zip(old, new, strict=True)
                                    ),
                                    3,
                                )
                                for k in KINDS
                            },
                        }
                    ),
                    flush=True,
                )
        finally:
            for engine in engines.values():
                await engine.stop()
            await conn.close()
            for schema in schemas.values():
                await drop_schema(dsn, schema)


if __name__ == "__main__":
    asyncio.run(main())
