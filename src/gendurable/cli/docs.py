"""`gendurable docs MODULE [-o DIR]`: write one Markdown page per workflow of a module."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..docgen import load_module, write_pages
from .command import command

DEFAULT_DIR = "docs/workflows"


def options(parser: argparse.ArgumentParser) -> None:
    """MODULE and `-o/--output`."""
    parser.add_argument("module", metavar="MODULE", help="a module name (app.flows) or a .py file")
    parser.add_argument(
        "-o",
        "--output",
        default=DEFAULT_DIR,
        metavar="DIR",
        help=f"directory the pages go to, created if missing (default: {DEFAULT_DIR})",
    )


@command("docs", options)
def docs_command(args: argparse.Namespace) -> int:
    """Write one Markdown page (diagram, steps, signals, fields) per workflow of MODULE."""
    for path in write_pages(load_module(args.module), Path(args.output)):
        print(path)
    return 0
