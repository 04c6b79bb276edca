"""User code type-checks against the class-level API when the workflow subclasses gd.Workflow."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

GOOD = """
import msgspec
import gendurable as gd


@gd.workflow
class Flow(gd.Workflow):
    class State(msgspec.Struct):
        n: int = 0

    @gd.step
    async def only(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.done(state.n)


async def use() -> None:
    handle: gd.Handle = await Flow.start(key="k", state=Flow.State())
    info: gd.InstanceInfo = await Flow.get(handle.id)
    signal_id: int = await Flow.signal("k", "go")
    handles: list[gd.Handle] = await Flow.start_many([Flow.new(key="a")])
    await Flow.cancel(info.id)
    print(signal_id, handles, await Flow.result("k", timeout=1.0))
"""

BAD = (
    GOOD
    + """

async def misuse() -> None:
    wrong: int = await Flow.start(key="k")
"""
)


def mypy(source: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "user_code.py"
    path.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_typing_class_api_type_checks_for_workflow_subclasses(tmp_path: Path) -> None:
    result = mypy(GOOD, tmp_path)
    assert result.returncode == 0, result.stdout


def test_typing_class_api_misuse_is_caught(tmp_path: Path) -> None:
    result = mypy(BAD, tmp_path)
    assert result.returncode == 1
    assert 'Incompatible types in assignment (expression has type "Handle"' in result.stdout
