"""Virtualenvs for the tests that run a built gendurable outside the working tree.

Shared by the release test (the wheel this tree builds) and the deploy tests (the wheel of
the previous release); importable from every test folder: it sits beside the root conftest.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
"""The repository."""

RUN_LIMIT = 600.0
"""Seconds a build or install may take before the test fails."""


def run(
    command: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run `command` to completion; its stdout, or a test failure holding all it printed."""
    done = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=dict(env) if env is not None else clean_env(),
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, command))} exited {done.returncode}\n"
            f"--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
        )
    return done.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would lead a child's Python to the working
    tree or this virtualenv (`PYTHONPATH`, `VIRTUAL_ENV`, `PYTHONHOME`), plus `extra`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTHONSTARTUP"}
    }
    env.update(extra)
    return env


def create_venv(path: Path) -> Path:
    """A fresh virtualenv at `path` (with pip), from this interpreter's base Python; returns
    its python."""
    run([base_python(), "-m", "venv", path])
    return path / "bin" / "python"


def base_python() -> str:
    """The Python this test run's virtualenv was made from."""
    return getattr(sys, "_base_executable", sys.executable)
