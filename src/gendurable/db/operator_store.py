"""What operators' tools run: the deploy check's reads, the command line's and the
dashboard's reads, and the one repair (`gendurable retry`).

The tools also cancel, signal and look instances up as the engine does: `OperatorStore` is
an `EngineStore` with these statements on top (`sql/deploy_check.sql`, `inspect.sql`,
`dashboard.sql`, `nodes.sql`, `repair.sql`). None of the reads locks or writes a row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from .engine_store import EngineStore
from .rows import (
    AwaitedName,
    ChildSummary,
    CountedChild,
    EndedPerMinute,
    InstanceSummary,
    KeyedInstance,
    LiveNode,
    LiveQueue,
    LiveStateVersion,
    LiveStep,
    NodeSummary,
    OldestDue,
    PendingSignal,
    RetryResult,
    StatusCount,
    StoredState,
)


class OperatorStore(EngineStore):
    """The engine's statements, and the reads and repairs of operators' tools."""

    # -- the deploy check (deploy_check.sql) -----------------------------------------------

    async def check_live_steps(self) -> list[LiveStep]:
        """Live rows by (workflow, step)."""
        return await self.db.rows(LiveStep, "check_live_steps")

    async def check_live_queues(self) -> list[LiveQueue]:
        """Live rows by (workflow, queue)."""
        return await self.db.rows(LiveQueue, "check_live_queues")

    async def check_awaited_names(self) -> list[AwaitedName]:
        """Parked rows by (workflow, step, awaited signal name)."""
        return await self.db.rows(AwaitedName, "check_awaited_names")

    async def check_state_versions(self) -> list[LiveStateVersion]:
        """Live rows by (workflow, state version)."""
        return await self.db.rows(LiveStateVersion, "check_state_versions")

    async def check_states_oldest(self, *, workflow: str, limit: int) -> list[StoredState]:
        """The states of the `limit` live rows of `workflow` updated longest ago."""
        return await self.db.rows(
            StoredState, "check_states_oldest", workflow=workflow, limit=limit
        )

    async def check_states_page(
        self, *, workflow: str, after_id: int, limit: int
    ) -> list[StoredState]:
        """The states of up to `limit` live rows of `workflow` with ids above `after_id`."""
        return await self.db.rows(
            StoredState, "check_states_page", workflow=workflow, after_id=after_id, limit=limit
        )

    # -- the command line (inspect.sql, nodes.sql, repair.sql) -----------------------------

    async def nodes_live(self, *, now: datetime | None) -> list[LiveNode]:
        """The nodes alive at `now`."""
        return await self.db.rows(LiveNode, "nodes_live", now=now)

    async def status_counts(self, *, now: datetime | None) -> list[StatusCount]:
        """Counts by workflow x status x queue, with the oldest due `run_at` of each group."""
        return await self.db.rows(StatusCount, "status_counts", now=now)

    async def instances_list(
        self,
        *,
        workflow: str | None,
        statuses: Sequence[str] | None,
        queue: str | None,
        key_prefix: str | None,
        before_id: int | None,
        limit: int,
    ) -> list[InstanceSummary]:
        """A page of instances, newest first, with ids below `before_id`; each filter is
        optional (None: any)."""
        return await self.db.rows(
            InstanceSummary,
            "instances_list",
            workflow=workflow,
            statuses=None if statuses is None else list(statuses),
            queue=queue,
            key_prefix=key_prefix,
            before_id=before_id,
            limit=limit,
        )

    async def instance_workflows(self) -> list[str]:
        """Every workflow name some instance has (reads the whole table)."""
        return await self.db.column("instance_workflows")

    async def instances_with_key(self, *, key: str) -> list[KeyedInstance]:
        """Per workflow, the live (else latest) instance holding `key`."""
        return await self.db.rows(KeyedInstance, "instances_with_key", key=key)

    async def children_list(self, *, parent_id: int, limit: int) -> list[CountedChild]:
        """The first `limit` children of an instance, each with their `total` count."""
        return await self.db.rows(CountedChild, "children_list", parent_id=parent_id, limit=limit)

    async def instance_retry(self, *, id: int, now: datetime | None) -> RetryResult:
        """Put a failed instance back on its failing step (see the statement for refusals)."""
        try:
            row = await self.db.row(RetryResult, "instance_retry", id=id, now=now)
        except asyncpg.UniqueViolationError:
            # A start took the key after this statement's snapshot (the unique index waited
            # for it to commit); run again, so the statement sees and names the holder.
            row = await self.db.row(RetryResult, "instance_retry", id=id, now=now)
        assert row is not None
        return row

    # -- the dashboard (dashboard.sql) -------------------------------------------------------

    async def throughput_by_minute(
        self, *, now: datetime | None, minutes: int
    ) -> list[EndedPerMinute]:
        """Instances ended per (minute, status) over the last `minutes` minutes."""
        return await self.db.rows(EndedPerMinute, "throughput_by_minute", now=now, minutes=minutes)

    async def queue_oldest_due(
        self, *, queues: Sequence[str], now: datetime | None
    ) -> list[OldestDue]:
        """Per queue with due rows: the one that has waited longest, and for how long."""
        return await self.db.rows(OldestDue, "queue_oldest_due", queues=list(queues), now=now)

    async def children_page(
        self, *, parent_id: int, after_id: int | None, limit: int
    ) -> list[ChildSummary]:
        """Up to `limit` children of an instance with ids above `after_id`, in spawn order."""
        return await self.db.rows(
            ChildSummary, "children_page", parent_id=parent_id, after_id=after_id, limit=limit
        )

    async def inbox_page(
        self, *, instance_id: int, after_id: int | None, limit: int
    ) -> list[PendingSignal]:
        """Up to `limit` pending signals of an instance with ids above `after_id`."""
        return await self.db.rows(
            PendingSignal, "inbox_page", instance_id=instance_id, after_id=after_id, limit=limit
        )

    async def nodes_page(
        self, *, now: datetime | None, after_id: str | None, limit: int
    ) -> list[NodeSummary]:
        """Up to `limit` live nodes with ids above `after_id`, in id order."""
        return await self.db.rows(
            NodeSummary, "nodes_page", now=now, after_id=after_id, limit=limit
        )
