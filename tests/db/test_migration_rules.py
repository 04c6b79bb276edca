"""Every migration after 0.1.0 keeps the rules of `sql/migrations/README.md` that a reading
can check: indexes built concurrently (so outside a transaction), no table rewrite, no
constraint validated under the lock."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gendurable.sql import migration, migrations
from gendurable.sql.scripts import split_statements

RELEASED = 1
"""The schema version of 0.1.0: its migrations were written before these rules."""

ROLLING = Path(__file__).resolve().parent.parent / "deploy" / "rolling_migration.sql"

_RULES = (
    (
        re.compile(r"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY)", re.I),
        "build indexes with CREATE INDEX CONCURRENTLY IF NOT EXISTS",
    ),
    (
        re.compile(r"\bALTER\s+COLUMN\s+\S+\s+(?:SET\s+DATA\s+)?TYPE\b", re.I),
        "no column type change: it rewrites the table under ACCESS EXCLUSIVE",
    ),
    (
        re.compile(
            r"\bADD\s+(?:CONSTRAINT\s+\S+\s+)?(?:CHECK|FOREIGN\s+KEY)\b(?![^;]*NOT\s+VALID)", re.I
        ),
        "add constraints NOT VALID, then VALIDATE CONSTRAINT in a statement of its own",
    ),
    (
        re.compile(
            r"\bADD\s+COLUMN\b[^;]*\bDEFAULT\s+[^;]*\b(?:now|random|clock_timestamp|gen_random_uuid)\s*\(",
            re.I,
        ),
        "no ADD COLUMN with a volatile default: it rewrites the table",
    ),
)


def problems(name: str, text: str) -> list[str]:
    """What breaks the rules in migration file `name`, one line each."""
    found = []
    step = migration(name, text, "gendurable")
    for statement in split_statements(step.sql):
        code = "\n".join(line.split("--", 1)[0] for line in statement.splitlines()).strip()
        for pattern, rule in _RULES:
            if pattern.search(code):
                found.append(f"{name}: {rule}: {code.splitlines()[0]}")
        if "CONCURRENTLY" in code.upper() and step.transactional:
            found.append(f"{name}: mark the file `-- gendurable: no-transaction`")
    return found


def test_the_migrations_after_the_release_keep_the_rules() -> None:
    later = [m for m in migrations("gendurable") if m.version > RELEASED]
    texts = [(m.name, m.sql) for m in later] + [(f"0002_{ROLLING.name}", ROLLING.read_text())]
    assert [p for name, text in texts for p in problems(name, text)] == []


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("CREATE INDEX IF NOT EXISTS ix ON t (a);", "CONCURRENTLY"),
        ("CREATE INDEX CONCURRENTLY IF NOT EXISTS ix ON t (a);", "no-transaction"),
        ("ALTER TABLE t ALTER COLUMN a TYPE bigint;", "type change"),
        ("ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0);", "NOT VALID"),
        ("ALTER TABLE t ADD COLUMN b timestamptz DEFAULT now();", "volatile default"),
    ],
)
def test_a_migration_breaking_a_rule_is_named(text: str, rule: str) -> None:
    found = problems("0002_bad.sql", text)
    assert len(found) == 1
    assert rule in found[0]


def test_what_the_rules_allow_passes() -> None:
    text = (
        "-- gendurable: no-transaction\n"
        "ALTER TABLE t ADD COLUMN IF NOT EXISTS b text DEFAULT 'x';\n"
        "ALTER TABLE t ADD CONSTRAINT c CHECK (a > 0) NOT VALID;\n"
        "ALTER TABLE t VALIDATE CONSTRAINT c;\n"
        "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix ON t (a);\n"
    )
    assert problems("0002_good.sql", text) == []
