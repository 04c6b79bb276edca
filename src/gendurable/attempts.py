"""Attempts written for people: "attempt 2 of 5" (the command line, the dashboard, the logs).

Rows, error records and `ctx.attempt` count attempts from 0; people count them from 1. So
the first run of a step is "attempt 1 of 5", and an instance that failed on its last
allowed attempt shows "5 of 5". The N is the step's own `max_attempts`, else the
workflow's: what the engine applies to that step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def attempt_of(attempt: int, max_attempts: int | None) -> str:
    """`2 of 5` for attempt 1 (from 0) of a step allowed 5; `2` when the limit is unknown."""
    number = attempt + 1
    return f"{number} of {max_attempts}" if max_attempts else str(number)


def error_where(
    error: Mapping[str, Any], *, step: str | None = None, max_attempts: int | None = None
) -> str:
    """`step charge, attempt 2 of 5` for a stored error record; empty when it names no step.

    The record's own `max_attempts` is used; a record written before records held one
    takes `max_attempts` (the row's) when it failed on the row's current `step`.
    """
    if "step" not in error:
        return ""
    where = f"step {error['step']}"
    attempt = error.get("attempt")
    if isinstance(attempt, int):
        limit = error.get("max_attempts")
        if not isinstance(limit, int):
            limit = max_attempts if error["step"] == step else None
        where += f", attempt {attempt_of(attempt, limit)}"
    return where
