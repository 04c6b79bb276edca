"""Signal, cancel and retry from the dashboard: the read-only switch, CSRF and validation
come first, and a refused action writes nothing."""

from __future__ import annotations

import html
import re

import httpx
import pytest
import web_app
from web_support import Rows, Scene, WebFactory

from gendurable.testing import MakeEngine
from gendurable.web import flash
from gendurable.web.params import MAX_FORM, MAX_PAYLOAD


async def _token(client: httpx.AsyncClient, id: int) -> str:
    """Open the instance page (which sets the CSRF cookie) and read its form token."""
    page = (await client.get(f"/instances/{id}")).text
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None
    return found.group(1)


async def _post(
    client: httpx.AsyncClient, path: str, fields: dict[str, str], **headers: str
) -> httpx.Response:
    return await client.post(path, data=fields, headers=headers)


async def _refusal(client: httpx.AsyncClient, response: httpx.Response, id: int) -> str:
    """The page a refused action redirected to (POST-redirect-GET), as text; the refusal is
    shown once, so the page loaded again (a reload) no longer says it."""
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"/instances/{id}"
    page = await client.get(response.headers["location"])
    again = await client.get(response.headers["location"])
    assert page.status_code == again.status_code == 200
    assert 'class="problem" role="alert"' in page.text
    assert 'class="problem" role="alert"' not in again.text
    return html.unescape(page.text)


# -- the read-only switch -------------------------------------------------------------------


@pytest.mark.parametrize("action", ["signal", "cancel", "retry", "rewind"])
async def test_web_action_refused_when_read_only(
    scene: Scene, web: WebFactory, rows: Rows, action: str
) -> None:
    w = await web()  # read-only by default
    target = scene.ids["r-bad"] if action in ("retry", "rewind") else scene.ids["exp-1"]
    before = await rows.status(target)
    token = await _token(w.client, target)

    response = await _post(
        w.client,
        f"/instances/{target}/{action}",
        {"csrf": token, "name": "approved", "payload": '{"by": "ann"}'},
    )
    await scene.engine.drain()

    assert response.status_code == 403
    assert "this dashboard is read-only: start it with --allow-actions" in response.text
    assert await rows.signals() == []
    assert await rows.status(target) == before


async def test_web_read_only_page_shows_the_actions_disabled(scene: Scene, web: WebFactory) -> None:
    w = await web()

    page = (await w.client.get(f"/instances/{scene.ids['exp-1']}")).text

    assert '<span class="badge readonly"' in page
    assert page.count("<fieldset disabled>") == 4
    assert "This dashboard is read-only." in page


# -- CSRF -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("no token", "the form's token does not match"),
        ("wrong token", "the form's token does not match"),
        ("token of another dashboard", "the form's token does not match"),
        ("no cookie", "the form's session cookie is missing"),
        ("other origin", "the form was sent from another origin"),
        ("cross-site fetch", "the form was sent from another site (cross-site)"),
    ],
)
async def test_web_action_refused_without_a_valid_csrf_token(
    scene: Scene, web: WebFactory, rows: Rows, case: str, says: str
) -> None:
    w = await web(allow_actions=True)
    id = scene.ids["exp-1"]
    token = await _token(w.client, id)
    fields = {"csrf": token, "name": "approved", "payload": '{"by": "mallory"}'}
    headers: dict[str, str] = {}
    if case == "no token":
        del fields["csrf"]
    elif case == "wrong token":
        fields["csrf"] = "0" * 64
    elif case == "token of another dashboard":  # another secret signed it
        other = await web(allow_actions=True)
        fields["csrf"] = await _token(other.client, id)
    elif case == "no cookie":
        w.client.cookies.clear()
    elif case == "other origin":
        headers["origin"] = "https://evil.example"
    else:
        headers["sec-fetch-site"] = "cross-site"

    response = await _post(w.client, f"/instances/{id}/signal", fields, **headers)

    assert response.status_code == 403
    assert says in html.unescape(response.text)
    assert await rows.signals() == []


async def test_web_action_token_is_bound_to_the_browser_cookie(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    # Same dashboard, two browsers: a token read in one is refused with the other's cookie.
    w = await web(allow_actions=True)
    id = scene.ids["exp-1"]
    token = await _token(w.client, id)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=w.dashboard), base_url="http://dash.test"
    ) as other:
        await other.get(f"/instances/{id}")  # its own cookie

        stolen = await _post(other, f"/instances/{id}/cancel", {"csrf": token})
        own = await _post(w.client, f"/instances/{id}/cancel", {"csrf": token})

    assert stolen.status_code == 403
    assert own.status_code == 303
    assert await rows.status(id) == "cancelled"


# -- signal ---------------------------------------------------------------------------------


async def test_web_signal_is_stored_and_the_workflow_acts_on_it(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    w = await web(allow_actions=True)
    id = scene.ids["exp-2"]
    token = await _token(w.client, id)

    response = await _post(
        w.client,
        f"/instances/{id}/signal",
        {"csrf": token, "name": "approved", "payload": '{"by": "ann"}'},
    )
    after = await w.client.get(response.headers["location"])
    await scene.engine.drain()

    assert response.status_code == 303
    assert response.headers["location"] == f"/instances/{id}?done=signal-woke"
    assert "Signal stored; it woke the instance." in after.text
    assert await web_app.Expense.result("exp-2", timeout=10) == {
        "paid": True,
        "amount": 200,
        "by": "ann",
    }


@pytest.mark.parametrize(
    ("name", "payload", "says"),
    [
        ("approved", '{"by": 5}', "payload of signal 'approved' does not match Approved"),
        ("approved", "{}", "payload of signal 'approved' does not match Approved"),
        ("approved", '{"by": "ann"', "the payload is not valid JSON"),
        ("aproved", "null", "expense awaits no signal named 'aproved'"),
        ("", "null", "the signal name is missing"),
        ("approved", "x" * (MAX_PAYLOAD + 1), "the payload is larger than 64 KiB"),
    ],
)
async def test_web_signal_refuses_a_bad_name_or_payload_and_stores_nothing(
    scene: Scene, web: WebFactory, rows: Rows, name: str, payload: str, says: str
) -> None:
    w = await web(allow_actions=True)
    id = scene.ids["exp-1"]
    token = await _token(w.client, id)

    response = await _post(
        w.client, f"/instances/{id}/signal", {"csrf": token, "name": name, "payload": payload}
    )

    page = await _refusal(w.client, response, id)
    assert says in page
    assert await rows.signals() == []
    if len(payload) < 100:  # the page shows again what was typed, to fix it
        assert f">{payload}</textarea>" in page


async def test_web_signal_to_an_ended_instance_is_refused_and_stores_nothing(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    w = await web(allow_actions=True)
    id = scene.ids["exp-1"]
    token = await _token(w.client, id)
    await web_app.Expense.cancel("exp-1")  # ended after the page was shown

    response = await _post(
        w.client,
        f"/instances/{id}/signal",
        {"csrf": token, "name": "rejected", "payload": "null"},
    )

    page = await _refusal(w.client, response, id)
    assert f"instance {id} is not live; signal 'rejected' was not stored" in page
    assert await rows.signals() == []


async def test_web_signal_without_the_code_checks_the_name_with_the_live_nodes(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    w = await web(engine=None, allow_actions=True)
    id = scene.ids["exp-3"]
    token = await _token(w.client, id)

    unknown = await _post(
        w.client, f"/instances/{id}/signal", {"csrf": token, "name": "paid", "payload": "1"}
    )
    known = await _post(
        w.client, f"/instances/{id}/signal", {"csrf": token, "name": "rejected", "payload": ""}
    )
    await scene.engine.drain()

    refused = await _refusal(w.client, unknown, id)
    assert "expense awaits no signal named 'paid'" in refused
    assert "per the live engines" in refused
    assert known.status_code == 303
    assert await web_app.Expense.result("exp-3", timeout=10) == {"paid": False}


async def test_web_signal_without_code_or_live_engine_is_refused(
    make_engine: MakeEngine, web: WebFactory, rows: Rows
) -> None:
    engine = await make_engine(workflows=web_app.WORKFLOWS, queues=None)
    handle = await web_app.Expense.start(key="e", state=web_app.Expense.State(amount=1))
    await engine.stop()  # no live node knows the workflow any more
    w = await web(engine=None, allow_actions=True)
    token = await _token(w.client, handle.id)

    response = await _post(
        w.client,
        f"/instances/{handle.id}/signal",
        {"csrf": token, "name": "approved", "payload": "{}"},
    )

    assert "no live engine knows workflow 'expense'" in await _refusal(
        w.client, response, handle.id
    )
    assert await rows.signals() == []


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        ('{"by": 5}', "does not match Approved: Expected `str`, got `int` - at `$.by`"),
        ("", "does not match Approved: Expected `object`, got `null`"),
        ("{}", "does not match Approved: Object missing required field `by`"),
    ],
)
async def test_web_signal_without_the_code_checks_the_payload_with_the_live_nodes(
    scene: Scene, web: WebFactory, rows: Rows, payload: str, says: str
) -> None:
    w = await web(engine=None, allow_actions=True)
    id = scene.ids["exp-1"]
    token = await _token(w.client, id)

    response = await _post(
        w.client, f"/instances/{id}/signal", {"csrf": token, "name": "approved", "payload": payload}
    )

    assert f"payload of signal 'approved' {says}" in await _refusal(w.client, response, id)
    assert await rows.signals() == []


async def test_web_refusal_is_shown_only_from_a_cookie_this_dashboard_signed_for_the_page(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    w = await web(allow_actions=True)
    other = await web(allow_actions=True)  # another secret
    id, elsewhere = scene.ids["exp-1"], scene.ids["exp-2"]
    token = await _token(w.client, id)
    refused = await _post(
        w.client, f"/instances/{id}/signal", {"csrf": token, "name": "nope", "payload": "1"}
    )
    cookie = refused.cookies[flash.COOKIE]

    for_another_page = await w.client.get(f"/instances/{elsewhere}")
    other.client.cookies.set(flash.COOKIE, cookie)
    other_secret = await other.client.get(f"/instances/{id}")
    w.client.cookies.set(flash.COOKIE, cookie[:-1] + ("0" if cookie[-1] != "0" else "1"))
    tampered = await w.client.get(f"/instances/{id}")
    w.client.cookies.set(flash.COOKIE, cookie)
    signed = await w.client.get(f"/instances/{id}")

    for page in (for_another_page, other_secret, tampered):
        assert "awaits no signal named" not in page.text
    assert "awaits no signal named 'nope'" in html.unescape(signed.text)


# -- cancel and retry -----------------------------------------------------------------------


async def test_web_cancel_ends_a_live_instance_with_its_children(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    w = await web(allow_actions=True)
    order = scene.ids["ord-1"]
    token = await _token(w.client, order)

    response = await _post(w.client, f"/instances/{order}/cancel", {"csrf": token})
    again = await _post(w.client, f"/instances/{order}/cancel", {"csrf": token})

    assert response.status_code == 303
    assert await rows.status(order) == "cancelled"
    shipments = await rows.db.fetch(
        f'SELECT status::text FROM "{rows.schema}".instances WHERE parent_id = $1', order
    )
    assert [r[0] for r in shipments] == ["cancelled", "cancelled"]
    assert "is not live (or does not exist); nothing was cancelled" in await _refusal(
        w.client, again, order
    )


async def test_web_retry_puts_a_failed_instance_back_and_refuses_a_live_one(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    w = await web(allow_actions=True)
    failed, live = scene.ids["r-bad"], scene.ids["exp-1"]
    token = await _token(w.client, failed)
    await rows.execute(
        'UPDATE S.instances SET state = \'{"email": "ann@example.com"}\' WHERE id = $1', failed
    )

    refused = await _post(w.client, f"/instances/{live}/retry", {"csrf": token})
    response = await _post(w.client, f"/instances/{failed}/retry", {"csrf": token})
    await scene.engine.drain()

    assert f"instance {live} is awaiting: only a failed instance can be retried" in (
        await _refusal(w.client, refused, live)
    )
    assert response.status_code == 303
    assert response.headers["location"] == f"/instances/{failed}?done=retry"
    assert await rows.status(failed) == "done"


# -- the form itself ------------------------------------------------------------------------


async def test_web_action_refuses_a_form_that_is_not_a_form(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    w = await web(allow_actions=True)
    id = scene.ids["exp-1"]
    token = await _token(w.client, id)

    as_json = await w.client.post(
        f"/instances/{id}/cancel",
        json={"csrf": token},
        headers={"content-type": "application/json"},
    )
    too_big = await _post(w.client, f"/instances/{id}/cancel", {"csrf": token, "x": "y" * MAX_FORM})
    twice = await w.client.post(
        f"/instances/{id}/cancel",
        content=f"csrf={token}&csrf={token}",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    by_get = await w.client.get(f"/instances/{id}/cancel")

    assert as_json.status_code == 400
    assert "an action is a form post" in as_json.text
    assert too_big.status_code == 400
    assert "the form is larger than" in too_big.text
    assert twice.status_code == 400
    assert "csrf is given 2 times" in twice.text
    assert by_get.status_code == 405
    assert await rows.status(id) == "awaiting"
