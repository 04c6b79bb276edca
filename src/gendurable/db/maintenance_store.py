"""The maintenance loops' statements: the reaper, the collector and the node registry.

Every method runs one named statement (`sql/maintenance.sql`, `signals.sql`, `gc.sql`,
`rate_configs.sql`, `nodes.sql`) through the `Database`, with keyword arguments, and
returns typed rows (`db/rows.py`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from .pool import Database
from .rows import BucketSweep, ExpiredAwait, PrunedNode, RescuedClaim, TerminalSweep


class MaintenanceStore:
    """The statements of the background loops that keep one schema healthy."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the reaper (maintenance.sql, signals.sql) -------------------------------------------

    async def lease_rescue(self, *, now: datetime | None, limit: int) -> list[RescuedClaim]:
        """Return up to `limit` expired claims to their queue (or fail them when spent)."""
        return await self.db.rows(RescuedClaim, "lease_rescue", now=now, limit=limit)

    async def await_expire(self, *, now: datetime | None, limit: int) -> list[ExpiredAwait]:
        """Wake up to `limit` awaiting instances whose deadline passed."""
        return await self.db.rows(ExpiredAwait, "await_expire", now=now, limit=limit)

    # -- the collector (gc.sql, rate_configs.sql) --------------------------------------------

    async def rate_config_refresh(
        self,
        *,
        names: Sequence[str],
        allowed: Sequence[int],
        per_ms: Sequence[int],
        burst: Sequence[int],
        now: datetime | None,
    ) -> None:
        """Mark limits (parallel arrays) as still configured, writing again any that was
        removed."""
        await self.db.execute(
            "rate_config_refresh",
            names=list(names),
            allowed=list(allowed),
            per_ms=list(per_ms),
            burst=list(burst),
            now=now,
        )

    async def terminal_sweep(
        self,
        *,
        now: datetime | None,
        retention: timedelta,
        after_finished_at: datetime | None,
        after_id: int | None,
        limit: int,
    ) -> TerminalSweep:
        """Delete old terminal rows among the next `limit` after the cursor; counts and the
        next cursor."""
        swept = await self.db.row(
            TerminalSweep,
            "terminal_sweep",
            now=now,
            retention=retention,
            after_finished_at=after_finished_at,
            after_id=after_id,
            limit=limit,
        )
        assert swept is not None
        return swept

    async def bucket_sweep(
        self,
        *,
        now: datetime | None,
        after_name: str | None,
        after_partition: str | None,
        limit: int,
    ) -> BucketSweep:
        """Delete idle or unconfigured buckets among the next `limit` after the cursor;
        counts and the next cursor."""
        swept = await self.db.row(
            BucketSweep,
            "bucket_sweep",
            now=now,
            after_name=after_name,
            after_partition=after_partition,
            limit=limit,
        )
        assert swept is not None
        return swept

    async def rate_config_sweep(self, *, now: datetime | None, ttl: timedelta, limit: int) -> int:
        """Delete up to `limit` configs not refreshed for `ttl`; how many."""
        return len(await self.db.column("rate_config_sweep", now=now, ttl=ttl, limit=limit))

    # -- the node registry (nodes.sql) -------------------------------------------------------

    async def node_register(
        self,
        *,
        id: str,
        name: str,
        host: str,
        pid: int,
        queues: bytes,
        workflows: bytes,
        version: str,
        heartbeat: timedelta,
        ttl: timedelta,
        now: datetime | None,
    ) -> None:
        """Record (or re-record) a running engine; it counts as live for `ttl`."""
        await self.db.execute(
            "node_register",
            id=id,
            name=name,
            host=host,
            pid=pid,
            schema=self.db.schema,
            queues=queues,
            workflows=workflows,
            version=version,
            heartbeat=heartbeat,
            ttl=ttl,
            now=now,
        )

    async def node_beat(self, *, id: str, ttl: timedelta, now: datetime | None) -> bool:
        """Refresh a node for another `ttl`; False when its row is gone (pruned)."""
        return await self.db.guarded("node_beat", id=id, ttl=ttl, now=now)

    async def node_prune(self, *, now: datetime | None) -> list[PrunedNode]:
        """Delete the nodes past their expiry; the rows deleted."""
        return await self.db.rows(PrunedNode, "node_prune", now=now)

    async def node_remove(self, *, id: str) -> bool:
        """Delete a node's row (at stop); False when it was already gone."""
        return await self.db.guarded("node_remove", id=id)
