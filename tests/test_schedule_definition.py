"""`gd.Schedule` definitions: refused when bad, and their ticks (DST included), no database."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

import gendurable as gd
from gendurable.schedule import CRON_EXTRA


@gd.workflow(name="unit.nightly")
class Nightly:
    class State(msgspec.Struct):
        day: str

    @gd.step(start=True)
    async def run(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="unit.other")
class Other:
    @gd.step(start=True)
    async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


STATE = Nightly.State(day="x")
PARIS = {"tz": "Europe/Paris"}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "pass cron= or every=, exactly one of them"),
        ({"cron": "0 3 * * *", "every": timedelta(hours=1)}, "exactly one of them"),
        ({"cron": "0 25 * * *"}, r"bad cron expression '0 25 \* \* \*': Bad hour"),
        ({"cron": "0 3 * *"}, "Wrong number of fields"),
        ({"cron": "0 0 30 2 *"}, "Bad day-of-month"),
        ({"cron": ""}, "cron must be a cron expression string"),
        ({"cron": "0 3 * * *", "tz": "Europe/Pariss"}, "unknown time zone 'Europe/Pariss'"),
        ({"cron": "0 3 * * *", "tz": 1}, "tz must be an IANA time zone name"),
        ({"every": timedelta(minutes=5), "tz": "UTC"}, "tz= applies to cron= schedules"),
        ({"every": 300}, "every must be a timedelta of at least 1 second"),
        ({"every": timedelta(milliseconds=500)}, "at least 1 second"),
        ({"every": timedelta(seconds=1.5)}, "whole number of seconds"),
        ({"every": timedelta(hours=1), "missed": "never"}, "missed must be 'skip', 'latest'"),
        ({"every": timedelta(hours=1), "catch_up": 0}, "catch_up must be a positive int"),
        ({"every": timedelta(hours=1), "catch_up": True}, "catch_up must be a positive int"),
        ({"every": timedelta(hours=1), "name": ""}, "schedule name must be a non-empty"),
    ],
)
def test_schedule_bad_definitions_raise_config_error(options: dict[str, Any], message: str) -> None:
    with pytest.raises(gd.ConfigError, match=message):
        gd.Schedule(Nightly, state=STATE, **options)


def test_schedule_refuses_a_state_that_does_not_fit_the_workflow() -> None:
    with pytest.raises(gd.ConfigError, match=r"schedule 'unit.nightly': .*day"):
        gd.Schedule(Nightly, every=timedelta(hours=1))  # State needs `day`
    with pytest.raises(gd.ConfigError, match=r"schedule 'unit.nightly'"):
        gd.Schedule(Nightly, every=timedelta(hours=1), state={"day": 3})


def test_schedule_refuses_what_is_not_a_workflow() -> None:
    with pytest.raises(gd.ConfigError, match=r"takes a @gd.workflow class or @gd.job function"):
        gd.Schedule(object, every=timedelta(hours=1))


def test_schedule_cron_without_cronsim_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "cronsim", None)  # as if it were not installed

    with pytest.raises(gd.ConfigError, match=re.escape(f"need the cronsim package: {CRON_EXTRA}")):
        gd.Schedule(Nightly, cron="0 3 * * *", state=STATE)
    every = gd.Schedule(Nightly, every=timedelta(minutes=5), state=STATE)
    assert every.describe() == "every 5 minutes"


def test_engine_refuses_two_schedules_with_one_name() -> None:
    one = gd.Schedule(Nightly, cron="0 3 * * *", state=STATE)
    two = gd.Schedule(Nightly, cron="0 4 * * *", state=STATE)

    with pytest.raises(gd.ConfigError, match=r"two schedules are named 'unit.nightly'"):
        gd.Engine("postgresql://x/y", workflows=[Nightly], schedules=[one, two])
    named = gd.Schedule(Nightly, cron="0 4 * * *", state=STATE, name="early")
    engine = gd.Engine("postgresql://x/y", workflows=[Nightly], schedules=[one, named])
    assert [s.name for s in engine.config.schedules] == ["unit.nightly", "early"]


def test_engine_refuses_a_schedule_of_a_workflow_it_does_not_serve() -> None:
    schedule = gd.Schedule(Nightly, cron="0 3 * * *", state=STATE)

    with pytest.raises(gd.ConfigError, match=r"starts workflow 'unit.nightly', which is not among"):
        gd.Engine("postgresql://x/y", workflows=[Other], schedules=[schedule])


@pytest.mark.parametrize("schedules", [["nightly"], "nightly", gd])
def test_engine_refuses_schedules_that_are_not_schedules(schedules: Any) -> None:
    with pytest.raises(gd.ConfigError, match="schedules must"):
        gd.Engine("postgresql://x/y", workflows=[Nightly], schedules=schedules)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_schedule_key_is_the_name_and_the_tick_in_iso_utc() -> None:
    schedule = gd.Schedule(Nightly, cron="0 3 * * *", state=STATE, name="n", **PARIS)

    assert schedule.key(utc(2030, 1, 2, 2)) == "n@2030-01-02T02:00:00Z"
    assert schedule.describe() == "At 03:00 every day (Europe/Paris)"


def test_schedule_spring_forward_runs_a_missing_time_once_at_the_first_minute_after() -> None:
    schedule = gd.Schedule(Nightly, cron="30 2 * * *", state=STATE, **PARIS)

    assert schedule.next_after(utc(2030, 3, 30, 12)) == utc(2030, 3, 31, 1)  # 03:00 CEST
    assert schedule.next_after(utc(2030, 3, 31, 1)) == utc(2030, 4, 1, 0, 30)
    assert schedule.due(utc(2030, 3, 30, 12), utc(2030, 4, 1, 12), 10) == [
        utc(2030, 3, 31, 1),
        utc(2030, 4, 1, 0, 30),
    ]


def test_schedule_fall_back_runs_a_repeated_time_once_at_its_first_occurrence() -> None:
    schedule = gd.Schedule(Nightly, cron="30 2 * * *", state=STATE, **PARIS)

    assert schedule.next_after(utc(2030, 10, 26, 12)) == utc(2030, 10, 27, 0, 30)  # CEST
    # From inside the repeated hour (02:10 CET, after the first 02:30): the next day's.
    assert schedule.next_after(utc(2030, 10, 27, 1, 10)) == utc(2030, 10, 28, 1, 30)
    assert schedule.due(utc(2030, 10, 26, 12), utc(2030, 10, 28, 12), 10) == [
        utc(2030, 10, 27, 0, 30),
        utc(2030, 10, 28, 1, 30),
    ]


def test_schedule_intervals_in_a_zone_keep_real_time_through_the_change() -> None:
    schedule = gd.Schedule(Nightly, cron="0 * * * *", state=STATE, **PARIS)

    # 2030-10-27: 00:00, 01:00 UTC are 02:00 CEST and 02:00 CET; both hours tick.
    assert schedule.due(utc(2030, 10, 26, 23, 30), utc(2030, 10, 27, 2), 10) == [
        utc(2030, 10, 27, 0),
        utc(2030, 10, 27, 1),
        utc(2030, 10, 27, 2),
    ]


def test_schedule_due_gives_the_latest_ticks_within_the_limit_oldest_first() -> None:
    cron = gd.Schedule(Nightly, cron="0 * * * *", state=STATE)
    every = gd.Schedule(Nightly, every=timedelta(hours=1), state=STATE)

    for schedule in (cron, every):
        assert schedule.due(utc(2030, 1, 1), utc(2030, 1, 1, 5), 2) == [
            utc(2030, 1, 1, 4),
            utc(2030, 1, 1, 5),
        ]
        assert schedule.due(utc(2030, 1, 1, 0, 0, 1), utc(2030, 1, 1, 0, 59), 5) == []
        assert schedule.count_between(utc(2030, 1, 1), utc(2030, 1, 1, 5), 100) == 6
        assert schedule.count_between(utc(2030, 1, 1), utc(2030, 1, 1, 5), 3) == 3
        assert schedule.next_after(utc(2030, 1, 1, 5)) == utc(2030, 1, 1, 6)
