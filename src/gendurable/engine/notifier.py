"""The engine's one LISTEN connection: wakes schedulers and `result()` waiters.

Payloads on the schema's channel are `q:<queue>` (work became due), `t:<id>` (an
instance ended), `p:<queue>` and `r:<queue>` (a queue was paused, resumed). Notifications
are hints: schedulers also poll and waiters recheck the row,
so a notification lost while the connection was down costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from ..db.listener import Listener

_log = logging.getLogger("gendurable.notifier")


class Notifier:
    """Dispatches channel payloads to queue wakers and per-instance waiters."""

    def __init__(
        self,
        listener: Listener | None,
        wake_queue: Callable[[str], None],
        *,
        poll_interval: float,
        pause_changed: Callable[[str, bool], None] | None = None,
    ) -> None:
        self.listener = listener
        self.wake_queue = wake_queue
        self.pause_changed = pause_changed
        self._waiters: dict[int, set[asyncio.Future[None]]] = {}
        # With no listener nothing announces an end: waiters look again at this pace.
        self.recheck_after = None if listener is not None else poll_interval
        if listener is not None:
            listener.on_payload = self._dispatch
            listener.on_reconnect = self._wake_all

    def waiter(self, id: int) -> asyncio.Future[None]:
        """A future resolved when instance `id` is announced terminal (or on reconnect)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(id, set()).add(fut)
        fut.add_done_callback(lambda f: self._forget(id, f))
        return fut

    def _forget(self, id: int, fut: asyncio.Future[None]) -> None:
        waiters = self._waiters.get(id)
        if waiters is not None:
            waiters.discard(fut)
            if not waiters:
                del self._waiters[id]

    def _dispatch(self, payload: str) -> None:
        kind, _, value = payload.partition(":")
        if kind == "q":
            self.wake_queue(value)
        elif kind in ("p", "r"):
            if self.pause_changed is not None:
                self.pause_changed(value, kind == "p")
        elif kind == "t":
            try:
                id = int(value)
            except ValueError:
                return
            for fut in list(self._waiters.get(id, ())):
                if not fut.done():
                    fut.set_result(None)

    def _wake_all(self) -> None:
        """After a reconnect anything may have happened: every waiter rechecks."""
        for waiters in list(self._waiters.values()):
            for fut in list(waiters):
                if not fut.done():
                    fut.set_result(None)
        self.wake_queue("")
