"""Engine lifecycle: stopped engines refuse client calls clearly and can start again."""

from __future__ import annotations

from typing import Any

import pytest

import gendurable as gd


@gd.workflow(name="lifecycle.ok")
class Ok:
    @gd.step
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


async def test_engine_lifecycle_client_calls_after_stop_say_not_running(
    gendurable_dsn: str, gendurable_schema: str
) -> None:
    engine = gd.Engine(gendurable_dsn, workflows=[Ok], schema=gendurable_schema, name="after")
    async with engine:
        assert (await Ok.start(key="k", engine=engine)).created
    with pytest.raises(gd.EngineError, match="is not running"):
        await engine.get("lifecycle.ok", "k")
    async with engine:  # an engine can be started again after a stop
        assert (await Ok.get("k", engine=engine)).status == "available"
