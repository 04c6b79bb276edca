"""The dashboard's server-drawn state diagram (no database, no browser)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

import msgspec

import gendurable as gd
from gendurable.web.diagram import diagram_svg

SVG = "{http://www.w3.org/2000/svg}"


@gd.workflow(name="diagram.loop")
class Loop:
    """start -> fetch -> check -> (fetch again | publish) -> end, with a self-loop."""

    class State(msgspec.Struct):
        tries: int = 0

    @gd.step(start=True)
    async def fetch(self, state: State, ctx: gd.Context) -> gd.Outcome:
        return gd.goto(self.check)

    @gd.step
    @gd.await_signals("checked", "<b>odd</b>", timeout=None)
    async def check(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if state.tries > 3:
            return gd.goto(self.publish)
        return gd.goto(self.fetch)

    @gd.step
    async def publish(self, state: State, ctx: gd.Context) -> gd.Outcome:
        if state.tries:
            return gd.goto(self.publish)
        return gd.done()


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # well-formed XML, or this raises


def _steps(root: ET.Element) -> dict[str, ET.Element]:
    return {g.attrib["data-step"]: g for g in root.iter(f"{SVG}g") if "data-step" in g.attrib}


def _box(group: ET.Element) -> tuple[float, float, float, float]:
    rect = group.find(f"{SVG}rect")
    assert rect is not None
    a: Any = rect.attrib
    return float(a["x"]), float(a["y"]), float(a["width"]), float(a["height"])


def test_web_diagram_draws_every_step_once_with_start_and_end_markers() -> None:
    root = _parse(diagram_svg(Loop.spec))

    steps = _steps(root)
    assert set(steps) == {"fetch", "check", "publish"}
    assert root.find(f".//{SVG}circle[@class='marker start']") is not None
    assert root.find(f".//{SVG}g[@class='marker end']") is not None
    note = steps["check"].findall(f"{SVG}text")[1].text
    assert note == "awaits checked, <b>odd</b>"  # escaped in the markup, text when parsed


def test_web_diagram_edges_go_down_and_loops_curve_back() -> None:
    root = _parse(diagram_svg(Loop.spec))
    paths = root.findall(f"{SVG}path")
    forward = [p for p in paths if p.attrib["class"] == "edge"]
    back = [p for p in paths if p.attrib["class"] == "edge back"]

    # start->fetch, fetch->check, check->publish, publish->end; check->fetch and the
    # publish self-loop are drawn as back edges.
    assert len(forward) == 4
    assert len(back) == 2
    for path in forward:
        ys = [float(y) for y in re.findall(r",(-?[\d.]+)", path.attrib["d"])]
        assert ys[-1] > ys[0]  # downwards
    steps = _steps(root)
    tops = {name: _box(group)[1] for name, group in steps.items()}
    assert tops["fetch"] < tops["check"] < tops["publish"]


def test_web_diagram_boxes_do_not_overlap_and_fit_the_canvas() -> None:
    root = _parse(diagram_svg(Loop.spec))
    width, height = float(root.attrib["width"]), float(root.attrib["height"])
    boxes = [_box(g) for g in _steps(root).values()]

    for i, (x, y, w, h) in enumerate(boxes):
        assert x >= 0
        assert x + w <= width
        assert y >= 0
        assert y + h <= height
        for x2, y2, w2, h2 in boxes[i + 1 :]:
            assert x + w <= x2 or x2 + w2 <= x or y + h <= y2 or y2 + h2 <= y


def test_web_diagram_highlights_the_current_step_with_its_status() -> None:
    root = _parse(diagram_svg(Loop.spec, current="check", status="awaiting"))
    none = _parse(diagram_svg(Loop.spec, current="gone", status="failed"))

    classes = {name: g.attrib["class"] for name, g in _steps(root).items()}
    assert classes == {
        "fetch": "step",
        "check": "step current status-awaiting",
        "publish": "step",
    }
    assert all(g.attrib["class"] == "step" for g in _steps(none).values())


def test_web_diagram_places_side_by_side_steps_of_one_layer() -> None:
    @gd.workflow(name="diagram.fork")
    class Fork:
        @gd.step(start=True)
        async def split(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            if state:
                return gd.goto(self.left)
            return gd.goto(self.right)

        @gd.step
        async def left(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.goto(self.join)

        @gd.step
        async def right(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.goto(self.join)

        @gd.step
        async def join(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    boxes = {n: _box(g) for n, g in _steps(_parse(diagram_svg(Fork.spec))).items()}

    assert boxes["left"][1] == boxes["right"][1]  # one layer
    assert boxes["left"][0] + boxes["left"][2] < boxes["right"][0]
    assert boxes["split"][1] < boxes["left"][1] < boxes["join"][1]


def test_web_diagram_shows_an_awaits_timeout_as_the_mermaid_text_does() -> None:
    @gd.workflow(name="diagram.timed")
    class Timed:
        @gd.step(start=True)
        @gd.await_signals("ok", "no", timeout=timedelta(minutes=2))
        async def wait(self, state: Any, ctx: gd.Context) -> gd.Outcome:
            return gd.done()

    note = _steps(_parse(diagram_svg(Timed.spec)))["wait"].findall(f"{SVG}text")[1].text

    assert note == "awaits ok, no (timeout 2m)"
    assert "    wait : awaits ok, no (timeout 2m)" in Timed.spec.to_mermaid()
