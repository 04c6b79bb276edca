"""The quality gates run with the suite, so CI fails when one of them does.

ruff (lint and format), mypy --strict on src/ and the strict docs build: each runs as the
installed tool would from the repository root, and its output is shown when it fails. And
the tests keep one order: the tree under tests/ mirrors src/gendurable/.
"""

from __future__ import annotations

import ast
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


# -- layers ------------------------------------------------------------------------------------
# Every module of src/gendurable has a layer; a module imports only from its own layer or the
# ones below it, and no two modules import each other, however far apart: no cycle. Every
# import counts, at the top of a module, inside a function or under `if TYPE_CHECKING:` (a
# late import hides a cycle from Python, not from the design).


def names(text: str) -> tuple[str, ...]:
    """The module names of a layer, written as words."""
    return tuple(text.split())


LAYERS: dict[str, tuple[str, ...]] = {
    # Values and pure functions over them: definitions, compiled specs, outcomes, encodings,
    # events. No database, no engine.
    "core values": names(
        "attempts blocked clock codec compiler context dsl durations entries errors events "
        "json_schema limit outcome rate_configs records routing schedule spec telemetry "
        "type_labels upgrader version"
    ),
    # PostgreSQL: connections, the pool, named statements, the stores, migrations, the
    # throwaway server.
    "db": names(
        "db db.connect db.engine_store db.listener db.maintenance_store db.migrator "
        "db.operator_store db.outage db.pool db.queue_store db.repair_store db.rows "
        "db.schedule_store db.schema_admin embedded sql sql.scripts"
    ),
    # The background loops an engine runs beside its steps; they never import the engine.
    "maintenance": names(
        "maintenance maintenance.collector maintenance.loop maintenance.nodes "
        "maintenance.reaper maintenance.ticker"
    ),
    # Running steps: the composition root and what it wires.
    "engine": names(
        "engine engine.claimed engine.client engine.committer engine.config engine.decide "
        "engine.drain engine.engine engine.executor engine.group_commit engine.local "
        "engine.notifier engine.pauses engine.poller engine.rate_config engine.scheduler "
        "engine.watchdog"
    ),
    # What people run on an engine or its rows without running steps: the deploy check, the
    # docs generator, loading MODULE:ENGINE, the operators' repairs and their checks,
    # OpenTelemetry.
    "tools": names(
        "bulk deploy_check docgen loader otel rewind signal_check start_check workflow_records"
    ),
    # What users touch: the package's public names, the command line, the dashboard, the
    # pytest plugin.
    "faces": names(
        "gendurable __main__ testing cli cli.__main__ cli.act cli.admin cli.bulk cli.check "
        "cli.command cli.docs cli.inspection cli.output cli.queues cli.runner cli.schedules "
        "cli.session cli.web web web.actions web.bulk web.chart web.csrf web.dashboard "
        "web.diagram web.flash web.format web.overview web.pages web.params web.queue_actions "
        "web.server web.site web.spec_page"
    ),
}
"""Lowest first. A module's name is relative to `gendurable` (`gendurable` is the package)."""

PACKAGE = ROOT / "src" / "gendurable"


def layer_of() -> dict[str, int]:
    """`gendurable.x.y` -> the rank of its layer (0 is the lowest)."""
    ranks: dict[str, int] = {}
    for rank, members in enumerate(LAYERS.values()):
        for name in members:
            full = "gendurable" if name == "gendurable" else f"gendurable.{name}"
            assert full not in ranks, f"{full} is in two layers of LAYERS"
            ranks[full] = rank
    return ranks


def source_modules(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its own name)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports_of(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {module of the package it imports: the line of the first such import}."""

    def known(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, dict[str, int]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: dict[str, int] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str | None] = []
            if isinstance(node, ast.Import):
                targets = [known(alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                # `from . import csrf` imports the module csrf, not the package's __init__.
                targets = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else known(base)
                    for a in node.names
                ]
            for target in targets:
                if target is not None and target != name:
                    edges.setdefault(target, node.lineno)
        graph[name] = edges
    return graph


def upward_imports(graph: dict[str, dict[str, int]], ranks: dict[str, int]) -> list[str]:
    names = list(LAYERS)
    return [
        f"{module} ({names[ranks[module]]}) imports {target} ({names[ranks[target]]}) "
        f"at line {line}"
        for module, edges in sorted(graph.items())
        for target, line in sorted(edges.items())
        if ranks[target] > ranks[module]
    ]


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle (as a path back to its start) per strongly connected set of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's algorithm
        index[module] = low[module] = len(index)
        stack.append(module)
        for target in graph[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            members = set()
            while True:
                member = stack.pop()
                members.add(member)
                if member == module:
                    break
            if len(members) > 1:
                found.append(_path_back(graph, module, members))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def _path_back(graph: dict[str, dict[str, int]], start: str, members: set[str]) -> list[str]:
    """The shortest import path from `start` back to itself inside `members`."""
    paths = {target: [start, target] for target in graph[start] if target in members}
    while start not in paths:
        paths = {
            target: [*path, target]
            for path in paths.values()
            for target in graph[path[-1]]
            if target in members and target not in path[1:]
        } | paths
    return paths[start]


def test_layers_every_module_has_one() -> None:
    modules = set(source_modules())
    ranks = layer_of()
    missing = sorted(modules - set(ranks))
    stale = sorted(set(ranks) - modules)
    assert not missing, (
        f"no layer for {', '.join(missing)}: add each to LAYERS in tests/test_quality_gates.py "
        f"(lowest first: {' < '.join(LAYERS)})"
    )
    assert not stale, f"LAYERS names modules that do not exist: {', '.join(stale)}"


def test_layers_imports_point_down() -> None:
    ranks = layer_of()
    graph = imports_of(source_modules())
    assert set(graph) <= set(ranks), "every module needs a layer (see the test above)"
    upward = upward_imports(graph, ranks)
    assert not upward, "imports that run up the layers:\n" + "\n".join(upward)


def test_layers_no_import_cycle() -> None:
    found = cycles(imports_of(source_modules()))
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


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
