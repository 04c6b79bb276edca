"""A database that goes away is a few log lines, not a flood: one per reported retry, with
its backoff, and no traceback unless DEBUG is on.

Stopping `gendurable dev` under a running worker used to log 565 lines in 70 s, with ten full
tracebacks (asyncpg's "Failed to restore the pool connection floor; retrying" among them):
every loop of the engine retried, and logged, on its own. Here a real server is stopped
under an engine; then a fault proxy refuses and drops every connection and lets them back.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from fault_proxy import FaultProxy
from fault_support import Engines, eventually

import gendurable as gd
from gendurable.db.outage import REMINDERS
from gendurable.embedded import EmbeddedPostgres
from polling import unique_name

pytestmark = pytest.mark.crash

FAST = {
    "poll_interval": timedelta(seconds=0.2),
    "reap_interval": timedelta(seconds=0.2),
    "lease": timedelta(seconds=3),  # heartbeats every second
}


@gd.workflow(name="outage.flow")
class Flow:
    @gd.step(start=True)
    async def work(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.key)


@pytest.fixture
async def own_server() -> AsyncIterator[EmbeddedPostgres]:
    """A server of this test's own, to stop under an engine."""
    server = EmbeddedPostgres()
    await server.astart()
    try:
        yield server
    finally:
        await server.astop()


def shown(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What a worker shows by default: WARNING and above."""
    return [r for r in caplog.records if r.levelno >= logging.WARNING]


def assert_one_line_each_without_traceback(records: list[logging.LogRecord]) -> None:
    for r in records:
        assert r.exc_info is None, f"{r.name}: {r.getMessage()}"
        assert "\n" not in r.getMessage(), r.getMessage()
    assert [r.getMessage() for r in records if r.name.startswith("asyncpg")] == []


@pytest.mark.database
async def test_fault_outage_a_stopped_server_is_a_few_lines_without_tracebacks(
    no_task_leaks: None, own_server: EmbeddedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    engine = gd.Engine(
        own_server.dsn, workflows=[Flow], queues={"default": 2}, name=unique_name("fault"), **FAST
    )
    await engine.start()
    try:
        await Flow.start(key="before", engine=engine)
        assert await Flow.result("before", timeout=10, engine=engine) == "before"
        assert engine._listener is not None
        listener = engine._listener.outage
        store = engine.store.db.outage
        engine.store.db.retry_for = 1.0  # the loops give up soon: their own lines show too

        await own_server.astop()

        async def many_retries_failed() -> bool:
            looped = any(r.name == "gendurable.maintenance" for r in caplog.records)
            return store.failures >= 40 and listener.failures >= 5 and looped

        await eventually(many_retries_failed, timeout=30, what="many retries against no server")
        records = shown(caplog)
        assert_one_line_each_without_traceback(records)
        of_store = [r.getMessage() for r in records if r.name == "gendurable.store"]
        of_listener = [r.getMessage() for r in records if r.name == "gendurable.listener"]
        # The first failure and the reminders of an outage of under a minute, not each try.
        assert 1 <= len(of_store) <= len(REMINDERS) < store.failures
        assert 1 <= len(of_listener) <= len(REMINDERS)
        assert len(of_listener) < listener.failures
        assert all(m.startswith("database unavailable") for m in of_store), of_store
        assert all(m.startswith("the LISTEN connection unavailable") for m in of_listener)
        assert all("; retrying in " in m for m in of_store + of_listener)
        loops = [r.getMessage() for r in records if r.name == "gendurable.maintenance"]
        assert all("failed; trying again in" in m for m in loops), loops
    finally:
        await engine.stop(timeout=1)


async def test_fault_outage_ends_with_one_line_per_connection_when_the_server_is_back(
    engines: Engines, proxy: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    engine = await engines(workflows=[Flow], queues={"default": 2}, dsn=proxy.dsn, **FAST)
    await Flow.start(key="before", engine=engine)
    assert await Flow.result("before", timeout=10, engine=engine) == "before"
    assert engine._listener is not None
    listener = engine._listener.outage
    store = engine.store.db.outage

    proxy.refusing = True
    proxy.drop_all()

    async def retrying() -> bool:
        return store.failures >= 10 and listener.failures >= 3

    await eventually(retrying, what="the store and the listener retrying")
    proxy.refusing = False

    async def recovered() -> bool:
        return not store.active and not listener.active

    await eventually(recovered, what="the store and the listener connected again")
    await Flow.start(key="after", engine=engine)
    assert await Flow.result("after", timeout=10, engine=engine) == "after"

    records = shown(caplog)
    assert_one_line_each_without_traceback(records)
    back = [
        (r.name, r.getMessage().split(" after ")[0])
        for r in records
        if "reachable again" in r.getMessage()
    ]
    assert sorted(back) == [
        ("gendurable.listener", "the LISTEN connection reachable again"),
        ("gendurable.store", "database reachable again"),
    ]
