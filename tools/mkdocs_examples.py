"""mkdocs hook: every example in `examples/*.py` becomes a generated page of the site.

At each build (and each `mkdocs serve` reload) the example modules are imported and their
workflows rendered by `gendurable.docgen`, the renderer behind `gendurable docs`, so the
Examples pages can never go stale. Each page is `examples/<module>.md`; list it in the nav
of `mkdocs.yml` (the strict build fails on a page left out of it).
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

from gendurable.docgen import load_module, module_page

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add one generated page per example module."""
    for path in sorted(EXAMPLES.glob("*.py")):
        page = module_page(load_module(str(path)), source=path.read_text())
        files.append(File.generated(config, f"examples/{path.stem}.md", content=page))
    return files
