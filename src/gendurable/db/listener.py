"""A LISTEN connection that reconnects by itself."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import asyncpg

from .connect import DATABASE_ERRORS, Hosts
from .outage import Outage

_log = logging.getLogger("gendurable.listener")


class Listener:
    """Listens on one channel; calls `on_payload(payload)` for each notification.

    When the connection drops it reconnects with backoff, for as long as it takes (to
    whichever host of `dsn` is usable: after a failover, the new primary), and calls
    `on_reconnect()`, since notifications sent meanwhile are lost.
    """

    def __init__(self, dsn: str, channel: str, *, timeout: float = 10.0) -> None:
        self.dsn = dsn
        self.hosts = Hosts(dsn)
        self.channel = channel
        self.timeout = timeout
        self.on_payload: Callable[[str], None] = lambda _: None
        self.on_reconnect: Callable[[], None] = lambda: None
        self._conn: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self.outage = Outage(_log, "the LISTEN connection")

    async def start(self) -> None:
        """Connect and listen; raises when the first connection fails."""
        await self._connect()
        self._task = asyncio.create_task(self._watch(), name="gendurable:listener")

    async def stop(self, grace: float | None = None) -> None:
        """Stop listening and close the connection (terminated after `grace` seconds)."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                async with asyncio.timeout(grace if grace is not None else self.timeout):
                    await conn.close()
            except (OSError, TimeoutError, asyncpg.PostgresError):
                conn.terminate()

    async def _connect(self) -> None:
        conn: asyncpg.Connection = await self.hosts.connect(timeout=self.timeout)
        conn.add_termination_listener(self._terminated)
        await conn.add_listener(self.channel, self._notified)
        self._conn = conn
        self._lost.clear()

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: object) -> None:
        self.on_payload(str(payload))

    def _terminated(self, _conn: Any) -> None:
        self._lost.set()

    async def _watch(self) -> None:
        delay = 0.05
        while True:
            await self._lost.wait()
            while True:
                try:
                    await self._connect()
                except DATABASE_ERRORS as exc:
                    self.outage.failed(exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
                    continue
                delay = 0.05
                self.outage.recovered()
                self.on_reconnect()
                break
