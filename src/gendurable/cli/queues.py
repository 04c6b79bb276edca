"""Queues on the command line: `pause QUEUE` and `resume QUEUE`, for every engine at once.

The same statements as `Engine.pause` and `resume`: the pause is stored in the schema and
exact (once `pause` has printed, no engine starts a new step of the queue), and it lasts
until `resume`, across restarts. `gendurable status` marks the paused queues.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import socket
from typing import Any

import msgspec

from ..db.operator_store import OperatorStore
from ..db.queue_store import QueueStore
from ..db.rows import QueuePaused, QueueResumed
from ..engine.pauses import check_queue
from ..errors import ConfigError, ValidationError
from .command import EXIT_OK, command, database_options, json_option
from .inspection import paused_text
from .output import print_json
from .session import open_store

_decode = msgspec.json.Decoder()


def _queue_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queue", metavar="QUEUE", help="the queue's name")


def _pause_options(parser: argparse.ArgumentParser) -> None:
    _queue_option(parser)
    parser.add_argument(
        "--by",
        metavar="WHO",
        help="who pauses it, shown by `status` and the dashboard (default: the user and host)",
    )


def _checked(queue: str) -> str:
    try:
        return check_queue(queue)
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None


@command("pause", database_options, json_option, _pause_options)
def pause_command(args: argparse.Namespace) -> int:
    """Pause a queue on every engine: running steps finish, no new step starts until resume.

    Starts, signals and timers of the queue are still accepted and stored; its waiting
    instances say `paused` (`gendurable show`). The pause is stored in the schema: it lasts
    across restarts until `gendurable resume QUEUE`. Pausing a paused queue changes nothing.
    `--json` prints {"queue", "paused" (false when it was paused already), "paused_at",
    "paused_by"}.
    """
    queue = _checked(args.queue)
    by = args.by if args.by else _default_by()
    return asyncio.run(_pause(args, queue, by))


async def _pause(args: argparse.Namespace, queue: str, by: str) -> int:
    async with open_store(args) as store:
        row = await QueueStore(store.db).queue_pause(queue=queue, by=by, now=None)
        served = await _served(store)
    if args.json:
        print_json({"queue": queue, "paused": row.paused, **_since(row)})
        return EXIT_OK
    since = paused_text(row)
    if row.paused:
        print(f"paused queue {queue!r} ({since}): no engine starts a new step of it until")
        print(f"`gendurable resume {queue}`")
    else:
        print(f"queue {queue!r} was paused already ({since}); nothing changed")
    if queue not in served:
        running = ", ".join(sorted(served)) or "none"
        print(f"note: no live engine runs queue {queue!r} (the live engines run: {running})")
    return EXIT_OK


@command("resume", database_options, json_option, _queue_option)
def resume_command(args: argparse.Namespace) -> int:
    """Resume a paused queue on every engine: its due instances run again at once.

    Resuming a queue that is not paused changes nothing. `--json` prints {"queue",
    "resumed" (false when it was not paused), "paused_at", "paused_by"} (the last two of
    the pause it ended, else null).
    """
    queue = _checked(args.queue)
    return asyncio.run(_resume(args, queue))


async def _resume(args: argparse.Namespace, queue: str) -> int:
    async with open_store(args) as store:
        row = await QueueStore(store.db).queue_resume(queue=queue)
    if args.json:
        if row is None:
            print_json({"queue": queue, "resumed": False, "paused_at": None, "paused_by": None})
        else:
            print_json({"queue": queue, "resumed": True, **_since(row)})
        return EXIT_OK
    if row is None:
        print(f"queue {queue!r} was not paused; nothing changed")
    else:
        print(f"resumed queue {queue!r} (paused {paused_text(row)})")
    return EXIT_OK


def _since(row: QueuePaused | QueueResumed) -> dict[str, Any]:
    return {"paused_at": row.paused_at, "paused_by": row.paused_by}


async def _served(store: OperatorStore) -> set[str]:
    """The queues the live engines run."""
    served: set[str] = set()
    for node in await store.nodes_live(now=None):
        served.update(_decode.decode(node.queues))
    return served


def _default_by() -> str:
    """`gendurable pause (<user>@<host>)`: who paused, as far as this process can tell."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (a container)
        user = "?"
    return f"gendurable pause ({user}@{socket.gethostname()})"
