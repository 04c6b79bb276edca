"""The instance list's actions on everything its filter matches (a count to confirm, then a
post), and the instance page's rewind: behind the actions switch and the CSRF check, and
acting as the command line does."""

from __future__ import annotations

import html
import re

import httpx
import pytest
from web_support import Rows, Scene, WebFactory


async def _confirm(client: httpx.AsyncClient, action: str, query: str) -> tuple[str, str]:
    """The confirmation page of a bulk action (as text) and its form's CSRF token."""
    page = await client.get(f"/bulk/{action}?{query}")
    assert page.status_code == 200, page.text
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert found is not None
    return html.unescape(page.text), found.group(1)


async def _token(client: httpx.AsyncClient, id: int) -> str:
    page = (await client.get(f"/instances/{id}")).text
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None
    return found.group(1)


async def test_web_bulk_is_refused_when_read_only(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    w = await web()
    page = await w.client.get("/instances?workflow=expense")
    token = await _token(w.client, scene.ids["exp-1"])

    confirm = await w.client.get("/bulk/cancel?workflow=expense")
    posted = await w.client.post("/bulk/cancel", data={"csrf": token, "filter": "workflow=expense"})

    assert "/bulk/cancel" not in page.text
    assert (confirm.status_code, posted.status_code) == (403, 403)
    assert "this dashboard is read-only" in posted.text
    assert await rows.status(scene.ids["exp-1"]) == "awaiting"


async def test_web_bulk_cancel_shows_the_count_then_cancels_everything_matching(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    w = await web(allow_actions=True)
    listed = (await w.client.get("/instances?workflow=expense&key_prefix=exp-&limit=20")).text

    text, token = await _confirm(w.client, "cancel", "workflow=expense&key_prefix=exp-")
    response = await w.client.post(
        "/bulk/cancel", data={"csrf": token, "filter": "workflow=expense&key_prefix=exp-"}
    )
    after = await w.client.get(response.headers["location"])
    again = await w.client.get(response.headers["location"])

    assert 'href="/bulk/cancel?workflow=expense&amp;key_prefix=exp-"' in listed
    assert 'href="/bulk/retry?workflow=expense&amp;key_prefix=exp-"' in listed
    assert "<strong>3</strong> instances match now." in text
    assert response.status_code == 303
    assert response.headers["location"] == "/instances?workflow=expense&key_prefix=exp-"
    assert "Cancel: 3 matched, 3 cancelled." in html.unescape(after.text)
    assert 'class="notice"' not in again.text  # shown once
    for key in ("exp-1", "exp-2", "exp-3"):
        assert await rows.status(scene.ids[key]) == "cancelled"
    assert await rows.status(scene.ids["ord-1"]) == "waiting"


async def test_web_bulk_retry_puts_back_the_failed_instances_matching(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    w = await web(allow_actions=True)
    failed = scene.ids["r-bad"]
    await rows.execute(
        'UPDATE S.instances SET state = \'{"email": "ann@example.com"}\' WHERE id = $1', failed
    )

    text, token = await _confirm(w.client, "retry", "status=failed&status=done")
    response = await w.client.post(
        "/bulk/retry", data={"csrf": token, "filter": "status=failed&status=done"}
    )
    after = await w.client.get(response.headers["location"])
    await scene.engine.drain()

    assert "<strong>1</strong> instance matches now." in text
    assert '<span class="status failed">failed</span>' in text
    assert "Retry: 1 matched, 1 retried." in html.unescape(after.text)
    assert await rows.status(failed) == "done"


async def test_web_bulk_offers_only_what_the_filter_can_match(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    w = await web(allow_actions=True)

    listed = (await w.client.get("/instances?status=done")).text
    text, token = await _confirm(w.client, "retry", "status=done")
    posted = await w.client.post("/bulk/retry", data={"csrf": token, "filter": "status=done"})
    after = await w.client.get(posted.headers["location"])

    assert "/bulk/" not in listed
    assert "<strong>0</strong> instances match now." in text
    assert "<fieldset disabled>" in text
    assert "the filter selects no instance a retry can act on; nothing was done" in (
        html.unescape(after.text)
    )
    assert await rows.status(scene.ids["r-ok"]) == "done"


@pytest.mark.parametrize(
    ("fields", "status", "says"),
    [
        ({"filter": "workflow=expense"}, 403, "the form's token does not match"),
        ({"filter": "colour=red", "csrf": "TOKEN"}, 400, "unknown filter 'colour'"),
        ({"filter": "status=lost", "csrf": "TOKEN"}, 400, "status 'lost' is not one of"),
    ],
)
async def test_web_bulk_refuses_a_bad_post_and_changes_nothing(
    scene: Scene, web: WebFactory, rows: Rows, fields: dict[str, str], status: int, says: str
) -> None:
    w = await web(allow_actions=True)
    _, token = await _confirm(w.client, "cancel", "workflow=expense")
    data = {k: token if v == "TOKEN" else v for k, v in fields.items()}

    response = await w.client.post("/bulk/cancel", data=data)
    unknown = await w.client.get("/bulk/delete?workflow=expense")

    assert response.status_code == status
    assert says in html.unescape(response.text)
    assert unknown.status_code == 400
    assert await rows.status(scene.ids["exp-1"]) == "awaiting"


async def test_web_rewind_restarts_a_cancelled_instance_at_the_step_chosen(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    w = await web(allow_actions=True)
    id = scene.ids["exp-2"]
    await scene.engine.store.instance_cancel(id=id, now=None)
    token = await _token(w.client, id)
    page = (await w.client.get(f"/instances/{id}")).text

    response = await w.client.post(
        f"/instances/{id}/rewind", data={"csrf": token, "step": "pay", "state": '{"amount": 9}'}
    )
    await scene.engine.drain()

    assert '<option value="pay">pay</option>' in page
    assert response.status_code == 303
    assert response.headers["location"] == f"/instances/{id}?done=rewind"
    assert await rows.status(id) == "done"
    state = await rows.db.fetchval(
        f"SELECT state->>'amount' FROM \"{rows.schema}\".instances WHERE id = $1", id
    )
    assert state == "9"


@pytest.mark.parametrize(
    ("key", "fields", "says"),
    [
        ("exp-1", {"step": "pay"}, "is awaiting: only a failed or cancelled instance can be"),
        ("r-bad", {"step": "pya"}, "send_receipt has no step 'pya'"),
        ("r-bad", {"state": '{"email": 7}'}, "Expected `str`, got `int`"),
        ("r-bad", {"state": "{email"}, "the state is not valid JSON"),
    ],
)  # fmt: skip
async def test_web_rewind_refuses_and_keeps_what_was_typed(
    scene: Scene, web: WebFactory, rows: Rows, key: str, fields: dict[str, str], says: str
) -> None:
    w = await web(allow_actions=True)
    id = scene.ids[key]
    before = await rows.status(id)
    token = await _token(w.client, id)

    response = await w.client.post(f"/instances/{id}/rewind", data={"csrf": token, **fields})
    page = html.unescape((await w.client.get(f"/instances/{id}")).text)

    assert response.status_code == 303
    assert says in page
    for value in fields.values():
        assert value in page
    assert await rows.status(id) == before


async def test_web_bulk_acts_on_at_most_a_post_s_worth_and_says_so(
    scene: Scene, web: WebFactory, rows: Rows, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("gendurable.web.bulk.PER_POST", 2)
    w = await web(allow_actions=True)

    text, token = await _confirm(w.client, "cancel", "workflow=expense")
    response = await w.client.post(
        "/bulk/cancel", data={"csrf": token, "filter": "workflow=expense"}
    )
    after = html.unescape((await w.client.get(response.headers["location"])).text)

    assert "This acts on the oldest 2 of them; confirm again for the next ones." in text
    assert "Cancel: 2 matched, 2 cancelled. It stopped after 2 instances: more may match" in after
    statuses = [await rows.status(scene.ids[k]) for k in ("exp-1", "exp-2", "exp-3")]
    assert statuses == ["cancelled", "cancelled", "awaiting"]
