"""The write of an engine's rate limits to `rate_configs` when it starts.

The claim reads limits from that table, not from any engine's memory, so every node enforces
the same numbers. When a stored config differs, the last engine to start wins and logs a
warning naming the limit, the old and the new values. (What an engine configures, and how it
is checked, is `gendurable.rate_configs`.)
"""

from __future__ import annotations

import logging
from datetime import datetime

from ..db.engine_store import EngineStore
from ..rate_configs import MS, RateConfigs

_log = logging.getLogger("gendurable.engine")


async def write_rate_configs(
    store: EngineStore, configs: RateConfigs, now: datetime | None
) -> None:
    """Store every limit (the last start wins), warning about each one that changed."""
    if not configs.limits:
        return
    for row in await store.rate_config_write(**configs.columns(), now=now):
        if row.old_allowed is None:
            continue
        name = row.name
        new = configs.limits[name]
        old = (row.old_allowed, row.old_per_ms, row.old_burst)
        if old != (new.allowed, new.per // MS, new.capacity):
            _log.warning(
                "rate limit %r was configured as allowed=%d per=%sms burst=%d by an "
                "earlier start; this engine replaces it with allowed=%d per=%sms "
                "burst=%d (the last engine to start wins)",
                name,
                *old,
                new.allowed,
                new.per // MS,
                new.capacity,
            )
