"""The Guarantees page (`docs/guarantees.md`) and the mutation run (`bench/mutants.py`) stay
true to each other and to the sources: every test the page names exists, every mutant it
names is one the run has (and it names them all), the mutants it argues equivalent are the
run's, every mutant still applies to the current sources, and the recorded run
(`bench/results/mutants.jsonl`) killed every mutant that is not argued equivalent."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "guarantees.md").read_text()


def mutants_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_mutants", ROOT / "bench" / "mutants.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_mutants"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


RUN = mutants_module()
MUTANTS = RUN.MUTANTS


def named_mutants() -> set[str]:
    """Backticked `group.name` tokens of the page whose group is one of the run's."""
    groups = {mu.id.split(".")[0] for mu in MUTANTS}
    tokens = re.findall(r"`([a-z_]+)\.([a-z_]+)`", PAGE)
    return {f"{group}.{name}" for group, name in tokens if group in groups}


def test_guarantees_page_names_only_tests_that_exist() -> None:
    missing = []
    for path, name in re.findall(r"`(tests/[\w/]+\.py)::(\w+)", PAGE):
        source = ROOT / path
        if not source.exists() or not re.search(rf"def {name}\(", source.read_text()):
            missing.append(f"{path}::{name}")
    for path in re.findall(r"`(tests/[\w/]+\.py)`", PAGE):
        if not (ROOT / path).exists():
            missing.append(path)
    assert missing == []


def test_guarantees_page_names_every_mutant_of_the_run_and_no_other() -> None:
    run = {mu.id for mu in MUTANTS}
    named = named_mutants()

    assert sorted(named - run) == [], "the page names mutants the run does not have"
    assert sorted(run - named) == [], "mutants of the run the page does not name"


def test_guarantees_page_argues_exactly_the_mutants_argued_equivalent() -> None:
    table = PAGE[PAGE.index("| mutant | why no test can fail |") :].split("\n\n")[0]
    first_cells = [row.split("|")[1] for row in table.splitlines()[2:]]
    argued = {token for cell in first_cells for token in re.findall(r"`([a-z_.]+)`", cell)}

    assert argued == {mu.id for mu in MUTANTS if mu.equivalent}


def test_every_mutant_applies_to_the_current_sources() -> None:
    broken = []
    for mu in MUTANTS:
        try:
            RUN.mutate((ROOT / mu.path).read_text(), mu)
        except ValueError as error:
            broken.append(str(error))
    assert broken == []


def test_the_recorded_mutation_run_killed_every_mutant_not_argued_equivalent() -> None:
    lines = (ROOT / "bench" / "results" / "mutants.jsonl").read_text().splitlines()
    recorded = {r["mutant"]: r for r in map(json.loads, lines)}
    equivalent = {mu.id for mu in MUTANTS if mu.equivalent}

    assert sorted(recorded) == sorted(mu.id for mu in MUTANTS), "run bench/mutants.py again"
    assert {
        id: r["status"]
        for id, r in recorded.items()
        if r["status"] != "killed" and not (id in equivalent and r["status"] == "survived")
    } == {}
