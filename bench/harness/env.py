"""What every workload gets: the server, its postmaster (for server CPU) and the report."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from .floor import floor
from .meters import parent_pid
from .report import Report


@dataclass
class BenchEnv:
    dsn: str
    report: Report
    postmaster: int | None = None
    server_version: str = ""

    async def refloor(self) -> None:
        """Measure floor(8) again (2 s): the next figures' ratios are to it."""
        self.report.set_local_floor(await floor(self.dsn, 8, seconds=2.0))

    @classmethod
    async def open(cls, dsn: str, report: Report) -> BenchEnv:
        conn = await asyncpg.connect(dsn)
        try:
            backend = await conn.fetchval("SELECT pg_backend_pid()")
            version = await conn.fetchval("SHOW server_version")
            # The backend's parent is the postmaster when the server runs on this machine
            # (read while the backend lives).
            postmaster = parent_pid(backend)
        finally:
            await conn.close()
        return cls(dsn, report, postmaster, version)
