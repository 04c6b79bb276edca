"""Types written for people: `int | None`, `list[Approved]`, `Literal['a', 'b']`.

The generated pages, the dashboard and the types the live engines record
(`json_schema.describe_type`) name a declared type in these words.
"""

from __future__ import annotations

import types
import typing
from typing import Any


def type_label(tp: Any) -> str:
    """A readable type: `int | None`, `list[Approved]`, `Literal['a', 'b']`, `Any`."""
    if tp is None or tp is type(None):
        return "None"
    if tp is Any:
        return "Any"
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return type_label(args[0])
    if origin is typing.Union or origin is types.UnionType:
        return " | ".join(type_label(a) for a in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(repr(a) for a in args)}]"
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else type_label(a) for a in args)
        return f"{type_label(origin)}[{inner}]" if args else type_label(origin)
    if isinstance(tp, type):
        return tp.__name__ if tp.__module__ == "builtins" else tp.__qualname__.split(".")[-1]
    return str(tp).replace("typing.", "")
