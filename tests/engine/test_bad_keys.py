"""Keys, signal names and JSON that try the edges: quotes, unicode, NUL, 10 kB.

Every value travels as a statement parameter, so quotes and SQL-looking text are just text.
PostgreSQL text cannot hold a NUL character and keys are indexed (a btree entry holds at most
2704 bytes), so a NUL, a lone surrogate or a key above 2000 bytes of UTF-8 is refused with a
`ValidationError` naming it, before anything is written, by every call that takes a key.
"""

from __future__ import annotations

import random
from typing import Any

import asyncpg
import pytest

import gendurable as gd
from gendurable.testing import MakeEngine

QUOTED = 'it\'s "quoted"; DROP TABLE instances; --'
UNICODE = "ключ-🔑-é"
LONG_NAME = "n" * 10_000

GOOD_KEYS = {
    "quotes": 'o\'brien "x"; DROP TABLE instances; --',
    "backslashes": "a\\b\\\\c\\0\\n\\u0000",
    "like-patterns": "100%_like_%",
    "unicode": UNICODE,
    "combining": "e\u0301",
    "rtl": "\u05e9\u05dc\u05d5\u05dd",
    "spaces": " spaced out ",
    "controls": "tab\tnew\nline\x7f",
    "json-ish": '{"a": [1]}',
    "2000-bytes": "k" * 2000,
    "2000-bytes-multibyte": "é" * 1000,
}

_rng = random.Random(7)
BAD_KEYS = {
    "nul": ("a\x00b", "holds a NUL character"),
    "lone-surrogate": ("x\ud800", "is not valid UTF-8"),
    "10kB": ("k" * 10_000, "is 10,000 bytes of UTF-8, above the limit of 2,000"),
    "10kB-random": (
        "".join(chr(_rng.randrange(0x100, 0x7000)) for _ in range(4000)),
        "bytes of UTF-8, above the limit of 2,000",
    ),
    "2001-bytes": ("k" * 2001, "is 2,001 bytes of UTF-8"),
}


@gd.workflow(name="keys.flow")
class Flow:
    @gd.step(start=True)
    @gd.await_signals("go", QUOTED, UNICODE, LONG_NAME)
    async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done({"key": ctx.key, "names": [s.name for s in ctx.awaited]})


@gd.workflow(name="keys.leaf")
class Leaf:
    @gd.step(start=True)
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done(ctx.key)


@gd.workflow(name="keys.parent", max_attempts=1)
class Parent:
    @gd.step(start=True)
    async def fan_out(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        # `bad` names a key of BAD_KEYS: some of them cannot travel in a JSON state.
        keys = state.get("keys") or ["ok", BAD_KEYS[state["bad"]][0]]
        return gd.spawn([Leaf.new(key=k) for k in keys], then=self.join)

    @gd.step
    async def join(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        return gd.done([c.result for c in ctx.children])


@gd.workflow(name="keys.nul_state", max_attempts=1)
class NulState:
    @gd.step(start=True)
    async def only(self, state: Any, ctx: gd.Context) -> gd.Outcome:
        if state["put_nul"]:
            state["text"] = "a\x00b"
            return gd.done()
        if state["raise_nul"]:
            raise RuntimeError("bad\x00byte")
        return gd.done("clean")


class Db:
    def __init__(self, conn: asyncpg.Connection, schema: str) -> None:
        self.conn = conn
        self.s = f'"{schema}"'

    async def count(self, table: str = "instances") -> int:
        return int(await self.conn.fetchval(f"SELECT count(*) FROM {self.s}.{table}"))

    async def keys(self) -> list[str]:
        rows = await self.conn.fetch(f"SELECT key FROM {self.s}.instances ORDER BY id")
        return [r["key"] for r in rows]


@pytest.fixture
def rows(db: asyncpg.Connection, gendurable_schema: str) -> Db:
    return Db(db, gendurable_schema)


@pytest.mark.parametrize("key", GOOD_KEYS.values(), ids=GOOD_KEYS.keys())
async def test_bad_keys_edge_keys_work_everywhere_and_are_stored_exactly(
    make_engine: MakeEngine, rows: Db, key: str
) -> None:
    engine = await make_engine(workflows=[Flow, Leaf, Parent])

    other = key[:-1] + "+"
    handle = await Flow.start(key=key)
    again = await Flow.start(key=key)
    batch = await Flow.start_many([Flow.new(key=key), Flow.new(key=other)])
    assert (again.id, again.created) == (handle.id, False)
    assert [(h.id, h.created) for h in batch] == [(handle.id, False), (batch[1].id, True)]
    assert (await Flow.get(key)).key == key
    await Flow.signal(key, "go")
    await Flow.cancel(other)
    await Parent.start(key=key, state={"keys": [key, key[:500] + "/2"]})
    await engine.drain()

    assert await Flow.result(key, timeout=5) == {"key": key, "names": ["go"]}
    assert (await Flow.get(other)).status == "cancelled"
    assert await Parent.result(key, timeout=5) == [key, key[:500] + "/2"]
    stored = await rows.keys()
    assert stored[:3] == [key, other, key]  # Flow, Flow, Parent: byte for byte
    assert sorted(stored[3:]) == sorted([key, key[:500] + "/2"])  # children, in key order


@pytest.mark.parametrize("bad", BAD_KEYS)
async def test_bad_keys_are_refused_by_every_call_before_anything_is_written(
    make_engine: MakeEngine, rows: Db, bad: str
) -> None:
    key, message = BAD_KEYS[bad]
    engine = await make_engine(workflows=[Flow, Leaf, Parent])
    await Flow.start(key="live")
    calls = {
        "start": lambda: Flow.start(key=key),
        "start_many": lambda: Flow.start_many([Flow.new(key="fine"), Flow.new(key=key)]),
        "concurrency_key": lambda: Flow.start(key="ck", concurrency_key=key),
        "queue": lambda: Flow.start(key="q", queue=key),
        "get": lambda: Flow.get(key),
        "result": lambda: Flow.result(key, timeout=1),
        "signal": lambda: Flow.signal(key, "go"),
        "cancel": lambda: Flow.cancel(key),
    }
    for call, run in calls.items():
        with pytest.raises(gd.ValidationError, match=message):
            await run()
        assert (await rows.count(), await rows.count("signals")) == (1, 0), call

    await Parent.start(key="p", state={"bad": bad})
    await engine.drain()
    with pytest.raises(gd.WorkflowFailed, match=message):
        await Parent.result("p", timeout=5)
    assert await rows.keys() == ["live", "p"]  # no child went in


def test_bad_keys_signal_name_with_nul_fails_at_import() -> None:
    with pytest.raises(gd.DefinitionError, match="signal name 'a\\\\x00b' holds a NUL character"):

        @gd.workflow(name="keys.nul_name")
        class NulName:
            @gd.step(start=True)
            @gd.await_signals("a\x00b")
            async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
                return gd.done()


@pytest.mark.parametrize("name", [QUOTED, UNICODE, LONG_NAME], ids=["quotes", "unicode", "10kB"])
async def test_bad_keys_declared_signal_names_with_quotes_unicode_or_10kb_work(
    make_engine: MakeEngine, name: str
) -> None:
    engine = await make_engine(workflows=[Flow])
    await Flow.start(key="s")
    await engine.drain()

    await Flow.signal("s", name, {"n": name})
    await engine.drain()

    assert await Flow.result("s", timeout=5) == {"key": "s", "names": [name]}


@pytest.mark.parametrize(
    "name", ["a\x00b", "n" * 10_001, "", "go "], ids=["nul", "10kB", "empty", "near-miss"]
)
async def test_bad_keys_undeclared_signal_names_are_refused_and_store_nothing(
    make_engine: MakeEngine, rows: Db, name: str
) -> None:
    await make_engine(workflows=[Flow], queues=None)
    await Flow.start(key="s")

    with pytest.raises(gd.ValidationError, match=r"signal name must be|awaits no signal named"):
        await Flow.signal("s", name)

    assert await rows.count("signals") == 0


@pytest.mark.parametrize("id", [2**63, -(2**63) - 1], ids=["above", "below"])
async def test_bad_keys_ids_beyond_bigint_are_refused(make_engine: MakeEngine, id: int) -> None:
    await make_engine(workflows=[Flow], queues=None)

    for run in (Flow.get, Flow.cancel, lambda i: Flow.signal(i, "go")):
        with pytest.raises(gd.ValidationError, match="out of range"):
            await run(id)


async def test_bad_keys_nul_in_json_is_refused_at_start_and_in_signals(
    make_engine: MakeEngine, rows: Db
) -> None:
    engine = await make_engine(workflows=[Flow, NulState])
    await Flow.start(key="s")
    await engine.drain()

    with pytest.raises(gd.ValidationError, match="holds a NUL character"):
        await NulState.start(key="n", state={"text": "a\x00b"})
    with pytest.raises(gd.ValidationError, match="payload of signal 'go' holds a NUL"):
        await Flow.signal("s", "go", {"k\x00": 1})

    assert (await rows.count(), await rows.count("signals")) == (1, 0)
    await NulState.start(
        key="ok", state={"text": "a\\u0000b", "put_nul": False, "raise_nul": False}
    )
    await engine.drain()
    assert await NulState.result("ok", timeout=5) == "clean"
    assert (await NulState.get("ok")).state["text"] == "a\\u0000b"  # the literal text is fine


NUL_AFTER_BACKSLASHES = {
    "nul": ("a\x00b", True),
    "backslash-nul": ("a\\\x00b", True),  # JSON `\\\u0000`: an escaped backslash, then NUL
    "three-backslashes-nul": ("a\\\\\\\x00b", True),
    "literal-escape": ("a\\u0000b", False),  # the text `\u0000`, no NUL in it
    "two-backslashes-literal": ("a\\\\u0000b", False),
}


@pytest.mark.parametrize(
    ("text", "refused"), NUL_AFTER_BACKSLASHES.values(), ids=NUL_AFTER_BACKSLASHES.keys()
)
async def test_bad_keys_a_nul_is_found_whatever_the_backslashes_before_it(
    make_engine: MakeEngine, rows: Db, text: str, refused: bool
) -> None:
    # In JSON a NUL is `\u0000` after an even number of backslashes: each pair is one
    # escaped backslash of the text. An odd number escapes the `\` of `\u0000` itself.
    await make_engine(workflows=[NulState], queues=None)
    state = {"text": text, "put_nul": False, "raise_nul": False}

    if refused:
        with pytest.raises(gd.ValidationError, match="holds a NUL character"):
            await NulState.start(key="k", state=state)
        assert await rows.count() == 0
    else:
        await NulState.start(key="k", state=state)
        assert (await NulState.get("k")).state["text"] == text


async def test_bad_keys_nul_in_a_step_state_or_error_takes_the_error_path_alone(
    make_engine: MakeEngine,
) -> None:
    engine = await make_engine(workflows=[NulState], queues={"default": 8})
    flags = {"put": (True, False), "raise": (False, True), "clean": (False, False)}
    await NulState.start_many(
        [NulState.new(key=k, state={"put_nul": p, "raise_nul": r}) for k, (p, r) in flags.items()]
    )

    await engine.drain()  # the three outcomes are committed together, or near enough

    assert await NulState.result("clean", timeout=5) == "clean"
    with pytest.raises(gd.WorkflowFailed, match="state holds a NUL character"):
        await NulState.result("put", timeout=5)
    with pytest.raises(gd.WorkflowFailed) as raised:
        await NulState.result("raise", timeout=5)
    assert raised.value.error["message"] == "bad\\x00byte"
