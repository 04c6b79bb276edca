"""Splitting a migration that runs outside a transaction into its statements."""

from __future__ import annotations

import pytest

from gendurable.sql import migration
from gendurable.sql.scripts import concurrent_index, split_statements, waits_harmlessly


def test_split_keeps_semicolons_inside_literals_comments_and_bodies() -> None:
    text = """
-- gendurable: no-transaction
-- a comment; with a semicolon
ALTER TABLE t ADD COLUMN IF NOT EXISTS note text DEFAULT 'a;b';
/* block; comment */
CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $fn$
BEGIN
    RETURN 1;
END
$fn$;
SELECT E'it\\'s; fine', "odd;name" FROM t;
-- trailing comment only
"""
    assert split_statements(text) == [
        "-- gendurable: no-transaction\n-- a comment; with a semicolon\n"
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS note text DEFAULT 'a;b'",
        "/* block; comment */\nCREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE plpgsql "
        "AS $fn$\nBEGIN\n    RETURN 1;\nEND\n$fn$",
        "SELECT E'it\\'s; fine', \"odd;name\" FROM t",
    ]


def test_split_of_a_last_statement_without_semicolon() -> None:
    assert split_statements("SELECT 1;\nSELECT 2\n") == ["SELECT 1", "SELECT 2"]


@pytest.mark.parametrize(
    ("statement", "name"),
    [
        ("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix ON t (a)", "ix"),
        ("-- why\ncreate unique index concurrently if not exists ix_2 on t (a)", "ix_2"),
        ('CREATE INDEX CONCURRENTLY IF NOT EXISTS "Odd ""ix""" ON t (a)', 'Odd "ix"'),
        ("CREATE INDEX IF NOT EXISTS ix ON t (a)", None),
        ("ALTER TABLE t ADD COLUMN x int", None),
    ],
)
def test_concurrent_index_names_the_index_it_builds(statement: str, name: str | None) -> None:
    assert concurrent_index(statement) == name


def test_a_concurrent_index_without_if_not_exists_is_refused() -> None:
    with pytest.raises(ValueError, match="write IF NOT EXISTS"):
        concurrent_index("CREATE INDEX CONCURRENTLY ix ON t (a)")


@pytest.mark.parametrize(
    ("statement", "harmless"),
    [
        ("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix ON t (a)", True),
        ("DROP INDEX CONCURRENTLY IF EXISTS ix", True),
        ("REINDEX INDEX CONCURRENTLY ix", True),
        ("CREATE INDEX IF NOT EXISTS ix ON t (a)", False),
        ("ALTER TABLE t ADD COLUMN x int", False),
    ],
)
def test_only_concurrent_index_builds_wait_without_a_lock_timeout(
    statement: str, harmless: bool
) -> None:
    assert waits_harmlessly(statement) is harmless


def test_the_no_transaction_mark_makes_a_migration_run_statement_by_statement() -> None:
    marked = migration("0002_x.sql", "-- gendurable: no-transaction\nSELECT 1;\n", "s")
    plain = migration("0002_x.sql", "-- gendurable: transaction\nSELECT 1;\n", "s")
    assert (marked.version, marked.transactional, plain.transactional) == (2, False, True)
