"""Nodes: every running engine records itself in `<schema>.nodes`, so others can see it.

A node's row says what it serves: its queues with their concurrency, and for each workflow
its default queue, its steps, the signal names each step awaits and the types (as JSON
Schema) of the signal payloads and the State (`describe_workflows`). The row is written at
start, refreshed by a heartbeat, and deleted at stop. A node that dies without stopping
stops refreshing: past `expires_at` (`TTL_BEATS` heartbeats after it was last seen) it no
longer counts, and the next heartbeat of any node deletes it.

Readers: `blocked_by` (a due row that no live node can run says so), `gendurable status`
(the live nodes), `gendurable signal` and `start` and the dashboard's signal form (the
signal names and the payload and State types live nodes declare, `signal_check`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec

from ..clock import Clock
from ..db.maintenance_store import MaintenanceStore
from ..json_schema import describe_type
from ..spec import WorkflowSpec
from ..telemetry import Telemetry
from ..version import __version__
from .loop import every, observed

TTL_BEATS = 3
"""Heartbeats a node may miss before it counts as dead."""

_log = logging.getLogger("gendurable.engine")


def node_id(engine: str) -> str:
    """`<engine>@<host>-<pid>-<unique>`: unique per engine start, readable in `status`."""
    return f"{engine}@{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def describe_workflows(specs: Mapping[str, WorkflowSpec]) -> dict[str, Any]:
    """What a node records about its workflows, for callers without their code.

    Per workflow: its queue, priority and version; each step's awaited signal names; each
    signal's payload type and the State's (`json_schema.describe_type`: a readable name and
    its JSON Schema, or null when untyped); how an instance starts (`start`: the step,
    its attempts and the rate limit its first step takes); and what an entry into each step
    takes (`entry`: its attempts and rate limit, for a rewind).
    """
    return {name: _describe(spec) for name, spec in specs.items()}


def _describe(spec: WorkflowSpec) -> dict[str, Any]:
    first = spec.steps[spec.start_step]
    return {
        "queue": spec.queue,
        "priority": spec.priority,
        "version": spec.version,
        "steps": {
            step.name: list(step.awaits.names) if step.awaits else []
            for step in spec.steps.values()
        },
        "signals": {name: describe_type(spec.signal_type(name)[1]) for name in spec.signal_names()},
        "state": describe_type(spec.state_type),
        "start": {
            "step": first.name,
            "max_attempts": spec.max_attempts(first.name),
            "rate_limit": first.rate_limit,
            "weight": first.weight,
            "partitioned": first.partition is not None,
        },
        "entry": {
            step.name: {
                "max_attempts": spec.max_attempts(step.name),
                "rate_limit": step.rate_limit,
                "weight": step.weight,
                "partitioned": step.partition is not None,
            }
            for step in spec.steps.values()
        },
    }


def unserved(specs: Mapping[str, WorkflowSpec], queues: Mapping[str, int]) -> list[WorkflowSpec]:
    """The workflows whose queue is not among `queues` (none for a client-only engine)."""
    if not queues:
        return []
    return [spec for spec in specs.values() if spec.queue not in queues]


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What one `run_once()` did: whether this node's row was there, and whom it pruned."""

    refreshed: bool
    pruned: tuple[str, ...]

    @property
    def rows(self) -> int:
        """Rows it pruned, and this node's when it had to be recorded again (a refresh of a
        row that is there is routine, not counted)."""
        return len(self.pruned) + (not self.refreshed)


class Nodes:
    """Keeps one engine's row in `<schema>.nodes` and prunes the rows of dead nodes."""

    def __init__(
        self,
        store: MaintenanceStore,
        clock: Clock,
        *,
        engine_name: str,
        queues: Mapping[str, int],
        specs: Mapping[str, WorkflowSpec],
        heartbeat: timedelta,
        telemetry: Telemetry | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.telemetry = telemetry or Telemetry()
        self.engine_name = engine_name
        self.id = node_id(engine_name)
        self.queues = dict(queues)
        self.specs = specs
        self.heartbeat = heartbeat
        self.ttl = heartbeat * TTL_BEATS
        self._queues_json = msgspec.json.encode(self.queues)
        self._workflows_json = msgspec.json.encode(describe_workflows(specs))

    async def register(self) -> None:
        """Record this node (at start), warning about workflows whose queue it does not run.

        A workflow whose queue no engine runs sits `available` forever: an engine with
        queues says so once, at start, for each workflow it was given and does not serve.
        """
        for spec in unserved(self.specs, self.queues):
            _log.warning(
                "engine %r was given workflow %r, whose queue %r it does not run "
                "(its queues: %s); its instances wait for an engine that runs %r",
                self.engine_name,
                spec.name,
                spec.queue,
                ", ".join(sorted(self.queues)),
                spec.queue,
            )
        await self._write()

    async def _write(self) -> None:
        await self.store.node_register(
            id=self.id,
            name=self.engine_name,
            host=socket.gethostname(),
            pid=os.getpid(),
            queues=self._queues_json,
            workflows=self._workflows_json,
            version=__version__,
            heartbeat=self.heartbeat,
            ttl=self.ttl,
            now=self.clock.now(),
        )

    async def run_once(self) -> NodeReport:
        """Refresh this node (recording it again if it was pruned) and prune dead nodes.

        Reported as the `maintenance.run` (or `.exception`) of task `nodes`.
        """
        with observed(self.telemetry, "nodes") as run:
            report = await self._beat()
            run.rows = report.rows
            return report

    async def _beat(self) -> NodeReport:
        refreshed = await self.store.node_beat(id=self.id, ttl=self.ttl, now=self.clock.now())
        if not refreshed:
            await self._write()
        pruned = await self.store.node_prune(now=self.clock.now())
        for row in pruned:
            _log.info(
                "pruned node %s (%s pid %s), last seen %s",
                row.id,
                row.host,
                row.pid,
                row.last_seen,
            )
        return NodeReport(refreshed, tuple(row.id for row in pruned))

    async def loop(self) -> None:
        """`run_once()` every heartbeat, from one heartbeat after `register()`, until cancelled."""
        await asyncio.sleep(self.heartbeat.total_seconds())
        await every(self.heartbeat, self.run_once, "node heartbeat")

    async def remove(self, grace: float) -> None:
        """Delete this node's row, giving up after `grace` seconds (the row then expires)."""
        with contextlib.suppress(Exception):
            async with asyncio.timeout(grace):
                await self.store.node_remove(id=self.id)
