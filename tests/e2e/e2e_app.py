"""The app e2e workers serve (`gendurable worker e2e_app:engine`); tests import it too.

Configured by the environment, read when the engine is built or a step runs:

- `E2E_DSN`, `E2E_SCHEMA`: where the engine works.
- `E2E_LEASE`, `E2E_REAP_INTERVAL`, `E2E_POLL_INTERVAL` (seconds): engine timings.
- `E2E_MARKS`: a directory; every step execution appends `step attempt pid` to `<key>.log`
  (one `write` on an `O_APPEND` file, so lines from several processes never interleave).
- `E2E_HANG=1` (set for a worker only): the `work` step blocks forever once it has written
  its mark, until the process is killed or a drain cancels it.
- `Serial` (queue `e2e-serial`) records `enter exit pid` (`time.monotonic()`, the same clock
  in every process of the machine) to `$E2E_MARKS/serial-<concurrency key>.log` around each
  step, so that a test can check that runs of one key never overlapped.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import timedelta

import msgspec

import gendurable as gd

QUEUE = "e2e"
SERIAL_QUEUE = "e2e-serial"


def mark(ctx: gd.Context, step: str) -> None:
    """Record one execution of `step` for the instance in `$E2E_MARKS/<key>.log`."""
    append_line(f"{ctx.key}.log", f"{step} {ctx.attempt} {os.getpid()}\n")


def append_line(name: str, line: str) -> None:
    """Append one line to `$E2E_MARKS/<name>` in one `write` (O_APPEND: never interleaved)."""
    path = os.path.join(os.environ["E2E_MARKS"], name)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


@gd.workflow(name="e2e.chore", queue=QUEUE)
class Chore:
    """`work` (which may hang in a worker), then `finish`: each step's effect is counted."""

    class State(msgspec.Struct):
        worked: int = 0
        finished: int = 0

    @gd.step(start=True)
    async def work(self, state: State, ctx: gd.Context) -> gd.Outcome:
        mark(ctx, "work")
        if os.environ.get("E2E_HANG") == "1":
            await asyncio.Event().wait()  # never set: the process dies or drains here
        state.worked += 1
        return gd.goto(self.finish)

    @gd.step
    async def finish(self, state: State, ctx: gd.Context) -> gd.Outcome:
        mark(ctx, "finish")
        state.finished += 1
        return gd.done({"worked": state.worked, "finished": state.finished, "pid": os.getpid()})


@gd.workflow(name="e2e.serial", queue=SERIAL_QUEUE)
class Serial:
    """Two steps, each recording when it entered and left for its concurrency key."""

    class State(msgspec.Struct):
        ckey: str
        pause: float = 0.0

    @gd.step(start=True)
    async def first(self, state: State, ctx: gd.Context) -> gd.Outcome:
        await self.run(state)
        return gd.goto(self.second)

    @gd.step
    async def second(self, state: State, ctx: gd.Context) -> gd.Outcome:
        await self.run(state)
        return gd.done(os.getpid())

    async def run(self, state: State) -> None:
        entered = time.monotonic()
        await asyncio.sleep(state.pause)  # the work: a window another run of the key could hit
        append_line(f"serial-{state.ckey}.log", f"{entered} {time.monotonic()} {os.getpid()}\n")


def _seconds(name: str, default: float) -> timedelta:
    return timedelta(seconds=float(os.environ.get(name, default)))


def engine() -> gd.Engine:
    """The worker's engine, built from the environment (see the module docstring)."""
    return gd.Engine(
        os.environ["E2E_DSN"],
        workflows=[Chore, Serial],
        name="e2e-worker",
        schema=os.environ["E2E_SCHEMA"],
        queues={QUEUE: 2, SERIAL_QUEUE: 4},
        lease=_seconds("E2E_LEASE", 30),
        reap_interval=_seconds("E2E_REAP_INTERVAL", 5),
        poll_interval=_seconds("E2E_POLL_INTERVAL", 1),
    )
