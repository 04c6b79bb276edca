"""The quality gates run with the suite, so CI fails when one of them does.

ruff (lint and format), mypy --strict on src/ and the strict docs build: each runs as the
installed tool would from the repository root, and its output is shown when it fails. And
the tests keep one order: the tree under tests/ mirrors src/gendurable/.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

OUTSIDE_THE_MIRROR = {
    "deploy": "deploys across releases: old wheels and schemas, rolling workers, the check",
    "docs": "the documentation: `gendurable docs`, the rendered site, what the pages claim",
    "e2e": "whole deployments: worker processes, restarted and failed-over servers, a pooler",
    "faults": "engines behind a fault proxy: dropped connections, lost answers, timeouts",
    "props": "models of the whole engine, checked on generated histories",
    "release": "the package as built and published",
}
"""The folders of tests/ that mirror no package of src/gendurable/, and what they hold."""


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a tool of this interpreter's environment from the repository root."""
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    "command",
    [
        ("ruff", "check", "."),
        ("ruff", "format", "--check", "."),
        ("mypy", "--strict", "src/"),
    ],
    ids=["ruff-check", "ruff-format", "mypy-strict"],
)
def test_quality_gate_passes(command: tuple[str, ...]) -> None:
    result = run(*command)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stdout}{result.stderr}"


def test_quality_gate_docs_build_strict(tmp_path: Path) -> None:
    result = run("mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site"))
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    assert (tmp_path / "site" / "index.html").exists()


def misplaced(tests: Path, package: Path) -> list[str]:
    """Test modules whose folder mirrors no package of `package` and is not one of
    `OUTSIDE_THE_MIRROR`: a test of `gendurable/engine/x.py` goes to tests/engine/, one of
    `gendurable/x.py` to tests/ itself."""
    found = []
    for path in sorted(tests.rglob("test_*.py")):
        folder = path.parent.relative_to(tests)
        if folder == Path("."):
            continue
        if (package / folder / "__init__.py").exists():
            continue
        if len(folder.parts) == 1 and folder.name in OUTSIDE_THE_MIRROR:
            continue
        found.append(str(path.relative_to(tests.parent)))
    return found


def test_tests_mirror_the_package() -> None:
    assert misplaced(ROOT / "tests", ROOT / "src" / "gendurable") == []
    assert sorted(p for p in OUTSIDE_THE_MIRROR if not (ROOT / "tests" / p).is_dir()) == []


def test_a_test_outside_the_mirror_is_found(tmp_path: Path) -> None:
    package = tmp_path / "src" / "pkg"
    for folder in ("", "engine", "engine/deep"):
        (package / folder).mkdir(parents=True, exist_ok=True)
        (package / folder / "__init__.py").touch()
    tests = tmp_path / "tests"
    for name in (
        "test_top.py",
        "engine/test_x.py",
        "engine/deep/test_y.py",
        "props/test_p.py",
        "unit/test_u.py",
        "engine/unit/test_v.py",
        "props/more/test_w.py",
    ):
        (tests / name).parent.mkdir(parents=True, exist_ok=True)
        (tests / name).touch()

    assert misplaced(tests, package) == [
        "tests/engine/unit/test_v.py",
        "tests/props/more/test_w.py",
        "tests/unit/test_u.py",
    ]


def test_test_module_names_are_unique() -> None:
    """pytest imports test modules by their file name (rootdir-relative import mode
    "prepend", no __init__.py): two of one name would collide."""
    names = Counter(p.name for p in (ROOT / "tests").rglob("*.py") if p.name != "conftest.py")
    assert sorted(name for name, n in names.items() if n > 1) == []
