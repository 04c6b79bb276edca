"""Profile w1 one by one (where the client CPU of a start goes): `python bench/profile_w1.py`.

Needs pyinstrument in the benchmark's virtualenv (`pip install pyinstrument`; not a
dependency). Writes `bench/profiles/w1-one-by-one.{txt,html}` (git-ignored) and prints the
flat list of the functions that take the most time of their own. asyncpg's protocol is
Cython, invisible to pyinstrument (its time shows as the event loop's own): for that, run
under py-spy instead, with `--no-profiler`:

    py-spy record --native -r 1000 -f raw -o bench/profiles/w1.raw -- \
        .venv/bin/python bench/profile_w1.py --no-profiler
    python bench/profile_w1.py --summarize bench/profiles/w1.raw

Both are wall-clock samplers: a thread that is runnable but waits for a CPU counts as busy.
On a loaded machine that skews the picture towards the system calls that wake another
process: `send` took a third of the samples while it cost 11 us of CPU (and 230 us of wall
time) per call. For the CPU itself, compare `time.process_time()` (what `bench/run.py`
reports), `bench/step_cpu.py` (the engine's Python per step, no database) and
`bench/start_bound.py` (what a round trip costs the client, answered at once or late).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import w1
from harness.counting import COUNTER
from harness.env import BenchEnv
from harness.report import Report

OUT = Path(__file__).resolve().parent / "profiles"


async def main(argv: list[str]) -> None:
    from pyinstrument import Profiler
    from pyinstrument.renderers import ConsoleRenderer

    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn")
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-profiler", action="store_true", help="run under py-spy")
    parser.add_argument("--summarize", help="a py-spy raw (collapsed) profile to summarize")
    args = parser.parse_args(argv)
    if args.summarize:
        summarize(Path(args.summarize))
        return
    COUNTER.install()
    embedded = None
    dsn = args.dsn
    if not dsn:
        from gendurable.embedded import EmbeddedPostgres

        embedded = EmbeddedPostgres()
        dsn = await embedded.astart()
    try:
        env = await BenchEnv.open(dsn, Report())
        if args.no_profiler:
            await w1.one_by_one(env, args.instances, args.concurrency)
            return
        profiler = Profiler(interval=0.0005, async_mode="disabled")
        profiler.start()
        await w1.one_by_one(env, args.instances, args.concurrency)
        profiler.stop()
    finally:
        if embedded is not None:
            await embedded.astop()
    OUT.mkdir(exist_ok=True)
    (OUT / "w1-one-by-one.txt").write_text(profiler.output_text(show_all=False))
    (OUT / "w1-one-by-one.html").write_text(profiler.output_html())
    flat = profiler.output(ConsoleRenderer(flat=True, show_all=True, color=False, unicode=True))
    print("\n".join(flat.splitlines()[:70]))


AREAS = (
    # (area, a frame that marks it), most specific first: a sample goes to the first area
    # one of whose frames is on its stack.
    ("start: Flow.start -> Client.start (encode, insert round trip)", "Client.start ("),
    ("claim: Scheduler.run_once (claim round trip, Claimed rows)", "Scheduler.run_once ("),
    ("commit: group commit flush (outcome_batch round trip)", "Committer._flush ("),
    ("step: Executor (context, step call, decide, telemetry)", "Executor._run_step ("),
    ("executor: chaining, Committer.apply, futures", "Executor._run ("),
    ("scheduler loop, wake-ups, task bookkeeping", "Scheduler.loop ("),
    ("listener: NOTIFY payloads", "Listener"),
    ("asyncpg protocol: reading results, completing futures", "asyncpg"),
)


def summarize(path: Path) -> None:
    """Share of py-spy samples per area of the engine (a stack counts once, innermost area)."""
    totals: dict[str, int] = {}
    native: dict[str, int] = {}
    all_samples = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        n = int(count)
        frames = stack.split(";")
        if frames[-1].startswith(("epoll_wait", "EpollSelector.select")):
            continue  # waiting, not working
        if any("Thread._bootstrap" in f for f in frames):
            continue  # other threads (the watchdog, the thread pool): idle in a lock wait
        if any("_find_and_load" in f or "Connection.prepare" in f for f in frames):
            continue  # imports and statement preparation: start-up, not the workload
        all_samples += n
        area = "event loop, asyncpg protocol and other (outside the areas above)"
        for name, marker in AREAS:
            if any(marker in f for f in frames):
                area = name
                break
        totals[area] = totals.get(area, 0) + n
        leaf = frames[-1].split(" (")[0]
        native[leaf] = native.get(leaf, 0) + n
    print(f"{all_samples} samples on CPU (idle waits and imports left out)")
    for area, n in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{100 * n / all_samples:5.1f}%  {area}")
    print("\nleaf functions:")
    for leaf, n in sorted(native.items(), key=lambda kv: -kv[1])[:25]:
        print(f"{100 * n / all_samples:5.1f}%  {leaf}")


if __name__ == "__main__":
    warnings.simplefilter("ignore", ResourceWarning)
    asyncio.run(main(sys.argv[1:]))
