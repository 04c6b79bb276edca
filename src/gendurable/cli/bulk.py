"""The bulk forms of `retry` and `cancel`: every instance a filter matches, a page at a time.

`gendurable retry --workflow W [--status failed] [--step S] [--error-contains TEXT]
[--since 2h] [--key-prefix P] [--queue Q] [--limit N] [--dry-run]` and `gendurable cancel
--workflow W [--status ...] [--step S] [--key-prefix P] [--queue Q] [--limit N] [--dry-run]`
run `gendurable.bulk`: pages of `--batch-size` instances, each one short statement. On a
terminal, progress is written to stderr after each page; the counts go to stdout at the
end (`--json` for scripts). Interrupted (Ctrl-C), a run says how far it got; run again, it
finds only what still matches.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from datetime import timedelta
from typing import TextIO

from ..bulk import CANCEL, MAX_PAGE_SIZE, PAGE_SIZE, REASONS, RETRY, BulkReport, BulkRun
from ..db.repair_store import Match, RepairStore
from ..durations import parse_duration
from ..errors import ConfigError
from ..records import ALL_STATUSES, LIVE_STATUSES
from ..workflow_records import unknown_workflow
from .command import EXIT_OK, positive_int
from .output import UserError, print_json
from .session import open_store

BULK_ONLY = ("status", "error_contains", "since", "key_prefix", "queue", "limit", "dry_run")
"""Options that select many instances: meaningless with a KEY_OR_ID."""


def _page(text: str) -> int:
    size = positive_int(text)
    if size > MAX_PAGE_SIZE:
        raise argparse.ArgumentTypeError(f"at most {MAX_PAGE_SIZE}, got {size}")
    return size


def _since(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def filter_options(action: str, parser: argparse.ArgumentParser) -> None:
    """The options selecting the instances of a bulk `action` (`--step` is the command's)."""
    if action == RETRY:
        statuses: tuple[str, ...] = ("failed",)
        status_help = "only failed instances can be retried (the default)"
    else:
        statuses = LIVE_STATUSES
        status_help = "only instances in this live status (repeat for several; default: all)"
    parser.add_argument(
        "--status", action="append", choices=ALL_STATUSES, metavar="STATUS", help=status_help
    )
    if action == RETRY:
        parser.add_argument(
            "--error-contains",
            metavar="TEXT",
            help="only instances whose error's type or message contains TEXT (any case)",
        )
        parser.add_argument(
            "--since",
            metavar="DURATION",
            type=_since,
            help="only instances that failed within DURATION (30m, 2h, 1d...)",
        )
    parser.add_argument("--key-prefix", metavar="PREFIX", help="only keys starting with PREFIX")
    parser.add_argument("--queue", metavar="NAME", help="only instances of this queue")
    parser.add_argument(
        "--limit", type=positive_int, metavar="N", help="at most N matching instances, oldest first"
    )
    parser.add_argument(
        "--batch-size",
        type=_page,
        default=PAGE_SIZE,
        metavar="N",
        help=f"instances per statement (default: {PAGE_SIZE}, at most {MAX_PAGE_SIZE})",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="count the matching instances; change nothing"
    )
    parser.set_defaults(bulk_statuses=statuses)


def bulk_requested(args: argparse.Namespace) -> bool:
    """Whether `args` ask for the bulk form (no KEY_OR_ID), after checking the options go
    together (`ConfigError` otherwise)."""
    given = [
        "--" + name.replace("_", "-")
        for name in BULK_ONLY
        if getattr(args, name, None) not in (None, False)
    ]
    if args.target is not None:
        if given:
            raise ConfigError(
                f"{', '.join(given)} select many instances: drop KEY_OR_ID, or drop them"
            )
        return False
    if args.workflow is None:
        raise ConfigError("name an instance (KEY_OR_ID), or the instances' --workflow NAME")
    if args.key:
        raise ConfigError("--key reads KEY_OR_ID as a key, and no KEY_OR_ID was given")
    return True


def _match(action: str, args: argparse.Namespace) -> Match:
    chosen: tuple[str, ...] = tuple(dict.fromkeys(args.status or ()))
    able: tuple[str, ...] = args.bulk_statuses
    wrong = [s for s in chosen if s not in able]
    if wrong:
        raise ConfigError(
            "only failed instances can be retried (a cancelled one can be rewound on its own: "
            "gendurable retry KEY_OR_ID --step STEP)"
            if action == RETRY
            else f"only live instances can be cancelled, not {', '.join(wrong)}"
        )
    return Match(
        statuses=chosen or able,
        workflow=args.workflow,
        step=args.step,
        error_contains=getattr(args, "error_contains", None),
        since=getattr(args, "since", None),
        key_prefix=args.key_prefix,
        queue=args.queue,
    )


def run_bulk(action: str, args: argparse.Namespace) -> int:
    """Run the bulk form of `action` (`retry` or `cancel`) that `args` describe."""
    match = _match(action, args)
    return asyncio.run(_bulk(action, args, match))


async def _bulk(action: str, args: argparse.Namespace, match: Match) -> int:
    label = f"{action} {args.workflow}"
    async with open_store(args) as store:
        repairs = RepairStore(store.db)
        if args.dry_run:
            matched = await repairs.instances_matching_count(match, limit=args.limit, now=None)
            report = None
        else:
            progress = Progress(label, sys.stderr) if sys.stderr.isatty() else None
            run = BulkRun(
                repairs, action, match, limit=args.limit, page_size=args.batch_size,
                progress=progress,
            )  # fmt: skip
            try:
                report = await run.run()
            except (asyncio.CancelledError, KeyboardInterrupt):
                interrupted(label, run.report, sys.stderr)
                raise
            finally:
                if progress is not None:
                    progress.close()
            matched = report.matched
        unknown = await unknown_workflow(store, args.workflow) if not matched else None
    if unknown is not None:
        raise UserError(unknown)
    if report is None:
        return _print_dry_run(action, args, matched)
    if args.json:
        print_json({"workflow": args.workflow, "dry_run": False, **report.as_json()})
    else:
        print(f"{label}: {report.summary()}")
        for reason, ids in sorted(report.examples.items()):
            more = report.skipped[reason] - len(ids)
            listed = ", ".join(map(str, ids)) + (f" and {more} more" if more else "")
            print(f"  {REASONS[reason]}: {listed}")
    return EXIT_OK


def _print_dry_run(action: str, args: argparse.Namespace, matched: int) -> int:
    if args.json:
        print_json({"workflow": args.workflow, "dry_run": True, "action": action,
                    "matched": matched})  # fmt: skip
        return EXIT_OK
    noun = "instance matches" if matched == 1 else "instances match"
    capped = f" (--limit {args.limit})" if args.limit is not None else ""
    print(f"{action} {args.workflow}: {matched} {noun}{capped}; nothing was changed (dry run)")
    return EXIT_OK


class Progress:
    """The counts so far, rewritten in place on a terminal after each page."""

    def __init__(self, label: str, stream: TextIO) -> None:
        self.label = label
        self.stream = stream
        self.shown = False

    def __call__(self, report: BulkReport) -> None:
        self.stream.write(f"\r\x1b[K{self.label}: {report.summary()}")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        """End the progress line (the final counts go to stdout)."""
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def interrupted(label: str, report: BulkReport, stream: TextIO) -> None:
    """Say, on `stream`, how far an interrupted run got, and how to finish it."""
    print(
        f"gendurable {label}: interrupted after {report.summary()}; nothing is half done: "
        "run the same command again to go on",
        file=stream,
    )


__all__ = ["CANCEL", "RETRY", "bulk_requested", "filter_options", "run_bulk"]
