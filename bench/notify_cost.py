"""What a NOTIFY costs: `python bench/notify_cost.py [--senders N] [--listeners N] [--dsn DSN]`.

Transactions that each update one row and announce 64 ended instances, three ways: no
NOTIFY at all, one `t:<id>` notification per id (what `instances_ended` sends), and one
notification holding the 64 ids. `--senders` connections commit them at once, while
`--listeners` connections LISTEN and hand every payload to the engine's notifier (as an
engine's listener does). Prints one JSON line per way and round: commits per second, and
the server's and the listening process's CPU per transaction.

PostgreSQL takes a database-wide lock when a transaction that notified commits and holds it
until the commit is done, so notifying commits are serialised however many notifications
each carries; the count changes only the work of writing and delivering them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import asyncpg
from harness.meters import parent_pid, server_cpu_seconds

from gendurable.embedded import EmbeddedPostgres
from gendurable.engine.notifier import Notifier

IDS = 64
CHANNEL = "bench_notify_cost"
WAYS = {
    "none": "UPDATE bench_notify_cost SET n = n + 1 WHERE id = $1",
    "one_per_id": (
        "WITH u AS (UPDATE bench_notify_cost SET n = n + 1 WHERE id = $1 RETURNING id) "
        f"SELECT count(pg_notify('{CHANNEL}', 't:' || g)) "
        f"FROM u, generate_series($1 * 1000, $1 * 1000 + {IDS - 1}) g"
    ),
    "one_list": (
        "WITH u AS (UPDATE bench_notify_cost SET n = n + 1 WHERE id = $1 RETURNING id) "
        f"SELECT pg_notify('{CHANNEL}', 't:' || (SELECT string_agg(g::text, ',') "
        f"FROM generate_series($1 * 1000, $1 * 1000 + {IDS - 1}) g)) FROM u"
    ),
}
EXPECTED = {"none": 0, "one_per_id": IDS, "one_list": 1}
"""Notifications each listener receives per transaction."""


async def measure(dsn: str, senders: int, listeners: int, transactions: int, rounds: int) -> None:
    setup = await asyncpg.connect(dsn)
    await setup.execute(
        "CREATE TABLE IF NOT EXISTS bench_notify_cost (id int PRIMARY KEY, n int NOT NULL);"
        "INSERT INTO bench_notify_cost SELECT g, 0 FROM generate_series(1, 64) g "
        "ON CONFLICT DO NOTHING"
    )
    postmaster = parent_pid(await setup.fetchval("SELECT pg_backend_pid()"))
    received, target = 0, 0
    all_in = asyncio.Event()
    listening = []
    for _ in range(listeners):
        conn = await asyncpg.connect(dsn)
        notifier = Notifier(None, lambda _queue: None, poll_interval=1.0)

        def heard(_c: object, _p: int, _ch: str, payload: object, n: Notifier = notifier) -> None:
            nonlocal received
            received += 1
            n._dispatch(str(payload))
            if received >= target:
                all_in.set()

        await conn.add_listener(CHANNEL, heard)
        listening.append(conn)
    sending = [await asyncpg.connect(dsn) for _ in range(senders)]
    each = transactions // senders

    async def send(conn: asyncpg.Connection, k: int, sql: str) -> None:
        for i in range(each):
            await conn.fetchval(sql, (k * 7 + i) % 64 + 1)

    try:
        for round in range(rounds):
            for way, sql in WAYS.items():
                received, target = 0, each * senders * EXPECTED[way] * listeners
                all_in.clear()
                if target == 0:
                    all_in.set()
                server = server_cpu_seconds(postmaster)
                client, started = time.process_time(), time.perf_counter()
                await asyncio.gather(*(send(c, k, sql) for k, c in enumerate(sending)))
                async with asyncio.timeout(60):
                    await all_in.wait()
                wall = time.perf_counter() - started
                done = each * senders
                after = server_cpu_seconds(postmaster)
                print(
                    json.dumps(
                        {
                            "bench": "notify_cost",
                            "way": way,
                            "round": round,
                            "senders": senders,
                            "listeners": listeners,
                            "tx_per_s": round_(done / wall),
                            "server_cpu_ms_per_tx": None
                            if server is None or after is None
                            else round_((after - server) * 1000 / done, 3),
                            "listening_cpu_ms_per_tx": round_(
                                (time.process_time() - client) * 1000 / done, 3
                            ),
                        }
                    ),
                    flush=True,
                )
    finally:
        for conn in [*sending, *listening]:
            await conn.close()
        await setup.execute("DROP TABLE IF EXISTS bench_notify_cost")
        await setup.close()


def round_(value: float, digits: int = 0) -> float:
    return round(value, digits) if digits else float(round(value))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--senders", type=int, default=1)
    parser.add_argument("--listeners", type=int, default=1)
    parser.add_argument("--transactions", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn", default=None)
    args = parser.parse_args()
    if args.dsn:
        await measure(args.dsn, args.senders, args.listeners, args.transactions, args.rounds)
        return
    async with EmbeddedPostgres() as server:
        await measure(server.dsn, args.senders, args.listeners, args.transactions, args.rounds)


if __name__ == "__main__":
    asyncio.run(main())
