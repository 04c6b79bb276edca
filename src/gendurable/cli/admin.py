"""Administration: `migrate` the schema, run a `dev` server, run a `worker`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from datetime import timedelta

from ..db.connect import DATABASE_ERRORS, DSN_ENV, check_dsn, describe_failure, resolve_dsn
from ..db.migrator import DEFAULT_LOCK_ATTEMPTS, DEFAULT_LOCK_TIMEOUT, migrate
from ..embedded import EmbeddedPostgres
from ..errors import ConfigError
from ..loader import load_engine
from ..sql import quote_schema
from .command import EXIT_OK, command, dsn_option, positive_int, require_dsn, schema_option
from .output import UserError
from .runner import LOG_LEVELS, configure_logging, serve


def _lock_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=DEFAULT_LOCK_TIMEOUT,
        metavar="SECONDS",
        help="how long a statement waits for a table lock before the migration gives up and "
        f"tries again (default: {DEFAULT_LOCK_TIMEOUT.total_seconds():g})",
    )
    parser.add_argument(
        "--lock-attempts",
        type=positive_int,
        default=DEFAULT_LOCK_ATTEMPTS,
        metavar="N",
        help=f"tries before giving up, with a growing pause between them "
        f"(default: {DEFAULT_LOCK_ATTEMPTS})",
    )


def _seconds(text: str) -> timedelta:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0.001:
        raise argparse.ArgumentTypeError(f"{text} is not at least 0.001 seconds")
    return timedelta(seconds=value)


@command("migrate", dsn_option, schema_option, _lock_options)
def migrate_command(args: argparse.Namespace) -> int:
    """Create or upgrade the schema (safe to run from many processes at once, and beside
    running engines).

    Refuses a database whose applied migrations differ from the packaged ones. Each
    statement waits at most --lock-timeout for a table lock, then the migration is tried
    again after a pause, --lock-attempts times in all. Run it against the database itself,
    not through a transaction-mode pooler.
    """

    quote_schema(args.schema)  # a bad name is refused before the DSN is even looked at
    dsn = require_dsn(args)
    check_dsn(dsn)
    try:
        version = asyncio.run(
            migrate(
                dsn,
                schema=args.schema,
                lock_timeout=args.lock_timeout,
                lock_attempts=args.lock_attempts,
            )
        )
    except ConfigError as exc:  # what the database holds, not how the command was called
        raise UserError(str(exc)) from None
    print(f"schema {args.schema!r} is at version {version}")
    return EXIT_OK


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
    return EXIT_OK


def _worker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("target", metavar="MODULE:ENGINE", help="where the Engine is defined")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds running steps get to finish after SIGTERM/SIGINT (default: 30)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="warning",
        help="log to stderr from this level on (default: warning: every step failure and "
        "database outage in one line each; debug adds their tracebacks)",
    )


@command("worker", _worker_options)
def worker_command(args: argparse.Namespace) -> int:
    """Run an engine's queues until SIGTERM/SIGINT, then drain gracefully."""

    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules of the working directory import
    engine = load_engine(args.target)  # a bad MODULE:ENGINE is a usage error
    configure_logging(args.log_level)  # after the import: the app's own logging setup wins
    try:
        asyncio.run(serve(engine, drain_timeout=args.drain_timeout))
    except ConfigError as exc:  # raised by the engine at start (a schema never migrated...)
        raise UserError(str(exc)) from None
    except DATABASE_ERRORS as exc:
        raise UserError(describe_failure(exc, resolve_dsn(engine.dsn))) from None
    return EXIT_OK


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
