"""The invariants of the chaos run, checked from outside: the rows and the side-effect log.

Pure functions over plain data, shared by `test_chaos.py` and `bench/soak.py`:

- `rows`: every instance row of the run's schema (dicts, jsonb decoded);
- `records`: the side-effect log of `chaos_app` (`enter` and `exit` records);
- `plan`: what the client started (`Root`s) and the signals it sent (`Sent`);
- `freezes`: when which worker was stopped (SIGSTOP) and continued.

Each check returns an `Invariant`: its name, whether it held, counts that show what it
covered, and the first problems found. How an execution is judged (see `Executions`): the
state carries `n`, the number of committed step executions, so the executions that saw
`n == g` are the attempts at the g-th commit ("generation g"). The execution that committed
it is the one of the highest attempt (a claim is taken away only by a rescue, which counts
an attempt), and every execution of generation g + 1 must have seen exactly the state it
committed.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

TERMINAL = ("done", "failed", "cancelled")
MAX_PROBLEMS = 10


@dataclass
class Invariant:
    """One guarantee as checked: `ok`, the `counts` it covered, the first `problems`."""

    name: str
    counts: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def fail(self, problem: str) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)

    def as_json(self) -> dict[str, Any]:
        return {
            "invariant": self.name,
            "ok": self.ok,
            "counts": self.counts,
            "problems": self.problem_count,
            "first_problems": self.problems,
        }


@dataclass(frozen=True)
class Root:
    """An instance the client started: workflow, key, the state it was given."""

    workflow: str
    key: str
    state: dict[str, Any]
    concurrency_key: str | None = None


@dataclass
class Sent:
    """A signal the client sent: `certain` when it was stored for sure, else it may have been
    (the connection broke after the statement was sent). `before` and `after` bracket the
    call (monotonic seconds)."""

    sid: int
    key: str
    certain: bool
    before: float
    after: float


@dataclass(frozen=True)
class Freeze:
    """Worker `pid` was stopped (SIGSTOP) from `start` to `end` (monotonic seconds)."""

    pid: int
    start: float
    end: float


@dataclass
class Plan:
    """What the client did: the roots it started and the signals it sent or saw refused."""

    roots: list[Root] = field(default_factory=list)
    sent: list[Sent] = field(default_factory=list)
    refused: list[tuple[str, int]] = field(default_factory=list)


# --- what each root must end with -----------------------------------------------------------


def expected_result(root: Root) -> Any:
    """The result a root must end `done` with (None for a signalled pack: see `signals`)."""
    s = root.state
    if root.workflow == "chaos.pack":
        return {"items": [], "timed_out": True} if s.get("lonely") else None
    if root.workflow == "chaos.tree":
        return {
            "branches": [
                [
                    f"{root.key}/b{i}",
                    "done",
                    {
                        "index": i,
                        "leaves": [
                            [f"{root.key}/b{i}/l{j}", "done", {"value": v * v}]
                            for j, v in enumerate(values)
                        ],
                    },
                ]
                for i, values in enumerate(s["branches"])
            ]
        }
    if root.workflow == "chaos.account":
        return {"balance": s["amount"]}
    if root.workflow == "chaos.call":
        return {"tenant": s["tenant"]}
    raise ValueError(f"unknown workflow {root.workflow!r}")


def planned_instances(roots: Iterable[Root]) -> int:
    """Roots plus the children and grandchildren their trees spawn."""
    total = 0
    for r in roots:
        total += 1
        if r.workflow == "chaos.tree":
            total += sum(1 + len(v) for v in r.state["branches"])
    return total


# --- executions from the log -----------------------------------------------------------------


@dataclass
class Execution:
    """One step execution: its `enter` record and, when it ran to its end, its `exit`."""

    enter: dict[str, Any]
    exit: dict[str, Any] | None = None

    @property
    def attempt(self) -> int:
        return int(self.enter["attempt"])

    @property
    def t0(self) -> float:
        return float(self.enter["t0"])


class Executions:
    """The log grouped by instance and generation, with each generation's committer."""

    def __init__(self, records: Iterable[Mapping[str, Any]]) -> None:
        by_tok: dict[str, Execution] = {}
        self.orphan_exits = 0
        for r in records:
            if r["ev"] == "enter":
                by_tok[r["tok"]] = Execution(dict(r))
        for r in records:
            if r["ev"] == "exit":
                found = by_tok.get(r["tok"])
                if found is None:
                    self.orphan_exits += 1
                else:
                    found.exit = dict(r)
        self.all = list(by_tok.values())
        self.by_instance: dict[int, dict[int, list[Execution]]] = defaultdict(
            lambda: defaultdict(list)
        )
        for e in self.all:
            self.by_instance[int(e.enter["id"])][int(e.enter["n"])].append(e)
        self.winners: dict[tuple[int, int], Execution] = {}
        """(instance id, generation) -> the execution whose commit made generation + 1."""

    def winner(self, id: int, generation: int) -> Execution | None:
        """The highest-attempt execution of a generation, if it is the only one of that
        attempt that completed (None otherwise; the effects check says why)."""
        runs = self.by_instance.get(id, {}).get(generation, [])
        if not runs:
            return None
        top = max(e.attempt for e in runs)
        done = [e for e in runs if e.attempt == top and e.exit is not None]
        return done[0] if len(done) == 1 else None


# --- the checks ------------------------------------------------------------------------------


def check_terminal(rows: Sequence[Mapping[str, Any]], plan: Plan) -> Invariant:
    """Every instance ended `done`, with the result its inputs call for; nothing unplanned."""
    inv = Invariant("every_instance_terminal_with_expected_result")
    by_key: dict[tuple[str, str], list[Mapping[str, Any]]] = defaultdict(list)
    statuses: dict[str, int] = defaultdict(int)
    for r in rows:
        statuses[r["status"]] += 1
        if r["key"] is not None:
            by_key[(r["workflow"], r["key"])].append(r)
        if r["status"] != "done":
            inv.fail(
                f"{r['workflow']} {r['key']} (id {r['id']}) is {r['status']} at {r['step']}, "
                f"error {r['error']}"
            )
    for root in plan.roots:
        found = by_key.get((root.workflow, root.key), [])
        if len(found) != 1:
            inv.fail(f"{root.workflow} {root.key}: {len(found)} rows")
            continue
        row = found[0]
        if row["parent_id"] is not None:
            inv.fail(f"{root.key}: a root has a parent ({row['parent_id']})")
        want = expected_result(root)
        if row["status"] != "done":
            continue
        if want is not None and row["result"] != want:  # (a signalled pack: see signals)
            inv.fail(f"{root.workflow} {root.key}: result {row['result']!r}, expected {want!r}")
    expected = planned_instances(plan.roots)
    if len(rows) != expected:
        inv.fail(f"{len(rows)} instance rows, the plan makes {expected}")
    for (workflow, key), found in by_key.items():
        if len(found) > 1:
            inv.fail(f"{workflow} key {key!r} has {len(found)} rows")
    inv.counts = {
        "instances": len(rows),
        "planned": expected,
        "roots": len(plan.roots),
        "children": sum(1 for r in rows if r["parent_id"] is not None),
        **{f"status_{s}": n for s, n in sorted(statuses.items())},
        "lonely_packs_timed_out": sum(
            1
            for r in rows
            if r["workflow"] == "chaos.pack"
            and (r["state"] or {}).get("lonely")
            and (r["result"] or {}).get("timed_out") is True
        ),
    }
    return inv


def check_nothing_executing(rows: Sequence[Mapping[str, Any]]) -> Invariant:
    """No row left `executing`, none still claimed, none live."""
    inv = Invariant("no_row_left_executing")
    executing = [r for r in rows if r["status"] == "executing"]
    claimed = [r for r in rows if r["locked_by"] is not None]
    live = [r for r in rows if r["status"] not in TERMINAL]
    for r in executing + [r for r in claimed if r["status"] != "executing"]:
        inv.fail(f"id {r['id']} {r['workflow']} {r['key']}: {r['status']}, {r['locked_by']}")
    inv.counts = {"executing": len(executing), "claimed": len(claimed), "live": len(live)}
    return inv


def check_children(rows: Sequence[Mapping[str, Any]], runs: Executions | None = None) -> Invariant:
    """Each child counted once by its parent: pending count zero, ctx.children complete."""
    inv = Invariant("each_child_counted_once")
    children: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    by_id = {r["id"]: r for r in rows}
    for r in rows:
        if r["parent_id"] is not None:
            children[r["parent_id"]].append(r)
            if r["parent_id"] not in by_id:
                inv.fail(f"child {r['key']} (id {r['id']}) has no parent row {r['parent_id']}")
    parents = 0
    for r in rows:
        spawns = {"chaos.tree": "branches", "chaos.branch": "leaves"}.get(r["workflow"])
        if spawns is None:
            if children.get(r["id"]):
                inv.fail(f"{r['workflow']} {r['key']} has children it never spawns")
            continue
        parents += 1
        mine = sorted(children.get(r["id"], []), key=lambda c: c["spawn_index"])
        want = len((r["state"] or {}).get(spawns, []))
        if r["pending_children"] != 0:
            inv.fail(f"{r['key']}: pending_children {r['pending_children']}")
        if len(mine) != want:
            inv.fail(f"{r['key']}: {len(mine)} children rows, spawned {want}")
        if [c["spawn_index"] for c in mine] != list(range(len(mine))):
            inv.fail(f"{r['key']}: spawn indexes {[c['spawn_index'] for c in mine]}")
        if r["status"] != "done":
            continue
        listed = (r["result"] or {}).get(spawns)
        actual = [[c["key"], c["status"], c["result"]] for c in mine]
        if listed != actual:
            inv.fail(f"{r['key']}: ctx.children gave {listed!r}, the rows are {actual!r}")
        if runs is not None:
            n = (r["state"] or {}).get("n", 0)
            last = runs.winner(r["id"], n - 1)
            ids = None if last is None or last.exit is None else last.exit.get("children")
            if ids != [c["id"] for c in mine]:
                inv.fail(f"{r['key']}: the committed run saw children {ids}")
    inv.counts = {
        "parents": parents,
        "children": sum(len(v) for v in children.values()),
        "pending_nonzero": sum(1 for r in rows if r["pending_children"] != 0),
    }
    return inv


def check_signals(
    rows: Sequence[Mapping[str, Any]],
    plan: Plan,
    runs: Executions,
    leftover_signals: int,
) -> Invariant:
    """No signal lost or consumed twice, no wake-up lost; a reawait wakes only on a new one.

    A signal stored for sure is in its pack's result exactly once; one that may have been
    stored is there at most once; no signal shows up anywhere else. A signalled pack never
    waits for its deadline (its timeout is far beyond the run). Every run of `collect`
    that the pack committed saw more signals than the one before (a reawait never wakes
    without a new one), and the inboxes of ended instances are empty.
    """
    inv = Invariant("no_signal_or_wakeup_lost_none_consumed_twice")
    sent_to: dict[str, list[Sent]] = defaultdict(list)
    for s in plan.sent:
        sent_to[s.key].append(s)
    packs = {r["key"]: r for r in rows if r["workflow"] == "chaos.pack" and r["parent_id"] is None}
    owner: dict[int, str] = {}
    seen_total = 0
    for root in plan.roots:
        if root.workflow != "chaos.pack":
            continue
        row = packs.get(root.key)
        if row is None or row["status"] != "done":
            continue  # reported by the terminal check
        items = list((row["result"] or {}).get("items", []))
        seen_total += len(items)
        sent = {s.sid: s for s in sent_to.get(root.key, [])}
        if len(set(items)) != len(items):
            inv.fail(f"pack {root.key}: a signal consumed twice: {items}")
        for sid in items:
            if sid in owner:
                inv.fail(f"signal {sid} seen by {owner[sid]} and {root.key}")
            owner[sid] = root.key
            if sid not in sent:
                inv.fail(f"pack {root.key} saw signal {sid}, never sent to it")
        for s in sent.values():
            if s.certain and s.sid not in items:
                inv.fail(f"pack {root.key}: stored signal {s.sid} lost (saw {items})")
        if not root.state.get("lonely"):
            if (row["result"] or {}).get("timed_out") is not False:
                inv.fail(
                    f"pack {root.key}: a lost wake-up, it woke only at its deadline with "
                    f"{items} of the {len(sent)} signals sent"
                )
            elif len(items) < root.state["need"]:
                inv.fail(f"pack {root.key}: {len(items)} signals of {root.state['need']}")
        _check_reawaits(inv, root, row, runs)
    for key, sid in plan.refused:
        inv.fail(f"signal {sid} to pack {key} refused: the instance was no longer live")
    if leftover_signals:
        inv.fail(f"{leftover_signals} signals left in the inboxes of ended instances")
    before, racing = _signal_timing(plan, packs, runs)
    inv.counts = {
        "sent": len(plan.sent),
        "stored_for_sure": sum(1 for s in plan.sent if s.certain),
        "maybe_stored": sum(1 for s in plan.sent if not s.certain),
        "seen": seen_total,
        "sent_before_await": before,
        "sent_racing_park": racing,
        "collect_runs": sum(
            1 for e in runs.all if e.enter["step"] == "collect" and e.exit is not None
        ),
        "refused": len(plan.refused),
        "leftover": leftover_signals,
    }
    return inv


def _check_reawaits(inv: Invariant, root: Root, row: Mapping[str, Any], runs: Executions) -> None:
    counts = []
    for g in range((row["state"] or {}).get("n", 0)):
        w = runs.winner(row["id"], g)
        if w is not None and w.exit is not None and w.enter["step"] == "collect":
            counts.append(len(w.exit.get("sids", [])))
    if any(b <= a for a, b in itertools.pairwise(counts)):
        inv.fail(f"pack {root.key}: collect woke without a new signal (saw {counts})")


def _signal_timing(
    plan: Plan, packs: Mapping[str, Mapping[str, Any]], runs: Executions
) -> tuple[int, int]:
    """Signals stored before their pack parked, and those sent while it was parking."""
    before = racing = 0
    for s in plan.sent:
        row = packs.get(s.key)
        if row is None:
            continue
        w = runs.winner(row["id"], 0)  # `prepare`, whose commit parks the pack
        if w is None or w.exit is None:
            continue
        parked_from = float(w.exit["t1"])
        if s.after < parked_from:
            before += 1
        elif s.before < parked_from + 0.05:
            racing += 1
    return before, racing


def check_effects(rows: Sequence[Mapping[str, Any]], runs: Executions) -> Invariant:
    """Every committed step ran to its end at least once, and what was committed is the state
    of the last execution of that step (the one that held the claim), never a stale one."""
    inv = Invariant("effects_at_least_once_and_last_execution_committed")
    by_id = {r["id"]: r for r in rows}
    committed = stale = same_worker = 0
    for id in runs.by_instance:
        if id not in by_id:
            inv.fail(f"instance {id} ran but has no row")
    for r in rows:
        id = r["id"]
        state = r["state"] or {}
        final = state.get("n", 0)
        generations = runs.by_instance.get(id, {})
        beyond = [g for g in generations if g >= final]
        if beyond:
            inv.fail(f"{r['key']}: executions saw n={beyond}, but only {final} were committed")
        previous: Any = None
        tokens = []
        for g in range(final):
            execs = generations.get(g, [])
            completed = [e for e in execs if e.exit is not None]
            if not completed:
                inv.fail(f"{r['key']}: commit {g} has no completed execution ({len(execs)} ran)")
                break
            top = max(e.attempt for e in execs)
            last = [e for e in completed if e.attempt == top]
            if len(last) != 1:
                inv.fail(
                    f"{r['key']}: commit {g}: {len(last)} completed executions at the highest "
                    f"attempt {top} (of {[(e.attempt, e.exit is not None) for e in execs]})"
                )
                break
            win = last[0]
            assert win.exit is not None
            for e in completed:
                if g > 0 and e.exit is not None and e.exit["seen"] != previous:
                    inv.fail(
                        f"{r['key']}: {e.enter['step']} (attempt {e.attempt}, pid "
                        f"{e.enter['pid']}) saw {e.exit['seen']}, but {previous} was committed"
                    )
            stale += len(completed) - 1
            same_worker += len({e.enter["pid"] for e in execs}) < len(execs)
            committed += 1
            previous = win.exit["commit"]
            tokens.append(win.enter["tok"])
        else:
            if final and previous != state:
                inv.fail(f"{r['key']}: the row holds {state}, the last run committed {previous}")
            if state.get("trail", []) != tokens:
                inv.fail(f"{r['key']}: trail {state.get('trail')} != committed runs {tokens}")
    executions = len(runs.all)
    inv.counts = {
        "executions": executions,
        "completed": sum(1 for e in runs.all if e.exit is not None),
        "committed": committed,
        "re_executions": executions - committed,
        "completed_not_committed": stale,
        # Commits whose step one worker ran twice (it lost the claim, then took it again).
        "rerun_by_same_worker": same_worker,
        "exits_without_enter": runs.orphan_exits,
    }
    if runs.orphan_exits:
        inv.fail(f"{runs.orphan_exits} exit records without their enter record")
    return inv


def committed_executions(rows: Sequence[Mapping[str, Any]], runs: Executions) -> list[Execution]:
    """The executions whose commit holds: the winner of each committed generation."""
    out = []
    for r in rows:
        for g in range((r["state"] or {}).get("n", 0)):
            w = runs.winner(r["id"], g)
            if w is not None and w.exit is not None:
                out.append(w)
    return out


def check_concurrency(rows: Sequence[Mapping[str, Any]], runs: Executions) -> Invariant:
    """No two steps of instances sharing a concurrency key ran at the same time.

    Judged on the executions that held their claim to the commit: a worker that was stopped
    past its lease may still finish a step it no longer owns (its commit is then dropped).
    """
    inv = Invariant("no_concurrency_key_overlap")
    key_of = {r["id"]: r["concurrency_key"] for r in rows if r["concurrency_key"] is not None}
    spans: dict[str, list[tuple[float, float, Execution]]] = defaultdict(list)
    for e in committed_executions(rows, runs):
        key = key_of.get(int(e.enter["id"]))
        if key is not None and e.exit is not None:
            spans[key].append((e.t0, float(e.exit["t1"]), e))
    overlaps = 0
    for key, items in spans.items():
        items.sort(key=lambda s: s[0])
        end, holder = float("-inf"), None
        for t0, t1, e in items:
            if t0 < end and holder is not None:
                overlaps += 1
                inv.fail(
                    f"key {key}: {e.enter['key']} {e.enter['step']} started {end - t0:.3f}s "
                    f"before {holder.enter['key']} {holder.enter['step']} ended"
                )
            if t1 > end:
                end, holder = t1, e
    inv.counts = {
        "keys": len(spans),
        "executions": sum(len(v) for v in spans.values()),
        "overlaps": overlaps,
    }
    return inv


def check_rate_limit(
    rows: Sequence[Mapping[str, Any]],
    runs: Executions,
    *,
    burst: int,
    rate: float,
    start_delay: float,
    freezes: Sequence[Freeze] = (),
) -> Invariant:
    """No bucket granted more than `burst + rate * t` tokens over any window of t seconds.

    Measured at the starts of the limited step (every execution took a token at its claim,
    re-executions too), so a window may look shorter than the grants' own by the delay from
    claim to start: `start_delay` allows for it. Starts on a worker that had just been
    stopped (SIGSTOP) are left out: their claims were granted before the stop.
    """
    inv = Invariant("rate_limit_never_exceeded")
    tenant = {
        r["id"]: (r["state"] or {}).get("tenant") for r in rows if r["workflow"] == "chaos.call"
    }
    starts: dict[str, list[float]] = defaultdict(list)
    excluded = 0
    for e in runs.all:
        if e.enter["wf"] != "chaos.call" or e.enter["step"] != "call":
            continue
        if _thawing(e, freezes, start_delay):
            excluded += 1
            continue
        starts[str(tenant.get(int(e.enter["id"])))].append(e.t0)
    worst = 0.0
    for part, times in starts.items():
        times.sort()
        for i in range(len(times)):
            # Only windows that could break the bound: counts grow by one per start.
            horizon = times[i] + (len(times) - i) / rate
            last = bisect.bisect_right(times, horizon, lo=i)
            for j in range(i, last):
                allowed = burst + rate * (times[j] - times[i] + start_delay)
                excess = (j - i + 1) - allowed
                worst = max(worst, excess + rate * start_delay)
                if excess > 0:
                    inv.fail(
                        f"partition {part}: {j - i + 1} starts within "
                        f"{times[j] - times[i]:.3f}s; the bucket allows {allowed:.1f}"
                    )
    inv.counts = {
        "partitions": len(starts),
        "starts": sum(len(v) for v in starts.values()),
        "excluded_after_freeze": excluded,
        # How much of the claim-to-start allowance the worst window used, in tokens.
        "worst_excess_tokens": round(worst, 2),
        "allowance_tokens": round(rate * start_delay, 2),
    }
    return inv


def _thawing(e: Execution, freezes: Sequence[Freeze], margin: float) -> bool:
    pid = int(e.enter["pid"])
    return any(f.pid == pid and f.start <= e.t0 <= f.end + margin for f in freezes)


def check_all(
    rows: Sequence[Mapping[str, Any]],
    records: Sequence[Mapping[str, Any]],
    plan: Plan,
    *,
    leftover_signals: int,
    burst: int,
    rate: float,
    start_delay: float,
    freezes: Sequence[Freeze] = (),
) -> list[Invariant]:
    """Every invariant of the chaos run, in a fixed order."""
    runs = Executions(records)
    return [
        check_terminal(rows, plan),
        check_nothing_executing(rows),
        check_children(rows, runs),
        check_signals(rows, plan, runs, leftover_signals),
        check_concurrency(rows, runs),
        check_rate_limit(
            rows, runs, burst=burst, rate=rate, start_delay=start_delay, freezes=freezes
        ),
        check_effects(rows, runs),
    ]
