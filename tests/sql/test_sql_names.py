"""Named parameters: what the statement loader rewrites to `$n`, and what it leaves alone."""

from __future__ import annotations

import pytest

from gendurable.records import LIVE_STATUSES, TERMINAL_STATUSES
from gendurable.sql import bind_names, channel, key_lock_prefix, statements


def test_names_become_placeholders_numbered_by_first_use() -> None:
    sql, params = bind_names("x", "SELECT :b, :a, :b")

    assert (sql, params) == ("SELECT $1, $2, $1", ("b", "a"))


def test_casts_are_not_parameters() -> None:
    sql, params = bind_names("x", "SELECT :now::timestamptz, :ids::text[]::s.status[], x::int")

    assert sql == "SELECT $1::timestamptz, $2::text[]::s.status[], x::int"
    assert params == ("now", "ids")


@pytest.mark.parametrize(
    "text",
    [
        "SELECT ':no'",
        "SELECT 'it''s :no'",
        "SELECT E'it\\'s :no'",
        'SELECT "col:no"',
        "SELECT 1 -- :no\n",
        "SELECT 1 /* :no */",
        "SELECT $$ :no $$",
        "SELECT $fn$ :no $fn$",
        "SELECT a[1:no], a[lo:no], a[:no], (a)[(1):no]",
        "SELECT f(a := 1)",
    ],
)
def test_literals_comments_and_slices_hold_no_parameters(text: str) -> None:
    assert bind_names("x", text) == (text, ())


def test_a_parameter_may_follow_a_literal_or_comment_that_mentions_one() -> None:
    sql, params = bind_names("x", "SELECT ':no' || :yes -- :no\n, :also")

    assert sql == "SELECT ':no' || $1 -- :no\n, $2"
    assert params == ("yes", "also")


def test_positional_parameters_are_refused() -> None:
    with pytest.raises(ValueError, match=r"statement 'x': positional parameter \$1; name it"):
        bind_names("x", "SELECT $1, :a")


def test_tokens_stand_for_the_schema_its_channel_its_key_locks_and_the_status_lists() -> None:
    statement = statements("Sch")["instance_claim"]

    assert '"Sch".instances' in statement.sql
    assert f"'{key_lock_prefix('Sch')}'" in statement.sql
    assert statements("Sch")["await_expire"].sql.count(f"'{channel('Sch')}'") == 1
    live = "(" + ", ".join(f"'{s}'" for s in LIVE_STATUSES) + ")"
    terminal = "(" + ", ".join(f"'{s}'" for s in TERMINAL_STATUSES) + ")"
    assert f"status IN {live}" in statements("Sch")["check_live_steps"].sql
    assert f"status IN {terminal}" in statements("Sch")["terminal_sweep"].sql
