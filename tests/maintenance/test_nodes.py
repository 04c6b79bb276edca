"""Nodes: each running engine records itself, refreshes its row, and removes it at stop."""

from __future__ import annotations

import logging
import os
import socket
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest

import gendurable as gd
from gendurable.maintenance.nodes import TTL_BEATS
from gendurable.testing import MakeEngine


class Approved(msgspec.Struct):
    by: str


@gd.workflow(name="nodes.expense", queue="expenses", priority=2)
class Expense:
    class State(msgspec.Struct):
        amount: int = 0

    @gd.step(start=True, max_attempts=3)
    async def submit(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.decide)

    @gd.step(max_attempts=2)
    @gd.await_signals("rejected", approved=Approved)
    async def decide(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done()


@gd.job(name="nodes.mail")
async def mail(args: Any, ctx: gd.Context) -> None:
    return None


async def _nodes(db: asyncpg.Connection, schema: str) -> list[asyncpg.Record]:
    return list(await db.fetch(f'SELECT * FROM "{schema}".nodes ORDER BY name'))


async def test_node_records_what_the_engine_serves(
    make_engine: MakeEngine,
    db: asyncpg.Connection,
    gendurable_schema: str,
    manual_clock: gd.ManualClock,
) -> None:
    engine = await make_engine(
        workflows=[Expense, mail], queues={"expenses": 3, "default": 1}, name="api"
    )

    [node] = await _nodes(db, gendurable_schema)

    assert engine.nodes is not None
    assert {k: node[k] for k in ("id", "name", "host", "pid", "schema", "version")} == {
        "id": engine.nodes.id,
        "name": "api",
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "schema": gendurable_schema,
        "version": gd.__version__,
    }
    assert node["id"].startswith(f"api@{socket.gethostname()}-{os.getpid()}-")
    assert msgspec.json.decode(node["queues"]) == {"expenses": 3, "default": 1}
    start = {"max_attempts": 5, "rate_limit": None, "weight": 1, "partitioned": False}
    assert msgspec.json.decode(node["workflows"]) == {
        "nodes.expense": {
            "queue": "expenses",
            "priority": 2,
            "version": 1,
            "steps": {"submit": [], "decide": ["rejected", "approved"]},
            "signals": {
                "rejected": None,
                "approved": {"type": "Approved", "schema": msgspec.json.schema(Approved)},
            },
            "state": {"type": "Expense.State", "schema": msgspec.json.schema(Expense.State)},
            "start": {"step": "submit", **start, "max_attempts": 3},
            "entry": {
                "submit": {**start, "max_attempts": 3},
                "decide": {**start, "max_attempts": 2},
            },
        },
        "nodes.mail": {
            "queue": "default",
            "priority": 0,
            "version": 1,
            "steps": {"perform": []},
            "signals": {},
            "state": None,
            "start": {**start, "step": "perform", "max_attempts": 20},
            "entry": {"perform": {**start, "max_attempts": 20}},
        },
    }
    assert node["started_at"] == node["last_seen"] == manual_clock.now()
    assert node["heartbeat"] == timedelta(seconds=10)  # a third of the 30 s lease
    assert node["expires_at"] == manual_clock.now() + TTL_BEATS * timedelta(seconds=10)


async def test_node_heartbeat_refreshes_last_seen_and_stop_removes_the_row(
    make_engine: MakeEngine,
    db: asyncpg.Connection,
    gendurable_schema: str,
    manual_clock: gd.ManualClock,
) -> None:
    engine = await make_engine(workflows=[Expense], queues=None)
    assert engine.nodes is not None
    started = manual_clock.now()
    manual_clock.advance(timedelta(seconds=25))

    report = await engine.nodes.run_once()
    [node] = await _nodes(db, gendurable_schema)
    await engine.stop()

    assert (report.refreshed, report.pruned) == (True, ())
    assert (node["started_at"], node["last_seen"]) == (started, manual_clock.now())
    assert node["expires_at"] == manual_clock.now() + timedelta(seconds=30)
    assert await _nodes(db, gendurable_schema) == []


async def test_node_heartbeat_prunes_dead_nodes_only(
    make_engine: MakeEngine,
    db: asyncpg.Connection,
    gendurable_schema: str,
    manual_clock: gd.ManualClock,
) -> None:
    quiet = await make_engine(workflows=[Expense], queues=None, name="a-quiet")
    alive = await make_engine(workflows=[Expense], queues=None, name="b-alive")
    assert quiet.nodes is not None
    assert alive.nodes is not None
    manual_clock.advance(timedelta(seconds=20))
    await alive.nodes.run_once()  # `quiet` misses its heartbeats from here on
    manual_clock.advance(timedelta(seconds=11))  # quiet: 31 s silent, past its 30 s expiry

    report = await alive.nodes.run_once()

    assert report.pruned == (quiet.nodes.id,)
    assert [n["name"] for n in await _nodes(db, gendurable_schema)] == ["b-alive"]


async def test_node_pruned_while_alive_records_itself_again(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    # A long database outage: another node pruned this one, which then comes back.
    engine = await make_engine(workflows=[Expense], queues=None, name="back")
    assert engine.nodes is not None
    await db.execute(f'DELETE FROM "{gendurable_schema}".nodes')

    report = await engine.nodes.run_once()

    assert report.refreshed is False
    assert [n["id"] for n in await _nodes(db, gendurable_schema)] == [engine.nodes.id]


async def test_node_rows_of_two_engines_are_independent(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    web = await make_engine(workflows=[Expense], queues=None, name="web")
    await make_engine(workflows=[Expense], queues={"expenses": 2}, name="worker")
    await web.stop()

    [node] = await _nodes(db, gendurable_schema)

    assert (node["name"], msgspec.json.decode(node["queues"])) == ("worker", {"expenses": 2})


# -- the start warning ----------------------------------------------------------------------


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


async def test_engine_warns_about_each_workflow_whose_queue_it_does_not_run(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    await make_engine(workflows=[Expense, mail], queues={"default": 4}, name="w")

    assert _warnings(caplog) == [
        "engine 'w' was given workflow 'nodes.expense', whose queue 'expenses' it does not run "
        "(its queues: default); its instances wait for an engine that runs 'expenses'"
    ]


async def test_engine_serving_every_queue_or_none_does_not_warn(
    make_engine: MakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    await make_engine(workflows=[Expense, mail], queues={"default": 1, "expenses": 1})
    await make_engine(workflows=[Expense, mail], queues=None)  # a client only runs nothing

    assert _warnings(caplog) == []
