"""Group commits written by hand in tests: terminal outcomes sent through `outcome_batch`,
busy ones sent again, as the engine's group commit does."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import msgspec

import gendurable as gd


async def finish_batch(
    engine: gd.Engine,
    outcomes: Sequence[tuple[int, str, str]],
    *,
    now: datetime | Any | None = ...,
) -> set[int]:
    """Commit `(id, locked_by, status)` terminal outcomes in one group commit; the ids
    committed. Outcomes whose rows someone held for a moment (a claim of the parent, say)
    come back busy and are sent again."""
    when = engine.clock.now() if now is ... else now
    pending = list(outcomes)
    committed: set[int] = set()
    while pending:
        fields = [
            {"n": n, "id": id, "locked_by": by, "kind": "finish", "status": status}
            for n, (id, by, status) in enumerate(pending, 1)
        ]
        nulls: list[bytes | None] = [None] * len(pending)
        done, busy = await engine.store.outcome_batch(
            msgspec.json.encode(fields), (nulls, [b"null"] * len(pending), nulls), when
        )
        committed |= set(done)
        pending = [o for o in pending if o[0] in busy]
    return committed
