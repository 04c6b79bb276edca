"""The `gendurable` command line (`gendurable ...` or `python -m gendurable ...`).

One module per group of subcommands, each registering its commands on import:
`admin` (migrate, dev, worker), `inspection` (status, ls, show), `act` (start, signal,
cancel, retry), `queues` (pause, resume), `schedules` (list, pause, resume), `docs`
(generated workflow pages), `check` (the deploy check) and `web` (the dashboard). A new
group is a module whose functions use `@command(...)`, imported below and listed in
`GROUPS` (which orders the help).
Shared pieces: `command` (the registry and common options), `output` (tables, JSON,
one-line errors) and `session` (the database connection and instance lookup).

Exit codes: 0 success; 1 a user's mistake or an outside failure (unreachable server,
refused login, missing schema, unknown key...), reported in one line on stderr; 2 wrong
arguments, with the usage; 130 interrupted. No output ever holds a DSN's password.
"""

from __future__ import annotations

import argparse
import inspect
import os
import sys
import traceback
from collections.abc import Sequence

from ..db.connect import DATABASE_ERRORS, DSN_ENV, describe_failure, redact, resolve_dsn
from ..errors import ConfigError, GenDurableError
from ..version import __version__
from . import act, admin, check, docs, inspection, queues, schedules, web
from .command import COMMANDS, EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, Handler
from .output import UserError, error_line

GROUPS = (admin, inspection, act, queues, schedules, docs, check, web)
"""The modules whose commands the parser offers (each registered its own on import)."""

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="gendurable", description="Durable workflows on PostgreSQL."
    )
    parser.add_argument(
        "--version", action="version", version=f"gendurable {__version__}", help="print the version"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    rank = {group.__name__: i for i, group in enumerate(GROUPS)}
    ordered = sorted(COMMANDS.values(), key=lambda c: rank.get(c.handler.__module__, len(rank)))
    for cmd in ordered:
        doc = inspect.cleandoc(cmd.handler.__doc__ or "").splitlines()
        # The first paragraph, however many lines it was wrapped to.
        summary = " ".join(doc[: doc.index("")] if "" in doc else doc) or None
        sub = subparsers.add_parser(
            cmd.name,
            help=summary,
            description="\n".join(doc) or None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for option in cmd.options:
            option(sub)
        sub.set_defaults(handler=cmd.handler, parser=sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: `sys.argv[1:]`); returns the exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    dsns = [getattr(args, "dsn", None), os.environ.get(DSN_ENV)]

    def fail(message: str) -> None:
        print(redact(error_line(args.command, message), dsns), file=sys.stderr)

    try:
        return handler(args)
    except ConfigError as exc:  # a wrong argument, found before anything ran
        args.parser.print_usage(sys.stderr)
        fail(str(exc))
        return EXIT_USAGE
    except (UserError, GenDurableError) as exc:
        fail(str(exc))
        return EXIT_ERROR
    except DATABASE_ERRORS as exc:
        fail(describe_failure(exc, resolve_dsn(getattr(args, "dsn", None))))
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception:  # a bug: keep the traceback for the report, never a password
        print(redact(traceback.format_exc(), dsns), file=sys.stderr, end="")
        return EXIT_ERROR
