"""The workflow the state machine drives, and the model that predicts what it does.

`Flow` spawns waves of children as its state plans them (children are `Flow`s too), then
collects `tick` signals (goto mode: consumed into `state.got` at each wake; reawait mode:
accumulated in the inbox) until a `finish` signal or its one-hour await deadline ends it
with the ticks it got and its children's statuses.

The model keeps, for every instance, its *settled* view: what `drain()` would leave. All
of it happens at the clock's current time: the clock only moves in the `advance` rule,
after a drain. The database lags behind the settled view only where an instance ends on
a `finish` the engine has not run yet (`confirmed` is False): there a cancel, a signal or
a start on its key may find it live or ended, and the machine learns which from the answer
(or from the database, which never reverts an end).
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import msgspec

import gendurable as gd

HOUR = timedelta(hours=1)
LIVE = ("available", "executing", "awaiting", "waiting")


class Plan(msgspec.Struct):
    """A child to spawn: its key (None: unkeyed), mode, and its own waves of children."""

    key: str | None
    mode: str
    waves: list[list[Plan]] = msgspec.field(default_factory=list)


@gd.workflow(name="props.flow", max_attempts=3)
class Flow:
    class State(msgspec.Struct):
        mode: str = "goto"
        waves: list[list[Plan]] = msgspec.field(default_factory=list)
        wave: int = 0
        got: list[int] = msgspec.field(default_factory=list)
        children: list[list[list[str]]] = msgspec.field(default_factory=list)

    @gd.step(start=True, to=("joined", "collect"))
    async def begin(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return _next_wave(state)

    @gd.step(to=("joined", "collect"))
    async def joined(self, state: State, ctx: gd.Context) -> gd.Outcome:
        state.children.append([[c.key or "", c.status] for c in ctx.children])
        return _next_wave(state)

    @gd.step
    @gd.await_signals(tick=int, finish=None, timeout=HOUR)
    async def collect(self, state: State, ctx: gd.Context) -> gd.Outcome:
        ticks = [s.payload for s in ctx.awaited if s.name == "tick"]
        finished = any(s.name == "finish" for s in ctx.awaited)
        if ctx.timed_out or finished:
            end = "timeout" if ctx.timed_out else "finish"
            return gd.done({"got": state.got + ticks, "children": state.children, "end": end})
        if state.mode == "goto":
            state.got += ticks
            return gd.goto(self.collect)
        return gd.reawait()


def _next_wave(state: Flow.State) -> gd.Outcome:
    if state.wave < len(state.waves):
        plans = state.waves[state.wave]
        state.wave += 1
        kids = [Flow.new(key=p.key, state=Flow.State(mode=p.mode, waves=p.waves)) for p in plans]
        return gd.spawn(kids, then="joined")
    return gd.goto("collect")


@dataclass(eq=False)
class Inst:
    """One instance as the model sees it (`id` is None until the database has the row)."""

    serial: int
    id: int | None
    key: str | None
    scope: tuple[str, ...]
    parent: Inst | None
    mode: str
    waves: list[list[Plan]]
    kids: list[list[Inst]] = field(default_factory=list)
    status: str = "live"  # settled: live, done, cancelled; "ghost": never inserted
    confirmed: bool = True  # the database has reached the settled status (or an answer,
    # such as NoTarget, proved it has: the database must then show it)
    phase: str = "begin"  # begin, waiting (children), collect
    ticks: list[int] = field(default_factory=list)  # accepted, in arrival (signal id) order
    tick_ids: list[int] = field(default_factory=list)
    finishes: int = 0
    ticks_at_end: int = 0  # ticks accepted when it (settled) ended: all in its result
    deadline: datetime | None = None
    end: str | None = None  # finish or timeout

    @property
    def live(self) -> bool:
        return self.status == "live"

    @property
    def terminal(self) -> bool:
        return self.status in ("done", "cancelled")

    def descendants(self) -> list[Inst]:
        out: list[Inst] = []
        for wave in self.kids:
            for kid in wave:
                out.append(kid)
                out.extend(kid.descendants())
        return out

    def in_scope(self) -> bool:
        """Does it hold its key (as far as the model can tell)?"""
        if self.status == "ghost":
            return False
        if self.live or not self.confirmed:
            return True
        return self.status in self.scope

    def __repr__(self) -> str:
        return f"<Inst #{self.serial} id={self.id} key={self.key} {self.status}/{self.phase}>"


class Model:
    """The settled view of every instance the machine made, at the clock's time `now`."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.insts: list[Inst] = []
        self._serial = itertools.count()
        self._keys = itertools.count()
        self._ticks = itertools.count(1)

    # -- making instances ---------------------------------------------------------------

    def child_key(self) -> str:
        return f"c{next(self._keys)}"

    def tick(self) -> int:
        return next(self._ticks)

    def make(
        self,
        key: str | None,
        scope: tuple[str, ...],
        mode: str,
        waves: list[list[Plan]],
        parent: Inst | None = None,
        id: int | None = None,
    ) -> Inst:
        inst = Inst(next(self._serial), id, key, scope, parent, mode, waves)
        self.insts.append(inst)
        self._enter(inst, 0)
        return inst

    def holder(self, key: str) -> Inst | None:
        """The instance holding `key`, if any (the database agrees, or the answer tells)."""
        held = [i for i in self.insts if i.key == key and i.in_scope()]
        assert len(held) <= 1, f"the model holds {key!r} twice: {held}"
        return held[0] if held else None

    def by_key(self, key: str) -> Inst | None:
        """What `signal`/`cancel` by key reach: the live holder, else the latest one."""
        named = [i for i in self.insts if i.key == key and i.id is not None]
        live = [i for i in named if i.live or not i.confirmed]
        if live:
            return live[-1]
        return max(named, key=lambda i: i.id or 0) if named else None

    # -- the settled progression ---------------------------------------------------------

    def _enter(self, inst: Inst, wave: int) -> None:
        """`inst` runs from wave `wave` on: spawn the next non-empty wave or collect."""
        while wave < len(inst.waves):
            plans = inst.waves[wave]
            kids = [self.make(p.key, LIVE, p.mode, p.waves, parent=inst) for p in plans]
            inst.kids.append(kids)
            wave += 1
            if kids:
                inst.phase = "waiting"
                return
        inst.phase = "collect"
        inst.deadline = self.now + HOUR
        if inst.finishes:
            self._end(inst, "finish")

    def _end(self, inst: Inst, end: str) -> None:
        inst.status = "done"
        inst.end = end
        inst.confirmed = False
        inst.ticks_at_end = len(inst.ticks)
        self._kid_ended(inst)

    def _kid_ended(self, kid: Inst) -> None:
        parent = kid.parent
        if parent is None or not parent.live or parent.phase != "waiting":
            return
        if all(k.terminal or k.status == "ghost" for k in parent.kids[-1]):
            self._enter(parent, len(parent.kids))

    def accepted(self, inst: Inst, name: str, payload: int | None, signal_id: int) -> None:
        """A signal was stored for `inst` (it was live in the database)."""
        assert inst.live or not inst.confirmed, f"{inst} accepted a signal after it ended"
        if name == "tick":
            assert payload is not None
            at = bisect.bisect(inst.tick_ids, signal_id)
            inst.tick_ids.insert(at, signal_id)
            inst.ticks.insert(at, payload)
            if inst.live and inst.phase == "collect" and inst.mode == "goto":
                inst.deadline = self.now + HOUR  # consumed at once: it parks again now
            return
        inst.finishes += 1
        if inst.live and inst.phase == "collect":
            self._end(inst, "finish")

    def refused(self, inst: Inst) -> None:
        """`NoTarget`: the instance had ended in the database."""
        assert inst.terminal, f"a signal or cancel to live {inst} was refused"
        inst.confirmed = True

    def cancelled(self, inst: Inst) -> None:
        """A cancel took `inst` (it was live in the database). Its descendants are settled by
        `resolve()` from the database, where the cascade has run."""
        inst.status = "cancelled"
        inst.confirmed = True
        inst.phase = "begin"
        self._kid_ended(inst)

    def resolve(self, inst: Inst, db_status: str | None) -> None:
        """Adopt the end the database shows for a descendant of a cancelled instance."""
        if db_status is None:  # the spawn that would have made it was dropped as stale
            assert inst.id is None, f"{inst} vanished from the database"
            inst.status = "ghost"
            return
        if db_status == "done":
            assert inst.status == "done", f"{inst} ended done in the database"
        else:
            assert db_status == "cancelled", f"{inst} is {db_status} after the cascade"
            assert inst.live or not inst.confirmed or inst.status == "cancelled", (
                f"the cascade cancelled {inst}, which had ended before"
            )
            inst.status = "cancelled"
        inst.confirmed = True

    def advance(self, by: timedelta) -> None:
        """The clock moved (everything was drained before): await deadlines that passed end
        the instances as timed out."""
        self.now += by
        for inst in list(self.insts):
            if (
                inst.live
                and inst.phase == "collect"
                and inst.deadline is not None
                and inst.deadline <= self.now
            ):
                self._end(inst, "timeout")

    # -- what the database must show -----------------------------------------------------

    def expected_result(self, inst: Inst) -> tuple[str, list[list[list[str]]]]:
        return (inst.end or "", [[[k.key or "", k.status] for k in wave] for wave in inst.kids])
