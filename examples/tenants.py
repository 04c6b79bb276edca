"""Per-tenant, weighted API calls under one token-bucket rate limit.

    python examples/tenants.py                 # a throwaway embedded PostgreSQL
    GENDURABLE_DSN=postgresql://user@host/db python examples/tenants.py

Every call to the (pretend) partner API takes tokens from the bucket of its tenant: the limit
`partner_api` allows 10 tokens a second with a burst of 4, per tenant (`partition=`). A bulk
export costs 2 tokens a page (`weight=2`), a lookup 1. The big tenant's export is throttled
to the rate; the small tenants' lookups are not delayed by it, because each tenant has its
own bucket. The limit is enforced when rows are claimed, in PostgreSQL, so it holds however
many worker processes share the database.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import timedelta

import msgspec

import gendurable as gd

LIMITS = {"partner_api": gd.Limit(10, per=timedelta(seconds=1), burst=4)}
started = time.monotonic()


def _tenant(state: Call.State) -> str:
    return state.tenant


@gd.workflow(name="tenants.call")
class Call:
    """One API call for one tenant; a heavy one (an export page) costs 2 tokens."""

    class State(msgspec.Struct):
        tenant: str
        what: str
        heavy: bool = False

    class Result(msgspec.Struct):
        tenant: str
        what: str
        at: float

    @gd.step(start=True)
    async def route(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if state.heavy:
            return gd.goto(self.call, rate_limit="partner_api", weight=2, partition=state.tenant)
        return gd.goto(self.call)

    @gd.step(rate_limit="partner_api", partition=_tenant)
    async def call(self, state: State, ctx: gd.Context) -> gd.Outcome:
        # await partner_api.get(...) would go here: idempotent, since a crash re-runs it.
        return gd.done(Call.Result(state.tenant, state.what, time.monotonic() - started))


async def main(dsn: str | None = None, schema: str = "gendurable") -> list[Call.Result]:
    """Run the calls of three tenants and return their results in the order they finished."""
    global started
    engine = gd.Engine(
        dsn, workflows=[Call], schema=schema, queues={"default": 8}, rate_limits=LIMITS
    )
    async with engine:
        started = time.monotonic()
        entries = [
            Call.new(state=Call.State("big", f"export page {n}", heavy=True)) for n in range(8)
        ]
        entries += [Call.new(state=Call.State(t, "lookup")) for t in ("small-a", "small-b")]
        handles = await Call.start_many(entries)
        results: list[Call.Result] = [await Call.result(h.id, timeout=60) for h in handles]
    return sorted(results, key=lambda r: r.at)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--schema", default="gendurable", help="PostgreSQL schema to use")
    args = parser.parse_args()
    for r in asyncio.run(main(schema=args.schema)):
        print(f"{r.at:5.2f}s {r.tenant:8} {r.what}")
