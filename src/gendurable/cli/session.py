"""A command's database session: one small pool on `--dsn`/`--schema`, and instance lookup.

Opening checks the schema before any command runs, so an unreachable server, a refused
login or a schema that was never migrated is reported in one line (exit 1) instead of a
traceback. The CLI never waits out an outage: a failed statement fails the command.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from ..db.connect import DATABASE_ERRORS, check_dsn, describe_failure
from ..db.migrator import check_version
from ..db.operator_store import OperatorStore
from ..db.pool import Database
from ..errors import ConfigError, NoTarget
from ..sql import quote_schema
from ..workflow_records import did_you_mean, known_workflows
from .command import require_dsn
from .output import UserError

CONNECT_TIMEOUT = 10.0
"""Seconds a command waits for the server to answer before reporting it unreachable."""


@asynccontextmanager
async def open_store(args: argparse.Namespace) -> AsyncIterator[OperatorStore]:
    """An OperatorStore on the command's database and schema, closed on exit.

    Wrong arguments (no DSN, a malformed one, an invalid schema name) raise `ConfigError`
    before connecting; a failure to connect or a missing schema raises `UserError`.
    """
    quote_schema(args.schema)
    dsn = require_dsn(args)
    check_dsn(dsn)
    try:
        db = await Database.open(dsn, args.schema, min_size=1, max_size=2, timeout=CONNECT_TIMEOUT)
    except ValueError as exc:  # asyncpg's DSN parser
        raise ConfigError(f"invalid dsn: {exc}") from None
    except DATABASE_ERRORS as exc:
        raise UserError(describe_failure(exc, dsn)) from None
    db.retry_for = 0.0
    try:
        async with db.pool.acquire() as conn:
            try:
                await check_version(conn, schema=args.schema)
            except ConfigError as exc:  # a schema never migrated: the user's to fix, not usage
                raise UserError(str(exc)) from None
        yield OperatorStore(db)
    finally:
        await db.close(grace=2.0)


@dataclass(frozen=True, slots=True)
class Found:
    """The instance a command is about."""

    id: int
    workflow: str
    status: str


async def find_instance(store: OperatorStore, args: argparse.Namespace) -> Found:
    """The instance `args.target` names (an id, or a key within `--workflow` if given).

    A key names the live instance holding it, else the latest that had it. A key used by
    several workflows needs `--workflow`. Raises `NoTarget` when nothing matches (suggesting
    a known workflow when `--workflow` names none, such as one in the wrong case).
    """
    target: str = args.target
    workflow: str | None = args.workflow
    if target.isdigit() and not args.key:
        row = await store.instance_by_id(id=int(target))
        if row is None:
            raise NoTarget(f"no instance with id {target} (pass --key if {target} is a key)")
        if workflow is not None and row.workflow != workflow:
            raise NoTarget(f"instance {target} is a {row.workflow}, not a {workflow}")
        return Found(row.id, row.workflow, row.status)
    if workflow is not None:
        row = await store.instance_by_key(workflow=workflow, key=target)
        if row is None:
            raise NoTarget(
                f"no {workflow} instance with key {target!r}"
                + await _workflow_hint(store, workflow)
            )
        return Found(row.id, row.workflow, row.status)
    rows = await store.instances_with_key(key=target)
    if not rows:
        raise NoTarget(f"no instance with key {target!r}")
    if len(rows) > 1:
        names = ", ".join(r.workflow for r in rows)
        raise UserError(f"key {target!r} is used by workflows {names}: pass --workflow NAME")
    return Found(rows[0].id, rows[0].workflow, rows[0].status)


async def _workflow_hint(store: OperatorStore, workflow: str) -> str:
    """A suggestion when no live node and no row knows `workflow` ('' when one does)."""
    known = await known_workflows(store)
    if workflow in known:
        return ""
    return did_you_mean(workflow, known) or f" (no workflow {workflow!r} is known)"
