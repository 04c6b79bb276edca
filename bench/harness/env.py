"""What every workload gets: the server, its postmaster (for server CPU) and the report."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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

    @asynccontextmanager
    async def measured(self) -> AsyncIterator[None]:
        """floor(8) measured (2 s) just before and just after the figures made inside."""
        before = await floor(self.dsn, 8, seconds=2.0)
        self.report.hold()
        try:
            yield
        finally:
            self.report.release(before, await floor(self.dsn, 8, seconds=2.0))

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
