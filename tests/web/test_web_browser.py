"""The dashboard end to end in headless Chromium: a real `gendurable web` process on the
test database, a real engine running the workflows, Debian's Chromium driven by
Playwright. `.ci/install-browser` installs Chromium; this test runs it when Chromium is
missing, and skips (saying why) only when it cannot be installed.

Screenshots go to `$GENDURABLE_SCREENSHOTS` if set (the docs' pictures are made with
`GENDURABLE_SCREENSHOTS=docs/images/dashboard`), else to a temporary folder; the test
prints where.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import web_app
from web_support import Rows, Scene, serve_dashboard

ROOT = Path(__file__).resolve().parent.parent.parent
INSTALL = ROOT / ".ci" / "install-browser"
SHOTS_ENV = "GENDURABLE_SCREENSHOTS"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT = 15_000  # ms Playwright waits for a page or an element before failing


@pytest.fixture(scope="module")
def chromium() -> str:
    """Debian's Chromium, installed by `.ci/install-browser` if missing."""
    path = shutil.which("chromium")
    if path is None:
        done = subprocess.run(
            ["bash", str(INSTALL)], capture_output=True, text=True, timeout=900, check=False
        )
        path = shutil.which("chromium")
        if path is None:
            reason = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]
            pytest.skip(f"no browser could be installed by {INSTALL.name}: {reason}")
    return path


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the screenshots go; printed (outside pytest's capture) at the end."""
    chosen = os.environ.get(SHOTS_ENV)
    folder = Path(chosen).resolve() if chosen else tmp_path_factory.mktemp("dashboard-shots")
    folder.mkdir(parents=True, exist_ok=True)
    yield folder
    print(f"\ndashboard screenshots: {folder}")


@pytest.fixture(autouse=True)
def _print_shots(shots: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[None]:
    yield
    with capsys.disabled():
        print(f"\ndashboard screenshots: {shots}")


@asynccontextmanager
async def browser_page(chromium: str) -> AsyncIterator[Any]:
    """A fresh headless Chromium (its own temporary profile) and one page in it."""
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        chrome = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = await chrome.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(WAIT)
            yield page
        finally:
            await chrome.close()


async def _an_hour_of_receipts(scene: Scene, rows: Rows) -> int:
    """Sixty receipts (a few failing), their endings spread over the last hour as if the
    engine had been running that long: the throughput chart then has something to draw.
    Returns how many distinct minutes they ended in."""
    for n in range(60):
        email = "nobody" if n % 13 == 4 else f"customer{n}@example.com"
        await web_app.send_receipt.enqueue(web_app.Receipt(email=email), key=f"hist-{n}")
    await scene.engine.drain()
    # A busier half hour, then a quieter one: minute = 1 + (id^2 mod 59) folded towards now.
    await rows.execute(
        "UPDATE S.instances SET finished_at = now() - interval '1 minute'"
        " * (1 + least((id * id) % 59, (id * 7) % 41)) WHERE key LIKE 'hist-%'"
    )
    for n in (1, 2):  # a queue nothing runs: the overview names its oldest due row
        await web_app.send_receipt.enqueue(
            web_app.Receipt(email=f"archive{n}@example.com"), key=f"archive-{n}", queue="archive"
        )
    await rows.execute(
        "UPDATE S.instances SET run_at = now() - interval '7 minutes' WHERE key = 'archive-1'"
    )
    minutes = await rows.db.fetchval(
        f"SELECT count(DISTINCT date_trunc('minute', finished_at)) FROM \"{rows.schema}\".instances"
        " WHERE key LIKE 'hist-%'"
    )
    assert isinstance(minutes, int)
    return minutes


@pytest.mark.slow
async def test_web_in_chromium_overview_list_instance_and_a_signal_the_workflow_acts_on(
    scene: Scene,
    rows: Rows,
    chromium: str,
    shots: Path,
    gendurable_dsn: str,
    gendurable_schema: str,
) -> None:
    minutes = await _an_hour_of_receipts(scene, rows)
    awaiting = '[data-count="expense/expenses/awaiting"]'
    async with (
        serve_dashboard(
            "--dsn", gendurable_dsn, "--schema", gendurable_schema,
            "--app", "web_app:engine", "--allow-actions", "--refresh", "1",
        ) as served,
        browser_page(chromium) as page,
    ):  # fmt: skip
        # The overview, and its live refresh.
        await page.goto(served.url)
        assert await page.text_content(awaiting) == "3"
        assert await page.locator("svg.chart g.bar").count() >= minutes  # and this minute
        assert await page.locator("table.nodes tbody tr").count() == 1
        archive = await page.text_content("table.queues tbody tr:first-child")
        assert archive is not None
        assert "archive" in archive
        assert "archive-1, waiting 7m" in " ".join(archive.split())
        assert "no engine runs this queue" in archive
        await page.screenshot(path=shots / "overview.png", full_page=True)
        await web_app.Expense.start(key="exp-4", state=web_app.Expense.State(amount=75))
        await page.wait_for_selector(f'{awaiting}:text-is("4")')  # no reload: refreshed

        # A filtered list.
        await page.click("header nav >> text=Instances")
        await page.fill("input[name=workflow]", "expense")
        await page.check("input[name=status][value=awaiting]")
        await page.click("form.filters button[type=submit]")
        await page.wait_for_url(re.compile(r"/instances\?workflow=expense&status=awaiting&limit="))
        listed = page.locator("table.list tbody tr")
        assert await listed.count() == 4
        assert set(await page.locator("table.list tbody td:nth-child(2)").all_text_contents()) == {
            "expense"
        }
        await page.screenshot(path=shots / "instances.png", full_page=True)

        # An instance page.
        await page.click("table.list >> text=exp-2")
        await page.wait_for_url(f"**/instances/{scene.ids['exp-2']}")
        blocked = await page.text_content("dd.blocked")
        assert blocked is not None
        assert blocked.startswith("awaiting approved or rejected until ")
        current = page.locator("svg.diagram g.step.current")
        assert await current.get_attribute("data-step") == "decide"
        assert '"amount": 200' in (await page.text_content("pre.json") or "")
        await page.screenshot(path=shots / "instance.png", full_page=True)

        # A signal whose payload does not match its declared type is refused...
        await page.select_option("select[name=name]", "approved")
        await page.fill("textarea[name=payload]", '{"by": 7}')
        await page.click("form.signal button[type=submit]")
        problem = await page.text_content("p.problem")
        assert problem is not None
        assert "payload of signal 'approved' does not match Approved" in problem
        assert page.url == f"{served.url}instances/{scene.ids['exp-2']}"  # redirected: a GET
        await page.reload()  # does not post again, and the refusal was shown once
        assert await page.locator("p.problem").count() == 0
        assert await rows.signals() == []

        # ... and a good one is stored, and the workflow acts on it.
        await page.fill("textarea[name=payload]", '{"by": "ann"}')
        await page.click("form.signal button[type=submit]")
        notice = await page.text_content("p.notice")
        assert notice == "Signal stored; it woke the instance."
        result = await web_app.Expense.result("exp-2", timeout=15)
        assert result == {"paid": True, "amount": 200, "by": "ann"}
        await page.reload()
        assert await page.text_content("h1 .status") == "done"
        assert await current.get_attribute("data-step") == "pay"
        assert '"by": "ann"' in (await page.locator("pre.json").nth(1).text_content() or "")
        await page.screenshot(path=shots / "instance-done.png", full_page=True)

        # A failed instance, its traceback, and a workflow page.
        await page.goto(f"{served.url}instances/{scene.ids['r-bad']}")
        assert "no @ in the address" in (await page.text_content("section.error-box") or "")
        assert "Traceback" in (await page.text_content("pre.traceback") or "")
        await page.screenshot(path=shots / "instance-failed.png", full_page=True)
        await page.goto(f"{served.url}workflows/order")
        steps = await page.locator("svg.diagram g.step").evaluate_all(
            "gs => gs.map(g => g.dataset.step)"
        )
        assert steps == ["ship", "settle"]
        await page.screenshot(path=shots / "workflow.png", full_page=True)


async def test_web_in_chromium_read_only_dashboard_refuses_an_action(
    scene: Scene,
    rows: Rows,
    chromium: str,
    shots: Path,
    gendurable_dsn: str,
    gendurable_schema: str,
) -> None:
    id = scene.ids["exp-1"]
    async with (
        serve_dashboard(
            "--dsn", gendurable_dsn, "--schema", gendurable_schema, "--app", "web_app:engine"
        ) as served,
        browser_page(chromium) as page,
    ):  # fmt: skip
        await page.goto(f"{served.url}instances/{id}")
        assert await page.text_content("header .badge") == "read-only"
        assert await page.is_disabled("form.signal button")
        assert await page.is_disabled("form.cancel button")
        await page.screenshot(path=shots / "instance-read-only.png", full_page=True)

        # Even a form switched back on in the page (or any crafted post) is refused.
        await page.evaluate(
            "document.querySelectorAll('fieldset[disabled]').forEach(f => f.disabled = false)"
        )
        await page.fill("textarea[name=payload]", '{"by": "mallory"}')
        async with page.expect_response(f"**/instances/{id}/signal") as answer:
            await page.click("form.signal button[type=submit]")
        response = await answer.value
        assert response.status == 403
        assert await page.text_content("h1") == "Read-only"
        assert "this dashboard is read-only" in (await page.text_content("p.problem") or "")
        assert await page.get_attribute("a.back", "href") == f"/instances/{id}"
        await page.screenshot(path=shots / "read-only.png", full_page=True)

    await scene.engine.drain()
    assert await rows.signals() == []
    assert await rows.status(id) == "awaiting"


async def test_web_in_chromium_cancel_everything_a_filter_matches_then_rewind_one(
    scene: Scene,
    rows: Rows,
    chromium: str,
    shots: Path,
    gendurable_dsn: str,
    gendurable_schema: str,
) -> None:
    async with (
        serve_dashboard(
            "--dsn", gendurable_dsn, "--schema", gendurable_schema,
            "--app", "web_app:engine", "--allow-actions",
        ) as served,
        browser_page(chromium) as page,
    ):  # fmt: skip
        # The filtered list offers the action on everything it matches, with a count first.
        await page.goto(f"{served.url}instances?workflow=expense&status=awaiting")
        await page.click("a.bulk-cancel")
        await page.wait_for_url(re.compile(r"/bulk/cancel\?workflow=expense&status=awaiting$"))
        assert await page.text_content("p.count strong") == "3"
        await page.screenshot(path=shots / "bulk-confirm.png", full_page=True)
        await page.click("form.bulk-confirm button[type=submit]")
        await page.wait_for_url(re.compile(r"/instances\?workflow=expense&status=awaiting$"))
        assert await page.text_content("p.notice") == "Cancel: 3 matched, 3 cancelled."
        assert await page.locator("table.list tbody tr").count() == 0

        # One of them restarted at a step chosen on its page, with a new state.
        id = scene.ids["exp-3"]
        await page.goto(f"{served.url}instances/{id}")
        await page.select_option("form.rewind select[name=step]", "pay")
        await page.fill("form.rewind textarea[name=state]", '{"amount": 5}')
        await page.click("form.rewind button[type=submit]")
        assert await page.text_content("p.notice") == (
            "Restarted at the step chosen with attempt 0, due now."
        )
        assert await web_app.Expense.result("exp-3", timeout=15) == {"paid": True, "amount": 5,
                                                                    "by": None}  # fmt: skip
    assert [await rows.status(scene.ids[k]) for k in ("exp-1", "exp-2", "exp-3")] == [
        "cancelled", "cancelled", "done",
    ]  # fmt: skip
