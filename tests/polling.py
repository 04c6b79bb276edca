"""Waiting in tests for something another process or task makes true, and naming engines.

Shared by the end-to-end and fault tests (importable from every test folder: it sits beside
the root conftest).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

_serial = itertools.count()


def unique_name(prefix: str) -> str:
    """An engine name no other engine of this process has used."""
    return f"{prefix}-{next(_serial)}-{uuid.uuid4().hex[:6]}"


async def eventually(
    check: Callable[[], Awaitable[Any]],
    *,
    timeout: float = 15.0,
    interval: float = 0.02,
    what: str = "the condition",
) -> Any:
    """Poll `check()` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not hold within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)
