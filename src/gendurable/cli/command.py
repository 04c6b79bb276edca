"""The registry of subcommands and the options they share.

A subcommand is a function registered with `@command(name, *options)`: the first line of
its docstring is the help text, each option is a small function that adds arguments to its
parser, and it returns the exit code. Modules of commands register on import; the package
(`gendurable.cli`) imports every group and builds the parser from the registry.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from ..db.connect import DSN_ENV, resolve_dsn
from ..errors import ConfigError

Option = Callable[[argparse.ArgumentParser], None]
Handler = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_ERROR = 1
"""A user's mistake or a failure outside the command: unreachable server, unknown key..."""
EXIT_USAGE = 2
"""Wrong arguments (argparse's own code)."""
EXIT_INTERRUPTED = 130

DEFAULT_SCHEMA = "gendurable"


@dataclass(frozen=True, slots=True)
class Command:
    """One registered subcommand."""

    name: str
    handler: Handler
    options: tuple[Option, ...]


COMMANDS: dict[str, Command] = {}


def command(name: str, *options: Option) -> Callable[[Handler], Handler]:
    """Register `handler` as subcommand `name` taking `options`."""

    def register(handler: Handler) -> Handler:
        if name in COMMANDS:
            raise RuntimeError(f"subcommand {name!r} is registered twice")
        COMMANDS[name] = Command(name, handler, options)
        return handler

    return register


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


def database_options(parser: argparse.ArgumentParser) -> None:
    """`--dsn` and `--schema`: where the instances are."""
    dsn_option(parser)
    schema_option(parser)


def json_option(parser: argparse.ArgumentParser) -> None:
    """`--json`: print JSON for scripts instead of tables."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def target_options(parser: argparse.ArgumentParser) -> None:
    """`KEY_OR_ID`, `--workflow` and `--key`: which instance a command is about."""
    parser.add_argument(
        "target",
        metavar="KEY_OR_ID",
        help="the instance's id (all digits) or business key",
    )
    parser.add_argument(
        "--workflow",
        metavar="NAME",
        help="the workflow of a key (needed when several workflows use the same key)",
    )
    parser.add_argument(
        "--key",
        action="store_true",
        help="read KEY_OR_ID as a key even when it is all digits",
    )


def positive_int(text: str) -> int:
    """An option's whole number of at least 1 (`--limit`, `--sample`, `--lock-attempts`...)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number (must be at least 1)")
    return value


def require_dsn(args: argparse.Namespace) -> str:
    """The DSN from `--dsn` or `$GENDURABLE_DSN`; a usage error when there is none."""
    dsn = resolve_dsn(args.dsn)
    if dsn is None:
        raise ConfigError(f"no database: pass --dsn or set {DSN_ENV}")
    return dsn
