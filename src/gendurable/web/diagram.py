"""A workflow's state diagram as inline SVG, drawn on the server.

The dashboard runs with no network and no JavaScript bundle, so it does not ship Mermaid:
the arrows of `WorkflowSpec.diagram_edges()` (the ones `to_mermaid()` writes) are laid out
here in layers (a longest-path layering of the graph without its back edges, then a few
barycentre sweeps to uncross edges) and written as plain SVG. Forward edges go down; one that
skips layers takes a lane of its own through each layer it crosses, so it never runs behind a
step. Back edges (retries of an earlier step, loops) leave the bottom of their step, run up
a lane right of the drawing and enter the top of their target; a step that loops on itself
gets a small loop on its right. One step can be highlighted (an instance's current step);
the styles are classes, so the stylesheet decides the colours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise
from xml.sax.saxutils import escape, quoteattr

from ..spec import END, START, WorkflowSpec

START_NODE = "\x00start"
END_NODE = "\x00end"

_CHAR = 7.8  # px per character of the 13px monospace step names
_SMALL_CHAR = 6.6  # px per character of the 11px "awaits ..." line
_PAD_X = 14.0
_HEIGHT = 34.0
_TALL = 50.0  # a step with an "awaits" line
_GAP_X = 28.0
_GAP_Y = 52.0
_MARGIN = 16.0
_DOT = 9.0
_LOOP = 26.0  # how far apart the lanes of back edges run, right of the drawing
_PORT = 0.3  # where back edges meet a step: this fraction of its width right of its centre
_CORNER = 8.0  # radius of the corners of a back edge
_RUN = 10.0  # the first back edge runs this far into the gap between layers...
_RUN_STEP = 5.0  # ...each further one this much further (at most _RUNS of them apart)
_RUNS = 7


@dataclass
class _Node:
    name: str
    label: str
    note: str
    layer: int = 0
    x: float = 0.0  # centre
    y: float = 0.0  # top
    width: float = 0.0
    height: float = 0.0
    preds: list[str] = field(default_factory=list)
    lane: bool = False  # a point a long forward edge passes through, not drawn

    @property
    def is_marker(self) -> bool:
        return self.name in (START_NODE, END_NODE)


@dataclass
class _Layout:
    nodes: dict[str, _Node]
    chains: list[list[str]]  # forward edges: source, the lanes they pass, target
    back: list[tuple[str, str]]
    bands: list[tuple[float, float]]  # top and bottom of each layer
    right: float  # right edge of the rightmost node
    width: float
    height: float


def diagram_svg(spec: WorkflowSpec, *, current: str | None = None, status: str = "") -> str:
    """The spec's state diagram as an `<svg>` element (a string of trusted markup).

    It draws exactly the arrows `spec.to_mermaid()` writes, each once. `current` names the
    step to highlight (class `current`, plus `status-<status>` so a failed or finished
    instance can look different). Unknown names highlight nothing.
    """
    layout = _layout(spec)
    width, height = layout.width, layout.height
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="diagram" role="img" '
        f'width="{width:.0f}" height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f"aria-label={quoteattr(f'state diagram of {spec.name}')}>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>',
    ]
    for chain in layout.chains:
        parts.append(_forward_path([layout.nodes[n] for n in chain], layout.bands))
    lanes = 0
    for source, target in layout.back:
        if source == target:
            parts.append(_self_loop(layout.nodes[source]))
        else:
            lanes += 1
            parts.append(_back_path(layout, source, target, lanes))
    for node in layout.nodes.values():
        if not node.lane:
            parts.append(_node_svg(node, current=current, status=status))
    parts.append("</svg>")
    return "".join(parts)


def _layout(spec: WorkflowSpec) -> _Layout:
    nodes, forward, back = _graph(spec)
    _layer(nodes, forward)
    chains = _chains(nodes, forward)
    order = _order(nodes)
    lanes = sum(1 for s, t in back if s != t)
    last = len(order) - 1
    # A back edge runs through the gap above its target and below its source: the first and
    # last layer get one when a back edge needs it.
    above = any(nodes[t].layer == 0 for s, t in back if s != t)
    below = any(nodes[s].layer == last for s, t in back if s != t)
    width, height, bands = _place(nodes, order, top=_GAP_Y if above else 0.0)
    right = max(n.x + n.width / 2 for n in nodes.values())
    return _Layout(
        nodes=nodes,
        chains=chains,
        back=back,
        bands=bands,
        right=right,
        width=width + _LOOP * (lanes + 1),
        height=height + (_GAP_Y if below else 0.0),
    )


# -- the graph ------------------------------------------------------------------------------


def _graph(
    spec: WorkflowSpec,
) -> tuple[dict[str, _Node], list[tuple[str, str]], list[tuple[str, str]]]:
    """Nodes, forward edges and back edges (found by a depth-first walk from the start)."""
    nodes = {START_NODE: _Node(START_NODE, "", "")}
    for step in spec.steps.values():
        note = ""
        if step.awaits is not None:
            note = "awaits " + step.awaits.label()
        nodes[step.name] = _Node(step.name, step.name, note)
    # START only ever begins an arrow and END only ever ends one (both are Mermaid's `[*]`).
    edges = [
        (START_NODE if s == START else s, END_NODE if t == END else t)
        for s, t in spec.diagram_edges()
    ]
    if any(t == END_NODE for _, t in edges):
        nodes[END_NODE] = _Node(END_NODE, "", "")
    out: dict[str, list[str]] = {n: [] for n in nodes}
    for s, t in edges:
        out[s].append(t)
    back: set[tuple[str, str]] = set()
    seen: set[str] = set()
    for root in nodes:  # the start first, then any step no edge reaches (computed gotos)
        if root in seen:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        on_path = {root}
        seen.add(root)
        while stack:
            node, i = stack[-1]
            if i == len(out[node]):
                stack.pop()
                on_path.discard(node)
                continue
            stack[-1] = (node, i + 1)
            target = out[node][i]
            if target in on_path:
                back.add((node, target))
            elif target not in seen:
                seen.add(target)
                on_path.add(target)
                stack.append((target, 0))
    forward = [e for e in edges if e not in back]
    return nodes, forward, [e for e in edges if e in back]


def _layer(nodes: dict[str, _Node], forward: list[tuple[str, str]]) -> None:
    """Longest-path layers over the forward edges (a DAG); the end marker goes last."""
    changed = True
    while changed:  # at most |nodes| rounds: the forward edges have no cycle
        changed = False
        for s, t in forward:
            if nodes[t].layer < nodes[s].layer + 1:
                nodes[t].layer = nodes[s].layer + 1
                changed = True
    if END_NODE in nodes:
        nodes[END_NODE].layer = 1 + max(n.layer for k, n in nodes.items() if k != END_NODE)


def _chains(nodes: dict[str, _Node], forward: list[tuple[str, str]]) -> list[list[str]]:
    """Each forward edge as the nodes it passes: a lane node in every layer it skips, so the
    ordering gives it a place of its own there and nothing is drawn over it."""
    chains = []
    for i, (s, t) in enumerate(forward):
        chain = [s]
        for layer in range(nodes[s].layer + 1, nodes[t].layer):
            name = f"\x00lane{i}.{layer}"
            nodes[name] = _Node(name, "", "", layer=layer, lane=True)
            chain.append(name)
        chain.append(t)
        for a, b in pairwise(chain):
            nodes[b].preds.append(a)
        chains.append(chain)
    return chains


def _order(nodes: dict[str, _Node]) -> list[list[str]]:
    """Nodes per layer, ordered by the mean position of their predecessors (two sweeps)."""
    depth = max(n.layer for n in nodes.values()) + 1
    layers: list[list[str]] = [[] for _ in range(depth)]
    for name, node in nodes.items():
        layers[node.layer].append(name)
    for _ in range(2):
        position = {name: i for layer in layers for i, name in enumerate(layer)}
        for layer in layers[1:]:
            keys = {}
            for i, name in enumerate(layer):
                preds = [position[p] for p in nodes[name].preds if p in position]
                keys[name] = (sum(preds) / len(preds) if preds else float(i), i)
            layer.sort(key=keys.__getitem__)
            position.update({name: i for i, name in enumerate(layer)})
    return layers


def _place(
    nodes: dict[str, _Node], layers: list[list[str]], *, top: float
) -> tuple[float, float, list[tuple[float, float]]]:
    """Sizes and positions: the width and height of the drawing (before back edges' lanes)
    and the top and bottom of each layer. A lane spans its layer's full height."""
    for node in nodes.values():
        if node.lane:
            node.width = node.height = 0.0
        elif node.is_marker:
            node.width = node.height = 2 * _DOT
        else:
            text = max(len(node.label) * _CHAR, len(node.note) * _SMALL_CHAR)
            node.width = text + 2 * _PAD_X
            node.height = _TALL if node.note else _HEIGHT
    widths = [sum(nodes[n].width for n in layer) + _GAP_X * (len(layer) - 1) for layer in layers]
    total = max(widths) + 2 * _MARGIN
    bands = []
    y = _MARGIN + top
    for layer, width in zip(layers, widths, strict=True):
        x = (total - width) / 2
        tallest = max(nodes[n].height for n in layer)
        for name in layer:
            node = nodes[name]
            if node.lane:
                node.height = tallest
            node.x = x + node.width / 2
            node.y = y + (tallest - node.height) / 2
            x += node.width + _GAP_X
        bands.append((y, y + tallest))
        y += tallest + _GAP_Y
    return total, y - _GAP_Y + _MARGIN, bands


# -- drawing --------------------------------------------------------------------------------


def _forward_path(chain: list[_Node], bands: list[tuple[float, float]]) -> str:
    """Down from the source's bottom, through each lane, into the target's top. Within a
    layer the path runs straight down its own column; between layers it bends."""
    first = chain[0]
    x, y = first.x, first.y + first.height
    d = [f"M{x:.1f},{y:.1f}"]
    bottom = bands[first.layer][1]
    if bottom > y:  # a step lower than its layer's tallest: down to the layer's edge first
        d.append(f"L{x:.1f},{bottom:.1f}")
        y = bottom
    for node in chain[1:]:
        top, bottom = bands[node.layer]
        bend = (top - y) / 2
        d.append(f"C{x:.1f},{y + bend:.1f} {node.x:.1f},{top - bend:.1f} {node.x:.1f},{top:.1f}")
        x, y = node.x, top
        stop = bottom if node.lane else node.y
        if stop > y:
            d.append(f"L{x:.1f},{stop:.1f}")
            y = stop
    return f'<path class="edge" marker-end="url(#arrow)" d="{" ".join(d)}"/>'


def _back_path(layout: _Layout, source: str, target: str, lane: int) -> str:
    """Down out of the source into the gap below its layer, right to the edge's own lane, up
    it to the gap above the target's layer, left and down into the target: every part of
    the way runs through a gap or right of every step, never behind one."""
    s, t = layout.nodes[source], layout.nodes[target]
    run = _RUN + _RUN_STEP * ((lane - 1) % _RUNS)
    x1 = s.x + s.width * _PORT
    x2 = t.x + t.width * _PORT
    below = layout.bands[s.layer][1] + run
    above = layout.bands[t.layer][0] - run
    side = layout.right + _LOOP * lane
    corners = [(x1, below), (side, below), (side, above), (x2, above)]
    d = [f"M{x1:.1f},{s.y + s.height:.1f}"]
    previous = (x1, s.y + s.height)
    for i, (cx, cy) in enumerate(corners):
        after = corners[i + 1] if i + 1 < len(corners) else (x2, t.y)
        into = _toward((cx, cy), previous, _CORNER)
        out = _toward((cx, cy), after, _CORNER)
        d.append(f"L{into[0]:.1f},{into[1]:.1f}")
        d.append(f"C{cx:.1f},{cy:.1f} {cx:.1f},{cy:.1f} {out[0]:.1f},{out[1]:.1f}")
        previous = (cx, cy)
    d.append(f"L{x2:.1f},{t.y:.1f}")
    return f'<path class="edge back" marker-end="url(#arrow)" d="{" ".join(d)}"/>'


def _toward(
    corner: tuple[float, float], other: tuple[float, float], by: float
) -> tuple[float, float]:
    """The point `by` along the straight line from `corner` to `other` (at most halfway)."""
    dx, dy = other[0] - corner[0], other[1] - corner[1]
    length = (dx * dx + dy * dy) ** 0.5
    if length == 0:
        return corner
    step = min(by, length / 2) / length
    return corner[0] + dx * step, corner[1] + dy * step


def _self_loop(node: _Node) -> str:
    """A step that loops on itself: out of its right side and back in, within the gap to
    its right (narrower than the gap between two steps)."""
    x, y = node.x + node.width / 2, node.y + node.height / 2
    swing = x + _LOOP
    return (
        f'<path class="edge back" marker-end="url(#arrow)" '
        f'd="M{x:.1f},{y - 6:.1f} C{swing:.1f},{y - 6:.1f} {swing:.1f},{y + 6:.1f} '
        f'{x:.1f},{y + 6:.1f}"/>'
    )


def _node_svg(node: _Node, *, current: str | None, status: str) -> str:
    if node.name == START_NODE:
        return (
            f'<circle class="marker start" cx="{node.x:.1f}" cy="{node.y + _DOT:.1f}" '
            f'r="{_DOT - 2:.1f}"><title>start</title></circle>'
        )
    if node.name == END_NODE:
        cy = node.y + _DOT
        return (
            f'<g class="marker end"><title>end (done or stopped)</title>'
            f'<circle class="ring" cx="{node.x:.1f}" cy="{cy:.1f}" r="{_DOT:.1f}"/>'
            f'<circle cx="{node.x:.1f}" cy="{cy:.1f}" r="{_DOT - 4:.1f}"/></g>'
        )
    classes = "step"
    if node.name == current:
        classes += " current" + (f" status-{status}" if status else "")
    left = node.x - node.width / 2
    title = node.label + (f" ({node.note})" if node.note else "")
    out = [
        f"<g class={quoteattr(classes)} data-step={quoteattr(node.name)}>",
        f"<title>{escape(title)}</title>",
        f'<rect x="{left:.1f}" y="{node.y:.1f}" width="{node.width:.1f}" '
        f'height="{node.height:.1f}" rx="8"/>',
        f'<text class="name" x="{node.x:.1f}" y="{node.y + 22:.1f}" text-anchor="middle">'
        f"{escape(node.label)}</text>",
    ]
    if node.note:
        out.append(
            f'<text class="note" x="{node.x:.1f}" y="{node.y + 39:.1f}" text-anchor="middle">'
            f"{escape(node.note)}</text>"
        )
    out.append("</g>")
    return "".join(out)
