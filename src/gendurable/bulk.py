"""Retrying or cancelling every instance a filter matches, a page at a time.

What `gendurable retry --workflow ...`, `gendurable cancel --workflow ...` and the
dashboard's actions on a filtered list run. The matching ids are read a page at a time, in
id order, from where the last page stopped (a keyset: no page reads again what another
read); each page is then acted on by one short statement that locks at most its own rows
and their parents, and judges each row exactly as the single-row statement would (`gendurable
retry ID`, `gendurable cancel ID`): only a failed instance goes back, never over a live
holder of its key, a child only while its parent still waits for it; only a live instance
is cancelled, with its live descendants. A row another transaction holds is not waited for
by the page; it is done on its own right after, by the single-row statement, which waits.

Nothing is kept between runs: a run stopped anywhere (Ctrl-C, a lost connection) can be
started again, and finds only what still matches (a retried instance is no longer failed,
a cancelled one no longer live).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from .db.repair_store import Match, RepairStore, Verdict
from .records import LIVE_STATUSES

RETRY = "retry"
CANCEL = "cancel"

PAGE_SIZE = 500
"""Instances read and acted on per statement, by default."""
MAX_PAGE_SIZE = 10_000
"""The largest page accepted: each page locks at most this many rows and their parents."""
EXAMPLES = 10
"""Ids kept per reason a row was skipped, for the report."""

REASONS = {
    "not_failed": "no longer failed",
    "not_live": "no longer live",
    "key_held": "key now held by another live instance",
    "parent_not_waiting": "parent no longer waits for it",
    "busy": "held by another transaction throughout",
    "gone": "deleted meanwhile",
}
"""Why a matched instance was skipped, in words (the keys are what `--json` prints)."""

ACTED = {RETRY: "retried", CANCEL: "cancelled"}


@dataclass
class BulkReport:
    """What a bulk run did so far: `matched` instances read, `acted` retried or cancelled,
    `skipped` by reason (with the first ids of each in `examples`), and for a cancel the
    live descendants cancelled with them. `finished` once no more instances matched."""

    action: str
    matched: int = 0
    acted: int = 0
    descendants_cancelled: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[int]] = field(default_factory=dict)
    pages: int = 0
    left: int = 0
    """Instances of the current page not done yet: held by another transaction when the page
    came, they are being done one at a time."""
    last_id: int = 0
    """The highest id read: a run that stops goes on, when run again, from the start (it
    finds only what still matches); this says how far it got."""
    finished: bool = False

    def skip(self, reason: str, id: int) -> None:
        """Count instance `id` as skipped for `reason`."""
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        kept = self.examples.setdefault(reason, [])
        if len(kept) < EXAMPLES:
            kept.append(id)

    def summary(self) -> str:
        """One line: `12 matched, 10 retried, 2 skipped (2 key now held by ...)`."""
        line = f"{self.matched} matched, {self.acted} {ACTED[self.action]}"
        if self.action == CANCEL and self.descendants_cancelled:
            line += f" (and {self.descendants_cancelled} live descendants)"
        skipped = sum(self.skipped.values())
        if skipped:
            why = ", ".join(f"{n} {REASONS[r]}" for r, n in sorted(self.skipped.items()))
            line += f", {skipped} skipped ({why})"
        if self.left:
            line += f", {self.left} not done yet"
        return line

    def as_json(self) -> dict[str, Any]:
        """The report for `--json`: counts, and the first ids skipped for each reason."""
        out: dict[str, Any] = {
            "action": self.action,
            "matched": self.matched,
            ACTED[self.action]: self.acted,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_ids": dict(sorted(self.examples.items())),
            "finished": self.finished,
        }
        if self.action == CANCEL:
            out["descendants_cancelled"] = self.descendants_cancelled
        return out


def acted_on(action: str, statuses: tuple[str, ...]) -> tuple[str, ...]:
    """The statuses among `statuses` (none: any) that `action` can act on: `failed` for a
    retry, the live ones for a cancel."""
    able = ("failed",) if action == RETRY else LIVE_STATUSES
    return tuple(s for s in able if not statuses or s in statuses)


class BulkRun:
    """One run of `action` over the instances `match` selects, at most `limit` of them
    (None: all), `page_size` per statement. `report` fills in as it goes, so that a caller
    interrupted mid-run can still say how far it got."""

    def __init__(
        self,
        repairs: RepairStore,
        action: str,
        match: Match,
        *,
        limit: int | None = None,
        page_size: int = PAGE_SIZE,
        progress: Callable[[BulkReport], None] | None = None,
        now: datetime | None = None,
    ) -> None:
        if action not in ACTED:
            raise ValueError(f"unknown bulk action {action!r}")
        self.repairs = repairs
        self.action = action
        self.match = match
        self.limit = limit
        self.page_size = page_size
        self.progress = progress
        self.now = now
        self.report = BulkReport(action)

    async def run(self) -> BulkReport:
        """Act on every matching instance, a page at a time; the report."""
        report = self.report
        while self.limit is None or report.matched < self.limit:
            size = self.page_size
            if self.limit is not None:
                size = min(size, self.limit - report.matched)
            ids = await self.repairs.instances_matching(
                self.match, after=report.last_id, limit=size, now=self.now
            )
            if ids:
                await self._page(ids)
                if self.progress is not None:
                    self.progress(report)
            if len(ids) < size:
                report.finished = True
                break
        return report

    async def _page(self, ids: list[int]) -> None:
        report = self.report
        if self.action == RETRY:
            verdicts = await self.repairs.instances_retry_many(ids=ids, now=self.now)
        else:
            page = await self.repairs.instances_cancel_many(ids=ids, now=self.now)
            verdicts = page.verdicts
            report.descendants_cancelled += page.cascaded
        report.matched += len(ids)
        report.last_id = ids[-1]
        report.pages += 1
        held = [v.id for v in verdicts if v.verdict == "busy"]
        report.left = len(held)
        for v in verdicts:
            if v.verdict != "busy":
                self._count(v)
        for id in held:
            self._count(await self._alone(id))
            report.left -= 1

    def _count(self, v: Verdict) -> None:
        if v.verdict == ACTED[self.action]:
            self.report.acted += 1
        else:
            self.report.skip(v.verdict, v.id)

    async def _alone(self, id: int) -> Verdict:
        """Act on a row the page found held, with the single-row statement (which waits
        for the lock, up to the store's timeout)."""
        store = self.repairs
        try:
            if self.action == CANCEL:
                cascaded = await store.instance_cancel(id=id, now=self.now)
                if cascaded is None:
                    return Verdict(id, "not_live")
                self.report.descendants_cancelled += cascaded
                return Verdict(id, "cancelled")
            row = await store.instance_retry(id=id, now=self.now)
        except (TimeoutError, asyncpg.QueryCanceledError):
            return Verdict(id, "busy")
        return Verdict(id, retry_verdict(row.retried, row.status, row.holder))


def retry_verdict(retried: int | None, status: str | None, holder: int | None) -> str:
    """The verdict of `instance_retry` (and `instance_rewind`) from its answer."""
    if retried is not None:
        return "retried"
    if status is None:
        return "gone"
    if status != "failed":
        return "not_failed"
    if holder is not None:
        return "key_held"
    return "parent_not_waiting"
