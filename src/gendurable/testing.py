"""The gendurable pytest plugin, loaded automatically once gendurable is installed.

Fixtures:

- `gendurable_dsn` (session): `$GENDURABLE_TEST_DSN` if set, else one embedded PostgreSQL for
  the whole session (the `gendurable[embedded]` extra), stopped when the session ends.
- `gendurable_schema`: a fresh schema name per test (`t_<hex>`); the schema is dropped with
  everything in it after the test. Nothing is created: migrate it, or let an engine do so.
- `manual_clock`: a `ManualClock`, for time travel on real PostgreSQL.
- `no_task_leaks` (opt-in, needs pytest-asyncio): fails a test that leaves asyncio tasks
  running. Request it before the fixtures that own tasks, so it is torn down after them.
- `recorder`: `recorder(engine)` attaches a `TelemetryRecorder` to the engine and returns
  it: `rec.of(events.STEP_STOP, workflow="x")`, `await rec.wait(events.AWAIT_TIMEOUT)`
  (`from gendurable import events`).
- `make_engine` (needs pytest-asyncio): a factory of running engines on the test's schema,
  `await make_engine(workflows=[...], queues={...}, **options)`, with the test's
  `gendurable_clock` (the `manual_clock` unless a conftest overrides `gendurable_clock`) and a
  unique name; every engine is stopped at teardown, and one whose `stop()` hangs fails the test.

One server per session, one schema per test: parallel first starts of embedded servers race
(as root the package creates an OS user), and a schema is much cheaper than a server.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
import threading
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Coroutine,
    Iterator,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from .clock import Clock, ManualClock
from .db.schema_admin import drop_schema
from .embedded import EmbeddedPostgres
from .engine.engine import Engine
from .events import Event, dotted

__all__ = [
    "STOP_LIMIT",
    "TEST_DSN_ENV",
    "MakeEngine",
    "ManualClock",
    "RecorderFactory",
    "TelemetryRecorder",
]

TEST_DSN_ENV = "GENDURABLE_TEST_DSN"

_T = TypeVar("_T")

if TYPE_CHECKING:
    from pytest_asyncio import fixture as _asyncio_fixture
else:
    try:
        from pytest_asyncio import fixture as _asyncio_fixture
    except ImportError:  # pytest-asyncio is optional: only no_task_leaks needs it
        _asyncio_fixture = pytest.fixture


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run `coro` to completion on a private loop in a thread.

    Sync fixtures must not touch the test's event loop: asyncio.run() in this thread would
    replace (and then clear) the loop pytest-asyncio installed.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, name="gendurable-fixture")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    result: _T = box["result"]
    return result


@pytest.fixture(scope="session")
def gendurable_dsn() -> Iterator[str]:
    """The test database: `$GENDURABLE_TEST_DSN`, else one embedded server per session."""
    given = os.environ.get(TEST_DSN_ENV)
    if given:
        yield given
        return
    server = EmbeddedPostgres()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture
def gendurable_schema(gendurable_dsn: str) -> Iterator[str]:
    """A schema name no other test uses; dropped (CASCADE) after the test."""
    schema = f"t_{secrets.token_hex(6)}"
    yield schema
    _run(drop_schema(gendurable_dsn, schema))


@pytest.fixture
def manual_clock() -> ManualClock:
    """A `ManualClock` at its default start time; move it with `advance()` or `set()`."""
    return ManualClock()


@_asyncio_fixture
async def no_task_leaks() -> AsyncIterator[None]:
    """Fail the test if asyncio tasks it started are still running when it ends.

    Leaked tasks are cancelled before the failure is reported, so they cannot disturb the
    next test. Only the test's own event loop is checked.
    """
    before = asyncio.all_tasks()
    yield
    # Tasks cancelled at the very end of the test need a few loop turns to finish.
    for _ in range(3):
        await asyncio.sleep(0)
    current = asyncio.current_task()
    leaked = [t for t in asyncio.all_tasks() - before if t is not current and not t.done()]
    if not leaked:
        return
    for task in leaked:
        task.cancel()
    await asyncio.gather(*leaked, return_exceptions=True)
    names = ", ".join(sorted(f"{t.get_name()} ({t.get_coro()!r})" for t in leaked))
    pytest.fail(f"the test left {len(leaked)} asyncio task(s) running: {names}", pytrace=False)


MakeEngine = Callable[..., Awaitable[Engine]]
"""The type of the `make_engine` fixture."""

STOP_LIMIT = 15.0
"""Seconds an engine's `stop()` may take at teardown before the test fails."""

_serial = itertools.count()


@pytest.fixture
def gendurable_clock(manual_clock: ManualClock) -> Clock | None:
    """The clock `make_engine` gives engines: the test's `manual_clock`.

    Override it in a conftest to return None for the system clock (real-time tests).
    """
    return manual_clock


@_asyncio_fixture
async def make_engine(
    no_task_leaks: None,
    gendurable_dsn: str,
    gendurable_schema: str,
    gendurable_clock: Clock | None,
) -> AsyncIterator[MakeEngine]:
    """A factory: `await make_engine(workflows=[...], queues={...}, **options)`.

    Defaults: the test's schema, `queues={"default": 4}` (`queues=None` makes a client-only
    engine), the `gendurable_clock`, a name no other engine of the process has.
    `start=False` returns the engine unstarted (to attach telemetry first). Every engine is
    stopped at teardown; a `stop()` that does not return within `STOP_LIMIT` fails the test.
    """
    engines: list[Engine] = []
    default: Any = object()

    async def make(
        *,
        workflows: Sequence[Any],
        queues: Mapping[str, int] | None = default,
        name: str | None = None,
        start: bool = True,
        **options: Any,
    ) -> Engine:
        options.setdefault("schema", gendurable_schema)
        options.setdefault("clock", gendurable_clock)
        engine = Engine(
            gendurable_dsn,
            workflows=workflows,
            queues={"default": 4} if queues is default else queues,
            name=name or f"test-{next(_serial)}-{secrets.token_hex(3)}",
            **options,
        )
        engines.append(engine)
        if start:
            await engine.start()
        return engine

    yield make
    hung = []
    for engine in reversed(engines):
        try:
            async with asyncio.timeout(STOP_LIMIT):
                await engine.stop(timeout=5)
        except TimeoutError:
            hung.append(engine.name)
    if hung:
        pytest.fail(f"engine.stop() did not return within {STOP_LIMIT}s for {hung}", pytrace=False)


class TelemetryRecorder:
    """Records every telemetry event of the engines it is attached to, for assertions."""

    def __init__(self) -> None:
        self.events: list[tuple[Event, dict[str, Any], dict[str, Any]]] = []
        self._changed: asyncio.Event | None = None

    def attach(self, engine: Engine) -> TelemetryRecorder:
        """Record `engine`'s events from now on; returns self."""
        engine.telemetry.attach(f"test-recorder-{id(self)}", self)
        return self

    def __call__(
        self, event: Event, measurements: Mapping[str, Any], metadata: Mapping[str, Any]
    ) -> None:
        self.events.append((event, dict(measurements), dict(metadata)))
        if self._changed is not None:
            self._changed.set()

    def of(self, event: Event, **where: Any) -> list[dict[str, Any]]:
        """Metadata and measurements of each recorded `event` whose metadata matches `where`."""
        return [
            {**meta, **measures}
            for name, measures, meta in self.events
            if name == event and all(meta.get(k) == v for k, v in where.items())
        ]

    async def wait(
        self, event: Event, *, count: int = 1, timeout: float = 10.0, **where: Any
    ) -> list[dict[str, Any]]:
        """Wait until `event` (matching `where`) was recorded `count` times, at most `timeout`."""
        if self._changed is None:
            self._changed = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                while len(self.of(event, **where)) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            seen = sorted({dotted(name) for name, _, _ in self.events})
            pytest.fail(
                f"{dotted(event)} {where or ''} was not recorded {count} time(s) within "
                f"{timeout}s (got {len(self.of(event, **where))}; events seen: {seen})"
            )
        return self.of(event, **where)


RecorderFactory = Callable[[Engine], TelemetryRecorder]
"""The type of the `recorder` fixture."""


@pytest.fixture
def recorder() -> RecorderFactory:
    """`recorder(engine)` attaches a fresh `TelemetryRecorder` to `engine` and returns it."""
    return lambda engine: TelemetryRecorder().attach(engine)
