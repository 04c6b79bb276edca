"""The previous release, installed for the deploy tests: gendurable 0.1.0 in a virtualenv of
its own, built from the wheel kept in `fixtures/`.

The wheel was built (`python -m build --wheel`) from the 0.1.0 release commit (`Release
0.1.0`, the commit the v0.1.0 tag names), so the test works from a clean clone without the
tag or the network. The build is reproducible: `git archive <tag> | tar -x -C DIR` and a
build there give the same bytes (sha256 7a1fd018b8d0...). The virtualenv gets only the
wheel and, linked from this interpreter's site-packages, the same asyncpg, msgspec and
typing-extensions this test run uses (no download): the old engine imports the old
gendurable and nothing of the working tree.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import shutil
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

from venvs import create_venv, run

HERE = Path(__file__).resolve().parent
RELEASE = "0.1.0"
WHEEL = HERE / "fixtures" / f"gendurable-{RELEASE}-py3-none-any.whl"
DEPENDENCIES = ("asyncpg", "msgspec", "typing_extensions")
"""gendurable's own dependencies (`pyproject.toml`), by import name."""


def released_migrations() -> list[str]:
    """The migration files the release packages."""
    prefix = "gendurable/sql/migrations/"
    with zipfile.ZipFile(WHEEL) as wheel:
        return sorted(
            n[len(prefix) :]
            for n in wheel.namelist()
            if n.startswith(prefix) and n.endswith(".sql")
        )


def released_version() -> int:
    """The schema version the release leaves: its last migration's number."""
    return int(released_migrations()[-1].split("_", 1)[0])


def old_release_python(cache: Path) -> Path:
    """The python of a virtualenv holding gendurable 0.1.0, made once under `cache` (reused
    while the wheel and the dependencies are the same)."""
    target = cache / f"gendurable-{RELEASE}-{_key()}"
    python = target / "bin" / "python"
    with _locked(cache / f"{target.name}.lock"):
        if (target / "ready").exists():
            return python
        shutil.rmtree(target, ignore_errors=True)
        create_venv(target)
        run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", WHEEL])
        _link_dependencies(target, python)
        found = run([python, "-c", "import gendurable; print(gendurable.__version__)"])
        if found.strip() != RELEASE:
            raise AssertionError(f"the old release's virtualenv imports gendurable {found}")
        (target / "ready").write_text("")
    return python


def _key() -> str:
    """What the virtualenv depends on: the wheel, this Python, the dependencies' versions."""
    digest = hashlib.sha256(WHEEL.read_bytes())
    digest.update(sys.version.encode())
    for name in DEPENDENCIES:
        digest.update(f"{name}={importlib.metadata.version(name)}".encode())
    return digest.hexdigest()[:12]


def _link_dependencies(target: Path, python: Path) -> None:
    """Make the dependencies importable in the virtualenv, from a folder holding only them
    (linked from this interpreter's site-packages) named in a `.pth` file."""
    deps = target / "deps"
    deps.mkdir()
    for name in DEPENDENCIES:
        distribution = importlib.metadata.distribution(name)
        for top in _top_level(distribution, name):
            (deps / top.name).symlink_to(top)
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    (Path(site.strip()) / "_gendurable_test_deps.pth").write_text(f"{deps}\n")


def _top_level(distribution: importlib.metadata.Distribution, name: str) -> list[Path]:
    """The package or module `name` of an installed distribution, and its dist-info."""
    base = Path(str(distribution.locate_file("")))
    found = [p for p in (base / name, base / f"{name}.py") if p.exists()]
    info = getattr(distribution, "_path", None)
    if not found or info is None:
        raise AssertionError(f"cannot find {name} in {base}")
    return [*found, Path(info)]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        yield
