"""The dashboard shows schedules: on the overview, and on a scheduled workflow's page."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from web_support import WebFactory

import gendurable as gd
from gendurable.testing import MakeEngine, ManualClock


@gd.workflow(name="web.nightly")
class Nightly:
    """Runs every night."""

    @gd.step(start=True)
    async def run(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


NIGHTLY = gd.Schedule(Nightly, cron="0 3 * * *", tz="Europe/Paris")
FIVE = gd.Schedule(Nightly, every=timedelta(minutes=5), name="five")
CODE = gd.Engine("postgresql://unused@localhost/unused", workflows=[Nightly], schedules=[NIGHTLY])


async def _ticked(make_engine: MakeEngine) -> int:
    """Run both schedules past one nightly tick; pause `five`. The nightly instance's id."""
    clock = ManualClock()
    engine = await make_engine(
        workflows=[Nightly], schedules=[NIGHTLY, FIVE], clock=clock, gc_retention=None
    )
    clock.advance(timedelta(hours=2, minutes=1))
    await engine.drain()
    await engine.pause_schedule("five")
    info = await Nightly.get("web.nightly@2030-01-01T02:00:00Z")
    return info.id


async def test_web_overview_lists_schedules_with_their_ticks_and_last_instance(
    make_engine: MakeEngine, web: WebFactory
) -> None:
    last = await _ticked(make_engine)
    w = await web()

    page = (await w.client.get("/")).text

    table = page.split("<h2>Schedules</h2>")[1].split("</table>")[0]
    nightly = table.split('data-schedule="web.nightly"')[1].split("</tr>")[0]
    five = table.split('data-schedule="five"')[1].split("</tr>")[0]
    assert "At 03:00 every day (Europe/Paris)" in nightly
    assert "<td>active</td>" in nightly
    assert "<td>2030-01-02 02:00 UTC</td>" in nightly  # the next tick
    assert "<td>2030-01-01 02:00 UTC</td>" in nightly  # the last one
    assert f'<a href="/instances/{last}">#{last}</a>' in nightly
    assert '<span class="status done">done</span>' in nightly
    assert "every 5 minutes" in five
    assert '<span class="warn">paused</span>' in five


async def test_web_overview_has_no_schedules_section_without_schedules(
    make_engine: MakeEngine, web: WebFactory
) -> None:
    await make_engine(workflows=[Nightly])
    w = await web()

    page = (await w.client.get("/")).text

    assert "<h2>Schedules</h2>" not in page


async def test_web_a_scheduled_workflows_page_states_its_schedule_and_its_ticks(
    make_engine: MakeEngine, web: WebFactory
) -> None:
    last = await _ticked(make_engine)
    w = await web(engine=CODE)

    page = (await w.client.get("/workflows/web.nightly")).text

    assert "<h2>Schedule</h2>" in page  # from the code, as the generated docs say it
    assert "<td>At 03:00 every day (Europe/Paris)</td>" in page
    now = page.split("<h2>Its schedules now</h2>")[1]
    assert 'data-schedule="web.nightly"' in now
    assert f'<a href="/instances/{last}">#{last}</a>' in now
    assert 'data-schedule="five"' in now  # declared by a running engine, not in this code
