"""JSON lines on stdout, each figure with its ratio to the floor measured in the same run.

Standard library only (the peers' adapters print through it too). A closing Markdown table
of the run goes to stderr, so stdout stays pure JSON lines.
"""

from __future__ import annotations

import json
import sys
from typing import Any


def emit(**fields: Any) -> None:
    """Print one JSON line."""
    print(json.dumps(fields), flush=True)


class Report:
    """Collects the figures of one run and prints each as it comes."""

    def __init__(self) -> None:
        self.floor: dict[int, float] = {}
        self.lines: list[dict[str, Any]] = []
        self._held: list[dict[str, Any]] | None = None

    def hold(self) -> None:
        """Keep the next lines until `release`: their floor is measured around them."""
        self._held = []

    def release(self, before: float, after: float) -> None:
        """Print the held lines with ratios to the mean of floor(8) just before and just after
        them: on a shared, noisy machine the ratio is to the floor of the same minutes, and
        `floor8_drift` (after / before) says how steady the machine was meanwhile."""
        held, self._held = self._held or [], None
        base = (before + after) / 2
        for line in held:
            line["floor8_before"] = round(before)
            line["floor8_after"] = round(after)
            line["floor8_drift"] = round(after / before, 2)
            self._finish(line, base)

    def set_floors(self, floors: dict[int, float]) -> None:
        """Record the floor figures (8 connections is the reference), one line each."""
        self.floor.update(floors)
        for connections, tx_per_s in sorted(floors.items()):
            self._floor_line(connections, tx_per_s)

    def floor_again(self, floors: dict[int, float]) -> None:
        """The floor measured again at the end: how much the machine drifted in the run
        (ratios stay relative to the first measurement)."""
        for connections, tx_per_s in sorted(floors.items()):
            self._floor_line(connections, tx_per_s, when="end of run")

    def _floor_line(self, connections: int, tx_per_s: float, when: str = "start of run") -> None:
        self.add(
            {
                "bench": "floor",
                "system": "postgresql",
                "variant": f"{connections} connection(s), {when}",
                "what": "single-row UPDATE ... WHERE id = $1 transactions",
                "connections": connections,
                "rate": round(tx_per_s),
                "unit": "tx/s",
            }
        )

    def add(self, line: dict[str, Any]) -> dict[str, Any]:
        """Add the ratio to floor(8) to a line with a `rate`, print it and keep it (or hold
        it until its floor is known)."""
        if self._held is not None:
            self._held.append(line)
        else:
            self._finish(line, self.floor.get(8))
        return line

    def _finish(self, line: dict[str, Any], base: float | None) -> None:
        if base and line.get("bench") != "floor":
            line["floor8_tx_per_s"] = round(base)
        if "rate" in line and line.get("unit", "").endswith("/s") and base:
            line["ratio_to_floor8"] = round(line["rate"] / base, 3)
        self.lines.append(line)
        emit(**line)

    def summary(self) -> str:
        """The run as a Markdown table (one row per figure line)."""
        rows = [
            "| bench | system | variant | figure | floor(8) then | drift | ratio to floor(8) | "
            "stmts/step | client CPU ms/step | server CPU ms/step |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for line in self.lines:
            if "rate" in line:
                figure = f"{line['rate']:,} {line['unit'].split(' (')[0]}"
            elif "p50_ms" in line:
                figure = f"p50 {line['p50_ms']} ms / p99 {line['p99_ms']} ms"
            else:
                continue
            cells = [
                line["bench"],
                line["system"],
                line.get("variant", ""),
                figure,
                *(
                    _show(line.get(name))
                    for name in (
                        "floor8_tx_per_s",
                        "floor8_drift",
                        "ratio_to_floor8",
                        "statements_per_step",
                        "client_cpu_ms_per_step",
                        "server_cpu_ms_per_step",
                    )
                ),
            ]
            rows.append("| " + " | ".join(cells) + " |")
        return "\n".join(rows)

    def print_summary(self) -> None:
        print(self.summary(), file=sys.stderr, flush=True)


def _show(value: Any) -> str:
    return "" if value is None else f"{value}"
