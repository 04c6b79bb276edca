"""`gendurable schedules` (list, `--json`) and `schedules pause|resume NAME`, as subprocesses."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cli_support import Cli

import gendurable as gd
from gendurable.testing import MakeEngine, ManualClock


@gd.workflow(name="cli.nightly")
class Nightly:
    @gd.step(start=True)
    async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


async def test_cli_schedules_lists_each_with_its_ticks_and_last_instance(
    cli: Cli, make_engine: MakeEngine
) -> None:
    clock = ManualClock()  # 2030-01-01T00:00Z
    nightly = gd.Schedule(Nightly, cron="0 3 * * *", tz="Europe/Paris")
    five = gd.Schedule(Nightly, every=timedelta(minutes=5), name="five", missed="skip")
    engine = await make_engine(
        workflows=[Nightly], schedules=[nightly, five], clock=clock, gc_retention=None
    )
    clock.advance(timedelta(hours=2, minutes=1))
    await engine.drain()

    listed = (await cli("schedules", "--json")).json()
    text = await cli("schedules")

    assert [(s["name"], s["schedule"], s["next_at"], s["last_at"]) for s in listed] == [
        (
            "cli.nightly",
            "At 03:00 every day (Europe/Paris)",
            "2030-01-02T02:00:00Z",
            "2030-01-01T02:00:00Z",
        ),
        ("five", "every 5 minutes", "2030-01-01T02:05:00Z", "2030-01-01T02:00:00Z"),
    ]
    nightly_json, five_json = listed
    assert nightly_json["last_instance"]["key"] == "cli.nightly@2030-01-01T02:00:00Z"
    assert nightly_json["last_instance"]["status"] == "done"
    assert (nightly_json["cron"], nightly_json["tz"], nightly_json["every"]) == (
        "0 3 * * *",
        "Europe/Paris",
        None,
    )
    assert (five_json["every"], five_json["missed"], five_json["paused"]) == (300, "skip", False)
    assert text.code == 0, text.err
    header, _, *lines = text.out.splitlines()
    assert header.split() == [
        "NAME",
        "WORKFLOW",
        "SCHEDULE",
        "STATE",
        "NEXT",
        "TICK",
        "LAST",
        "TICK",
        "LAST",
        "INSTANCE",
    ]
    assert "At 03:00 every day (Europe/Paris)" in lines[0]
    assert lines[0].endswith(f"{nightly_json['last_instance']['id']} done")
    assert "2030-01-02 02:00 UTC" in lines[0]


async def test_cli_schedules_pause_and_resume_are_honoured_by_engines(
    cli: Cli, make_engine: MakeEngine, db: Any, gendurable_schema: str
) -> None:
    clock = ManualClock()
    five = gd.Schedule(Nightly, every=timedelta(minutes=5), name="five")
    engine = await make_engine(workflows=[Nightly], schedules=[five], clock=clock)

    paused = await cli("schedules", "pause", "five")
    clock.advance(timedelta(minutes=11))
    await engine.drain()
    listed = (await cli("schedules", "--json")).json()
    resumed = await cli("schedules", "resume", "five")
    clock.advance(timedelta(minutes=5))
    await engine.drain()

    assert paused.out.strip() == "schedule 'five' (cli.nightly) paused"
    assert listed[0]["paused"] is True
    assert listed[0]["last_at"] is None  # no tick while paused
    assert resumed.out.strip() == "schedule 'five' (cli.nightly) resumed (from now)"
    # (The command line resumes at the database's time, which is before this test's
    # manual 2030: so the missed tick to start is 00:15, the latest, as `missed="latest"`.)
    keys = [r["key"] for r in await db.fetch(f'SELECT key FROM "{gendurable_schema}".instances')]
    assert keys == ["five@2030-01-01T00:15:00Z"]


async def test_cli_schedules_refuses_unknown_names_and_missing_ones(
    cli: Cli, make_engine: MakeEngine
) -> None:
    five = gd.Schedule(Nightly, every=timedelta(minutes=5), name="five")
    await make_engine(workflows=[Nightly], schedules=[five], clock=ManualClock())

    unknown = await cli("schedules", "pause", "fiv")
    missing = await cli("schedules", "resume")
    stray = await cli("schedules", "five")

    assert unknown.code == 1
    assert unknown.error == (
        "gendurable schedules: error: no schedule named 'fiv'; did you mean 'five'?"
    )
    assert missing.code == 2
    assert missing.err.splitlines()[-1] == (
        "gendurable schedules: error: `schedules resume` needs the schedule's NAME"
    )
    assert stray.code == 2
    assert "invalid choice: 'five'" in stray.err
