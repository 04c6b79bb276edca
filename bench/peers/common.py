"""What the peers' adapters share: arguments, and the harness's stdlib-only meters and report.

Run with the peers' virtualenv (`bench/.peers-venv/bin/python bench/peers/<peer>_peer.py`);
gendurable is not installed there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.meters import CpuWindow, percentile
from harness.report import emit

__all__ = ["CpuWindow", "arguments", "emit", "percentile"]


def arguments(workloads: tuple[str, ...]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=workloads)
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--postmaster", type=int)
    parser.add_argument("--instances", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--signals", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=64)
    return parser.parse_args()
