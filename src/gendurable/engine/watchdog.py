"""A watchdog for the event loop: warns when a step blocks it, naming the step.

An `async def` step that calls blocking code (`time.sleep`, a synchronous HTTP client, a
long computation) stops the whole event loop: other steps, commits and the heartbeat that
keeps every claim of the engine wait. A block shorter than what is left of the lease costs
only latency; a longer one can lose claims (another worker's reaper hands the instances out
again, and the blocked run's commit is then stale).

A daemon thread pings the loop every `threshold / 4`. When a ping is not answered within
`threshold` (the heartbeat interval), it looks at the loop thread's stack while the block is
still going on, finds the step function in it, and logs a warning naming the workflow, the
step, the instance and the blocking line. When the loop answers again it emits
`loop.blocked` with the duration, on the loop.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import CodeType, FrameType
from typing import Any

from ..events import LOOP_BLOCKED
from ..spec import WorkflowSpec
from ..telemetry import Telemetry

_log = logging.getLogger("gendurable.watchdog")


@dataclass(frozen=True, slots=True)
class Blocker:
    """What was running on the loop thread when the block was seen."""

    workflow: str | None
    step: str | None
    id: int | None
    key: str | None
    where: str


def step_codes(specs: Mapping[str, WorkflowSpec]) -> dict[CodeType, tuple[str, str]]:
    """The code object of every step and handler, with its (workflow, step) name."""
    codes: dict[CodeType, tuple[str, str]] = {}
    for spec in specs.values():
        functions = [(step.name, step.fn) for step in spec.steps.values()]
        if spec.handler is not None:
            functions.append(("handle", spec.handler))
        for name, fn in functions:
            code = getattr(inspect.unwrap(fn), "__code__", None)
            if isinstance(code, CodeType):
                codes[code] = (spec.name, name)
    return codes


def find_blocker(frame: FrameType | None, codes: Mapping[CodeType, tuple[str, str]]) -> Blocker:
    """The innermost step frame on the stack of `frame` (else just the blocking line)."""
    where = "unknown"
    if frame is not None:
        where = f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
    while frame is not None:
        named = codes.get(frame.f_code)
        if named is not None:
            ctx = frame.f_locals.get("ctx")
            return Blocker(
                named[0], named[1], getattr(ctx, "id", None), getattr(ctx, "key", None), where
            )
        frame = frame.f_back
    return Blocker(None, None, None, None, where)


class LoopWatchdog:
    """Watches one event loop from a daemon thread (see the module docstring)."""

    def __init__(
        self,
        specs: Mapping[str, WorkflowSpec],
        telemetry: Telemetry,
        *,
        threshold: float,
        lease: float,
        engine: str,
    ) -> None:
        self.codes = step_codes(specs)
        self.telemetry = telemetry
        self.threshold = threshold
        self.lease = lease
        self.engine = engine
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._pinged_at: float | None = None
        self._blocker: Blocker | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start watching the running loop."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._thread = threading.Thread(
            target=self._watch, name=f"gendurable-watchdog-{self.engine}", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (the thread ends within `threshold / 4`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.threshold)
            self._thread = None

    def _watch(self) -> None:
        assert self._loop is not None
        while not self._stop.wait(self.threshold / 4):
            pinged_at = self._pinged_at
            if pinged_at is None:
                self._pinged_at = time.monotonic()
                try:
                    self._loop.call_soon_threadsafe(self._answer)
                except RuntimeError:  # the loop closed
                    return
            elif self._blocker is None and time.monotonic() - pinged_at > self.threshold:
                frame = sys._current_frames().get(self._loop_thread)
                blocker = find_blocker(frame, self.codes)
                del frame
                if self._pinged_at == pinged_at:  # still the same block
                    self._blocker = blocker
                    self._warn(blocker, time.monotonic() - pinged_at)

    def _warn(self, blocker: Blocker, blocked: float) -> None:
        if blocker.step is not None:
            what = (
                f"step {blocker.step!r} of workflow {blocker.workflow!r} "
                f"(instance {blocker.id}, key {blocker.key!r})"
            )
        else:
            what = "code outside any step"
        _log.warning(
            "engine %r: %s has blocked the event loop for %.1fs, at %s; heartbeats, commits "
            "and every other step wait meanwhile, and a block longer than the lease (%.1fs) "
            "can lose claims. Await instead of blocking, or make the step a plain `def` "
            "(it then runs in a thread)",
            self.engine,
            what,
            blocked,
            blocker.where,
            self.lease,
        )

    def _answer(self) -> None:
        """On the loop: the ping got through; report the block it ends, if any."""
        pinged_at, blocker = self._pinged_at, self._blocker
        self._pinged_at = None
        self._blocker = None
        if blocker is None or pinged_at is None:
            return
        meta: dict[str, Any] = {
            "engine": self.engine,
            "workflow": blocker.workflow,
            "step": blocker.step,
            "id": blocker.id,
            "key": blocker.key,
            "where": blocker.where,
        }
        self.telemetry.emit(LOOP_BLOCKED, {"duration": time.monotonic() - pinged_at}, meta)
