"""Helpers of the end-to-end tests: marker files, worker processes, polls.

Nothing here sleeps to synchronise: every wait is on a telemetry event, a line a worker
printed, a marker file or a database poll, each with a bounded deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from polling import eventually as eventually


async def row(db: Any, schema: str, id: int) -> dict[str, Any]:
    """Every column of one instance row, as a dict."""
    found = await db.fetchrow(f'SELECT * FROM "{schema}".instances WHERE id = $1', id)
    assert found is not None, f"instance {id} is gone"
    return dict(found)


class Unretrieved:
    """Exceptions of futures and tasks nobody retrieved, as asyncio reported them."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def take(self) -> list[str]:
        """Collect garbage now and return (and forget) what was reported so far."""
        gc.collect()
        found, self.found = self.found, []
        return found


# --- marker files written by the e2e_app steps -----------------------------------------------


class Marks:
    """The executions `e2e_app` steps recorded: one line `step attempt pid` per run."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def of(self, key: str) -> list[tuple[str, int, int]]:
        """(step, attempt, pid) of every recorded execution for `key`, in order."""
        path = self.folder / f"{key}.log"
        if not path.exists():
            return []
        runs = []
        for line in path.read_text().splitlines():
            step, attempt, pid = line.split()
            runs.append((step, int(attempt), int(pid)))
        return runs

    def runs(self, key: str, step: str) -> list[tuple[int, int]]:
        """(attempt, pid) of each execution of `step` for `key`."""
        return [(a, p) for s, a, p in self.of(key) if s == step]

    async def wait(self, key: str, step: str, *, count: int = 1, timeout: float = 15.0) -> None:
        """Wait until `step` ran `count` times for `key`."""

        async def enough() -> bool:
            return len(self.runs(key, step)) >= count

        await eventually(enough, timeout=timeout, what=f"{count} run(s) of {step} for {key}")


# --- worker processes ------------------------------------------------------------------------


class Worker:
    """A worker process; its stdout lines are collected as they come, stderr goes to a file."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.stderr_path = stderr_path
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name=f"e2e-worker-{proc.pid}-stdout")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode().rstrip("\n"))
            self._changed.set()
        self._changed.set()

    def stderr(self) -> str:
        """What the worker wrote on stderr so far (logs, tracebacks)."""
        return self.stderr_path.read_text() if self.stderr_path.exists() else ""

    def describe(self) -> str:
        return f"worker {self.pid}: stdout {self.lines}, stderr:\n{self.stderr()[-4000:]}"

    async def wait_line(self, text: str, *, timeout: float = 30.0) -> None:
        """Wait until the worker printed a line equal to `text`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while text not in self.lines and not self._reader.done():
                    self._changed.clear()
                    await self._changed.wait()
        if text not in self.lines:
            pytest.fail(f"{text!r} was not printed within {timeout}s; {self.describe()}")

    def send(self, signum: int) -> None:
        """Send signal `signum` to the worker."""
        self.proc.send_signal(signum)

    async def wait_exit(self, *, timeout: float) -> int:
        """The exit code (negative: killed by that signal); fails after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                code = await self.proc.wait()
                await self._reader
        except TimeoutError:
            pytest.fail(f"the worker did not exit within {timeout}s; {self.describe()}")
        return code

    async def close(self) -> None:
        """Kill the worker if it still runs, and reap it."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


SpawnWorker = Callable[..., Awaitable[Worker]]
"""The `spawn_worker` fixture: `await spawn_worker(**env)`."""

"""The `recorder` fixture: `recorder(engine)`."""
