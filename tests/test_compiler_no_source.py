"""A workflow whose steps' source cannot be read (exec, stdin, a plain REPL) compiles with
only the edges `to=` declares, and says so once: a `gd.DefinitionWarning` naming it."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

import gendurable as gd
from gendurable.spec import END

FLOW = textwrap.dedent(
    """\
    import gendurable as gd


    @gd.workflow(name={name!r})
    class Flow:
        @gd.step(start=True{to_a})
        async def a(self, state, ctx):
            if ctx.attempt:
                return gd.done()
            return gd.goto(self.b)

        @gd.step{to_b}
        async def b(self, state, ctx):
            return gd.done()
    """
)


def flow_source(name: str, *, to_a: str = "", to_b: str = "") -> str:
    return FLOW.format(
        name=name,
        to_a=f", to={to_a}" if to_a else "",
        to_b=f"(to={to_b})" if to_b else "",
    )


def run_exec(source: str, filename: str = "<typed in>") -> Any:
    namespace: dict[str, Any] = {"__name__": "gd_no_source"}
    exec(compile(source, filename, "exec"), namespace)
    return namespace["Flow"]


def test_compiler_warns_once_naming_the_workflow_and_its_unread_steps() -> None:
    with pytest.warns(gd.DefinitionWarning) as caught:
        flow = run_exec(flow_source("typed.flow"))

    assert len(caught) == 1  # one warning for the workflow, not one per step
    message = str(caught[0].message)
    assert message.startswith("workflow 'typed.flow': the source of steps 'a', 'b' cannot be read")
    assert "<typed in>" in message
    assert "@gd.step(to=[...])" in message
    # Pointed at the user's code that decorated the class, not at gendurable's insides.
    assert caught[0].filename == "<typed in>"
    assert caught[0].lineno == 4  # the @gd.workflow line
    assert flow.spec.edges() == []  # what the warning is about


def test_compiler_warns_only_about_steps_that_declare_nothing() -> None:
    with pytest.warns(gd.DefinitionWarning) as caught:
        flow = run_exec(flow_source("half.flow", to_a="['b', '[*]']"))

    assert len(caught) == 1
    assert "the source of step 'b' cannot be read" in str(caught[0].message)
    assert flow.spec.step("a").edges == ("b", END)


def test_compiler_is_silent_when_every_step_declares_to() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        flow = run_exec(flow_source("declared.flow", to_a="['b', '[*]']", to_b="'[*]'"))

    assert caught == []
    assert flow.spec.edges() == [("a", "b"), ("a", END), ("b", END)]


def test_compiler_is_silent_for_a_workflow_in_a_real_file(tmp_path: Path) -> None:
    path = tmp_path / "flow_in_a_file.py"
    path.write_text(flow_source("file.flow"))
    spec = importlib.util.spec_from_file_location("gd_flow_in_a_file", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec.loader.exec_module(module)

    assert caught == []
    assert module.Flow.spec.edges() == [("a", END), ("a", "b"), ("b", END)]


def test_compiler_is_silent_for_a_job_defined_by_exec() -> None:
    namespace: dict[str, Any] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(
            compile(
                "import gendurable as gd\n"
                "@gd.job(name='typed.job')\n"
                "async def send(args, ctx):\n"
                "    return None\n",
                "<typed in>",
                "exec",
            ),
            namespace,
        )

    assert caught == []  # a job's one edge (to the end) needs no source
    assert namespace["send"].spec.edges() == [("perform", END)]


def test_compiler_warning_shows_on_stdin_as_a_user_sees_it() -> None:
    # Python's own default filters, as `python -` on a terminal has them: shown, once.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    result = subprocess.run(
        [sys.executable, "-"],
        env=env,
        input=flow_source("stdin.flow") + "print(Flow.spec.edges())\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert result.stdout == "[]\n"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("<stdin>:4: DefinitionWarning: workflow 'stdin.flow': ")


def test_compiler_warns_about_a_module_shipped_without_its_source(tmp_path: Path) -> None:
    path = tmp_path / "shipped.py"
    path.write_text(flow_source("shipped.flow"))
    spec = importlib.util.spec_from_file_location("gd_shipped", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    code = compile(path.read_text(), str(path), "exec")
    path.unlink()  # as a deployment of .pyc files only: the code names a file that is gone

    with pytest.warns(gd.DefinitionWarning) as caught:
        exec(code, module.__dict__)

    assert len(caught) == 1
    assert f"(defined in {path}: no .py file)" in str(caught[0].message)
    assert caught[0].filename == str(path)
