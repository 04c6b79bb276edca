"""End-to-end fixtures: real engines on real PostgreSQL, real worker processes.

- `make_engine(workflows=..., queues=..., start=True, **options)`: engines on the test's
  schema with unique names and, unless `clock=` is given, the system clock; every engine
  made is stopped at teardown, before the schema is dropped.
- `marks`: where `e2e_app` steps record each execution (`$E2E_MARKS`, set here too).
- `spawn_worker(**env)`: a `gendurable worker e2e_app:engine` process on the test's schema,
  returned once it printed READY; killed at teardown.
- `db`: a plain connection for checking rows with SQL; `other_schema`: a second schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import (
    Marks,
    SpawnWorker,
    Unretrieved,
    Worker,
)

from gendurable.cli.runner import READY
from gendurable.db.schema_admin import drop_schema

HERE = Path(__file__).resolve().parent


@pytest.fixture
def gendurable_clock(extra_schemas: list[str]) -> None:
    """End-to-end engines run on the system clock (the plugin's `make_engine` reads this).

    It depends on `extra_schemas` so that those schemas are dropped only after every engine
    `make_engine` made has stopped.
    """
    return None


@pytest.fixture(autouse=True)
async def unretrieved_errors() -> AsyncIterator[Unretrieved]:
    """Fails a test that leaves futures or tasks whose exception nobody retrieved.

    asyncio reports those only when they are garbage collected, at some random later point
    (and on CPython 3.11 a report landing inside `ast.parse` crashes pytest's summary), so
    the test's objects are collected here, while the loop and its handler are still ours.
    A test may check them itself with `unretrieved_errors.take()`.
    """
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    errors = Unretrieved()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", ""))
        if "never retrieved" in message:
            errors.found.append(f"{message}: {context.get('exception')!r}")
        elif previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    yield errors
    found = errors.take()
    loop.set_exception_handler(previous)
    if found:
        pytest.fail(
            f"{len(found)} asyncio future(s)/task(s) ended with an exception nobody retrieved, "
            f"e.g. {found[0]}",
            pytrace=False,
        )


@pytest.fixture
def extra_schemas(gendurable_dsn: str) -> Iterator[list[str]]:
    """Schemas a test adds beside its own; dropped after every engine of the test stopped.

    `make_engine` depends on this fixture, so this teardown runs after the engines' one.
    """
    schemas: list[str] = []
    yield schemas
    # A private loop in a thread: a sync fixture must not touch the test's event loop.
    errors: list[BaseException] = []

    def drop() -> None:
        for schema in schemas:
            try:
                asyncio.run(drop_schema(gendurable_dsn, schema))
            except BaseException as exc:
                errors.append(exc)

    thread = threading.Thread(target=drop)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


@pytest.fixture
def other_schema(extra_schemas: list[str]) -> str:
    """A second schema for the test (multi-engine tests), dropped at teardown."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    extra_schemas.append(schema)
    return schema


@pytest.fixture
def marks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Marks:
    """Where `e2e_app` steps record their executions, in this process and in workers."""
    folder = tmp_path / "marks"
    folder.mkdir()
    monkeypatch.setenv("E2E_MARKS", str(folder))
    return Marks(folder)


@pytest.fixture
async def spawn_worker(
    gendurable_dsn: str, gendurable_schema: str, marks: Marks, tmp_path: Path
) -> AsyncIterator[SpawnWorker]:
    """`await spawn_worker(E2E_LEASE="2", ...)`: a worker process that printed READY.

    `env` entries configure `e2e_app` (see its docstring); `E2E_DRAIN_TIMEOUT` becomes the
    worker's `--drain-timeout`; `E2E_TARGET` serves another `MODULE:ENGINE` of this folder.
    Workers still alive at teardown are SIGKILLed (before the schema is dropped).
    """
    workers: list[Worker] = []

    async def spawn(**env: str) -> Worker:
        full = dict(os.environ)
        full.update(
            E2E_DSN=gendurable_dsn,
            E2E_SCHEMA=gendurable_schema,
            E2E_MARKS=str(marks.folder),
            PYTHONPATH=os.pathsep.join(p for p in (str(HERE), full.get("PYTHONPATH")) if p),
            PYTHONUNBUFFERED="1",
        )
        full.update(env)
        stderr_path = tmp_path / f"worker-{len(workers)}.stderr"
        with stderr_path.open("wb") as stderr:
            # `gendurable worker MODULE:ENGINE`, run as `python -m gendurable` so that the
            # worker uses this interpreter (and its virtualenv) whatever PATH says.
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gendurable",
                "worker",
                full.get("E2E_TARGET", "e2e_app:engine"),
                "--drain-timeout",
                full.get("E2E_DRAIN_TIMEOUT", "30"),
                cwd=str(HERE),
                env=full,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
            )
        worker = Worker(proc, stderr_path)
        workers.append(worker)
        await worker.wait_line(READY)
        return worker

    yield spawn
    for worker in workers:
        with contextlib.suppress(ProcessLookupError):
            await worker.close()
        print(worker.describe())  # shown by pytest when the test failed
