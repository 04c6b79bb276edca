"""The chaos run: worker processes killed, stopped and restarted, the server crash-restarted,
while a client starts and signals thousands of workflows of `chaos_app`.

Shared by `test_chaos.py` (one batch, in the suite) and `bench/soak.py` (batches until the
time is up). No pytest here: everything fails by returning broken invariants.

- `ChaosServer`: a private embedded PostgreSQL that can be crash-restarted with
  `pg_ctl restart -m immediate` (other tests' server is never disturbed).
- `Workers`: `gendurable worker chaos_app:engine` processes, one per slot; a killed one is
  replaced by a fresh process (retried while the server is down).
- `run_batch(...)`: one batch on a fresh schema: plan, submit, chaos, wait, check.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import chaos_app
from chaos_app import LIMIT, Account, Call, Item, Pack, Tree
from chaos_checks import Freeze, Invariant, Plan, Root, Sent, check_all, planned_instances

import gendurable as gd
from gendurable.cli.runner import READY
from gendurable.embedded import EmbeddedPostgres

HERE = Path(__file__).resolve().parent
TERMINAL = ("done", "failed", "cancelled")


@dataclass
class ChaosConfig:
    """The knobs of one batch (the defaults are the suite's run: 2,000 instances)."""

    instances: int = 2000
    workers: int = 3
    concurrency: int = 12
    lease: float = 3.0
    submit_seconds: float = 35.0
    wave_interval: float = 0.25
    kill_interval: tuple[float, float] = (1.0, 3.0)
    freeze_interval: tuple[float, float] | None = (4.0, 7.0)
    """Every so often a worker is stopped (SIGSTOP) past its lease, then continued: its
    claims are rescued meanwhile, and its late commits must be dropped."""
    freeze_seconds: tuple[float, float] = (2.5, 5.5)
    """How long a stop lasts (random within): around the lease, so that the worker often
    resumes just as its claims are rescued, and its own scheduler may claim them again while
    the old executions finish."""
    restart_at: float | None = 0.4
    restart_downtime: float = 4.0
    """Seconds the crashed server stays down: longer than the lease, so claims expire while
    their workers still run the steps (every reaper then rescues them, and the workers' late
    commits must be dropped)."""
    """When the server is crash-restarted, as a fraction of the submission window."""
    finish_timeout: float = 100.0
    pack_timeout: float = 60.0
    linger_timeout: float = 2.0
    start_delay: float = 0.3
    """Allowance for the delay between a claim and its step's start (rate-limit check)."""
    single_share: float = 0.2
    """Share of the roots started one by one (the rest go through `start_many`)."""
    tenants: int = 4
    call_window: float = 0.4
    """The calls are all started within this fraction of the submission window."""
    seed: int | None = None


@dataclass
class BatchReport:
    """What a batch did and which invariants held."""

    schema: str
    invariants: list[Invariant]
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.invariants)

    def broken(self) -> list[Invariant]:
        return [i for i in self.invariants if not i.ok]

    def describe(self) -> str:
        lines = [json.dumps({"stats": self.stats})]
        lines += [json.dumps(i.as_json()) for i in self.invariants]
        return "\n".join(lines)


# --- the server --------------------------------------------------------------------------------


class ChaosServer:
    """A private embedded PostgreSQL that survives `pg_ctl restart -m immediate`."""

    def __init__(self) -> None:
        self.embedded = EmbeddedPostgres()
        self.dsn = ""
        self.restarted = False
        self._data: Path | None = None
        self._pg_ctl: Path | None = None
        self._socket_dir = ""

    async def start(self) -> str:
        self.dsn = await self.embedded.astart()
        assert self.embedded.data_dir is not None
        assert self.embedded.pid is not None
        self._data = self.embedded.data_dir
        self._pg_ctl = Path(os.readlink(f"/proc/{self.embedded.pid}/exe")).parent / "pg_ctl"
        self._socket_dir = parse_qs(urlsplit(self.dsn).query)["host"][0]
        return self.dsn

    def _run_pg_ctl(self, *args: str) -> None:
        assert self._data is not None
        assert self._pg_ctl is not None
        # pg_ctl refuses to run as root: run it as the cluster's owner.
        owner = self._data.stat().st_uid
        user = owner if os.geteuid() == 0 and owner != 0 else None
        subprocess.run(
            [str(self._pg_ctl), *args, "-D", str(self._data), "-w", "-t", "60"],
            user=user,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
            timeout=90,
        )

    async def crash_restart(self, downtime: float = 0.0) -> None:
        """Immediate stop (a crash: recovery at start), down for `downtime` seconds, then
        start with the same options (`pg_ctl restart -m immediate` when there is none)."""
        assert self._data is not None
        self.restarted = True
        log = str(self._data / "chaos-restart.log")
        if not downtime:
            await asyncio.to_thread(self._run_pg_ctl, "restart", "-m", "immediate", "-l", log)
            return
        await asyncio.to_thread(self._run_pg_ctl, "stop", "-m", "immediate")
        await asyncio.sleep(downtime)
        options = f'-h "" -k {self._socket_dir}'
        await asyncio.to_thread(self._run_pg_ctl, "start", "-l", log, "-o", options)

    async def stop(self) -> None:
        if self.restarted:
            # The package tracks the first postmaster only: stop the restarted one ourselves.
            with contextlib.suppress(subprocess.CalledProcessError):
                await asyncio.to_thread(self._run_pg_ctl, "stop", "-m", "immediate")
        await self.embedded.astop()


# --- worker processes --------------------------------------------------------------------------


class Proc:
    """A worker process whose stdout lines are collected; stderr goes to a file."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.stderr = stderr
        self.lines: list[str] = []
        self.ready = asyncio.Event()
        self.frozen = False
        self._reader = asyncio.create_task(self._read(), name=f"chaos-worker-{proc.pid}")

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            text = line.decode().rstrip("\n")
            self.lines.append(text)
            if text == READY:
                self.ready.set()

    async def wait_ready(self, timeout: float) -> bool:
        """True once READY was printed; False when the process exited or took too long."""
        waiter = asyncio.create_task(self.ready.wait())
        exited = asyncio.create_task(self.proc.wait())
        await asyncio.wait({waiter, exited}, timeout=timeout, return_when="FIRST_COMPLETED")
        waiter.cancel()
        exited.cancel()
        await asyncio.gather(waiter, exited, return_exceptions=True)
        return self.ready.is_set() and self.proc.returncode is None

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
        await self.proc.wait()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def terminate(self, timeout: float) -> int | None:
        """SIGTERM (drain), SIGKILL after `timeout`; the exit code."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                if self.frozen:
                    self.proc.send_signal(signal.SIGCONT)
                self.proc.terminate()
            try:
                async with asyncio.timeout(timeout):
                    await self.proc.wait()
            except TimeoutError:
                await self.kill()
        await self.kill()
        return self.proc.returncode


class Workers:
    """`count` worker slots; each holds one live process, replaced when it is killed."""

    def __init__(self, env: dict[str, str], workdir: Path, count: int) -> None:
        self.env = env
        self.workdir = workdir
        self.slots: list[Proc | None] = [None] * count
        self.spawned = 0
        self.failed_starts = 0
        self.pids: list[int] = []
        self.procs: list[Proc] = []
        """Every process started, also one still starting when the batch ends."""
        self.errors: list[str] = []
        self._respawns: set[asyncio.Task[None]] = set()

    async def _spawn_once(self) -> Proc:
        stderr = self.workdir / f"worker-{self.spawned}.stderr"
        self.spawned += 1
        with stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "gendurable",
                "worker",
                "chaos_app:engine",
                "--drain-timeout",
                "5",
                cwd=str(HERE),
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        p = Proc(proc, stderr)
        self.pids.append(p.pid)
        self.procs.append(p)
        return p

    async def fill(self, slot: int, *, deadline: float) -> None:
        """Start a process in `slot`, again and again while it fails (the server is down)."""
        while True:
            p = await self._spawn_once()
            if await p.wait_ready(timeout=60):
                self.slots[slot] = p
                return
            self.failed_starts += 1
            await p.kill()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no worker would start; last stderr:\n{_tail(p.stderr)}")
            await asyncio.sleep(0.5)

    async def _refill(self, slot: int) -> None:
        try:
            await self.fill(slot, deadline=time.monotonic() + 120)
        except Exception as exc:  # reported with the batch's stats
            self.errors.append(f"{type(exc).__name__}: {exc}")

    async def start_all(self) -> None:
        deadline = time.monotonic() + 120
        await asyncio.gather(*(self.fill(i, deadline=deadline) for i in range(len(self.slots))))

    def pick(self, rng: random.Random) -> int | None:
        """A slot whose process serves and is not stopped."""
        live = [i for i, p in enumerate(self.slots) if p is not None and not p.frozen]
        return rng.choice(live) if live else None

    async def kill(self, slot: int) -> None:
        """SIGKILL the slot's process and start a replacement in the background."""
        p = self.slots[slot]
        if p is None:
            return
        self.slots[slot] = None
        await p.kill()
        task = asyncio.create_task(self._refill(slot))
        self._respawns.add(task)
        task.add_done_callback(self._respawns.discard)

    async def stop_all(self) -> list[int | None]:
        for task in list(self._respawns):
            task.cancel()
        await asyncio.gather(*self._respawns, return_exceptions=True)
        procs = [p for p in self.slots if p is not None]
        codes = list(await asyncio.gather(*(p.terminate(10) for p in procs)))
        # A replacement that was still starting (its start was cancelled above) must not
        # outlive the batch.
        await asyncio.gather(*(p.kill() for p in self.procs))
        return codes

    def stderr_tracebacks(self) -> int:
        return sum(
            f.read_text(errors="replace").count("Traceback")
            for f in self.workdir.glob("worker-*.stderr")
        )


def _tail(path: Path, size: int = 3000) -> str:
    return path.read_text(errors="replace")[-size:] if path.exists() else ""


# --- the plan ----------------------------------------------------------------------------------


@dataclass
class Slot:
    """One signal a signalled pack needs: sent `delay` seconds after its start returned."""

    key: str
    delay: float


def make_plan(config: ChaosConfig, rng: random.Random, tag: str) -> tuple[list[Root], list[Slot]]:
    """Roots of every kind, about `config.instances` instances counting children."""
    keys = max(3, config.instances // 200)
    cks = [f"ck{i}" for i in range(keys)]
    roots: list[Root] = []
    slots: list[Slot] = []
    kinds = ["pack", "lonely", "tree", "account", "call"]
    weights = [0.25, 0.07, 0.05, 0.33, 0.30]
    for i in itertools.count():
        if planned_instances(roots) >= config.instances:
            break
        kind = rng.choices(kinds, weights)[0]
        key = f"{tag}-{kind}-{i}"
        if kind == "pack":
            need = rng.randint(1, 3)
            roots.append(Root(Pack.spec.name, key, {"need": need}))
            for _ in range(need):
                mode = rng.random()
                if mode < 0.35:
                    delay = 0.0  # before the await is entered
                elif mode < 0.6:
                    delay = rng.uniform(0, 0.1)  # racing the park
                else:
                    delay = rng.uniform(0.2, 3.0)
                slots.append(Slot(key, delay))
        elif kind == "lonely":
            roots.append(Root(Pack.spec.name, key, {"need": 1, "lonely": True}))
        elif kind == "tree":
            branches = [
                [rng.randint(1, 50) for _ in range(rng.randint(0, 2))]
                for _ in range(rng.randint(1, 3))
            ]
            leaf_cks = [[rng.choice(cks) for _ in b] for b in branches]
            roots.append(Root(Tree.spec.name, key, {"branches": branches, "cks": leaf_cks}))
        elif kind == "account":
            roots.append(
                Root(Account.spec.name, key, {"amount": rng.randint(1, 100)}, rng.choice(cks))
            )
        else:
            tenant = f"t{rng.randrange(config.tenants)}"
            roots.append(Root(Call.spec.name, key, {"tenant": tenant}))
    return roots, slots


# --- the client --------------------------------------------------------------------------------

ALL_STATUSES = ("available", "executing", "awaiting", "waiting", "done", "failed", "cancelled")
"""Keys stay reserved for good: a start retried after a broken connection finds its instance
even once it ended, instead of starting a second one."""

_CLASSES: dict[str, Any] = {c.spec.name: c for c in chaos_app.WORKFLOWS}


class Client:
    """Starts the plan's roots in waves and sends the packs' signals, through any fault."""

    def __init__(
        self,
        engine: gd.Engine,
        dsn: str,
        schema: str,
        rng: random.Random,
        single_share: float,
    ) -> None:
        self.engine = engine
        self.single_share = single_share
        self.dsn = dsn
        self.schema = schema
        self.rng = rng
        self.plan = Plan()
        self.sids = itertools.count(1)
        self.retried_starts = 0
        self.ambiguous_signals = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def _entry(self, root: Root) -> Any:
        cls = _CLASSES[root.workflow]
        return cls.new(
            key=root.key,
            state=root.state,
            concurrency_key=root.concurrency_key,
            scope=ALL_STATUSES,
        )

    async def _retrying(self, what: Callable[[], Awaitable[Any]]) -> Any:
        deadline = time.monotonic() + 120
        while True:
            try:
                return await what()
            except (gd.ValidationError, gd.DuplicateKey, gd.NoTarget):
                raise
            except Exception:
                if time.monotonic() > deadline:
                    raise
                self.retried_starts += 1
                await asyncio.sleep(0.2)

    async def start_wave(self, roots: list[Root], slots: dict[str, list[Slot]]) -> None:
        """Start `roots`: most in one `start_many`, some one by one; then their signals."""
        single = [r for r in roots if self.rng.random() < self.single_share]
        many = [r for r in roots if r not in single]

        async def start_one(root: Root) -> None:
            cls = _CLASSES[root.workflow]
            await self._retrying(
                lambda: cls.start(
                    root.key,
                    root.state,
                    concurrency_key=root.concurrency_key,
                    scope=ALL_STATUSES,
                    engine=self.engine,
                )
            )
            self._signals(root, slots)

        async def start_batch() -> None:
            if not many:
                return
            entries = [self._entry(r) for r in many]
            await self._retrying(lambda: Pack.start_many(entries, engine=self.engine))
            for root in many:
                self._signals(root, slots)

        await asyncio.gather(start_batch(), *(start_one(r) for r in single))

    def _signals(self, root: Root, slots: dict[str, list[Slot]]) -> None:
        for slot in slots.get(root.key, []):
            self._spawn(self._send(slot))

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _send(self, slot: Slot) -> None:
        if slot.delay:
            await asyncio.sleep(slot.delay)
        while True:
            sid = next(self.sids)
            before = time.monotonic()
            try:
                await Pack.signal(slot.key, "item", Item(sid=sid), engine=self.engine)
            except gd.NoTarget:
                self.plan.refused.append((slot.key, sid))
                return
            except Exception:
                # The connection broke after the statement was sent: it may be stored.
                self.ambiguous_signals += 1
                sent = Sent(sid, slot.key, False, before, time.monotonic())
                self.plan.sent.append(sent)
                if await self._stored(slot.key, sid):
                    sent.certain = True
                    return
                continue  # not stored: the pack still needs one, send a fresh signal
            self.plan.sent.append(Sent(sid, slot.key, True, before, time.monotonic()))
            return

    async def _stored(self, key: str, sid: int) -> bool:
        """Whether signal `sid` reached pack `key`: in its inbox, or in what it consumed."""
        s = f'"{self.schema}"'
        query = f"""
            SELECT EXISTS (SELECT 1 FROM {s}.signals g JOIN {s}.instances i
                           ON i.id = g.instance_id
                           WHERE i.workflow = 'chaos.pack' AND i.key = $1
                             AND (g.payload->>'sid')::int = $2)
                OR EXISTS (SELECT 1 FROM {s}.instances i
                           WHERE i.workflow = 'chaos.pack' AND i.key = $1
                             AND (i.state->'items' @> jsonb_build_array($2::int)
                                  OR i.result->'items' @> jsonb_build_array($2::int)))
        """
        await asyncio.sleep(1.0)  # a statement cut by a timeout may still be finishing
        deadline = time.monotonic() + 120
        while True:
            try:
                conn = await asyncpg.connect(self.dsn, timeout=5)
                try:
                    return bool(await conn.fetchval(query, key, sid))
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)

    async def settle(self) -> None:
        """Wait for every signal still to send."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks))


# --- one batch ---------------------------------------------------------------------------------


async def _query(dsn: str, fn: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.set_type_codec(
            "jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )
        return await fn(conn)
    finally:
        await conn.close()


async def _progress(dsn: str, schema: str) -> tuple[int, int]:
    """(rows, live rows); (-1, -1) while the server cannot be reached."""
    try:
        row = await _query(
            dsn,
            lambda c: c.fetchrow(
                f"SELECT count(*) AS n, count(*) FILTER (WHERE status NOT IN "
                f"('done', 'failed', 'cancelled')) AS live FROM \"{schema}\".instances"
            ),
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
        return -1, -1
    return int(row["n"]), int(row["live"])


def read_log(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of the side-effect log, and how many lines did not parse."""
    records, bad = [], 0
    if not path.exists():
        return records, bad
    for line in path.read_bytes().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            bad += 1
    return records, bad


async def run_batch(
    server: ChaosServer,
    config: ChaosConfig,
    workdir: Path,
    *,
    schema: str | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> BatchReport:
    """One batch on a fresh schema of `server`: returns the invariants as checked."""
    seed = config.seed if config.seed is not None else random.randrange(2**32)
    rng = random.Random(seed)
    schema = schema or f"chaos_{uuid.uuid4().hex[:10]}"
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    log = workdir / f"{schema}.effects.jsonl"
    env = dict(os.environ)
    env.update(
        CHAOS_DSN=server.dsn,
        CHAOS_SCHEMA=schema,
        CHAOS_LOG=str(log),
        CHAOS_LEASE=str(config.lease),
        CHAOS_CONCURRENCY=str(config.concurrency),
        CHAOS_PACK_TIMEOUT=str(config.pack_timeout),
        CHAOS_LINGER_TIMEOUT=str(config.linger_timeout),
        PYTHONPATH=os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH")) if p),
        PYTHONUNBUFFERED="1",
    )
    roots, slots = make_plan(config, rng, schema)
    by_key: dict[str, list[Slot]] = {}
    for s in slots:
        by_key.setdefault(s.key, []).append(s)
    began = time.monotonic()
    stats: dict[str, Any] = {"seed": seed, "schema": schema, "roots": len(roots)}

    client_engine = gd.Engine(
        server.dsn,
        workflows=chaos_app.WORKFLOWS,
        name=f"chaos-client-{schema}",
        schema=schema,
        rate_limits=chaos_app.RATE_LIMITS,
        statement_timeout=timedelta(seconds=10),
        pool_size=10,
    )
    await client_engine.start()  # migrates the schema before the workers come
    workers = Workers(env, workdir, config.workers)
    client = Client(client_engine, server.dsn, schema, rng, config.single_share)
    chaos_tasks: list[asyncio.Task[None]] = []
    freezes: list[Freeze] = []
    counters = {"kills": 0, "freezes": 0, "restarts": 0}
    restart_span: list[float] = []
    try:
        await workers.start_all()
        say(f"{config.workers} workers ready after {time.monotonic() - began:.1f}s")

        async def killer() -> None:
            while True:
                await asyncio.sleep(rng.uniform(*config.kill_interval))
                slot = workers.pick(rng)
                if slot is not None:
                    counters["kills"] += 1
                    await workers.kill(slot)

        async def freezer() -> None:
            assert config.freeze_interval is not None
            while True:
                await asyncio.sleep(rng.uniform(*config.freeze_interval))
                slot = workers.pick(rng)
                p = workers.slots[slot] if slot is not None else None
                if p is None:
                    continue
                p.frozen = True
                start = time.monotonic()
                p.proc.send_signal(signal.SIGSTOP)
                try:
                    await asyncio.sleep(rng.uniform(*config.freeze_seconds))
                finally:
                    with contextlib.suppress(ProcessLookupError):
                        p.proc.send_signal(signal.SIGCONT)
                    p.frozen = False
                    freezes.append(Freeze(p.pid, start, time.monotonic()))
                    counters["freezes"] += 1

        async def restarter() -> None:
            assert config.restart_at is not None
            await asyncio.sleep(config.restart_at * config.submit_seconds)
            t0 = time.monotonic()
            await server.crash_restart(config.restart_downtime)
            restart_span.extend([t0, time.monotonic()])
            counters["restarts"] += 1
            say(f"server crash-restarted in {restart_span[1] - t0:.1f}s")

        chaos_tasks.append(asyncio.create_task(killer()))
        if config.freeze_interval is not None:
            chaos_tasks.append(asyncio.create_task(freezer()))
        if config.restart_at is not None:
            chaos_tasks.append(asyncio.create_task(restarter()))

        # Submit in waves across the window, each wave on its own (a slow one, while the
        # server restarts, does not hold the next back).
        # The calls come in the first part of the window, faster than their buckets refill,
        # so that the rate limit has work to do (and a broken one shows).
        rng.shuffle(roots)
        waves = max(1, int(config.submit_seconds / config.wave_interval))
        calls = [r for r in roots if r.workflow == Call.spec.name]
        others = [r for r in roots if r.workflow != Call.spec.name]
        size = -(-len(others) // waves)
        call_size = -(-len(calls) // max(1, int(waves * config.call_window)))
        wave_tasks = []
        submit_began = time.monotonic()
        for w in range(waves):
            chunk = others[w * size : (w + 1) * size] + calls[w * call_size : (w + 1) * call_size]
            if chunk:
                wave_tasks.append(asyncio.create_task(client.start_wave(chunk, by_key)))
            await asyncio.sleep(
                max(0.0, submit_began + (w + 1) * config.wave_interval - time.monotonic())
            )
        await asyncio.gather(*wave_tasks)
        await client.settle()
        say(f"submitted {len(roots)} roots after {time.monotonic() - began:.1f}s")

        planned = planned_instances(roots)
        deadline = time.monotonic() + config.finish_timeout
        rows_now = live = -1
        while time.monotonic() < deadline:
            rows_now, live = await _progress(server.dsn, schema)
            if rows_now == planned and live == 0:
                break
            await asyncio.sleep(0.5)
        stats["finished"] = rows_now == planned and live == 0
        stats["finish_seconds"] = round(time.monotonic() - began, 1)
        say(f"finished={stats['finished']} after {stats['finish_seconds']}s (live {live})")
    finally:
        for task in chaos_tasks:
            task.cancel()
        await asyncio.gather(*chaos_tasks, return_exceptions=True)
        exits = await workers.stop_all()
        await client.settle()
        await client_engine.stop(timeout=5)

    stats.update(counters)
    stats["worker_processes"] = workers.spawned
    stats["worker_failed_starts"] = workers.failed_starts
    stats["worker_exit_codes"] = exits
    stats["worker_tracebacks"] = workers.stderr_tracebacks()
    stats["worker_respawn_errors"] = workers.errors
    stats["retried_starts"] = client.retried_starts
    stats["ambiguous_signals"] = client.ambiguous_signals
    client.plan.roots = roots

    async def collect(conn: asyncpg.Connection) -> tuple[list[dict[str, Any]], int]:
        rows = await conn.fetch(
            f"SELECT id, workflow, key, status::text AS status, step, state, result, error, "
            f"parent_id, spawn_index, pending_children, locked_by, concurrency_key, "
            f'rate_partition, attempt, rescued FROM "{schema}".instances ORDER BY id'
        )
        leftover = await conn.fetchval(f'SELECT count(*) FROM "{schema}".signals')
        return [dict(r) for r in rows], int(leftover)

    rows, leftover = await _query(server.dsn, collect)
    records, bad_lines = read_log(log)
    stats["rescued"] = sum(r["rescued"] for r in rows)
    stats["log_records"] = len(records)
    stats["log_bad_lines"] = bad_lines
    stats["seconds"] = round(time.monotonic() - began, 1)
    invariants = check_all(
        rows,
        records,
        client.plan,
        leftover_signals=leftover,
        burst=LIMIT.capacity,
        rate=LIMIT.allowed / LIMIT.per.total_seconds(),
        start_delay=config.start_delay,
        freezes=freezes,
    )
    if bad_lines:
        bad = Invariant("side_effect_log_readable")
        bad.fail(f"{bad_lines} lines of the side-effect log did not parse")
        invariants.append(bad)
    return BatchReport(schema, invariants, stats)
