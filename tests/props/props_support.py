"""Hypothesis profiles of the property tests, and the helpers they share.

The `props` profile (the default) keeps the suite fast enough for CI. Set
`GENDURABLE_PROPS=soak` for the `props-soak` profile: `GENDURABLE_PROPS_EXAMPLES` examples
(500 by default) and longer runs of the state machine, about an hour on two cores. Set
`GENDURABLE_PROPS=mutants` for the `props-mutants` profile, which reports the first failing
example without shrinking it (`bench/mutants.py` only needs to know that a test fails). The
profiles only apply to the tests of this folder (they are passed to `@settings(...)`), so
other hypothesis tests keep their own settings.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, Phase, settings

from gendurable.db.schema_admin import drop_schema

MODE = os.environ.get("GENDURABLE_PROPS", "")
SOAK = MODE == "soak"

settings.register_profile(
    "props",
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "props-soak",
    parent=settings.get_profile("props"),
    max_examples=int(os.environ.get("GENDURABLE_PROPS_EXAMPLES", "500")),
    stateful_step_count=80,
)

settings.register_profile(
    "props-mutants",
    parent=settings.get_profile("props"),
    phases=(Phase.explicit, Phase.reuse, Phase.generate),
    report_multiple_bugs=False,
)

PROFILE = settings.get_profile(
    {"soak": "props-soak", "mutants": "props-mutants"}.get(MODE, "props")
)
"""The settings every property test of this folder derives from."""


def scaled(examples: int) -> settings:
    """`PROFILE` with `examples` examples in CI; the soak profile keeps its own count."""
    if SOAK:
        return settings(PROFILE)
    return settings(PROFILE, max_examples=examples)


_T = TypeVar("_T")


class Loop:
    """One event loop for one hypothesis example (or one state-machine run).

    Hypothesis calls the test body synchronously; async work runs through `run()`. A fresh
    schema name per example (`schema()`) is dropped at `close()`.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.runner = asyncio.Runner()
        self.schemas: list[str] = []

    def run(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return self.runner.run(coro)

    def schema(self) -> str:
        name = f"p_{secrets.token_hex(6)}"
        self.schemas.append(name)
        return name

    def close(self) -> None:
        try:
            for name in self.schemas:
                self.runner.run(drop_schema(self.dsn, name))
        finally:
            self.runner.close()
