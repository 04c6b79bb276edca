"""An outage is a few log lines however many tries fail: `gendurable.db.outage`.

The clock is a list the test moves; the logger is a real one, captured.
"""

from __future__ import annotations

import logging

import pytest

from gendurable.db.outage import REMINDERS, Outage, log_failure

LOGGER = "gendurable.test_outage"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def refused() -> ConnectionRefusedError:
    return ConnectionRefusedError(111, "Connect call failed\n('127.0.0.1', 5432)")


def test_outage_reports_the_first_failure_then_reminders_then_the_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = Clock()
    outage = Outage(logging.getLogger(LOGGER), clock=clock)

    # Six callers retrying every 0.25 s for 70 s: 1,680 failed tries.
    for _ in range(280):
        for _caller in range(6):
            outage.failed(refused(), 0.25)
        clock.now += 0.25
    outage.recovered()

    lines = records(caplog)
    assert outage.failures == 1680
    assert lines[0] == (
        logging.WARNING,
        "database unavailable (ConnectionRefusedError: [Errno 111] Connect call failed "
        "('127.0.0.1', 5432)); retrying in 0.25s",
    )
    assert [m.split(" (")[0] for _, m in lines[1:-1]] == [
        f"database unavailable for {s:.0f}s" for s in REMINDERS
    ]
    assert lines[-1] == (logging.WARNING, "database reachable again after 70.0s")
    assert all(r.exc_info is None for r in caplog.records)  # tracebacks only at DEBUG


def test_outage_reminds_every_minute_after_the_first(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = Clock()
    outage = Outage(logging.getLogger(LOGGER), "the LISTEN connection", clock=clock)

    for _ in range(301):  # one try a second for five minutes
        outage.failed(refused(), 1.0)
        clock.now += 1

    ages = [m.split(" (")[0].rsplit(" ", 1)[-1] for _, m in records(caplog)[1:]]
    assert ages == ["1s", "2s", "4s", "8s", "16s", "32s", "60s", "120s", "180s", "240s", "300s"]


def test_outage_logs_every_try_with_its_traceback_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = Clock()
    outage = Outage(logging.getLogger(LOGGER), clock=clock)

    for _ in range(5):
        outage.failed(refused(), 0.5)
        clock.now += 0.1

    assert [level for level, _ in records(caplog)] == [logging.WARNING] + [logging.DEBUG] * 4
    assert all(r.exc_info is not None for r in caplog.records)


def test_outage_a_recovery_without_an_outage_logs_nothing_and_a_new_one_starts_over(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = Clock()
    outage = Outage(logging.getLogger(LOGGER), clock=clock)

    outage.recovered()
    outage.failed(refused(), 0.05)
    clock.now += 2
    outage.recovered()
    outage.failed(TimeoutError(), 0.05)

    assert [m for _, m in records(caplog)] == [
        "database unavailable (ConnectionRefusedError: [Errno 111] Connect call failed "
        "('127.0.0.1', 5432)); retrying in 0.05s",
        "database reachable again after 2.0s",
        "database unavailable (TimeoutError); retrying in 0.05s",
    ]


def test_outage_loop_failures_are_one_line_for_the_database_and_tracebacks_for_bugs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    log = logging.getLogger(LOGGER)

    log_failure(log, refused(), "reaper failed; trying again in %ss", 5.0)
    log_failure(log, KeyError("bug"), "reaper failed; trying again in %ss", 5.0)

    database, bug = caplog.records
    assert (database.levelno, database.getMessage(), database.exc_info) == (
        logging.WARNING,
        "reaper failed; trying again in 5.0s (ConnectionRefusedError: [Errno 111] Connect "
        "call failed ('127.0.0.1', 5432))",
        None,
    )
    assert (bug.levelno, bug.getMessage()) == (logging.ERROR, "reaper failed; trying again in 5.0s")
    assert bug.exc_info is not None
