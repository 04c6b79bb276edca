"""The public API is exactly what `gendurable.__all__` lists: a change to it is deliberate."""

import importlib
import inspect

import pytest

import gendurable

PUBLIC_API = [
    "Backoff",
    "BlockedBy",
    "ChildResult",
    "Clock",
    "ConfigError",
    "Context",
    "DefinitionError",
    "DefinitionWarning",
    "DuplicateKey",
    "Engine",
    "EngineError",
    "GenDurableError",
    "Handle",
    "IdempotencyConflict",
    "InstanceInfo",
    "Job",
    "Limit",
    "ManualClock",
    "NoEngine",
    "NoTarget",
    "Outcome",
    "QueuePause",
    "ResultTimeout",
    "Schedule",
    "Signal",
    "StateUpgradeError",
    "StepTimeout",
    "SystemClock",
    "Telemetry",
    "ValidationError",
    "Workflow",
    "WorkflowFailed",
    "WorkflowSpec",
    "__version__",
    "await_signals",
    "done",
    "goto",
    "job",
    "logging_handler",
    "migrate",
    "reawait",
    "retry",
    "spawn",
    "step",
    "stop",
    "upgrade",
    "workflow",
]


def own_docstring(obj: object) -> str:
    """The docstring an object declares itself: not inherited, not dataclass-generated."""
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__") or ""
        return "" if doc.startswith(f"{obj.__name__}(") else doc.strip()
    return (getattr(obj, "__doc__", None) or "").strip()


def test_public_api_all_matches_snapshot() -> None:
    assert sorted(gendurable.__all__) == PUBLIC_API
    assert len(set(gendurable.__all__)) == len(gendurable.__all__)


def test_public_api_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from gendurable import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == PUBLIC_API


@pytest.mark.parametrize("name", PUBLIC_API)
def test_public_api_name_importable(name: str) -> None:
    module = importlib.import_module("gendurable")
    assert getattr(module, name) is getattr(gendurable, name)


@pytest.mark.parametrize(
    "name",
    [
        n
        for n in PUBLIC_API
        if inspect.isclass(getattr(gendurable, n)) or inspect.isfunction(getattr(gendurable, n))
    ],
)
def test_public_api_name_has_docstring(name: str) -> None:
    assert own_docstring(getattr(gendurable, name)), f"gendurable.{name} has no docstring"


def test_public_api_version_is_a_string() -> None:
    assert isinstance(gendurable.__version__, str)
    assert gendurable.__version__
