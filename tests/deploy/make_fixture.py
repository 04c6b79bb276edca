"""Make the upgrade fixture: a database left by gendurable 0.1.0 with instances in every status.

    .venv/bin/python tests/deploy/make_fixture.py

writes `fixtures/gendurable-0.1.0.sql` (the schema and its rows, as `pg_dump` writes them in
plain SQL with INSERT statements) and `fixtures/gendurable-0.1.0.json` (the fixture's clock
and the id of each instance by key). It runs `populate` below with the 0.1.0 wheel (in the
virtualenv `old_release.py` makes) against a throwaway embedded PostgreSQL, on a manual clock,
so that the rows depend on nothing but this script and `upgrade_flows.py`.

`populate` leaves, in schema `gendurable_fixture_0_1_0`: instances awaiting a signal (one to
be signalled, one to run past its deadline), one cancelled while it waited, a parent waiting
on two children that await a signal, three calls under a limit of one an hour (one done, two
throttled), one failed (its step had a bug), one scheduled two hours ahead, one done, and one
`executing` whose process died while its step ran (the lease expires later). The process then
exits without stopping its engine, as a killed worker would.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCHEMA = "gendurable_fixture_0_1_0"
CLOCK = datetime(2030, 1, 1, tzinfo=UTC)
DUMP = HERE / "fixtures" / "gendurable-0.1.0.sql"
INFO = HERE / "fixtures" / "gendurable-0.1.0.json"

EXPECTED = {
    "awaiting-signal": "awaiting",
    "awaiting-deadline": "awaiting",
    "cancelled": "cancelled",
    "waiting-children": "waiting",
    "waiting-children/0": "awaiting",
    "waiting-children/1": "awaiting",
    "throttled-0": "done",
    "throttled-1": "available",
    "throttled-2": "available",
    "failed": "failed",
    "scheduled": "available",
    "done": "done",
    "executing": "executing",
}
"""Each instance's key and the status the fixture leaves it in."""


async def populate(dsn: str) -> None:
    """Run with gendurable 0.1.0: make the rows, print the fixture's info, die mid-step."""
    import asyncpg
    import upgrade_flows as flows

    import gendurable as gd

    if gd.__version__ != "0.1.0" or Path(gd.__file__).is_relative_to(HERE.parent.parent / "src"):
        raise SystemExit(f"run with gendurable 0.1.0 from its wheel, not {gd.__file__}")
    flows.BROKEN = True
    flows.HANG = asyncio.Event()
    clock = gd.ManualClock(CLOCK)
    engine = gd.Engine(
        dsn, workflows=flows.WORKFLOWS, schema=SCHEMA, queues={"default": 4}, clock=clock,
        name="fixture",
    )  # fmt: skip
    await engine.start()
    approval = flows.Approval
    for key in ("awaiting-signal", "awaiting-deadline", "cancelled"):
        await approval.start(key=key, state=approval.State(item=key))
    await flows.Batch.start(key="waiting-children", state=flows.Batch.State(parts=2))
    for n in range(3):
        await flows.Limited.start(key=f"throttled-{n}", state=flows.Limited.State(n=n))
    await flows.Fragile.start(key="failed", state=flows.Fragile.State(n=41))
    await flows.simple.enqueue({"n": 5}, key="scheduled", delay=timedelta(hours=2))
    await flows.simple.enqueue({"n": 7}, key="done")
    await engine.drain()
    await approval.cancel("cancelled")
    await engine.drain()
    await flows.slow.enqueue(None, key="executing")

    conn = await asyncpg.connect(dsn)
    for _ in range(500):
        rows = await conn.fetch(f'SELECT key, status::text, id FROM "{SCHEMA}".instances')
        if dict((r["key"], r["status"]) for r in rows).get("executing") == "executing":
            break
        await asyncio.sleep(0.02)
    found = {r["key"]: r["status"] for r in rows}
    if found != EXPECTED:
        raise SystemExit(f"the fixture is not what it should be: {found}")
    ids = {r["key"]: r["id"] for r in rows}
    print(json.dumps({"clock": clock.now().isoformat(), "schema": SCHEMA, "ids": ids}))
    sys.stdout.flush()
    os._exit(0)  # a killed worker: no stop, the claim of "executing" left to expire


def main() -> None:
    """Make the fixture files (run with the working tree's gendurable, for the server)."""
    sys.path.insert(0, str(HERE.parent))
    from old_release import old_release_python

    from gendurable.embedded import EmbeddedPostgres, _bin_dirs
    from venvs import ROOT, clean_env, run

    python = old_release_python(ROOT / ".pytest_cache" / "d" / "deploy-venvs")
    with EmbeddedPostgres() as server:
        out = run([python, __file__, "populate", server.dsn], env=clean_env(PYTHONPATH=str(HERE)))
        pg_dump = _bin_dirs()[max(_bin_dirs())] / "pg_dump"
        dump = run(
            [pg_dump, "--schema", SCHEMA, "--inserts", "--no-owner", "--no-privileges",
             "--dbname", server.dsn],
        )  # fmt: skip
    info = json.loads(out)
    INFO.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    DUMP.write_text(portable(dump))
    print(f"wrote {DUMP} and {INFO}")


def portable(dump: str) -> str:
    """The dump without what only psql or a newer server understands (its `\\restrict`
    lines, settings PostgreSQL 16 lacks), and with a header saying where it comes from."""
    kept = [
        line
        for line in dump.splitlines()
        if not line.startswith("\\") and not line.startswith("SET transaction_timeout")
    ]
    header = [
        "-- A database left by gendurable 0.1.0, made by tests/deploy/make_fixture.py: do not",
        "-- edit, run that script again. The schema is named gendurable_fixture_0_1_0; the",
        "-- upgrade test restores it under a schema of its own.",
    ]
    return "\n".join(header + kept) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["populate"]:
        asyncio.run(populate(sys.argv[2]))
    else:
        main()
