"""What the dashboard accepts from URLs and forms, and its CSRF check (no database)."""

from __future__ import annotations

import pytest

from gendurable.web import csrf
from gendurable.web.params import BadInput, ListFilter, parse_form, payload_json

SECRET = b"k" * 32


def test_web_list_filter_reads_every_field_and_writes_them_back() -> None:
    parsed = ListFilter.parse(
        {
            "workflow": [" expense "],
            "status": ["awaiting", "failed", "awaiting", ""],
            "queue": ["q"],
            "key_prefix": ["exp-"],
            "before": ["120"],
            "limit": ["20"],
        }
    )

    assert parsed == ListFilter("expense", ("awaiting", "failed"), "q", "exp-", 120, 20)
    assert parsed.query(before=99) == (
        "workflow=expense&status=awaiting&status=failed&queue=q&key_prefix=exp-&before=99&limit=20"
    )
    assert ListFilter.parse({"workflow": [""], "before": [""]}) == ListFilter()
    assert ListFilter().query() == ""


@pytest.mark.parametrize(
    "query",
    [
        {"status": ["executing; drop"]},
        {"limit": ["0"]},
        {"before": ["0"]},
        {"before": ["1e3"]},
        {"before": ["١٢"]},  # digits, but not ASCII ones
        {"workflow": ["a\tb"]},
        {"key_prefix": ["x" * 201]},
        {"workflow": ["a", "b"]},
        {"page": ["2"]},
    ],
)
def test_web_list_filter_refuses_bad_values(query: dict[str, list[str]]) -> None:
    with pytest.raises(BadInput):
        ListFilter.parse(query)


def test_web_form_and_payload_parsing() -> None:
    assert parse_form(b"name=approved&payload=%7B%22by%22%3A+%22ann%22%7D") == {
        "name": "approved",
        "payload": '{"by": "ann"}',
    }
    assert payload_json('{"by": "ann"}') == {"by": "ann"}
    assert payload_json("  ") is None
    with pytest.raises(BadInput, match="given 2 times"):
        parse_form(b"a=1&a=2")
    with pytest.raises(BadInput, match="not UTF-8"):
        parse_form(b"a=%ff\xff")
    with pytest.raises(BadInput, match="not valid JSON"):
        payload_json("{by: ann}")


def test_web_csrf_accepts_only_the_token_of_the_cookie_from_our_origin() -> None:
    cookie = csrf.new_cookie()
    good = csrf.token(SECRET, cookie)
    same = {"host": "dash.example:8080", "origin": "http://dash.example:8080"}

    csrf.check(SECRET, cookie=cookie, form_token=good, headers=same)
    csrf.check(SECRET, cookie=cookie, form_token=good, headers={})  # no Origin sent
    csrf.check(
        SECRET,
        cookie=cookie,
        form_token=good,
        headers={
            "host": "10.0.0.5",
            "x-forwarded-host": "ops.example",
            "origin": "https://ops.example",
        },
    )
    for fetch_site in ("same-origin", "none"):  # a page of ours, or the user's own request
        csrf.check(
            SECRET, cookie=cookie, form_token=good, headers={**same, "sec-fetch-site": fetch_site}
        )
    refused = [
        (dict(cookie=None, form_token=good, headers=same), "session cookie is missing"),
        (
            dict(cookie="short", form_token=csrf.token(SECRET, "short"), headers=same),
            "session cookie is missing",
        ),
        (dict(cookie=cookie, form_token=None, headers=same), "token does not match"),
        (
            dict(cookie=cookie, form_token=csrf.token(b"other" * 8, cookie), headers=same),
            "token does not match",
        ),
        (
            dict(cookie=cookie, form_token=good, headers={**same, "origin": "http://evil.example"}),
            "from another origin",
        ),
        (
            dict(cookie=cookie, form_token=good, headers={**same, "origin": "null"}),
            "from an opaque origin",
        ),
        (
            dict(cookie=cookie, form_token=good, headers={**same, "sec-fetch-site": "same-site"}),
            r"from another site \(same-site\)",
        ),
    ]
    for case, says in refused:
        with pytest.raises(csrf.CsrfError, match=says):
            csrf.check(SECRET, **case)  # type: ignore[arg-type]
