"""A workflow's state diagram as inline SVG, drawn on the server.

The dashboard runs with no network and no JavaScript bundle, so it does not ship Mermaid:
the transition table of a `WorkflowSpec` is laid out here in layers (a longest-path
layering of the graph without its back edges, then a few barycentre sweeps to uncross
edges) and written as plain SVG. Forward edges go down; back edges (retries of an earlier
step, loops) curve round the right-hand side. One step can be highlighted (an instance's
current step); the styles are classes, so the stylesheet decides the colours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from ..spec import END, WorkflowSpec

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
_LOOP = 26.0  # how far back edges swing out to the right


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

    @property
    def is_marker(self) -> bool:
        return self.name in (START_NODE, END_NODE)


def diagram_svg(spec: WorkflowSpec, *, current: str | None = None, status: str = "") -> str:
    """The spec's state diagram as an `<svg>` element (a string of trusted markup).

    `current` names the step to highlight (class `current`, plus `status-<status>` so a
    failed or finished instance can look different). Unknown names highlight nothing.
    """
    nodes, forward, back = _graph(spec)
    _layer(nodes, forward)
    order = _order(nodes)
    width, height = _place(nodes, order)
    right = max(n.x + n.width / 2 for n in nodes.values())
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="diagram" role="img" '
        f'width="{width + _LOOP * (len(back) + 1):.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width + _LOOP * (len(back) + 1):.0f} {height:.0f}" '
        f"aria-label={quoteattr(f'state diagram of {spec.name}')}>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" '
        'markerWidth="7" markerHeight="7" orient="auto-start-reverse">'
        '<path d="M0,0 L10,5 L0,10 z" class="arrowhead"/></marker></defs>',
    ]
    for source, target in forward:
        parts.append(_forward_path(nodes[source], nodes[target]))
    for i, (source, target) in enumerate(back):
        parts.append(_back_path(nodes[source], nodes[target], right + _LOOP * (i + 1)))
    for node in nodes.values():
        parts.append(_node_svg(node, current=current, status=status))
    parts.append("</svg>")
    return "".join(parts)


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
    edges = [(START_NODE, spec.start_step)]
    for source, target in spec.edges():
        edges.append((source, END_NODE if target == END else target))
    if any(t == END_NODE for _, t in edges):
        nodes[END_NODE] = _Node(END_NODE, "", "")
    edges = [(s, t) for s, t in dict.fromkeys(edges) if s in nodes and t in nodes]
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
    for s, t in forward:
        nodes[t].preds.append(s)
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


def _place(nodes: dict[str, _Node], layers: list[list[str]]) -> tuple[float, float]:
    """Sizes and positions; the width and height of the drawing (before back edges)."""
    for node in nodes.values():
        if node.is_marker:
            node.width = node.height = 2 * _DOT
        else:
            text = max(len(node.label) * _CHAR, len(node.note) * _SMALL_CHAR)
            node.width = text + 2 * _PAD_X
            node.height = _TALL if node.note else _HEIGHT
    widths = [sum(nodes[n].width for n in layer) + _GAP_X * (len(layer) - 1) for layer in layers]
    total = max(widths) + 2 * _MARGIN
    y = _MARGIN
    for layer, width in zip(layers, widths, strict=True):
        x = (total - width) / 2
        tallest = max(nodes[n].height for n in layer)
        for name in layer:
            node = nodes[name]
            node.x = x + node.width / 2
            node.y = y + (tallest - node.height) / 2
            x += node.width + _GAP_X
        y += tallest + _GAP_Y
    return total, y - _GAP_Y + _MARGIN


# -- drawing --------------------------------------------------------------------------------


def _forward_path(source: _Node, target: _Node) -> str:
    x1, y1 = source.x, source.y + source.height
    x2, y2 = target.x, target.y
    bend = (y2 - y1) / 2
    return (
        f'<path class="edge" marker-end="url(#arrow)" '
        f'd="M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 + bend:.1f} {x2:.1f},{y2 - bend:.1f} '
        f'{x2:.1f},{y2:.1f}"/>'
    )


def _back_path(source: _Node, target: _Node, swing: float) -> str:
    x1, y1 = source.x + source.width / 2, source.y + source.height / 2
    x2, y2 = target.x + target.width / 2, target.y + target.height / 2
    if source is target:  # a step that loops on itself
        y1, y2 = y1 - 6, y1 + 6
        swing = x1 + _LOOP
    return (
        f'<path class="edge back" marker-end="url(#arrow)" '
        f'd="M{x1:.1f},{y1:.1f} C{swing:.1f},{y1:.1f} {swing:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"/>'
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
