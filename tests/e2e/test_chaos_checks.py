"""The chaos run's checks catch what they claim to, on small hand-made rows and logs.

The chaos run itself only shows that they pass; these show that each one fails on the
breach it is there for (a stale commit written over the owner's, an overlap, a window over
the bucket, a lost or doubled signal, a child counted twice), and passes on the legitimate
look-alikes (re-executions after a rescue, a maybe-stored signal never seen).
"""

from __future__ import annotations

from typing import Any

from chaos_checks import (
    Executions,
    Freeze,
    Plan,
    Root,
    Sent,
    check_children,
    check_concurrency,
    check_effects,
    check_nothing_executing,
    check_rate_limit,
    check_signals,
    check_terminal,
)

_tokens = iter(range(1, 1_000_000))


def run(
    id: int,
    n: int,
    attempt: int = 0,
    *,
    t0: float = 0.0,
    t1: float | None = None,
    step: str = "s",
    wf: str = "chaos.account",
    pid: int = 1,
    before: list[str] | None = None,
    **extra: Any,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """An execution's records (enter, and exit unless `t1` is None) and the state it commits."""
    tok = f"{pid}.{next(_tokens)}"
    enter = {
        "ev": "enter",
        "wf": wf,
        "id": id,
        "key": f"k{id}",
        "step": step,
        "attempt": attempt,
        "pid": pid,
        "tok": tok,
        "n": n,
        "t0": t0,
    }
    if t1 is None:
        return [enter], None
    trail = list(before or [])
    seen = {"n": n, "trail": trail}
    commit = {"n": n + 1, "trail": [*trail, tok]}
    return [enter, {**enter, "ev": "exit", "t1": t1, "seen": seen, "commit": commit, **extra}], (
        commit
    )


def row(id: int, state: dict[str, Any], **fields: Any) -> dict[str, Any]:
    base = {
        "id": id,
        "workflow": "chaos.account",
        "key": f"k{id}",
        "status": "done",
        "step": "credit",
        "state": state,
        "result": None,
        "error": None,
        "parent_id": None,
        "spawn_index": None,
        "pending_children": 0,
        "locked_by": None,
        "concurrency_key": None,
        "attempt": 0,
    }
    return {**base, **fields}


def test_effects_rerun_after_a_rescue_is_fine_and_a_stale_commit_over_the_owner_is_caught() -> None:
    lost, _ = run(1, 0, attempt=0, t0=0, t1=1, pid=7)  # completed, its claim lost
    owner, committed = run(1, 0, attempt=1, t0=2, t1=3, pid=8)
    assert committed is not None
    next_records, final = run(1, 1, t0=4, t1=5, before=committed["trail"])
    records = lost + owner + next_records
    ok = check_effects([row(1, final or {})], Executions(records))
    assert ok.ok, ok.problems
    assert (ok.counts["completed_not_committed"], ok.counts["re_executions"]) == (1, 1)

    # The lost claim's commit landed instead: the next step saw it, the row holds it.
    stale_commit = next(r for r in lost if r["ev"] == "exit")["commit"]
    rewound, final = run(1, 1, t0=4, t1=5, before=stale_commit["trail"])
    broken = check_effects([row(1, final or {})], Executions(lost + owner + rewound))
    assert not broken.ok
    assert "was committed" in broken.problems[0]


def test_effects_two_completed_executions_at_one_attempt_and_a_missing_run_are_caught() -> None:
    a, commit_a = run(1, 0, attempt=0, t0=0, t1=1)
    b, _ = run(1, 0, attempt=0, t0=2, t1=3)
    twice = check_effects([row(1, commit_a or {})], Executions(a + b))
    assert not twice.ok
    assert "highest attempt" in twice.problems[0]

    never = check_effects([row(2, {"n": 1, "trail": ["x"]})], Executions([]))
    assert not never.ok
    assert "no completed execution" in never.problems[0]


def test_concurrency_overlap_between_committed_runs_of_one_key_is_caught() -> None:
    first, s1 = run(1, 0, t0=0.0, t1=1.0)
    second, s2 = run(2, 0, t0=0.5, t1=1.5)
    rows = [row(1, s1 or {}, concurrency_key="ck"), row(2, s2 or {}, concurrency_key="ck")]
    broken = check_concurrency(rows, Executions(first + second))
    assert (broken.ok, broken.counts["overlaps"]) == (False, 1)

    # A lost claim still running (its worker was stopped) is not an overlap.
    zombie, _ = run(2, 0, attempt=0, t0=0.5, t1=1.5)
    owner, s2 = run(2, 0, attempt=1, t0=2.0, t1=2.5)
    rows = [row(1, s1 or {}, concurrency_key="ck"), row(2, s2 or {}, concurrency_key="ck")]
    fine = check_concurrency(rows, Executions(first + zombie + owner))
    assert fine.ok, fine.problems


def _calls(times: list[float], pid: int = 1) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    records, rows = [], []
    for i, t in enumerate(times):
        recs, state = run(100 + i, 1, t0=t, t1=t + 0.01, wf="chaos.call", step="call", pid=pid)
        records += recs
        rows.append(row(100 + i, {**(state or {}), "tenant": "t0"}, workflow="chaos.call"))
    return rows, records


def test_rate_limit_windows_over_the_bucket_are_caught_within_the_start_allowance() -> None:
    # Burst 4, 4 per second: 4 at once, then one every 0.25 s is the most a bucket grants.
    rows, records = _calls([0, 0, 0, 0, 0.25, 0.5, 0.75, 1.0])
    fine = check_rate_limit(rows, Executions(records), burst=4, rate=4, start_delay=0.1)
    assert fine.ok, fine.problems

    rows, records = _calls([0, 0, 0, 0, 0.05, 0.1, 0.15, 0.2])
    broken = check_rate_limit(rows, Executions(records), burst=4, rate=4, start_delay=0.1)
    assert not broken.ok
    # Starts right after a worker was continued were granted before it stopped.
    thawed = check_rate_limit(
        rows,
        Executions(records),
        burst=4,
        rate=4,
        start_delay=0.1,
        freezes=[Freeze(pid=1, start=-5.0, end=0.0)],
    )
    assert thawed.ok, thawed.problems


def _pack(key: str, items: list[int], *, timed_out: bool = False, need: int = 2) -> Any:
    root = Root("chaos.pack", key, {"need": need})
    result = {"items": items, "timed_out": timed_out}
    return root, row(1, {"n": 0}, workflow="chaos.pack", key=key, result=result)


def test_signals_lost_doubled_foreign_and_lost_wakeups_are_caught() -> None:
    root, pack = _pack("p", [1, 2])
    plan = Plan([root], [Sent(1, "p", True, 0, 0), Sent(2, "p", True, 0, 0)])
    assert check_signals([pack], plan, Executions([]), 0).ok

    maybe = Plan([root], [*plan.sent, Sent(3, "p", False, 0, 0)])  # never stored
    assert check_signals([pack], maybe, Executions([]), 0).ok

    cases = {
        "lost": (_pack("p", [1])[1], plan, 0),
        "twice": (_pack("p", [1, 2, 2])[1], plan, 0),
        "foreign": (_pack("p", [1, 2, 9])[1], plan, 0),
        "wake-up": (_pack("p", [1, 2], timed_out=True)[1], plan, 0),
        "leftover": (pack, plan, 1),
    }
    for what, (found, sent, leftover) in cases.items():
        inv = check_signals([found], sent, Executions([]), leftover)
        assert not inv.ok, what


def test_children_counted_twice_or_missing_and_pending_counts_are_caught() -> None:
    parent = row(
        1,
        {"n": 0, "branches": [[], []]},
        workflow="chaos.tree",
        result={
            "branches": [
                ["k1/b0", "done", {"index": 0, "leaves": []}],
                ["k1/b1", "done", {"index": 1, "leaves": []}],
            ]
        },
    )
    kids = [
        row(
            2,
            {"n": 0},
            workflow="chaos.branch",
            key="k1/b0",
            parent_id=1,
            spawn_index=0,
            result={"index": 0, "leaves": []},
        ),
        row(
            3,
            {"n": 0},
            workflow="chaos.branch",
            key="k1/b1",
            parent_id=1,
            spawn_index=1,
            result={"index": 1, "leaves": []},
        ),
    ]
    assert check_children([parent, *kids]).ok
    assert not check_children([{**parent, "pending_children": -1}, *kids]).ok
    assert not check_children([parent, kids[0]]).ok
    listed_once = {
        **parent,
        "result": {"branches": [["k1/b0", "done", {"index": 0, "leaves": []}]] * 2},
    }
    assert not check_children([listed_once, *kids]).ok


def test_terminal_and_executing_rows_are_caught() -> None:
    root = Root("chaos.account", "k1", {"amount": 5})
    done = row(1, {"n": 2}, result={"balance": 5})
    assert check_terminal([done], Plan([root])).ok
    assert not check_terminal([{**done, "result": {"balance": 10}}], Plan([root])).ok
    assert not check_terminal([done, {**done, "id": 2}], Plan([root])).ok
    stuck = {**done, "status": "executing", "locked_by": "w.1"}
    assert not check_terminal([stuck], Plan([root])).ok
    assert not check_nothing_executing([stuck]).ok
    assert check_nothing_executing([done]).ok
