"""`Engine(max_payload_bytes=...)` on real PostgreSQL: oversized values are refused before
anything is written; a step's oversized outcome goes to the error path; stored values are
never cut short."""

from __future__ import annotations

from typing import Any

import asyncpg
import msgspec
import pytest

import gendurable as gd
from gendurable.testing import MakeEngine
from recordings import recorded

LIMIT = 1000
HANDLED: list[str] = recorded([])


class Blob(msgspec.Struct):
    text: str = ""
    grow: int = 0  # characters a step appends (its committed state grows past the limit)
    result: int = 0  # characters of the result
    child: int = 0  # characters of a spawned child's state


def blob(n: int) -> Blob:
    return Blob(text="x" * n)


def size(value: Any) -> str:
    """The encoded size of `value` as the error messages write it."""
    return f"{len(msgspec.json.encode(value)):,} bytes of JSON"


@gd.workflow(name="limits.child")
class Child:
    State = Blob

    @gd.step
    async def only(self, state: Blob, ctx: gd.Context) -> gd.Outcome:
        return gd.done(len(state.text))


@gd.workflow(name="limits.flow", max_attempts=1)
class Flow:
    State = Blob

    @gd.step(start=True, to=("wait", "join"))
    async def first(self, state: Blob, ctx: gd.Context) -> gd.Outcome:
        state.text += "y" * state.grow
        if state.child:
            return gd.spawn([Child.new(key=f"{ctx.key}-c", state=blob(state.child))], self.join)
        if state.result:
            return gd.done("r" * state.result)
        return gd.goto(self.wait)

    @gd.step
    @gd.await_signals("raw", note=Blob)
    async def wait(self, state: Blob, ctx: gd.Context) -> gd.Outcome:
        payload = ctx.awaited[0].payload
        return gd.done(len(payload.text if isinstance(payload, Blob) else payload["text"]))

    @gd.step
    async def join(self, state: Blob, ctx: gd.Context) -> gd.Outcome:
        return gd.done([c.result for c in ctx.children])


@gd.workflow(name="limits.handled", max_attempts=1)
class Handled:
    State = Blob

    @gd.step(start=True)
    async def first(self, state: Blob, ctx: gd.Context) -> gd.Outcome:
        state.text += "y" * state.grow
        return gd.done()

    async def handle(self, error: Exception, state: Blob, ctx: gd.Context) -> gd.Outcome:
        HANDLED.append(str(error))
        state.text = ""  # stop() commits the state too: it must fit
        return gd.stop("too big")


async def count(db: asyncpg.Connection, schema: str, table: str = "instances") -> int:
    return int(await db.fetchval(f'SELECT count(*) FROM "{schema}".{table}'))


async def stored_state(db: asyncpg.Connection, schema: str, key: str) -> Any:
    raw = await db.fetchval(f'SELECT state::text FROM "{schema}".instances WHERE key = $1', key)
    return msgspec.json.decode(raw)


async def test_payload_limit_start_refuses_an_oversized_state_naming_size_and_limit(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Flow], queues=None, max_payload_bytes=LIMIT)

    with pytest.raises(gd.ValidationError) as raised:
        await Flow.start(key="big", state=blob(LIMIT))

    assert f"limits.flow state is {size(blob(LIMIT))}" in str(raised.value)
    assert "above the limit of 1,000 bytes" in str(raised.value)
    assert await count(db, gendurable_schema) == 0


async def test_payload_limit_start_many_refuses_the_batch_holding_one_oversized_entry(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    await make_engine(workflows=[Flow], queues=None, max_payload_bytes=LIMIT)
    entries = [Flow.new(key="a", state=blob(10)), Flow.new(key="b", state=blob(LIMIT))]

    with pytest.raises(
        gd.ValidationError, match=rf"entry 1: limits\.flow state is {size(blob(LIMIT))}"
    ):
        await Flow.start_many(entries)

    assert await count(db, gendurable_schema) == 0


async def test_payload_limit_signal_refuses_an_oversized_payload_and_stores_nothing(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Flow], max_payload_bytes=LIMIT)
    await Flow.start(key="s")
    await engine.drain()

    with pytest.raises(
        gd.ValidationError, match=f"payload of signal 'note' is {size(blob(LIMIT))}"
    ):
        await Flow.signal("s", "note", blob(LIMIT))
    raw = {"text": "x" * LIMIT}
    with pytest.raises(gd.ValidationError, match=f"payload of signal 'raw' is {size(raw)}"):
        await Flow.signal("s", "raw", raw)

    assert await count(db, gendurable_schema, "signals") == 0
    await Flow.signal("s", "note", blob(900))
    await engine.drain()
    assert await Flow.result("s") == 900


async def test_payload_limit_a_step_state_past_the_limit_fails_and_keeps_the_stored_one(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Flow], max_payload_bytes=LIMIT)
    await Flow.start(key="g", state=Blob(text="x" * 10, grow=LIMIT))
    await engine.drain()

    with pytest.raises(gd.WorkflowFailed) as failed:
        await Flow.result("g")

    assert failed.value.error["type"] == "gendurable.errors.ValidationError"
    grown = Blob(text="x" * 10 + "y" * LIMIT, grow=LIMIT)
    assert f"state is {size(grown)}, above the limit of 1,000" in failed.value.error["message"]
    assert (await stored_state(db, gendurable_schema, "g"))["text"] == "x" * 10


async def test_payload_limit_a_result_past_the_limit_fails(make_engine: MakeEngine) -> None:
    engine = await make_engine(workflows=[Flow], max_payload_bytes=LIMIT)
    await Flow.start(key="r", state=Blob(result=LIMIT))
    await engine.drain()

    with pytest.raises(gd.WorkflowFailed, match=f"result is {size('r' * LIMIT)}"):
        await Flow.result("r")


async def test_payload_limit_a_child_state_past_the_limit_fails_and_spawns_nothing(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Flow, Child], max_payload_bytes=LIMIT)
    await Flow.start(key="p", state=Blob(child=LIMIT))
    await engine.drain()

    with pytest.raises(gd.WorkflowFailed, match=r"spawn child 0 \(limits\.child\) state is"):
        await Flow.result("p")
    assert await count(db, gendurable_schema) == 1


async def test_payload_limit_an_oversized_outcome_reaches_the_handler(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[Handled], max_payload_bytes=LIMIT)
    await Handled.start(key="h", state=Blob(grow=LIMIT))
    await engine.drain()

    with pytest.raises(gd.WorkflowFailed, match="too big"):
        await Handled.result("h")
    [message] = HANDLED
    assert "above the limit of 1,000 bytes" in message


async def test_payload_limit_default_stores_a_value_just_under_a_mebibyte_intact(
    make_engine: MakeEngine, db: asyncpg.Connection, gendurable_schema: str
) -> None:
    engine = await make_engine(workflows=[Flow])
    text = "".join(chr(0x41 + i % 26) for i in range(1_048_000))
    await Flow.start(key="m", state=Blob(text=text))
    await engine.drain()
    await Flow.signal("m", "note", Blob(text=text))
    await engine.drain()

    assert await Flow.result("m") == len(text)
    assert (await stored_state(db, gendurable_schema, "m"))["text"] == text
    assert (await Flow.get("m")).state == Blob(text=text)
    with pytest.raises(gd.ValidationError, match="above the limit of 1,048,576 bytes"):
        await Flow.start(key="n", state=Blob(text=text + "x" * 1000))


@pytest.mark.parametrize("bad", [0, -1, 1.5, "1MB", True, None])
def test_payload_limit_option_must_be_a_positive_int(bad: Any) -> None:
    with pytest.raises(gd.ConfigError, match="max_payload_bytes must be a positive int"):
        gd.Engine("postgresql://nobody@127.0.0.1:1/none", workflows=[Flow], max_payload_bytes=bad)
