"""Acting on instances: `start`, `signal`, `cancel` and `retry`.

The command line has no workflow classes loaded, so `start` and `signal` check what they
store against what the live nodes record about the workflow (each engine records its steps,
the signal names each awaits, and the types of the payloads and the State as JSON Schema):
an unknown name, or a payload or state of the wrong type, is refused, and so is anything
when no live engine knows the workflow. `--app MODULE:ENGINE` checks against the code
instead. Either way nothing is stored when a check fails, and a missing or terminal target
stores nothing and fails (`NoTarget`, exit 1), as `Flow.signal` does.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

import msgspec

from ..db.repair_store import RepairStore
from ..engine.client import check_idempotency_key
from ..errors import ConfigError, NoTarget, ValidationError
from ..loader import load_engine
from ..rewind import KEEP, entry_by_code, entry_by_nodes, refusal, rewind
from ..signal_check import payload_by_code, payload_by_nodes
from ..spec import WorkflowSpec
from ..start_check import row_by_code, row_by_nodes
from ..workflow_records import did_you_mean
from .bulk import CANCEL, RETRY, bulk_requested, filter_options, run_bulk
from .command import EXIT_OK, command, database_options, json_option, target_options
from .output import UserError, print_json
from .session import find_instance, open_store

_decode = msgspec.json.Decoder()


def _app_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--app",
        metavar="MODULE:ENGINE",
        help="check against this engine's workflow code instead of the live engines' records",
    )


def _json_argument(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return _decode.decode(text)
    except msgspec.DecodeError as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}") from None


def _app_spec(target: str, workflow: str) -> WorkflowSpec:
    if "" not in sys.path:
        sys.path.insert(0, "")  # like `python -m`: modules of the working directory import
    engine = load_engine(target)
    spec = engine.specs.get(workflow)
    if spec is None:
        served = ", ".join(sorted(engine.specs))
        hint = did_you_mean(workflow, engine.specs)
        raise ConfigError(
            f"{target} does not serve workflow {workflow!r}{hint} (it serves: {served})"
        )
    return spec


# -- start ----------------------------------------------------------------------------------


def _start_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", metavar="WORKFLOW", help="the workflow's name")
    parser.add_argument(
        "key", metavar="KEY", nargs="?", default="", help="the business key ('' or none: no key)"
    )
    parser.add_argument(
        "state",
        metavar="STATE_JSON",
        nargs="?",
        default=None,
        help="the start state (default: the State's defaults)",
    )
    _app_option(parser)


@command("start", database_options, json_option, _start_options)
def start_command(args: argparse.Namespace) -> int:
    """Start an instance of a workflow (a live instance holding KEY is returned instead).

    The state must match the workflow's State type, as recorded by the live engines; with
    --app MODULE:ENGINE it is checked against that code instead.
    """
    state = _json_argument(args.state, "STATE_JSON")
    spec = _app_spec(args.app, args.workflow) if args.app else None
    return asyncio.run(_start(args, state, spec))


async def _start(args: argparse.Namespace, state: Any, spec: WorkflowSpec | None) -> int:
    workflow, key = args.workflow, args.key or None
    async with open_store(args) as store:
        if spec is not None:
            row = row_by_code(spec, key, state)
        else:
            row = await row_by_nodes(store, workflow, key, state)
        inserted = await store.instance_insert(row=row, now=None)
    id, created = inserted.id, inserted.created
    if args.json:
        print_json({"id": id, "workflow": workflow, "key": key, "created": created})
    elif created:
        print(f"started {workflow} instance {id}" + (f" with key {key!r}" if key else ""))
    else:
        print(f"{workflow} instance {id} already holds key {key!r} (live); nothing was started")
    return EXIT_OK


# -- signal ---------------------------------------------------------------------------------


def _signal_options(parser: argparse.ArgumentParser) -> None:
    target_options(parser)
    parser.add_argument("name", metavar="NAME", help="the signal's name")
    parser.add_argument(
        "payload", metavar="PAYLOAD_JSON", nargs="?", default="null", help="default: null"
    )
    parser.add_argument(
        "--idempotency-key",
        metavar="K",
        help="send it once: a resend with K returns the signal K stored (and stores nothing)",
    )
    _app_option(parser)


@command("signal", database_options, json_option, _signal_options)
def signal_command(args: argparse.Namespace) -> int:
    """Send a signal to a live instance (nothing is stored if it is not live).

    The name must be one a step of the workflow awaits and the payload must match the type
    declared for it, as recorded by the live engines; with --app MODULE:ENGINE both are
    checked against that code instead. With --idempotency-key K the command is safe to run
    again: a signal K already stored for the instance is not stored twice, and its id is
    printed (with "duplicate"); K used for another name or payload fails, storing nothing.
    """
    if args.idempotency_key is not None:
        try:
            check_idempotency_key(args.idempotency_key)
        except ValidationError as exc:
            raise ConfigError(str(exc)) from None
    payload = _json_argument(args.payload, "PAYLOAD_JSON")
    spec = _app_spec(args.app, args.workflow) if args.app and args.workflow else None
    return asyncio.run(_signal(args, payload, spec))


async def _signal(args: argparse.Namespace, payload: Any, spec: WorkflowSpec | None) -> int:
    name = args.name
    async with open_store(args) as store:
        workflow = args.workflow or (await find_instance(store, args)).workflow
        if args.app and spec is None:
            spec = _app_spec(args.app, workflow)
        if spec is not None:
            data = payload_by_code(spec, name, payload)
        else:
            data = await payload_by_nodes(store, workflow, name, payload)
        by_id = args.target.isdigit() and not args.key
        row = await store.signal_deliver(
            workflow=workflow,
            id=int(args.target) if by_id else None,
            key=None if by_id else args.target,
            name=name,
            payload=data,
            now=None,
            idempotency_key=args.idempotency_key,
        )
    if row is None:
        address = f"id {args.target}" if by_id else f"key {args.target!r}"
        raise NoTarget(
            f"no live {workflow} instance with {address}; signal {name!r} was not stored"
        )
    signal_id, instance_id = row.signal_id, row.instance_id
    if not row.same:
        raise UserError(
            f"idempotency key {args.idempotency_key!r} already stored another signal (id "
            f"{signal_id}, a different name or payload) for instance {instance_id}; signal "
            f"{name!r} was not stored"
        )
    if args.json:
        print_json(
            {
                "signal_id": signal_id,
                "instance_id": instance_id,
                "woke": row.woke,
                "duplicate": row.duplicate,
            }
        )
    elif row.duplicate:
        print(
            f"signal {name!r} ({signal_id}) was stored for instance {instance_id} already, "
            f"with idempotency key {args.idempotency_key!r}; nothing was stored"
        )
    else:
        woke = " and woke it" if row.woke else ""
        print(f"signal {name!r} ({signal_id}) stored for instance {instance_id}{woke}")
    return EXIT_OK


# -- cancel ---------------------------------------------------------------------------------


def _many_target_options(parser: argparse.ArgumentParser) -> None:
    """`[KEY_OR_ID]`, `--workflow`, `--key` and `--step`: one instance, or the filter of many."""
    parser.add_argument(
        "target",
        metavar="KEY_OR_ID",
        nargs="?",
        help="the instance's id (all digits) or business key; none: every instance of "
        "--workflow the options below match",
    )
    parser.add_argument(
        "--workflow",
        metavar="NAME",
        help="the workflow of a key (needed when several workflows use the same key), or of "
        "the instances to act on",
    )
    parser.add_argument(
        "--key", action="store_true", help="read KEY_OR_ID as a key even when it is all digits"
    )


def _cancel_options(parser: argparse.ArgumentParser) -> None:
    _many_target_options(parser)
    parser.add_argument("--step", metavar="STEP", help="only instances at this step (bulk)")
    filter_options(CANCEL, parser)


@command("cancel", database_options, json_option, _cancel_options)
def cancel_command(args: argparse.Namespace) -> int:
    """Cancel a live instance (its inbox is purged, its parent told), or every one that
    matches.

    Without KEY_OR_ID, cancels every live instance of --workflow the filters match (with
    their live descendants), a page of --batch-size at a time; --dry-run only counts them.
    """
    if bulk_requested(args):
        return run_bulk(CANCEL, args)
    if args.step is not None:
        raise ConfigError("--step selects many instances: drop KEY_OR_ID, or drop it")
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


def _retry_options(parser: argparse.ArgumentParser) -> None:
    _many_target_options(parser)
    parser.add_argument(
        "--step",
        metavar="STEP",
        help="with KEY_OR_ID: restart the instance at STEP (a rewind); without: only "
        "instances that failed at STEP",
    )
    parser.add_argument(
        "--state",
        metavar="STATE_JSON",
        help="with KEY_OR_ID: restart it with this state instead of its stored one",
    )
    _app_option(parser)
    filter_options(RETRY, parser)


@command("retry", database_options, json_option, _retry_options)
def retry_command(args: argparse.Namespace) -> int:
    """Put a failed instance back on the step that failed, with attempt 0, due now; or
    restart a failed or cancelled one at another step (--step), with another state (--state).

    Without KEY_OR_ID, retries every failed instance of --workflow the filters match, a page
    of --batch-size at a time; --dry-run only counts them. A rewind's step and state are
    checked against what the live engines record, or the code with --app MODULE:ENGINE.
    """
    if bulk_requested(args):
        extra = [o for o, v in (("--state", args.state), ("--app", args.app)) if v is not None]
        if extra:
            raise ConfigError(f"{', '.join(extra)} go with one instance's KEY_OR_ID")
        return run_bulk(RETRY, args)
    if args.step is not None or args.state is not None:
        state = _json_argument(args.state, "STATE_JSON") if args.state is not None else KEEP
        return asyncio.run(_rewind(args, state))
    if args.app is not None:
        raise ConfigError("--app checks a rewind's --step and --state; a retry has neither")
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
            raise UserError(
                f"{what} is {row.status}: only a failed instance can be retried"
                + (" (rewind it: --step STEP)" if row.status == "cancelled" else "")
            )
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


async def _rewind(args: argparse.Namespace, state: Any) -> int:
    async with open_store(args) as store:
        found = await find_instance(store, args)
        row = await store.instance_by_id(id=found.id)
        if row is None:
            raise NoTarget(f"{found.workflow} instance {found.id} no longer exists")
        step = args.step or row.step
        if args.app:
            spec = _app_spec(args.app, found.workflow)
            entry = entry_by_code(
                spec, step, state, stored_state=row.state, stored_version=row.state_version
            )
        else:
            entry = await entry_by_nodes(store, found.workflow, step, state)
        answer = await rewind(RepairStore(store.db), found.id, entry)
    what = f"{found.workflow} instance {found.id}"
    refused = refusal(what, answer)
    if refused is not None:
        raise (NoTarget if answer.status is None else UserError)(refused)
    kept = "its stored state" if entry.state is None else "the state given"
    if args.json:
        print_json(
            {
                "id": found.id,
                "workflow": found.workflow,
                "status": "available",
                "step": answer.step,
                "state": "stored" if entry.state is None else "given",
            }
        )
    else:
        print(f"{what} restarts at step {answer.step!r} with attempt 0 and {kept}")
    return EXIT_OK
