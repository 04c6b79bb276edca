"""The `gendurable` command line.

Each subcommand is one function registered with `@command(name, *options)`: its docstring's
first line is the help text, the options are small functions that add arguments, and it
returns the exit code. `main()` turns a `ConfigError` into exit code 2 with the message.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from . import check_command, docs_command
from .db.connect import DSN_ENV, resolve_dsn
from .db.migrator import migrate
from .embedded import EmbeddedPostgres
from .errors import ConfigError
from .sql import quote_schema
from .worker import run as run_worker

Option = Callable[[argparse.ArgumentParser], None]
Handler = Callable[[argparse.Namespace], int]

EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130
DEFAULT_SCHEMA = "gendurable"


@dataclass(frozen=True, slots=True)
class _Command:
    name: str
    handler: Handler
    options: tuple[Option, ...]


_COMMANDS: dict[str, _Command] = {}


def command(name: str, *options: Option) -> Callable[[Handler], Handler]:
    """Register `handler` as subcommand `name` taking `options`."""

    def register(handler: Handler) -> Handler:
        if name in _COMMANDS:
            raise RuntimeError(f"subcommand {name!r} is registered twice")
        _COMMANDS[name] = _Command(name, handler, options)
        return handler

    return register


# --- options shared by subcommands -----------------------------------------------------------


def dsn_option(parser: argparse.ArgumentParser) -> None:
    """`--dsn`, defaulting to `$GENDURABLE_DSN`."""
    parser.add_argument(
        "--dsn",
        default=None,
        help=f"PostgreSQL URL, postgresql://user@host:5432/db (default: ${DSN_ENV})",
    )


def schema_option(parser: argparse.ArgumentParser) -> None:
    """`--schema`, defaulting to `gendurable`."""
    parser.add_argument(
        "--schema",
        default=DEFAULT_SCHEMA,
        help=f"the engine's PostgreSQL schema (default: {DEFAULT_SCHEMA})",
    )


def _require_dsn(args: argparse.Namespace) -> str:
    dsn = resolve_dsn(args.dsn)
    if dsn is None:
        raise ConfigError(f"no database: pass --dsn or set {DSN_ENV}")
    return dsn


# --- subcommands -----------------------------------------------------------------------------


@command("migrate", dsn_option, schema_option)
def migrate_command(args: argparse.Namespace) -> int:
    """Create or upgrade the schema (safe to run from many processes at once)."""

    quote_schema(args.schema)  # a bad name is refused before the DSN is even looked at
    version = asyncio.run(migrate(_require_dsn(args), schema=args.schema))
    print(f"schema {args.schema!r} is at version {version}")
    return 0


@command("dev", schema_option)
def dev_command(args: argparse.Namespace) -> int:
    """Run a throwaway embedded PostgreSQL with the schema migrated, until Ctrl-C."""

    quote_schema(args.schema)
    with EmbeddedPostgres() as server:
        version = asyncio.run(migrate(server.dsn, schema=args.schema))
        print(f"{DSN_ENV}={server.dsn}")
        print(f"schema {args.schema!r} is at version {version}; Ctrl-C stops the server")
        sys.stdout.flush()
        _wait_for_stop_signal()
    print("stopped")
    return 0


def _target_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="MODULE:ENGINE", help="where the Engine is defined")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds running steps get to finish after SIGTERM/SIGINT (default: 30)",
    )


@command("worker", _target_option)
def worker_command(args: argparse.Namespace) -> int:
    """Run an engine's queues until SIGTERM/SIGINT, then drain gracefully."""

    return run_worker(args.target, drain_timeout=args.drain_timeout)


command("docs", docs_command.options)(docs_command.run)
command("check", check_command.options)(check_command.run)


def _wait_for_stop_signal() -> None:
    """Block until SIGINT or SIGTERM arrives, and consume it."""
    # Blocked only while waiting: processes spawned earlier (the server) must not inherit a
    # mask that hides their stop signals.
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    try:
        signal.sigwait(stop_signals)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


# --- entry point -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    parser = argparse.ArgumentParser(
        prog="gendurable", description="Durable workflows on PostgreSQL."
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for cmd in _COMMANDS.values():
        doc = (cmd.handler.__doc__ or "").strip().splitlines()
        summary = doc[0] if doc else None
        sub = subparsers.add_parser(cmd.name, help=summary, description=summary)
        for option in cmd.options:
            option(sub)
        sub.set_defaults(handler=cmd.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default: `sys.argv[1:]`); returns the exit code."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except ConfigError as exc:
        print(f"gendurable {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
