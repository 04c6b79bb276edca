"""`gendurable check MODULE:ENGINE [--full]`: would deploying this code strand live rows?

Exit codes: 0 when nothing would strand, 1 when something would (each problem on one line
with its count and an example id) or when the database cannot be checked, 2 on usage errors.
Rows that an `@gd.upgrade` chain will carry to the current state version are listed too
(`state_upgrade: ...` lines), without changing the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from urllib.parse import urlsplit

import asyncpg

from ..db.connect import DSN_ENV, resolve_dsn
from ..deploy_check import DEFAULT_SAMPLE, check_engine
from ..errors import ConfigError
from ..loader import load_engine
from .command import command, positive_int

EXIT_STRANDS = 1


def options(parser: argparse.ArgumentParser) -> None:
    """MODULE:ENGINE, `--dsn`, `--full`, `--sample` and `--json`."""
    parser.add_argument("target", metavar="MODULE:ENGINE", help="where the new Engine is defined")
    parser.add_argument(
        "--dsn",
        default=None,
        help=f"PostgreSQL URL of the live rows (default: the engine's dsn, else ${DSN_ENV})",
    )
    parser.add_argument(
        "--full", action="store_true", help="decode every live state, not only a sample"
    )
    parser.add_argument(
        "--sample",
        type=positive_int,
        default=DEFAULT_SAMPLE,
        metavar="N",
        help=f"states decoded per workflow without --full (default: {DEFAULT_SAMPLE})",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


@command("check", options)
def check_command(args: argparse.Namespace) -> int:
    """Compare an engine's workflows with the live rows: exit 1 if a deploy would strand any."""
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules of the working directory import
    engine = load_engine(args.target)
    dsn = resolve_dsn(args.dsn or engine.dsn)
    try:
        report = asyncio.run(check_engine(engine, full=args.full, sample=args.sample, dsn=dsn))
    except (ConfigError, OSError, TimeoutError, asyncpg.PostgresError) as exc:
        if isinstance(exc, ConfigError) and dsn is None:
            raise  # no database given at all: a usage error
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, OSError | TimeoutError):
            reason = f"cannot reach the database: {reason}"
        print(f"gendurable check: error: {_redact(reason, dsn)}", file=sys.stderr)
        return EXIT_STRANDS
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        for problem in report.problems:
            print(problem)
        for upgrade in report.upgrades:  # information: these rows are fine
            print(upgrade)
        print(report.summary())
    return 0 if report.ok else EXIT_STRANDS


def _redact(message: str, dsn: str | None) -> str:
    """`message` without the DSN's password, should a driver ever echo it."""
    password = urlsplit(dsn).password if dsn and "://" in dsn else None
    return message.replace(password, "***") if password else message
