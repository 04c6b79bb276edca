"""A pooled connection that has read the server's last words (a FATAL error, sent as the
server shuts down, crashes or terminates the backend) before the end of the connection.

For that moment the connection looks open, but asyncpg will not send anything on it: its
protocol still waits for the end of the exchange the error began. A statement the pool hands
that connection goes out on a fresh one instead, even a start (nothing was sent), and the
told connection is not handed out again.
"""

from __future__ import annotations

import pytest
from fault_proxy import FaultProxy
from fault_support import Engines

import gendurable as gd

pytestmark = pytest.mark.crash


@gd.workflow(name="fault.last_words.noted", queue="last-words")
class Noted:
    @gd.step(start=True)
    async def note(self, state: int, ctx: gd.Context) -> gd.Outcome:
        return gd.done(state)


@pytest.mark.parametrize("times", [1, 3])
async def test_fault_last_words_a_start_on_a_connection_told_fatal_goes_out_on_a_fresh_one(
    engines: Engines, proxy: FaultProxy, times: int
) -> None:
    # A client with a single pooled connection: every statement gets the told one.
    client = await engines(workflows=[Noted], dsn=proxy.dsn, pool_size=1)
    accepted = proxy.accepted

    for n in range(times):
        words = proxy.last_words()
        await Noted.start(f"told-{n}", n, engine=client)  # its answer ends with them
        assert words.is_set()

        handle = await Noted.start(f"after-{n}", n, engine=client)

        assert handle.created
    # One fresh connection each time: the told one was closed, not reused.
    assert proxy.accepted - accepted == times
