"""`show` counts attempts against the step's own `max_attempts`, from 1: "attempt 2 of 2".

The issue this guards: with `@gd.step(max_attempts=2)` under a workflow allowing 5, `show`
printed "attempt 1 (max 5)" for an instance that had failed, and the error of `gd.stop`
read "(step wait_ok, attempt ?)".
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cli_support import Cli

import gendurable as gd
from gendurable.testing import MakeEngine

BACKOFF = gd.Backoff(base=timedelta(seconds=1), jitter=0)


@gd.workflow(name="show.order", backoff=BACKOFF)  # the workflow allows 5
class Order:
    @gd.step(start=True)
    async def take(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.charge)

    @gd.step(max_attempts=2)
    async def charge(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        raise RuntimeError("card declined")


@gd.workflow(name="show.approval")
class Approval:
    @gd.step(start=True)
    async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.wait_ok)

    @gd.step(max_attempts=2)
    @gd.await_signals("ok")
    async def wait_ok(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.stop("refused")


def fields_of(out: str) -> dict[str, str]:
    return {
        line.split("  ", 1)[0]: line.split("  ", 1)[1].strip()
        for line in out.splitlines()
        if "  " in line and not line.startswith(" ")
    }


async def test_show_counts_attempts_against_the_steps_own_limit(
    cli: Cli, make_engine: MakeEngine
) -> None:
    clock = gd.ManualClock()
    engine = await make_engine(workflows=[Order], queues={"default": 1}, clock=clock)
    handle = await Order.start(key="o-1")
    await engine.drain()

    retrying = fields_of((await cli("show", str(handle.id))).out)
    clock.advance(timedelta(seconds=2))
    await engine.drain()
    failed = await cli("show", str(handle.id))
    as_json = (await cli("show", str(handle.id), "--json")).json()

    assert retrying["attempt"] == "2 of 2"  # the first failed, the second is next
    assert fields_of(failed.out)["attempt"] == "2 of 2"
    error = next(line for line in failed.out.splitlines() if line.startswith("error"))
    assert error.split(None, 1)[1] == (
        "builtins.RuntimeError: card declined (step charge, attempt 2 of 2)"
    )
    assert (as_json["attempt"], as_json["max_attempts"]) == (1, 2)


async def test_show_names_the_attempt_of_a_stop(cli: Cli, make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Approval], queues={"default": 1})
    handle = await Approval.start(key="a-1")
    await engine.drain()
    await Approval.signal("a-1", "ok")
    await engine.drain()

    run = await cli("show", str(handle.id))

    assert fields_of(run.out)["attempt"] == "1 of 2"
    error = next(line for line in run.out.splitlines() if line.startswith("error"))
    assert error.split(None, 1)[1] == "stop: refused (step wait_ok, attempt 1 of 2)"
