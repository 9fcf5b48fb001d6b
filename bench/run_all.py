"""Every benchmark in one command: each `bench/bench_*.py` module in its own subprocess, one table at the end.

    .venv/bin/python bench/run_all.py [--quick] [--only import,stats,...] [--timeout 3600] [--out-dir reports]

Each module exposes `run(quick=False) -> list[BenchRow]` (see `bench/_common.py`). Here a child
process (`run_all.py --child PATH`) imports one module, calls `run`, and writes its rows as
JSON; the parent waits for it with a per-module timeout and reads its peak resident memory
from the kernel (`wait4`), so modules never share memory, a crash or a hang stays inside its
module, and every module's peak is its own. A module that fails, times out or returns no rows
appears in the table as FAILED with the reason; the run goes on.

Writes `reports/bench-<timestamp>.json` (everything: rows, status, seconds, peak memory, the
tail of each module's output) and `reports/bench-<timestamp>.md` (the table), and prints the
table: work, ours, anchor, ratio (> 1 means we are better), target.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_TIMEOUT_S = 3600.0
"""Per module, full size (the PPO and reward comparisons train real models on CPU)."""
DEFAULT_QUICK_TIMEOUT_S = 900.0
TAIL_CHARS = 4000
"""How much of a module's output the JSON report keeps."""


@dataclass
class ModuleResult:
    """One benchmark module's outcome."""

    name: str
    path: str
    status: str
    """ok, failed, timeout or empty (ran but returned no rows)."""
    seconds: float
    peak_rss_mb: Optional[float]
    """Peak resident memory of the module's process tree that was waited for (kernel rusage)."""
    returncode: Optional[int]
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""
    """One line saying why it failed (the exception's last line, or the timeout)."""
    output_tail: str = ""


# --------------------------------------------------------------------------- discovery


def discover(bench_dir: Path = BENCH_DIR) -> dict[str, Path]:
    """Benchmark modules by short name: `bench_import.py` → `import`, sorted by name."""
    return {path.stem.removeprefix("bench_"): path for path in sorted(bench_dir.glob("bench_*.py"))}


def select(modules: dict[str, Path], only: Optional[str]) -> dict[str, Path]:
    """The modules named in `only` (comma-separated, `import` or `bench_import`), in discovery order.

    Raises ValueError naming unknown names and listing the known ones.
    """
    if not only:
        return dict(modules)
    wanted = [name.strip().removeprefix("bench_").removesuffix(".py") for name in only.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in modules]
    if unknown:
        raise ValueError(f"unknown benchmark(s) {', '.join(unknown)}; known: {', '.join(modules)}")
    return {name: path for name, path in modules.items() if name in wanted}


# --------------------------------------------------------------------------- the child


def child_main(module_path: str, quick: bool, json_path: str) -> int:
    """Import one bench module, call `run(quick)`, write its rows to `json_path`; exit status 0 on success."""
    spec = importlib.util.spec_from_file_location(f"bench_child_{Path(module_path).stem}", module_path)
    module = importlib.util.module_from_spec(spec)
    for entry in (str(REPO_ROOT), str(Path(module_path).resolve().parent)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    # Registered before it runs: dataclasses (with postponed annotations) look their module up in sys.modules.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    run = getattr(module, "run", None)
    if run is None:
        raise AttributeError(f"{module_path} has no run(quick=False) function")
    rows = run(quick=quick)
    plain = [dataclasses.asdict(row) if dataclasses.is_dataclass(row) else dict(row) for row in rows]
    Path(json_path).write_text(json.dumps(plain, indent=2, default=str))
    return 0


# --------------------------------------------------------------------------- the parent


def _wait(process: subprocess.Popen, timeout_s: float) -> tuple[Optional[int], Optional[float], bool]:
    """(returncode, peak RSS in MB, timed_out): waits with `wait4` so the child's own rusage comes back."""
    deadline = time.monotonic() + timeout_s
    timed_out = False
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage.ru_maxrss / 1024.0, timed_out
        if time.monotonic() > deadline and not timed_out:
            timed_out = True
            _kill_group(process.pid)
        time.sleep(0.1)


def _kill_group(pid: int) -> None:
    # The child leads its own session, so its own subprocesses go with it.
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _error_line(output: str) -> str:
    """The last non-empty line of the output (an exception's message), shortened."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    line = lines[-1] if lines else "no output"
    return line if len(line) <= 300 else line[:299] + "…"


def run_module(name: str, path: Path, *, quick: bool, timeout_s: float, env: Optional[dict[str, str]] = None) -> ModuleResult:
    """Run one module in a child process (own session, own memory) and collect its rows."""
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        rows_path = Path(tmp) / "rows.json"
        log_path = Path(tmp) / "output.log"
        command = [sys.executable, str(Path(__file__).resolve()), "--child", str(path), "--json", str(rows_path)] + (["--quick"] if quick else [])
        started = time.perf_counter()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, env=env, start_new_session=True)
            try:
                returncode, peak_mb, timed_out = _wait(process, timeout_s)
            except BaseException:
                _kill_group(process.pid)
                process.wait()
                raise
        seconds = time.perf_counter() - started
        output = log_path.read_text(errors="replace")
        result = ModuleResult(name, str(path), "ok", seconds, peak_mb, returncode, output_tail=output[-TAIL_CHARS:])
        if timed_out:
            result.status, result.error = "timeout", f"timed out after {timeout_s:g} s"
        elif returncode != 0:
            result.status, result.error = "failed", f"exit {returncode}: {_error_line(output)}"
        elif not rows_path.is_file():
            result.status, result.error = "failed", "wrote no rows"
        else:
            result.rows = json.loads(rows_path.read_text())
            if not result.rows:
                result.status, result.error = "empty", "returned no rows"
        return result


# --------------------------------------------------------------------------- the table


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def table_rows(results: list[ModuleResult]) -> list[list[str]]:
    """One line per bench row, or one FAILED line per failed module: module, work, ours, anchor, ratio, target, note."""
    lines = []
    for result in results:
        if result.status != "ok":
            lines.append([result.name, f"FAILED ({result.status})", "-", "-", "-", "", result.error])
            continue
        for row in result.rows:
            unit = row.get("unit", "")
            ours = f"{_number(row.get('ours'))} {unit}".strip()
            anchor = "-"
            if row.get("anchor") is not None:
                anchor = f"{_number(row['anchor'])} {unit}".strip() + (f" ({row.get('anchor_name')})" if row.get("anchor_name") else "")
            ratio = f"{row['ratio']:.2f}x" if isinstance(row.get("ratio"), (int, float)) else "-"
            lines.append([result.name, str(row.get("work", "")), ours, anchor, ratio, str(row.get("target", "")), str(row.get("note", ""))])
    return lines


HEADER = ["module", "work", "ours", "anchor", "ratio", "target", "note"]


def format_text_table(lines: list[list[str]]) -> str:
    widths = [max(len(HEADER[i]), *(len(line[i]) for line in lines)) if lines else len(HEADER[i]) for i in range(len(HEADER))]
    out = [" | ".join(h.ljust(w) for h, w in zip(HEADER, widths)).rstrip(), "-+-".join("-" * w for w in widths)]
    out += [" | ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(out)


def format_markdown_table(lines: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    out += ["| " + " | ".join(cell(c) for c in line) + " |" for line in lines]
    return "\n".join(out)


def module_summary(results: list[ModuleResult]) -> list[list[str]]:
    return [[r.name, r.status, f"{r.seconds:.1f}", _number(r.peak_rss_mb), r.error] for r in results]


def write_reports(results: list[ModuleResult], out_dir: Path, *, quick: bool, started_at: datetime) -> tuple[Path, Path]:
    """`bench-<timestamp>.json` and `.md` in `out_dir` (written to temp names, then renamed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = started_at.strftime("%Y%m%d-%H%M%S")
    payload = {
        "started_at": started_at.isoformat(timespec="seconds"),
        "quick": quick,
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "modules": [dataclasses.asdict(r) for r in results],
    }
    lines = table_rows(results)
    summary = module_summary(results)
    markdown = "\n".join(
        [
            f"# Benchmarks {started_at.isoformat(timespec='seconds')}{' (quick)' if quick else ''}",
            "",
            f"{platform.platform()}, Python {platform.python_version()}, {os.cpu_count()} CPUs. Ratio > 1 means we are better than the anchor.",
            "",
            format_markdown_table(lines),
            "",
            "| module | status | seconds | peak MB | error |",
            "|---|---|---|---|---|",
            *["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in summary],
            "",
        ]
    )
    json_path, md_path = out_dir / f"bench-{stamp}.json", out_dir / f"bench-{stamp}.md"
    for path, text in ((json_path, json.dumps(payload, indent=2, default=str)), (md_path, markdown)):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return json_path, md_path


def run_all(
    *, quick: bool = False, only: Optional[str] = None, timeout_s: Optional[float] = None, out_dir: Path = REPO_ROOT / "reports",
    bench_dir: Path = BENCH_DIR, echo=print,
) -> tuple[list[ModuleResult], Path, Path]:
    """Run the selected modules one after another; returns their results and the two report paths."""
    modules = select(discover(bench_dir), only)
    timeout_s = timeout_s if timeout_s is not None else (DEFAULT_QUICK_TIMEOUT_S if quick else DEFAULT_TIMEOUT_S)
    started_at = datetime.now(timezone.utc)
    results = []
    for name, path in modules.items():
        echo(f"[run_all] {name}: running{' (quick)' if quick else ''} ...", flush=True)
        result = run_module(name, path, quick=quick, timeout_s=timeout_s)
        echo(f"[run_all] {name}: {result.status} in {result.seconds:.1f}s, peak {_number(result.peak_rss_mb)} MB {result.error}".rstrip(), flush=True)
        results.append(result)
    json_path, md_path = write_reports(results, out_dir, quick=quick, started_at=started_at)
    return results, json_path, md_path


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="each module's smaller sizes (a smoke run)")
    parser.add_argument("--only", default=None, help="comma-separated module names, e.g. import,stats (see --list)")
    parser.add_argument("--timeout", type=float, default=None, help=f"seconds per module (default {DEFAULT_TIMEOUT_S:g}; {DEFAULT_QUICK_TIMEOUT_S:g} with --quick)")
    parser.add_argument("--out-dir", type=Path, default=REPO_ROOT / "reports", help="where bench-<timestamp>.json/.md go")
    parser.add_argument("--bench-dir", type=Path, default=BENCH_DIR, help=argparse.SUPPRESS)
    parser.add_argument("--list", action="store_true", help="list the benchmark modules and exit")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--json", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child_main(args.child, args.quick, args.json)
    if args.list:
        for name, path in discover(args.bench_dir).items():
            print(f"{name}\t{path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path}")
        return 0
    try:
        results, json_path, md_path = run_all(quick=args.quick, only=args.only, timeout_s=args.timeout, out_dir=args.out_dir, bench_dir=args.bench_dir)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print()
    print(format_text_table(table_rows(results)))
    print(f"\nreports: {json_path} and {md_path}")
    return 0 if all(r.status == "ok" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
