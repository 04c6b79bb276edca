"""Checking JSON values against the JSON Schema msgspec writes (no database).

The checker stands in for msgspec when no code is loaded (the CLI, the dashboard without
`--app`), so each case asserts that it accepts exactly what msgspec decodes, and refuses the
rest in msgspec's words.
"""

from __future__ import annotations

import datetime
import enum
import uuid
from typing import Annotated, Any, Literal

import msgspec
import pytest

from gendurable.json_schema import UnsupportedSchema, describe_type, schema_problem


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Cat(msgspec.Struct, tag=True):
    lives: int


class Dog(msgspec.Struct, tag=True):
    name: str


class Point(msgspec.Struct, array_like=True):
    x: int
    y: int = 0


class Order(msgspec.Struct, forbid_unknown_fields=True, rename="camel"):
    placed_by: str
    count: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1
    price: Annotated[float, msgspec.Meta(gt=0, multiple_of=0.5)] = 1.0
    color: Color = Color.RED
    size: Literal["s", "m"] = "s"
    note: str | None = None
    tags: Annotated[list[str], msgspec.Meta(max_length=2)] = []
    pet: Cat | Dog | None = None
    counts: dict[str, int] = {}
    pair: tuple[int, str] = (0, "")
    at: Annotated[datetime.datetime, msgspec.Meta(tz=True)] | None = None
    ref: uuid.UUID | None = None
    blob: bytes = b""
    code: Annotated[str, msgspec.Meta(pattern="^[A-Z]+$", min_length=2)] = "AB"
    point: Point | None = None
    anything: Any = None
    parent: Order | None = None


Keyed = Annotated[
    dict[Annotated[str, msgspec.Meta(min_length=2)], int], msgspec.Meta(min_length=1, max_length=2)
]
"""A dict whose keys and size are constrained (`propertyNames`, `minProperties`...)."""

CASES: list[tuple[Any, Any]] = [
    (Order, {"placedBy": "ann"}),
    (Order, {"placedBy": 7}),
    (Order, {}),
    (Order, None),
    (Order, [1]),
    (Order, {"placedBy": "ann", "extra": 1}),
    (Order, {"placedBy": "ann", "count": 0}),
    (Order, {"placedBy": "ann", "count": 11}),
    (Order, {"placedBy": "ann", "count": 2.0}),
    (Order, {"placedBy": "ann", "count": True}),
    (Order, {"placedBy": "ann", "price": 0}),
    (Order, {"placedBy": "ann", "price": 1.25}),
    (Order, {"placedBy": "ann", "price": 3}),
    (Order, {"placedBy": "ann", "color": "blue"}),
    (Order, {"placedBy": "ann", "color": "green"}),
    (Order, {"placedBy": "ann", "size": "xl"}),
    (Order, {"placedBy": "ann", "size": 1}),
    (Order, {"placedBy": "ann", "note": None}),
    (Order, {"placedBy": "ann", "note": 3}),
    (Order, {"placedBy": "ann", "tags": ["a", "b", "c"]}),
    (Order, {"placedBy": "ann", "tags": ["a", 1]}),
    (Order, {"placedBy": "ann", "pet": {"type": "Cat", "lives": 9}}),
    (Order, {"placedBy": "ann", "pet": {"type": "Dog", "name": 9}}),
    (Order, {"placedBy": "ann", "pet": {"type": "Cow"}}),
    (Order, {"placedBy": "ann", "pet": "Cat"}),
    (Order, {"placedBy": "ann", "counts": {"a": 1}}),
    (Order, {"placedBy": "ann", "counts": {"a": "1"}}),
    (Order, {"placedBy": "ann", "pair": [1, "a"]}),
    (Order, {"placedBy": "ann", "pair": [1, "a", 2]}),
    (Order, {"placedBy": "ann", "pair": ["a", 1]}),
    (Order, {"placedBy": "ann", "at": "2030-01-01T00:00:00Z"}),
    (Order, {"placedBy": "ann", "at": "2030-01-01T00:00:00"}),
    (Order, {"placedBy": "ann", "at": "tomorrow"}),
    (Order, {"placedBy": "ann", "ref": str(uuid.UUID(int=1))}),
    (Order, {"placedBy": "ann", "ref": "not-a-uuid"}),
    (Order, {"placedBy": "ann", "blob": "aGk="}),
    (Order, {"placedBy": "ann", "blob": "%%%"}),
    (Order, {"placedBy": "ann", "code": "A"}),
    (Order, {"placedBy": "ann", "code": "ab"}),
    (Order, {"placedBy": "ann", "point": [1]}),
    (Order, {"placedBy": "ann", "point": [1, 2, 3]}),
    (Order, {"placedBy": "ann", "point": []}),
    (Order, {"placedBy": "ann", "anything": {"x": [1, None]}}),
    (Order, {"placedBy": "ann", "parent": {"placedBy": "bob"}}),
    (Order, {"placedBy": "ann", "parent": {"placedBy": 1}}),
    (int, 2**64),
    (int, -(2**63) - 1),
    (int, 5),
    (float, 5),
    (str | None, None),
    (str | int, 1.5),
    (list[int] | None, [1, "x"]),
    (Literal[1, "a"], True),
    (Any, [1, {"a": None}]),
    (Keyed, {"ab": 1}),
    (Keyed, {"a": 1}),
    (Keyed, {}),
    (Keyed, {"ab": 1, "cd": 2, "ef": 3}),
    (Annotated[str, msgspec.Meta(min_length=3)], "ab"),
    (Annotated[str, msgspec.Meta(max_length=3)], "abcd"),
    (Annotated[list[int], msgspec.Meta(min_length=1)], []),
]


@pytest.mark.parametrize(("tp", "value"), CASES)
def test_json_schema_check_accepts_exactly_what_msgspec_decodes(tp: Any, value: Any) -> None:
    try:
        msgspec.json.decode(msgspec.json.encode(value), type=tp)
        expected = None
    except msgspec.ValidationError as exc:
        expected = str(exc)

    problem = schema_problem(msgspec.json.schema(tp), value)

    assert (problem is None) == (expected is None), (problem, expected)


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ({"placedBy": 7}, "Expected `str`, got `int` - at `$.placedBy`"),
        ({}, "Object missing required field `placedBy`"),
        (None, "Expected `object`, got `null`"),
        ({"placedBy": "a", "extra": 1}, "Object contains unknown field `extra`"),
        ({"placedBy": "a", "count": 0}, "Expected `int` >= 1 - at `$.count`"),
        ({"placedBy": "a", "color": "green"}, "Invalid enum value 'green' - at `$.color`"),
        ({"placedBy": "a", "note": 3}, "Expected `str | null`, got `int` - at `$.note`"),
        ({"placedBy": "a", "counts": {"a": "1"}}, "Expected `int`, got `str` - at `$.counts[...]`"),
        (
            {"placedBy": "a", "pet": {"type": "Dog", "name": 9}},
            "Expected `str`, got `int` - at `$.pet.name`",
        ),
        (
            {"placedBy": "a", "parent": {"placedBy": "b", "count": 99}},
            "Expected `int` <= 10 - at `$.parent.count`",
        ),
        ({"placedBy": "a", "tags": ["a", 1]}, "Expected `str`, got `int` - at `$.tags[1]`"),
    ],
)
def test_json_schema_check_says_what_is_wrong_where_as_msgspec_does(value: Any, says: str) -> None:
    assert schema_problem(msgspec.json.schema(Order), value) == says


def test_json_schema_refuses_to_judge_a_schema_it_does_not_understand() -> None:
    with pytest.raises(UnsupportedSchema, match="the keyword 'if'"):
        schema_problem({"type": "object", "if": {"required": ["a"]}}, {})
    with pytest.raises(UnsupportedSchema, match="the format 'email'"):
        schema_problem({"anyOf": [{"type": "string", "format": "email"}, {"type": "null"}]}, None)
    with pytest.raises(UnsupportedSchema, match="the reference 'http://x/y'"):
        schema_problem({"$ref": "http://x/y"}, 1)


def test_json_schema_describe_type_names_the_type_and_holds_its_schema() -> None:
    described = describe_type(Order | None)

    assert describe_type(None) is None
    assert described is not None
    assert described["type"] == "Order | None"
    assert described["schema"] == msgspec.json.schema(Order | None)
