"""The Quickstart page works as copied: its files, written as they stand on the page into a
fresh directory, and its commands, run there as a reader would.

Every code block with a `title="..."` is a file; every `$ ` line of a `console` block is a
command, followed by the output the page promises. `python` and `pytest` run with this
project's interpreter: `python greet.py` on a database of its own on the test server
(`GENDURABLE_DSN`), `pytest test_greet.py` on the test session's server
(`GENDURABLE_TEST_DSN`), with nothing of this repository's pytest configuration.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shlex
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

PAGE = Path(__file__).resolve().parents[2] / "docs" / "quickstart.md"
TIMEOUT = 120.0

_BLOCK = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```$", re.DOTALL | re.MULTILINE)
_TITLE = re.compile(r'title="([^"]+)"')


@dataclass(frozen=True)
class Command:
    """A `$ ` line of the page and the output shown under it."""

    argv: list[str]
    output: list[str]


def page_files(text: str) -> dict[str, str]:
    """The titled code blocks of a page: file name -> content."""
    files = {}
    for _, info, body in _BLOCK.findall(text):
        title = _TITLE.search(info)
        if title:
            files[title.group(1)] = body
    return files


def page_commands(text: str) -> list[Command]:
    """The commands of the page's `console` blocks, in page order."""
    commands: list[Command] = []
    for language, _, body in _BLOCK.findall(text):
        if language != "console":
            continue
        for line in body.splitlines():
            if line.startswith("$ "):
                commands.append(Command(shlex.split(line[2:]), []))
            elif commands:
                commands[-1].output.append(line)
    return commands


@pytest.fixture
async def own_database(gendurable_dsn: str) -> AsyncIterator[str]:
    """A fresh database on the test server (greet.py uses the default schema), dropped after."""
    name = f"quickstart_{secrets.token_hex(4)}"
    conn = await asyncpg.connect(gendurable_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
        yield urlunsplit(urlsplit(gendurable_dsn)._replace(path=f"/{name}"))
        await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            out, _ = await proc.communicate()
    except TimeoutError:
        proc.kill()
        out, _ = await proc.communicate()
        raise AssertionError(f"{' '.join(argv)} did not finish:\n{out.decode()}") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_quickstart_files_and_commands_work_as_written(
    tmp_path: Path, gendurable_dsn: str, own_database: str
) -> None:
    text = PAGE.read_text()
    files = page_files(text)
    commands = page_commands(text)
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST_", "GENDURABLE_", "PYTHONPATH")) and k != "PGPASSWORD"
    }
    env |= {"GENDURABLE_DSN": own_database, "GENDURABLE_TEST_DSN": gendurable_dsn}

    assert {"greet.py", "test_greet.py"} <= set(files)
    pytest_run = Command(["pytest", "test_greet.py"], [])
    # The test file runs as a reader runs it, even on a page that forgot to show the command.
    for command in [*commands, *([] if pytest_run in commands else [pytest_run])]:
        program, *args = command.argv
        interpreter = [sys.executable] if program == "python" else [sys.executable, "-m", program]
        code, out = await _run([*interpreter, *args], tmp_path, env)

        assert code == 0, f"$ {' '.join(command.argv)}\n{out}"
        if program == "pytest":
            summary = out.strip().splitlines()[-1]
            assert re.fullmatch(r"=+ 1 passed in [\d.]+s =+", summary), out  # and no warnings
        else:
            assert out.splitlines() == command.output
    assert [c.argv for c in commands] == [["python", "greet.py"], pytest_run.argv]
    assert "pyproject.toml" in files  # the configuration the test needs is on the page


def test_quickstart_says_how_to_install_before_a_release() -> None:
    text = PAGE.read_text()
    install = text[text.index("## Install") : text.index("## A database for development")]

    assert "pip install -e './gendurable[embedded]'" in install
    assert "git clone https://github.com/gendurable/gendurable" in install
