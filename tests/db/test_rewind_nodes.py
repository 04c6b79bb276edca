"""What a rewind writes without the code (`rewind.entry_by_nodes`): from what every live node
records about the workflow, refused whenever those records cannot say it for sure."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import msgspec
import pytest

import gendurable as gd
from gendurable.db.maintenance_store import MaintenanceStore
from gendurable.db.operator_store import OperatorStore
from gendurable.errors import ValidationError
from gendurable.maintenance.nodes import describe_workflows
from gendurable.rewind import KEEP, entry_by_code, entry_by_nodes
from gendurable.testing import MakeEngine


@gd.workflow(name="db.rewound", max_attempts=2, version=2)
class Rewound:
    class State(msgspec.Struct):
        n: int = 0

    @gd.step(start=True)
    async def first(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.limited)

    @gd.step(max_attempts=6, rate_limit=gd.Limit(5, per=timedelta(seconds=1)), weight=2)
    async def limited(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done()

    @gd.upgrade(from_version=1)
    def one(self, state: Any) -> Any:
        return state


@gd.job(name="db.other")
async def other(args: Any, ctx: gd.Context) -> None:
    """What the test's own engine serves (its node records only this)."""


SPEC = Rewound.spec  # type: ignore[attr-defined]
Record = Callable[..., Awaitable[None]]


class Store(OperatorStore, MaintenanceStore):
    """The operators' reads and the node registry's writes, on one database."""


@pytest.fixture
async def store(make_engine: MakeEngine) -> Store:
    engine = await make_engine(workflows=[other], queues=None)
    return Store(engine.store.db)


@pytest.fixture
def record(store: Store) -> Record:
    """Record a live node whose description of db.rewound is the code's, with `changes`."""
    made = [0]

    async def write(*, without: str | None = None, **changes: Any) -> None:
        described = {**describe_workflows({SPEC.name: SPEC})[SPEC.name], **changes}
        described.pop(without or "", None)
        made[0] += 1
        await store.node_register(
            id=f"node-{made[0]}", name=f"node-{made[0]}", host="h", pid=1,
            queues=b"{}", workflows=msgspec.json.encode({SPEC.name: described}),
            version="0", heartbeat=timedelta(seconds=10), ttl=timedelta(minutes=1), now=None,
        )  # fmt: skip

    return write


async def test_entry_by_nodes_is_what_the_code_writes(store: Store, record: Record) -> None:
    await record()
    await record()  # a second node running the same code

    for step, state in (("limited", {"n": 3}), ("first", KEEP)):
        by_nodes = await entry_by_nodes(store, SPEC.name, step, state)
        assert by_nodes == entry_by_code(SPEC, step, state), step


async def test_entry_by_nodes_refuses_a_state_the_recorded_type_refuses(
    store: Store, record: Record
) -> None:
    await record()

    with pytest.raises(ValidationError, match=r"db.rewound state does not match Rewound.State"):
        await entry_by_nodes(store, SPEC.name, "first", {"n": "three"})


async def test_entry_by_nodes_refuses_when_the_nodes_disagree(store: Store, record: Record) -> None:
    entry = describe_workflows({SPEC.name: SPEC})[SPEC.name]["entry"]
    await record()
    await record(
        steps={"first": []},
        entry={**entry, "first": {**entry["first"], "max_attempts": 9}},
        version=3,
    )

    with pytest.raises(ValidationError, match=r"not every live engine running db\.rewound knows"):
        await entry_by_nodes(store, SPEC.name, "limited")
    with pytest.raises(ValidationError, match=r"record different definitions of db\.rewound"):
        await entry_by_nodes(store, SPEC.name, "first")


async def test_entry_by_nodes_refuses_a_new_state_when_the_versions_differ(
    store: Store, record: Record
) -> None:
    await record()
    await record(version=3)

    kept = await entry_by_nodes(store, SPEC.name, "limited")
    with pytest.raises(ValidationError, match=r"record different definitions of db\.rewound"):
        await entry_by_nodes(store, SPEC.name, "limited", {"n": 1})
    assert kept.state is None


async def test_entry_by_nodes_needs_what_an_older_gendurable_does_not_record(
    store: Store, record: Record
) -> None:
    await record(without="entry")

    with pytest.raises(ValidationError, match="do not record what entering a step takes"):
        await entry_by_nodes(store, SPEC.name, "first")
