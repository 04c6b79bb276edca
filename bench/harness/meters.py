"""What a workload costs: client CPU (this process) and server CPU (the PostgreSQL processes).

Standard library only. Server CPU is read from /proc, so it is known only when the server
runs on this machine; `server_pid` is the postmaster's pid, found from a backend's parent.
Backends that exit during a window take their CPU with them: measure while the workload's
connections are open.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces: fields start after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def parent_pid(pid: int) -> int | None:
    """The parent of `pid`, or None when /proc does not show it (a remote server)."""
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def server_cpu_seconds(postmaster: int | None) -> float | None:
    """User + system CPU of the postmaster and its live children, in seconds."""
    if postmaster is None or _stat_fields(postmaster) is None:
        return None
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        fields = _stat_fields(pid)
        if fields is None:
            continue
        if pid == postmaster or int(fields[1]) == postmaster:
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / _TICK


@dataclass
class CpuWindow:
    """Client (`time.process_time`) and server CPU spent between `start()` and `stop()`."""

    postmaster: int | None = None
    client_s: float = 0.0
    server_s: float | None = None
    wall_s: float = 0.0

    def start(self) -> CpuWindow:
        self._client0 = time.process_time()
        self._server0 = server_cpu_seconds(self.postmaster)
        self._wall0 = time.perf_counter()
        return self

    def lap(self) -> tuple[float, float]:
        """Wall and client CPU seconds since `start()`, without stopping."""
        return time.perf_counter() - self._wall0, time.process_time() - self._client0

    def stop(self) -> CpuWindow:
        self.wall_s = time.perf_counter() - self._wall0
        self.client_s = time.process_time() - self._client0
        server = server_cpu_seconds(self.postmaster)
        self.server_s = (
            server - self._server0 if server is not None and self._server0 is not None else None
        )
        return self

    def per(self, count: int) -> dict[str, float | None]:
        """Client and server CPU in ms per unit of work (None when the server is remote)."""
        return {
            "client_cpu_ms_per": round(self.client_s * 1000 / count, 4),
            "server_cpu_ms_per": (
                round(self.server_s * 1000 / count, 4) if self.server_s is not None else None
            ),
        }


def percentile(values: list[float], q: float) -> float:
    """The `q`-quantile (0..1) of `values`, nearest rank."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
