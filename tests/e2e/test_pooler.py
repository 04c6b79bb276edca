"""Behind a transaction pooler: `Engine(prepare=False, listen=False)` through PgBouncer.

PgBouncer in transaction mode hands each transaction to whichever server connection is free:
no session state survives (prepared statements, LISTEN). The engine then prepares nothing,
listens to nothing, and finds work and ends by polling. PgBouncer is Debian's package
(`.ci/install-pgbouncer` installs it); without it, and without a way to install it, the test
is skipped and says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import msgspec
import pytest

import gendurable as gd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def _pgbouncer() -> str:
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None
    )
    if found:
        return found
    done = subprocess.run(
        ["bash", str(ROOT / ".ci" / "install-pgbouncer")], capture_output=True, text=True
    )
    found = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None
    )
    if not found:
        pytest.skip(f"pgbouncer is not installed and could not be: {done.stderr.strip()}")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def pooled_dsn(gendurable_dsn: str) -> Iterator[str]:
    """A DSN through a PgBouncer (transaction mode) in front of the test server."""
    binary = _pgbouncer()
    folder = Path(tempfile.mkdtemp(prefix="gendurable-pgbouncer-"))
    try:
        yield from _serve(binary, gendurable_dsn, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _serve(binary: str, gendurable_dsn: str, folder: Path) -> Iterator[str]:
    parts = urlsplit(gendurable_dsn)
    host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
    user = parts.username or "postgres"
    dbname = parts.path.lstrip("/") or "postgres"
    port = _free_port()
    config = folder / "pgbouncer.ini"
    config.write_text(
        "[databases]\n"
        f"pooled = host={host} port={parts.port or 5432} dbname={dbname} user={user}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\n"
        "auth_type = any\npool_mode = transaction\n"
        "max_client_conn = 100\ndefault_pool_size = 4\n"
        f"unix_socket_dir = {folder}\n"
    )
    command = [binary, str(config)]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root: run it as the owner of the server's socket
        # directory (the embedded server's own user), who can reach the socket.
        owner = os.stat(host).st_uid if host.startswith("/") else pwd.getpwnam("nobody").pw_uid
        os.chown(folder, owner, -1)
        os.chmod(config, 0o644)
        command = [binary, "-u", pwd.getpwuid(owner).pw_name, str(config)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_listening(port, proc)
        yield f"postgresql://{user}@127.0.0.1:{port}/pooled"
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        if proc.poll() is not None:
            out = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"pgbouncer exited with {proc.returncode}: {out}")
        with socket.socket() as s, contextlib.suppress(OSError):
            s.connect(("127.0.0.1", port))
            return
        subprocess.run(["sleep", "0.05"], check=False)  # a process to start, not a race
    pytest.fail("pgbouncer did not listen within 10 s")


@gd.workflow(name="pooler.three")
class Three:
    class State(msgspec.Struct):
        n: int = 0

    @gd.step(start=True)
    async def a(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.n += 1
        return gd.goto(self.b)

    @gd.step
    @gd.await_signals("go", timeout=timedelta(seconds=30))
    async def b(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.n += 1
        return gd.goto(self.c)

    @gd.step
    async def c(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done(state.n + 1)


@pytest.fixture
async def pooled_engine(pooled_dsn: str, gendurable_schema: str) -> AsyncIterator[gd.Engine]:
    engine = gd.Engine(
        pooled_dsn,
        workflows=[Three],
        name="pooled",
        schema=gendurable_schema,
        queues={"default": 8},
        prepare=False,
        listen=False,
        poll_interval=timedelta(milliseconds=100),
    )
    async with engine:
        yield engine


async def test_pooler_runs_starts_signals_and_results_in_transaction_mode(
    pooled_engine: gd.Engine, gendurable_dsn: str, gendurable_schema: str
) -> None:
    handles = [await Three.start(key=f"k{i}") for i in range(20)]
    handles += await Three.start_many([Three.new(key=f"m{i}") for i in range(20)])
    direct = await asyncpg.connect(gendurable_dsn)
    try:

        async def parked() -> Any:
            return await direct.fetchval(
                f"SELECT count(*) FROM \"{gendurable_schema}\".instances WHERE status = 'awaiting'"
            )

        async with asyncio.timeout(30):
            while await parked() < len(handles):  # noqa: ASYNC110 (polling a count)
                await asyncio.sleep(0.05)
        for h in handles:
            await Three.signal(h.id, "go")
        results = [await Three.result(h.id, timeout=30) for h in handles]
        assert results == [3] * len(handles)
        # Nothing was left prepared or listening on the server: every statement went
        # through the pooler's server connections, which keep no session state.
        listening = await direct.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%'"
        )
        assert listening == 0
    finally:
        await direct.close()
