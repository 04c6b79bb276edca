"""What steps record while a test runs, emptied before every test by one shared fixture.

A step is module-level code, so what it saw or did can only go to a module-level object, and
what one test's steps left there must not reach the next test. Make each such object with
`recorded(...)` (a list, a dict, a set: anything with `clear()`), or use a `Gate` for an
`asyncio.Event`; the autouse `recordings` fixture of the root conftest empties them all
before each test, so no test module resets its own:

    RUNS: list[str] = recorded([])
    ENTERED: dict[str, asyncio.Event] = recorded({})
    GATE = Gate()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, TypeVar

__all__ = ["Gate", "recorded", "reset_recordings"]


class _Clearable(Protocol):
    def clear(self) -> object: ...


_C = TypeVar("_C", bound=_Clearable)

_resets: list[Callable[[], object]] = []


def recorded(container: _C) -> _C:
    """`container`, emptied (`clear()`) before every test; returns it."""
    _resets.append(container.clear)
    return container


class Gate:
    """An `asyncio.Event` made anew before every test, closed (or `open=True`).

    An event binds to the event loop that first waits on it and every test has a loop of its
    own, so clearing the same event would not do.
    """

    def __init__(self, *, open: bool = False) -> None:
        self._open = open
        self._event = self._fresh()
        _resets.append(self._renew)

    def _fresh(self) -> asyncio.Event:
        event = asyncio.Event()
        if self._open:
            event.set()
        return event

    def _renew(self) -> None:
        self._event = self._fresh()

    def set(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    async def wait(self) -> None:
        await self._event.wait()


def reset_recordings() -> None:
    """Empty every recorded object and renew every gate (the root conftest's fixture)."""
    for reset in _resets:
        reset()
