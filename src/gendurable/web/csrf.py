"""CSRF protection for the action forms: a signed double-submit token and an origin check.

Each browser gets a random cookie (HttpOnly, SameSite=Strict); every form carries the
HMAC of that cookie under the dashboard's secret. A POST is accepted only when the form's
token matches the cookie it came with, and when the request's `Origin` (if the browser
sends one) is the dashboard's own. Another site can make a browser send the cookie, but it
can neither read it nor compute the token without the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

COOKIE = "gendurable_csrf"
FIELD = "csrf"

_COOKIE_VALUE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")


class CsrfError(Exception):
    """The form did not come from a page this dashboard served."""


def new_cookie() -> str:
    """A fresh random cookie value."""
    return secrets.token_urlsafe(32)


def valid_cookie(value: str | None) -> str | None:
    """`value` if it has the shape of a cookie this dashboard sets, else None."""
    return value if value is not None and _COOKIE_VALUE.match(value) else None


def token(secret: bytes, cookie: str) -> str:
    """The form token that goes with `cookie`."""
    return hmac.new(secret, cookie.encode(), hashlib.sha256).hexdigest()


def check(
    secret: bytes,
    *,
    cookie: str | None,
    form_token: str | None,
    headers: Mapping[str, str],
) -> None:
    """Raise `CsrfError` unless the request comes from one of this dashboard's pages."""
    fetch_site = headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        raise CsrfError(f"the form was sent from another site ({fetch_site})")
    origin = headers.get("origin")
    if origin == "null":
        raise CsrfError("the form was sent from an opaque origin")
    if origin is not None:
        # Behind a proxy the Host header may be rewritten; the forwarded one is then ours.
        ours = {headers.get("host"), headers.get("x-forwarded-host")} - {None}
        if urlsplit(origin).netloc not in ours:
            raise CsrfError("the form was sent from another origin")
    cookie = valid_cookie(cookie)
    if cookie is None:
        raise CsrfError("the form's session cookie is missing: reload the page")
    if not form_token or not hmac.compare_digest(form_token, token(secret, cookie)):
        raise CsrfError("the form's token does not match: reload the page and try again")
