"""DSN passwords are masked in anything gendurable prints about a connection."""

from __future__ import annotations

import asyncpg
import pytest

from gendurable.db.connect import describe_dsn, describe_failure, redact


@pytest.mark.parametrize(
    ("dsn", "secret"),
    [
        ("postgresql://bob:hunter2@db:5432/app", "hunter2"),
        ("postgresql://bob:p%40ss%3Aword@db/app", "p@ss:word"),
        ("postgresql://bob@db/app?password=qs-secret", "qs-secret"),
        ("host=db user=bob password=kv-secret dbname=app", "kv-secret"),
        ("host=db user=bob password='quoted secret' dbname=app", "quoted secret"),
    ],
)
def test_redact_masks_the_password_in_every_dsn_form(dsn: str, secret: str) -> None:
    text = f"failed: {dsn} (password was {secret})"

    masked = redact(text, [dsn])

    assert secret not in masked
    assert "***" in masked


def test_redact_masks_a_url_password_of_a_dsn_it_was_not_given() -> None:
    assert redact("see postgresql://eve:topsecret@h/db") == "see postgresql://eve:***@h/db"


def test_redact_masks_pgpassword(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "env-secret")

    assert redact("oops env-secret", [None]) == "oops ***"


@pytest.mark.parametrize(
    ("dsn", "where"),
    [
        ("postgresql://bob:pw@db.example:5433/app", "database 'app' on db.example:5433 as bob"),
        ("postgresql://db/app", "database 'app' on db"),
        ("postgresql://u:pw@/postgres?host=/tmp/sock", "database 'postgres' on /tmp/sock as u"),
        ("host=db password=pw", "the database on db"),
        (None, "the database"),
    ],
)
def test_describe_dsn_names_where_without_the_password(dsn: str | None, where: str) -> None:
    assert describe_dsn(dsn) == where


def test_describe_failure_is_one_line_without_the_password() -> None:
    dsn = "postgresql://bob:hunter2@127.0.0.1:1/app"
    refused = OSError("Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', 1),\n"
                      "[Errno 99] Cannot assign requested address")  # fmt: skip
    denied = asyncpg.InvalidPasswordError('password authentication failed for user "bob"')

    assert describe_failure(refused, dsn) == (
        "cannot reach database 'app' on 127.0.0.1:1 as bob: connection refused "
        "(is the server running?)"
    )
    assert describe_failure(denied, dsn) == (
        "authentication failed for database 'app' on 127.0.0.1:1 as bob: "
        'password authentication failed for user "bob"'
    )
    assert describe_failure(TimeoutError(), dsn) == (
        "timed out reaching database 'app' on 127.0.0.1:1 as bob"
    )


def test_describe_failure_when_no_host_suits_target_session_attrs() -> None:
    dsn = "postgresql://bob:hunter2@db1:5432,db2:5432/app?target_session_attrs=read-write"
    none_writable = asyncpg.TargetServerAttributeNotMatched(
        "None of the hosts match the target attribute requirement <SessionAttribute.read_write>"
    )

    assert describe_failure(none_writable, dsn) == (
        "no host of database 'app' on db1:5432,db2:5432 as bob is what target_session_attrs "
        "asks for (in a failover: none is writable yet)"
    )
