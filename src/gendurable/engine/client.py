"""The client side of an engine: start, start_many, get, result, cancel.

Every input is validated and encoded before the one statement that writes it runs, so a bad
state is refused with nothing written.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal

from ..blocked import WAITING_STATUSES, BlockedBy
from ..clock import Clock
from ..db.store import Store
from ..errors import DuplicateKey, NoTarget, ResultTimeout, ValidationError, WorkflowFailed
from ..outcome import ChildEntry
from ..records import ALL_STATUSES, LIVE_STATUSES, TERMINAL_STATUSES, Handle, InstanceInfo
from ..spec import WorkflowSpec
from .codec import decode_json, encode_json, encode_typed
from .notifier import Notifier


class Client:
    """Starts and inspects instances of the workflows in `specs`."""

    def __init__(
        self,
        specs: Mapping[str, WorkflowSpec],
        store: Store,
        clock: Clock,
        notifier: Notifier,
    ) -> None:
        self.specs = specs
        self.store = store
        self.clock = clock
        self.notifier = notifier

    def spec(self, workflow: str) -> WorkflowSpec:
        """The spec of a served workflow."""
        return self.specs[workflow]

    def encode_state(self, spec: WorkflowSpec, state: Any) -> bytes:
        """Validate and encode a start state; a State with all defaults may be omitted."""
        if state is None and spec.state_type is not None:
            state = {}
        return encode_typed(state, spec.state_type, spec.state_decoder, f"{spec.name} state")

    async def start(
        self,
        workflow: str,
        *,
        key: str | None = None,
        state: Any = None,
        queue: str | None = None,
        priority: int | None = None,
        delay: timedelta | None = None,
        run_at: datetime | None = None,
        concurrency_key: str | None = None,
        scope: Iterable[str] | None = None,
        on_conflict: Literal["return", "raise"] = "return",
    ) -> Handle:
        """Start one instance (see `Flow.start`)."""
        spec = self.spec(workflow)
        _check_timing(delay, run_at)
        _check_key(key)
        if on_conflict not in ("return", "raise"):
            raise ValidationError(f"on_conflict must be 'return' or 'raise', got {on_conflict!r}")
        data = self.encode_state(spec, state)
        row = await self.store.instance_insert(
            workflow=workflow,
            queue=queue or spec.queue,
            step=spec.start_step,
            state=data,
            max_attempts=spec.retry.max_attempts,
            priority=spec.priority if priority is None else _priority(priority),
            run_at=run_at,
            delay=delay,
            key=key,
            scope=_scope(scope),
            concurrency_key=concurrency_key,
            now=self.clock.now(),
        )
        if not row["created"] and on_conflict == "raise":
            raise DuplicateKey(
                f"{workflow} already has a live instance with key {key!r} (id {row['id']})",
                existing_id=row["id"],
            )
        return Handle(row["id"], row["key"], row["created"])

    async def start_many(self, entries: Sequence[ChildEntry]) -> list[Handle]:
        """Insert entries in one statement; handles come back in entry order."""
        columns: list[list[Any]] = [[] for _ in range(10)]
        first_of: dict[tuple[str, str], int] = {}
        duplicate_of: dict[int, int] = {}
        sent: list[int] = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, ChildEntry):
                raise ValidationError(
                    f"start_many takes entries from Flow.new(...), got {entry!r} at {i}"
                )
            spec = self.specs.get(entry.workflow)
            if spec is None:
                raise ValidationError(f"entry {i}: workflow {entry.workflow!r} is not served")
            _check_key(entry.key)
            if entry.key is not None:
                ident = (entry.workflow, entry.key)
                if ident in first_of:
                    duplicate_of[i] = first_of[ident]
                    continue
                first_of[ident] = i
            data = self.encode_state(spec, entry.state)
            values = (
                entry.workflow,
                entry.queue or spec.queue,
                spec.start_step,
                data,
                spec.retry.max_attempts,
                spec.priority if entry.priority is None else _priority(entry.priority),
                None,
                entry.delay,
                entry.key,
                entry.concurrency_key,
            )
            for column, value in zip(columns, values, strict=True):
                column.append(value)
            sent.append(i)
        if not sent:
            return []
        rows = await self.store.instance_insert_many(columns, self.clock.now())
        by_key = {(r["workflow"], r["key"]): r for r in rows if r["key"] is not None}
        # Rows go in ordered by (workflow, key, entry order), unkeyed last: within one
        # workflow the unkeyed rows' ids ascend in entry order (rows come back by id).
        unkeyed: dict[str, list[Any]] = {}
        for r in rows:
            if r["key"] is None:
                unkeyed.setdefault(r["workflow"], []).append(r)
        pending = {wf: iter(rs) for wf, rs in unkeyed.items()}
        handles: dict[int, Handle] = {}
        for i in sent:
            entry = entries[i]
            if entry.key is not None:
                r = by_key[(entry.workflow, entry.key)]
            else:
                r = next(pending[entry.workflow])
            handles[i] = Handle(r["id"], r["key"], r["created"])
        for i, first in duplicate_of.items():
            handles[i] = Handle(handles[first].id, handles[first].key, False)
        return [handles[i] for i in range(len(entries))]

    async def get(self, workflow: str, key_or_id: str | int) -> InstanceInfo:
        """A snapshot of one instance; `NoTarget` when there is none."""
        row = await self._row(workflow, key_or_id)
        if row is None:
            raise NoTarget(f"no {workflow} instance with {_address(key_or_id)}")
        if row["status"] in WAITING_STATUSES:  # read again with why it waits, one snapshot
            row = await self.store.instance_explain(row["id"], self.clock.now()) or row
        return self._info(row)

    async def result(self, workflow: str, key_or_id: str | int, timeout: float | None) -> Any:
        """Wait (on notifications) until the instance ends; its result or `WorkflowFailed`."""
        row = await self._row(workflow, key_or_id)
        if row is None:
            raise NoTarget(f"no {workflow} instance with {_address(key_or_id)}")
        id = int(row["id"])
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while row["status"] not in TERMINAL_STATUSES:
            # Listen first, then look again: an end committed in between is not missed.
            waiter = self.notifier.waiter(id)
            try:
                row = await self.store.instance_status(id)
                if row is None:
                    raise NoTarget(f"{workflow} instance {id} no longer exists")
                if row["status"] in TERMINAL_STATUSES:
                    break
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise ResultTimeout(
                        f"{workflow} instance {id} did not end within {timeout}s "
                        f"(status {row['status']})"
                    )
                with contextlib.suppress(TimeoutError):  # recheck once, then raise above
                    async with asyncio.timeout(remaining):
                        await asyncio.shield(waiter)
            finally:
                waiter.cancel()
        return self._outcome(workflow, id, row)

    async def signal(
        self, workflow: str, key_or_id: str | int, name: str, payload: Any = None
    ) -> int:
        """Deliver a durable signal in one statement; returns the signal id.

        The payload is validated against the type some step declares for `name` before
        anything is written. Raises `NoTarget` (storing nothing) when no live instance has
        that key or id.
        """
        spec = self.spec(workflow)
        if not isinstance(name, str) or not name:
            raise ValidationError(f"signal name must be a non-empty string, got {name!r}")
        awaited, tp, decoder = spec.signal_type(name)
        if not awaited:
            raise ValidationError(
                f"{workflow} awaits no signal named {name!r} "
                f"(it awaits: {', '.join(spec.signal_names()) or 'none'})"
            )
        if tp is not None and decoder is not None:
            data = encode_typed(payload, tp, decoder, f"payload of signal {name!r}")
        else:
            data = encode_json(payload)
        id, key = _id_or_key(key_or_id)
        row = await self.store.signal_deliver(workflow, id, key, name, data, self.clock.now())
        if row is None:
            raise NoTarget(
                f"no live {workflow} instance with {_address(key_or_id)}; signal {name!r} "
                "was not stored"
            )
        return int(row["signal_id"])

    async def cancel(self, workflow: str, key_or_id: str | int) -> None:
        """Cancel a live instance; `NoTarget` when none is live."""
        row = await self._row(workflow, key_or_id)
        if row is None or not await self.store.instance_cancel(row["id"], self.clock.now()):
            raise NoTarget(f"no live {workflow} instance with {_address(key_or_id)}")

    async def _row(self, workflow: str, key_or_id: str | int) -> Any:
        id, key = _id_or_key(key_or_id)
        if key is None:
            row = await self.store.instance_by_id(id)
            return row if row is not None and row["workflow"] == workflow else None
        return await self.store.instance_by_key(workflow, key)

    def _outcome(self, workflow: str, id: int, row: Any) -> Any:
        spec = self.specs[workflow]
        if row["status"] == "done":
            return decode_json(row["result"], spec.result_decoder)
        error = decode_json(row["error"])
        detail = f": {error.get('message')}" if isinstance(error, dict) else ""
        raise WorkflowFailed(
            f"{workflow} instance {id} ended {row['status']}{detail}",
            status=row["status"],
            error=error,
        )

    def _info(self, row: Any) -> InstanceInfo:
        spec = self.specs.get(row["workflow"])
        state_decoder = spec.state_decoder if spec else None
        result_decoder = spec.result_decoder if spec else None
        return InstanceInfo(
            id=row["id"],
            workflow=row["workflow"],
            key=row["key"],
            status=row["status"],
            step=row["step"],
            attempt=row["attempt"],
            state=decode_json(row["state"], state_decoder),
            result=decode_json(row["result"], result_decoder),
            error=decode_json(row["error"]),
            queue=row["queue"],
            priority=row["priority"],
            run_at=row["run_at"],
            inserted_at=row["inserted_at"],
            updated_at=row["updated_at"],
            finished_at=row["finished_at"],
            blocked_by=BlockedBy.from_row(row),
        )


def _id_or_key(key_or_id: Any) -> tuple[Any, str | None]:
    """(id, None) for an int, (None, key) for a str; anything else is refused."""
    if isinstance(key_or_id, bool) or not isinstance(key_or_id, str | int):
        raise ValidationError(f"address an instance by key (str) or id (int), not {key_or_id!r}")
    return (key_or_id, None) if isinstance(key_or_id, int) else (None, key_or_id)


def _address(key_or_id: str | int) -> str:
    return f"id {key_or_id}" if isinstance(key_or_id, int) else f"key {key_or_id!r}"


def _check_timing(delay: timedelta | None, run_at: datetime | None) -> None:
    if delay is not None and run_at is not None:
        raise ValidationError("pass delay= or run_at=, not both")
    if delay is not None and (not isinstance(delay, timedelta) or delay < timedelta(0)):
        raise ValidationError(f"delay must be a non-negative timedelta, got {delay!r}")
    if run_at is not None and (not isinstance(run_at, datetime) or run_at.tzinfo is None):
        raise ValidationError(f"run_at must be a timezone-aware datetime, got {run_at!r}")


def _check_key(key: Any) -> None:
    if key is not None and (not isinstance(key, str) or not key):
        raise ValidationError(f"key must be a non-empty string or None, got {key!r}")


def _priority(priority: int) -> int:
    if not isinstance(priority, int) or not -32768 <= priority <= 32767:
        raise ValidationError(f"priority must be an int in [-32768, 32767], got {priority!r}")
    return priority


def _scope(scope: Iterable[str] | None) -> list[str]:
    if scope is None:
        return list(LIVE_STATUSES)
    chosen = list(dict.fromkeys(scope))
    unknown = [s for s in chosen if s not in ALL_STATUSES]
    if unknown:
        raise ValidationError(f"scope has unknown statuses {unknown}; choose from {ALL_STATUSES}")
    missing = [s for s in LIVE_STATUSES if s not in chosen]
    if missing:
        raise ValidationError(
            f"scope must include every live status; missing {missing} "
            "(a key is always reserved while its instance runs)"
        )
    return chosen
