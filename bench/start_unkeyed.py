"""w1 one by one with unkeyed starts: `python bench/start_unkeyed.py --dsn DSN [--rounds N]`.

`bench/run.py w1` starts each instance with a key of its own (`i<n>`), so it runs the insert
that deduplicates keys. This runs the same workload with starts that carry no key (the plain
insert since `instance_insert_unkeyed`), and, in the same round, the keyed one, each with
floor(8) measured around it; one JSON line per figure (the `w1` line of `run.py` with
`, unkeyed` in its variant). For an A/B, run it with each side's interpreter against one
server: `bench/.ab-venvs/<sha>/bin/python bench/start_unkeyed.py --dsn DSN` (made by
`run.py --against`). The engine is the one the running interpreter imports.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.env import BenchEnv
from harness.report import Report
from harness.w1 import one_by_one


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    env = await BenchEnv.open(args.dsn, Report())
    for round in range(args.rounds):
        for keyed in (False, True):
            env.report = Report()
            async with env.measured():
                line = await one_by_one(env, args.instances, args.concurrency, keyed=keyed)
                line["round"] = round


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
