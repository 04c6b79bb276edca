"""Run an example script as a subprocess, bounded in time (shared by the example tests)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TIMEOUT = 90.0


async def run_script(path: Path, *args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python path args...`; fails after `TIMEOUT` seconds."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(path),
        *args,
        env=env,
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
            f"{path.name} did not finish within {TIMEOUT}s\n"
            f"stdout:\n{out.decode()}\nstderr:\n{err.decode()}"
        ) from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()
