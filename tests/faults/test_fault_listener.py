"""The engine's LISTEN connection killed, and kept from reconnecting for a while.

Notifications sent meanwhile are lost: the schedulers find due work by polling, so work
still flows. The listener keeps trying with backoff; once the server can be reached again it
is back (`pg_stat_activity` shows it listening) and notifications reach the engine again.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Any

import pytest
from fault_proxy import FaultProxy
from fault_support import Backends, Engines, eventually

import gendurable as gd

pytestmark = pytest.mark.crash


@gd.workflow(name="listener.flow")
class Flow:
    @gd.step(start=True)
    async def work(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.key)


@gd.workflow(name="listener.waiter")
class Waiter:
    @gd.step(start=True)
    @gd.await_signals("go")
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.awaited[0].payload)


async def test_fault_listener_killed_work_flows_by_polling_and_the_listener_comes_back(
    engines: Engines,
    proxy: FaultProxy,
    backends: Backends,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gendurable.listener")
    worker = await engines(
        workflows=[Flow, Waiter],
        queues={"default": 4},
        dsn=proxy.dsn,
        poll_interval=timedelta(seconds=0.5),
    )
    channel = worker.store.db.channel
    [listener] = await backends.listening(channel)  # the worker's, before the client's
    client = await engines(workflows=[Flow, Waiter])
    others = set(await backends.listening(channel)) - {listener}
    # Warm the pool: connections opened now keep working while new ones are refused.
    await Flow.start_many([Flow.new(key=f"warm{i}") for i in range(8)], engine=client)
    for i in range(8):
        await Flow.result(f"warm{i}", timeout=10, engine=worker)

    proxy.refusing = True
    await backends.terminate(listener)

    async def reconnect_failed() -> bool:
        return any(
            r.getMessage().startswith("the LISTEN connection unavailable") for r in caplog.records
        )

    await eventually(reconnect_failed, what="the listener trying to reconnect")
    # Started while nobody listens: the NOTIFY of each start is lost, the poll finds them.
    await Flow.start_many([Flow.new(key=f"down{i}") for i in range(5)], engine=client)
    for i in range(5):
        assert await Flow.result(f"down{i}", timeout=10, engine=client) == f"down{i}"
    assert set(await backends.listening(channel)) == others  # the worker really was polling

    proxy.refusing = False

    async def listening_again() -> list[int]:
        return sorted(set(await backends.listening(channel)) - others)

    [back] = await eventually(listening_again, what="the listener listening again")
    assert back != listener
    # result() on the worker waits on notifications only: it returns because the
    # instance's end was announced on the new connection.
    await Waiter.start(key="w", engine=client)

    async def parked() -> bool:
        return (await Waiter.get("w", engine=client)).status == "awaiting"

    await eventually(parked, what="the waiter parked")
    waiting = Waiter.result("w", timeout=10, engine=worker)
    await Waiter.signal("w", "go", "notified", engine=client)
    assert await waiting == "notified"


async def test_fault_listener_back_wakes_a_result_whose_end_was_announced_while_it_was_down(
    engines: Engines,
    proxy: FaultProxy,
    backends: Backends,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A client's result() waits on notifications only (it does not poll). The instance
    # ends while the client's listener is down, so its announcement is lost: when the
    # listener is back, every pending waiter must look at its row again.
    caplog.set_level(logging.WARNING, logger="gendurable.listener")
    worker = await engines(workflows=[Waiter], queues={"default": 2})
    channel = worker.store.db.channel
    others = set(await backends.listening(channel))  # the worker's listener
    client = await engines(workflows=[Waiter], dsn=proxy.dsn)
    [listener] = sorted(set(await backends.listening(channel)) - others)
    handle = await Waiter.start(key="w", engine=worker)

    async def parked() -> bool:
        return (await Waiter.get("w", engine=client)).status == "awaiting"

    await eventually(parked, what="the waiter parked")
    looked = asyncio.Event()  # result() read the row, live, after it began to listen
    instance_status = client.store.instance_status

    async def watched(*, id: int) -> Any:
        row = await instance_status(id=id)
        if id == handle.id and row is not None and row.status == "awaiting":
            looked.set()
        return row

    client.store.instance_status = watched  # type: ignore[method-assign]
    waiting = asyncio.create_task(Waiter.result("w", timeout=None, engine=client))
    try:
        async with asyncio.timeout(10):
            await looked.wait()
        proxy.refusing = True
        await backends.terminate(listener)

        async def reconnect_failed() -> bool:
            return any(
                "the LISTEN connection unavailable" in r.getMessage() for r in caplog.records
            )

        await eventually(reconnect_failed, what="the listener trying to reconnect")
        await Waiter.signal("w", "go", "while down", engine=worker)
        assert await Waiter.result("w", timeout=10, engine=worker) == "while down"
        assert not waiting.done()  # the end's announcement was lost with the listener

        proxy.refusing = False
        async with asyncio.timeout(30):  # no poll: only the reconnect can wake it
            assert await waiting == "while down"
    finally:
        waiting.cancel()
        await asyncio.gather(waiting, return_exceptions=True)
