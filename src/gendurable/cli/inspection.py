"""Looking at instances: `status` (counts, queues, nodes), `ls` (a page) and `show` (one)."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from ..attempts import attempt_of, error_where
from ..blocked import BlockedBy
from ..db.queue_store import QueueStore
from ..db.rows import (
    CountedChild,
    ExplainedInstance,
    InboxSignal,
    LiveNode,
    QueuePaused,
    QueueResumed,
    StatusCount,
    StoredPause,
)
from ..durations import format_duration
from ..errors import NoTarget
from ..records import ALL_STATUSES, TERMINAL_STATUSES
from ..workflow_records import unknown_workflow
from .command import EXIT_OK, command, database_options, json_option, positive_int, target_options
from .output import UserError, compact_json, fields, print_json, raw_json, table, when
from .session import find_instance, open_store

CHILDREN_SHOWN = 20
"""How many children `show` lists (their total count is always given)."""

_decode = msgspec.json.Decoder()


# -- status ---------------------------------------------------------------------------------


def _status_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", action="store_true", help="list only the live nodes (engines)")


@command("status", database_options, json_option, _status_options)
def status_command(args: argparse.Namespace) -> int:
    """Instances by workflow, status and queue; how far each queue is behind; live nodes.

    Paused queues (`gendurable pause`) are marked, with since when and by whom.
    `--json` prints a list of {"workflow", "status", "queue", "count", "oldest_due_seconds",
    "queue_paused"} objects (`oldest_due_seconds` is null except for available rows that
    are due); with `--nodes`, a list of the live nodes.
    """
    return asyncio.run(_status(args))


async def _status(args: argparse.Namespace) -> int:
    async with open_store(args) as store:
        counts = await store.status_counts(now=None)
        nodes = await store.nodes_live(now=None)
        pauses = {p.queue: p for p in await QueueStore(store.db).queue_pauses()}
    if args.nodes:
        if args.json:
            print_json([_node_json(n) for n in nodes])
        else:
            print(_nodes_table(nodes))
        return EXIT_OK
    if args.json:
        print_json(
            [
                {
                    "workflow": r.workflow,
                    "status": r.status,
                    "queue": r.queue,
                    "count": r.count,
                    "oldest_due_seconds": None
                    if r.oldest_due is None
                    else (r.now - r.oldest_due).total_seconds(),
                    "queue_paused": r.queue in pauses,
                }
                for r in counts
            ]
        )
        return EXIT_OK
    print(_counts_table(counts))
    print()
    print(_queues_table(counts, nodes, pauses))
    print()
    print(_nodes_table(nodes))
    return EXIT_OK


def _counts_table(counts: Sequence[StatusCount]) -> str:
    if not counts:
        return "no instances"
    grid: dict[tuple[str, str], dict[str, int]] = {}
    for r in counts:
        grid.setdefault((r.workflow, r.queue), {})[r.status] = r.count
    rows = [[wf, q, *(by.get(s, 0) for s in ALL_STATUSES)] for (wf, q), by in grid.items()]
    return table(["workflow", "queue", *ALL_STATUSES], rows)


def _queues_table(
    counts: Sequence[StatusCount], nodes: Sequence[LiveNode], pauses: Mapping[str, StoredPause]
) -> str:
    """Per queue: due rows, the age of the oldest, the live engines running it, and
    whether it is paused (since when, by whom)."""
    due: dict[str, list[Any]] = {}
    for r in counts:
        due.setdefault(r.queue, [0, None])
        if r.oldest_due is not None:
            entry = due[r.queue]
            entry[0] += r.count
            behind = r.now - r.oldest_due
            entry[1] = behind if entry[1] is None else max(entry[1], behind)
    served: dict[str, list[int]] = {}
    for n in nodes:
        for queue, concurrency in _decode.decode(n.queues).items():
            served.setdefault(queue, []).append(int(concurrency))
    rows = []
    for queue in sorted(set(due) | set(served) | set(pauses)):
        available, behind = due.get(queue, [0, None])
        engines = served.get(queue, [])
        pause = pauses.get(queue)
        rows.append(
            [
                queue,
                available,
                format_duration(behind, approximate=True),
                len(engines),
                sum(engines) if engines else "none: nothing runs this queue",
                "" if pause is None else paused_text(pause),
            ]
        )
    if not rows:
        return "no queues"
    return table(["queue", "due", "oldest due", "engines", "slots", "paused"], rows)


def paused_text(pause: StoredPause | QueuePaused | QueueResumed) -> str:
    """`since <when> by <who>`: a pause as `status` shows it."""
    return f"since {when(pause.paused_at)} by {pause.paused_by}"


def _nodes_table(nodes: Sequence[LiveNode]) -> str:
    if not nodes:
        return "no live nodes: no engine is running on this schema"
    rows = []
    for n in nodes:
        queues = _decode.decode(n.queues)
        workflows = _decode.decode(n.workflows)
        rows.append(
            [
                n.name,
                n.host,
                n.pid,
                ", ".join(f"{q}={c}" for q, c in queues.items()) or "(client only)",
                ", ".join(workflows),
                n.version,
                when(n.started_at),
                f"{format_duration(n.silent_for, approximate=True)} ago",
            ]
        )
    headers = ["node", "host", "pid", "queues", "workflows", "version", "started", "last seen"]
    return f"live nodes\n{table(headers, rows)}"


def _node_json(n: LiveNode) -> dict[str, Any]:
    return {
        "id": n.id,
        "name": n.name,
        "host": n.host,
        "pid": n.pid,
        "schema": n.schema,
        "queues": raw_json(n.queues),
        "workflows": raw_json(n.workflows),
        "version": n.version,
        "heartbeat_seconds": n.heartbeat,
        "started_at": n.started_at,
        "last_seen": n.last_seen,
    }


# -- ls -------------------------------------------------------------------------------------


def _ls_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workflow", metavar="NAME", help="only this workflow")
    parser.add_argument(
        "--status",
        action="append",
        choices=ALL_STATUSES,
        help="only this status (repeat for several)",
    )
    parser.add_argument("--queue", metavar="NAME", help="only this queue")
    parser.add_argument("--key-prefix", metavar="PREFIX", help="only keys starting with PREFIX")
    parser.add_argument(
        "--after",
        metavar="ID",
        type=positive_int,
        help="continue after this id (the last id of the previous page)",
    )
    parser.add_argument(
        "--limit", type=positive_int, default=50, help="rows per page (default: 50, at most 1000)"
    )


@command("ls", database_options, json_option, _ls_options)
def ls_command(args: argparse.Namespace) -> int:
    """List instances, newest first, a page at a time (`--after ID` for the next page)."""
    args.limit = min(args.limit, 1000)
    return asyncio.run(_ls(args))


async def _ls(args: argparse.Namespace) -> int:
    async with open_store(args) as store:
        rows = await store.instances_list(
            workflow=args.workflow,
            statuses=args.status,
            queue=args.queue,
            key_prefix=args.key_prefix,
            before_id=args.after,
            limit=args.limit,
        )
        # An empty page for a name nothing knows is a typo, not an empty workflow.
        unknown = None
        if not rows and args.workflow is not None:
            unknown = await unknown_workflow(store, args.workflow)
    if unknown is not None:
        raise UserError(unknown)
    if args.json:
        print_json([msgspec.structs.asdict(r) for r in rows])
        return EXIT_OK
    if not rows:
        print("no instances" + (" after that id" if args.after else ""))
        return EXIT_OK
    headers = ["id", "workflow", "key", "status", "step", "attempt", "queue", "run at", "updated"]
    print(
        table(
            headers,
            [
                [
                    r.id,
                    r.workflow,
                    r.key,
                    r.status,
                    r.step,
                    r.attempt,
                    r.queue,
                    r.run_at,
                    r.updated_at,
                ]
                for r in rows
            ],
        )
    )
    if len(rows) == args.limit:
        print(f"\nmore: add --after {rows[-1].id}")
    return EXIT_OK


# -- show -----------------------------------------------------------------------------------


@command("show", database_options, json_option, target_options)
def show_command(args: argparse.Namespace) -> int:
    """Everything about one instance: state, inbox, children, error, and why it waits."""
    return asyncio.run(_show(args))


async def _show(args: argparse.Namespace) -> int:
    async with open_store(args) as store:
        found = await find_instance(store, args)
        row = await store.instance_explain(id=found.id, now=None)
        if row is None:
            raise NoTarget(f"instance {found.id} no longer exists")
        inbox = await store.inbox_load(ids=[found.id])
        children = await store.children_list(parent_id=found.id, limit=CHILDREN_SHOWN)
    blocked = BlockedBy.from_columns(row.blocked_reason, row.blocked_until, row.blocked_detail)
    if args.json:
        print_json(_show_json(row, blocked, inbox, children))
    else:
        print(_show_text(row, blocked, inbox, children))
    return EXIT_OK


def _show_json(
    row: ExplainedInstance,
    blocked: BlockedBy | None,
    inbox: Sequence[InboxSignal],
    children: Sequence[CountedChild],
) -> dict[str, Any]:
    return {
        "id": row.id,
        "key": row.key,
        "workflow": row.workflow,
        "status": row.status,
        "step": row.step,
        "attempt": row.attempt,
        "max_attempts": row.max_attempts,
        "queue": row.queue,
        "priority": row.priority,
        "run_at": row.run_at,
        "concurrency_key": row.concurrency_key,
        "rate_limit": row.rate_limit,
        "rate_partition": row.rate_partition,
        "parent_id": row.parent_id,
        "locked_by": row.locked_by,
        "locked_until": row.locked_until,
        "inserted_at": row.inserted_at,
        "updated_at": row.updated_at,
        "finished_at": row.finished_at,
        "state": raw_json(row.state),
        "state_version": row.state_version,
        "result": raw_json(row.result),
        "error": raw_json(row.error),
        "inbox": [
            {
                "id": s.id,
                "name": s.name,
                "payload": raw_json(s.payload),
                "received_at": s.received_at,
            }
            for s in inbox
        ],
        "children": {
            "total": children[0].total if children else 0,
            "pending": row.pending_children,
            "first": [
                {
                    "id": c.id,
                    "workflow": c.workflow,
                    "key": c.key,
                    "status": c.status,
                    "step": c.step,
                }
                for c in children
            ],
        },
        "blocked_by": None
        if blocked is None
        else {
            "reason": blocked.reason,
            "until": blocked.until,
            "detail": blocked.detail,
            "text": str(blocked),
        },
    }


def _show_text(
    row: ExplainedInstance,
    blocked: BlockedBy | None,
    inbox: Sequence[InboxSignal],
    children: Sequence[CountedChild],
) -> str:
    status = row.status
    pairs: list[tuple[str, Any]] = [
        ("id", row.id),
        ("key", row.key or "(none)"),
        ("workflow", row.workflow),
        ("status", status),
        ("step", row.step),
        ("attempt", attempt_of(row.attempt, row.max_attempts)),
        ("queue", f"{row.queue} (priority {row.priority})"),
    ]
    if status == "executing":
        pairs.append(("running", f"claimed by {row.locked_by} until {when(row.locked_until)}"))
    elif status in TERMINAL_STATUSES:
        pairs.append(("finished", when(row.finished_at)))
    else:
        pairs.append(("blocked by", str(blocked) if blocked else "nothing"))
    for label, value in (
        ("concurrency key", row.concurrency_key),
        ("rate limit", row.rate_limit),
        ("parent id", row.parent_id),
    ):
        if value is not None:
            pairs.append((label, value))
    pairs += [
        ("run at", when(row.run_at)),
        ("inserted", when(row.inserted_at)),
        ("updated", when(row.updated_at)),
        ("state", compact_json(row.state)),
    ]
    if row.state_version != 1:  # written by `@gd.workflow(version=N)`: as stored, not upgraded
        pairs.append(("state version", row.state_version))
    if row.result is not None:
        pairs.append(("result", compact_json(row.result)))
    if inbox:
        pairs.append(
            (
                "inbox",
                table(
                    ["signal", "name", "received", "payload"],
                    [[s.id, s.name, s.received_at, compact_json(s.payload)] for s in inbox],
                ),
            )
        )
    else:
        pairs.append(("inbox", "(empty)"))
    if children:
        total = children[0].total
        shown = table(
            ["id", "workflow", "key", "status", "step"],
            [[c.id, c.workflow, c.key, c.status, c.step] for c in children],
        )
        more = f"\n... and {total - len(children)} more" if total > len(children) else ""
        pairs.append((f"children ({total}, {row.pending_children} pending)", shown + more))
    if row.error is not None:
        pairs.append(("error", _error_text(row.error, row.step, row.max_attempts)))
    return fields(pairs)


def _error_text(data: bytes, step: str, max_attempts: int) -> str:
    error = _decode.decode(data)
    if not isinstance(error, dict):
        return compact_json(data)
    head = f"{error.get('type', 'error')}: {error.get('message', '')}"
    where = error_where(error, step=step, max_attempts=max_attempts)
    where = f" ({where})" if where else ""
    traceback = error.get("traceback")
    return head + where + (f"\n{traceback.rstrip()}" if traceback else "")
