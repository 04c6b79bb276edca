"""The mkdocs site documents every example, and a browser draws its diagram as SVG.

The site is built with `mkdocs build --strict` (the hook `tools/mkdocs_examples.py` renders
`examples/*.py`), served on loopback, and opened in headless Chromium through Playwright.
Material loads Mermaid from a CDN; tests have no network, so the page gets the same major
version from a local copy. `.ci/install-browser` installs Chromium and that copy; this test
runs it when either is missing, and skips (saying why) only when it cannot install them.
"""

from __future__ import annotations

import functools
import html.parser
import http.server
import os
import shutil
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent.parent
INSTALL = ROOT / ".ci" / "install-browser"
CACHE = Path(
    os.environ.get("GENDURABLE_BROWSER_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gendurable"
)
MERMAID_CDN = "https://unpkg.com/mermaid@11/dist/mermaid.min.js"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Material draws each diagram into a closed shadow root; opened here so the test can see it.
OPEN_SHADOW_ROOTS = """
const attach = Element.prototype.attachShadow;
Element.prototype.attachShadow = function (init) {
    return attach.call(this, {...init, mode: "open"});
};
"""


def _browser() -> tuple[str | None, Path | None]:
    mermaid = CACHE / "mermaid.min.js"
    return shutil.which("chromium"), mermaid if mermaid.is_file() else None


@pytest.fixture(scope="module")
def browser() -> tuple[str, Path]:
    """(Chromium's path, mermaid.min.js), installed by `.ci/install-browser` if missing."""
    chromium, mermaid = _browser()
    if chromium is None or mermaid is None:
        done = subprocess.run(
            ["bash", str(INSTALL)], capture_output=True, text=True, timeout=900, check=False
        )
        chromium, mermaid = _browser()
        if chromium is None or mermaid is None:
            reason = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]
            pytest.skip(f"no browser could be installed by {INSTALL.name}: {reason}")
    return chromium, mermaid


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, NO_MKDOCS_2_WARNING="1"),
        check=False,
    )
    assert built.returncode == 0, built.stderr
    return out


@pytest.fixture(scope="module")
def served(site: Path) -> Iterator[str]:
    """The built site over HTTP on loopback (Material's scripts do not run from file://)."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(site))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join()
    server.server_close()


def test_site_has_a_generated_page_per_example(site: Path) -> None:
    for example in sorted((ROOT / "examples").glob("*.py")):
        html = (site / "examples" / example.stem / "index.html").read_text()
        assert '<pre class="mermaid"><code>stateDiagram-v2' in html, example.name
        assert '<h3 id="steps">Steps' in html
        assert '<h3 id="state">State' in html
    approval = (site / "examples" / "approval" / "index.html").read_text()
    assert "<code>approved</code>" in approval
    assert "<code>Approved</code>" in approval


class _ProseText(html.parser.HTMLParser):
    """The text of a page outside code, preformatted blocks, scripts and styles."""

    SKIPPED = frozenset({"pre", "code", "script", "style", "textarea"})

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.depth += tag in self.SKIPPED

    def handle_endtag(self, tag: str) -> None:
        self.depth -= tag in self.SKIPPED and self.depth > 0

    def handle_data(self, data: str) -> None:
        if not self.depth:
            self.parts.append(data)


def test_site_every_markdown_table_renders_as_a_table(site: Path) -> None:
    # A table cut by a blank line, or with a bad delimiter row, becomes a paragraph of pipes:
    # `mkdocs --strict` says nothing about it. Code blocks may show pipes; prose may not.
    broken = []
    for page in sorted(site.rglob("*.html")):
        prose = _ProseText()
        prose.feed(page.read_text())
        text = "".join(prose.parts)
        broken += [
            f"{page.relative_to(site)}: {line.strip()[:80]}"
            for line in text.splitlines()
            if line.lstrip().startswith("|")
        ]
    assert broken == []


def test_site_example_diagram_renders_as_svg_in_chromium(
    browser: tuple[str, Path], served: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    chromium, mermaid = browser
    with sync_playwright() as playwright:
        # Playwright gives every launch a fresh, temporary user data dir.
        chrome = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = chrome.new_page(viewport={"width": 1280, "height": 900})
            page.route(MERMAID_CDN, lambda route: route.fulfill(path=mermaid))
            page.add_init_script(OPEN_SHADOW_ROOTS)
            page.goto(f"{served}/examples/approval/")
            svg = page.wait_for_selector("div.mermaid svg", timeout=30_000)
            assert svg is not None
            labels = page.eval_on_selector_all(
                "div.mermaid svg .node", "nodes => nodes.map(n => n.textContent.trim())"
            )
            host = page.locator("div.mermaid").first
            box = host.bounding_box()
            shot = host.screenshot(path=str(tmp_path / "approval-diagram.png"))
        finally:
            chrome.close()

    assert {"submit", "pay"} <= set(labels)
    assert "decideawaits approved, rejected (timeout 2d)" in labels  # title over description
    assert box is not None
    assert box["width"] > 150
    assert box["height"] > 200
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", shot[16:24])
    assert abs(width - box["width"]) <= 1  # the element's box, rounded to whole pixels
    assert abs(height - box["height"]) <= 1
    assert len(shot) > 5_000  # a blank image of that size compresses to far less
