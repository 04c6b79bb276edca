"""Retrying or cancelling everything the instance list's filter matches.

`GET /bulk/retry?<filter>` (or `/bulk/cancel`) counts the instances the action would act on
(the failed ones among the filter's for a retry, the live ones for a cancel) and shows the
count with a form to confirm; the form posts the filter back to `POST /bulk/<action>`,
which runs `gendurable.bulk` (the pages the command line runs) on at most `PER_POST` of
them, oldest first, and redirects to the list with what it did (POST-redirect-GET; the
report travels in the signed `flash` cookie). Both need actions to be allowed, and the post
passes the CSRF check first, as the instance actions do.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..bulk import CANCEL, RETRY, BulkRun, acted_on
from ..db.repair_store import Match, RepairStore
from . import flash
from .params import BadInput, ListFilter
from .site import Site

PER_POST = 10_000
"""The most instances one post acts on (a request stays short); post again for more."""

LIST_PAGE = 0
"""The `flash` id of the instance list, where a bulk action's report is shown."""


def match(action: str, page: ListFilter) -> Match | None:
    """What `action` acts on among the instances `page` lists; None when none can match (a
    retry of a filter without `failed`, a cancel of one without a live status)."""
    statuses = acted_on(action, page.statuses)
    if not statuses:
        return None
    return Match(
        statuses=statuses, workflow=page.workflow, queue=page.queue, key_prefix=page.key_prefix
    )


def routes(site: Site) -> list[BaseRoute]:
    """`GET /bulk/{action}` (the count and the form) and `POST /bulk/{action}`."""

    async def confirm(request: Request) -> Response:
        site.require_actions()
        action = _action(request)
        query = {k: request.query_params.getlist(k) for k in request.query_params}
        page = ListFilter.parse(query)
        chosen = match(action, page)
        count = 0
        if chosen is not None:
            store = await site.store()
            count = await RepairStore(store.db).instances_matching_count(
                chosen, limit=None, now=None
            )
        return site.render(
            request,
            "bulk.html",
            {
                "page": "instances",
                "action": action,
                "filter": page,
                "list_query": page.query(before=None),
                "statuses": chosen.statuses if chosen else (),
                "count": count,
                "per_post": PER_POST,
            },
        )

    async def run(request: Request) -> Response:
        site.require_actions()
        action = _action(request)
        form = await site.posted_form(request)
        page = ListFilter.parse(parse_qs(form.get("filter", "")))
        chosen = match(action, page)
        if chosen is None:
            message = f"the filter selects no instance a {action} can act on; nothing was done"
        else:
            store = await site.store()
            bulk = BulkRun(RepairStore(store.db), action, chosen, limit=PER_POST)
            report = await bulk.run()
            message = f"{action.capitalize()}: {report.summary()}."
            if not report.finished:
                message += (
                    f" It stopped after {PER_POST} instances: more may match, confirm again to "
                    f"go on (or run gendurable {action} --workflow ... for all of them)."
                )
        return _back(site, request, page, message)

    return [
        Route("/bulk/{action}", confirm, methods=["GET"], name="bulk"),
        Route("/bulk/{action}", run, methods=["POST"], name="bulk_run"),
    ]


def _action(request: Request) -> str:
    action = str(request.path_params["action"])
    if action not in (RETRY, CANCEL):
        raise BadInput(f"no bulk action {action[:40]!r}: retry or cancel")
    return action


def _back(site: Site, request: Request, page: ListFilter, message: str) -> Response:
    query = page.query(before=None)
    path = "/instances" + (f"?{query}" if query else "")
    return flash.redirect(
        request, path, site.settings.secret, flash.Refusal(LIST_PAGE, message, {})
    )


__all__ = ["LIST_PAGE", "PER_POST", "match", "routes"]
