"""Encoding of states, results, payloads and errors to JSON bytes, with validation.

Everything is encoded on the client before any statement runs, so a value that cannot be
encoded or does not match its declared type never reaches the database.
"""

from __future__ import annotations

import re
import traceback
from typing import Any

import msgspec

from .errors import ValidationError

_encoder = msgspec.json.Encoder()
_plain: msgspec.json.Decoder[Any] = msgspec.json.Decoder()

DEFAULT_MAX_PAYLOAD_BYTES = 1_048_576
"""The default of `Engine(max_payload_bytes=...)`: 1 MiB of encoded JSON per value."""

# A NUL character in a JSON string: `\u0000` after an even number of backslashes (an odd
# number escapes the backslash itself, and the text is then a literal "\u0000").
_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def check_size(data: bytes, limit: int, what: str) -> bytes:
    """`data`, or `ValidationError` naming its size when it is longer than `limit` bytes.

    Cheap on the hot path: the length of bytes already encoded.
    """
    if len(data) > limit:
        raise ValidationError(
            f"{what} is {len(data):,} bytes of JSON, above the limit of {limit:,} bytes "
            "(Engine(max_payload_bytes=...)); keep large data elsewhere and store a reference"
        )
    return data


def _storable(data: bytes, what: str) -> bytes:
    """Refuse JSON that PostgreSQL's jsonb cannot store: a string holding a NUL character."""
    if b"\\u0000" in data and _NUL.search(data):
        raise ValidationError(
            f"{what} holds a NUL character (\\x00) in a string, which PostgreSQL cannot store"
        )
    return data


def encode_typed(value: Any, tp: Any, decoder: msgspec.json.Decoder[Any], what: str) -> bytes:
    """Encode `value` as JSON, checking that it decodes back as `tp` when `tp` is set.

    A dict is accepted for a Struct type when it converts; the round trip catches fields
    assigned values of the wrong type, which msgspec does not check on assignment.
    """
    if tp is not None and isinstance(tp, type) and not isinstance(value, tp):
        try:
            value = msgspec.convert(value, tp)
        except msgspec.ValidationError as exc:
            raise ValidationError(f"{what} does not match {tp.__qualname__}: {exc}") from None
    try:
        data = _storable(_encoder.encode(value), what)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(f"{what} cannot be encoded as JSON: {exc}") from None
    if tp is not None:
        try:
            decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise ValidationError(f"{what} does not match its declared type: {exc}") from None
    return data


def encode_json(value: Any, what: str = "value") -> bytes:
    """Encode any JSON-able value (untyped payloads, error records)."""
    try:
        data = _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(f"{what} cannot be encoded as JSON: {exc}") from None
    return _storable(data, what)


def decode_json(data: bytes | None, decoder: msgspec.json.Decoder[Any] | None = None) -> Any:
    """Decode stored JSON bytes (None stays None), typed when a decoder is given."""
    if data is None:
        return None
    return (decoder or _plain).decode(data)


def error_record(
    exc: BaseException, *, step: str, attempt: int, max_attempts: int | None = None
) -> dict[str, Any]:
    """What is stored in `instances.error` for an exception raised by a step: its type,
    message and traceback, the step, the attempt (from 0) and the attempts the step may use.

    A NUL character (which PostgreSQL cannot store) in the message or traceback is written
    as the text `\\x00`: the error path must always be able to commit.
    """
    return {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc).replace("\x00", "\\x00"),
        "traceback": "".join(traceback.format_exception(exc)).replace("\x00", "\\x00"),
        "step": step,
        "attempt": attempt,
        **({} if max_attempts is None else {"max_attempts": max_attempts}),
    }
