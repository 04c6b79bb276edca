"""Group commit: outcomes that finish together are committed together, in one statement.

The first outcome goes out at once, alone; outcomes that arrive while a batch is in flight
wait for the next batch. So an idle engine commits with no added latency and a busy one pays
one round trip and one WAL flush per batch instead of per step. Each step still waits for
its own durable commit before its instance moves on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from .entries import NO_LIMIT, StepLimit


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One outcome in a batch (see the `outcome_batch` statement for the columns)."""

    id: int
    locked_by: str
    kind: str
    step: str | None = None
    state: bytes | None = None
    delay: timedelta | None = None
    status: str | None = None
    result: bytes | None = None
    error: bytes | None = None
    lease: timedelta | None = None
    consumed: tuple[int, ...] = field(default=())
    limit: StepLimit = NO_LIMIT
    state_version: int = 1
    """The workflow version of `state` (ignored when `state` is None: the row keeps its own)."""


Flush = Callable[[Sequence[BatchItem]], Awaitable[set[int]]]


class GroupCommit:
    """Collects outcomes and commits them in batches of at most `max_batch`."""

    def __init__(self, flush: Flush, *, max_batch: int = 200, max_in_flight: int = 2) -> None:
        self.flush = flush
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._pending: list[tuple[BatchItem, asyncio.Future[bool]]] = []
        self._in_flight = 0

    async def submit(self, item: BatchItem) -> bool:
        """Commit `item` with whatever else is pending; True when its guard held."""
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        # A submitter cancelled while its batch is in flight never reads the outcome: mark a
        # failure as retrieved so it is not reported as "never retrieved".
        fut.add_done_callback(_retrieve)
        self._pending.append((item, fut))
        if self._in_flight < self.max_in_flight:
            self._in_flight += 1
            asyncio.get_running_loop().create_task(self._drain(), name="gendurable:commit")
        return await asyncio.shield(fut)

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                try:
                    done = await self.flush([item for item, _ in batch])
                except BaseException as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                for item, fut in batch:
                    if not fut.done():
                        fut.set_result(item.id in done)
        finally:
            self._in_flight -= 1


def _retrieve(fut: asyncio.Future[bool]) -> None:
    if not fut.cancelled():
        fut.exception()
