"""`gendurable web`: a real server process, its errors, and imports that stay optional."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx
from web_support import Scene, serve_dashboard


async def test_web_command_serves_the_dashboard_until_interrupted(
    scene: Scene, gendurable_dsn: str, gendurable_schema: str
) -> None:
    async with serve_dashboard(
        "--dsn", gendurable_dsn, "--schema", gendurable_schema, "--app", "web_app:engine"
    ) as served:
        async with httpx.AsyncClient(base_url=served.url) as client:
            overview = await client.get("/")
            order = await client.get(f"/instances/{scene.ids['ord-1']}")
            css = await client.get("/static/dashboard.css")
            refused = await client.post(f"/instances/{scene.ids['ord-1']}/cancel", data={})
        served.process.send_signal(signal.SIGINT)
        code = await served.process.wait()

    assert f"schema {gendurable_schema!r} of " in served.ready
    assert "(read-only)" in served.ready
    assert overview.status_code == 200
    assert 'data-count="order/orders/waiting">1<' in overview.text
    assert order.status_code == 200
    current = re.findall(r'<g class="step current[^"]*" data-step="(\w+)">', order.text)
    assert current == ["settle"]  # its diagram (from --app), where it waits for the parcels
    assert css.headers["content-type"].startswith("text/css")
    assert refused.status_code == 403
    assert code in (0, 130, -2)


def test_web_command_reports_an_unreachable_database_in_one_line() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "gendurable",
            "web",
            "--dsn",
            "postgresql://alice:s3cret-Pa55@127.0.0.1:1/app",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.strip() == (
        "gendurable web: error: cannot reach database 'app' on 127.0.0.1:1 as alice: "
        "connection refused (is the server running?)"
    )


def test_web_command_refuses_bad_options_with_the_usage() -> None:
    for args in (["--port", "70000"], ["--port", "-1"], ["--refresh", "0"], ["--app", "nope"]):
        proc = subprocess.run(
            [sys.executable, "-m", "gendurable", "web", "--dsn", "postgresql://x@h/db", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.startswith("usage: gendurable web"), proc.stderr
        assert "Traceback" not in proc.stderr


def test_web_stays_out_of_import_gendurable() -> None:
    code = (
        "import sys, gendurable, gendurable.cli, gendurable.web\n"
        "loaded = sorted(m for m in ('starlette', 'jinja2', 'uvicorn', 'markdown')"
        " if m in sys.modules)\n"
        "print(loaded)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )

    assert proc.stdout.strip() == "[]"
