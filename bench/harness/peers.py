"""Run a peer's adapter (`bench/peers/<peer>_peer.py`) in the peers' virtualenv, as a
subprocess against the same server, and add its JSON lines to the report.

The peers are never dependencies of gendurable: `bench/peers/setup.sh` makes
`bench/.peers-venv` with them. Without it, one line says the peers were skipped.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from .env import BenchEnv

PEERS_DIR = Path(__file__).resolve().parent.parent / "peers"
VENV_PYTHON = PEERS_DIR.parent / ".peers-venv" / "bin" / "python"


async def run(env: BenchEnv, peer: str, workload: str, **options: Any) -> None:
    if not VENV_PYTHON.exists():
        env.report.add(
            {
                "bench": workload,
                "system": peer,
                "skipped": f"no {VENV_PYTHON}: run bench/peers/setup.sh first",
            }
        )
        return
    argv = [str(VENV_PYTHON), str(PEERS_DIR / f"{peer}_peer.py"), workload, "--dsn", env.dsn]
    if env.postmaster is not None:
        argv += ["--postmaster", str(env.postmaster)]
    for name, value in options.items():
        argv += [f"--{name}", str(value)]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    lines = [json.loads(raw) for raw in out.decode().splitlines() if raw.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = err.decode().strip().splitlines()[-5:]
        env.report.add(
            {"bench": workload, "system": peer, "failed": proc.returncode, "stderr": tail}
        )
        return
    for line in lines:
        env.report.add(line)
