"""`gendurable worker` logs every step failure on stderr, one line each; tracebacks at debug.

The worker runs as a real process (`cli_app:served`); a client engine in the test starts
`cli.flaky`, whose only attempt fails, and the test waits for the row to fail.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import asyncpg
import pytest
from cli_app import Flaky
from cli_support import HERE, cli_env

from gendurable.cli.runner import READY
from gendurable.testing import MakeEngine
from polling import eventually


async def run_worker_until_failed(
    *options: str, dsn: str, schema: str, db: asyncpg.Connection, make_engine: MakeEngine
) -> tuple[int, list[str]]:
    """Start a worker, fail one `cli.flaky` instance on it, stop it; (id, stderr lines)."""
    env = {**cli_env(dsn), "CLI_SCHEMA": schema}
    worker = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gendurable", "worker", "cli_app:served", *options,
        cwd=HERE, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        async with asyncio.timeout(60):
            assert (await worker.stdout.readline()).decode().strip() == READY
        await make_engine(workflows=[Flaky], queues=None)
        handle = await Flaky.start(key="f-1")

        async def failed() -> bool:
            status = await db.fetchval(
                f'SELECT status::text FROM "{schema}".instances WHERE id = $1', handle.id
            )
            return bool(status == "failed")

        await eventually(failed, timeout=30, what="the flaky instance failed on the worker")
        worker.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            _, err = await worker.communicate()
        assert worker.returncode == 0, err.decode()
        return handle.id, err.decode().splitlines()
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()


@pytest.fixture
def gendurable_clock() -> None:
    return None


async def test_worker_logs_a_step_failure_in_one_line(
    gendurable_dsn: str, gendurable_schema: str, db: asyncpg.Connection, make_engine: MakeEngine
) -> None:
    id, lines = await run_worker_until_failed(
        dsn=gendurable_dsn, schema=gendurable_schema, db=db, make_engine=make_engine
    )

    failures = [line for line in lines if "gendurable.steps" in line]
    assert len(failures) == 1, lines
    assert failures[0].endswith(
        f" WARNING gendurable.steps: cli.flaky 'f-1' (id {id}): step work failed on attempt "
        "1 of 1: RuntimeError: the bank is down; the instance failed"
    )
    assert not any("Traceback" in line for line in lines), lines


async def test_worker_at_debug_adds_the_traceback(
    gendurable_dsn: str, gendurable_schema: str, db: asyncpg.Connection, make_engine: MakeEngine
) -> None:
    _, lines = await run_worker_until_failed(
        "--log-level", "debug",
        dsn=gendurable_dsn, schema=gendurable_schema, db=db, make_engine=make_engine,
    )  # fmt: skip

    at = next(i for i, line in enumerate(lines) if "step work failed on attempt 1 of 1" in line)
    assert lines[at + 1] == "Traceback (most recent call last):"
    assert 'raise RuntimeError("the bank is down")' in "\n".join(lines[at:])
