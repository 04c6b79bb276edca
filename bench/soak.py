"""The chaos run, for longer: `python bench/soak.py --seconds N --instances N`.

Runs batches of the chaos run of the suite (`tests/e2e/test_chaos.py`) on a private embedded
PostgreSQL until `--seconds` have passed: each batch starts about `--instances` instances of
`tests/e2e/chaos_app.py` on a fresh schema, with 3 worker processes that are SIGKILLed at
random every 1-3 s and replaced, now and then stopped around their lease, and the server
crashed once (down past the lease, then recovery). It prints JSON lines: the PostgreSQL
floor measured in the same run, each batch's stats and every invariant with its counts, and
a summary per invariant over all batches. The exit status is 1 when any invariant broke in
any batch (the lines say where; the batch's work directory, with the side-effect log and the
workers' stderr, is kept).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "e2e"))
sys.path.insert(0, str(HERE))

from chaos_run import ChaosConfig, ChaosServer, run_batch  # noqa: E402
from harness.floor import floor  # noqa: E402

ROOTS_PER_SECOND = 2000 / 35
"""Instances started per second of the submission window (the suite's pace)."""


def emit(**fields: Any) -> None:
    """Print one JSON line."""
    print(json.dumps(fields), flush=True)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=600.0, help="keep starting batches")
    parser.add_argument("--instances", type=int, default=2000, help="instances per batch")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first batch")
    parser.add_argument("--workdir", type=Path, default=None, help="keep logs here")
    parser.add_argument("--no-freeze", action="store_true", help="SIGKILL only, no SIGSTOP")
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="gendurable-soak-"))
    submit = max(5.0, args.instances / ROOTS_PER_SECOND)
    server = ChaosServer()
    await server.start()
    totals: dict[str, dict[str, Any]] = defaultdict(lambda: defaultdict(int))
    broken: dict[str, int] = defaultdict(int)
    batches = 0
    began = time.monotonic()
    try:
        base = await floor(server.dsn, connections=8)
        emit(bench="floor", what="single-row UPDATE tx/s, 8 connections", per_s=round(base))
        while time.monotonic() - began < args.seconds:
            config = ChaosConfig(
                instances=args.instances,
                submit_seconds=submit,
                pack_timeout=submit + 60,
                finish_timeout=submit + 120,
                freeze_interval=None if args.no_freeze else (4.0, 7.0),
                seed=None if args.seed is None else args.seed + batches,
            )
            folder = workdir / f"batch-{batches}"
            report = await run_batch(server, config, folder)
            # Paced by the submission window, not a throughput figure: shown for context.
            per_s = report.stats["log_records"] / 2 / max(report.stats["finish_seconds"], 1e-9)
            emit(bench="soak", batch=batches, **report.stats, step_executions_per_s=round(per_s))
            for inv in report.invariants:
                emit(batch=batches, **inv.as_json())
                for name, value in inv.counts.items():
                    if name.startswith(("worst", "allowance")):
                        totals[inv.name][name] = max(totals[inv.name][name], value)
                    elif isinstance(value, int | float):
                        totals[inv.name][name] += value
                totals[inv.name]["problems"] += inv.problem_count
                broken[inv.name] += not inv.ok
            if report.ok:
                shutil.rmtree(folder, ignore_errors=True)
            batches += 1
    finally:
        await server.stop()
    for name, counts in totals.items():
        emit(summary=name, ok=broken[name] == 0, batches=batches, broken_in=broken[name], **counts)
    failed = any(broken.values())
    emit(summary="soak", ok=not failed, batches=batches, seconds=round(time.monotonic() - began))
    if not failed and args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    warnings.simplefilter("ignore", ResourceWarning)
    sys.exit(asyncio.run(main(sys.argv[1:])))
