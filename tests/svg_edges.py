"""Reading the dashboard's SVG diagram back: the arrows it draws, from geometry alone.

Shared by the diagram tests and the compiler's property test. Each path of class `edge` is
matched to the node its first point and its last point touch, and sampled along its length:
an arrow that runs behind a step's box is as good as missing to a reader, so it fails here.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

from gendurable.spec import WorkflowSpec

SVG = "{http://www.w3.org/2000/svg}"
MARKER = "[*]"
_EDGE_LINE = re.compile(r" {4}(\S+) --> (\S+)")
_COMMAND = re.compile(r"([MLC])([^MLC]*)")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")

Point = tuple[float, float]
Box = tuple[float, float, float, float]  # x, y, width, height


def _boxes(root: ET.Element) -> dict[str, Box]:
    """Every drawn node by name (`[*]start`, `[*]end` for the markers) and its bounding box."""
    boxes: dict[str, Box] = {}
    for group in root.iter(f"{SVG}g"):
        name = group.attrib.get("data-step")
        if name is not None:
            rect = group.find(f"{SVG}rect")
            assert rect is not None
            a = rect.attrib
            boxes[name] = (float(a["x"]), float(a["y"]), float(a["width"]), float(a["height"]))
    for circle in root.iter(f"{SVG}circle"):
        classes = circle.attrib.get("class", "").split()
        if "marker" in classes or "ring" in classes:
            cx, cy, r = (float(circle.attrib[k]) for k in ("cx", "cy", "r"))
            side = "start" if "start" in classes else "end"
            boxes[MARKER + side] = (cx - r, cy - r, 2 * r, 2 * r)
    return boxes


def _segments(d: str) -> list[list[Point]]:
    """The path as a list of segments, each its control points (2 for a line, 4 for a curve)."""
    segments: list[list[Point]] = []
    pen: Point | None = None
    for command, args in _COMMAND.findall(d):
        numbers = [float(n) for n in _NUMBER.findall(args)]
        points = list(zip(numbers[::2], numbers[1::2], strict=True))
        if command == "M":
            assert len(points) == 1
            pen = points[0]
            continue
        assert pen is not None
        for i in range(0, len(points), 1 if command == "L" else 3):
            hop = points[i : i + (1 if command == "L" else 3)]
            segments.append([pen, *hop])
            pen = hop[-1]
    return segments


def _samples(segments: list[list[Point]], n: int = 60) -> Iterator[Point]:
    for points in segments:
        for i in range(n + 1):
            t = i / n
            if len(points) == 2:
                (x0, y0), (x1, y1) = points
                yield x0 + (x1 - x0) * t, y0 + (y1 - y0) * t
            else:
                (x0, y0), (x1, y1), (x2, y2), (x3, y3) = points
                u = 1 - t
                yield (
                    u**3 * x0 + 3 * u * u * t * x1 + 3 * u * t * t * x2 + t**3 * x3,
                    u**3 * y0 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t**3 * y3,
                )


def _near(point: Point, box: Box, slack: float) -> bool:
    x, y, w, h = box
    return x - slack <= point[0] <= x + w + slack and y - slack <= point[1] <= y + h + slack


def _inside(point: Point, box: Box, margin: float = 1.0) -> bool:
    x, y, w, h = box
    return x + margin < point[0] < x + w - margin and y + margin < point[1] < y + h - margin


def _touching(point: Point, boxes: dict[str, Box]) -> str:
    names = [name for name, box in boxes.items() if _near(point, box, 3.0)]
    assert len(names) == 1, f"an arrow ends at {point}, touching {names or 'no node'}"
    return names[0]


def drawn_edges(svg: str) -> list[tuple[str, str]]:
    """The arrows of the drawing as (source, target), read from geometry alone; each checked
    to stay on the canvas and to pass through no other node on its way."""
    root = ET.fromstring(svg)
    boxes = _boxes(root)
    canvas = (0.0, 0.0, float(root.attrib["width"]), float(root.attrib["height"]))
    edges: list[tuple[str, str]] = []
    for path in root.iter(f"{SVG}path"):
        if "edge" not in path.attrib.get("class", "").split():
            continue
        segments = _segments(path.attrib["d"])
        source = _touching(segments[0][0], boxes)
        target = _touching(segments[-1][-1], boxes)
        for point in _samples(segments):
            assert _near(point, canvas, 0.0), f"the arrow {source} -> {target} leaves the canvas"
            hidden = [
                n for n, box in boxes.items() if n not in (source, target) and _inside(point, box)
            ]
            assert not hidden, f"the arrow {source} -> {target} runs behind {hidden} at {point}"
        edges.append((source.removesuffix("start"), target.removesuffix("end")))
    return edges


def mermaid_edges(spec: WorkflowSpec) -> list[tuple[str, str]]:
    lines = spec.to_mermaid().splitlines()
    return [m.groups() for line in lines if (m := _EDGE_LINE.fullmatch(line))]  # type: ignore[misc]
