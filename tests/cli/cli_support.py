"""Running the CLI as a real subprocess (used by the `cli` fixture and by tests directly)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

HERE = Path(__file__).resolve().parent
TIMEOUT = 60.0


@dataclass(frozen=True)
class Run:
    """One finished CLI process."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        """stdout parsed as JSON."""
        assert self.code == 0, self.err
        return msgspec.json.decode(self.out)

    @property
    def error(self) -> str:
        """The one line a failed command printed on stderr."""
        lines = self.err.splitlines()
        assert len(lines) == 1, f"expected one line on stderr, got:\n{self.err}"
        return lines[0]


Cli = Callable[..., Awaitable[Run]]


async def run_cli(*args: str, env: dict[str, str], cwd: Path = HERE) -> Run:
    """`python -m gendurable args...` to completion; fails after `TIMEOUT` seconds."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gendurable",
        *args,
        env=env,
        cwd=cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
        raise AssertionError(
            f"gendurable {' '.join(args)} did not finish within {TIMEOUT}s\n"
            f"stdout:\n{out.decode()}\nstderr:\n{err.decode()}"
        ) from None
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def cli_env(dsn: str | None) -> dict[str, str]:
    """The environment of a CLI process: ours, with `GENDURABLE_DSN` set (or removed)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GENDURABLE_DSN", "PGPASSWORD")}
    if dsn is not None:
        env["GENDURABLE_DSN"] = dsn
    return env
