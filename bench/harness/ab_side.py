"""One side of an A/B run: one workload, on one engine, in a process of its own.

`harness.ab` runs it as `python -m harness.ab_side SPEC` (from `bench/`) with the
interpreter of the side's virtualenv: the working tree's, or the one holding the engine of the
commit compared against. The harness is this working tree's either way, so it keeps to
gendurable's public API where it can; the few private seams it uses (the `Store` it counts
statements on, the claim the `scale` probe times) are reached only inside the workload, so
an older engine that lacks one gets that workload skipped, with the reason, not a crash.

It prints one JSON line naming the gendurable it imported, then the workload's lines as the
harness makes them (no floor: the parent measures it next to each run), or one `skipped` line.
"""

from __future__ import annotations

import asyncio
import json
import sys
import traceback
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

from .report import Report, emit


async def _w1_one(env: Any, instances: int, concurrency: int) -> None:
    from . import w1

    await w1.one_by_one(env, instances, concurrency)


async def _w1_bulk(env: Any, instances: int, concurrency: int) -> None:
    from . import w1

    await w1.bulk(env, instances, concurrency)


async def _w1_workers(env: Any, workers: int, instances: int, concurrency: int) -> None:
    from . import workers as procs

    await procs.run(env, workers, instances, concurrency)


async def _w2(env: Any, jobs: int, concurrency: int) -> None:
    from . import w2

    await w2.run(env, jobs, concurrency)


async def _w3(env: Any, signals: int, concurrency: int) -> None:
    from . import w3

    await w3.run(env, signals, concurrency)


async def _scale(env: Any, rows: int, concurrency: int) -> None:
    from . import scale

    await scale.run(env, [rows], concurrency)


async def _idle(env: Any, seconds: float) -> None:
    from . import idle

    await idle.run(env, seconds)


WORKLOADS: dict[str, Callable[..., Awaitable[None]]] = {
    "w1.one": _w1_one,
    "w1.bulk": _w1_bulk,
    "w1.workers": _w1_workers,
    "w2": _w2,
    "w3": _w3,
    "scale": _scale,
    "idle": _idle,
}


def _reason(exc: BaseException) -> str:
    """The error and the harness or gendurable line it came from, on one line."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}{where}"


async def child(spec: dict[str, Any]) -> None:
    import gendurable

    emit(
        bench="side",
        gendurable_file=gendurable.__file__,
        gendurable_version=getattr(gendurable, "__version__", None),
        python=sys.version.split()[0],
    )
    try:
        # Inside the try: the counter and the environment reach into gendurable, and an
        # engine too old for them makes this workload a skipped one, not a crash.
        from .counting import COUNTER
        from .env import BenchEnv

        COUNTER.install()
        env = await BenchEnv.open(spec["dsn"], Report())
        await WORKLOADS[spec["workload"]](env, **spec["params"])
    except Exception as exc:
        emit(bench="side", skipped=_reason(exc))


if __name__ == "__main__":
    warnings.simplefilter("ignore", ResourceWarning)
    asyncio.run(child(json.loads(sys.argv[1])))
