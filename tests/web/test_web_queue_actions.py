"""Pausing and resuming a queue from the overview, and the signal form sent twice.

The queue buttons pass what every action passes (the read-only switch, the CSRF check)
before the statement `gendurable pause` runs; the signal form carries a key drawn with the
page, so a double submit stores its signal once.
"""

from __future__ import annotations

import html
import re

import httpx
import pytest
import web_app
from web_support import Rows, Scene, WebFactory


async def _overview_token(client: httpx.AsyncClient) -> str:
    page = (await client.get("/")).text
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None
    return found.group(1)


def _queue_cell(page: str, queue: str) -> str:
    """The `paused` cell of `queue`'s row in the overview's queue table, as text."""
    row = re.search(
        rf'<td><a href="[^"]*queue={re.escape(queue)}&amp;status=available">{re.escape(queue)}'
        r"</a></td>(.*?)</tr>",
        page,
        re.S,
    )
    assert row is not None, f"no row for queue {queue!r}"
    cell = re.search(r'<td class="pause">(.*?)</td>', row.group(1), re.S)
    assert cell is not None
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", cell.group(1))).split())


async def test_web_pause_and_resume_a_queue_from_the_overview(
    scene: Scene, web: WebFactory
) -> None:
    w = await web(allow_actions=True)
    token = await _overview_token(w.client)
    before = (await w.client.get("/")).text
    assert _queue_cell(before, "mail") == "no Pause"

    paused = await w.client.post("/queues/pause", data={"csrf": token, "queue": "mail"})
    page = await w.client.get(paused.headers["location"])

    assert paused.status_code == 303
    assert paused.headers["location"] == "/?done=pause"
    assert "Queue paused: no engine starts a new step of it" in page.text
    cell = _queue_cell(page.text, "mail")  # shown at once, whatever the cache held
    assert cell.startswith("paused since ")
    assert cell.endswith(" by dashboard (127.0.0.1) Resume")
    [pause] = await scene.engine.paused_queues()
    assert pause.queue == "mail"

    resumed = await w.client.post("/queues/resume", data={"csrf": token, "queue": "mail"})
    page = await w.client.get(resumed.headers["location"])
    assert resumed.headers["location"] == "/?done=resume"
    assert "Queue resumed" in page.text
    assert _queue_cell(page.text, "mail") == "no Pause"
    assert await scene.engine.paused_queues() == []


async def test_web_a_paused_queue_no_engine_runs_is_listed_with_its_resume_button(
    scene: Scene, web: WebFactory
) -> None:
    await scene.engine.pause("archive", by="ops")
    w = await web(allow_actions=True)

    page = (await w.client.get("/")).text

    assert _queue_cell(page, "archive").endswith(" by ops Resume")


async def test_web_queue_buttons_are_absent_and_refused_when_read_only(
    scene: Scene, web: WebFactory
) -> None:
    w = await web()
    page = (await w.client.get(f"/instances/{scene.ids['exp-1']}")).text
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert found is not None

    overview = (await w.client.get("/")).text
    response = await w.client.post("/queues/pause", data={"csrf": found.group(1), "queue": "mail"})

    assert "/queues/pause" not in overview
    assert response.status_code == 403
    assert "read-only" in response.text
    assert await scene.engine.paused_queues() == []


@pytest.mark.parametrize("case", ["no token", "other origin"])
async def test_web_queue_action_refused_without_a_valid_csrf_token(
    scene: Scene, web: WebFactory, case: str
) -> None:
    w = await web(allow_actions=True)
    token = await _overview_token(w.client)
    fields = {"csrf": token, "queue": "mail"}
    headers = {}
    if case == "no token":
        del fields["csrf"]
    else:
        headers["origin"] = "https://evil.example"

    response = await w.client.post("/queues/pause", data=fields, headers=headers)

    assert response.status_code == 403
    assert await scene.engine.paused_queues() == []


@pytest.mark.parametrize("queue", [None, ""])
async def test_web_queue_action_without_a_queue_is_a_bad_request(
    scene: Scene, web: WebFactory, queue: str | None
) -> None:
    w = await web(allow_actions=True)
    token = await _overview_token(w.client)
    fields = {"csrf": token} if queue is None else {"csrf": token, "queue": queue}

    response = await w.client.post("/queues/pause", data=fields)

    assert response.status_code == 400
    assert "queue must be a non-empty string" in html.unescape(response.text)
    assert await scene.engine.paused_queues() == []


async def test_web_signal_form_sent_twice_stores_its_signal_once(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    w = await web(allow_actions=True)
    id = scene.ids["exp-3"]
    page = (await w.client.get(f"/instances/{id}")).text
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    key = re.search(r'name="idempotency_key" value="([^"]+)"', page)
    assert token is not None
    assert key is not None
    fields = {
        "csrf": token.group(1),
        "idempotency_key": key.group(1),
        "name": "approved",
        "payload": '{"by": "ann"}',
    }

    first = await w.client.post(f"/instances/{id}/signal", data=fields)
    second = await w.client.post(f"/instances/{id}/signal", data=fields)
    again = await w.client.get(second.headers["location"])
    edited = await w.client.post(
        f"/instances/{id}/signal", data={**fields, "payload": '{"by": "bob"}'}
    )
    refused = html.unescape((await w.client.get(edited.headers["location"])).text)

    assert first.headers["location"] == f"/instances/{id}?done=signal-woke"
    assert second.headers["location"] == f"/instances/{id}?done=signal-again"
    assert "This form was sent already: its signal was stored once, then." in again.text
    assert edited.headers["location"] == f"/instances/{id}"
    assert "this form was sent already, with another signal (id " in refused
    await scene.engine.drain()
    assert await web_app.Expense.result("exp-3", timeout=10) == {
        "paid": True, "amount": 300, "by": "ann",
    }  # fmt: skip
    assert await rows.signals() == []  # the one stored was consumed
    fresh = (await w.client.get(f"/instances/{id}")).text
    assert key.group(1) not in fresh  # each drawing of the form has its own key


async def test_web_signal_form_with_a_forged_key_is_refused_and_stores_nothing(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    w = await web(allow_actions=True)
    id = scene.ids["exp-1"]
    page = (await w.client.get(f"/instances/{id}")).text
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert token is not None
    fields = {"csrf": token.group(1), "name": "approved", "payload": '{"by": "ann"}'}

    response = await w.client.post(
        f"/instances/{id}/signal", data={**fields, "idempotency_key": "k" * 256}
    )
    refused = html.unescape((await w.client.get(response.headers["location"])).text)

    assert "idempotency_key 'kkk" in refused
    assert "above the limit of 255" in refused
    assert await rows.signals() == []
