"""What a failover must not do, checked from the rows, a snapshot and the side-effect log.

Pure functions over plain data, like `chaos_checks` (whose invariants hold across a failover
too), for what only a failover can break:

- `check_snapshot_kept`: what the primary showed as committed just before it was killed is
  still there on the promoted standby. Under synchronous replication a commit becomes
  visible to other sessions only once the standby has it, so nothing read from the primary
  may be missing afterwards: no instance, no committed step (its token in the state's
  `trail`), no end, no stored signal.
- `check_reruns_in_flight`: a step runs again only if it was in flight at the kill: in each
  generation, every execution but the last ran under a claim that was live when the primary
  died (the row `executing` at that generation and attempt, as the standby shows it before
  its promotion). A step started on such a claim after the promotion counts: the worker
  took the claim before the kill, its claim expired during the outage and the instance was
  handed out again, and the worker ran the step anyway, to see its commit dropped as stale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaos_checks import TERMINAL, Executions, Invariant, Sent


@dataclass
class Snapshot:
    """The primary's committed rows and stored signals, read just before the kill."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    signals: list[tuple[int, str]] = field(default_factory=list)
    """(sid, key of the pack) of every signal in an inbox."""


def check_snapshot_kept(rows: Sequence[Mapping[str, Any]], snapshot: Snapshot) -> Invariant:
    """Every row of the snapshot survived with its committed steps, its end and its signals."""
    inv = Invariant("nothing_committed_before_the_kill_lost")
    by_id = {r["id"]: r for r in rows}
    steps = ended = 0
    for before in snapshot.rows:
        after = by_id.get(before["id"])
        if after is None:
            inv.fail(f"{before['workflow']} {before['key']} (id {before['id']}) is gone")
            continue
        trail = list((before["state"] or {}).get("trail", []))
        steps += len(trail)
        now = list((after["state"] or {}).get("trail", []))
        if now[: len(trail)] != trail:
            inv.fail(f"{before['key']}: committed steps {trail}, now {now}")
        if before["status"] in TERMINAL:
            ended += 1
            if (after["status"], after["result"]) != (before["status"], before["result"]):
                inv.fail(
                    f"{before['key']}: ended {before['status']} with {before['result']!r}, "
                    f"now {after['status']} with {after['result']!r}"
                )
    for sid, key in snapshot.signals:
        pack = next((r for r in rows if r["key"] == key and r["workflow"] == "chaos.pack"), None)
        items = ((pack or {}).get("result") or {}).get("items", [])
        if sid not in items:
            inv.fail(f"signal {sid} stored for pack {key} before the kill, not consumed: {items}")
    inv.counts = {
        "rows": len(snapshot.rows),
        "committed_steps": steps,
        "ended": ended,
        "signals": len(snapshot.signals),
    }
    return inv


def stored_for_sure(sent: Sequence[Sent], snapshot: Snapshot) -> int:
    """Mark the signals the snapshot holds as stored for sure (the client may not know);
    how many it marked."""
    stored = set(snapshot.signals)
    marked = 0
    for s in sent:
        if not s.certain and (s.sid, s.key) in stored:
            s.certain = True
            marked += 1
    return marked


InFlight = set[tuple[int, int, int]]
"""(instance id, generation `n`, attempt) of every row `executing` when the primary died."""


def check_reruns_in_flight(runs: Executions, in_flight: InFlight) -> Invariant:
    """Only steps in flight at the kill ran again: in every generation run more than once,
    each execution but the last (by attempt) ran under a claim live at the kill."""
    inv = Invariant("only_steps_in_flight_at_the_kill_ran_twice")
    generations = reruns = 0
    for id, by_generation in runs.by_instance.items():
        for g, execs in by_generation.items():
            generations += 1
            if len(execs) == 1:
                continue
            reruns += len(execs) - 1
            ordered = sorted(execs, key=lambda e: (e.attempt, e.t0))
            for e in ordered[:-1]:
                if (id, g, e.attempt) not in in_flight:
                    inv.fail(
                        f"instance {id} {e.enter['step']} (commit {g}) ran {len(execs)} times "
                        f"(attempts {[x.attempt for x in ordered]}); attempt {e.attempt} was "
                        f"not in flight at the kill"
                    )
    inv.counts = {"generations": generations, "reruns": reruns, "in_flight": len(in_flight)}
    return inv
