"""A stateful property test: random sequences of start (single and `start_many`, keyed and
not, with scopes and concurrency keys), signal, cancel, clock moves and `drain()` against a
real engine on a fresh schema, checking the guarantees after every step against the model
of `flow_model.py`.

Steps run in the background while the machine acts (the engine's own claim loop wakes on
its notifications whenever the machine's event loop runs), so the checks after each rule
hold for any interleaving; after a drain the database must equal the model's settled view.

After every rule, from one consistent snapshot of the database:
- each (workflow, key) is held by at most one instance among the statuses of its scope;
- an ended instance stays ended (same status, result and end time) and has no inbox;
- a live instance's inbox plus the ticks its state consumed are exactly the signals it
  accepted, each once; nothing accepted is lost;
- a live parent's pending count is its number of live children, and no live instance has
  an ended parent; children appear only as a spawn of the model plans them;
- no concurrency key has two executing instances; no attempt was spent, nothing failed;
- a row has a `locked_by` exactly while it is executing.
After `drain()`: nothing is executing or due, every status, step, deadline and result is
the model's.
"""

from __future__ import annotations

import asyncio
import secrets
from collections import Counter
from datetime import timedelta
from typing import Any

import asyncpg
import msgspec
import pytest
from flow_model import LIVE, Flow, Inst, Model, Plan
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)
from props_support import PROFILE, SOAK, Loop

import gendurable as gd

KEYS = ("k0", "k1", "k2")
SCOPES: tuple[tuple[str, ...] | None, ...] = (
    None,
    (*LIVE, "done"),
    (*LIVE, "cancelled"),
    (*LIVE, "done", "failed", "cancelled"),
)
MODES = ("goto", "reawait")
TERMINAL = ("done", "failed", "cancelled")

# A plan's shape: waves of children, each (keyed, mode, its own waves).
Shape = list[list[tuple[bool, str, Any]]]


def shapes(depth: int) -> st.SearchStrategy[Shape]:
    kid: st.SearchStrategy[Any] = st.tuples(
        st.booleans(), st.sampled_from(MODES), shapes(depth - 1) if depth else st.just([])
    )
    return st.lists(st.lists(kid, max_size=2), max_size=2 if depth else 0)


class FlowMachine(RuleBasedStateMachine):
    dsn = ""  # set by the test from its fixture: hypothesis makes the machines itself

    def __init__(self) -> None:
        super().__init__()
        self.loop = Loop(self.dsn)
        self.clock = gd.ManualClock()
        self.model = Model(self.clock.now())
        self.engine = gd.Engine(
            self.dsn,
            workflows=[Flow],
            queues={"default": 3},
            clock=self.clock,
            schema=self.loop.schema(),
            name=f"props-{secrets.token_hex(4)}",
            gc_retention=None,
        )
        self.conn: asyncpg.Connection | None = None
        self.ended: dict[int, tuple[str, Any, Any]] = {}
        self.loop.run(self.engine.start())
        self.conn = self.loop.run(asyncpg.connect(self.dsn))

    def teardown(self) -> None:
        try:
            self.loop.run(self.engine.stop())
            if self.conn is not None:
                self.loop.run(self.conn.close())
        finally:
            self.loop.close()

    @property
    def schema(self) -> str:
        return f'"{self.engine.schema}"'

    # -- rules -------------------------------------------------------------------------

    def _plans(self, shape: Shape) -> list[list[Plan]]:
        return [
            [
                Plan(self.model.child_key() if keyed else None, mode, self._plans(sub))
                for keyed, mode, sub in wave
            ]
            for wave in shape
        ]

    @rule(
        key=st.none() | st.sampled_from(KEYS),
        scope=st.sampled_from(SCOPES),
        mode=st.sampled_from(MODES),
        shape=shapes(2),
        ck=st.none() | st.just("ck"),
    )
    def start(
        self,
        key: str | None,
        scope: tuple[str, ...] | None,
        mode: str,
        shape: Shape,
        ck: str | None,
    ) -> None:
        waves = self._plans(shape)
        holder = self.model.holder(key) if key else None
        handle = self.loop.run(
            Flow.start(
                key,
                Flow.State(mode=mode, waves=waves),
                scope=scope,
                concurrency_key=ck,
                engine=self.engine,
            )
        )
        self._started(handle, key, scope, mode, waves, holder)

    @rule(
        entries=st.lists(
            st.tuples(
                st.none() | st.sampled_from(KEYS),
                st.sampled_from(SCOPES),
                st.sampled_from(MODES),
                shapes(1),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def start_many(self, entries: list[tuple[str | None, Any, str, Shape]]) -> None:
        made = [(key, scope, mode, self._plans(shape)) for key, scope, mode, shape in entries]
        holders = {key: self.model.holder(key) for key, *_ in made if key}
        handles = self.loop.run(
            Flow.start_many(
                [
                    Flow.new(key=key, state=Flow.State(mode=mode, waves=waves), scope=scope)
                    for key, scope, mode, waves in made
                ],
                engine=self.engine,
            )
        )
        assert len(handles) == len(made)
        first: dict[str, gd.Handle] = {}
        for handle, (key, scope, mode, waves) in zip(handles, made, strict=True):
            if key is not None and key in first:
                assert handle == gd.Handle(first[key].id, key, False)
                continue
            self._started(handle, key, scope, mode, waves, holders.get(key) if key else None)
            if key is not None:
                first[key] = handle
                holders[key] = self.model.holder(key)

    def _started(
        self,
        handle: gd.Handle,
        key: str | None,
        scope: tuple[str, ...] | None,
        mode: str,
        waves: list[list[Plan]],
        holder: Inst | None,
    ) -> None:
        assert handle.key == key
        if holder is not None and (
            holder.in_scope() and (holder.confirmed or "done" in holder.scope)
        ):
            # Held for sure: the live instance, or an ended one whose scope keeps its key.
            assert not handle.created, f"{key!r} is held by {holder}, yet a start created one"
            assert handle.id == holder.id
            return
        if holder is not None:  # ended by a finish the database may not have run yet
            if not handle.created:
                assert handle.id == holder.id
                return
            holder.confirmed = True  # it had ended: its key was free
        assert handle.created, f"nothing holds {key!r}, yet the start returned {handle}"
        assert all(i.id != handle.id for i in self.model.insts)
        self.model.make(key, tuple(scope or LIVE), mode, waves, id=handle.id)

    def _target(self, pick: int) -> Inst | None:
        # An index, not a draw from the list: which children have rows yet depends on the
        # background steps, and hypothesis needs the same draws on a replay.
        targets = [i for i in self.model.insts if i.id is not None]
        return targets[pick % len(targets)] if targets else None

    def _address(self, pick: int, by_key: bool) -> tuple[Inst, str | int] | None:
        target = self._target(pick)
        if target is None:
            return None
        if by_key and target.key is not None:
            return self.model.by_key(target.key) or target, target.key
        assert target.id is not None
        return target, target.id

    async def _signal(self, address: str | int, name: str, payload: int | None) -> int | None:
        try:
            signal_id: int = await Flow.signal(address, name, payload, engine=self.engine)
        except gd.NoTarget:
            return None
        return signal_id

    @rule(pick=st.integers(0, 1000), name=st.sampled_from(["tick", "finish"]), by_key=st.booleans())
    def signal(self, pick: int, name: str, by_key: bool) -> None:
        found = self._address(pick, by_key)
        if found is None:
            return
        target, address = found
        payload = self.model.tick() if name == "tick" else None
        signal_id = self.loop.run(self._signal(address, name, payload))
        if signal_id is None:
            self.model.refused(target)
        else:
            self.model.accepted(target, name, payload, signal_id)

    @rule(pick=st.integers(0, 1000), count=st.integers(2, 5), by_key=st.booleans())
    def ticks(self, pick: int, count: int, by_key: bool) -> None:
        """Several ticks to one instance at once (racing each other and its steps)."""
        found = self._address(pick, by_key)
        if found is None:
            return
        target, address = found
        payloads = [self.model.tick() for _ in range(count)]

        async def send() -> list[int | None]:
            return list(await asyncio.gather(*(self._signal(address, "tick", p) for p in payloads)))

        answers = list(zip(payloads, self.loop.run(send()), strict=True))
        # Every delivery that was stored came before every one refused (an end is final).
        for payload, signal_id in sorted((a for a in answers if a[1]), key=lambda a: a[1] or 0):
            self.model.accepted(target, "tick", payload, signal_id)
        if any(signal_id is None for _, signal_id in answers):
            self.model.refused(target)

    @rule(pick=st.integers(0, 1000), by_key=st.booleans())
    def cancel(self, pick: int, by_key: bool) -> None:
        found = self._address(pick, by_key)
        if found is None:
            return
        target, address = found
        try:
            self.loop.run(Flow.cancel(address, engine=self.engine))
        except gd.NoTarget:
            self.model.refused(target)
            return
        self.model.cancelled(target)
        # The cascade has run: its descendants are settled as the database shows them.
        rows = self.loop.run(self._snapshot())[0]
        self._bind(rows)
        for inst in target.descendants():
            if inst.status == "ghost" or (inst.terminal and inst.confirmed):
                continue
            found = rows.get(inst.id) if inst.id is not None else None
            self.model.resolve(inst, found["status"] if found else None)

    @rule(by=st.sampled_from([timedelta(minutes=20), timedelta(minutes=40), timedelta(hours=3)]))
    def advance(self, by: timedelta) -> None:
        self.drain()
        self.clock.advance(by)
        self.model.advance(by)
        self.drain()

    @rule()
    def drain(self) -> None:
        self.loop.run(self.engine.drain())
        rows, signals = self.loop.run(self._snapshot())
        self._bind(rows)
        self._check(rows, signals)
        for row in rows.values():
            assert row["status"] not in ("executing", "available"), f"{dict(row)} after drain"
        for inst in self.model.insts:
            if inst.status == "ghost":
                continue
            assert inst.id is not None, f"{inst} was never inserted"
            row = rows[inst.id]
            if inst.live:
                if inst.phase == "collect":
                    assert (row["status"], row["step"]) == ("awaiting", "collect"), inst
                    assert row["await_deadline"] == inst.deadline, inst
                else:
                    assert row["status"] == "waiting", inst
                    live_kids = [k for k in inst.kids[-1] if k.live]
                    assert row["pending_children"] == len(live_kids), inst
            else:
                assert row["status"] == inst.status, inst
                inst.confirmed = True

    # -- checks ------------------------------------------------------------------------

    async def _snapshot(self) -> tuple[dict[int, Any], list[Any]]:
        assert self.conn is not None
        async with self.conn.transaction(isolation="repeatable_read", readonly=True):
            rows = await self.conn.fetch(
                "SELECT id, key, parent_id, spawn_index, status::text AS status, step, "
                "state::text AS state, result::text AS result, error::text AS error, "
                "scope::text[] AS scope, concurrency_key, pending_children, attempt, "
                f"await_deadline, finished_at, locked_by FROM {self.schema}.instances ORDER BY id"
            )
            signals = await self.conn.fetch(
                "SELECT instance_id, name, payload::text AS payload "
                f"FROM {self.schema}.signals ORDER BY id"
            )
        return {r["id"]: r for r in rows}, list(signals)

    def _bind(self, rows: dict[int, Any]) -> None:
        """Give the model's children the ids of the rows their parents' spawns inserted."""
        kids: dict[int, list[Any]] = {}
        for row in rows.values():
            if row["parent_id"] is not None:
                kids.setdefault(row["parent_id"], []).append(row)
        for inst in self.model.insts:
            if inst.id is None:
                continue
            found = sorted(kids.pop(inst.id, []), key=lambda r: r["id"])
            for wave in inst.kids:
                if not found:
                    break
                assert len(found) >= len(wave), f"{inst} has half a spawn: {found}"
                batch = sorted(found[: len(wave)], key=lambda r: r["spawn_index"])
                found = found[len(wave) :]
                for kid, row in zip(wave, batch, strict=True):
                    assert row["key"] == kid.key, (kid, dict(row))
                    assert kid.id in (None, row["id"]), (kid, dict(row))
                    kid.id = row["id"]
            assert not found, f"{inst} has children no spawn planned: {found}"
        assert not kids, f"children of unknown parents: {kids}"

    @invariant()
    def guarantees_hold(self) -> None:
        rows, signals = self.loop.run(self._snapshot())
        self._bind(rows)
        self._check(rows, signals)

    def _check(self, rows: dict[int, Any], signals: list[Any]) -> None:
        known = {i.id: i for i in self.model.insts if i.id is not None}
        assert set(rows) == set(known), f"rows {sorted(rows)} vs model {sorted(known)}"
        inbox: dict[int, list[Any]] = {}
        for s in signals:
            inbox.setdefault(s["instance_id"], []).append(s)
        holders: Counter[str] = Counter()
        executing: Counter[str] = Counter()
        live_kids: Counter[int] = Counter()
        for row in rows.values():
            live = row["status"] in LIVE
            if row["key"] is not None and row["status"] in row["scope"]:
                holders[row["key"]] += 1
            if row["status"] == "executing" and row["concurrency_key"]:
                executing[row["concurrency_key"]] += 1
            if live and row["parent_id"] is not None:
                live_kids[row["parent_id"]] += 1
                assert rows[row["parent_id"]]["status"] in LIVE, f"orphan {dict(row)}"
            assert row["status"] != "failed", dict(row)
            assert row["error"] is None, dict(row)
            assert row["attempt"] == 0, dict(row)
            # A claim is held exactly while executing: every statement that leaves
            # `executing` clears locked_by, so ownership is never mistaken for another's.
            assert (row["locked_by"] is not None) == (row["status"] == "executing"), dict(row)
        assert all(n == 1 for n in holders.values()), f"a key held twice: {holders}"
        assert all(n == 1 for n in executing.values()), f"a concurrency key overlaps: {executing}"
        # Statuses first (children before the results of their parents).
        for id, row in rows.items():
            self._status(known[id], row)
        for id, row in rows.items():
            inst = known[id]
            if row["status"] in LIVE:
                assert row["pending_children"] == live_kids[id], (inst, dict(row))
                self._inbox(inst, row, inbox.get(id, []))
            else:
                assert not inbox.get(id), f"{inst} ended with an inbox"
                self._ended(inst, row)

    def _status(self, inst: Inst, row: Any) -> None:
        status = row["status"]
        if inst.live:
            assert status in LIVE, f"{inst} is {status} in the database"
        elif inst.status == "cancelled":
            assert status == "cancelled", f"{inst} is {status} in the database"
        else:
            assert inst.status == "done", inst
            assert status == "done" or (status in LIVE and not inst.confirmed), (
                f"{inst} is {status} in the database"
            )
            if status == "done":
                inst.confirmed = True

    def _inbox(self, inst: Inst, row: Any, signals: list[Any]) -> None:
        state = msgspec.json.decode(row["state"])
        ticks = [int(s["payload"]) for s in signals if s["name"] == "tick"]
        finishes = sum(1 for s in signals if s["name"] == "finish")
        got = state["got"] + ticks
        assert sorted(got) == sorted(inst.ticks), f"{inst}: got {state['got']} + inbox {ticks}"
        assert len(set(got)) == len(got), f"{inst}: a tick consumed twice: {got}"
        assert finishes == inst.finishes, f"{inst}: {finishes} finish signals stored"

    def _ended(self, inst: Inst, row: Any) -> None:
        seen = (row["status"], row["result"], row["finished_at"])
        assert self.ended.setdefault(inst.id or 0, seen) == seen, f"{inst} changed after its end"
        if row["status"] != "done":
            return
        result = msgspec.json.decode(row["result"])
        end, children = self.model.expected_result(inst)
        assert result["end"] == end, (inst, result)
        assert result["children"] == children, (inst, result)
        got = result["got"]
        assert got == inst.ticks[: len(got)], f"{inst}: got {got}, accepted {inst.ticks}"
        assert len(got) >= inst.ticks_at_end, f"{inst}: got {got}, accepted {inst.ticks}"


def test_state_machine_keeps_every_guarantee(gendurable_dsn: str) -> None:
    FlowMachine.dsn = gendurable_dsn
    run_state_machine_as_test(FlowMachine, settings=PROFILE if SOAK else _ci())


def _ci() -> Any:
    from hypothesis import settings

    return settings(PROFILE, max_examples=12)


pytestmark = pytest.mark.timeout(6 * 3600 if SOAK else 180)
