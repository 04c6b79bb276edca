"""Engine options are checked once, when the engine is built, before any connection is made;
the engine keeps them as one frozen `EngineConfig`."""

from __future__ import annotations

import dataclasses
import inspect
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import gendurable as gd
from gendurable.engine.config import MAX_GC_INTERVAL, EngineConfig


@gd.workflow(name="config.ok")
class Ok:
    @gd.step
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.workflow(name="config.brief", lease=timedelta(seconds=6))
class Brief:
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
SECOND = timedelta(seconds=1)


def build(**options: Any) -> gd.Engine:
    kwargs: dict[str, Any] = {"workflows": [Ok], "dsn": DSN, **options}
    dsn = kwargs.pop("dsn")
    return gd.Engine(dsn, **kwargs)


# One case per refusal: the message names the option, the value and what is allowed.
REFUSALS = {
    "dsn-scheme": ({"dsn": "mysql://u@h/db"}, "dsn scheme 'mysql' is not PostgreSQL"),
    "dsn-blank": ({"dsn": "  "}, "dsn must be a non-empty string, got a blank one"),
    "dsn-type": ({"dsn": 5432}, "dsn must be a non-empty string, got int"),
    "name-empty": ({"name": ""}, "engine name must be a non-empty string, got ''"),
    "name-type": ({"name": 7}, "engine name must be a non-empty string, got 7"),
    "schema-quote": ({"schema": 'bad"name'}, "contains"),
    "schema-long": ({"schema": "x" * 64}, "at most 63"),
    "schema-type": ({"schema": None}, "schema must be a non-empty string, got None"),
    "queues-type": (
        {"queues": [("default", 4)]},
        "queues must be a mapping of queue names to concurrency, got [('default', 4)]",
    ),
    "queues-name-empty": ({"queues": {"": 4}}, "queues: names must be non-empty strings, got ''"),
    "queues-name-type": ({"queues": {1: 4}}, "queues: names must be non-empty strings, got 1"),
    "concurrency-zero": (
        {"queues": {"default": 0}},
        "queue 'default': concurrency must be a positive int, got 0",
    ),
    "concurrency-bool": (
        {"queues": {"default": True}},
        "queue 'default': concurrency must be a positive int, got True",
    ),
    "concurrency-float": (
        {"queues": {"default": 2.0}},
        "queue 'default': concurrency must be a positive int, got 2.0",
    ),
    "workflows-empty": ({"workflows": []}, "at least one workflow"),
    "workflows-not-a-list": ({"workflows": Ok}, "workflows must be a list of @gd.workflow"),
    "workflows-str": ({"workflows": "config.ok"}, "workflows must be a list of @gd.workflow"),
    "workflows-member": ({"workflows": [object()]}, "is not a workflow"),
    "workflows-arguments": ({"workflows": [NeedsArgs]}, "builds NeedsArgs() with no arguments"),
    "clock": ({"clock": "system"}, "clock must be a gd.Clock"),
    "lease-zero": ({"lease": timedelta(0)}, "lease must be a positive duration (a timedelta)"),
    "lease-number": ({"lease": 30}, "lease must be a positive duration (a timedelta), got 30"),
    "poll-zero": ({"poll_interval": timedelta(0)}, "poll_interval must be a positive duration"),
    "poll-number": ({"poll_interval": 1.0}, "poll_interval must be a positive duration"),
    "min-demand-zero": ({"min_demand": 0}, "min_demand must be a positive int, got 0"),
    "min-demand-bool": ({"min_demand": True}, "min_demand must be a positive int, got True"),
    "min-demand-float": ({"min_demand": 1.5}, "min_demand must be a positive int, got 1.5"),
    "reap-zero": (
        {"reap_interval": timedelta(0)},
        "reap_interval must be a positive duration (a timedelta), got datetime.timedelta(0)",
    ),
    "reap-negative": ({"reap_interval": -SECOND}, "reap_interval must be a positive duration"),
    "reap-number": ({"reap_interval": 5}, "reap_interval must be a positive duration"),
    "gc-retention-negative": ({"gc_retention": -SECOND}, "gc_retention must be None or a dura"),
    "gc-retention-number": (
        {"gc_retention": 3600},
        "gc_retention must be None or a duration >= 0, got 3600",
    ),
    "gc-interval-zero": ({"gc_interval": timedelta(0)}, "gc_interval must be a positive duration"),
    "gc-interval-long": ({"gc_interval": timedelta(hours=2)}, "of at most 1:00:00"),
    "gc-interval-number": ({"gc_interval": 60}, "gc_interval must be a positive duration"),
    "gc-batch-zero": ({"gc_batch": 0}, "gc_batch must be a positive int, got 0"),
    "gc-batch-bool": ({"gc_batch": True}, "gc_batch must be a positive int, got True"),
    "migrate-word": ({"migrate": "sometimes"}, "migrate must be 'auto', True or False"),
    "migrate-int": ({"migrate": 1}, "migrate must be 'auto', True or False, got 1"),
    "migrate-none": ({"migrate": None}, "migrate must be 'auto', True or False, got None"),
    "prepare": ({"prepare": "no"}, "prepare must be True or False, got 'no'"),
    "pool-size-zero": ({"pool_size": 0}, "pool_size must be a positive int, got 0"),
    "pool-size-negative": ({"pool_size": -2}, "pool_size must be a positive int, got -2"),
    "pool-size-bool": ({"pool_size": True}, "pool_size must be a positive int, got True"),
    "pool-size-float": ({"pool_size": 8.0}, "pool_size must be a positive int, got 8.0"),
    "statement-timeout-zero": (
        {"statement_timeout": timedelta(0)},
        "statement_timeout must be a positive duration",
    ),
    "statement-timeout-number": (
        {"statement_timeout": 30},
        "statement_timeout must be a positive duration (a timedelta), got 30",
    ),
    "max-payload-zero": ({"max_payload_bytes": 0}, "max_payload_bytes must be a positive int"),
    "local-starts": ({"local_starts": 1}, "local_starts must be True or False, got 1"),
    "listen": ({"listen": "off"}, "listen must be True or False, got 'off'"),
}


@pytest.mark.parametrize(("options", "message"), REFUSALS.values(), ids=REFUSALS.keys())
def test_engine_config_refuses_bad_options(options: dict[str, Any], message: str) -> None:
    with pytest.raises(gd.ConfigError) as raised:
        build(**options)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_engine_config_refuses_two_workflows_with_one_name() -> None:
    @gd.workflow(name="config.ok")
    class Twin:
        @gd.step
        async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    with pytest.raises(gd.ConfigError, match=r"two workflows are named 'config\.ok'"):
        gd.Engine(DSN, workflows=[Ok, Twin])


def test_engine_config_accepts_the_edges_of_each_range() -> None:
    config = build(
        queues={"default": 1},
        min_demand=1,
        pool_size=1,
        gc_interval=MAX_GC_INTERVAL,
        gc_retention=timedelta(0),
        gc_batch=1,
        max_payload_bytes=1,
        lease=timedelta(microseconds=1),
        statement_timeout=timedelta(microseconds=1),
        migrate=False,
        clock=gd.ManualClock(),
        workflows=(Ok,),
    ).config
    assert (config.pool_size, config.min_demand, config.gc_batch) == (1, 1, 1)
    assert config.gc_interval == timedelta(hours=1)
    assert config.migrate is False


def test_engine_config_holds_the_defaults_it_derives() -> None:
    config = build(workflows=[Ok, Brief], queues={"a": 3, "b": 5}).config
    assert config.pool_size == 10  # the total concurrency + 2
    assert build(queues={"a": 40}).config.pool_size == 20  # at most 20
    assert build().config.pool_size == 4  # at least 4
    assert config.migrate is True  # "auto" applies the schema
    assert build(migrate=True).config.migrate is True
    assert isinstance(config.clock, gd.SystemClock)
    assert config.local_starts is True
    assert build(clock=gd.ManualClock()).config.local_starts is False  # drain() drives work
    assert build(clock=gd.ManualClock(), local_starts=True).config.local_starts is True
    assert dict(config.leases) == {"config.ok": 30 * SECOND, "config.brief": 6 * SECOND}
    assert config.heartbeat == 2 * SECOND  # a third of the shortest lease
    assert config.rate_configs.limits == {}


def test_engine_config_clamps_min_demand_to_each_queues_concurrency() -> None:
    config = build(queues={"small": 2, "large": 50}, min_demand=10).config
    assert config.min_demand == 10
    assert config.demand("small") == 2  # else that queue would never claim
    assert config.demand("large") == 10


def test_engine_config_is_frozen() -> None:
    engine = build(queues={"default": 2})
    config = engine.config
    assert isinstance(config, EngineConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.pool_size = 99  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.queues["other"] = 1  # type: ignore[index]
    with pytest.raises(TypeError):
        config.specs["other"] = Ok.spec  # type: ignore[index]
    with pytest.raises(TypeError):
        config.rate_configs.limits["other"] = gd.Limit(1)  # type: ignore[index]
    assert (engine.name, engine.schema, engine.dsn) == ("default", "gendurable", DSN)
    assert engine.specs is config.specs
    assert engine.clock is config.clock


def test_engine_config_is_not_running_until_started() -> None:
    engine = gd.Engine(DSN, workflows=[Ok])
    with pytest.raises(gd.EngineError, match="is not running"):
        _ = engine.store


def test_engine_config_builds_from_exactly_the_engines_options_and_the_guide_lists_each() -> None:
    options = list(inspect.signature(gd.Engine).parameters)
    assert list(inspect.signature(EngineConfig.build).parameters) == options
    guide = Path(__file__).parents[2] / "docs" / "guide" / "engine.md"
    section = guide.read_text().split("\n## Options\n")[1].split("\n## ")[0]
    assert sorted(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE)) == sorted(options)
