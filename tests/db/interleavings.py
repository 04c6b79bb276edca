"""The interleaving matrix's machinery (the cases are in `test_interleavings.py`).

A case sets up a few rows on queue `m`, then runs one statement (through the real store
method, so with the engine's prepared statements and arguments) twice:

- **control**: the rows, the concurrent update already committed (for a harmless update,
  the same as no interference at all), then the statement;
- **interfered**: the rows; a second connection opens a transaction, locks the row the
  statement must act on (`FOR UPDATE`), updates it (by default harmlessly, as a heartbeat
  would) and keeps the transaction open; the statement starts. A statement that waits for
  row locks must block on that transaction (seen in `pg_blocking_pids`, never guessed with a
  sleep); the transaction then commits and the statement finishes. A statement that takes
  rows with SKIP LOCKED must finish without waiting, passing over the held row; the
  transaction commits and the statement runs again, and the two runs together must do what
  the control did in one.

The outcome (what the statement returned, and every column of the case's rows, signals,
buckets and configs) must be equal. Ids differ between the runs, so they are compared as
labels: the role a row was given at setup, or `new<n>` for rows the statement created.

Every case runs under the default plans and under forced alternatives (`PLANS`), on an empty
schema and on one holding a few thousand analyzed filler rows (`SIZES`) that no statement
may touch (checked after every run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import msgspec

from gendurable.db.maintenance_store import MaintenanceStore
from gendurable.db.migrator import migrate
from gendurable.db.pool import Database, init_connection
from gendurable.db.repair_store import RepairStore
from gendurable.db.schema_admin import drop_schema


class Store(RepairStore, MaintenanceStore):
    """Every statement the matrix runs, on one database: the engine's, the maintenance
    loops' and the operators' (repairs included)."""


T = datetime(2030, 1, 1, tzinfo=UTC)
"""`now` of every statement the matrix runs (the manual clock's role)."""

FILLER_AT = T - timedelta(days=2)
"""`updated_at` of every filler row: a statement that touched one would have moved it."""

PLANS: dict[str, dict[str, str]] = {
    "default": {},
    "generic": {"plan_cache_mode": "force_generic_plan"},
    "no_seqscan": {"enable_seqscan": "off"},
    "no_nestloop": {"enable_nestloop": "off"},
    "no_hashjoin": {"enable_hashjoin": "off"},
    "no_mergejoin": {"enable_mergejoin": "off"},
    # What the engine set for its sessions until 0c0f59d, where the state machine saw a
    # cancel refused for a live instance.
    "generic_no_seqscan": {"plan_cache_mode": "force_generic_plan", "enable_seqscan": "off"},
}
"""Planner settings of the statement's session, one set per run of a case."""

SIZES = ("empty", "filled")

FILLER = 3000
"""Filler instances in the filled schema (plus about as many signals and a thousand buckets)."""

TABLES = ("instances", "signals", "rate_buckets", "rate_configs")

# Result columns that hold ids of instances, and of signals (compared as labels).
ID_COLUMNS = frozenset(
    {"id", "woken_id", "instance_id", "holder", "parent_id", "retried", "rewound", "last_id"}
)
SIGNAL_COLUMNS = frozenset({"signal_id", "inbox_ids"})

HARMLESS = {
    "instances": "updated_at = updated_at",
    "signals": "payload = payload",
    "rate_buckets": "tokens = tokens",
    "rate_configs": "updated_at = updated_at",
}
"""The concurrent update of each table when a case names none: a new row version, same values."""


@dataclass(frozen=True, slots=True)
class Ref:
    """A row the setup made, by table and key (an id, or a bucket's or config's key)."""

    table: str
    key: tuple[Any, ...]

    def where(self) -> str:
        return {
            "instances": "id = $1",
            "signals": "id = $1",
            "rate_buckets": "name = $1 AND partition = $2",
            "rate_configs": "name = $1",
        }[self.table]


class Rows:
    """Inserts a case's rows on the admin connection; remembers each one's role."""

    def __init__(self, conn: asyncpg.Connection, schema: str) -> None:
        self.conn = conn
        self.s = f'"{schema}"'
        self.refs: dict[str, Ref] = {}

    def id(self, role: str) -> int:
        ref = self.refs[role]
        assert ref.table in ("instances", "signals"), role
        value: int = ref.key[0]
        return value

    async def instance(
        self,
        role: str,
        *,
        status: str = "available",
        step: str = "work",
        key: str | None = None,
        parent: str | None = None,
        pending: int = 0,
        locked_by: str | None = None,
        locked_until: datetime | None = None,
        await_names: Sequence[str] | None = None,
        await_deadline: datetime | None = None,
        attempt: int = 0,
        max_attempts: int = 5,
        run_at: datetime = T - timedelta(minutes=1),
        finished_at: datetime | None = None,
        concurrency_key: str | None = None,
        rate_limit: str | None = None,
        rate_partition: str | None = None,
        error: str | None = None,
    ) -> int:
        """One `m.flow` row on queue `m`, inserted at `T - 1h`."""
        at = T - timedelta(hours=1)
        id: int = await self.conn.fetchval(
            f"INSERT INTO {self.s}.instances (workflow, queue, step, state, status, run_at, key, "
            "parent_id, pending_children, locked_by, locked_until, await_names, await_deadline, "
            "attempt, max_attempts, finished_at, concurrency_key, rate_limit, rate_partition, "
            "error, inserted_at, updated_at) "
            f"VALUES ('m.flow', 'm', $1, '{{\"n\": 1}}', $2::text::{self.s}.status, $3, $4, $5, "
            "$6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17::jsonb, $18, $18) "
            "RETURNING id",
            step,
            status,
            run_at,
            key,
            None if parent is None else self.id(parent),
            pending,
            locked_by,
            locked_until,
            None if await_names is None else list(await_names),
            await_deadline,
            attempt,
            max_attempts,
            finished_at,
            concurrency_key,
            rate_limit,
            rate_partition,
            error,
            at,
        )
        self.refs[role] = Ref("instances", (id,))
        return id

    async def signal(self, role: str, instance: str, name: str = "go") -> int:
        id: int = await self.conn.fetchval(
            f"INSERT INTO {self.s}.signals (instance_id, name, payload, received_at) "
            "VALUES ($1, $2, '{\"v\": 1}', $3) RETURNING id",
            self.id(instance),
            name,
            T - timedelta(minutes=30),
        )
        self.refs[role] = Ref("signals", (id,))
        return id

    async def config(
        self, role: str, name: str, *, allowed: int = 10, burst: int = 10, updated_at: datetime = T
    ) -> None:
        await self.conn.execute(
            f"INSERT INTO {self.s}.rate_configs (name, allowed, per_ms, burst, updated_at) "
            "VALUES ($1, $2, 60000, $3, $4)",
            name,
            allowed,
            burst,
            updated_at,
        )
        self.refs[role] = Ref("rate_configs", (name,))

    async def bucket(
        self, role: str, name: str, partition: str, *, tokens: float, refreshed_at: datetime
    ) -> None:
        await self.conn.execute(
            f"INSERT INTO {self.s}.rate_buckets (name, partition, tokens, refreshed_at) "
            "VALUES ($1, $2, $3, $4)",
            name,
            partition,
            tokens,
            refreshed_at,
        )
        self.refs[role] = Ref("rate_buckets", (name, partition))


Setup = Callable[[Rows], Awaitable[None]]
Run = Callable[[Store, Rows], Awaitable[Any]]


@dataclass(frozen=True)
class Outcome:
    """What a run left: the statement's result and the case's rows, ids as labels."""

    result: Any
    instances: dict[str, dict[str, Any]]
    signals: dict[str, dict[str, Any]]
    buckets: list[dict[str, Any]]
    configs: list[dict[str, Any]]

    def row(self, label: str) -> dict[str, Any]:
        return self.instances[label]

    def status(self, label: str) -> str:
        status: str = self.instances[label]["status"]
        return status


@dataclass(frozen=True)
class Case:
    """One statement under one interleaving: the rows, the call, the row another transaction
    holds, what that transaction writes, and what the control run must show."""

    id: str
    statements: tuple[str, ...]
    setup: Setup
    run: Run
    hold: str
    expect: Callable[[Outcome], bool]
    touch: str | None = None
    also: str | None = None
    """More SQL of the concurrent transaction, after the update (`__schema__` the schema, $1
    the held row's id): what else that transaction writes, such as a spawn's children."""
    skips: bool = False
    skipped: Callable[[Outcome], bool] | None = None
    """For a SKIP LOCKED statement: what its first run, with the row held, must show."""
    may_wait: bool = False
    """The statement need not wait (its guard fails before it takes the lock on some plans)."""
    reaches: tuple[str, ...] = ()
    """Schema functions the statement calls in this case (`instances_ended`, ...)."""
    merge: Callable[[Any, Any], Any] | None = None
    """How a SKIP LOCKED statement's two runs add up to the control's one (default: by type)."""
    ignore: tuple[str, ...] = ()
    """`buckets.<column>` left out of the comparison: scratch a run overwrites (say why)."""


@dataclass
class Schemas:
    """The two schemas of a module, and the connection that sets up and reads rows."""

    dsn: str
    names: dict[str, str]
    admin: asyncpg.Connection
    blocker: asyncpg.Connection
    filler: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Each schema's `filler_fingerprint` when it was made."""
    superuser: bool = False
    """Whether the admin connection may write the catalog (see `never_vacuumed`)."""

    async def filler_fingerprint(self, size: str) -> tuple[int, ...]:
        return await filler_fingerprint(self.admin, self.names[size])


async def create_schemas(dsn: str, prefix: str) -> Schemas:
    admin = await asyncpg.connect(dsn)
    await init_connection(admin)
    blocker = await asyncpg.connect(dsn)
    names = {size: f"{prefix}_{size}" for size in SIZES}
    schemas = Schemas(dsn, names, admin, blocker)
    try:
        await _build(schemas)
    except BaseException:
        await drop_schemas(schemas)
        raise
    return schemas


async def _build(schemas: Schemas) -> None:
    admin = schemas.admin
    schemas.superuser = await admin.fetchval("SELECT current_setting('is_superuser') = 'on'")
    for size, name in schemas.names.items():
        await migrate(schemas.dsn, schema=name)
        s = f'"{name}"'
        for table in TABLES:
            # Autovacuum's analyze would change the plans halfway through the module.
            await admin.execute(f"ALTER TABLE {s}.{table} SET (autovacuum_enabled = false)")
        if size == "filled":
            await fill(admin, name)
            for table in TABLES:
                await admin.execute(f"ANALYZE {s}.{table}")
        elif schemas.superuser:
            await never_vacuumed(admin, name)
        schemas.filler[size] = await filler_fingerprint(admin, name)


async def drop_schemas(schemas: Schemas) -> None:
    await schemas.admin.close()
    await schemas.blocker.close()
    for name in schemas.names.values():
        await drop_schema(schemas.dsn, name)


async def fill(conn: asyncpg.Connection, schema: str) -> None:
    """A realistic mix no statement of a case may touch: live rows of other queues that are
    not due for anything (leases and deadlines a day ahead, keys and claim names of their
    own), terminal rows finished an hour ago, parents with children, inboxes, buckets that
    are not full and configs refreshed now."""
    s = f'"{schema}"'
    columns = (
        "workflow, queue, step, state, status, attempt, priority, run_at, key, concurrency_key, "
        "rate_limit, rate_partition, locked_by, locked_until, await_names, await_deadline, "
        "pending_children, result, error, parent_id, spawn_index, inserted_at, updated_at, "
        "finished_at"
    )
    # g % 20 picks the status: 4 available, 3 executing, 3 awaiting, 2 waiting, 5 done,
    # 2 failed, 1 cancelled in 20. A third of the rows are parents, the rest their children.
    rows = f"""
        SELECT 'f.w' || (g % 10), 'f' || (g % 5), 'step' || (g % 7), jsonb_build_object('g', g),
               st::{s}.status, g % 3, (g % 3)::smallint,
               $1::timestamptz - interval '1 minute' * (g % 100),
               CASE WHEN g % 2 = 0 THEN 'fk' || PHASE || '-' || g END,
               CASE WHEN g % 7 = 0 THEN 'fck' || PHASE || '-' || g END,
               CASE WHEN g % 3 = 0 THEN 'f.api' END,
               CASE WHEN g % 3 = 0 THEN 'p' || (g % 50) END,
               CASE WHEN st = 'executing' THEN 'f:f0@fhost-1-a#' || PHASE || g END,
               CASE WHEN st = 'executing' THEN $1 + interval '1 day' END,
               CASE WHEN st = 'awaiting' THEN ARRAY['go'] END,
               CASE WHEN st = 'awaiting' AND g % 2 = 0 THEN $1 + interval '1 day' END,
               CASE WHEN st = 'waiting' THEN 2 ELSE 0 END,
               CASE WHEN st = 'done' THEN '{{"ok": true}}'::jsonb END,
               CASE WHEN st = 'failed' THEN '{{"type": "boom"}}'::jsonb END,
               PARENT, SPAWN_INDEX,
               $2::timestamptz, $2::timestamptz,
               CASE WHEN st IN ('done', 'failed', 'cancelled') THEN $1 - interval '1 hour' END
        FROM generate_series(1, $3::int) g,
             LATERAL (SELECT (ARRAY['available', 'available', 'available', 'available',
                                    'executing', 'executing', 'executing', 'awaiting',
                                    'awaiting', 'awaiting', 'waiting', 'waiting', 'done',
                                    'done', 'done', 'done', 'done', 'failed', 'failed',
                                    'cancelled'])[1 + g % 20] AS st) x
    """
    parents = FILLER // 3
    await conn.execute(
        f"INSERT INTO {s}.instances ({columns}) "
        + rows.replace("PARENT", "NULL::bigint")
        .replace("SPAWN_INDEX", "NULL::int")
        .replace("PHASE", "1"),
        T,
        FILLER_AT,
        parents,
    )
    first = await conn.fetchval(f"SELECT min(id) FROM {s}.instances")
    await conn.execute(
        f"INSERT INTO {s}.instances ({columns}) "
        + rows.replace("PARENT", f"{first} + (g * 7919) % {parents}")
        .replace("SPAWN_INDEX", "g / 3")
        .replace("PHASE", "2"),
        T,
        FILLER_AT,
        FILLER - parents,
    )
    await conn.execute(
        f"INSERT INTO {s}.signals (instance_id, name, payload, received_at) "
        f"SELECT i.id, CASE WHEN n = 1 THEN 'go' ELSE 'other' END, '{{}}', $1 "
        f"FROM {s}.instances i, generate_series(1, 2) n "
        "WHERE i.status IN ('available', 'executing', 'awaiting', 'waiting') "
        "  AND (n = 1 OR i.id % 3 = 0)",
        FILLER_AT,
    )
    await conn.execute(
        f"INSERT INTO {s}.rate_configs (name, allowed, per_ms, burst, updated_at) "
        "SELECT 'f.c' || g, 1, 86400000, 10, $1::timestamptz FROM generate_series(1, 50) g "
        "UNION ALL SELECT 'f.api', 1, 86400000, 10, $1",
        T,
    )
    await conn.execute(
        f"INSERT INTO {s}.rate_buckets (name, partition, tokens, refreshed_at) "
        "SELECT 'f.api', 'p' || g, 0, $1 FROM generate_series(0, 999) g",
        T,
    )


async def filler_fingerprint(conn: asyncpg.Connection, schema: str) -> tuple[int, ...]:
    """Counts that change when a statement deletes or writes a filler row."""
    s = f'"{schema}"'
    row = await conn.fetchrow(
        f"SELECT (SELECT count(*) FROM {s}.instances WHERE queue <> 'm'), "
        f"(SELECT count(*) FROM {s}.instances WHERE queue <> 'm' AND updated_at <> $1), "
        f"(SELECT count(*) FROM {s}.signals s JOIN {s}.instances i ON i.id = s.instance_id "
        "  WHERE i.queue <> 'm'), "
        f"(SELECT count(*) FROM {s}.rate_buckets WHERE name NOT LIKE 'm.%' "
        "  AND refreshed_at = $2 AND tokens = 0), "
        f"(SELECT count(*) FROM {s}.rate_configs WHERE name NOT LIKE 'm.%' AND updated_at = $2)",
        FILLER_AT,
        T,
    )
    assert row is not None
    return tuple(int(v) for v in row)


async def reset(schemas: Schemas, size: str) -> None:
    """Remove the previous run's rows (queue `m`, limits `m.*`) and vacuum, so that the
    schema's size, and so its plans, stay what they were when it was made."""
    s = f'"{schemas.names[size]}"'
    conn = schemas.admin
    if size == "empty" and not schemas.superuser:
        await conn.execute(f"TRUNCATE {', '.join(f'{s}.{t}' for t in TABLES)}")
        return
    await conn.execute(
        f"DELETE FROM {s}.instances WHERE queue = 'm'; "
        f"DELETE FROM {s}.rate_buckets WHERE name LIKE 'm.%'; "
        f"DELETE FROM {s}.rate_configs WHERE name LIKE 'm.%'"
    )
    await conn.execute(f"VACUUM {', '.join(f'{s}.{t}' for t in TABLES)}")
    if size == "empty":
        await never_vacuumed(conn, schemas.names[size])


async def never_vacuumed(conn: asyncpg.Connection, schema: str) -> None:
    """Mark the schema's tables as never vacuumed nor analyzed (`reltuples = -1`), as a
    fresh install's are: the planner then assumes ten pages for a table smaller than that,
    where it takes a vacuumed empty table at its word. TRUNCATE leaves the same state at ten
    times the cost of VACUUM; it is the way without a superuser (`reset`)."""
    await conn.execute(
        "UPDATE pg_class SET reltuples = -1 WHERE relkind = 'r' "
        "AND relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = $1)",
        schema,
    )


async def observe(conn: asyncpg.Connection, schema: str, rows: Rows, raw: Any) -> Outcome:
    """The case's rows after a run, and `raw` (the statement's result), ids as labels."""
    s = f'"{schema}"'
    setup = {ref.key[0]: role for role, ref in rows.refs.items() if ref.table == "instances"}
    setup_signals = {ref.key[0]: role for role, ref in rows.refs.items() if ref.table == "signals"}
    found = await conn.fetchrow(
        "SELECT "
        f"(SELECT jsonb_agg(jsonb_build_array(i.id, to_jsonb(i) - 'id') ORDER BY i.id) "
        f" FROM {s}.instances i WHERE i.queue = 'm'), "
        f"(SELECT jsonb_agg(jsonb_build_array(s.id, to_jsonb(s) - 'id') ORDER BY s.id) "
        f" FROM {s}.signals s JOIN {s}.instances i ON i.id = s.instance_id WHERE i.queue = 'm'), "
        f"(SELECT jsonb_agg(to_jsonb(b) ORDER BY b.name, b.partition) "
        f" FROM {s}.rate_buckets b WHERE b.name LIKE 'm.%'), "
        f"(SELECT jsonb_agg(to_jsonb(c) ORDER BY c.name) "
        f" FROM {s}.rate_configs c WHERE c.name LIKE 'm.%')"
    )
    assert found is not None
    inst, sigs, buckets, configs = (json.loads(v) if v else [] for v in found)
    labels: dict[int, str] = dict(setup)
    for n, (id, _) in enumerate((r for r in inst if r[0] not in setup), 1):
        labels[id] = f"new{n}"
    signal_labels: dict[int, str] = dict(setup_signals)
    for n, (id, _) in enumerate((r for r in sigs if r[0] not in setup_signals), 1):
        signal_labels[id] = f"signal{n}"

    def label(value: Any, table: Mapping[int, str]) -> Any:
        return value if value is None else table.get(value, f"?{value}")

    instances = {}
    for id, cols in inst:
        for column in ("parent_id", "children_from"):
            cols[column] = label(cols[column], labels)
        cols["await_seen"] = signal_labels.get(cols["await_seen"], cols["await_seen"])
        instances[labels[id]] = cols
    signals = {}
    for id, cols in sigs:
        cols["instance_id"] = label(cols["instance_id"], labels)
        signals[signal_labels[id]] = cols
    return Outcome(Labels(labels, signal_labels).normal(raw), instances, signals, buckets, configs)


@dataclass(frozen=True)
class Labels:
    """The labels of a run's instance ids and signal ids."""

    instances: Mapping[int, str]
    signals: Mapping[int, str]

    def normal(self, value: Any, ids: Mapping[int, str] | None = None) -> Any:
        """`value` with the ids it holds as labels (`ids`: the table of the ids it holds):
        record (or str-keyed dict) columns named in `ID_COLUMNS` and `SIGNAL_COLUMNS`, the
        int keys of dicts and the members of sets (the group commit's committed and busy
        ids), and values wrapped in `Ids`. Lists of records are sorted: row order is the
        plan's."""
        if isinstance(value, Ids):
            return self.normal(list(value.ids), self.instances)
        if isinstance(value, msgspec.Struct):  # a typed row
            return self.normal(msgspec.structs.asdict(value), ids)
        if isinstance(value, asyncpg.Record) or (
            isinstance(value, dict) and all(isinstance(k, str) for k in value)
        ):
            return {k: self.normal(v, self._table(k)) for k, v in value.items()}
        if isinstance(value, dict):
            return {self.normal(k, self.instances): self.normal(v) for k, v in value.items()}
        if isinstance(value, set | frozenset):
            return sorted(self.normal(v, self.instances) for v in value)
        if isinstance(value, list | tuple):
            items = [self.normal(v, ids) for v in value]
            if items and all(isinstance(v, dict) for v in items):
                items.sort(key=lambda v: json.dumps(v, sort_keys=True, default=str))
            return items
        if ids is not None and isinstance(value, int) and not isinstance(value, bool):
            return ids.get(value, f"?{value}")
        if isinstance(value, bytes):
            return value.decode()
        return value

    def _table(self, column: str) -> Mapping[int, str] | None:
        if column in ID_COLUMNS:
            return self.instances
        return self.signals if column in SIGNAL_COLUMNS else None


@dataclass(frozen=True)
class Ids:
    """Values a case's `run` returns that are instance or signal ids."""

    ids: tuple[int | None, ...]


def merge(first: Any, again: Any) -> Any:
    """What two runs of a SKIP LOCKED statement did together, by the shape of its result."""
    if isinstance(first, tuple) and len(first) == 2 and isinstance(first[0], dict):
        # the group commit: (committed ids, busy ids); the busy ones were sent again
        return ({**first[0], **again[0]}, again[1])
    if isinstance(first, list):
        return first + again
    if isinstance(first, int) and not isinstance(first, bool):
        return first + again
    raise TypeError(f"give the case a merge for {type(first).__name__}")


class Runner:
    """The statement's session: a store on a one-connection pool with the plan settings."""

    def __init__(self, store: Store, pid: int) -> None:
        self.store = store
        self.pid = pid

    @classmethod
    async def open(cls, dsn: str, schema: str, settings: Mapping[str, str]) -> Runner:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=1,
            init=init_connection,
            server_settings=dict(settings),
            command_timeout=30,
        )
        async with pool.acquire() as conn:
            pid = conn.get_server_pid()
            for name, value in settings.items():
                assert await conn.fetchval(f"SHOW {name}") == value
        return cls(Store(Database(pool, schema, retry_for=0)), pid)

    async def close(self) -> None:
        await self.store.db.pool.close()


async def blocked_by(conn: asyncpg.Connection, pid: int, blocker: int) -> bool:
    return bool(await conn.fetchval("SELECT $2 = ANY (pg_blocking_pids($1))", pid, blocker))


@dataclass(frozen=True)
class Runs:
    """A case's runs: the control, the first run of a SKIP LOCKED statement (the row still
    held, its outcome as the statement left it), and the interfered run (both runs of a SKIP
    LOCKED statement, merged)."""

    control: Outcome
    first: Outcome | None
    interfered: Outcome


async def run_case(schemas: Schemas, case: Case, plan: str, size: str) -> Runs:
    """Run `case` under `plan` on the `size` schema: the control, then the interfered run
    (checking that the statement waited, or skipped, as the case says)."""
    schema = schemas.names[size]
    runner = await Runner.open(schemas.dsn, schema, PLANS[plan])
    try:
        control = await control_run(schemas, runner, case, size)
        first, interfered = await interfered_run(schemas, runner, case, size)
    finally:
        await runner.close()
    return Runs(control, first, interfered)


def comparable(outcome: Outcome, case: Case) -> Outcome:
    """`outcome` without the bucket columns the case ignores."""
    dropped = {c.removeprefix("buckets.") for c in case.ignore}
    buckets = [{k: v for k, v in b.items() if k not in dropped} for b in outcome.buckets]
    return Outcome(outcome.result, outcome.instances, outcome.signals, buckets, outcome.configs)


async def control_run(schemas: Schemas, runner: Runner, case: Case, size: str) -> Outcome:
    schema = schemas.names[size]
    await reset(schemas, size)
    rows = Rows(schemas.admin, schema)
    await case.setup(rows)
    ref = rows.refs[case.hold]
    await schemas.admin.execute(touch_sql(schema, case, ref), *ref.key)
    if case.also:
        await schemas.admin.execute(also_sql(schema, case), *ref.key)
    raw = await case.run(runner.store, rows)
    return await observe(schemas.admin, schema, rows, raw)


def also_sql(schema: str, case: Case) -> str:
    assert case.also is not None
    return case.also.replace("__schema__", f'"{schema}"')


def touch_sql(schema: str, case: Case, ref: Ref) -> str:
    return (
        f'UPDATE "{schema}".{ref.table} SET {case.touch or HARMLESS[ref.table]} WHERE {ref.where()}'
    )


async def interfered_run(
    schemas: Schemas, runner: Runner, case: Case, size: str
) -> tuple[Outcome | None, Outcome]:
    schema = schemas.names[size]
    await reset(schemas, size)
    rows = Rows(schemas.admin, schema)
    await case.setup(rows)
    ref = rows.refs[case.hold]
    blocker = schemas.blocker
    await blocker.execute("BEGIN")
    open_ = True
    try:
        await blocker.execute(
            f'SELECT 1 FROM "{schema}".{ref.table} WHERE {ref.where()} FOR UPDATE', *ref.key
        )
        await blocker.execute(touch_sql(schema, case, ref), *ref.key)
        if case.also:
            await blocker.execute(also_sql(schema, case), *ref.key)
        task = asyncio.ensure_future(case.run(runner.store, rows))
        first = None
        try:
            waited = await watch(schemas.admin, task, runner.pid, blocker.get_server_pid())
            if case.skips:
                assert not waited, f"{case.id}: waited for the held row instead of skipping it"
                first = await observe(schemas.admin, schema, rows, task.result())
            elif not case.may_wait:
                assert waited, f"{case.id}: finished without waiting for the held row"
            await blocker.execute("COMMIT")
            open_ = False
            async with asyncio.timeout(15):
                raw = await task
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
    finally:
        if open_:
            await blocker.execute("ROLLBACK")
    if case.skips:
        again = await case.run(runner.store, rows)
        raw = (case.merge or merge)(raw, again)
    return first, await observe(schemas.admin, schema, rows, raw)


async def watch(
    admin: asyncpg.Connection, task: asyncio.Future[Any], pid: int, blocker: int
) -> bool:
    """Whether the statement (`task`, on backend `pid`) blocks on the blocker's transaction
    before it finishes. Polls the lock manager: no event tells a lock wait."""
    async with asyncio.timeout(15):
        while not task.done():
            if await blocked_by(admin, pid, blocker):
                return True
            await asyncio.sleep(0.002)
    task.result()  # a failure of the statement itself surfaces here
    return False
