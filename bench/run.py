"""Benchmarks of gendurable against a PostgreSQL floor measured in the same run.

    python bench/run.py COMMAND [--dsn DSN] [--with-peers]
    python bench/run.py COMMAND --against REF [--rounds N] [--no-record]

COMMAND is one of `floor`, `w1` (`--bulk`, `--workers N`), `w2`, `w3`, `scale`, `idle` or
`all`, or `churn` (not part of `all`: 1,000,000 instances through start, 3 steps and GC,
a line every `--every` finished; see `harness/churn.py`). Without `--dsn` (or
`$GENDURABLE_DSN`) an embedded PostgreSQL is started for the run.
Every command first measures the floor: single-row `UPDATE ... WHERE id = $1` transactions
from 1 and 8 asyncpg connections, then floor(8) again for 2 s just before and just after
each workload. Each figure is printed as one JSON line on stdout with its ratio to the mean
of those two (the machine's speed in the same minutes) and the drift between them; a
Markdown table of the run closes it on stderr. `--with-peers` also runs
the same workloads on DBOS and PgQueuer from `bench/.peers-venv` (see `bench/peers/setup.sh`).
`--against REF` is the regression gate: the same workloads for the engine at REF (a commit
or tag, installed into `bench/.ab-venvs/<sha>`) and the working tree's, alternating round by
round with the floor, each figure printed for both with their ratio (see `harness/ab.py`).
Timings never go in tests: they live here.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ab, churn, idle, peers, scale, w1, w2, w3, workers
from harness.counting import COUNTER
from harness.env import BenchEnv
from harness.floor import floor
from harness.report import Report, emit

COMMANDS = ("floor", "w1", "w2", "w3", "scale", "idle", "all", "churn")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--dsn", default=os.environ.get("GENDURABLE_DSN"))
    parser.add_argument("--with-peers", action="store_true", help="also run DBOS, PgQueuer")
    parser.add_argument("--bulk", action="store_true", help="w1: one start_many first")
    parser.add_argument("--workers", type=int, nargs="*", help="w1: N worker processes")
    parser.add_argument(
        "--instances", type=int, help="w1 (default 2,000; bulk 10,000), churn (1,000,000)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--every", type=int, default=100_000, help="churn: finished a line")
    parser.add_argument("--backlog", type=int, default=20_000, help="churn: most unfinished")
    parser.add_argument("--batch", type=int, default=1000, help="churn: per start_many")
    parser.add_argument(
        "--gc-retention", type=float, default=5.0, help="churn: seconds terminal rows stay"
    )
    parser.add_argument("--gc-interval", type=float, default=1.0, help="churn: seconds")
    parser.add_argument("--jobs", type=int, default=10_000, help="w2")
    parser.add_argument("--signals", type=int, default=200, help="w3")
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 1_000_000], help="scale")
    parser.add_argument("--seconds", type=float, default=10.0, help="idle")
    parser.add_argument("--against", metavar="REF", help="A/B: the engine at REF against this tree")
    parser.add_argument("--rounds", type=int, default=3, help="A/B: rounds (default 3)")
    parser.add_argument("--no-record", action="store_true", help="A/B: not to bench/results/")
    return parser.parse_args(argv)


async def run_w1(env: BenchEnv, args: argparse.Namespace, *, everything: bool) -> None:
    one_n = args.instances or 2000
    bulk_n = args.instances or 10_000
    if args.workers and not everything:
        for n in args.workers:
            async with env.measured():
                await workers.run(env, n, one_n, max(args.concurrency))
        return
    if not args.bulk or everything:
        for c in args.concurrency:
            async with env.measured():
                await w1.one_by_one(env, one_n, c)
    if args.bulk or everything:
        for c in args.concurrency:
            async with env.measured():
                await w1.bulk(env, bulk_n, c)
    if everything:
        for n in args.workers or [1, 2, 4]:
            async with env.measured():
                await workers.run(env, n, one_n, max(args.concurrency))
    if args.with_peers:
        for c in args.concurrency:
            async with env.measured():
                await peers.run(env, "dbos", "w1", instances=one_n, concurrency=c)


async def run_w2(env: BenchEnv, args: argparse.Namespace) -> None:
    async with env.measured():
        await w2.run(env, args.jobs, max(args.concurrency))
    if args.with_peers:
        async with env.measured():
            await peers.run(
                env, "pgqueuer", "w2", jobs=args.jobs, concurrency=max(args.concurrency)
            )
        async with env.measured():
            await peers.run(env, "dbos", "w2", jobs=args.jobs, concurrency=max(args.concurrency))


async def run_w3(env: BenchEnv, args: argparse.Namespace) -> None:
    async with env.measured():
        await w3.run(env, args.signals, max(args.concurrency))
    if args.with_peers:
        async with env.measured():
            await peers.run(
                env, "dbos", "w3", signals=args.signals, concurrency=max(args.concurrency)
            )


async def bench(dsn: str, args: argparse.Namespace) -> Report:
    report = Report()
    env = await BenchEnv.open(dsn, report)
    emit(
        bench="machine",
        system=platform.platform(),
        python=platform.python_version(),
        cpus=os.cpu_count(),
        server=f"PostgreSQL {env.server_version}",
        server_local=env.postmaster is not None,
        command=" ".join(["python", "bench/run.py", *sys.argv[1:]]),
    )
    report.set_floors({n: await floor(dsn, n) for n in (1, 8)})
    everything = args.command == "all"
    if args.command in ("w1", "all"):
        await run_w1(env, args, everything=everything)
    if args.command in ("w2", "all"):
        await run_w2(env, args)
    if args.command in ("w3", "all"):
        await run_w3(env, args)
    if args.command in ("scale", "all"):
        await scale.run(env, args.rows, max(args.concurrency))
    if args.command in ("idle", "all"):
        await idle.run(env, args.seconds)
    if args.command == "churn":
        await churn.run(
            env,
            instances=args.instances or 1_000_000,
            every=args.every,
            concurrency=max(args.concurrency),
            backlog=args.backlog,
            batch=args.batch,
            gc_retention=args.gc_retention,
            gc_interval=args.gc_interval,
        )
    if args.command != "floor":
        report.floor_again({n: await floor(dsn, n) for n in (1, 8)})
    return report


async def main(argv: list[str]) -> None:
    args = parse(argv)
    if args.command == "churn":
        problem = churn.check(args)
        if problem:
            raise SystemExit(f"bench/run.py: {problem}")
    against: tuple[ab.Side, ab.Side] | None = None
    if args.against:
        try:
            ab.check(args)
            against = ab.sides(args.against)
        except ab.AbError as exc:
            raise SystemExit(f"bench/run.py: {exc}") from None
    COUNTER.install()
    embedded: Any = None
    dsn = args.dsn
    if not dsn:
        from gendurable.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres()
        await embedded.astart()
        dsn = embedded.dsn
    try:
        if against is not None:
            env = await BenchEnv.open(dsn, Report())
            try:
                await ab.run(dsn, args, *against, server_local=env.postmaster is not None)
            except ab.AbError as exc:
                raise SystemExit(f"bench/run.py: {exc}") from None
            return
        report = await bench(dsn, args)
    finally:
        if embedded is not None:
            await embedded.astop()
    if args.command != "churn":  # churn printed its own table of windows
        report.print_summary()


if __name__ == "__main__":
    warnings.simplefilter("ignore", ResourceWarning)
    if len(sys.argv) > 1 and sys.argv[1] == workers.CHILD:
        asyncio.run(workers.child(sys.argv[2:]))
    else:
        asyncio.run(main(sys.argv[1:]))
