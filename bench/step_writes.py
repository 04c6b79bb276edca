"""What an instance of w1 writes into `instances` and into each of its indexes, read from the WAL.

    python bench/step_writes.py [--instances 2000] [--concurrency 64] [--dsn DSN]
    bench/.ab-venvs/<sha>/bin/python bench/step_writes.py --dsn DSN   # the engine of <sha>

Runs w1's workflow (`a -> b -> c -> done`) as `w1 --bulk` does (the instances inserted by one
`start_many` with claiming paused, then run at `--concurrency`) on a fresh schema of an
embedded PostgreSQL (or of the server at `--dsn`, which must run on this machine: the script
reads its WAL files), then reads the WAL written from the insert to the last commit with
`pg_waldump` and counts, per instance, the heap records of `instances` (inserts, updates, HOT
updates, row locks) and the entries each of its indexes received: leaf inserts, including the
entry a leaf split or a posting-list split carries. A HOT update writes no index entry; any
other update writes one into every index whose predicate its new version meets. Prints one
JSON line. The engine is the one the running interpreter imports: run the script with the A/B
virtualenv of another commit (made by `run.py --against`) for that commit's figures. Timings
play no part: the counts are the same on a loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.engines import bench_engine, wait_done_in_table
from harness.flows import QUEUE, ThreeSteps
from harness.meters import parent_pid

import gendurable as gd

_RECORD = re.compile(r"rmgr: (?P<rmgr>\w+)\s.*?desc: (?P<desc>[A-Z_0-9+]+)(?P<rest>.*)$")
_REL = re.compile(r"rel \d+/\d+/(\d+)")
_LEVEL = re.compile(r"level: (\d+)")


async def server_files(conn: asyncpg.Connection) -> tuple[Path, Path]:
    """The data directory of the server `conn` reaches, and its `pg_waldump` (beside the
    postmaster's binary): the server must run on this machine."""
    data = Path(await conn.fetchval("SHOW data_directory"))
    postmaster = parent_pid(await conn.fetchval("SELECT pg_backend_pid()"))
    if postmaster is None:
        raise SystemExit("bench/step_writes.py: the server must run on this machine")
    return data, Path(os.readlink(f"/proc/{postmaster}/exe")).parent / "pg_waldump"


def count(lines: list[str], relations: dict[int, str]) -> dict[str, collections.Counter[str]]:
    """relation name -> record kind -> how many, for the relations given by file node."""
    found: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in lines:
        record = _RECORD.search(line)
        rel = _REL.search(line)
        if record is None or rel is None or int(rel.group(1)) not in relations:
            continue
        name = relations[int(rel.group(1))]
        kind = record.group("desc").split("+")[0]
        if record.group("rmgr") == "Btree":
            level = _LEVEL.search(record.group("rest"))
            if kind.startswith("SPLIT") and level is not None and level.group(1) != "0":
                kind += "_UPPER"
        found[name][kind] += 1
    return found


async def run(dsn: str, instances: int, concurrency: int) -> dict[str, Any]:
    check = await asyncpg.connect(dsn)
    try:
        data_dir, waldump = await server_files(check)
        async with bench_engine(dsn, [ThreeSteps], {QUEUE: concurrency}) as (engine, finished):
            scheduler = engine.schedulers[QUEUE]
            scheduler.stop_claiming()
            relations = {
                int(r["relfilenode"]): r["relname"]
                for r in await check.fetch(
                    "SELECT c.relname, c.relfilenode FROM pg_class c "
                    "WHERE c.oid = $1::regclass OR c.oid IN "
                    "(SELECT indexrelid FROM pg_index WHERE indrelid = $1::regclass)",
                    f'"{engine.schema}".instances',
                )
            }
            options = await check.fetchval(
                "SELECT reloptions FROM pg_class WHERE oid = $1::regclass",
                f'"{engine.schema}".instances',
            )
            start = await check.fetchval("SELECT pg_current_wal_insert_lsn()::text")
            handles = await ThreeSteps.start_many(
                [ThreeSteps.new(key=f"i{i}") for i in range(instances)], engine=engine
            )
            scheduler.resume_claiming()
            await finished.wait(instances)
            await wait_done_in_table(check, engine.schema, instances, min(h.id for h in handles))
            end = await check.fetchval("SELECT pg_current_wal_insert_lsn()::text")
            wal = await check.fetchval(
                "SELECT pg_wal_lsn_diff($1::text::pg_lsn, $2::text::pg_lsn)", end, start
            )
            await check.execute("SELECT pg_switch_wal()")  # the last record on disk
    finally:
        await check.close()
    dumped = await asyncio.to_thread(
        subprocess.run,
        [str(waldump), "-p", str(data_dir / "pg_wal"), "-s", start, "-e", end],
        capture_output=True,
        text=True,
        check=False,
    )
    counts = count(dumped.stdout.splitlines(), relations)
    heap = counts.pop("instances", collections.Counter())
    updates = heap["UPDATE"] + heap["HOT_UPDATE"]
    per = {
        name: round(
            (c["INSERT_LEAF"] + c["INSERT_POST"] + c["SPLIT_L"] + c["SPLIT_R"]) / instances, 2
        )
        for name, c in sorted(counts.items())
    }
    return {
        "bench": "step_writes",
        "gendurable": gd.__version__,
        "engine": str(Path(gd.__file__).parent),
        "instances": instances,
        "concurrency": concurrency,
        "reloptions": options,
        "heap_per_instance": {k: round(v / instances, 2) for k, v in sorted(heap.items())},
        "hot_share_of_updates": round(heap["HOT_UPDATE"] / updates, 3) if updates else None,
        "wal_bytes_per_step": round(float(wal) / (3 * instances)),
        "index_entries_per_instance": round(sum(per.values()), 2),
        "index_entries_per_step": round(sum(per.values()) / 3, 2),
        "index_entries_per_instance_by_index": {k: v for k, v in per.items() if v},
        "waldump_errors": dumped.stderr.strip().splitlines()[-1:] if dumped.returncode else [],
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--dsn", help="a server on this machine (default: an embedded one)")
    args = parser.parse_args()
    if args.dsn:
        line = await run(args.dsn, args.instances, args.concurrency)
    else:
        from gendurable.embedded import EmbeddedPostgres  # not in A/B virtualenvs

        async with EmbeddedPostgres() as server:
            line = await run(server.dsn, args.instances, args.concurrency)
    print(json.dumps(line), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
