"""A rolling deploy with a schema change, from the previous release to this code.

An engine of 0.1.0 runs as a subprocess in a virtualenv of its own (`old_release.py`), with
work in flight. The new code's `gendurable migrate` applies the migrations 0.1.0 lacks; while
it runs, application processes of 0.1.0 start and signal instances, a second 0.1.0 engine
starts (it finds nothing to apply, so it does not wait for the migration), and a new engine
starts beside them (it waits for the migration it needs). After it, both releases keep
working side by side, and every instance started before, during and after the migration
ends as expected.

The new code is this working tree. While gendurable ships no migration after 0.1.0, the test
plays the next release with a copy of this package holding one more migration,
`rolling_migration.sql` (an expansion, as the rules allow); once a real one exists, the
working tree itself is the new code and its migrations are the ones applied.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from old_release import RELEASE, old_release_python, released_version

import gendurable
from gendurable.sql import migrations
from polling import eventually
from venvs import clean_env

pytestmark = pytest.mark.fresh_schema

HERE = Path(__file__).resolve().parent
PATIENCE = 90.0
"""Seconds an engine of a loaded machine gets to do what the test waits for."""


@pytest.fixture(scope="module")
def old_python(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Kept in pytest's cache between runs when the cache plugin is on (`-p no:cacheprovider`
    # turns it off: then a directory of this run).
    cache = getattr(request.config, "cache", None)
    folder = cache.mkdir("deploy-venvs") if cache is not None else tmp_path_factory.mktemp("venvs")
    return old_release_python(folder)


@pytest.fixture
def new_code(tmp_path: Path) -> Iterator[Path | None]:
    """Where the new code's gendurable comes from: None for this working tree when it has
    migrations after the release's, else a copy of the package with the test's migration."""
    if any(m.version > released_version() for m in migrations("gendurable")):
        yield None
        return
    root = tmp_path / "next"
    package = Path(gendurable.__file__).parent
    shutil.copytree(package, root / "gendurable", ignore=shutil.ignore_patterns("__pycache__"))
    number = released_version() + 1
    shutil.copy(
        HERE / "rolling_migration.sql",
        root / "gendurable" / "sql" / "migrations" / f"{number:04d}_rolling_probe.sql",
    )
    yield root


class Deploy:
    """The processes of the test, old and new, and what they print."""

    def __init__(
        self, dsn: str, schema: str, old_python: Path, new_code: Path | None, logs: Path
    ) -> None:
        self.dsn, self.schema, self.logs = dsn, schema, logs
        self.old_python = old_python
        self.new_path = f"{new_code}:{HERE}" if new_code is not None else str(HERE)
        self.new_package = (
            new_code / "gendurable" if new_code is not None else Path(gendurable.__file__).parent
        )
        self.workers: dict[str, asyncio.subprocess.Process] = {}
        self.spawned: list[asyncio.subprocess.Process] = []

    def env(self, *, old: bool, role: str = "client") -> dict[str, str]:
        return clean_env(
            GENDURABLE_DSN=self.dsn,
            ROLLING_SCHEMA=self.schema,
            ROLLING_ROLE=role,
            PYTHONPATH=str(HERE) if old else self.new_path,
        )

    def python(self, *, old: bool) -> str:
        return str(self.old_python) if old else sys.executable

    async def spawn(
        self, name: str, *args: str, old: bool, role: str = "client", output: bool = True
    ) -> Any:
        """Start `python args...`; its stderr (and its stdout unless `output`) goes to a log."""
        with (self.logs / f"{name}.log").open("w") as log:  # the child keeps its own copy
            proc = await asyncio.create_subprocess_exec(
                self.python(old=old),
                *args,
                cwd=HERE,
                env=self.env(old=old, role=role),
                stdout=asyncio.subprocess.PIPE if output else log,
                stderr=log,
            )
        self.spawned.append(proc)
        return proc

    async def worker(self, role: str, *, old: bool) -> None:
        self.workers[role] = await self.spawn(
            role,
            *("-m", "gendurable.cli", "worker", "rolling_app:engine", "--log-level", "info"),
            old=old,
            role=role,
            output=False,
        )

    async def client(self, action: str, phase: str, *, old: bool) -> dict[str, int]:
        proc = await self.spawn(
            f"client-{phase}-{action}", "rolling_client.py", action, phase, old=old
        )
        async with asyncio.timeout(PATIENCE):
            out, _ = await proc.communicate()
        assert proc.returncode == 0, self.log(f"client-{phase}-{action}")
        ids: dict[str, int] = json.loads(out) if action == "start" else {}
        return ids

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()

    async def stop(self) -> dict[str, int | None]:
        for proc in self.workers.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        codes = {}
        for role, proc in self.workers.items():
            try:
                async with asyncio.timeout(PATIENCE):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
            codes[role] = proc.returncode
        for proc in self.spawned:  # what a failed test left running
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return codes


@pytest.fixture
async def deploy(
    gendurable_dsn: str,
    gendurable_schema: str,
    old_python: Path,
    new_code: Path | None,
    tmp_path: Path,
) -> AsyncIterator[Deploy]:
    running = Deploy(gendurable_dsn, gendurable_schema, old_python, new_code, tmp_path)
    yield running
    await running.stop()


@pytest.mark.slow
async def test_a_rolling_deploy_from_the_previous_release_keeps_every_instance_going(
    deploy: Deploy, gendurable_dsn: str, gendurable_schema: str, db: asyncpg.Connection
) -> None:
    schema = gendurable_schema
    table = f'"{schema}".instances'

    async def row(instance_id: int) -> asyncpg.Record | None:
        return await db.fetchrow(
            f"SELECT status::text, result FROM {table} WHERE id = $1", instance_id
        )

    async def live_nodes() -> set[str]:
        rows = await db.fetch(f'SELECT name FROM "{schema}".nodes WHERE expires_at > now()')
        return {r["name"] for r in rows}

    async def done(instance_id: int) -> bool:
        found = await row(instance_id)
        return found is not None and found["status"] == "done"

    # 0.1.0 creates the schema and runs, with work in flight.
    migrated = await _run(deploy, "old-migrate", old=True)
    assert migrated.endswith(f"is at version {released_version()}\n")
    await deploy.worker("old", old=True)
    await eventually(lambda: _has(live_nodes, "old"), timeout=PATIENCE, what="the 0.1.0 engine")
    ids = await deploy.client("start", "before", old=True)
    await eventually(lambda: done(ids["before-old_probe"]), timeout=PATIENCE)

    # The new code's migrate, held in its concurrent index build by an open snapshot.
    snapshot_conn = await asyncpg.connect(gendurable_dsn)
    snapshot = snapshot_conn.transaction(isolation="repeatable_read")
    await snapshot.start()
    await snapshot_conn.fetchval("SELECT 1")
    migrate = await deploy.spawn(
        "new-migrate", "-m", "gendurable.cli", "migrate", "--schema", schema, old=False
    )
    held = await eventually(
        lambda: _migration_held(db, migrate), timeout=PATIENCE, what="the migration to run"
    )

    # During it: 0.1.0 processes start and signal instances, a second 0.1.0 engine starts,
    # and so does a new engine.
    ids |= await deploy.client("start", "during", old=True)
    await deploy.client("signal", "before", old=True)
    await deploy.worker("old2", old=True)
    await deploy.worker("new", old=False)
    await eventually(lambda: _has(live_nodes, "old2"), timeout=PATIENCE, what="a 0.1.0 start")
    await eventually(lambda: done(ids["during-old_probe"]), timeout=PATIENCE)
    if held == "building":
        assert migrate.returncode is None  # all of that while the migration went on
        assert "new" not in await live_nodes()  # the new engine waits for its schema

    await snapshot.commit()
    await snapshot_conn.close()
    async with asyncio.timeout(PATIENCE):
        out, _ = await migrate.communicate()
    assert migrate.returncode == 0, deploy.log("new-migrate")
    latest = int(_new_migrations(deploy)[-1].split("_", 1)[0])
    assert out.decode().endswith(f"is at version {latest}\n")
    await eventually(lambda: _has(live_nodes, "new"), timeout=PATIENCE, what="the new engine")

    # After it, both releases run side by side.
    ids |= await deploy.client("start", "after", old=False)
    await deploy.client("signal", "during", old=True)
    await deploy.client("signal", "after", old=False)

    async def all_ended() -> bool:
        rows = await db.fetch(
            f"SELECT count(*) FILTER (WHERE status NOT IN ('done', 'failed', 'cancelled')) "
            f"FROM {table}"
        )
        return rows[0][0] == 0

    await eventually(all_ended, timeout=PATIENCE, what="every instance to end")
    codes = await deploy.stop()
    assert codes == {"old": 0, "old2": 0, "new": 0}

    old_site = str(deploy.old_python.parent.parent)
    ran: dict[str, int] = {}
    for key, instance_id in sorted(ids.items()):
        found = await row(instance_id)
        assert found is not None
        assert found["status"] == "done", (key, found)
        result = json.loads(found["result"])
        if "-trip-" in key:
            legs = int(key.rsplit("-", 1)[1]) + 1
            assert result["total"] == sum(2 * n for n in range(legs))
            state = await db.fetchval(f"SELECT state FROM {table} WHERE id = $1", instance_id)
            for who in json.loads(state)["ran"]:
                ran[who.split()[0]] = ran.get(who.split()[0], 0) + 1
        elif key.endswith("-nap"):
            assert result == "timed out"
        elif key.endswith("-old_probe"):
            assert result.startswith("old")
            assert f" {RELEASE} {old_site}/" in result, result
        else:
            assert result.startswith("new ")
            assert f" {deploy.new_package}/" in result, result
    legs = await db.fetchval(
        f"SELECT count(*) FROM {table} WHERE workflow = 'rolling.leg' AND status = 'done'"
    )
    assert legs == 3 * (1 + 2 + 3)
    applied = await db.fetch(f'SELECT version, name FROM "{schema}".migrations ORDER BY 1')
    assert [r["name"] for r in applied] == _new_migrations(deploy)
    print(f"migration held in its index build: {held == 'building'}; trip steps run by: {ran}")


async def _has(live_nodes: Any, name: str) -> bool:
    return name in await live_nodes()


async def _migration_held(db: asyncpg.Connection, migrate: asyncio.subprocess.Process) -> str:
    """'building' while the migration waits in a concurrent index build (for the test's
    snapshot), 'finished' if it ended first (migrations without one); '' meanwhile."""
    if migrate.returncode is not None:
        return "finished"
    waiting = await db.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND strpos(query, 'CREATE INDEX CONCURRENTLY') > 0"
    )
    return "building" if waiting else ""


def _new_migrations(deploy: Deploy) -> list[str]:
    """The migration files of the new code."""
    folder = deploy.new_package / "sql" / "migrations"
    return sorted(p.name for p in folder.glob("*.sql"))


async def _run(deploy: Deploy, name: str, *, old: bool) -> str:
    proc = await deploy.spawn(
        name, "-m", "gendurable.cli", "migrate", "--schema", deploy.schema, old=old
    )
    async with asyncio.timeout(PATIENCE):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, deploy.log(name)
    return out.decode()
