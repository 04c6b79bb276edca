"""The failover's checks catch what they claim to, on small hand-made rows and logs.

The failover test only shows that they pass; these show that each fails on the breach it is
there for (an instance, a committed step, an end or a stored signal lost; a step run again
that was not in flight at the kill) and passes on the look-alikes (steps committed after
the snapshot; a step in flight at the kill run again).
"""

from __future__ import annotations

from typing import Any

from chaos_checks import Executions, Sent
from failover_checks import Snapshot, check_reruns_in_flight, check_snapshot_kept, stored_for_sure


def row(id: int, trail: list[str], status: str = "available", **fields: Any) -> dict[str, Any]:
    return {
        "id": id,
        "workflow": fields.pop("workflow", "chaos.account"),
        "key": fields.pop("key", f"k{id}"),
        "status": status,
        "state": {"n": len(trail), "trail": trail},
        "result": fields.pop("result", None),
        **fields,
    }


def pack(id: int, items: list[int], status: str = "done") -> dict[str, Any]:
    return row(
        id,
        ["t"],
        status,
        workflow="chaos.pack",
        key=f"p{id}",
        result={"items": items, "timed_out": False} if status == "done" else None,
    )


SNAPSHOT = Snapshot(
    rows=[
        row(1, ["a"]),
        row(2, ["b", "c"], "done", result={"balance": 1}),
        pack(3, [], "awaiting"),
    ],
    signals=[(7, "p3")],
)


def test_failover_checks_snapshot_kept_passes_when_only_later_commits_were_added() -> None:
    after = [
        row(1, ["a", "a2"], "done", result={"balance": 2}),
        row(2, ["b", "c"], "done", result={"balance": 1}),
        pack(3, [7]),
        row(4, ["d"]),  # started after the snapshot
    ]

    inv = check_snapshot_kept(after, SNAPSHOT)

    assert inv.ok, inv.problems
    assert inv.counts == {"rows": 3, "committed_steps": 4, "ended": 1, "signals": 1}


def test_failover_checks_snapshot_kept_fails_on_each_kind_of_loss() -> None:
    lost_row = [row(2, ["b", "c"], "done", result={"balance": 1}), pack(3, [7])]
    lost_step = [row(1, ["a9"]), row(2, ["b", "c"], "done", result={"balance": 1}), pack(3, [7])]
    lost_end = [row(1, ["a"]), row(2, ["b", "c"], "available"), pack(3, [7])]
    lost_signal = [row(1, ["a"]), row(2, ["b", "c"], "done", result={"balance": 1}), pack(3, [])]

    problems = [check_snapshot_kept(rows, SNAPSHOT).problems for rows in (
        lost_row, lost_step, lost_end, lost_signal
    )]  # fmt: skip

    assert problems == [
        ["chaos.account k1 (id 1) is gone"],
        ["k1: committed steps ['a'], now ['a9']"],
        ["k2: ended done with {'balance': 1}, now available with None"],
        ["signal 7 stored for pack p3 before the kill, not consumed: []"],
    ]


def test_failover_checks_a_signal_in_the_snapshot_is_stored_for_sure() -> None:
    sent = [Sent(7, "p3", False, 0.0, 1.0), Sent(8, "p3", False, 0.0, 1.0)]

    assert stored_for_sure(sent, SNAPSHOT) == 1
    assert [s.certain for s in sent] == [True, False]


def execution(id: int, n: int, attempt: int, t0: float) -> dict[str, Any]:
    return {
        "ev": "enter",
        "wf": "chaos.account",
        "id": id,
        "key": f"k{id}",
        "step": "debit",
        "attempt": attempt,
        "pid": 1,
        "tok": f"{id}.{n}.{attempt}",
        "n": n,
        "t0": t0,
    }


def test_failover_checks_reruns_pass_for_claims_live_at_the_kill() -> None:
    runs = Executions(
        [
            execution(1, 0, 0, t0=1.0),  # claimed and running at the kill...
            execution(1, 0, 1, t0=12.0),  # ...rescued after it, run again
            execution(1, 1, 0, t0=12.5),
            execution(2, 3, 1, t0=12.0),  # claimed at the kill, started after the promotion
            execution(2, 3, 0, t0=12.2),  # ...once rescued: the stale run starts late
            execution(3, 0, 0, t0=13.0),
        ]
    )

    inv = check_reruns_in_flight(runs, in_flight={(1, 0, 0), (2, 3, 0), (9, 0, 0)})

    assert inv.ok, inv.problems
    assert inv.counts == {"generations": 4, "reruns": 2, "in_flight": 3}


def test_failover_checks_reruns_fail_for_a_claim_taken_after_the_kill() -> None:
    runs = Executions([execution(1, 0, 0, t0=11.5), execution(1, 0, 1, t0=13.0)])

    inv = check_reruns_in_flight(runs, in_flight={(1, 1, 0), (2, 0, 0)})

    assert inv.problems == [
        "instance 1 debit (commit 0) ran 2 times (attempts [0, 1]); attempt 0 was not in "
        "flight at the kill"
    ]
