"""key=value DSNs (libpq's conninfo) become the URL asyncpg connects with.

The conversion is checked here without a server; `tests/cli/test_dsn_forms.py` connects
with the same strings to a server that checks a password.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from gendurable.db.connect import (
    asyncpg_dsn,
    check_dsn,
    describe_dsn,
    hosts_of,
    parse_conninfo,
    redact,
)
from gendurable.errors import ConfigError

SECRET = "it's a p@ss:w/rd\\ &x=1+%"
QUOTED = "'it\\'s a p@ss:w/rd\\\\ &x=1+%'"  # the same, written as libpq quotes it


def query_of(url: str) -> dict[str, str]:
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("postgresql", "", "")
    return {k: v[-1] for k, v in parse_qs(parts.query, strict_parsing=True).items()}


@pytest.mark.parametrize(
    ("dsn", "pairs"),
    [
        ("host=db port=5433 user=bob dbname=app", {"host": "db", "port": "5433", "user": "bob",
                                                   "dbname": "app"}),
        ("  host = db\tdbname= app  ", {"host": "db", "dbname": "app"}),
        (f"user=bob password={QUOTED}", {"user": "bob", "password": SECRET}),
        ("password=a\\ b\\\\c", {"password": "a b\\c"}),
        ("host=/var/run/postgresql dbname='my db'", {"host": "/var/run/postgresql",
                                                    "dbname": "my db"}),
        ("host=a,b port=5432,5433", {"host": "a,b", "port": "5432,5433"}),
        ("password='' user=bob", {"password": "", "user": "bob"}),
        ("application_name=worker sslmode=disable", {"application_name": "worker",
                                                      "sslmode": "disable"}),
        ("", {}),
    ],
)  # fmt: skip
def test_dsn_conninfo_parses_with_libpq_quoting(dsn: str, pairs: dict[str, str]) -> None:
    assert parse_conninfo(dsn) == pairs


def test_dsn_conninfo_becomes_a_url_that_carries_every_value_intact() -> None:
    dsn = f"host=/tmp/sock dir port=5433 user=bob password={QUOTED} dbname='my db'"
    dsn = dsn.replace("/tmp/sock dir", "'/tmp/sock dir'")

    url = asyncpg_dsn(dsn)

    assert query_of(url) == {
        "host": "/tmp/sock dir",
        "port": "5433",
        "user": "bob",
        "password": SECRET,
        "dbname": "my db",
    }


def test_dsn_conninfo_leaves_out_empty_values_and_urls_unchanged() -> None:
    assert query_of(asyncpg_dsn("host=db password=''")) == {"host": "db"}
    url = "postgresql://bob:pw@db:5432/app?sslmode=disable"
    assert asyncpg_dsn(url) == url


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("host=db dbname", "invalid dsn: expected keyword=value pairs or a postgresql:// URL; "
                           "no '=' after 'dbname'"),
        ("just-a-word", "invalid dsn: expected keyword=value pairs or a postgresql:// URL; "
                        "no '=' at 1"),
        ("=x", "invalid dsn: expected keyword=value pairs or a postgresql:// URL; no '=' at 1"),
        (f"user=bob password={QUOTED[:-1]}", "invalid dsn: the quoted value of 'password' has no "
                                          "closing quote"),
        ("host=db hostaddr=10.0.0.1", "invalid dsn: keyword 'hostaddr' is not supported (give "
                                      "the address as host=)"),
        ("host=db connect_timeout=3", "invalid dsn: keyword 'connect_timeout' is not supported "
                                      "(the engine's statement_timeout bounds connecting)"),
        ("mysql://u@localhost/db", "dsn scheme 'mysql' is not PostgreSQL; use "
                                   "postgresql://user@host:5432/db"),
        ("   ", "dsn must be a non-empty string, got a blank one"),
    ],
)  # fmt: skip
def test_dsn_a_bad_one_is_one_config_error_line_without_a_value(dsn: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_dsn(dsn)

    assert str(raised.value) == message
    assert "p@ss" not in str(raised.value)


def test_dsn_an_unknown_keyword_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"keyword 'hots' is not supported; use one of .*host"):
        asyncpg_dsn("hots=db")


def test_dsn_conninfo_password_is_masked_as_written_and_as_converted() -> None:
    dsn = f"host=db user=bob password={QUOTED}"
    url = asyncpg_dsn(dsn)

    masked = redact(f"failed: {SECRET} via {url}", [dsn])

    assert SECRET not in masked
    assert "p%40ss" not in masked
    assert masked.count("***") == 2


def test_dsn_conninfo_is_described_without_its_password() -> None:
    dsn = f"host=db.example port=5433 user=bob password={QUOTED} dbname=app"

    assert describe_dsn(dsn) == "database 'app' on db.example:5433 as bob"
    assert describe_dsn("host=/var/run/postgresql") == "the database on /var/run/postgresql"
    assert describe_dsn("host=db dbname") == "the database"


NAMED_HOSTS = [
    "postgresql://bob@h1:5432,h2:5433/app?target_session_attrs=read-write",
    "postgresql://bob@h1,h2:5433/app",
    "postgresql://bob@[::1]:5432,h2/app",
    "postgresql://bob@%2Ftmp%2Fa,h2:6000/app",
    "host=h1,h2 port=5432,5433 user=bob dbname=app target_session_attrs=read-write",
    "host=h1,h2,/tmp/s port=6000 dbname=app",
    "host=h1,h2 dbname=app",
    "host=db port=5433",
    "postgresql://bob@db/app",
]


def _asyncpg_addresses(url: str) -> list[tuple[str, int] | str]:
    """The addresses asyncpg itself would try (its private parser: the oracle)."""
    from asyncpg.connect_utils import _parse_connect_dsn_and_args

    empty = dict.fromkeys(
        ("host", "port", "user", "password", "passfile", "database", "ssl", "service",
         "servicefile", "direct_tls", "server_settings", "target_session_attrs", "krbsrvname",
         "gsslib"),
    )  # fmt: skip
    addresses, _ = _parse_connect_dsn_and_args(dsn=url, **empty)
    return list(addresses)


@pytest.mark.parametrize("dsn", NAMED_HOSTS)
def test_dsn_hosts_are_read_as_asyncpg_reads_them(dsn: str) -> None:
    url = asyncpg_dsn(dsn)

    # A unix-socket directory becomes the socket's path, which holds the port.
    as_addresses = [f"{h}/.s.PGSQL.{p}" if h.startswith("/") else (h, p) for h, p in hosts_of(url)]
    assert as_addresses == _asyncpg_addresses(url)


def test_dsn_without_a_host_names_none() -> None:
    assert hosts_of(asyncpg_dsn("dbname=app")) == []
    assert hosts_of("postgresql:///app") == []


def test_dsn_hosts_and_ports_must_pair_up() -> None:
    with pytest.raises(ConfigError, match=r"^invalid dsn: 3 ports for 2 hosts$"):
        check_dsn("host=h1,h2 port=1,2,3")
    with pytest.raises(ConfigError, match=r"^invalid dsn: a port is not a number$"):
        check_dsn("postgresql://h1:5432,h2:x/app")


def test_dsn_several_hosts_are_described_with_their_ports() -> None:
    assert describe_dsn("host=h1,h2 port=5432,5433 user=bob dbname=app") == (
        "database 'app' on h1:5432,h2:5433 as bob"
    )
    assert describe_dsn(
        "postgresql://bob:pw@[::1]:6000,h2/app?target_session_attrs=read-write"
    ) == ("database 'app' on [::1]:6000,h2:5432 as bob")
