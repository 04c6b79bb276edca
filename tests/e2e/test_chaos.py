"""The chaos run (issue [H] item 1): every feature at once while processes die.

Three `gendurable worker` processes serve `chaos_app` on a private embedded server; the test
process is the client. It starts 2,000 instances (packs that accumulate signals with
`reawait`, lonely packs that time out, trees of children and grandchildren, accounts under
concurrency keys, calls under a partitioned rate limit), with `start_many` and single
starts, and sends the packs' signals (some before the await is entered, some racing it).
Meanwhile a random worker is SIGKILLed every 1-3 s and replaced, now and then one is stopped
(SIGSTOP) around its lease and continued (its late commits must be dropped), and the server
crashes once (`pg_ctl stop -m immediate`), stays down past the lease and starts again
(recovery). Then every invariant of `chaos_checks` is checked from the rows and the steps'
side-effect log; `test_chaos_checks.py` shows that each check fails on the breach it is for.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from chaos_run import ChaosConfig, ChaosServer, run_batch

pytestmark = [pytest.mark.crash, pytest.mark.database, pytest.mark.slow]


@pytest.fixture
async def server() -> AsyncIterator[ChaosServer]:
    srv = ChaosServer()
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.mark.timeout(240)
async def test_chaos_nothing_lost_or_done_twice_while_workers_die_and_the_server_restarts(
    server: ChaosServer, tmp_path: Path
) -> None:
    report = await run_batch(server, ChaosConfig(), tmp_path, say=print)
    print(report.describe())  # shown by pytest when the test fails

    stats = report.stats
    assert stats["finished"], "the instances did not all end in time"
    # The faults happened: otherwise the invariants prove nothing.
    assert stats["restarts"] == 1
    assert stats["kills"] >= 10
    assert stats["freezes"] >= 2
    assert stats["rescued"] > 0
    assert report.ok, "\n".join(
        f"{i.name}: {i.problem_count} problems, e.g. {i.problems[:3]}" for i in report.broken()
    )
