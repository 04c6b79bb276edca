"""Two worker processes never run steps of one concurrency key at the same time.

Guarantee 6 across processes: each `Serial` step appends `enter exit pid` (monotonic time,
one clock for every process of the machine) to a file per concurrency key; no two runs of
one key may overlap, whichever process ran them. Run over several rounds on the same
workers.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
from e2e_app import Serial
from e2e_support import Marks, SpawnWorker

from gendurable.testing import MakeEngine

pytestmark = pytest.mark.race

# More keys than one worker has slots (4): both workers always have keys to run.
KEYS = ["A", "B", "C", "D", "E", "F"]
ROUNDS = 4
PER_ROUND = 36


def runs_of(folder: Path, key: str) -> list[tuple[float, float, int]]:
    path = folder / f"serial-{key}.log"
    if not path.exists():
        return []
    runs = []
    for line in path.read_text().splitlines():
        entered, left, pid = line.split()
        runs.append((float(entered), float(left), int(pid)))
    return runs


async def test_concurrency_keys_two_worker_processes_never_overlap_on_a_key(
    make_engine: MakeEngine, spawn_worker: SpawnWorker, marks: Marks
) -> None:
    workers = [await spawn_worker(E2E_POLL_INTERVAL="0.2") for _ in range(2)]
    client = await make_engine(workflows=[Serial], queues=None)
    rng = random.Random(6)

    for round in range(ROUNDS):
        handles = await Serial.start_many(
            [
                Serial.new(
                    key=f"r{round}-{i}",
                    state=Serial.State(ckey=KEYS[i % len(KEYS)], pause=rng.uniform(0, 0.005)),
                    concurrency_key=KEYS[i % len(KEYS)],
                )
                for i in range(PER_ROUND)
            ],
            engine=client,
        )
        for handle in handles:
            await Serial.result(handle.id, timeout=60, engine=client)

    pids = {w.pid for w in workers}
    ran_on: set[int] = set()
    for key in KEYS:
        runs = sorted(runs_of(marks.folder, key))
        assert len(runs) == ROUNDS * PER_ROUND // len(KEYS) * 2, key
        overlapping = [(a, b) for a, b in itertools.pairwise(runs) if b[0] < a[1]]
        assert overlapping == [], f"runs of key {key} overlapped across processes"
        ran_on |= {pid for _, _, pid in runs}
    assert ran_on == pids, "one worker ran everything: the processes did not compete"
