"""The refusal of an action, carried across its redirect in a short-lived signed cookie.

A refused action answers with a redirect to the instance page (POST-redirect-GET), so a
reload never posts the form again. The reason and what was typed travel in a cookie signed
with the dashboard's secret (so no other site or link can make the page say anything), set
on the redirect and cleared by the page that shows it. A typed payload too large for a
cookie is not kept; the reason always is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

import msgspec
from starlette.requests import Request
from starlette.responses import RedirectResponse

COOKIE = "gendurable_refused"
MAX_AGE = 120
"""Seconds the refusal waits for its page (the redirect is followed at once)."""
MAX_VALUE = 3000
"""Longest cookie value set (browsers keep at least 4096 bytes per cookie)."""

_KEPT_FIELDS = ("name", "payload", "step", "state")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an action on instance `id` was refused, and the fields that were typed. Id 0 is
    the instance list, where a bulk action's report is carried the same way."""

    id: int
    message: str
    form: dict[str, str]


def encode(secret: bytes, refusal: Refusal) -> str:
    """The cookie value carrying `refusal`: its JSON, base64url, then its HMAC."""
    form = {k: v for k, v in refusal.form.items() if k in _KEPT_FIELDS}
    message = refusal.message[:1000]
    value = _sign(secret, {"id": refusal.id, "message": message, "form": form})
    if len(value) > MAX_VALUE:  # the JSON typed does not fit: keep the reason and the names
        form.pop("payload", None)
        form.pop("state", None)
        value = _sign(secret, {"id": refusal.id, "message": message, "form": form})
    return value


def redirect(request: Request, path: str, secret: bytes, refusal: Refusal) -> RedirectResponse:
    """A redirect (303) to `path`, below the application's root path, carrying `refusal`."""
    base = request.scope.get("root_path", "").rstrip("/")
    response = RedirectResponse(f"{base}{path}", status_code=303)
    response.set_cookie(
        COOKIE,
        encode(secret, refusal),
        max_age=MAX_AGE,
        path=base or "/",
        httponly=True,
        samesite="strict",
    )
    return response


def decode(secret: bytes, value: str | None, id: int) -> Refusal | None:
    """The refusal in `value` if this dashboard signed it for instance `id`, else None."""
    if not value or "." not in value:
        return None
    data, _, signature = value.rpartition(".")
    if not hmac.compare_digest(signature, _mac(secret, data)):
        return None
    try:
        fields = msgspec.json.decode(base64.urlsafe_b64decode(data + "=" * (-len(data) % 4)))
    except (binascii.Error, ValueError, msgspec.DecodeError):
        return None
    if not isinstance(fields, Mapping) or fields.get("id") != id:
        return None
    form = fields.get("form")
    return Refusal(
        id,
        str(fields.get("message", "")),
        {str(k): str(v) for k, v in form.items()} if isinstance(form, Mapping) else {},
    )


def _sign(secret: bytes, fields: Mapping[str, object]) -> str:
    # Without its padding: `=` would make the cookie value a quoted string.
    data = base64.urlsafe_b64encode(msgspec.json.encode(fields)).decode().rstrip("=")
    return f"{data}.{_mac(secret, data)}"


def _mac(secret: bytes, data: str) -> str:
    return hmac.new(secret, b"refused:" + data.encode(), hashlib.sha256).hexdigest()
