"""Durable queue pauses, as one engine sees them: pause, resume, and what it knows paused.

The pause itself lives in the database (`<schema>.paused_queues`) and is enforced there:
every statement that starts a step of a queue asks `queue_paused` inside itself, and
`queue_pause` waits for those in flight, so no engine starts a new step of a paused queue
once `pause()` has returned, whatever it knows. What an engine knows (`known`) only spares
it the asking: its schedulers do not claim, its local starts and signal wakes do not try to
run at once, and its steps do not keep their claims, for a queue it knows paused. It learns
at start, from notifications (`p:<queue>`, `r:<queue>`) at once, from its poller within a
poll interval when notifications do not reach it, and from `drain()`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Set

from ..clock import Clock
from ..db.pool import Database
from ..db.queue_store import QueueStore
from ..entries import check_text
from ..errors import ValidationError
from ..events import QUEUE_PAUSED, QUEUE_RESUMED
from ..records import QueuePause
from ..telemetry import Telemetry


class Pauses:
    """Pauses and resumes queues, and keeps `known`: the served queues known to be paused."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        served: Iterable[str],
        *,
        wake: Callable[[str], None],
        telemetry: Telemetry,
    ) -> None:
        self.store = QueueStore(db)
        self.clock = clock
        self.served = frozenset(served)
        self.wake = wake  # wakes the scheduler of a resumed queue
        self.telemetry = telemetry
        self.known: set[str] = set()
        """Served queues known to be paused: the same set object for the engine's life
        (the executor and the schedulers hold it)."""

    async def pause(self, queue: str, by: str) -> bool:
        """Pause `queue` for every engine; False when it was paused already."""
        queue = check_queue(queue)
        if not isinstance(by, str) or not by:
            raise ValidationError(f"by must be a non-empty string, got {by!r}")
        check_text(by, "by")
        row = await self.store.queue_pause(queue=queue, by=by, now=self.clock.now())
        self.changed(queue, paused=True)
        if row.paused:
            self.telemetry.emit(QUEUE_PAUSED, {}, {"queue": queue, "by": by})
        return row.paused

    async def resume(self, queue: str) -> bool:
        """Resume `queue` for every engine; False when it was not paused."""
        queue = check_queue(queue)
        row = await self.store.queue_resume(queue=queue)
        self.changed(queue, paused=False)
        if row is not None:
            self.telemetry.emit(QUEUE_RESUMED, {}, {"queue": queue})
        return row is not None

    async def listed(self) -> list[QueuePause]:
        """Every paused queue of the schema, in name order (refreshing `known`)."""
        pauses = [
            QueuePause(r.queue, r.paused_at, r.paused_by) for r in await self.store.queue_pauses()
        ]
        self.sync({p.queue for p in pauses})
        return pauses

    def changed(self, queue: str, *, paused: bool) -> None:
        """Record what a notification (or this engine's own call) said of `queue`."""
        if queue not in self.served:
            return
        if paused:
            self.known.add(queue)
        elif queue in self.known:
            self.known.discard(queue)
            self.wake(queue)

    def sync(self, paused: Set[str], among: Iterable[str] | None = None) -> None:
        """Make `known` agree with a read of the database: `paused` are the paused queues
        among `among` (default: all served queues)."""
        for queue in self.served if among is None else among:
            self.changed(queue, paused=queue in paused)


def check_queue(queue: object) -> str:
    """A queue name as given, or `ValidationError`: a non-empty string PostgreSQL can store."""
    if not isinstance(queue, str) or not queue:
        raise ValidationError(f"queue must be a non-empty string, got {queue!r}")
    return check_text(queue, "queue")
