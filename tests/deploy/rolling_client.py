"""The rolling-deploy test's application process: starts or signals one phase's instances.

    python rolling_client.py start PHASE     # prints {key: id} as JSON
    python rolling_client.py signal PHASE    # confirms the phase's trips

Run with the previous release's python before and during the deploy, and with the new
code's after it, as an application's own processes would be. A client-only engine with
`migrate=False`: application processes do not migrate.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

import rolling_app as app

import gendurable as gd

TRIPS = 3


async def main(action: str, phase: str) -> None:
    async with gd.Engine(
        os.environ["GENDURABLE_DSN"],
        workflows=app.WORKFLOWS,
        schema=os.environ["ROLLING_SCHEMA"],
        queues=None,
        migrate=False,
        name=f"client-{phase}-{action}",
    ) as engine:
        if action == "start":
            ids: dict[str, int] = {}
            for i in range(TRIPS):
                key = f"{phase}-trip-{i}"
                state = app.Trip.State(legs=i + 1)
                ids[key] = (await app.Trip.start(key=key, state=state, engine=engine)).id
            nap = await app.Nap.start(key=f"{phase}-nap", state=app.Nap.State(), engine=engine)
            ids[f"{phase}-nap"] = nap.id
            for probe in (app.old_probe, app.new_probe):
                key = f"{phase}-{probe.spec.name.split('.')[-1]}"
                ids[key] = (await probe.enqueue(None, key=key, engine=engine)).id
            print(json.dumps(ids))
        else:
            for i in range(TRIPS):
                await app.Trip.signal(
                    f"{phase}-trip-{i}", "confirm", {"by": app.who()}, engine=engine
                )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
