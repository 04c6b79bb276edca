"""Group commits written by hand in tests: the columns `outcome_batch` takes, sent again
while rows are busy, as the engine's group commit does."""

from __future__ import annotations

from typing import Any

import gendurable as gd


async def commit_batch(engine: gd.Engine, columns: list[list[Any]], **now: Any) -> set[int]:
    """Group-commit `columns`; the ids committed. Outcomes whose rows someone held for a
    moment (a claim of the parent, say) come back busy and are sent again, as the engine's
    group commit does."""
    done, busy = await engine.store.outcome_batch(
        columns, ([], []), now.get("now", engine.clock.now())
    )
    while busy:
        keep = [i for i, id in enumerate(columns[0]) if id in busy]
        columns = [[column[i] for i in keep] for column in columns]
        more, busy = await engine.store.outcome_batch(
            columns, ([], []), now.get("now", engine.clock.now())
        )
        done.update(more)
    return set(done)


def park_columns(n: int) -> list[list[Any]]:
    """The park columns of `outcome_batch` (await names, keep deadline, seen, keep children),
    unused by the outcomes these tests commit."""
    return [[None] * n, [False] * n, [0] * n, [True] * n]
