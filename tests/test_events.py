"""One catalogue of event names (`gendurable.events`): every emitter uses it, the docs' event
table and `gendurable.otel` cover it, and no event is written as a literal tuple in src/."""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

import gendurable as gd
from gendurable import events
from gendurable.events import CATALOGUE, Event, dotted
from gendurable.otel import UNMAPPED, Instrumentation
from gendurable.telemetry import Telemetry

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "gendurable"
EVENT_TABLE = ROOT / "docs" / "guide" / "engine.md"
CONSTANTS = {
    name: value
    for name, value in vars(events).items()
    if name.isupper() and not name.startswith("_") and isinstance(value, tuple)
}


def emit_calls() -> list[tuple[str, ast.Call]]:
    """(file:line, call) of every `<x>.emit(...)` in src/."""
    calls = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "emit"
            ):
                calls.append((f"{path.relative_to(ROOT)}:{node.lineno}", node))
    return calls


def emitted_event(call: ast.Call) -> Event | None:
    """The catalogue event a call's first argument names (`STEP_STOP`, `events.STEP_STOP`)."""
    arg = call.args[0] if call.args else None
    if isinstance(arg, ast.Name):
        return CONSTANTS.get(arg.id)
    if isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name):
        return CONSTANTS.get(arg.attr) if arg.value.id == "events" else None
    return None


def literal_keys(node: ast.expr) -> set[str] | None:
    """The string keys of a dict literal (None for anything else)."""
    if not isinstance(node, ast.Dict):
        return None
    return {k.value for k in node.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)}


def documented() -> dict[str, tuple[set[str], set[str]]]:
    """The docs' event table: event -> (names in backticks in measurements, in metadata),
    with `as <event>` taking in that event's names."""
    rows: dict[str, tuple[str, str]] = {}
    lines = EVENT_TABLE.read_text().splitlines()
    start = lines.index("| event | measurements | metadata |")
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        event, measures, meta = (cell.strip() for cell in line.strip().strip("|").split("|"))
        rows[event.strip("`")] = (measures, meta)

    def names(event: str, column: int) -> set[str]:
        cell = rows[event][column]
        found = set(re.findall(r"`([^`]+)`", cell))
        for other in re.findall(r"\bas `([^`]+)`", cell):
            found |= names(other, column)
        return found

    return {event: (names(event, 0), names(event, 1)) for event in rows}


def test_events_every_constant_is_in_the_catalogue() -> None:
    assert set(CONSTANTS.values()) == set(CATALOGUE)
    assert len(CONSTANTS) == len(CATALOGUE)  # no event under two names
    for event in CATALOGUE:
        assert CONSTANTS[dotted(event).replace(".", "_").upper()] == event


def test_events_every_emitter_names_a_catalogue_event() -> None:
    calls = emit_calls()
    assert len(calls) >= 15  # the walk found the emitters
    unnamed = [where for where, call in calls if emitted_event(call) is None]
    assert unnamed == [], "emit() with an event not taken from gendurable.events"


def test_events_emitters_send_only_the_keys_the_catalogue_declares() -> None:
    checked = 0
    for where, call in emit_calls():
        event = emitted_event(call)
        assert event is not None
        spec = CATALOGUE[event]
        for arg, declared in zip(call.args[1:3], (spec.measurements, spec.metadata), strict=False):
            keys = literal_keys(arg)
            if keys is not None:
                checked += 1
                assert keys <= set(declared), f"{where}: {dotted(event)} sends {keys}"
    assert checked >= 10


def test_events_no_literal_event_tuple_in_src() -> None:
    q = "['\"]"  # either quote
    patterns = [re.compile(rf"\(\s*{q}{a}{q}\s*,\s*{q}{b}{q}\s*,?\s*\)") for a, b in CATALOGUE]
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*"))
        if path.is_file() and path.suffix in {".py", ".md", ".html", ".sql"}
        if path != SRC / "events.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(p.search(line) for p in patterns)
    ]
    assert found == [], "write events as gendurable.events constants"


def test_events_the_docs_table_lists_every_event_with_its_keys() -> None:
    table = documented()

    assert set(table) == {dotted(event) for event in CATALOGUE}
    for event, spec in CATALOGUE.items():
        measures, meta = table[dotted(event)]
        assert set(spec.measurements) <= measures, dotted(event)
        assert set(spec.metadata) <= meta, dotted(event)


def test_events_otel_maps_or_deliberately_skips_every_event() -> None:
    instrumentation = Instrumentation(SimpleNamespace(name="e", telemetry=Telemetry()))

    assert instrumentation.routes | UNMAPPED == set(CATALOGUE)
    assert instrumentation.routes & UNMAPPED == frozenset()


def test_events_logging_handler_logs_a_failed_run_at_warning_on_one_line_and_runs_at_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    telemetry = Telemetry()
    telemetry.attach("log", gd.logging_handler())
    error = RuntimeError("line one\nline two")

    with caplog.at_level(logging.DEBUG, logger="gendurable"):
        telemetry.emit(events.MAINTENANCE_RUN, {"duration": 0.5, "rows": 0}, {"task": "poller"})
        telemetry.emit(events.MAINTENANCE_RUN, {"duration": 0.5, "rows": 3}, {"task": "reaper"})
        telemetry.emit(
            events.MAINTENANCE_EXCEPTION, {"duration": 0.5}, {"task": "reaper", "error": error}
        )

    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.DEBUG, "maintenance.run task=poller duration=0.5 rows=0"),
        (logging.DEBUG, "maintenance.run task=reaper duration=0.5 rows=3"),
        (
            logging.WARNING,
            "maintenance.exception task=reaper error=RuntimeError: line one\\nline two "
            "duration=0.5",
        ),
    ]
