"""Engine options are checked when the engine is built, before any connection is made."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

import gendurable as gd


@gd.workflow(name="config.ok")
class Ok:
    @gd.step
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="config.needs_args")
class NeedsArgs:
    def __init__(self, client: object) -> None:
        self.client = client

    @gd.step
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


DSN = "postgresql://nobody@127.0.0.1:1/none"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dsn": "mysql://u@h/db"}, "dsn scheme 'mysql' is not PostgreSQL"),
        ({"dsn": "  "}, "dsn must be a non-empty string"),
        ({"schema": 'bad"name'}, "contains"),
        ({"schema": "x" * 64}, "at most 63"),
        ({"name": ""}, "engine name must be a non-empty string"),
        ({"queues": {"default": 0}}, "queue 'default': concurrency must be a positive int"),
        ({"migrate": "sometimes"}, "migrate must be 'auto', True or False"),
        ({"lease": timedelta(0)}, "lease and poll_interval must be positive"),
        ({"workflows": []}, "at least one workflow"),
        ({"workflows": [object()]}, "is not a workflow"),
        ({"workflows": [NeedsArgs]}, "builds NeedsArgs() with no arguments"),
    ],
)
def test_engine_config_refuses_bad_options(options: dict[str, Any], message: str) -> None:
    kwargs: dict[str, Any] = {"workflows": [Ok], "dsn": DSN, **options}
    dsn = kwargs.pop("dsn")
    with pytest.raises(gd.ConfigError) as raised:
        gd.Engine(dsn, **kwargs)
    assert message in str(raised.value)


def test_engine_config_refuses_two_workflows_with_one_name() -> None:
    @gd.workflow(name="config.ok")
    class Twin:
        @gd.step
        async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    with pytest.raises(gd.ConfigError, match=r"two workflows are named 'config\.ok'"):
        gd.Engine(DSN, workflows=[Ok, Twin])


def test_engine_config_is_not_running_until_started() -> None:
    engine = gd.Engine(DSN, workflows=[Ok])
    with pytest.raises(gd.EngineError, match="is not running"):
        _ = engine.store
