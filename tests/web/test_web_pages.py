"""The dashboard's read-only pages over HTTP (in-process ASGI client, real PostgreSQL)."""

from __future__ import annotations

import asyncio
import html
import re
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import web_app
from starlette.applications import Starlette
from starlette.routing import Mount
from web_support import Rows, Scene, WebFactory

from gendurable.testing import MakeEngine


def _ids(page: str) -> list[int]:
    """The instance ids a list page links to, in order."""
    return [int(i) for i in re.findall(r'<td class="num"><a href="/instances/(\d+)">', page)]


# -- overview -------------------------------------------------------------------------------


async def test_web_overview_counts_queues_throughput_and_nodes(
    scene: Scene, web: WebFactory
) -> None:
    w = await web()

    page = (await w.client.get("/")).text

    assert 'data-count="expense/expenses/awaiting">3<' in page
    assert 'data-count="order/orders/waiting">1<' in page
    assert 'data-count="shipment/orders/awaiting">2<' in page
    assert 'data-count="send_receipt/mail/failed">1<' in page
    assert 'data-count="send_receipt/mail/done">1<' in page
    assert "2 ended:" in page  # the receipts, in the last hour's chart
    assert page.count('<g class="bar">') == 1  # both ended in this minute
    assert scene.engine.name in page  # the live node
    assert 'data-refresh="/overview/live"' in page
    live = await w.client.get("/overview/live")
    assert live.status_code == 200
    assert "<html" not in live.text
    assert 'data-count="expense/expenses/awaiting">3<' in live.text


async def test_web_overview_names_the_oldest_due_row_of_each_queue(
    make_engine: MakeEngine, web: WebFactory
) -> None:
    await make_engine(workflows=web_app.WORKFLOWS, queues=None)  # starts, runs nothing
    first = await web_app.Expense.start(key="late-1", state=web_app.Expense.State(amount=1))
    await web_app.Expense.start(key="late-2", state=web_app.Expense.State(amount=2))
    w = await web()

    page = (await w.client.get("/")).text

    queues = page.split("<h2>Queues</h2>")[1].split("</table>")[0]
    assert f'<a href="/instances/{first.id}">#{first.id}</a>' in queues
    assert "no engine runs this queue" in queues  # a client-only engine runs nothing
    assert re.search(r'<td class="num">2</td>', queues)


async def test_web_overview_leaves_out_a_dead_node_not_yet_pruned(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    # An engine that died without stopping keeps its row until a live node's heartbeat
    # prunes it; past its expiry it is not live, and runs no queue.
    await rows.execute(
        "INSERT INTO S.nodes (id, name, host, pid, schema, queues, workflows, version, "
        "heartbeat, started_at, last_seen, expires_at) "
        "SELECT 'ghost@h-1-x', 'ghost-node', 'h', 1, 's', '{\"archive\": 4}', '{}', '0', "
        "interval '10 seconds', now() - interval '1 hour', now() - interval '31 seconds', "
        "now() - interval '1 second'"
    )
    w = await web()

    page = (await w.client.get("/")).text

    assert scene.engine.name in page  # the live node
    assert "ghost-node" not in page
    assert "archive" not in page  # the queue only the dead node ran


async def test_web_overview_counts_the_ends_of_the_last_hour_only(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    # The receipts ended now; one of them is made to have ended two hours ago.
    await rows.execute(
        "UPDATE S.instances SET finished_at = now() - interval '2 hours' WHERE id = $1",
        scene.ids["r-ok"],
    )
    w = await web()

    page = (await w.client.get("/")).text

    assert "1 ended:" in page


async def test_web_overview_names_the_oldest_due_row_whatever_its_priority(
    make_engine: MakeEngine, web: WebFactory, rows: Rows
) -> None:
    await make_engine(workflows=web_app.WORKFLOWS, queues=None)  # starts, runs nothing
    oldest = await web_app.Expense.start(key="low", state=web_app.Expense.State(amount=1))
    urgent = await web_app.Expense.start(
        key="high", state=web_app.Expense.State(amount=2), priority=5
    )
    await rows.execute(
        "UPDATE S.instances SET run_at = now() - interval '1 hour' WHERE id = $1", oldest.id
    )
    w = await web()

    page = (await w.client.get("/")).text

    queues = page.split("<h2>Queues</h2>")[1].split("</table>")[0]
    assert f'<a href="/instances/{oldest.id}">#{oldest.id}</a>' in queues
    assert f"#{urgent.id}<" not in queues


async def test_web_overview_reads_once_per_refresh_for_every_viewer(
    scene: Scene, web: WebFactory
) -> None:
    w = await web(refresh=60)
    store = await w.dashboard.store()
    calls = 0
    counts = store.status_counts

    async def counted(*, now: object) -> object:
        nonlocal calls
        calls += 1
        return await counts(now=now)  # type: ignore[arg-type]

    store.status_counts = counted  # type: ignore[method-assign]

    pages = await asyncio.gather(*(w.client.get("/overview/live") for _ in range(8)))

    assert all(p.status_code == 200 for p in pages)
    assert calls == 1


# -- the list -------------------------------------------------------------------------------


async def test_web_list_filters_by_workflow_status_queue_and_key_prefix(
    scene: Scene, web: WebFactory
) -> None:
    w = await web()
    ids = scene.ids

    everything = _ids((await w.client.get("/instances")).text)
    expenses = _ids((await w.client.get("/instances?workflow=expense")).text)
    awaiting = _ids((await w.client.get("/instances?status=awaiting&status=waiting")).text)
    orders_queue = _ids((await w.client.get("/instances?queue=orders")).text)
    by_prefix = _ids((await w.client.get("/instances?key_prefix=exp-")).text)
    combined = _ids(
        (await w.client.get("/instances?workflow=send_receipt&status=failed&key_prefix=r-")).text
    )

    assert everything == sorted(everything, reverse=True)
    assert len(everything) == 8
    assert expenses == [ids["exp-3"], ids["exp-2"], ids["exp-1"]]
    assert len(awaiting) == 6  # three expenses, two shipments, and the waiting order
    assert ids["ord-1"] in orders_queue
    assert len(orders_queue) == 3
    assert by_prefix == expenses
    assert combined == [ids["r-bad"]]


async def test_web_list_pages_through_keyset_links_without_gaps_or_repeats(
    make_engine: MakeEngine, web: WebFactory
) -> None:
    await make_engine(workflows=web_app.WORKFLOWS, queues=None)
    started = [
        (await web_app.Expense.start(key=f"k-{n:02}", state=web_app.Expense.State(amount=n))).id
        for n in range(45)
    ]
    w = await web()

    seen: list[int] = []
    url: str | None = "/instances?key_prefix=k-&limit=20"
    pages = 0
    while url is not None:
        page = (await w.client.get(url)).text
        seen += _ids(page)
        pages += 1
        older = re.search(r'<a href="([^"]+)" rel="next">', page)
        url = html.unescape(older.group(1)) if older else None
        if url is not None:
            assert "before=" in url
            assert "key_prefix=k-" in url
            assert "limit=20" in url

    assert pages == 3
    assert seen == sorted(started, reverse=True)


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("status=bogus", "status 'bogus' is not one of"),
        ("limit=7", "limit must be one of 20, 50, 100, 200"),
        ("limit=100000", "limit must be one of"),
        ("before=abc", "before must be a whole number"),
        ("before=-3", "before must be a whole number"),
        ("before=99999999999999999999", "before is out of range"),
        ("workflow=" + "w" * 201, "workflow is longer than 200 characters"),
        ("key_prefix=a%00b", "key prefix contains control characters"),
        ("queue=a&queue=b", "queue is given 2 times"),
        ("sort=id", "unknown filter 'sort'"),
    ],
)
async def test_web_list_refuses_bad_filters_before_querying(
    web: WebFactory, gendurable_dsn: str, gendurable_schema: str, query: str, says: str
) -> None:
    w = await web()

    response = await w.client.get(f"/instances?{query}")

    assert response.status_code == 400
    assert says in html.unescape(response.text)
    assert w.dashboard._store is None  # refused before the pool was even opened


# -- one instance ---------------------------------------------------------------------------


async def test_web_instance_page_shows_what_an_awaiting_instance_holds(
    scene: Scene, web: WebFactory, rows: Rows
) -> None:
    w = await web()
    id = scene.ids["exp-2"]
    await rows.execute(
        "INSERT INTO S.signals (instance_id, name, payload, received_at) "
        "VALUES ($1, 'note', '{\"text\": \"<b>hi</b>\"}', now())",
        id,
    )

    page = (await w.client.get(f"/instances/{id}")).text
    await rows.execute("UPDATE S.instances SET state_version = 3 WHERE id = $1", id)
    versioned = (await w.client.get(f"/instances/{id}")).text

    assert "state version" not in page  # the first version goes without saying
    assert "<dt>state version</dt><dd>3 (as stored, not upgraded)</dd>" in versioned
    assert '<span class="status awaiting big">awaiting</span>' in page
    assert re.search(r"<dd class=\"blocked\">awaiting approved or rejected until \d{4}-", page)
    assert '"amount": 200' in html.unescape(page)
    assert "&lt;b&gt;hi&lt;/b&gt;" in page
    assert "<b>hi</b>" not in page
    assert '<g class="step current status-awaiting" data-step="decide">' in page
    assert "approved: Approved (awaited now)" in page
    assert "rejected: any JSON (awaited now)" in page


async def test_web_instance_page_links_parent_and_children_and_pages_them(
    scene: Scene, web: WebFactory
) -> None:
    w = await web()
    order = scene.ids["ord-1"]

    parent_page = (await w.client.get(f"/instances/{order}")).text
    children = re.findall(r'<td class="num"><a href="/instances/(\d+)">', parent_page)
    child_page = (await w.client.get(f"/instances/{children[0]}")).text
    after_last = (await w.client.get(f"/instances/{order}?children_after={children[-1]}")).text

    assert len(children) == 2
    assert "waiting for children: 2 of 2 pending" in parent_page
    assert f'<a href="/instances/{order}">#{order}</a>' in child_page
    assert "ord-1-parcel-1" in child_page
    assert "No more children." in after_last


async def test_web_instance_page_pages_the_inbox_without_gaps_or_repeats(
    make_engine: MakeEngine, web: WebFactory
) -> None:
    await make_engine(workflows=web_app.WORKFLOWS, queues=None)  # runs nothing: all kept
    handle = await web_app.Expense.start(key="busy", state=web_app.Expense.State(amount=1))
    sent = [await web_app.Expense.signal("busy", "rejected", None) for _ in range(25)]
    w = await web()

    seen: list[int] = []
    url: str | None = f"/instances/{handle.id}"
    while url is not None:
        page = (await w.client.get(url)).text
        inbox = page.split("<h2>Inbox</h2>")[1].split("</section>")[0]
        seen += [int(i) for i in re.findall(r'<tr><td class="num">(\d+)</td>', inbox)]
        more = re.search(r'<a href="([^"]+)">More signals</a>', inbox)
        url = html.unescape(more.group(1)) if more else None

    assert seen == sent


async def test_web_instance_page_shows_the_error_with_its_traceback(
    scene: Scene, web: WebFactory
) -> None:
    w = await web()

    page = html.unescape((await w.client.get(f"/instances/{scene.ids['r-bad']}")).text)

    assert "ValueError</strong>: cannot deliver to 'nobody': no @ in the address" in page
    assert "Traceback (most recent call last)" in page
    assert 'web_app.py", line' in page
    assert 'class="step current status-failed"' in page


async def test_web_instance_page_refuses_a_bad_id_and_reports_a_missing_one(
    scene: Scene, web: WebFactory
) -> None:
    w = await web()

    missing = await w.client.get("/instances/987654")
    bad = await w.client.get("/instances/12abc")
    huge = await w.client.get("/instances/99999999999999999999")
    cursor = await w.client.get(f"/instances/{scene.ids['exp-1']}?inbox_after=x")

    assert missing.status_code == 404
    assert "no instance with id 987654" in missing.text
    assert bad.status_code == 400
    assert "instance id must be a whole number" in bad.text
    assert huge.status_code == 400
    assert "instance id is out of range" in huge.text
    assert cursor.status_code == 400
    assert "inbox_after must be a whole number" in cursor.text


async def test_web_instance_page_without_the_code_says_how_to_get_a_diagram(
    scene: Scene, web: WebFactory
) -> None:
    w = await web(engine=None)

    page = (await w.client.get(f"/instances/{scene.ids['exp-1']}")).text

    assert "<svg" not in page
    assert "--app MODULE:ENGINE</code> to see the workflow's diagram" in page
    # Without the code, the signal names and payload types come from what the live engine
    # records.
    assert "approved: Approved (awaited now)</option>" in page
    assert "rejected: any JSON (awaited now)</option>" in page


# -- workflows ------------------------------------------------------------------------------


async def test_web_workflow_pages_draw_and_describe_every_served_workflow(
    web: WebFactory, gendurable_dsn: str, gendurable_schema: str
) -> None:
    w = await web()

    index = (await w.client.get("/workflows")).text
    order = (await w.client.get("/workflows/order")).text
    job = (await w.client.get("/workflows/send_receipt")).text
    unknown = await w.client.get("/workflows/nope")

    for name in ("expense", "order", "shipment", "send_receipt"):
        assert f'<a href="/workflows/{name}">{name}</a>' in index
    assert '<svg xmlns="http://www.w3.org/2000/svg" class="diagram"' in order
    assert 'data-step="ship"' in order
    assert 'data-step="settle"' in order
    assert "<h2>Steps</h2>" in order
    assert "<h2>Children</h2>" in order
    assert "<code>shipment</code>" in order
    assert "<h2>Arguments</h2>" in job
    assert "<code>email</code>" in job
    assert unknown.status_code == 404
    assert w.dashboard._store is None  # the code alone: no database needed


async def test_web_workflows_without_the_code_say_how_to_load_it(web: WebFactory) -> None:
    w = await web(engine=None)

    page = (await w.client.get("/workflows")).text

    assert "--app MODULE:ENGINE</code>" in page


# -- mounting, passwords, connections ------------------------------------------------------


async def test_web_mounted_under_a_prefix_links_within_it(scene: Scene, web: WebFactory) -> None:
    w = await web()
    outer = Starlette(routes=[Mount("/ops/dashboard", app=w.dashboard)])
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=outer), base_url="http://dash.test"
    ) as client:
        page = (await client.get("/ops/dashboard/instances?workflow=expense")).text
        css = await client.get("/ops/dashboard/static/dashboard.css")
        first = re.search(r'<a href="(/[^"]*/instances/\d+)">', page)

        assert first is not None
        assert first.group(1).startswith("/ops/dashboard/instances/")
        assert 'href="/ops/dashboard/static/dashboard.css"' in page
        assert css.status_code == 200
        assert "svg.diagram" in css.text
        assert (await client.get(first.group(1))).status_code == 200


async def test_web_no_page_shows_the_dsn_password(
    scene: Scene, web: WebFactory, gendurable_dsn: str
) -> None:
    secret, with_password = _with_password(gendurable_dsn)
    w = await web(dsn=with_password)
    down = await web(dsn=f"postgresql://alice:{secret}@127.0.0.1:1/app")

    pages = [
        await w.client.get(path)
        for path in (
            "/",
            "/overview/live",
            "/instances",
            f"/instances/{scene.ids['r-bad']}",
            "/instances?status=nope",
            "/instances/424242",
            "/workflows/order",
            "/nowhere",
        )
    ]
    unreachable = await down.client.get("/")

    assert [p.status_code for p in pages] == [200, 200, 200, 200, 400, 404, 200, 404]
    assert unreachable.status_code == 503
    assert "cannot reach database &#39;app&#39; on 127.0.0.1:1 as alice" in unreachable.text
    for response in [*pages, unreachable]:
        assert secret not in response.text
        assert all(secret not in v for v in response.headers.values())


def _with_password(dsn: str) -> tuple[str, str]:
    """(password, DSN with it): the test DSN's own, else one added (the embedded server
    trusts its unix socket, so any password logs in)."""
    parts = urlsplit(dsn)
    if parts.password:
        return parts.password, dsn
    secret = "Pa55-w0rd-s3cret"
    port = f":{parts.port}" if parts.port else ""
    netloc = f"{parts.username or 'postgres'}:{secret}@{parts.hostname or ''}{port}"
    return secret, urlunsplit(parts._replace(netloc=netloc))


async def test_web_holds_at_most_its_pool_size_of_connections(
    scene: Scene, web: WebFactory
) -> None:
    w = await web(pool_size=2)
    paths = [f"/instances/{id}" for id in scene.ids.values()] * 4 + ["/instances"] * 8

    responses = await asyncio.gather(*(w.client.get(p) for p in paths))

    assert all(r.status_code == 200 for r in responses)
    store = await w.dashboard.store()
    assert store.db.pool.get_max_size() == 2
    assert 1 <= store.db.pool.get_size() <= 2


async def test_web_pages_forbid_framing_and_foreign_scripts(scene: Scene, web: WebFactory) -> None:
    w = await web()

    response = await w.client.get("/")

    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "https://" not in response.text  # nothing loaded from elsewhere


@pytest.mark.fresh_schema
async def test_web_unmigrated_schema_is_a_503_that_names_the_fix(web: WebFactory) -> None:
    # Nothing migrated the test's schema.
    w = await web()

    response = await w.client.get("/")

    assert response.status_code == 503
    assert "gendurable migrate" in response.text
