"""Every example runs as a script and prints what it promises."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 90.0


async def _run_script(path: Path, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(path),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"{path.name} did not finish within {TIMEOUT}s\n"
            f"stdout:\n{out.decode()}\nstderr:\n{err.decode()}"
        ) from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_examples_hello_runs_three_steps_to_completion(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    env = {**os.environ, "GENDURABLE_DSN": gendurable_dsn}

    code, out, err = await _run_script(
        EXAMPLES / "hello.py", "--schema", gendurable_schema, env=env
    )

    assert code == 0, err
    lines = out.splitlines()
    assert lines[:5] == [
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


async def test_examples_hello_runs_on_the_embedded_server_without_a_dsn() -> None:
    env = {k: v for k, v in os.environ.items() if k != "GENDURABLE_DSN"}

    code, out, err = await _run_script(EXAMPLES / "hello.py", env=env)

    assert code == 0, err
    assert out.splitlines()[-1] == "Hello, world!"
    assert "is done at step 'finish'" in out
