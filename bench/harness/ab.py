"""The regression gate: `bench/run.py COMMAND --against REF`.

The engine at REF (a commit or tag) is installed, non-editable, into a virtualenv of its own,
`bench/.ab-venvs/<sha>` (made once per commit from a temporary git worktree, then reused).
Then every workload of COMMAND runs for both engines on the same server, each run in a
process of its own with its own interpreter (A: REF's, B: the working tree's, with `src/`
first on its path) but the working tree's harness, in rounds that alternate the order and
put a floor(8) measurement between each pair:

    floor, A, B, floor, B, A, floor, A, B, floor

so each run sits next to one floor measurement, and each pair shares the same minutes. The
figure of a run is printed as a JSON line with its side, round, commit and ratio to that
floor; once a workload's rounds are over, one `ab` line per figure gives both medians and
B ÷ A (the median of the per-round ratios: the machine's drift cancels within a round). A
Markdown table of the medians closes the run on stderr, and every line is appended to
`bench/results/ab-<date>.jsonl` (unless `--no-record`).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import fcntl
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from .floor import floor
from .report import emit

BENCH = Path(__file__).resolve().parent.parent
REPO = BENCH.parent
VENVS = BENCH / ".ab-venvs"
RESULTS = BENCH / "results"
PINNED = ("asyncpg", "msgspec")
"""Installed into REF's virtualenv at the working tree's versions when REF allows them: the
comparison is of engines, not of drivers."""

SIDE_TIMEOUT = 1800.0
"""Seconds one run of one workload may take before it is killed (and the A/B aborted)."""

FLOOR_SECONDS = 2.0

WARM_UP = 2000
"""Instances of w1 bulk each side runs, unrecorded, before the first round."""

PRIMARY = {"rate": "higher", "p50_ms": "lower", "p99_ms": "lower"}
"""The figures compared, and which way is better."""

COSTS = (
    "client_cpu_ms_per_step",
    "server_cpu_ms_per_step",
    "statements_per_step",
    "statements_per_signal",
    "claim_in_server_p50_ms",
)
"""Reported beside the figures, medians of both sides."""


class AbError(Exception):
    """A one-line reason the A/B cannot run."""


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise AbError(f"git {' '.join(args)}: {done.stderr.strip() or 'failed'}")
    return done.stdout.strip()


def resolve(ref: str) -> str:
    """The full sha of the commit `ref` names."""
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except AbError:
        raise AbError(f"--against {ref}: not a commit or tag of this repository") from None


def working_commit() -> tuple[str, bool]:
    """HEAD's sha and whether the engine differs from it (changes under src/ or in
    pyproject.toml, untracked files included)."""
    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=all", "--", "src", "pyproject.toml")
    return sha, bool(status)


@dataclass(frozen=True)
class Side:
    label: str  # "A" (REF) or "B" (the working tree)
    commit: str
    dirty: bool
    python: Path
    pythonpath: str  # what PYTHONPATH the side's processes get ("" for none)
    expect_under: Path  # the gendurable it imports must live under this

    @property
    def short(self) -> str:
        return self.commit[:7] + ("+dirty" if self.dirty else "")


def _versions(python: Path) -> dict[str, str]:
    code = (
        "import json, importlib.metadata as m; "
        f"print(json.dumps({{n: m.version(n) for n in {list(PINNED)!r}}}))"
    )
    done = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout))


def ensure_venv(sha: str) -> Path:
    """The interpreter of `bench/.ab-venvs/<sha>`, made first if it is not there yet."""
    venv = VENVS / sha
    python = venv / "bin" / "python"
    ready = venv / ".ready"
    VENVS.mkdir(exist_ok=True)
    with open(VENVS / f"{sha}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two A/B runs building the same commit
        if ready.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)  # a build that did not finish
        print(f"ab: installing gendurable {sha[:7]} into {venv} ...", file=sys.stderr)
        with tempfile.TemporaryDirectory(prefix="gendurable-ab-") as tmp:
            tree = Path(tmp) / "tree"
            _git("worktree", "add", "--detach", str(tree), sha)
            try:
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
                pip = [str(python), "-m", "pip", "install", "-q"]
                pins = [f"{name}=={metadata.version(name)}" for name in PINNED]
                if subprocess.run([*pip, str(tree), *pins], check=False).returncode != 0:
                    print("ab: REF refuses the working tree's driver versions", file=sys.stderr)
                    subprocess.run([*pip, str(tree)], check=True)
            finally:
                _git("worktree", "remove", "--force", str(tree))
        ready.write_text(sha + "\n")
    return python


def sides(ref: str) -> tuple[Side, Side]:
    sha = resolve(ref)
    python = ensure_venv(sha)
    head, dirty = working_commit()
    a = Side("A", sha, False, python, "", python.parent.parent)
    b = Side("B", head, dirty, Path(sys.executable), str(REPO / "src"), REPO / "src")
    return a, b


@dataclass(frozen=True)
class Workload:
    name: str
    params: dict[str, Any]


def plan(args: argparse.Namespace) -> list[Workload]:
    """The workloads of `args.command`, as `bench/run.py` runs them without `--against`."""
    everything = args.command == "all"
    top = max(args.concurrency)
    one_n = args.instances or 2000
    bulk_n = args.instances or 10_000
    one = [Workload("w1.one", {"instances": one_n, "concurrency": c}) for c in args.concurrency]
    bulk = [Workload("w1.bulk", {"instances": bulk_n, "concurrency": c}) for c in args.concurrency]
    procs = [
        Workload("w1.workers", {"workers": n, "instances": one_n, "concurrency": top})
        for n in args.workers or [1, 2, 4]
    ]
    out: list[Workload] = []
    if everything:
        out += one + bulk + procs
    elif args.command == "w1":
        out += procs if args.workers else bulk if args.bulk else one
    if args.command in ("w2", "all"):
        out.append(Workload("w2", {"jobs": args.jobs, "concurrency": top}))
    if args.command in ("w3", "all"):
        out.append(Workload("w3", {"signals": args.signals, "concurrency": top}))
    if args.command in ("scale", "all"):
        out += [Workload("scale", {"rows": rows, "concurrency": top}) for rows in args.rows]
    if args.command in ("idle", "all"):
        out.append(Workload("idle", {"seconds": args.seconds}))
    return out


def check(args: argparse.Namespace) -> None:
    """Refuse what an A/B cannot do, before anything is built."""
    if args.command == "floor":
        raise AbError("--against compares engines: give a workload (w1, w2, w3, scale, idle, all)")
    if args.with_peers:
        raise AbError("--against runs gendurable only: drop --with-peers")
    if args.rounds < 1:
        raise AbError(f"--rounds must be at least 1, got {args.rounds}")


@dataclass
class Run:
    """The lines one run of one workload printed, and how long its process took."""

    lines: list[dict[str, Any]]
    seconds: float
    skipped: str | None = None
    stderr: str = ""

    def last_error(self) -> str:
        """The last unindented line naming an error (an engine's logged traceback ends so)."""
        found = [x for x in self.stderr.splitlines() if x[:1].isalpha() and "Error" in x]
        return found[-1] if found else ""


async def run_side(side: Side, workload: Workload, dsn: str) -> Run:
    spec = {"dsn": dsn, "workload": workload.name, "params": workload.params}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if side.pythonpath:
        env["PYTHONPATH"] = side.pythonpath
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        str(side.python),
        "-m",
        "harness.ab_side",
        json.dumps(spec),
        cwd=BENCH,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(SIDE_TIMEOUT):
            out, err = await proc.communicate()
    except TimeoutError:
        return Run([], time.perf_counter() - started, f"timed out after {SIDE_TIMEOUT:.0f} s")
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    seconds = time.perf_counter() - started
    stderr = err.decode(errors="replace")
    lines = [json.loads(raw) for raw in out.decode().splitlines() if raw.startswith("{")]
    head = lines[0] if lines and lines[0].get("bench") == "side" else None
    if head is None:
        reason = f"the process exited ({proc.returncode}) before reporting"
        return Run([], seconds, reason, stderr)
    if not _within(head["gendurable_file"], side.expect_under):
        raise AbError(
            f"side {side.label} imported {head['gendurable_file']}, not the engine under "
            f"{side.expect_under}"
        )
    skipped = next((line["skipped"] for line in lines if "skipped" in line), None)
    if skipped is None and proc.returncode != 0:
        skipped = f"the process exited with {proc.returncode}"
    return Run([line for line in lines if line.get("bench") != "side"], seconds, skipped, stderr)


def _within(path: str, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder.resolve())


def _key(line: dict[str, Any]) -> tuple[str, str]:
    return line["bench"], line.get("variant", "")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _round3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass
class Figures:
    """Every run of one workload: (round, side label, floor8 next to it, line)."""

    runs: list[tuple[int, str, float, dict[str, Any]]] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)

    def summary(self, common: dict[str, Any]) -> list[dict[str, Any]]:
        keys: list[tuple[str, str]] = []
        for _, _, _, line in self.runs:
            if _key(line) not in keys:
                keys.append(_key(line))
        out = []
        for key in keys:
            mine = [(r, s, f, line) for r, s, f, line in self.runs if _key(line) == key]
            first = True
            for metric, better in PRIMARY.items():
                if not any(metric in line for *_, line in mine):
                    continue
                unit = str(mine[0][3].get("unit", ""))
                if metric == "rate" and unit.startswith("statements"):
                    better = "lower"  # idle: what an engine with nothing to do sends
                out.append(self._summary(key, metric, better, mine, common, costs=first))
                first = False
        return out

    def _summary(
        self,
        key: tuple[str, str],
        metric: str,
        better: str,
        mine: list[tuple[int, str, float, dict[str, Any]]],
        common: dict[str, Any],
        *,
        costs: bool,
    ) -> dict[str, Any]:
        def by_round(label: str, name: str) -> dict[int, float]:
            return {
                r: line[name] for r, s, _, line in mine if s == label and line.get(name) is not None
            }

        a_rounds, b_rounds = by_round("A", metric), by_round("B", metric)
        pairs = [
            b_rounds[r] / a_rounds[r] for r in sorted(a_rounds) if r in b_rounds and a_rounds[r]
        ]
        floors = [f for _, _, f, _ in mine]
        unit = next((line.get("unit") for *_, line in mine if line.get("unit")), "ms")
        line: dict[str, Any] = {
            "bench": "ab",
            **common,
            "figure": key[0],
            "variant": key[1],
            "metric": metric,
            "unit": unit if metric == "rate" else "ms",
            "better": better,
            "rounds": len(pairs),
            "a": _median(list(a_rounds.values())),
            "b": _median(list(b_rounds.values())),
            "b_over_a": _round3(_median(pairs)),
            "b_over_a_rounds": [round(p, 3) for p in pairs],
            "a_rounds": [a_rounds[r] for r in sorted(a_rounds)],
            "b_rounds": [b_rounds[r] for r in sorted(b_rounds)],
            "floor8_median": round(statistics.median(floors)) if floors else None,
        }
        if metric == "rate":
            for label in ("A", "B"):
                ratios = list(by_round(label, "ratio_to_floor8").values())
                if ratios:
                    line[f"{label.lower()}_ratio_to_floor8"] = _round3(_median(ratios))
        if costs:
            for cost in COSTS:
                a_cost, b_cost = by_round("A", cost), by_round("B", cost)
                if a_cost or b_cost:
                    line[f"a_{cost}"] = _round3(_median(list(a_cost.values())))
                    line[f"b_{cost}"] = _round3(_median(list(b_cost.values())))
        for label, note in self.notes.items():
            line[f"{label.lower()}_skipped"] = note
        return line


def _cell(value: Any, fmt: str = "{:,.0f}") -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value < 100:
        return f"{value:.3g}"
    return fmt.format(value)


def table(summaries: list[dict[str, Any]], a: Side, b: Side) -> str:
    rows = [
        f"| figure | A: {a.short} | B: {b.short} | B ÷ A | A ÷ floor(8) | B ÷ floor(8) | "
        "client CPU ms/step A → B | server CPU ms/step A → B | statements/step A → B |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for s in summaries:
        name = f"{s['figure']} {s['variant']}".strip()
        if s["metric"] != "rate":
            name += f" ({s['metric'].split('_')[0]})"
        unit = s["unit"].split(" (")[0]

        def pair(cost: str, s: dict[str, Any] = s) -> str:
            if f"a_{cost}" not in s:
                return ""
            return f"{_cell(s[f'a_{cost}'])} → {_cell(s[f'b_{cost}'])}"

        rows.append(
            "| "
            + " | ".join(
                [
                    name,
                    f"{_cell(s['a'])} {unit}",
                    f"{_cell(s['b'])} {unit}",
                    _cell(s["b_over_a"]),
                    _cell(s.get("a_ratio_to_floor8")),
                    _cell(s.get("b_ratio_to_floor8")),
                    pair("client_cpu_ms_per_step"),
                    pair("server_cpu_ms_per_step"),
                    pair("statements_per_step") or pair("statements_per_signal"),
                ]
            )
            + " |"
        )
        for label in ("a", "b"):
            if f"{label}_skipped" in s:
                rows.append(f"| ↳ {label.upper()} skipped: {s[f'{label}_skipped']} |")
    return "\n".join(rows)


class Logs:
    """What the sides' processes wrote to stderr (an engine's logged errors, say), one file
    per run in `folder`: a line on stderr points at it, the table stays readable."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def keep(self, workload: Workload, round_: int, side: Side, run: Run) -> Path | None:
        if not run.stderr.strip():
            return None
        self.folder.mkdir(exist_ok=True)
        n = len(list(self.folder.iterdir()))
        path = self.folder / f"{n:03d}-{workload.name}-round{round_}-{side.label}.log"
        path.write_text(run.stderr)
        count = len(run.stderr.splitlines())
        print(
            f"ab: {workload.name} round {round_} side {side.label} ({side.short}): {count} "
            f"line(s) on stderr, in {path}"
            + (f"; last: {run.last_error()}" if run.last_error() else ""),
            file=sys.stderr,
        )
        return path


class Recorder:
    """Prints each line and keeps it for `bench/results/ab-<date>.jsonl`."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.lines: list[dict[str, Any]] = []

    def out(self, **fields: Any) -> dict[str, Any]:
        line = {"run": self.run_id, **fields}
        self.lines.append(line)
        emit(**line)
        return line

    def save(self) -> Path:
        RESULTS.mkdir(exist_ok=True)
        path = RESULTS / f"ab-{self.run_id[:10]}.jsonl"
        with path.open("a") as f:
            for line in self.lines:
                f.write(json.dumps(line) + "\n")
        return path


async def run(dsn: str, args: argparse.Namespace, a: Side, b: Side, *, server_local: bool) -> None:
    started = time.perf_counter()
    run_id = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    rec = Recorder(run_id)
    logs = Logs(Path(tempfile.gettempdir()) / f"gendurable-ab-{run_id[:19].replace(':', '')}")
    commits = {"a_commit": a.commit, "b_commit": b.commit, "b_dirty": b.dirty}
    f1, f8 = await floor(dsn, 1), await floor(dsn, 8)
    rec.out(
        bench="ab-run",
        command=" ".join(["python", "bench/run.py", *sys.argv[1:]]),
        against=args.against,
        **commits,
        rounds=args.rounds,
        a_versions=_versions(a.python),
        b_versions=_versions(b.python),
        system=platform.platform(),
        python=platform.python_version(),
        cpus=os.cpu_count(),
        server_local=server_local,
        floor1_tx_per_s=round(f1),
        floor8_tx_per_s=round(f8),
    )
    # A fresh server is slower at first (WAL segments made rather than recycled, cold
    # caches): whichever side ran first would pay for it. Both warm it up, unrecorded.
    warm_up = Workload("w1.bulk", {"instances": WARM_UP, "concurrency": max(args.concurrency)})
    for side in (a, b):
        warmed = await run_side(side, warm_up, dsn)
        if warmed.skipped:
            print(f"ab: side {side.label} warm-up: {warmed.skipped}", file=sys.stderr)
    summaries: list[dict[str, Any]] = []
    for workload in plan(args):
        figures = Figures()
        floor8 = await floor(dsn, 8, seconds=FLOOR_SECONDS)
        for r in range(args.rounds):
            rec.out(bench="floor", workload=workload.name, round=r, floor8_tx_per_s=round(floor8))
            order = (a, b) if r % 2 == 0 else (b, a)
            results = [(side, await run_side(side, workload, dsn)) for side in order]
            after = await floor(dsn, 8, seconds=FLOOR_SECONDS)
            for position, (side, result) in enumerate(results):
                beside = floor8 if position == 0 else after
                if result.skipped:
                    figures.notes[side.label] = result.skipped
                log = logs.keep(workload, r, side, result)
                for line in result.lines:
                    line.update(
                        side=side.label,
                        commit=side.commit,
                        round=r,
                        process_seconds=round(result.seconds, 1),
                        floor8_beside=round(beside),
                    )
                    if log is not None:
                        line.update(stderr_log=str(log), stderr_error=result.last_error())
                    if "rate" in line and str(line.get("unit", "")).endswith("/s"):
                        line["ratio_to_floor8"] = round(line["rate"] / beside, 3)
                    figures.runs.append((r, side.label, beside, line))
                    rec.out(**line)
            floor8 = after
        rec.out(
            bench="floor", workload=workload.name, round=args.rounds, floor8_tx_per_s=round(floor8)
        )
        for note_side, note in figures.notes.items():
            print(f"ab: {workload.name}: side {note_side} skipped: {note}", file=sys.stderr)
        for line in figures.summary(commits):
            summaries.append(rec.out(**line, workload=workload.name))
    elapsed = time.perf_counter() - started
    rec.out(bench="ab-end", **commits, seconds=round(elapsed))
    print(table(summaries, a, b), file=sys.stderr)
    print(
        f"\nA = {a.commit} ({args.against}), B = {b.commit}"
        + (" with uncommitted changes" if b.dirty else "")
        + f"; {args.rounds} round(s), medians; B ÷ A is the median of the per-round ratios "
        "(above 1: B faster for a rate, slower for a latency). "
        f"Took {elapsed / 60:.1f} min.",
        file=sys.stderr,
    )
    if not args.no_record:
        path = rec.save()
        print(f"recorded in {path.relative_to(REPO)}", file=sys.stderr)
