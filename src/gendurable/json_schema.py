"""Declared types as the JSON Schema msgspec writes, and JSON values checked against it.

The live engines record the types their workflows declare (each signal's payload, the
State) as `{"type": "<readable name>", "schema": <msgspec.json.schema(...)>}`, so callers
that run no engine and load no code (the command line, the dashboard without `--app`) can
refuse a value of the wrong type before it is stored.

`schema_problem` understands the subset of JSON Schema that `msgspec.json.schema` emits:
types, `properties`/`required`/`additionalProperties`, enums, arrays and tuples, unions
(`anyOf`, with or without a discriminator), `$ref`/`$defs`, the `msgspec.Meta` constraints
and the string formats msgspec decodes (`date-time`, `date`, `time`, `duration`, `uuid`,
`decimal`, base64). A schema using anything else raises `UnsupportedSchema` rather than
passing a value it cannot judge. Messages follow msgspec's (`Expected `str`, got `int` - at
`$.by``), so a value is refused in the same words with or without the code.
"""

from __future__ import annotations

import datetime
import decimal
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import msgspec

from .type_labels import type_label

ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "discriminator",
        "$defs",
        "$comment",
        "$schema",
        "deprecated",
        "readOnly",
        "writeOnly",
        "externalDocs",
    }
)
"""Keywords that describe a value without constraining it."""

_CHECKED = frozenset(
    {
        "$ref",
        "type",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
        "properties",
        "required",
        "additionalProperties",
        "propertyNames",
        "minProperties",
        "maxProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "uniqueItems",  # sets: msgspec accepts repeated items, so nothing to check
        "minLength",
        "maxLength",
        "pattern",
        "format",
        "contentEncoding",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
    }
)

_FORMATS: dict[str, Any] = {
    "date-time": Annotated[datetime.datetime, msgspec.Meta(tz=True)],
    "date": datetime.date,
    "time": Annotated[datetime.time, msgspec.Meta(tz=True)],
    "partial-time": Annotated[datetime.time, msgspec.Meta(tz=False)],
    "duration": datetime.timedelta,
    "uuid": uuid.UUID,
    "decimal": decimal.Decimal,
}
"""The string formats msgspec emits, and the type that decodes each (the check)."""

_NAMES = {
    "string": "str",
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "null": "null",
    "object": "object",
    "array": "array",
}
"""JSON Schema type names as msgspec's messages spell them."""

_BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}
"""The numeric bounds msgspec emits, with how its messages write them."""


class UnsupportedSchema(Exception):
    """A schema uses a keyword (or a `$ref`, a format) the checker cannot judge."""


def describe_type(tp: Any) -> dict[str, Any] | None:
    """What an engine records about a declared type; None for an untyped (any JSON) value.

    `schema` is None when msgspec cannot write one for the type (a value of it can then be
    checked only with the code).
    """
    if tp is None:
        return None
    try:
        schema: dict[str, Any] | None = msgspec.json.schema(tp)
    except Exception:  # any failure only loses the check: the code still decodes the type
        schema = None
    # A class by its qualified name, as the code's own check words it (`Expense.State`).
    label = tp.__qualname__ if isinstance(tp, type) else type_label(tp)
    return {"type": label, "schema": schema}


def supported(schema: Any) -> None:
    """Raise `UnsupportedSchema` naming the first keyword, `$ref` or format not understood."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, Mapping):
        raise UnsupportedSchema(f"its schema holds a {type(schema).__name__} as a schema")
    for key, value in schema.items():
        if key in ANNOTATIONS or key.startswith("x-"):
            if key == "$defs":
                for sub in value.values():
                    supported(sub)
            continue
        if key not in _CHECKED:
            raise UnsupportedSchema(f"its schema uses the keyword {key!r}")
        if key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            for sub in value:
                supported(sub)
        elif key == "properties":
            for sub in value.values():
                supported(sub)
        elif key in ("items", "additionalProperties", "propertyNames"):
            supported(value)
        elif key == "$ref" and not str(value).startswith("#/$defs/"):
            raise UnsupportedSchema(f"its schema uses the reference {value!r}")
        elif key == "format" and value not in _FORMATS:
            raise UnsupportedSchema(f"its schema uses the format {value!r}")
        elif key == "contentEncoding" and value != "base64":
            raise UnsupportedSchema(f"its schema uses the content encoding {value!r}")


def schema_problem(schema: Mapping[str, Any], value: Any) -> str | None:
    """Why `value` (decoded JSON) does not match `schema`, in one line; None if it does.

    Raises `UnsupportedSchema` when the schema holds what the checker cannot judge.
    """
    supported(schema)
    return _Checker(schema.get("$defs", {})).problem(schema, value, "$")


class _Checker:
    def __init__(self, defs: Mapping[str, Any]) -> None:
        self.defs = defs

    def resolve(self, ref: str) -> Mapping[str, Any]:
        found = self.defs.get(ref.removeprefix("#/$defs/"))
        if not isinstance(found, Mapping):
            raise UnsupportedSchema(f"its schema has no definition for {ref!r}")
        return found

    def problem(self, schema: Any, value: Any, path: str) -> str | None:
        if schema is True or schema == {}:
            return None
        if schema is False:
            return _at("Unexpected value", path)
        if "$ref" in schema:
            found = self.problem(self.resolve(schema["$ref"]), value, path)
            if found:
                return found
        for key in ("anyOf", "oneOf"):
            if key in schema:
                found = self.union(schema, schema[key], value, path)
                if found:
                    return found
        for sub in schema.get("allOf", ()):
            found = self.problem(sub, value, path)
            if found:
                return found
        for check in (self.kind, self.choice, self.text, self.number, self.array, self.mapping):
            found = check(schema, value, path)
            if found:
                return found
        return None

    def union(
        self, schema: Mapping[str, Any], options: Sequence[Any], value: Any, path: str
    ) -> str | None:
        problems = [self.problem(option, value, path) for option in options]
        if any(p is None for p in problems):
            return None
        chosen = self.discriminated(schema, options, value)
        if chosen is None:
            got = _kind(value)
            fitting = [i for i, o in enumerate(options) if got in self.accepts(o)]
            chosen = fitting[0] if len(fitting) == 1 else None
        if chosen is not None:
            return problems[chosen]
        expected = " | ".join(dict.fromkeys(self.label(o) for o in options))
        return _at(f"Expected `{expected}`, got `{_kind(value)}`", path)

    def discriminated(
        self, schema: Mapping[str, Any], options: Sequence[Any], value: Any
    ) -> int | None:
        """The option a tagged union's tag picks (None without a tag, or an unknown one)."""
        tag = schema.get("discriminator")
        if not isinstance(tag, Mapping) or not isinstance(value, dict):
            return None
        ref = tag.get("mapping", {}).get(value.get(tag.get("propertyName")))
        for i, option in enumerate(options):
            if isinstance(option, Mapping) and option.get("$ref") == ref:
                return i
        return None

    def accepts(self, schema: Any) -> set[str]:
        """The JSON kinds (`str`, `int`...) a schema can accept at all."""
        if not isinstance(schema, Mapping) or not schema:
            return set(_NAMES.values())
        if "$ref" in schema:
            return self.accepts(self.resolve(schema["$ref"]))
        if "anyOf" in schema or "oneOf" in schema:
            return {
                k for o in schema.get("anyOf", schema.get("oneOf", ())) for k in self.accepts(o)
            }
        if "enum" in schema:
            return {_kind(v) for v in schema["enum"]}
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            kinds = {_NAMES[t] for t in types if t in _NAMES}
            return kinds | ({"int"} if "float" in kinds else set())
        return set(_NAMES.values())

    def label(self, schema: Any) -> str:
        """A schema in words: `str`, `Approved` (a titled definition), `int | null`."""
        if not isinstance(schema, Mapping) or not schema:
            return "any"
        if "$ref" in schema:
            target = self.resolve(schema["$ref"])
            return str(target.get("title") or self.label(target))
        if "anyOf" in schema or "oneOf" in schema:
            options = schema.get("anyOf", schema.get("oneOf", ()))
            return " | ".join(dict.fromkeys(self.label(o) for o in options))
        if "enum" in schema:
            return " | ".join(repr(v) for v in schema["enum"])
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            return " | ".join(_NAMES.get(t, str(t)) for t in types)
        return "any"

    # -- one family of keywords each: a problem, or None ---------------------------------

    def kind(self, schema: Mapping[str, Any], value: Any, path: str) -> str | None:
        if "type" not in schema:
            return None
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        got = _kind(value)
        if any(got == _NAMES.get(t) or (t == "number" and got == "int") for t in types):
            return None
        expected = " | ".join(_NAMES.get(t, str(t)) for t in types)
        return _at(f"Expected `{expected}`, got `{got}`", path)

    def choice(self, schema: Mapping[str, Any], value: Any, path: str) -> str | None:
        allowed = schema.get("enum")
        if "const" in schema:
            allowed = [schema["const"]]
        if allowed is None or any(_same(value, a) for a in allowed):
            return None
        if _kind(value) not in {_kind(a) for a in allowed}:
            expected = " | ".join(dict.fromkeys(_kind(a) for a in allowed))
            return _at(f"Expected `{expected}`, got `{_kind(value)}`", path)
        return _at(f"Invalid enum value {value!r}", path)

    def text(self, schema: Mapping[str, Any], value: Any, path: str) -> str | None:
        if not isinstance(value, str):
            return None
        if "minLength" in schema and len(value) < schema["minLength"]:
            return _at(f"Expected `str` of length >= {schema['minLength']}", path)
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return _at(f"Expected `str` of length <= {schema['maxLength']}", path)
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            return _at(f"Expected `str` matching regex {schema['pattern']!r}", path)
        decoded = _FORMATS.get(schema.get("format", ""))
        if schema.get("contentEncoding") == "base64":
            decoded = bytes
        if decoded is not None:
            try:
                msgspec.convert(value, decoded)
            except msgspec.ValidationError as exc:
                return _at(str(exc), path)
        return None

    def number(self, schema: Mapping[str, Any], value: Any, path: str) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        name = "int" if isinstance(value, int) else "float"
        for key, sign in _BOUNDS.items():
            bound = schema.get(key)
            if bound is not None and not _within(value, sign, bound):
                return _at(f"Expected `{name}` {sign} {bound}", path)
        step = schema.get("multipleOf")
        if step is not None and not _multiple(value, step):
            return _at(f"Expected `{name}` that's a multiple of {step}", path)
        return None

    def array(self, schema: Mapping[str, Any], value: Any, path: str) -> str | None:
        if not isinstance(value, list):
            return None
        if "minItems" in schema and len(value) < schema["minItems"]:
            return _at(f"Expected `array` of length >= {schema['minItems']}", path)
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            return _at(f"Expected `array` of length <= {schema['maxItems']}", path)
        prefix = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else schema.get("items", True)
            found = self.problem(sub, item, f"{path}[{i}]")
            if found:
                return found
        return None

    def mapping(self, schema: Mapping[str, Any], value: Any, path: str) -> str | None:
        if not isinstance(value, dict):
            return None
        for name in schema.get("required", ()):
            if name not in value:
                return _at(f"Object missing required field `{name}`", path)
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            return _at(f"Expected `object` of length >= {schema['minProperties']}", path)
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            return _at(f"Expected `object` of length <= {schema['maxProperties']}", path)
        properties = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for name, item in value.items():
            if "propertyNames" in schema:
                found = self.problem(schema["propertyNames"], name, f"{path}...")
                if found:
                    return found
            if name in properties:
                found = self.problem(properties[name], item, f"{path}.{name}")
            elif extra is False:
                return _at(f"Object contains unknown field `{name}`", path)
            else:
                found = self.problem(extra, item, f"{path}[...]")
            if found:
                return found
        return None


def _kind(value: Any) -> str:
    """The JSON kind of a decoded value, spelled as msgspec does."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "array"
    return "object"


def _same(value: Any, allowed: Any) -> bool:
    """Equal and of the same JSON kind (`True` is not `1`, `1.0` is not `1`)."""
    return _kind(value) == _kind(allowed) and bool(value == allowed)


def _within(value: float, sign: str, bound: float) -> bool:
    if sign == ">=":
        return value >= bound
    if sign == ">":
        return value > bound
    if sign == "<=":
        return value <= bound
    return value < bound


def _multiple(value: float, step: float) -> bool:
    if isinstance(value, int) and isinstance(step, int):
        return value % step == 0
    quotient = value / step
    return abs(quotient - round(quotient)) < 1e-9


def _at(message: str, path: str) -> str:
    return message if path == "$" else f"{message} - at `{path}`"
