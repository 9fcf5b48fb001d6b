"""Shared benchmark plumbing: timing, peak memory, and the one table every benchmark prints.

Each bench module exposes `run(quick: bool = False) -> list[BenchRow]` and prints its rows
when run as a script; `bench/run_all.py` gathers every module's rows into one table. Ratios
are always against an anchor measured in the same run, never against a stored number.
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@dataclass
class BenchRow:
    """One line of the table: the work, our figure, the anchor's figure, and their ratio.

    `ratio` is expressed so that > 1 means we are better (faster, higher throughput, smaller),
    whatever the unit; `target` states the issue's goal in words.
    """

    work: str
    ours: float
    unit: str
    anchor: float | None = None
    anchor_name: str = ""
    ratio: float | None = None
    target: str = ""
    note: str = ""


def speedup(ours_seconds: float, anchor_seconds: float) -> float:
    """Anchor time / our time: > 1 means we are faster."""
    return anchor_seconds / ours_seconds if ours_seconds > 0 else float("inf")


def throughput_ratio(ours_per_s: float, anchor_per_s: float) -> float:
    """Our rate / anchor rate: > 1 means we process more per second."""
    return ours_per_s / anchor_per_s if anchor_per_s > 0 else float("inf")


def time_call(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time over `repeat` runs, in seconds (best-of reduces noise from other load)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0–100) by linear interpolation."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[max(0, min(98, int(round(q)) - 1))]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (Linux reports KB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def format_table(rows: Iterable[BenchRow]) -> str:
    header = ("work", "ours", "anchor", "ratio", "target", "note")
    lines = [header]
    for row in rows:
        ours = f"{row.ours:.4g} {row.unit}"
        anchor = f"{row.anchor:.4g} {row.unit} ({row.anchor_name})" if row.anchor is not None else "-"
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else "-"
        lines.append((row.work, ours, anchor, ratio, row.target, row.note))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append(" | ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if index == 0:
            out.append("-+-".join("-" * w for w in widths))
    return "\n".join(out)


def emit(rows: list[BenchRow], json_path: str | None = None) -> None:
    """Print the table; with `json_path`, also write the rows as JSON for run_all."""
    print(format_table(rows), flush=True)
    if json_path:
        Path(json_path).write_text(json.dumps([asdict(r) for r in rows], indent=2))


def main(run: Callable[..., list[BenchRow]]) -> None:
    """Script entry: `python bench/x.py [--quick] [--json PATH]`."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run")
    parser.add_argument("--json", default=None, help="also write the rows here as JSON")
    args = parser.parse_args()
    emit(run(quick=args.quick), args.json)


def run_child(script: str, label: str, *args: str) -> dict:
    """Run `script --child ARGS` in a fresh process (fair timing, its own peak memory) and return the JSON
    object its last stdout line holds; its child entry adds `peak_rss_mb` with `print_child_result`."""
    import os
    import subprocess

    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    completed = subprocess.run([sys.executable, script, "--child", *args], capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        raise RuntimeError(f"bench child {args} failed:\n{completed.stderr[-4000:]}")
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    print(f"[{label}] {args[0]} {' '.join(args[3:])}: {result}", file=sys.stderr, flush=True)
    return result


def print_child_result(result: dict) -> None:
    """A child's last stdout line: its result with the process's peak RSS."""
    print(json.dumps(result | {"peak_rss_mb": peak_rss_mb()}))
