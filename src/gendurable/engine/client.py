"""The client side of an engine: start, start_many, get, result, cancel.

Every input is validated and encoded before the one statement that writes it runs, so a bad
state is refused with nothing written.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import msgspec

from ..blocked import WAITING_STATUSES, BlockedBy
from ..clock import Clock
from ..codec import check_size, decode_json, encode_json, encode_typed
from ..db.engine_store import EngineStore
from ..db.rows import Delivery, ExplainedInstance, InstanceRow, InstanceStatus
from ..entries import NewRow, check_text, columns, new_row
from ..errors import (
    DuplicateKey,
    IdempotencyConflict,
    NoTarget,
    ResultTimeout,
    ValidationError,
    WorkflowFailed,
)
from ..outcome import ChildEntry
from ..records import TERMINAL_STATUSES, Handle, InstanceInfo
from ..spec import WorkflowSpec
from ..telemetry import Telemetry
from ..upgrader import upgrade_state
from .claimed import StoredSignal
from .local import LocalRunner
from .notifier import Notifier

NO_HANDLE = Handle(0, None, False)
"""A placeholder in `start_many`'s list of handles, every one replaced before it returns."""


class Client:
    """Starts and inspects instances of the workflows in `specs`."""

    def __init__(
        self,
        specs: Mapping[str, WorkflowSpec],
        store: EngineStore,
        clock: Clock,
        notifier: Notifier,
        telemetry: Telemetry | None = None,
        local: LocalRunner | None = None,
        *,
        objects: Mapping[str, Any],
        max_payload_bytes: int,
    ) -> None:
        self.specs = specs
        self.store = store
        self.clock = clock
        self.notifier = notifier
        self.telemetry = telemetry or Telemetry()
        self.local = local
        self.objects = objects  # the workflow objects `@gd.upgrade` methods run on
        self.max_payload_bytes = max_payload_bytes

    def spec(self, workflow: str) -> WorkflowSpec:
        """The spec of a served workflow."""
        return self.specs[workflow]

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
        if on_conflict not in ("return", "raise"):
            raise ValidationError(f"on_conflict must be 'return' or 'raise', got {on_conflict!r}")
        entry = ChildEntry(
            workflow,
            key,
            state,
            queue=queue,
            priority=priority,
            delay=delay,
            concurrency_key=concurrency_key,
            scope=None if scope is None else tuple(scope),
        )
        row = new_row(spec, entry, run_at=run_at)
        check_size(row.state, self.max_payload_bytes, f"{workflow} state")
        runner = self.local.runner_for(row) if self.local is not None else None
        try:
            inserted = await self.store.instance_insert(
                row=row,
                now=self.clock.now(),
                trace_context=self.telemetry.trace_context(
                    "start", {"workflow": workflow, "key": key}
                ),
                locked_by=runner.locked_by if runner else None,
                lease=runner.lease if runner else None,
            )
        except BaseException:
            if runner is not None:
                runner.scheduler.unreserve()
            raise
        if runner is not None:
            # Not claimed when its queue turned out paused (or the key was held).
            if inserted.created and inserted.locked_by == runner.locked_by:
                runner.scheduler.adopt(inserted, runner.locked_by)
            else:
                runner.scheduler.unreserve()
        if not inserted.created and on_conflict == "raise":
            raise DuplicateKey(
                f"{workflow} already has a live instance with key {key!r} (id {inserted.id})",
                existing_id=inserted.id,
            )
        return Handle(inserted.id, inserted.key, inserted.created)

    async def start_many(self, entries: Sequence[ChildEntry]) -> list[Handle]:
        """Insert entries in one statement; handles come back in entry order.

        An entry whose key another instance holds (or an earlier entry of the same batch)
        gets that instance's handle with `created=False`.
        """
        rows: list[NewRow] = []
        first_of: dict[tuple[str, str], int] = {}
        duplicate_of: dict[int, int] = {}
        sent: list[int] = []
        limit = self.max_payload_bytes
        for i, entry in enumerate(entries):
            if not isinstance(entry, ChildEntry):
                raise ValidationError(
                    f"start_many takes entries from Flow.new(...), got {entry!r} at {i}"
                )
            spec = self.specs.get(entry.workflow)
            if spec is None:
                raise ValidationError(f"entry {i}: workflow {entry.workflow!r} is not served")
            if entry.key is not None:
                ident = (entry.workflow, entry.key)
                if ident in first_of:
                    duplicate_of[i] = first_of[ident]
                    continue
                first_of[ident] = i
            row = new_row(spec, entry)
            if len(row.state) > limit:  # the message is built only for the refusal
                check_size(row.state, limit, f"entry {i}: {spec.name} state")
            rows.append(row)
            sent.append(i)
        if not sent:
            return []
        trace = self.telemetry.trace_context(
            "start_many",
            {"workflow": ",".join(sorted({r.workflow for r in rows})), "count": len(sent)},
        )
        inserted = await self.store.instance_insert_many(
            columns=columns(rows), parent_id=None, now=self.clock.now(), trace_context=trace
        )
        created = {(r.workflow, r.key): r.id for r in inserted if r.key}
        held: list[tuple[str, str]] = []
        for i in sent:
            key = entries[i].key
            if key is not None and (entries[i].workflow, key) not in created:
                held.append((entries[i].workflow, key))
        holders = await self.store.instances_holding_keys(keys=held) if held else {}
        # Unkeyed rows go in in entry order and come back by id: their ids ascend in it.
        unkeyed = iter([r.id for r in inserted if r.key is None])
        handles: list[Handle] = [NO_HANDLE] * len(entries)
        for i in sent:
            entry = entries[i]
            key = entry.key
            if key is None:
                handles[i] = Handle(next(unkeyed), None, True)
            else:
                made = created.get((entry.workflow, key))
                handles[i] = (
                    Handle(made, key, True)
                    if made is not None
                    else Handle(holders[(entry.workflow, key)], key, False)
                )
        for i, first in duplicate_of.items():
            handles[i] = Handle(handles[first].id, handles[first].key, False)
        return handles

    async def get(self, workflow: str, key_or_id: str | int) -> InstanceInfo:
        """A snapshot of one instance; `NoTarget` when there is none.

        A state written by an older version of the workflow comes upgraded (as a step would
        see it; the row is left as stored); `StateUpgradeError` when no upgrade covers it.
        """
        row = await self._row(workflow, key_or_id)
        if row is None:
            raise NoTarget(f"no {workflow} instance with {_address(key_or_id)}")
        if row.status in WAITING_STATUSES:  # read again with why it waits, one snapshot
            explained = await self.store.instance_explain(id=row.id, now=self.clock.now())
            return self._info(explained or row)
        return self._info(row)

    async def result(self, workflow: str, key_or_id: str | int, timeout: float | None) -> Any:
        """Wait (on notifications) until the instance ends; its result or `WorkflowFailed`."""
        found = await self._row(workflow, key_or_id)
        if found is None:
            raise NoTarget(f"no {workflow} instance with {_address(key_or_id)}")
        id = found.id
        row: InstanceRow | InstanceStatus = found
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while row.status not in TERMINAL_STATUSES:
            # Listen first, then look again: an end committed in between is not missed.
            waiter = self.notifier.waiter(id)
            try:
                status = await self.store.instance_status(id=id)
                if status is None:
                    raise NoTarget(f"{workflow} instance {id} no longer exists")
                row = status
                if row.status in TERMINAL_STATUSES:
                    break
                remaining = None if deadline is None else deadline - loop.time()
                if remaining is not None and remaining <= 0:
                    raise ResultTimeout(
                        f"{workflow} instance {id} did not end within {timeout}s "
                        f"(status {row.status})"
                    )
                if self.notifier.recheck_after is not None:  # not listening: poll
                    remaining = min(remaining or math.inf, self.notifier.recheck_after)
                with contextlib.suppress(TimeoutError):  # recheck once, then raise above
                    async with asyncio.timeout(remaining):
                        await asyncio.shield(waiter)
            finally:
                waiter.cancel()
        return self._outcome(workflow, id, row)

    async def signal(
        self,
        workflow: str,
        key_or_id: str | int,
        name: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
    ) -> Sent:
        """Deliver a durable signal in one statement; the signal id, and whether it is a
        duplicate (its `idempotency_key` had stored it already: nothing was stored).

        The payload is validated against the type some step declares for `name` before
        anything is written. Raises `NoTarget` (storing nothing) when no live instance has
        that key or id, and `IdempotencyConflict` (storing nothing) when the key stored
        another signal (a different name or payload) for that instance.
        """
        spec = self.spec(workflow)
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        if not isinstance(name, str) or not name:
            raise ValidationError(f"signal name must be a non-empty string, got {name!r}")
        awaited, tp, decoder = spec.signal_type(name)
        if not awaited:
            raise ValidationError(
                f"{workflow} awaits no signal named {name!r} "
                f"(it awaits: {', '.join(spec.signal_names()) or 'none'})"
            )
        what = f"payload of signal {name!r}"
        if tp is not None and decoder is not None:
            data = encode_typed(payload, tp, decoder, what)
        else:
            data = encode_json(payload, what)
        check_size(data, self.max_payload_bytes, what)
        id, key = _id_or_key(key_or_id)
        trace = self.telemetry.trace_context(
            "signal", {"workflow": workflow, "signal": name, "key": key, "id": id}
        )
        # A keyed delivery is repeated through a lost answer: it claims nothing here (a
        # repeat could not hand back a claim the first attempt took), its wake goes through
        # the queue.
        local = self.local if idempotency_key is None else None
        runner = local.runner_for_queue(spec) if local is not None else None
        try:
            delivery = await self.store.signal_deliver(
                workflow=workflow,
                id=id,
                key=key,
                name=name,
                payload=data,
                now=self.clock.now(),
                trace_context=trace,
                locked_by=runner.locked_by if runner else None,
                lease=runner.lease if runner else None,
                queue=runner.scheduler.queue if runner else None,
                idempotency_key=idempotency_key,
            )
        except BaseException:
            if runner is not None:
                runner.scheduler.unreserve()
            raise
        if runner is not None:
            if delivery is not None and delivery.claimed:
                assert delivery.woken is not None
                runner.scheduler.adopt(delivery.woken, runner.locked_by, _inbox(delivery))
            else:
                runner.scheduler.unreserve()
        if delivery is None:
            raise NoTarget(
                f"no live {workflow} instance with {_address(key_or_id)}; signal {name!r} "
                "was not stored"
            )
        if not delivery.same:
            raise IdempotencyConflict(
                f"idempotency key {idempotency_key!r} already stored another signal (id "
                f"{delivery.signal_id}, a different name or payload) for {workflow} instance "
                f"{delivery.instance_id}; signal {name!r} was not stored",
                signal_id=delivery.signal_id,
            )
        return Sent(delivery.signal_id, delivery.duplicate)

    async def cancel(self, workflow: str, key_or_id: str | int) -> int:
        """Cancel a live instance and its live descendants; how many descendants.

        `NoTarget` when no instance with that key or id is live.
        """
        row = await self._row(workflow, key_or_id)
        cascaded = (
            None
            if row is None
            else await self.store.instance_cancel(id=row.id, now=self.clock.now())
        )
        if cascaded is None:
            raise NoTarget(f"no live {workflow} instance with {_address(key_or_id)}")
        return cascaded

    async def _row(self, workflow: str, key_or_id: str | int) -> InstanceRow | None:
        id, key = _id_or_key(key_or_id)
        if key is None:
            row = await self.store.instance_by_id(id=id)
            return row if row is not None and row.workflow == workflow else None
        return await self.store.instance_by_key(workflow=workflow, key=key)

    def _outcome(self, workflow: str, id: int, row: InstanceRow | InstanceStatus) -> Any:
        spec = self.specs[workflow]
        if row.status == "done":
            return decode_json(row.result, spec.result_decoder)
        error = decode_json(row.error)
        detail = f": {error.get('message')}" if isinstance(error, dict) else ""
        raise WorkflowFailed(
            f"{workflow} instance {id} ended {row.status}{detail}",
            status=row.status,
            error=error,
        )

    def _info(self, row: InstanceRow | ExplainedInstance) -> InstanceInfo:
        spec = self.specs.get(row.workflow)
        state_decoder = spec.state_decoder if spec else None
        result_decoder = spec.result_decoder if spec else None
        state = row.state
        if spec is not None:
            obj = self.objects.get(spec.name)
            what = f"instance {row.id}"
            state = upgrade_state(spec, state, row.state_version, obj, what=what)
        blocked_by = None
        if isinstance(row, ExplainedInstance):
            blocked_by = BlockedBy.from_columns(
                row.blocked_reason, row.blocked_until, row.blocked_detail
            )
        return InstanceInfo(
            id=row.id,
            workflow=row.workflow,
            key=row.key,
            status=row.status,
            step=row.step,
            attempt=row.attempt,
            state=_lenient(state, state_decoder),
            result=_lenient(row.result, result_decoder),
            error=decode_json(row.error),
            queue=row.queue,
            priority=row.priority,
            run_at=row.run_at,
            inserted_at=row.inserted_at,
            updated_at=row.updated_at,
            finished_at=row.finished_at,
            blocked_by=blocked_by,
        )


@dataclass(frozen=True, slots=True)
class Sent:
    """A delivered signal: its id, and whether its idempotency key had stored it before."""

    id: int
    duplicate: bool


MAX_IDEMPOTENCY_KEY_BYTES = 255
"""The longest idempotency key, in bytes of UTF-8 (as Stripe's)."""


def check_idempotency_key(key: object) -> str:
    """An idempotency key as given, or `ValidationError`: a non-empty string of at most
    `MAX_IDEMPOTENCY_KEY_BYTES` bytes that PostgreSQL can store."""
    if not isinstance(key, str) or not key:
        raise ValidationError(f"idempotency_key must be a non-empty string, got {key!r}")
    return check_text(key, "idempotency_key", MAX_IDEMPOTENCY_KEY_BYTES)


def _inbox(delivery: Delivery) -> tuple[StoredSignal, ...]:
    """The inbox a claiming delivery returned with the instance it woke."""
    return tuple(
        StoredSignal(*fields)
        for fields in zip(
            delivery.inbox_ids or (),
            delivery.inbox_names or (),
            delivery.inbox_payloads or (),
            delivery.inbox_received or (),
            delivery.inbox_traces or (),
            strict=True,
        )
    )


def _lenient(data: bytes | None, decoder: msgspec.json.Decoder[Any] | None) -> Any:
    """Decode typed, else as plain JSON: `get()` must show a row whose stored value no
    longer matches its type (the very row someone needs to look at)."""
    try:
        return decode_json(data, decoder)
    except msgspec.DecodeError:
        return decode_json(data)


def _id_or_key(key_or_id: Any) -> tuple[Any, str | None]:
    """(id, None) for an int, (None, key) for a str; anything else is refused, as are keys
    PostgreSQL cannot hold (`check_text`) and ids beyond bigint."""
    if isinstance(key_or_id, bool) or not isinstance(key_or_id, str | int):
        raise ValidationError(f"address an instance by key (str) or id (int), not {key_or_id!r}")
    if isinstance(key_or_id, int):
        if not -(2**63) <= key_or_id < 2**63:
            raise ValidationError(f"instance id {key_or_id} is out of range (a bigint)")
        return key_or_id, None
    if not key_or_id:
        raise ValidationError("key must be a non-empty string")
    return None, check_text(key_or_id, "key")


def _address(key_or_id: str | int) -> str:
    return f"id {key_or_id}" if isinstance(key_or_id, int) else f"key {key_or_id!r}"
