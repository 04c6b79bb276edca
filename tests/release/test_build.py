"""The release artefacts: `python -m build` makes the sdist and the wheel, `twine check`
accepts them, and the wheel, installed in a fresh virtualenv outside the repository, runs
`examples/hello.py` against the test server."""

from __future__ import annotations

import asyncio
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

import gendurable as gd
from venvs import ROOT, clean_env, create_venv, run

PACKAGE = ROOT / "src" / "gendurable"


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel, built from the working tree as CI builds them (the wheel
    from the sdist, each in an isolated build environment)."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", out, ROOT])
    return out


def _wheel(dist: Path) -> Path:
    return dist / f"gendurable-{gd.__version__}-py3-none-any.whl"


def test_build_makes_an_sdist_and_a_wheel_that_twine_accepts(dist: Path) -> None:
    assert sorted(p.name for p in dist.iterdir()) == [
        f"gendurable-{gd.__version__}-py3-none-any.whl",
        f"gendurable-{gd.__version__}.tar.gz",
    ]
    out = run([sys.executable, "-m", "twine", "check", "--strict", *sorted(dist.iterdir())])
    assert out.count("PASSED") == 2


def test_the_wheel_holds_every_file_of_the_package_and_its_version(dist: Path) -> None:
    with zipfile.ZipFile(_wheel(dist)) as wheel:
        names = set(wheel.namelist())
        metadata = wheel.read(f"gendurable-{gd.__version__}.dist-info/METADATA").decode()
    packaged = {
        "gendurable/" + p.relative_to(PACKAGE).as_posix()
        for p in PACKAGE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert packaged - names == set()
    # What the engine and the dashboard load at run time, named so a reader sees them here.
    assert {
        "gendurable/sql/migrations/0001_initial.sql",
        "gendurable/sql/instances.sql",
        "gendurable/web/templates/base.html",
        "gendurable/web/static/dashboard.css",
        "gendurable/py.typed",
    } <= names
    assert f"\nVersion: {gd.__version__}\n" in metadata
    assert "\nLicense-Expression: Apache-2.0\n" in metadata
    assert f"gendurable-{gd.__version__}.dist-info/licenses/LICENSE" in names


async def test_the_wheel_in_a_fresh_virtualenv_runs_hello(
    dist: Path, tmp_path: Path, gendurable_dsn: str, gendurable_schema: str
) -> None:
    python = await asyncio.to_thread(create_venv, tmp_path / "venv")
    await asyncio.to_thread(run, [python, "-m", "pip", "install", "-q", _wheel(dist)])
    shutil.copy(ROOT / "examples" / "hello.py", tmp_path / "hello.py")
    env = clean_env(GENDURABLE_DSN=gendurable_dsn)

    out = await asyncio.to_thread(
        run, [python, "hello.py", "--schema", gendurable_schema], cwd=tmp_path, env=env
    )
    where = await asyncio.to_thread(
        run, [python, "-c", "import gendurable; print(gendurable.__file__)"], cwd=tmp_path, env=env
    )
    version = await asyncio.to_thread(
        run, [tmp_path / "venv" / "bin" / "gendurable", "--version"], cwd=tmp_path, env=env
    )

    assert out.splitlines()[-1] == "Hello, world!"
    assert Path(where.strip()).is_relative_to(tmp_path / "venv")
    assert version == f"gendurable {gd.__version__}\n"
