"""A workflow's page in the dashboard: the generated Markdown page, rendered to HTML.

The text is the page `gendurable docs` writes (`docgen.workflow_page`), so the dashboard
and the documentation site say the same thing; only its Mermaid diagram is swapped for the
server-drawn SVG. Raw HTML in the Markdown (from a docstring) is shown as text, not run.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import markdown

from ..docgen import workflow_page
from ..schedule import Schedule
from ..spec import WorkflowSpec
from .diagram import diagram_svg

_MERMAID = re.compile(r"```mermaid\n.*?\n```\n", re.DOTALL)
_PLACEHOLDER = "GENDURABLE-DIAGRAM-PLACEHOLDER"


def spec_html(spec: WorkflowSpec, schedules: Sequence[Schedule] = ()) -> str:
    """The workflow's page as HTML (trusted markup: its text is escaped), stating those of
    `schedules` that start it."""
    page = workflow_page(spec, level=1, schedules=schedules)
    text = _MERMAID.sub(f"{_PLACEHOLDER}\n", page, count=1)
    md = markdown.Markdown(extensions=["tables"], output_format="html")
    md.preprocessors.deregister("html_block")  # docstrings are text, never markup
    md.inlinePatterns.deregister("html")
    html = md.convert(text)
    return html.replace(f"<p>{_PLACEHOLDER}</p>", diagram_svg(spec), 1)
