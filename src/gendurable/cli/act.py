"""Acting on instances: `signal`, `cancel` and `retry`.

The command line has no workflow classes loaded, so `signal` checks the signal name
against what the live nodes record about the workflow (each engine records, per step, the
signal names it awaits): a name no step declares is refused, and so is any name when no
live engine knows the workflow. `--app MODULE:ENGINE` checks against the code instead, and
then also decodes the payload into its declared type. Either way a missing or terminal
target stores nothing and fails (`NoTarget`, exit 1), as `Flow.signal` does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec

from ..errors import ConfigError, NoTarget
from ..signal_check import check_name_by_nodes, payload_by_code, payload_untyped
from ..spec import WorkflowSpec
from ..worker import load_engine
from .command import EXIT_OK, command, database_options, json_option, target_options
from .output import UserError, print_json
from .session import find_instance, open_store

_decode = msgspec.json.Decoder()


# -- signal ---------------------------------------------------------------------------------


def _signal_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "target", metavar="KEY_OR_ID", help="the instance's id (all digits) or business key"
    )
    parser.add_argument("name", metavar="NAME", help="the signal's name")
    parser.add_argument(
        "payload", metavar="PAYLOAD_JSON", nargs="?", default="null", help="default: null"
    )
    parser.add_argument("--workflow", metavar="NAME", required=True, help="the workflow")
    parser.add_argument(
        "--key", action="store_true", help="read KEY_OR_ID as a key even when it is all digits"
    )
    parser.add_argument(
        "--app",
        metavar="MODULE:ENGINE",
        help="check the name and payload against this engine's workflow code",
    )


@command("signal", database_options, json_option, _signal_options)
def signal_command(args: argparse.Namespace) -> int:
    """Send a signal to a live instance (nothing is stored if it is not live).

    The name must be one a step of the workflow awaits, as recorded by the live engines;
    with --app MODULE:ENGINE it is checked against that code instead, and the payload must
    decode into the type the step declares.
    """
    try:
        payload = _decode.decode(args.payload)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"PAYLOAD_JSON is not valid JSON: {exc}") from None
    spec = _app_spec(args.app, args.workflow) if args.app else None
    return asyncio.run(_signal(args, payload, spec))


def _app_spec(target: str, workflow: str) -> WorkflowSpec:
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules of the working directory import
    engine = load_engine(target)
    spec = engine.specs.get(workflow)
    if spec is None:
        served = ", ".join(sorted(engine.specs))
        raise ConfigError(f"{target} does not serve workflow {workflow!r} (it serves: {served})")
    return spec


async def _signal(args: argparse.Namespace, payload: Any, spec: WorkflowSpec | None) -> int:
    workflow, name = args.workflow, args.name
    async with open_store(args) as store:
        if spec is not None:
            data = payload_by_code(spec, name, payload)
        else:
            await check_name_by_nodes(store, workflow, name)
            data = payload_untyped(name, payload)
        by_id = args.target.isdigit() and not args.key
        row = await store.signal_deliver(
            workflow=workflow,
            id=int(args.target) if by_id else None,
            key=None if by_id else args.target,
            name=name,
            payload=data,
            now=None,
        )
    if row is None:
        address = f"id {args.target}" if by_id else f"key {args.target!r}"
        raise NoTarget(
            f"no live {workflow} instance with {address}; signal {name!r} was not stored"
        )
    if args.json:
        print_json({"signal_id": row.signal_id, "instance_id": row.instance_id, "woke": row.woke})
    else:
        woke = " and woke it" if row.woke else ""
        print(f"signal {name!r} ({row.signal_id}) stored for instance {row.instance_id}{woke}")
    return EXIT_OK


# -- cancel ---------------------------------------------------------------------------------


@command("cancel", database_options, json_option, target_options)
def cancel_command(args: argparse.Namespace) -> int:
    """Cancel a live instance (its inbox is purged, its parent told)."""
    return asyncio.run(_cancel(args))


async def _cancel(args: argparse.Namespace) -> int:
    async with open_store(args) as store:
        found = await find_instance(store, args)
        cascaded = await store.instance_cancel(id=found.id, now=None)
    if cascaded is None:
        raise NoTarget(
            f"{found.workflow} instance {found.id} is {found.status}, not live; "
            "nothing was cancelled"
        )
    if args.json:
        print_json(
            {
                "id": found.id,
                "workflow": found.workflow,
                "status": "cancelled",
                "descendants_cancelled": cascaded,
            }
        )
    else:
        also = f" and {cascaded} live descendant(s)" if cascaded else ""
        print(f"cancelled {found.workflow} instance {found.id}{also}")
    return EXIT_OK


# -- retry ----------------------------------------------------------------------------------


@command("retry", database_options, json_option, target_options)
def retry_command(args: argparse.Namespace) -> int:
    """Put a failed instance back on the step that failed, with attempt 0, due now."""
    return asyncio.run(_retry(args))


async def _retry(args: argparse.Namespace) -> int:
    async with open_store(args) as store:
        found = await find_instance(store, args)
        row = await store.instance_retry(id=found.id, now=None)
    what = f"{found.workflow} instance {found.id}"
    if row.retried is None:
        if row.status is None:
            raise NoTarget(f"{what} no longer exists")
        if row.status != "failed":
            raise UserError(f"{what} is {row.status}: only a failed instance can be retried")
        if row.holder is not None:
            raise UserError(
                f"{what} cannot be retried: live instance {row.holder} now holds its key "
                f"(cancel it first, or start a new instance)"
            )
        raise UserError(
            f"{what} cannot be retried: its parent {row.parent_id} no longer waits for it"
        )
    if args.json:
        print_json(
            {"id": found.id, "workflow": found.workflow, "status": "available", "step": row.step}
        )
    else:
        print(f"{what} goes back to step {row.step!r} with attempt 0")
    return EXIT_OK
