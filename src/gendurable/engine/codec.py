"""Encoding of states, results, payloads and errors to JSON bytes, with validation.

Everything is encoded on the client before any statement runs, so a value that cannot be
encoded or does not match its declared type never reaches the database.
"""

from __future__ import annotations

import traceback
from typing import Any

import msgspec

from ..errors import ValidationError

_encoder = msgspec.json.Encoder()
_plain: msgspec.json.Decoder[Any] = msgspec.json.Decoder()


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
        data = _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(f"{what} cannot be encoded as JSON: {exc}") from None
    if tp is not None:
        try:
            decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise ValidationError(f"{what} does not match its declared type: {exc}") from None
    return data


def encode_json(value: Any) -> bytes:
    """Encode any JSON-able value (untyped payloads, error records)."""
    try:
        return _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValidationError(f"value cannot be encoded as JSON: {exc}") from None


def decode_json(data: bytes | None, decoder: msgspec.json.Decoder[Any] | None = None) -> Any:
    """Decode stored JSON bytes (None stays None), typed when a decoder is given."""
    if data is None:
        return None
    return (decoder or _plain).decode(data)


def error_record(exc: BaseException, *, step: str, attempt: int) -> dict[str, Any]:
    """What is stored in `instances.error` for an exception raised by a step."""
    return {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
        "step": step,
        "attempt": attempt,
    }
