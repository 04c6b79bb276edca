"""The queue actions: pause and resume a queue, from the overview's queue table.

Each is a POST of a form holding the queue's name, and passes what the instance actions
pass (`actions.accepted_form`: the read-only switch, then the CSRF check), then the same
statement as `gendurable pause` and `resume`. It redirects (303) to the overview with
`?done=pause` or `?done=resume`; a missing or bad queue name gets the 400 page.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..db.queue_store import QueueStore
from ..engine.pauses import check_queue
from ..errors import ValidationError
from .actions import accepted_form
from .overview import Overview
from .params import BadInput
from .site import Site


def routes(site: Site, overview: Overview) -> list[BaseRoute]:
    """`POST /queues/pause` and `/queues/resume`."""

    async def pause(request: Request) -> Response:
        queue = _queue(await accepted_form(site, request))
        store = QueueStore((await site.store()).db)
        await store.queue_pause(queue=queue, by=_who(request), now=None)
        return _back(overview, request, "pause")

    async def resume(request: Request) -> Response:
        queue = _queue(await accepted_form(site, request))
        await QueueStore((await site.store()).db).queue_resume(queue=queue)
        return _back(overview, request, "resume")

    return [
        Route("/queues/pause", pause, methods=["POST"], name="queue_pause"),
        Route("/queues/resume", resume, methods=["POST"], name="queue_resume"),
    ]


def _queue(form: dict[str, str]) -> str:
    """The queue the form names, exactly as written (a name may hold spaces)."""
    try:
        return check_queue(form.get("queue"))
    except ValidationError as exc:
        raise BadInput(str(exc)) from None


def _who(request: Request) -> str:
    """`dashboard (<client address>)`: who paused, as far as the dashboard can tell."""
    client = request.client.host if request.client is not None else "?"
    return f"dashboard ({client})"


def _back(overview: Overview, request: Request, done: str) -> Response:
    overview.forget()  # the next view shows the change at once
    base = request.scope.get("root_path", "").rstrip("/")
    return RedirectResponse(f"{base}/?done={done}", status_code=303)
