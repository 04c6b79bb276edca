"""Every example runs as a script and prints what it promises."""

from __future__ import annotations

import os

import asyncpg

from example_runner import EXAMPLES, run_script


async def test_examples_hello_runs_three_steps_to_completion(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    env = {**os.environ, "GENDURABLE_DSN": gendurable_dsn}

    code, out, err = await run_script(EXAMPLES / "hello.py", "--schema", gendurable_schema, env=env)

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

    code, out, err = await run_script(EXAMPLES / "hello.py", env=env)

    assert code == 0, err
    assert out.splitlines()[-1] == "Hello, world!"
    assert "is done at step 'finish'" in out
