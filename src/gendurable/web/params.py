"""Validating what the dashboard is sent: list filters, ids, cursors and action forms.

Every value from a URL or a form goes through here before it reaches a statement. A bad
value raises `BadInput` with a sentence naming the field, shown to the user with a 400;
nothing is read or written with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode

import msgspec
from starlette.requests import Request

from ..records import ALL_STATUSES

MAX_TEXT = 200
"""Longest workflow name, queue name, key prefix or signal name accepted."""
MAX_ID = 2**63 - 1
"""Ids are PostgreSQL bigints."""
PAGE_SIZES = (20, 50, 100, 200)
DEFAULT_PAGE = 50
MAX_PAYLOAD = 64 * 1024
"""Largest signal payload (bytes of JSON) the dashboard sends."""
MAX_FORM = MAX_PAYLOAD + 4096
"""Largest form body read; a larger one is refused unread."""
FORM_TYPE = "application/x-www-form-urlencoded"


_LIST_FIELDS = ("workflow", "status", "queue", "key_prefix", "before", "limit")


class BadInput(Exception):
    """A value the dashboard refuses: the message names the field and says why."""


def text(value: str | None, field: str) -> str | None:
    """An optional short text: trimmed; empty is None; no control characters."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > MAX_TEXT:
        raise BadInput(f"{field} is longer than {MAX_TEXT} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadInput(f"{field} contains control characters")
    return value


def identifier(value: str | None, field: str) -> int | None:
    """An optional instance id: digits only, within a bigint."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit():
        raise BadInput(f"{field} must be a whole number, got {value[:40]!r}")
    number = int(value)
    if not 1 <= number <= MAX_ID:
        raise BadInput(f"{field} is out of range")
    return number


@dataclass(frozen=True, slots=True)
class ListFilter:
    """The instance list's filters and page position (all optional)."""

    workflow: str | None = None
    statuses: tuple[str, ...] = ()
    queue: str | None = None
    key_prefix: str | None = None
    before: int | None = None
    limit: int = DEFAULT_PAGE

    @classmethod
    def parse(cls, query: Mapping[str, Sequence[str]]) -> ListFilter:
        """Read `?workflow=&status=&status=&queue=&key_prefix=&before=&limit=`."""
        unknown = sorted(set(query) - set(_LIST_FIELDS))
        if unknown:
            raise BadInput(f"unknown filter {unknown[0]!r}")
        statuses = []
        for status in query.get("status", []):
            if not status:
                continue
            if status not in ALL_STATUSES:
                raise BadInput(f"status {status[:40]!r} is not one of {', '.join(ALL_STATUSES)}")
            statuses.append(status)
        limit = DEFAULT_PAGE
        if query.get("limit"):
            raw = query["limit"][-1]
            if raw not in {str(n) for n in PAGE_SIZES}:
                raise BadInput(f"limit must be one of {', '.join(map(str, PAGE_SIZES))}")
            limit = int(raw)
        return cls(
            workflow=text(_one(query, "workflow"), "workflow"),
            statuses=tuple(dict.fromkeys(statuses)),
            queue=text(_one(query, "queue"), "queue"),
            key_prefix=text(_one(query, "key_prefix"), "key prefix"),
            before=identifier(_one(query, "before"), "before"),
            limit=limit,
        )

    def query(self, **changes: Any) -> str:
        """This filter as a query string, with `changes` applied (None drops a field)."""
        fields: dict[str, Any] = {
            "workflow": self.workflow,
            "status": list(self.statuses),
            "queue": self.queue,
            "key_prefix": self.key_prefix,
            "before": self.before,
            "limit": None if self.limit == DEFAULT_PAGE else self.limit,
        }
        fields.update(changes)
        pairs = []
        for name, value in fields.items():
            if value is None or value == []:
                continue
            for item in value if isinstance(value, list) else [value]:
                pairs.append((name, str(item)))
        return urlencode(pairs)


def _one(query: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise BadInput(f"{name} is given {len(values)} times")
    return values[0]


def parse_form(body: bytes) -> dict[str, str]:
    """An `application/x-www-form-urlencoded` body, each field given at most once."""
    if len(body) > MAX_FORM:
        raise BadInput(f"the form is larger than {MAX_FORM} bytes")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadInput("the form is not UTF-8") from None
    form = {}
    for name, values in parsed.items():
        if len(values) > 1:
            raise BadInput(f"{name} is given {len(values)} times")
        form[name] = values[0]
    return form


def payload_json(raw: str | None, field: str = "payload") -> Any:
    """JSON typed in a form (a signal's payload, a rewind's state): empty means null, at
    most `MAX_PAYLOAD`."""
    if raw is None or not raw.strip():
        return None
    data = raw.encode()
    if len(data) > MAX_PAYLOAD:
        raise BadInput(f"the {field} is larger than {MAX_PAYLOAD // 1024} KiB")
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError as exc:
        raise BadInput(f"the {field} is not valid JSON: {exc}") from None


async def read_body(request: Request) -> bytes:
    """The request body, refused unread past `MAX_FORM` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM:
        raise BadInput(f"the form is larger than {MAX_FORM} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM:
            raise BadInput(f"the form is larger than {MAX_FORM} bytes")
    return bytes(body)
