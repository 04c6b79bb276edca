"""Which running engine serves a workflow: the link between the class API and engines.

Engines register here while they run; `Flow.start(...)` and friends resolve through it. This
module imports nothing of the engine, so the DSL stays free of the database layer.
"""

from __future__ import annotations

from typing import Any, Protocol

from .errors import EngineError, NoEngine


class Client(Protocol):
    """What the class API needs from an engine (implemented by `gendurable.Engine`)."""

    @property
    def name(self) -> str:
        """The engine's name, unique among the engines running in this process."""
        ...

    def serves(self, workflow: str) -> bool:
        """True when this engine was given the workflow called `workflow`."""
        ...

    async def start_instance(self, workflow: str, **options: Any) -> Any: ...
    async def start_many(self, entries: Any) -> Any: ...
    async def signal(
        self,
        workflow: str,
        key_or_id: str | int,
        name: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
    ) -> Any: ...
    async def get(self, workflow: str, key_or_id: str | int) -> Any: ...
    async def result(self, workflow: str, key_or_id: str | int, timeout: float | None) -> Any: ...
    async def cancel(self, workflow: str, key_or_id: str | int) -> Any: ...


_running: dict[str, Client] = {}


def register(engine: Client) -> None:
    """Make `engine` reachable by name; a second running engine of the same name raises."""
    if engine.name in _running and _running[engine.name] is not engine:
        raise EngineError(
            f"an engine named {engine.name!r} is already running in this process; "
            "give each engine its own name="
        )
    _running[engine.name] = engine


def unregister(engine: Client) -> None:
    """Forget `engine` (called when it stops)."""
    if _running.get(engine.name) is engine:
        del _running[engine.name]


def resolve(workflow: str, engine: Client | str | None = None) -> Client:
    """The running engine that serves `workflow`, or the one named/passed as `engine`."""
    if engine is not None and not isinstance(engine, str):
        return engine
    if isinstance(engine, str):
        found = _running.get(engine)
        if found is None:
            raise NoEngine(f"no engine named {engine!r} is running (start it with `async with`)")
        return found
    serving = [e for e in _running.values() if e.serves(workflow)]
    if not serving:
        raise NoEngine(
            f"no running engine serves workflow {workflow!r}: pass it in "
            "Engine(workflows=[...]) and run the engine with `async with engine:`"
        )
    if len(serving) > 1:
        names = ", ".join(sorted(e.name for e in serving))
        raise NoEngine(
            f"several running engines serve workflow {workflow!r} ({names}): pass engine="
        )
    return serving[0]
