"""`gendurable check MODULE:ENGINE`, run as a subprocess against the test server."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
from test_check import old_rows

from gendurable.sql import migrations
from gendurable.testing import MakeEngine

LATEST = len(migrations("gendurable"))
"""The schema version this code needs."""
pytestmark = pytest.mark.fresh_schema

HERE = Path(__file__).resolve().parent


async def gendurable(
    *args: str, schema: str = "gendurable", dsn_env: str | None = None, script: bool = False
) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `python -m gendurable.cli args...` (or of the installed
    `gendurable` script) run in this folder, with `$GENDURABLE_DSN` set to `dsn_env` (unset
    by default) and the engines' schema."""
    env = {k: v for k, v in os.environ.items() if k != "GENDURABLE_DSN"}
    env["CHECK_SCHEMA"] = schema
    if dsn_env is not None:
        env["GENDURABLE_DSN"] = dsn_env
    command = [str(Path(sys.executable).with_name("gendurable"))] if script else [
        sys.executable, "-m", "gendurable.cli",
    ]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *command,
        *args,
        cwd=HERE,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_check_command_lists_what_would_strand_and_exits_1(
    make_engine: MakeEngine, gendurable_dsn: str, gendurable_schema: str
) -> None:
    ids = await old_rows(make_engine)

    code, out, err = await gendurable(
        "check", "deploy_flows:engine_v2", "--dsn", gendurable_dsn, schema=gendurable_schema
    )

    assert (code, err) == (1, "")
    assert out.splitlines() == [
        f"workflow_not_served: 1 live row of 'report' (example id {ids['r2']}): this engine "
        "does not serve the workflow",
        f"step_removed: 1 live row of 'expense' at step 'legacy' (example id {ids['e4']}): "
        "no such step any more",
        "signal_removed: 3 live rows of 'expense' await signal 'rejected' at step 'decide' "
        f"(example id {ids['e1']}): the step no longer declares it",
        "state_undecodable: 3 live rows of 'expense' hold a state that no longer decodes "
        f"(field 'currency') (example id {ids['e1']}): Object missing required field "
        "`currency`",
        "state_undecodable: 1 live row of 'expense' hold a state that no longer decodes "
        f"(field 'amount') (example id {ids['e3']}): Expected `int`, got `str` - at "
        "`$.amount`",
        "checked 5 live row(s) and decoded 4 (a sample of live states): 5 problem(s)",
    ]


async def test_check_command_exits_0_when_nothing_would_strand(
    make_engine: MakeEngine, gendurable_dsn: str, gendurable_schema: str
) -> None:
    await old_rows(make_engine)

    # The installed script, like `python -m`, imports modules of the working directory.
    code, out, err = await gendurable(
        "check", "deploy_flows:engine_same", "--full", "--dsn", gendurable_dsn,
        schema=gendurable_schema, script=True,
    )  # fmt: skip

    assert (code, err) == (0, "")
    assert out == "checked 5 live row(s) and decoded 4 (every live state): nothing would strand\n"


async def test_check_command_json_and_the_dsn_from_the_environment(
    make_engine: MakeEngine, gendurable_dsn: str, gendurable_schema: str
) -> None:
    await old_rows(make_engine)

    code, out, _ = await gendurable(
        "check", "deploy_flows:engine_v2", "--json", "--sample", "1",
        schema=gendurable_schema, dsn_env=gendurable_dsn,
    )  # fmt: skip

    assert code == 1
    report = json.loads(out)
    assert (report["ok"], report["live_rows"], report["states_decoded"]) == (False, 5, 1)
    assert [p["kind"] for p in report["problems"]] == [
        "workflow_not_served",
        "step_removed",
        "signal_removed",
        "state_undecodable",
    ]
    assert report["problems"][3]["field"] == "currency"


async def test_check_command_usage_errors_print_usage_and_one_line_and_exit_2(
    gendurable_dsn: str,
) -> None:
    for args, message in [
        (("deploy_flows",), "expected MODULE:ENGINE"),
        (("deploy_flows:nothing",), "has no attribute 'nothing'"),
        (("no_such_module_xyz:engine",), "cannot import 'no_such_module_xyz'"),
        (("deploy_flows:engine_v2",), "no database to check"),  # no --dsn, no env, no dsn=
    ]:
        dsn = ("--dsn", gendurable_dsn) if "no database" not in message else ()
        code, out, err = await gendurable("check", *args, *dsn)
        assert (code, out) == (2, ""), args
        # A usage error: the usage, then the one line saying what is wrong.
        *usage, line = err.splitlines()
        assert usage[0].startswith("usage: gendurable check"), err
        assert line.startswith("gendurable check: error: "), err
        assert message in line
    code, _, err = await gendurable("check", "deploy_flows:engine_v2", "--sample", "0")
    assert code == 2
    assert "must be at least 1" in err


async def test_check_command_unreachable_server_is_one_line_without_the_password() -> None:
    dsn = "postgresql://ops:hunter2secret@127.0.0.1:1/app"

    code, out, err = await gendurable("check", "deploy_flows:engine_v2", "--dsn", dsn)

    assert (code, out) == (1, "")
    assert err.startswith("gendurable check: error: cannot reach the database: ")
    assert len(err.splitlines()) == 1
    assert "hunter2secret" not in err


async def test_check_command_missing_schema_is_one_line_and_exit_1(gendurable_dsn: str) -> None:
    code, out, err = await gendurable(
        "check", "deploy_flows:engine_v2", "--dsn", gendurable_dsn, schema="never_migrated_here"
    )

    assert (code, out) == (1, "")
    assert err.startswith(
        "gendurable check: error: schema 'never_migrated_here' does not exist, this "
        f"gendurable needs version {LATEST}: run `gendurable migrate"
    )
    assert len(err.splitlines()) == 1
