"""The read-only pages: the instance list, one instance, and the workflows `--app` serves."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..blocked import BlockedBy
from ..bulk import CANCEL, RETRY
from ..db.rows import ExplainedInstance
from ..db.schedule_store import ScheduleStore
from ..errors import NoTarget
from ..records import LIVE_STATUSES, TERMINAL_STATUSES
from ..rewind import REWINDABLE
from ..signal_check import payload_labels_by_nodes
from ..spec import WorkflowSpec
from ..type_labels import type_label
from ..workflow_records import recorded
from . import bulk, flash
from .diagram import diagram_svg
from .overview import ScheduleRow, schedule_rows
from .params import ListFilter, identifier, text
from .site import Site
from .spec_page import spec_html

INBOX_PAGE = 20
CHILDREN_PAGE = 20
NOTICES = {
    "signal": "Signal stored.",
    "signal-woke": "Signal stored; it woke the instance.",
    "signal-again": "This form was sent already: its signal was stored once, then.",
    "cancel": "Cancelled.",
    "retry": "Back on its failed step with attempt 0, due now.",
    "rewind": "Restarted at the step chosen with attempt 0, due now.",
}
"""What a finished action says after its redirect (`?done=...`); other values show nothing."""

_decode = msgspec.json.Decoder()


@dataclass(frozen=True, slots=True)
class SignalChoice:
    """A signal name the instance's workflow awaits, with its payload type in words."""

    name: str
    payload: str
    awaited_now: bool


def routes(site: Site) -> list[BaseRoute]:
    """`/instances`, `/instances/{id}`, `/workflows` and `/workflows/{name}`."""

    async def instances(request: Request) -> Response:
        query = {k: request.query_params.getlist(k) for k in request.query_params}
        page = ListFilter.parse(query)
        store = await site.store()
        rows = await store.instances_list(
            workflow=page.workflow,
            statuses=list(page.statuses) or None,
            queue=page.queue,
            key_prefix=page.key_prefix,
            before_id=page.before,
            limit=page.limit + 1,  # one more than shown: is there a next page?
        )
        shown = rows[: page.limit]
        more = len(rows) > page.limit
        secret = site.settings.secret
        report = flash.decode(secret, request.cookies.get(flash.COOKIE), bulk.LIST_PAGE)
        response = site.render(
            request,
            "instances.html",
            {
                "page": "instances",
                "filter": page,
                "rows": shown,
                "next_query": page.query(before=shown[-1].id) if more else None,
                "first_query": page.query(before=None) if page.before else None,
                "workflows": sorted(site.settings.specs),
                "bulk_query": page.query(before=None, limit=None),
                "bulk_actions": [a for a in (RETRY, CANCEL) if bulk.match(a, page) is not None],
                "notice": None if report is None else report.message,
            },
        )
        if report is not None:
            base = request.scope.get("root_path", "").rstrip("/")
            response.delete_cookie(flash.COOKIE, path=base or "/", httponly=True, samesite="strict")
        return response

    async def instance(request: Request) -> Response:
        id = path_id(request)
        refused = flash.decode(site.settings.secret, request.cookies.get(flash.COOKIE), id)
        if refused is None:
            return await instance_page(site, request, id)
        response = await instance_page(site, request, id, error=refused.message, form=refused.form)
        base = request.scope.get("root_path", "").rstrip("/")
        response.delete_cookie(flash.COOKIE, path=base or "/", httponly=True, samesite="strict")
        return response

    async def workflows(request: Request) -> Response:
        specs = site.settings.specs
        return site.render(
            request,
            "workflows.html",
            {"page": "workflows", "specs": [specs[n] for n in sorted(specs)]},
        )

    async def workflow(request: Request) -> Response:
        name = request.path_params["name"]
        spec = site.settings.specs.get(name)
        if spec is None:
            raise NoTarget(f"this dashboard serves no workflow named {name[:100]!r}")
        schedules = [s for s in site.settings.schedules if s.workflow == name]
        live: list[ScheduleRow] = []
        if schedules:  # their next and last ticks; a page without schedules needs no database
            store = await site.store()
            live = schedule_rows(await ScheduleStore(store.db).schedules_list(workflow=name))
        return site.render(
            request,
            "workflow.html",
            {
                "page": "workflows",
                "spec": spec,
                "body": spec_html(spec, schedules),
                "schedules": live,
            },
        )

    return [
        Route("/instances", instances, methods=["GET"], name="instances"),
        Route("/instances/{id}", instance, methods=["GET"], name="instance"),
        Route("/workflows", workflows, methods=["GET"], name="workflows"),
        Route("/workflows/{name}", workflow, methods=["GET"], name="workflow"),
    ]


def path_id(request: Request) -> int:
    found = identifier(request.path_params["id"], "instance id")
    assert found is not None  # the route matched a non-empty segment
    return found


async def instance_page(
    site: Site,
    request: Request,
    id: int,
    *,
    error: str | None = None,
    form: Mapping[str, str] | None = None,
) -> Response:
    """One instance: what it holds, why it waits, its inbox and children, and the actions.

    `error` and `form` show a refused action's reason with what was typed.
    """
    query = request.query_params
    inbox_after = identifier(query.get("inbox_after"), "inbox_after")
    children_after = identifier(query.get("children_after"), "children_after")
    done = text(query.get("done"), "done")
    store = await site.store()
    row = await store.instance_explain(id=id, now=None)
    if row is None:
        raise NoTarget(f"no instance with id {id}")
    inbox = await store.inbox_page(instance_id=id, after_id=inbox_after, limit=INBOX_PAGE + 1)
    children = await store.children_page(
        parent_id=id, after_id=children_after, limit=CHILDREN_PAGE + 1
    )
    spec = site.settings.specs.get(row.workflow)
    return site.render(
        request,
        "instance.html",
        {
            "page": "instances",
            "row": row,
            "live": row.status in LIVE_STATUSES,
            "terminal": row.status in TERMINAL_STATUSES,
            "blocked": BlockedBy.from_columns(
                row.blocked_reason, row.blocked_until, row.blocked_detail
            ),
            "error_record": _error(row.error),
            "inbox": inbox[:INBOX_PAGE],
            "inbox_next": inbox[INBOX_PAGE - 1].id if len(inbox) > INBOX_PAGE else None,
            "inbox_after": inbox_after,
            "children": children[:CHILDREN_PAGE],
            "children_next": (
                children[CHILDREN_PAGE - 1].id if len(children) > CHILDREN_PAGE else None
            ),
            "children_after": children_after,
            "diagram": (diagram_svg(spec, current=row.step, status=row.status) if spec else None),
            "signals": await _signal_choices(site, spec, row),
            "steps": await _step_choices(site, spec, row),
            # Drawn with the page: the signal form sent twice stores its signal once.
            "signal_key": secrets.token_urlsafe(18),
            "notice": NOTICES.get(done or ""),
            "action_error": error,
            "form": form or {},
        },
    )


def _error(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    value = _decode.decode(data)
    if isinstance(value, dict):
        return value
    return {"message": msgspec.json.encode(value).decode()}


async def _signal_choices(
    site: Site, spec: WorkflowSpec | None, row: ExplainedInstance
) -> list[SignalChoice] | None:
    """The names the signal form offers (None: unknown, typed in freely)."""
    awaiting = set(row.await_names or ())
    if spec is not None:
        choices = []
        for name in spec.signal_names():
            _, tp, _ = spec.signal_type(name)
            payload = "any JSON" if tp is None else type_label(tp)
            choices.append(SignalChoice(name, payload, name in awaiting))
        return sorted(choices, key=lambda c: not c.awaited_now)
    if row.status not in LIVE_STATUSES:
        return []
    labels = await payload_labels_by_nodes(await site.store(), row.workflow)
    if labels is None:
        return None
    return sorted(
        (SignalChoice(n, payload, n in awaiting) for n, payload in labels.items()),
        key=lambda c: not c.awaited_now,
    )


async def _step_choices(
    site: Site, spec: WorkflowSpec | None, row: ExplainedInstance
) -> list[str] | None:
    """The steps the rewind form offers (None: unknown, typed in freely); only asked of the
    live nodes for an instance that can be rewound."""
    if spec is not None:
        return list(spec.steps)
    if row.status not in REWINDABLE:
        return []
    found = await recorded(await site.store(), row.workflow)
    if found is None:
        return None
    return sorted({s for d in found.descriptions for s in d.get("steps", {})})
