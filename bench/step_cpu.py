"""The engine's own CPU per step, with no database: `python bench/step_cpu.py`.

Runs the w1 workflow (`a -> b -> c -> done`) through the executor, the committer and the
group commit exactly as the engine does, two instances at a time (as one by one, where a
commit carries one or two outcomes), with a store whose group commit answers at once that
every outcome committed. What it measures is the Python a step costs the engine (context,
step call, decide, telemetry, the committer's batch), without the driver, the socket or
the server: compare two trees with `PYTHONPATH=<tree>/src python bench/step_cpu.py`.
Prints one JSON line per round and the median.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.flows import ThreeSteps

import gendurable
from gendurable.clock import SystemClock
from gendurable.engine.claimed import Claimed
from gendurable.engine.committer import Committer
from gendurable.engine.executor import Executor
from gendurable.telemetry import Telemetry


class CommitsAtOnce:
    """A store whose group commit says every outcome committed, after one loop turn."""

    async def outcome_batch(
        self,
        *,
        outcomes: bytes,
        states: Sequence[bytes | None],
        results: Sequence[bytes | None],
        errors: Sequence[bytes | None],
        now: Any,
    ) -> tuple[dict[int, Any], set[int]]:
        await asyncio.sleep(0)
        return {item["id"]: None for item in msgspec.json.decode(outcomes)}, set()

    async def outcome_plain(
        self, *, ids: Sequence[int], **columns: Any
    ) -> tuple[dict[int, Any], set[int]]:
        """The lean group commit (the common case: this workflow's every batch)."""
        await asyncio.sleep(0)
        return dict.fromkeys(ids), set()


async def measure(instances: int, rounds: int, parallel: int) -> list[float]:
    spec = ThreeSteps.spec
    telemetry = Telemetry()
    finished = 0

    def on_stop(event: Any, measurements: Any, meta: Any) -> None:  # as the benchmarks count
        nonlocal finished
        finished += meta["decision"] == "Finish"

    telemetry.attach("bench", on_stop, [("step", "stop")])
    leases = {spec.name: timedelta(seconds=30)}
    committer = Committer(
        CommitsAtOnce(),  # type: ignore[arg-type]
        SystemClock(),
        telemetry,
        leases,
        {spec.name: spec.version},
    )
    executor = Executor({spec.name: spec}, {spec.name: ThreeSteps()}, committer, telemetry, None)
    state = msgspec.json.encode(ThreeSteps.State())
    slots = asyncio.Semaphore(parallel)

    async def run(id: int) -> None:
        claim = Claimed(
            id, spec.name, "a", state, 0, 0, f"k{id}", "bench", False, 0, "bench#1",
            state_version=spec.version,
        )  # fmt: skip
        async with slots:
            await executor.run(claim)

    per_step = []
    for r in range(rounds + 1):  # the first round warms up
        started = time.process_time()
        await asyncio.gather(*(run(r * instances + i) for i in range(instances)))
        if r:
            per_step.append((time.process_time() - started) * 1e6 / (3 * instances))
    assert finished == (rounds + 1) * instances
    return per_step


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=2)
    args = parser.parse_args()
    rounds = asyncio.run(measure(args.instances, args.rounds, args.parallel))
    for n, us in enumerate(rounds, 1):
        print(json.dumps({"bench": "step_cpu", "round": n, "us_per_step": round(us, 1)}))
    print(
        json.dumps(
            {
                "bench": "step_cpu",
                "gendurable": str(Path(gendurable.__file__).parent),
                "median_us_per_step": round(statistics.median(rounds), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
