"""An app whose one step takes a token from a limit shared by every worker process.

`gendurable worker limits_app:engine` (set `E2E_TARGET=limits_app:engine` for
`spawn_worker`). Each execution appends `<time> <pid> <key>` to `$E2E_MARKS/grants.log` (one
`write` on an `O_APPEND` file, so lines from several processes never interleave).
"""

from __future__ import annotations

import os
import time
from datetime import timedelta

import gendurable as gd

QUEUE = "limits"
SHARED = gd.Limit(10, per=timedelta(seconds=1), burst=3)


@gd.workflow(name="e2e.limited", queue=QUEUE)
class Limited:
    @gd.step(start=True, rate_limit="shared")
    async def call(self, state: object, ctx: gd.Context) -> gd.Outcome:
        line = f"{time.time():.6f} {os.getpid()} {ctx.key}\n".encode()
        path = os.path.join(os.environ["E2E_MARKS"], "grants.log")
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
        return gd.done()


def engine() -> gd.Engine:
    """The worker's engine, on the schema and database the test gives."""
    return gd.Engine(
        os.environ["E2E_DSN"],
        workflows=[Limited],
        name="limits-worker",
        schema=os.environ["E2E_SCHEMA"],
        queues={QUEUE: 8},
        rate_limits={"shared": SHARED},
        poll_interval=timedelta(milliseconds=50),
    )
