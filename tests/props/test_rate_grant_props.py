"""The claim's token-bucket grant, checked against a small pure model on random bucket states
and demands, on the real server.

The model: the claim takes the `limit` most urgent due rows (priority, then run_at, then
id); each bucket (limit, partition) is refilled from `refreshed_at` to now at `allowed`
tokens per `per`, capped at `burst` (a missing bucket is full); it grants the longest
urgency-ordered prefix of its rows whose cumulative weight fits, and keeps the rest. A row
left out is deferred to the moment its tokens will be there; a row of a limit no engine
configured waits the unknown-limit wait. Rows the claim did not pick are untouched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fractions import Fraction

import asyncpg
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from props_support import Loop, scaled

from gendurable.db.engine_store import EngineStore
from gendurable.db.migrator import migrate
from gendurable.db.pool import Database
from gendurable.db.rows import PickedRow

NOW = datetime(2030, 1, 1, tzinfo=UTC)
LEASE = timedelta(seconds=30)
UNKNOWN_WAIT = timedelta(seconds=5)
LIMITS = ("L0", "L1")  # configured
UNKNOWN = "Lx"  # no config row: never granted


@dataclass(frozen=True)
class Config:
    allowed: int
    per_ms: int
    burst: int


@dataclass(frozen=True)
class Bucket:
    tokens: Fraction
    age_ms: int  # now - refreshed_at; negative: refreshed "in the future" (clock skew)


@dataclass(frozen=True)
class Row:
    limit: str | None
    partition: str | None
    weight: int
    priority: int
    due_ms: int  # now - run_at; negative: not due yet


@dataclass
class Case:
    configs: dict[str, Config]
    buckets: dict[tuple[str, str], Bucket]
    rows: list[Row]
    claim: int
    ids: list[int] = field(default_factory=list)


configs = st.builds(
    Config,
    allowed=st.integers(1, 10),
    per_ms=st.sampled_from([250, 1000, 7000, 60000]),
    burst=st.integers(1, 8),
)


@st.composite
def cases(draw: st.DrawFn) -> Case:
    cfg = {name: draw(configs) for name in LIMITS}
    buckets: dict[tuple[str, str], Bucket] = {}
    for name in LIMITS:
        for part in ("", "p"):
            if draw(st.booleans()):
                eighths = draw(st.integers(0, cfg[name].burst * 8))
                buckets[(name, part)] = Bucket(
                    Fraction(eighths, 8), draw(st.integers(-5000, 120_000))
                )
    rows = draw(
        st.lists(
            st.builds(
                Row,
                limit=st.sampled_from([None, *LIMITS, UNKNOWN]),
                partition=st.sampled_from([None, "p"]),
                weight=st.integers(1, 4),
                priority=st.integers(0, 2),
                due_ms=st.integers(-2000, 60_000),
            ),
            max_size=10,
        )
    )
    return Case(cfg, buckets, rows, draw(st.integers(1, 10)))


@dataclass
class Expected:
    go: dict[int, bool]
    wake: dict[int, Fraction]  # ms after now, for the rows deferred
    buckets: dict[tuple[str, str], tuple[Fraction, Fraction, int]]  # tokens, granted, age
    boundary: Fraction  # the smallest |cumulative weight - available tokens| met


def grant_model(case: Case) -> Expected:
    """What the claim must do, computed exactly (fractions)."""
    due = [(i, r) for i, r in zip(case.ids, case.rows, strict=True) if r.due_ms >= 0]
    due.sort(key=lambda p: (-p[1].priority, -p[1].due_ms, p[0]))
    chosen = due[: case.claim]
    cum: dict[int, int] = {}
    totals: dict[tuple[str, str], int] = {}
    for id, row in chosen:
        if row.limit is not None:
            group = (row.limit, row.partition or "")
            totals[group] = totals.get(group, 0) + row.weight
            cum[id] = totals[group]
    buckets: dict[tuple[str, str], tuple[Fraction, Fraction, int]] = {}
    boundary = Fraction(10**9)
    for group in totals:
        cfg = case.configs.get(group[0])
        if cfg is None:
            continue
        old = case.buckets.get(group)
        if old is None:
            avail, age = Fraction(cfg.burst), 0
        else:
            refill = Fraction(max(0, old.age_ms) * cfg.allowed, cfg.per_ms)
            avail = min(Fraction(cfg.burst), old.tokens + refill)
            age = min(0, old.age_ms)  # refreshed_at only moves forward
        sums = [c for id, c in cum.items() if _group(case, id) == group]
        boundary = min([boundary, *(abs(c - avail) for c in sums)])
        granted = Fraction(max([c for c in sums if c <= avail], default=0))
        buckets[group] = (avail - granted, granted, age)
    go: dict[int, bool] = {}
    wake: dict[int, Fraction] = {}
    for id, row in chosen:
        if row.limit is None:
            go[id] = True
            continue
        group = (row.limit, row.partition or "")
        cfg = case.configs.get(row.limit)
        if cfg is None:
            go[id] = False
            wake[id] = Fraction(int(UNKNOWN_WAIT.total_seconds() * 1000))
            continue
        tokens, granted, _ = buckets[group]
        go[id] = cum[id] <= granted
        if not go[id]:
            wake[id] = (cum[id] - granted - tokens) * cfg.per_ms / cfg.allowed
    return Expected(go, wake, buckets, boundary)


def _group(case: Case, id: int) -> tuple[str, str]:
    row = case.rows[case.ids.index(id)]
    assert row.limit is not None
    return (row.limit, row.partition or "")


class Rig:
    def __init__(self, dsn: str) -> None:
        self.loop = Loop(dsn)
        self.schema = self.loop.schema()
        self.loop.run(migrate(dsn, schema=self.schema))
        self.db = self.loop.run(Database.open(dsn, self.schema, max_size=2))
        self.store = EngineStore(self.db)
        self.conn: asyncpg.Connection = self.loop.run(asyncpg.connect(dsn))

    def close(self) -> None:
        try:
            self.loop.run(self.conn.close())
            self.loop.run(self.db.close())
        finally:
            self.loop.close()

    async def load(self, case: Case) -> None:
        s = f'"{self.schema}"'
        await self.conn.execute(f"TRUNCATE {s}.signals, {s}.instances, {s}.rate_buckets")
        await self.conn.execute(f"DELETE FROM {s}.rate_configs")
        for name, cfg in case.configs.items():
            await self.conn.execute(
                f"INSERT INTO {s}.rate_configs (name, allowed, per_ms, burst) "
                "VALUES ($1, $2, $3, $4)",
                name,
                cfg.allowed,
                cfg.per_ms,
                cfg.burst,
            )
        for (name, part), b in case.buckets.items():
            await self.conn.execute(
                f"INSERT INTO {s}.rate_buckets (name, partition, tokens, refreshed_at) "
                "VALUES ($1, $2, $3, $4)",
                name,
                part,
                float(b.tokens),
                NOW - timedelta(milliseconds=b.age_ms),
            )
        case.ids = []
        for r in case.rows:
            case.ids.append(
                await self.conn.fetchval(
                    f"INSERT INTO {s}.instances (workflow, queue, step, run_at, priority, "
                    "rate_limit, rate_partition, weight, inserted_at, updated_at) "
                    "VALUES ('w', 'q', 's', $1, $2, $3, $4, $5, $6, $6) RETURNING id",
                    NOW - timedelta(milliseconds=r.due_ms),
                    r.priority,
                    r.limit,
                    r.partition,
                    r.weight,
                    NOW,
                )
            )

    async def claim(self, case: Case) -> list[PickedRow]:
        return await self.store.instance_claim(
            queue="q",
            limit=case.claim,
            locked_by="me",
            leases=[LEASE],
            now=NOW,
            workflows=["w"],
            steps=["s"],
            unknown_limit_wait=UNKNOWN_WAIT,
        )

    async def rows(self) -> dict[int, asyncpg.Record]:
        found = await self.conn.fetch(
            "SELECT id, status::text AS status, run_at, throttled, locked_by "
            f'FROM "{self.schema}".instances'
        )
        return {r["id"]: r for r in found}

    async def buckets(self) -> dict[tuple[str, str], asyncpg.Record]:
        found = await self.conn.fetch(
            "SELECT name, partition, tokens, granted, refreshed_at "
            f'FROM "{self.schema}".rate_buckets'
        )
        return {(r["name"], r["partition"]): r for r in found}


@pytest.fixture(scope="module")
def rig(gendurable_dsn: str) -> Iterator[Rig]:
    made = Rig(gendurable_dsn)
    yield made
    made.close()


def _ms(t: datetime) -> Fraction:
    return Fraction((t - NOW) // timedelta(microseconds=1), 1000)


@scaled(60)
@given(cases())
def test_rate_grant_matches_the_model(rig: Rig, case: Case) -> None:
    before = dict(case.buckets)
    rig.loop.run(rig.load(case))
    expected = grant_model(case)
    # Exactly at the boundary the server's float arithmetic may round either way.
    assume(expected.boundary == 0 or expected.boundary > Fraction(1, 10**6))

    claimed = rig.loop.run(rig.claim(case))
    rows = rig.loop.run(rig.rows())
    buckets = rig.loop.run(rig.buckets())

    assert {r.id: r.go for r in claimed} == expected.go
    for r in claimed:
        assert r.unknown_limit is (case.rows[case.ids.index(r.id)].limit == UNKNOWN)
    for id, row in rows.items():
        if id not in expected.go:  # not picked: untouched
            assert (row["status"], row["throttled"], row["locked_by"]) == ("available", False, None)
            assert row["run_at"] == NOW - timedelta(
                milliseconds=case.rows[case.ids.index(id)].due_ms
            )
        elif expected.go[id]:
            assert (row["status"], row["locked_by"], row["throttled"]) == ("executing", "me", False)
        else:
            assert (row["status"], row["locked_by"], row["throttled"]) == ("available", None, True)
            assert abs(_ms(row["run_at"]) - expected.wake[id]) <= Fraction(1, 1000)
    assert set(buckets) == set(before) | set(expected.buckets)
    for group, row in buckets.items():
        if group not in expected.buckets:  # no demand: the bucket is left as it was
            assert row["tokens"] == float(before[group].tokens)
            continue
        tokens, granted, age = expected.buckets[group]
        assert row["tokens"] == pytest.approx(float(tokens), abs=1e-9)
        assert row["granted"] == float(granted)
        assert row["refreshed_at"] == NOW - timedelta(milliseconds=age)
        assert row["tokens"] >= -1e-9  # a bucket never goes below empty
