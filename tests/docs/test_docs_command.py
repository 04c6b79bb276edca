"""`gendurable docs MODULE [-o DIR]`, run as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import flows

from gendurable.docgen import workflow_page

HERE = Path(__file__).resolve().parent


def gendurable(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gendurable.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_docs_command_writes_a_page_per_workflow_of_a_module_name(tmp_path: Path) -> None:
    # A module name imports from the working directory, like `python -m`.
    done = gendurable("docs", "flows", "-o", str(tmp_path / "pages"), cwd=HERE)

    assert done.returncode == 0, done.stderr
    written = [tmp_path / "pages" / f"{n}.md" for n in ("order", "item", "notify")]
    assert done.stdout.splitlines() == [str(p) for p in written]
    assert written[0].read_text() == workflow_page(flows.Order.spec)
    assert written[2].read_text().startswith("# notify\n\nJob `notify`")


def test_docs_command_takes_a_file_path_and_defaults_to_docs_workflows(tmp_path: Path) -> None:
    done = gendurable("docs", str(HERE / "flows.py"), cwd=tmp_path)

    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "docs" / "workflows").iterdir()) == [
        "item.md",
        "notify.md",
        "order.md",
    ]


def test_docs_command_unknown_module_prints_usage_and_one_line_and_exits_2(tmp_path: Path) -> None:
    done = gendurable("docs", "no_such_module_xyz", "-o", str(tmp_path), cwd=tmp_path)

    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "usage: gendurable docs [-h] [-o DIR] MODULE",
        "gendurable docs: error: cannot import 'no_such_module_xyz': ModuleNotFoundError: "
        "No module named 'no_such_module_xyz'",
    ]
    assert list(tmp_path.iterdir()) == []


def test_docs_command_module_without_workflows_exits_2(tmp_path: Path) -> None:
    (tmp_path / "plain.py").write_text("x = 1\n")

    done = gendurable("docs", "plain.py", cwd=tmp_path)

    assert done.returncode == 2
    assert "'plain' defines no workflow" in done.stderr
    assert not (tmp_path / "docs").exists()


def test_docs_command_without_module_prints_usage_and_exits_2(tmp_path: Path) -> None:
    done = gendurable("docs", cwd=tmp_path)

    assert done.returncode == 2
    assert done.stderr.startswith("usage: gendurable docs")
