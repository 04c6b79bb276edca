"""The actions: signal, cancel, retry and rewind one instance, from the instance page's
forms.

Each is a POST that passes, in order: the read-only switch (403 unless actions were
allowed), the CSRF check (403), the form's validation, then one statement, the same the
command line runs. Success and refusal both redirect back to the instance page (303, so a
reload does not post again): success with `?done=...`, a refusal (a bad name or payload, an
instance not live) with its reason and what was typed in a signed cookie (`flash`) that the
page shows once. A malformed request (not a form, too large) gets a 400 page instead.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..db.repair_store import RepairStore
from ..engine.client import check_idempotency_key
from ..errors import GenDurableError
from ..rewind import KEEP, entry_by_code, entry_by_nodes, refusal, rewind
from ..signal_check import payload_by_code, payload_by_nodes
from . import flash
from .pages import path_id
from .params import BadInput, payload_json, text
from .site import Site

IDEMPOTENCY_FIELD = "idempotency_key"
"""The signal form's hidden field: a key drawn when the page is drawn (see `signal`)."""


def routes(site: Site) -> list[BaseRoute]:
    """`POST /instances/{id}/signal`, `/cancel`, `/retry` and `/rewind`."""

    async def signal(request: Request) -> Response:
        id, form = await _accepted(site, request)
        store = await site.store()
        row = await store.instance_explain(id=id, now=None)
        if row is None:
            return await _refused(site, request, id, f"no instance with id {id}", form, 404)
        workflow = row.workflow
        spec = site.settings.specs.get(workflow)
        try:
            name = text(form.get("name"), "signal name")
            if name is None:
                raise BadInput("the signal name is missing")
            payload = payload_json(form.get("payload"))
            # The form carries a key of its own: sent twice (a double click, a resubmit),
            # it stores its signal once.
            key = form.get(IDEMPOTENCY_FIELD) or None
            if key is not None:
                check_idempotency_key(key)
            if spec is not None:
                data = payload_by_code(spec, name, payload)
            else:
                data = await payload_by_nodes(store, workflow, name, payload)
        except (BadInput, GenDurableError) as exc:
            return await _refused(site, request, id, str(exc), form, 400)
        delivered = await store.signal_deliver(
            workflow=workflow,
            id=id,
            key=None,
            name=name,
            payload=data,
            now=None,
            idempotency_key=key,
        )
        if delivered is None:
            message = f"instance {id} is not live; signal {name!r} was not stored"
            return await _refused(site, request, id, message, form, 409)
        if not delivered.same:
            message = (
                f"this form was sent already, with another signal (id {delivered.signal_id}); "
                f"signal {name!r} was not stored"
            )
            return await _refused(site, request, id, message, form, 409)
        if delivered.duplicate:
            return _back(request, id, "signal-again")
        return _back(request, id, "signal-woke" if delivered.woke else "signal")

    async def cancel(request: Request) -> Response:
        id, form = await _accepted(site, request)
        store = await site.store()
        cascaded = await store.instance_cancel(id=id, now=None)
        if cascaded is None:
            message = f"instance {id} is not live (or does not exist); nothing was cancelled"
            return await _refused(site, request, id, message, form, 409)
        return _back(request, id, "cancel")

    async def retry(request: Request) -> Response:
        id, form = await _accepted(site, request)
        store = await site.store()
        row = await store.instance_retry(id=id, now=None)
        if row.retried is None:
            if row.status is None:
                message = f"no instance with id {id}"
            elif row.status != "failed":
                message = f"instance {id} is {row.status}: only a failed instance can be retried"
            elif row.holder is not None:
                message = (
                    f"instance {id} cannot be retried: live instance {row.holder} now holds its key"
                )
            else:
                message = (
                    f"instance {id} cannot be retried: its parent {row.parent_id} no "
                    "longer waits for it"
                )
            return await _refused(site, request, id, message, form, 409)
        return _back(request, id, "retry")

    async def rewind_(request: Request) -> Response:
        id, form = await _accepted(site, request)
        store = await site.store()
        row = await store.instance_by_id(id=id)
        if row is None:
            return await _refused(site, request, id, f"no instance with id {id}", form, 404)
        workflow = row.workflow
        spec = site.settings.specs.get(workflow)
        try:
            step = text(form.get("step"), "step") or row.step
            raw = form.get("state")
            state = KEEP if raw is None or not raw.strip() else payload_json(raw, "state")
            if spec is not None:
                entry = entry_by_code(
                    spec, step, state, stored_state=row.state,
                    stored_version=row.state_version,
                )  # fmt: skip
            else:
                entry = await entry_by_nodes(store, workflow, step, state)
        except (BadInput, GenDurableError) as exc:
            return await _refused(site, request, id, str(exc), form, 400)
        answer = await rewind(RepairStore(store.db), id, entry)
        refused = refusal(f"instance {id}", answer)
        if refused is not None:
            return await _refused(site, request, id, refused, form, 409)
        return _back(request, id, "rewind")

    return [
        Route("/instances/{id}/signal", signal, methods=["POST"], name="signal"),
        Route("/instances/{id}/cancel", cancel, methods=["POST"], name="cancel"),
        Route("/instances/{id}/retry", retry, methods=["POST"], name="retry"),
        Route("/instances/{id}/rewind", rewind_, methods=["POST"], name="rewind"),
    ]


async def _accepted(site: Site, request: Request) -> tuple[int, dict[str, str]]:
    """The instance id and form of an action that passed the switch and the CSRF check."""
    site.require_actions()
    id = path_id(request)
    return id, await site.posted_form(request)


async def accepted_form(site: Site, request: Request) -> dict[str, str]:
    """The form of an action post (not about one instance) that passed the switch and the
    CSRF check."""
    site.require_actions()
    return await site.posted_form(request)


async def _refused(
    site: Site,
    request: Request,
    id: int,
    message: str,
    form: dict[str, str],
    status: int,
) -> Response:
    if status == 404:
        return site.error_page(request, 404, "Not found", message)
    refusal = flash.Refusal(id, message, form)
    return flash.redirect(request, f"/instances/{id}", site.settings.secret, refusal)


def _back(request: Request, id: int, done: str) -> Response:
    base = request.scope.get("root_path", "").rstrip("/")
    return RedirectResponse(f"{base}/instances/{id}?done={done}", status_code=303)
