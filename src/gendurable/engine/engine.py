"""The engine: the composition root that runs workflows on one PostgreSQL schema.

`async with gd.Engine(dsn, workflows=[...], queues={...}):` opens a pool, applies the schema
(`migrate="auto"`), listens for notifications and runs one scheduler per queue. With no
queues it is a client only (start, signal, get, result, cancel).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

from .. import routing
from ..clock import Clock
from ..codec import DEFAULT_MAX_PAYLOAD_BYTES
from ..db.connect import resolve_dsn
from ..db.engine_store import EngineStore
from ..db.listener import Listener
from ..db.maintenance_store import MaintenanceStore
from ..db.migrator import check_version, migrate
from ..db.pool import Database
from ..db.schedule_store import ScheduleStore
from ..embedded import EmbeddedPostgres
from ..errors import ConfigError, EngineError
from ..events import SIGNAL_DELIVERED, SIGNAL_DUPLICATE, STEP_EXCEPTION
from ..limit import Limit
from ..maintenance.collector import Collector
from ..maintenance.loop import every
from ..maintenance.nodes import Nodes
from ..maintenance.reaper import Reaper
from ..maintenance.ticker import REFRESH, Ticker
from ..outcome import ChildEntry
from ..records import Handle, InstanceInfo, QueuePause
from ..schedule import Schedule
from ..spec import WorkflowSpec
from ..telemetry import FAILURES, Telemetry, failure_handler
from .client import Client
from .committer import Committer
from .config import EngineConfig
from .decide import Catalog
from .drain import drain
from .executor import Executor
from .local import LocalRunner
from .notifier import Notifier
from .pauses import Pauses
from .poller import Poller
from .rate_config import write_rate_configs
from .scheduler import Scheduler
from .watchdog import LoopWatchdog

_log = logging.getLogger("gendurable.engine")

CLOSE_GRACE = 2.0
"""Seconds `stop()` gives releases, and then connections, to finish before giving up."""


class Engine:
    """Runs the steps of `workflows` on the `queues` it is given, durably, in PostgreSQL.

    `dsn` (a URL or a libpq key=value string) falls back to `$GENDURABLE_DSN`, then to the
    embedded server (extra `embedded`). Every step failure is logged as one WARNING line on
    `gendurable.steps` (`telemetry.failure_handler`, attached as `"gendurable.failures"`).
    `queues` maps a queue name to its concurrency; none makes a client-only engine.
    `clock=ManualClock()` makes time move only by hand (tests: `await engine.drain()`).
    `lease` is how long a claim lasts without a heartbeat (every lease/3), for workflows that
    set no `lease=` of their own; past it the reaper hands the instance to another worker.
    `rate_limits` maps limit names to `gd.Limit`s, written to the database at start with the
    inline limits of the workflows (the last engine to start wins); an engine with queues
    refuses, with `ConfigError`, a step whose named limit it lacks or whose weight is above
    the limit's burst. Every engine with queues collects garbage every `gc_interval`:
    terminal instances older than `gc_retention` (None keeps them), idle rate buckets and
    configs no running engine holds, `gc_batch` rows per statement. `max_payload_bytes`
    bounds each state, result, signal payload and child state, as encoded JSON: a bigger
    one is refused with `ValidationError` before anything is written (for a step's outcome,
    the error path decides).
    `listen=False` opens no LISTEN connection (for a transaction-pooling proxy, with
    `prepare=False`): schedulers and `result()` then find work and ends by polling every
    `poll_interval`.
    `local_starts` (on by default, off under a manual clock) lets a start made in this
    process, or a signal it sends, run at once on one of its schedulers with a free slot: the
    row is written already claimed (no notification, no claim statement).
    `schedules` lists `gd.Schedule`s of its workflows, each with its own name: engines with
    queues start each tick's instance, exactly once across all of them (checking for due
    ticks every `poll_interval`; under a manual clock, in `drain()`).

    Every option is checked, for its type and range, when the engine is built: a bad one
    raises `ConfigError` before anything connects. `engine.config` holds them, validated and
    frozen (an `EngineConfig`).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        workflows: Sequence[Any],
        name: str = "default",
        schema: str = "gendurable",
        queues: Mapping[str, int] | None = None,
        rate_limits: Mapping[str, Limit] | None = None,
        schedules: Sequence[Schedule] | None = None,
        clock: Clock | None = None,
        lease: timedelta = timedelta(seconds=30),
        poll_interval: timedelta = timedelta(seconds=1),
        min_demand: int = 1,
        reap_interval: timedelta = timedelta(seconds=5),
        gc_retention: timedelta | None = timedelta(days=1),
        migrate: Literal["auto"] | bool = "auto",
        prepare: bool = True,
        pool_size: int | None = None,
        statement_timeout: timedelta = timedelta(seconds=30),
        gc_interval: timedelta = timedelta(minutes=1),
        gc_batch: int = 1000,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        local_starts: bool | None = None,
        listen: bool = True,
    ) -> None:
        self.config = EngineConfig.build(
            dsn,
            workflows=workflows,
            name=name,
            schema=schema,
            queues=queues,
            rate_limits=rate_limits,
            schedules=schedules,
            clock=clock,
            lease=lease,
            poll_interval=poll_interval,
            min_demand=min_demand,
            reap_interval=reap_interval,
            gc_retention=gc_retention,
            migrate=migrate,
            prepare=prepare,
            pool_size=pool_size,
            statement_timeout=statement_timeout,
            gc_interval=gc_interval,
            gc_batch=gc_batch,
            max_payload_bytes=max_payload_bytes,
            local_starts=local_starts,
            listen=listen,
        )
        self.telemetry = Telemetry()
        self.telemetry.attach(FAILURES, failure_handler(), [STEP_EXCEPTION])
        self.schedulers: dict[str, Scheduler] = {}
        self._objects = {
            n: _instantiate(s) for n, s in self.config.specs.items() if s.cls is not None
        }
        self._db: Database | None = None
        self._store: EngineStore | None = None
        self._client: Client | None = None
        self._listener: Listener | None = None
        self._loops: list[asyncio.Task[None]] = []  # heartbeats and the reaper
        self._claim_loops: list[asyncio.Task[None]] = []
        self._embedded: EmbeddedPostgres | None = None
        self._executor: Executor | None = None
        self.reaper: Reaper | None = None
        self.collector: Collector | None = None
        self.nodes: Nodes | None = None
        self.ticker: Ticker | None = None
        self._started = False
        self._watchdog: LoopWatchdog | None = None
        self._pauses: Pauses | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect, migrate (when `migrate` is on), listen and start the schedulers."""
        if self._started:
            raise EngineError(f"engine {self.name!r} is already running")
        routing.register(self)
        try:
            await self._open()
        except BaseException:
            routing.unregister(self)
            await self._close()
            raise
        self._started = True

    async def _open(self) -> None:
        """Wire the engine: the database and listener, the pauses, the client, the queues,
        maintenance."""
        store, upkeep = await self._connect()
        config, specs, clock = self.config, self.config.specs, self.config.clock
        pauses = Pauses(
            store.db, clock, config.queues, wake=self._wake_queue, telemetry=self.telemetry
        )
        self._pauses = pauses
        notifier = Notifier(
            self._listener,
            self._wake_queue,
            poll_interval=config.poll_interval.total_seconds(),
            pause_changed=lambda queue, paused: pauses.changed(queue, paused=paused),
        )
        if self._listener is not None:
            await self._listener.start()
        if config.queues:  # after LISTEN: a pause from now on is announced
            await pauses.listed()
        self._client = Client(
            specs,
            store,
            clock,
            notifier,
            self.telemetry,
            LocalRunner(specs, self.schedulers, config.leases) if config.local_starts else None,
            objects=self._objects,
            max_payload_bytes=config.max_payload_bytes,
        )
        await self._start_queues(store, pauses)
        await self._start_maintenance(upkeep)

    async def _connect(self) -> tuple[EngineStore, MaintenanceStore]:
        """Open the pool, migrate (or check) the schema, write the rate limits, and make the
        listener (started by the caller)."""
        config = self.config
        dsn = resolve_dsn(config.dsn)
        if dsn is None:
            dsn = await self._start_embedded()
        timeout = config.statement_timeout.total_seconds()
        db = await Database.open(
            dsn,
            config.schema,
            max_size=config.pool_size,
            prepare=config.prepare,
            timeout=timeout,
            engine_plans=True,
        )
        self._db = db
        store = self._store = EngineStore(db)
        if config.migrate:
            # On a connection of its own: a migration run outside a transaction holds a
            # session-level lock, which a pool's connections must never keep.
            await migrate(dsn, schema=config.schema)
        else:
            async with db.pool.acquire() as conn:
                await check_version(conn, schema=config.schema)
        await write_rate_configs(store, config.rate_configs, config.clock.now())
        if config.listen:
            self._listener = Listener(dsn, db.channel, timeout=timeout)
        return store, MaintenanceStore(db)

    async def _start_queues(self, store: EngineStore, pauses: Pauses) -> None:
        """One scheduler per queue (after the reclaim of a dead predecessor's claims), its
        claim loop and its heartbeat; the executor they share; the watchdog and the poller."""
        config, specs, clock, leases = (
            self.config,
            self.config.specs,
            self.config.clock,
            self.config.leases,
        )
        versions = {name: spec.version for name, spec in specs.items()}
        committer = Committer(store, clock, self.telemetry, leases, versions)
        catalog = Catalog(specs, config.rate_configs.limits, config.max_payload_bytes)
        executor = Executor(specs, self._objects, committer, self.telemetry, self, catalog)
        executor.paused = pauses.known
        self._executor = executor
        known = [(w, s, leases[w]) for w, spec in specs.items() for s in spec.steps]
        awaiting = frozenset(
            (w, s.name) for w, spec in specs.items() for s in spec.steps.values() if s.awaits
        )
        for queue, concurrency in config.queues.items():
            scheduler = Scheduler(
                engine_name=config.name,
                queue=queue,
                concurrency=concurrency,
                min_demand=config.demand(queue),
                store=store,
                clock=clock,
                executor=executor,
                known=known,
                awaiting=awaiting,
                telemetry=self.telemetry,
                paused=pauses.known,
            )
            self.schedulers[queue] = scheduler
            await scheduler.reclaim()
            await scheduler.report_unknown()
            self._claim_loops.append(
                asyncio.create_task(scheduler.loop(), name=f"gendurable:{queue}")
            )
            self._loops.append(
                asyncio.create_task(
                    every(config.heartbeat, scheduler.heartbeat, f"heartbeat {queue}"),
                    name=f"gendurable:{queue}:heartbeat",
                )
            )
        if not config.queues:
            return
        # A step that blocks the event loop stops every heartbeat: the watchdog says which.
        self._watchdog = LoopWatchdog(
            specs,
            self.telemetry,
            threshold=config.heartbeat.total_seconds(),
            lease=config.shortest_lease.total_seconds(),
            engine=config.name,
        )
        self._watchdog.start()
        poller = Poller(store, clock, self.schedulers, self.telemetry, pauses)
        self._loops.append(
            asyncio.create_task(
                every(config.poll_interval, poller.run_once, "poller"),
                name="gendurable:poller",
            )
        )

    async def _start_maintenance(self, upkeep: MaintenanceStore) -> None:
        """This node's record and heartbeat, the reaper, the schedules' ticker and the
        collector. With a manual clock none of them loops: time moves only by hand, and
        drain() runs them."""
        config, clock = self.config, self.config.clock
        self.nodes = Nodes(
            upkeep,
            clock,
            engine_name=config.name,
            queues=config.queues,
            specs=config.specs,
            heartbeat=config.heartbeat,
            telemetry=self.telemetry,
        )
        await self.nodes.register()
        self.reaper = Reaper(upkeep, clock, self.telemetry)
        self.ticker = Ticker(
            ScheduleStore(upkeep.db),
            clock,
            self.telemetry,
            config.schedules if config.queues else (),
            node=self.nodes.id,
            max_payload_bytes=config.max_payload_bytes,
        )
        if config.queues:
            await self.ticker.declare()
        self.collector = Collector(
            upkeep,
            clock,
            self.telemetry,
            retention=config.gc_retention,
            batch=config.gc_batch,
            configs=config.rate_configs,
        )
        if clock.manual:
            return
        self._loops.append(asyncio.create_task(self.nodes.loop(), name="gendurable:node"))
        if not config.queues:
            return
        self._loops.append(
            asyncio.create_task(
                every(config.reap_interval, self.reaper.run_once, "reaper"),
                name="gendurable:reaper",
            )
        )
        if config.schedules:
            self._loops.append(
                asyncio.create_task(
                    every(
                        config.poll_interval,
                        functools.partial(self.ticker.run_once, upkeep=False),
                        "schedules",
                    ),
                    name="gendurable:schedules",
                )
            )
        self._loops += [
            asyncio.create_task(
                every(REFRESH, self.ticker.run_once, "schedules upkeep"),
                name="gendurable:schedules:upkeep",
            ),
            asyncio.create_task(
                every(config.gc_interval, self.collector.run_once, "collector"),
                name="gendurable:collector",
            ),
        ]

    async def _start_embedded(self) -> str:
        self._embedded = EmbeddedPostgres()
        await self._embedded.astart()
        return str(self._embedded.dsn)

    async def stop(self, timeout: float | None = 30.0) -> None:
        """Stop claiming, let running steps finish within `timeout`, release the rest.

        Releasing and closing get a short grace on top of `timeout`; when the database is
        unreachable they give up then, and the leases of what could not be released expire
        as after a crash; a claim in flight gets as long to give back what it took, and a
        group commit still sending a cancelled step's outcome (its row locked by someone
        else) as long to end. So `stop()` returns within about `timeout` + 4 x `CLOSE_GRACE`,
        and leaves no task of the engine running.
        """
        if not self._started:
            return
        self._started = False
        for scheduler in self.schedulers.values():
            scheduler.stop_claiming()
        for task in self._claim_loops:
            task.cancel()
        await asyncio.gather(*self._claim_loops, return_exceptions=True)
        if self._executor is not None:
            self._executor.keep_claims = False
        idle = [asyncio.create_task(s.idle()) for s in self.schedulers.values()]
        running: list[asyncio.Task[None]] = []
        if idle:
            _, pending = await asyncio.wait(idle, timeout=timeout)
            for task in pending:
                task.cancel()
            for scheduler in self.schedulers.values():
                running += scheduler.cancel_running()
            if running:
                await asyncio.wait(running, timeout=CLOSE_GRACE)
        if self._executor is not None:
            # A step cancelled above may have left its outcome in a group commit that is
            # still sending it (rows locked by someone else are resent after a pause).
            await self._executor.committer.group.close(grace=CLOSE_GRACE)
        routing.unregister(self)
        await self._close()
        if running:  # releases still waiting on an unreachable database fail fast now
            await asyncio.gather(*running, return_exceptions=True)

    async def _close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None
        loops = self._claim_loops + self._loops
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        self._loops.clear()
        self._claim_loops.clear()
        self.schedulers.clear()
        self._client = None
        self._pauses = None
        self._executor = None
        self.reaper = None
        self.collector = None
        self.ticker = None
        if self.nodes is not None and self._db is not None:
            await self.nodes.remove(grace=CLOSE_GRACE)
        self.nodes = None
        if self._listener is not None:
            await self._listener.stop(grace=CLOSE_GRACE)
            self._listener = None
        self._store = None
        if self._db is not None:
            await self._db.close(grace=CLOSE_GRACE)
            self._db = None
        if self._embedded is not None:
            await self._embedded.astop()
            self._embedded = None

    def _wake_queue(self, queue: str) -> None:
        if not queue:
            for scheduler in self.schedulers.values():
                scheduler.wake()
        elif queue in self.schedulers:
            self.schedulers[queue].wake()

    # -- running -----------------------------------------------------------------------

    async def drain(self, *, max_rounds: int = 100_000) -> None:
        """Run everything due until nothing is, and no step of this engine is in flight.

        Due schedule ticks count: their instances are started, then run like any other.

        Then collect garbage once (terminal rows older than `gc_retention` by the clock).
        """
        self._require()
        await drain(
            self.schedulers,
            pauses=self._pauses,
            reaper=self.reaper,
            ticker=self.ticker,
            collector=self.collector,
            nodes=self.nodes,
            max_rounds=max_rounds,
        )

    # -- the client API (the class-level API routes here) -------------------------------

    def serves(self, workflow: str) -> bool:
        """True when `workflow` is one this engine was given."""
        return workflow in self.config.specs

    async def start_instance(self, workflow: str, **options: Any) -> Handle:
        """Start one instance of `workflow` (see `Flow.start`)."""
        return await self._require().start(workflow, **options)

    async def start_many(self, entries: Iterable[ChildEntry]) -> list[Handle]:
        """Insert many entries (from `Flow.new`) in one statement; handles in entry order."""
        return await self._require().start_many(list(entries))

    async def signal(
        self,
        workflow: str,
        key_or_id: str | int,
        name: str,
        payload: Any = None,
        *,
        idempotency_key: str | None = None,
    ) -> Any:
        """Deliver a signal (see `Flow.signal`); returns the stored signal's id (with an
        `idempotency_key` used before for this instance: the first send's, storing nothing)."""
        sent = await self._require().signal(
            workflow, key_or_id, name, payload, idempotency_key=idempotency_key
        )
        meta = {"workflow": workflow, "target": key_or_id, "name": name, "signal_id": sent.id}
        if sent.duplicate:
            self.telemetry.emit(SIGNAL_DUPLICATE, {}, {**meta, "idempotency_key": idempotency_key})
        else:
            self.telemetry.emit(SIGNAL_DELIVERED, {}, meta)
        return sent.id

    # -- queues ---------------------------------------------------------------------------

    async def pause(self, queue: str, *, by: str | None = None) -> bool:
        """Pause `queue` on every engine of this schema, until `resume(queue)`.

        Durable (stored in the database, kept across restarts) and exact: once this returns,
        no engine starts a new step of the queue, whether or not it has heard of the pause
        (an engine that listens hears at once, the others within their poll interval). Steps
        running now finish and commit; a goto to a next step leaves it available, unrun.
        Starts, signals and await timeouts are still accepted and stored; `blocked_by` of a
        waiting instance of the queue says `paused`. Works on a client-only engine, and for
        a queue no engine runs yet. `by` says who paused it (default: this engine's node
        id). Returns False when the queue was paused already (its first pause is kept).
        """
        pauses = self._require_pauses()
        return await pauses.pause(queue, by if by is not None else self._node_name())

    async def resume(self, queue: str) -> bool:
        """Resume a paused `queue` on every engine: its due instances run again (at once on
        the engines that listen). Returns False when it was not paused."""
        return await self._require_pauses().resume(queue)

    async def paused_queues(self) -> list[QueuePause]:
        """Every paused queue of this schema (queue, since when, by whom), in name order."""
        return await self._require_pauses().listed()

    def _require_pauses(self) -> Pauses:
        self._require()
        assert self._pauses is not None
        return self._pauses

    def _node_name(self) -> str:
        return self.nodes.id if self.nodes is not None else self.name

    async def get(self, workflow: str, key_or_id: str | int) -> InstanceInfo:
        """A snapshot of one instance."""
        return await self._require().get(workflow, key_or_id)

    async def result(self, workflow: str, key_or_id: str | int, timeout: float | None) -> Any:
        """Wait for the instance to end; its result, or `WorkflowFailed`."""
        return await self._require().result(workflow, key_or_id, timeout)

    async def cancel(self, workflow: str, key_or_id: str | int) -> None:
        """Cancel a live instance and its live descendants (see `Flow.cancel`)."""
        await self._require().cancel(workflow, key_or_id)

    async def pause_schedule(self, name: str) -> None:
        """Pause schedule `name` for every engine, durably: its ticks start nothing until
        `resume_schedule(name)`. `NoTarget` when no engine ever declared such a schedule."""
        await self._set_paused(name, True)

    async def resume_schedule(self, name: str) -> None:
        """Resume schedule `name` from now: ticks that came due while it was paused do not
        run. `NoTarget` when no engine ever declared such a schedule."""
        await self._set_paused(name, False)

    async def _set_paused(self, name: str, paused: bool) -> None:
        self._require()
        assert self.ticker is not None  # set while the engine runs
        await self.ticker.set_paused(name, paused)

    def _require(self) -> Client:
        if self._client is None:
            raise EngineError(
                f"engine {self.name!r} is not running: use `async with engine:` first"
            )
        return self._client

    @property
    def name(self) -> str:
        """The engine's name (`config.name`)."""
        return self.config.name

    @property
    def schema(self) -> str:
        """The PostgreSQL schema holding its tables (`config.schema`)."""
        return self.config.schema

    @property
    def dsn(self) -> str | None:
        """The DSN it was given, if any (`config.dsn`)."""
        return self.config.dsn

    @property
    def clock(self) -> Clock:
        """Where its statements get `now` (`config.clock`)."""
        return self.config.clock

    @property
    def specs(self) -> Mapping[str, WorkflowSpec]:
        """The workflows it serves, by name (`config.specs`)."""
        return self.config.specs

    @property
    def workflow_objects(self) -> Mapping[str, Any]:
        """The object of each workflow class, by name: its steps and upgrades run on it."""
        return self._objects

    @property
    def store(self) -> EngineStore:
        """The engine's statements (for tests and tools); `store.db` is its database."""
        if self._store is None:
            raise EngineError(f"engine {self.name!r} is not running")
        return self._store

    def __repr__(self) -> str:
        c = self.config
        return f"<Engine {c.name!r} schema={c.schema!r} queues={dict(c.queues)}>"


def _instantiate(spec: WorkflowSpec) -> Any:
    """The object whose methods are the steps: the workflow class, built with no arguments."""
    assert spec.cls is not None
    try:
        return spec.cls()
    except TypeError as exc:
        raise ConfigError(
            f"workflow {spec.name!r}: the engine builds {spec.cls.__qualname__}() with no "
            f"arguments to run its steps, which failed: {exc}"
        ) from None
