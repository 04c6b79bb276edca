"""Schedules on the command line: `schedules` lists them, `schedules pause|resume NAME`.

The list reads only the database: each schedule's definition in words (stored by the engine
that declared it, so neither the code nor the cron library is needed here), its next and
last tick, and the last tick's instance with its status.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec

from ..db.rows import StoredSchedule
from ..db.schedule_store import ScheduleStore
from ..errors import ConfigError, NoTarget
from ..workflow_records import did_you_mean
from .command import EXIT_OK, command, database_options, json_option
from .output import print_json, table, when
from .session import open_store

_decode = msgspec.json.Decoder()


def _schedule_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "action",
        nargs="?",
        choices=["pause", "resume"],
        help="pause or resume schedule NAME (without it: list the schedules)",
    )
    parser.add_argument("name", nargs="?", metavar="NAME", help="the schedule to act on")


@command("schedules", database_options, json_option, _schedule_options)
def schedules_command(args: argparse.Namespace) -> int:
    """List schedules (their cron in words, next and last tick, last instance); pause, resume.

    `gendurable schedules` lists every schedule an engine declared in the schema;
    `gendurable schedules pause NAME` stops its ticks on every engine until
    `gendurable schedules resume NAME`, which starts it again from now (the ticks that came
    due while it was paused do not run). `--json` prints a list of objects: "name",
    "workflow", "schedule" (in words), "cron", "tz", "every" (seconds), "missed",
    "catch_up", "next_at", "last_at", "last_instance" ({"id", "key", "status"} or null),
    "paused", "disabled_at" (set when no running engine declares it any more),
    "declared_by", "refreshed_at".
    """
    if args.action is not None and args.name is None:
        raise ConfigError(f"`schedules {args.action}` needs the schedule's NAME")
    return asyncio.run(_schedules(args))


async def _schedules(args: argparse.Namespace) -> int:
    async with open_store(args) as store:
        schedules = ScheduleStore(store.db)
        if args.action is not None:
            row = await schedules.schedule_pause(
                name=args.name, paused=args.action == "pause", now=None
            )
            if row is None:
                names = [r.name for r in await schedules.schedules_list()]
                raise NoTarget(f"no schedule named {args.name!r}" + did_you_mean(args.name, names))
            state = "paused" if row.paused else "resumed (from now)"
            if args.json:
                print_json({"name": row.name, "paused": row.paused})
            else:
                print(f"schedule {row.name!r} ({row.workflow}) {state}")
            return EXIT_OK
        rows = await schedules.schedules_list()
    if args.json:
        print_json([schedule_json(r) for r in rows])
    else:
        print(schedules_table(rows))
    return EXIT_OK


def schedule_json(row: StoredSchedule) -> dict[str, Any]:
    """One schedule as the `--json` list (and the dashboard) show it."""
    spec = _decode.decode(row.spec)
    last = (
        None
        if row.last_instance_id is None
        else {"id": row.last_instance_id, "key": row.last_key, "status": row.last_status}
    )
    return {
        "name": row.name,
        "workflow": row.workflow,
        "schedule": spec.get("description"),
        "cron": spec.get("cron"),
        "tz": spec.get("tz"),
        "every": spec.get("every"),
        "missed": spec.get("missed"),
        "catch_up": spec.get("catch_up"),
        "next_at": row.next_at,
        "last_at": row.last_at,
        "last_instance": last,
        "paused": row.paused,
        "disabled_at": row.disabled_at,
        "declared_by": row.declared_by,
        "refreshed_at": row.refreshed_at,
    }


def state_word(row: StoredSchedule) -> str:
    """`active`, `paused`, or `disabled` (no running engine declares it)."""
    if row.disabled_at is not None:
        return "disabled"
    return "paused" if row.paused else "active"


def schedules_table(rows: Sequence[StoredSchedule]) -> str:
    """The schedules as a table."""
    if not rows:
        return "no schedules"
    return table(
        ["NAME", "WORKFLOW", "SCHEDULE", "STATE", "NEXT TICK", "LAST TICK", "LAST INSTANCE"],
        [
            [
                r.name,
                r.workflow,
                _decode.decode(r.spec).get("description", ""),
                state_word(r),
                "" if r.paused or r.disabled_at else when(r.next_at),
                when(r.last_at),
                ""
                if r.last_instance_id is None
                else f"{r.last_instance_id} {r.last_status or '(collected)'}",
            ]
            for r in rows
        ],
    )
