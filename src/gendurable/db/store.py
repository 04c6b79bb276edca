"""The Store: one typed method per named statement; the only place queries run.

JSON travels as bytes both ways: msgspec encodes on the client and jsonb is sent in binary
form, so values are stored as real jsonb objects and never as a jsonb string.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from ..errors import DuplicateKey
from ..sql import schema_hash, statements
from .connect import Hosts
from .outage import Outage

JSONB_VERSION = b"\x01"

TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    # Every host answered, none accepts writes yet (a failover under way): nothing was sent.
    asyncpg.TargetServerAttributeNotMatched,
)
"""Failures of the connection, not of the statement: worth trying again."""

RETRYABLE: tuple[type[BaseException], ...] = (
    *TRANSIENT,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
)
"""What the retry loop catches: TRANSIENT, and InterfaceError or InternalClientError when it
is one (`_transient`)."""

NOT_IDEMPOTENT = frozenset(
    {
        "instance_insert",
        "instance_insert_many",
        "signal_deliver",
        "instance_cancel",
        "instance_retry",
    }
)
# A spawn is retried through connection failures: its transaction either committed, and the
# repeat finds the claim gone (stale), or it did not, and the repeat is the first attempt.
"""Statements a repeat could apply twice: retried only when they were never sent."""

_log = logging.getLogger("gendurable.store")

RELEASED = "released"
"""`outcome_batch`'s answer for a kept-claim move whose queue is paused: committed as a
plain goto, the claim given up."""


def _transient(exc: BaseException) -> bool:
    """A connection failure, the error of closing a transaction on a connection that failed
    (asyncpg raises InterfaceError from the `async with` exit, the loss as context), or a
    connection that could not be used (`_stuck`)."""
    if isinstance(exc, TRANSIENT) or _stuck(exc):
        return True
    return isinstance(exc, asyncpg.InterfaceError) and isinstance(exc.__context__, TRANSIENT)


def _stuck(exc: BaseException) -> bool:
    """asyncpg refused to send anything on the connection: its protocol is still inside an
    earlier exchange. So it is after a server sends an idle connection its last words (a
    FATAL error as it shuts down, crashes or is terminated) and before the connection's end
    reaches the client: the pool may hand it out in between."""
    return isinstance(exc, asyncpg.InternalClientError) and str(exc).startswith(
        "cannot switch to state"
    )


class _Stale(Exception):
    """The spawning parent's claim was lost: roll the spawn back."""


class _Held(Exception):
    """Children keys already held: roll the spawn back."""

    def __init__(self, keys: list[tuple[str, str]]) -> None:
        super().__init__(keys)
        self.keys = keys


def _encode_jsonb(value: bytes | str) -> bytes:
    return JSONB_VERSION + (value.encode() if isinstance(value, str) else value)


def _decode_jsonb(data: bytes) -> bytes:
    return data[1:]


async def init_connection(conn: asyncpg.Connection) -> None:
    """Make jsonb travel as raw JSON bytes (binary format, no str round trip)."""
    await _jsonb_as_bytes(conn)


async def _jsonb_as_bytes(conn: asyncpg.Connection) -> None:
    for typename in ("jsonb",):
        await conn.set_type_codec(
            typename,
            schema="pg_catalog",
            encoder=_encode_jsonb,
            decoder=_decode_jsonb,
            format="binary",
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Skip asyncpg's reset query on release: a round trip per statement otherwise.

    Safe because no statement here leaves session state behind: no LISTEN (the listener has
    its own connection), no session advisory locks, no temporary tables, no SET.
    """


class Store:
    """Typed access to the instances of one schema through an asyncpg pool."""

    def __init__(
        self, pool: asyncpg.Pool, schema: str, *, timeout: float = 30.0, retry_for: float = 60.0
    ) -> None:
        self.pool = pool
        self.retry_for = retry_for
        self.outage = Outage(_log)
        """Reports, in a few lines, the outages every statement of this store retries through."""
        self.schema = schema
        self.timeout = timeout
        self.sql = statements(schema)
        self.channel = f"gendurable_{schema_hash(schema)}"
        # Advisory locks are database-wide: concurrency keys get a namespace of their own.
        self.key_lock_namespace = f"gendurable:ck:{schema}:"

    @classmethod
    async def open(
        cls,
        dsn: str,
        schema: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        prepare: bool = True,
        timeout: float = 30.0,
    ) -> Store:
        """Open a pool on `dsn` with `min_size` connections open (raises if it cannot);
        `prepare=False` disables the statement cache (poolers).

        Connections closed later (an outage, idleness) are opened again when a statement
        needs one, never in the background: asyncpg's own refill (0.32+) would retry on its
        own while the server is down and log a traceback each time. With several hosts in
        `dsn`, each connection goes to the first usable one (see `Hosts`).
        """
        hosts = Hosts(dsn)
        pool = await asyncpg.create_pool(
            hosts.url,
            connect=hosts.connect,
            min_size=0,
            max_size=max_size,
            init=init_connection,
            statement_cache_size=100 if prepare else 0,
            command_timeout=timeout,
            timeout=timeout,
            reset=_keep_session,
        )
        try:
            async with contextlib.AsyncExitStack() as opened:
                for _ in range(min(min_size, max_size)):
                    await opened.enter_async_context(pool.acquire(timeout=timeout))
        except BaseException:
            pool.terminate()
            raise
        return cls(pool, schema, timeout=timeout)

    async def close(self, grace: float | None = None) -> None:
        """Close the pool; after `grace` seconds (an unreachable server), terminate it."""
        try:
            async with asyncio.timeout(grace):
                await self.pool.close()
        except TimeoutError:
            self.pool.terminate()

    async def instance_insert(
        self,
        row: Any,
        *,
        now: datetime | None,
        trace_context: str | None = None,
        locked_by: str | None = None,
        lease: timedelta | None = None,
    ) -> asyncpg.Record:
        """Insert one instance (a `NewRow`) or return the live one holding its key.

        With `locked_by` (and its `lease`) a created row is claimed by that worker already.
        """
        inserted = await self._fetchrow(
            "instance_insert",
            row.workflow,
            row.queue,
            row.step,
            row.state,
            row.max_attempts,
            row.priority,
            row.run_at,
            row.delay,
            row.key,
            list(row.scope),
            row.concurrency_key,
            now,
            self.channel,
            row.limit.name,
            row.limit.partition,
            row.limit.weight,
            trace_context,
            row.state_version,
            locked_by,
            lease,
        )
        assert inserted is not None
        return inserted

    async def instance_insert_many(
        self,
        columns: Sequence[Sequence[Any]],
        parent: int | None,
        now: datetime | None,
        trace_context: str | None = None,
        state_versions: Sequence[int] | None = None,
    ) -> list[asyncpg.Record]:
        """Insert a batch given as parallel columns (`entries.columns`); the rows created.

        `state_versions` is each row's workflow version, parallel to the columns (1 for
        each when not given). Rows whose key another instance holds are skipped (see
        `instances_holding_keys`).
        """
        count = len(columns[0]) if columns else 0
        return list(
            await self._run(
                "fetch",
                "instance_insert_many",
                *columns,
                parent,
                now,
                self.channel,
                trace_context,
                [1] * count if state_versions is None else list(state_versions),
            )
        )

    async def instances_holding_keys(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], int]:
        """The id of the instance holding each (workflow, key)."""
        rows = await self._run(
            "fetch", "instances_holding_keys", [w for w, _ in keys], [k for _, k in keys]
        )
        return {(r["workflow"], r["key"]): int(r["id"]) for r in rows}

    async def queues_due(
        self, queues: Sequence[str], now: datetime | None
    ) -> tuple[list[str], set[str]]:
        """The queues among `queues` that hold due rows and are not paused; the paused ones."""
        rows = await self._run("fetch", "queues_due", list(queues), now)
        return (
            [r["queue"] for r in rows if not r["paused"]],
            {r["queue"] for r in rows if r["paused"]},
        )

    async def instance_claim(
        self,
        queue: str,
        limit: int,
        locked_by: str,
        leases: Sequence[timedelta],
        now: datetime | None,
        workflows: Sequence[str],
        steps: Sequence[str],
        unknown_limit_wait: timedelta = timedelta(seconds=5),
    ) -> list[asyncpg.Record]:
        """Claim up to `limit` due instances of `queue` whose (workflow, step) is known.

        `workflows`, `steps` and `leases` are parallel: each claim lasts its pair's lease.
        Every returned row has `go`: True for a claim, False for a row the rate limiter
        deferred (still available, `throttled`). A claim that met a concurrency key another
        claim took after this one's snapshot is retried at once (the unique index refused it).
        """
        for attempt in range(3):
            try:
                return list(
                    await self._run(
                        "fetch",
                        "instance_claim",
                        queue,
                        limit,
                        locked_by,
                        list(leases),
                        now,
                        list(workflows),
                        list(steps),
                        self.key_lock_namespace,
                        unknown_limit_wait,
                    )
                )
            except asyncpg.UniqueViolationError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def outcome_batch(
        self,
        outcomes: bytes,
        values: tuple[Sequence[bytes | None], Sequence[bytes | None], Sequence[bytes | None]],
        now: datetime | None,
    ) -> tuple[dict[int, bool | str | None], set[int]]:
        """Commit many outcomes in one statement (group commit).

        `outcomes` is the JSON array of their plain fields (see the statement), `values` the
        parallel states, results and errors (JSON bytes or None). Returns, for each id whose
        guard held, whether a park among them was woken at once by its passed deadline
        (True), by a signal already there (False), `RELEASED` for a kept-claim move committed
        as a plain goto because its queue is paused, or None; and the ids whose row (or
        parent) someone else had locked: not committed, to send again.
        """
        rows = await self._run("fetch", "outcome_batch", now, outcomes, *values, self.channel)
        done = {
            int(r["id"]): RELEASED if r["released"] else r["woken_by_deadline"]
            for r in rows
            if not r["busy"]
        }
        return done, {int(r["id"]) for r in rows if r["busy"]}

    async def outcome_spawn(
        self,
        id: int,
        locked_by: str,
        children: Sequence[Sequence[Any]],
        keys: Sequence[tuple[str, str]],
        then: str,
        state: bytes | None,
        consumed: Sequence[int],
        limit: Any,
        now: datetime | None,
        trace_context: str | None = None,
        state_version: int = 1,
        child_versions: Sequence[int] | None = None,
        max_attempts: int | None = None,
    ) -> bool:
        """Insert the children and make the parent wait for them, in one transaction.

        The children go in first (key locks), then the parent's guarded update (row lock):
        the order every writer keeps. False when the claim was lost (nothing is inserted);
        `DuplicateKey` naming the key when a child's key is held (nothing is inserted).
        `keys` are the children's (workflow, key) pairs, to name the one held;
        `trace_context` the parent's, so that the children join its trace. A new `state` is
        written with `state_version`; `child_versions` are the children's workflow versions
        (1 for each when not given); `max_attempts` those `then` may use (None: the row keeps
        its own).
        """
        count = len(children[0]) if children else 0

        async def spawn(conn: Any) -> tuple[bool, list[tuple[str, str]]]:
            async with conn.transaction():
                first: int | None = None
                held: list[tuple[str, str]] = []
                if count:
                    rows = await conn.fetch(
                        self.sql["instance_insert_many"],
                        *children,
                        id,
                        now,
                        self.channel,
                        trace_context,
                        [1] * count if child_versions is None else list(child_versions),
                        timeout=self.timeout,
                    )
                    made = {(r["workflow"], r["key"]) for r in rows}
                    held = [k for k in keys if k not in made] if len(rows) < count else []
                    first = min((int(r["id"]) for r in rows), default=None)
                parked = await conn.fetchrow(
                    self.sql["outcome_spawn"],
                    id,
                    locked_by,
                    then,
                    state,
                    count,
                    first,
                    list(consumed),
                    self.channel,
                    now,
                    limit.name,
                    limit.partition,
                    limit.weight,
                    state_version,
                    max_attempts,
                    timeout=self.timeout,
                )
                # The guard is checked before the keys: a repeat whose first attempt committed
                # (its answer lost) finds its own children holding their keys, and is stale.
                if parked is None:
                    raise _Stale()
                if held:
                    raise _Held(held)
                return True, []

        try:
            await self._retrying(spawn, idempotent=True)
        except _Stale:
            return False
        except _Held as held:
            holders = await self.instances_holding_keys(held.keys)
            (workflow, key), *_ = held.keys
            raise DuplicateKey(
                f"spawn: {workflow} key {key!r} is held by instance {holders.get((workflow, key))}"
                + (f" (and {len(held.keys) - 1} more keys)" if len(held.keys) > 1 else "")
                + "; nothing of the spawn was inserted",
                existing_id=holders.get((workflow, key)),
            ) from None
        return True

    async def children_load(
        self, parents: Sequence[int], firsts: Sequence[int]
    ) -> list[asyncpg.Record]:
        """The children of each parent's latest spawn, in spawn order."""
        return list(await self._run("fetch", "children_load", list(parents), list(firsts)))

    async def instance_release(self, id: int, locked_by: str, now: datetime | None) -> bool:
        """Give a claim back untouched; False when it was no longer ours."""
        return await self._guarded("instance_release", id, locked_by, now, self.channel)

    async def signal_deliver(
        self,
        workflow: str,
        id: int | None,
        key: str | None,
        name: str,
        payload: bytes,
        now: datetime | None,
        trace_context: str | None = None,
        locked_by: str | None = None,
        lease: timedelta | None = None,
        queue: str | None = None,
        idempotency_key: str | None = None,
    ) -> asyncpg.Record | None:
        """Store a signal for a live instance (waking it if it awaits `name`); None if none.

        With `locked_by` (a scheduler of `queue`, and its `lease`), an instance of that
        queue the signal wakes is claimed by it at once (`claimed`), with its inbox, unless
        the queue is paused. With `idempotency_key`, a signal that key already stored for
        the instance comes back instead (`duplicate`, and `same`: whether its name and
        payload were these), storing nothing; such a delivery is also retried through
        connection failures, being safe to repeat (unless it may claim: a repeat would
        not return the claim).
        """
        args: tuple[Any, ...] = (workflow, id, key, name, payload, now, self.channel)
        args += (trace_context, locked_by, lease, queue, idempotency_key)
        if idempotency_key is None:
            return await self._fetchrow("signal_deliver", *args)
        sql = self.sql["signal_deliver"]

        async def deliver(conn: Any) -> asyncpg.Record | None:
            row: asyncpg.Record | None
            try:
                row = await conn.fetchrow(sql, *args, timeout=self.timeout)
            except asyncpg.UniqueViolationError:
                # A send of the same key committed after this statement's snapshot: nothing
                # was stored; run again, to find it (see the statement).
                row = await conn.fetchrow(sql, *args, timeout=self.timeout)
            return row

        row: asyncpg.Record | None = await self._retrying(deliver, idempotent=locked_by is None)
        return row

    async def inbox_load(self, ids: Sequence[int]) -> list[asyncpg.Record]:
        """Pending signals of the given instances, by instance then arrival."""
        return list(await self._run("fetch", "inbox_load", list(ids)))

    async def await_expire(self, now: datetime | None, limit: int) -> list[asyncpg.Record]:
        """Wake up to `limit` awaiting instances whose deadline passed."""
        return list(await self._run("fetch", "await_expire", now, limit, self.channel))

    async def instance_cancel(self, id: int, now: datetime | None) -> int | None:
        """Cancel a live instance with its live descendants; how many descendants, or None
        when it was not live."""
        row = await self._fetchrow("instance_cancel", id, now, self.channel)
        return None if row is None else int(row["cascaded"] or 0)

    async def instance_by_id(self, id: int) -> asyncpg.Record | None:
        """The row with this id, or None."""
        return await self._fetchrow("instance_by_id", id)

    async def instance_by_key(self, workflow: str, key: str) -> asyncpg.Record | None:
        """The live row holding the key, else the latest that had it, else None."""
        return await self._fetchrow("instance_by_key", workflow, key)

    async def instance_status(self, id: int) -> asyncpg.Record | None:
        """Status, result and error of one row."""
        return await self._fetchrow("instance_status", id)

    async def instances_unknown(
        self, queue: str, workflows: Sequence[str], steps: Sequence[str], now: datetime | None
    ) -> list[asyncpg.Record]:
        """Due rows of `queue` whose (workflow, step) is not among the known pairs."""
        return list(
            await self._run("fetch", "instances_unknown", queue, list(workflows), list(steps), now)
        )

    async def lease_extend(
        self,
        claims: Sequence[tuple[int, str]],
        workflows: Sequence[str],
        leases: Sequence[timedelta],
        now: datetime | None,
    ) -> int:
        """Extend each claim `(id, locked_by)` still held under that name by its workflow's
        lease; how many."""
        status = await self._run(
            "execute",
            "lease_extend",
            [id for id, _ in claims],
            [name for _, name in claims],
            list(workflows),
            list(leases),
            now,
        )
        return int(status.rsplit(" ", 1)[-1])

    async def lease_rescue(self, now: datetime | None, limit: int) -> list[asyncpg.Record]:
        """Return up to `limit` expired claims to their queue (or fail them when spent)."""
        return list(await self._run("fetch", "lease_rescue", now, limit, self.channel))

    async def claims_reclaim(
        self, prefix: str, now: datetime | None, limit: int
    ) -> list[asyncpg.Record]:
        """Release expired claims whose `locked_by` starts with `prefix`."""
        return list(await self._run("fetch", "claims_reclaim", prefix, now, limit))

    async def rate_config_write(
        self, columns: tuple[list[str], list[int], list[int], list[int]], now: datetime | None
    ) -> list[asyncpg.Record]:
        """Store limits given as parallel (name, allowed, per_ms, burst); the old values."""
        return list(await self._run("fetch", "rate_config_write", *columns, now))

    async def rate_config_refresh(
        self, columns: tuple[list[str], list[int], list[int], list[int]], now: datetime | None
    ) -> None:
        """Mark limits as still configured, writing again any that was removed."""
        await self._run("execute", "rate_config_refresh", *columns, now)

    async def terminal_sweep(
        self,
        now: datetime | None,
        retention: timedelta,
        after: tuple[datetime | None, int | None],
        limit: int,
    ) -> asyncpg.Record:
        """Delete old terminal rows among the next `limit` after `after`; counts and cursor."""
        row = await self._fetchrow("terminal_sweep", now, retention, *after, limit)
        assert row is not None
        return row

    async def bucket_sweep(
        self, now: datetime | None, after: tuple[str | None, str | None], limit: int
    ) -> asyncpg.Record:
        """Delete idle or unconfigured buckets among the next `limit`; counts and cursor."""
        row = await self._fetchrow("bucket_sweep", now, *after, limit)
        assert row is not None
        return row

    async def rate_config_sweep(self, now: datetime | None, ttl: timedelta, limit: int) -> int:
        """Delete up to `limit` configs not refreshed for `ttl`; how many."""
        return len(await self._run("fetch", "rate_config_sweep", now, ttl, limit))

    # -- deploy check (read-only) ----------------------------------------------------------

    async def check_live_steps(self) -> list[asyncpg.Record]:
        """(workflow, step, n, example_id) of the live rows."""
        return list(await self._run("fetch", "check_live_steps"))

    async def check_live_queues(self) -> list[asyncpg.Record]:
        """(workflow, queue, n, example_id) of the live rows."""
        return list(await self._run("fetch", "check_live_queues"))

    async def check_awaited_names(self) -> list[asyncpg.Record]:
        """(workflow, step, name, n, example_id) of the signal names parked rows await."""
        return list(await self._run("fetch", "check_awaited_names"))

    async def check_state_versions(self) -> list[asyncpg.Record]:
        """(workflow, state_version, n, example_id) of the live rows."""
        return list(await self._run("fetch", "check_state_versions"))

    async def check_states_oldest(self, workflow: str, limit: int) -> list[asyncpg.Record]:
        """(id, state, state_version) of the `limit` live rows of `workflow` updated longest
        ago."""
        return list(await self._run("fetch", "check_states_oldest", workflow, limit))

    async def check_states_page(
        self, workflow: str, after: int, limit: int
    ) -> list[asyncpg.Record]:
        """(id, state, state_version) of up to `limit` live rows of `workflow` with id above
        `after`."""
        return list(await self._run("fetch", "check_states_page", workflow, after, limit))

    # -- operating: blocked_by, nodes, the command line (explain/nodes/inspect/repair.sql) --

    async def instance_explain(self, id: int, now: datetime | None) -> asyncpg.Record | None:
        """One row with its `blocked_reason`, `blocked_until`, `blocked_detail` at `now`."""
        return await self._fetchrow("instance_explain", id, now)

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
        await self._run(
            "execute",
            "node_register",
            id,
            name,
            host,
            pid,
            self.schema,
            queues,
            workflows,
            version,
            heartbeat,
            ttl,
            now,
        )

    async def node_beat(self, id: str, ttl: timedelta, now: datetime | None) -> bool:
        """Refresh a node for another `ttl`; False when its row is gone (pruned)."""
        return await self._guarded("node_beat", id, ttl, now)

    async def node_prune(self, now: datetime | None) -> list[asyncpg.Record]:
        """Delete the nodes past their expiry; the rows deleted."""
        return list(await self._run("fetch", "node_prune", now))

    async def node_remove(self, id: str) -> bool:
        """Delete a node's row (at stop); False when it was already gone."""
        return await self._guarded("node_remove", id)

    async def nodes_live(self, now: datetime | None) -> list[asyncpg.Record]:
        """The nodes alive at `now`."""
        return list(await self._run("fetch", "nodes_live", now))

    async def status_counts(self, now: datetime | None) -> list[asyncpg.Record]:
        """Counts by workflow x status x queue, with the oldest due `run_at` of each group."""
        return list(await self._run("fetch", "status_counts", now))

    async def instances_list(
        self,
        *,
        workflow: str | None,
        statuses: Sequence[str] | None,
        queue: str | None,
        key_prefix: str | None,
        before_id: int | None,
        limit: int,
    ) -> list[asyncpg.Record]:
        """A page of instances, newest first, with ids below `before_id`."""
        return list(
            await self._run(
                "fetch",
                "instances_list",
                workflow,
                None if statuses is None else list(statuses),
                queue,
                key_prefix,
                before_id,
                limit,
            )
        )

    async def instance_workflows(self) -> list[str]:
        """Every workflow name some instance has (reads the whole table)."""
        return [r["workflow"] for r in await self._run("fetch", "instance_workflows")]

    async def instances_with_key(self, key: str) -> list[asyncpg.Record]:
        """Per workflow, the live (else latest) instance holding `key`."""
        return list(await self._run("fetch", "instances_with_key", key))

    async def children_list(self, parent_id: int, limit: int) -> list[asyncpg.Record]:
        """The first `limit` children of an instance, each row with the `total` count."""
        return list(await self._run("fetch", "children_list", parent_id, limit))

    async def instance_retry(self, id: int, now: datetime | None) -> asyncpg.Record:
        """Put a failed instance back on its failing step (see the statement for refusals)."""
        try:
            row = await self._fetchrow("instance_retry", id, now, self.channel)
        except asyncpg.UniqueViolationError:
            # A start took the key after this statement's snapshot (the unique index waited
            # for it to commit); run again, so the statement sees and names the holder.
            row = await self._fetchrow("instance_retry", id, now, self.channel)
        assert row is not None
        return row

    # -- the web dashboard's reads (sql/dashboard.sql) ---------------------------------------

    async def throughput_by_minute(
        self, now: datetime | None, minutes: int
    ) -> list[asyncpg.Record]:
        """Instances ended per (minute, status) over the last `minutes` minutes."""
        return list(await self._run("fetch", "throughput_by_minute", now, minutes))

    async def queue_oldest_due(
        self, queues: Sequence[str], now: datetime | None
    ) -> list[asyncpg.Record]:
        """Per queue with due rows: the one that has waited longest, and for how long."""
        return list(await self._run("fetch", "queue_oldest_due", list(queues), now))

    async def children_page(
        self, parent_id: int, after_id: int | None, limit: int
    ) -> list[asyncpg.Record]:
        """Up to `limit` children of an instance with ids above `after_id`, in spawn order."""
        return list(await self._run("fetch", "children_page", parent_id, after_id, limit))

    async def inbox_page(
        self, instance_id: int, after_id: int | None, limit: int
    ) -> list[asyncpg.Record]:
        """Up to `limit` pending signals of an instance with ids above `after_id`."""
        return list(await self._run("fetch", "inbox_page", instance_id, after_id, limit))

    async def nodes_page(
        self, now: datetime | None, after_id: str | None, limit: int
    ) -> list[asyncpg.Record]:
        """Up to `limit` live nodes with ids above `after_id`, in id order."""
        return list(await self._run("fetch", "nodes_page", now, after_id, limit))

    async def _fetchrow(self, name: str, *args: Any) -> asyncpg.Record | None:
        row: asyncpg.Record | None = await self._run("fetchrow", name, *args)
        return row

    async def _run(self, method: str, name: str, *args: Any) -> Any:
        """Run statement `name` with `method` (fetch, fetchrow, fetchval, execute).

        Statements whose repeat is harmless are retried through connection failures (a
        restarting server) for up to `retry_for`; the others only when the failure came
        before the statement was sent.
        """
        sql = self.sql[name]
        call_timeout = self.timeout

        async def once(conn: Any) -> Any:
            return await getattr(conn, method)(sql, *args, timeout=call_timeout)

        return await self._retrying(once, idempotent=name not in NOT_IDEMPOTENT)

    async def _retrying(self, action: Callable[[Any], Awaitable[Any]], *, idempotent: bool) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for
        delay = 0.05
        while True:
            sent = False
            try:
                async with self.pool.acquire(timeout=self.timeout) as conn:
                    sent = True
                    try:
                        result = await action(conn)
                    except asyncpg.InternalClientError as exc:
                        sent = not _stuck(exc)  # asyncpg closed it, having sent nothing
                        raise
            except RETRYABLE as exc:
                if not _transient(exc):
                    raise
                if (sent and not idempotent) or loop.time() + delay > deadline:
                    raise
                lost = exc if isinstance(exc, TRANSIENT) or _stuck(exc) else exc.__context__
                assert lost is not None
                self.outage.failed(lost, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            else:
                if self.outage.active:
                    self.outage.recovered()
                return result

    async def _guarded(self, name: str, *args: Any) -> bool:
        row = await self._fetchrow(name, *args)
        return row is not None
