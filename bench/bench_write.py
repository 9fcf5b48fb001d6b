"""The Write page in a real browser: submit → next task painted, and typing in a 5,000-character draft.

What is measured (headless Chromium through Playwright, against `labeling_app/server.py` as `rlhf app` serves it):
1. seed: `bench_app.seed` (a SQLite database holding `--annotations` ratings, 1,000,000 by
   default) plus `--tasks` write tasks imported into the same project from a prompts-only file;
2. submit → next task painted: per task, the editor is filled, then Ctrl+Enter is timed from the
   key press (stamped in the page) to the next task drawn (the run over, no placeholder, the
   "n submitted in this session" line shown and the editor holding the next task) (target p95 ≤ 300 ms);
3. typing: a 5,000-character draft is put in the editor, then keys are typed 20 ms apart; counted:
   websocket messages the page sent while typing (a rerun per key would be one per key), draft
   POSTs (debounced), and the longest main-thread task the browser reported (PerformanceObserver
   `longtask`, ≥ 50 ms) — typing never waits for Python;
4. anchors, same machine and run: the bare Streamlit page redrawn by a key (`bench_app`'s floor)
   and the engine's submit_demonstration + next task called from Python on the same database.

The machine is shared: wall-clock figures include waiting for a core.

    .venv/bin/python bench/bench_write.py --annotations 1000000 --submissions 30
    .venv/bin/python bench/bench_write.py --quick
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO_ROOT, BenchRow, emit, percentile, speedup

sys.path.insert(0, str(REPO_ROOT / "tests" / "browser"))

from bench_app import INSTALL_STAMP_JS, PASSWORD, STATE_JS, AppBenchConfig, bare_rerun_latencies, seed  # noqa: E402

PAINTED_JS = """(marker) => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
    if (document.querySelector('[data-testid="stSkeleton"]')) return false;
    const editor = document.querySelector('.rlhf-editor');
    if (!editor || editor.dataset.token === window.__benchToken) return false;
    if (!document.body.textContent.includes(marker)) return false;
    return performance.now() - window.__pressedAt;
}"""
LONGTASKS_JS = """() => {
    window.__longest = 0;
    new PerformanceObserver((list) => { for (const e of list.getEntries()) window.__longest = Math.max(window.__longest, e.duration); })
        .observe({ type: 'longtask', buffered: false });
}"""


def add_write_tasks(url: str, project_id: int, n: int, folder: Path) -> None:
    """`n` prompts-only records imported into the benchmark's project: `n` write tasks."""
    from rlhf.db import make_engine
    from rlhf.importer import import_file
    from rlhf.projects import get_project, update_project
    from rlhf.roles import SYSTEM

    engine = make_engine(url)
    name = get_project(engine, project_id).name
    update_project(engine, SYSTEM, name, task_kinds=["rate", "write"])
    path = folder / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Write two sentences about topic number {i}."}) + "\n" for i in range(n)))
    import_file(engine, path, name, actor=SYSTEM)
    engine.dispose()


def timed(page, marker: str, timeout_ms: float = 60_000) -> float:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        return page.wait_for_function(PAINTED_JS, arg=marker, timeout=timeout_ms, polling=10).json_value() / 1000.0
    except PlaywrightTimeout:
        raise RuntimeError(f"waiting for {marker!r}: the page shows {page.evaluate(STATE_JS, marker)}") from None


def write_cycles(page, n: int) -> list[float]:
    """Fill the editor, Ctrl+Enter, time until the next task is painted; `n` times."""
    latencies = []
    for i in range(1, n + 1):
        editor = page.locator(".rlhf-editor textarea")
        editor.fill(f"Reply number {i}. It is short and it ends cleanly.")
        page.evaluate("() => { window.__benchToken = document.querySelector('.rlhf-editor').dataset.token; }")
        editor.press("Control+Enter")
        latencies.append(timed(page, f"{i} submitted in this session"))
    return latencies


def typing_probe(page, keys: int) -> dict:
    """Type `keys` characters 20 ms apart into a 5,000-character draft; what the page sent and its longest task."""
    frames, posts = [], []
    page.on("websocket", lambda ws: ws.on("framesent", lambda f: frames.append(f)))
    page.on("request", lambda r: posts.append(r.url) if "_rlhf/draft" in r.url else None)
    editor = page.locator(".rlhf-editor textarea")
    editor.fill(("All work and no play makes a long draft. " * 130)[:5000])
    page.wait_for_timeout(1500)
    page.evaluate(LONGTASKS_JS)
    frames.clear()
    posts.clear()
    editor.press("End")
    start = time.perf_counter()
    page.keyboard.type("x" * keys, delay=20)
    typed_s = time.perf_counter() - start
    page.wait_for_timeout(1500)
    return {"frames": len(frames), "posts": len(posts), "longest_ms": page.evaluate("() => window.__longest"), "typed_s": typed_s,
            "chars": len(editor.input_value())}  # fmt: skip


def engine_write_latencies(url: str, project_id: int, n: int) -> list[float]:
    """The engine alone on the same database: submit_demonstration (which returns the next write task), n times."""
    from rlhf.assign import next_task
    from rlhf.auth import create_user, load_user
    from rlhf.db import make_engine
    from rlhf.demonstrations import submit_demonstration
    from rlhf.roles import SYSTEM

    engine = make_engine(url)
    user = load_user(engine, create_user(engine, SYSTEM, "bench-engine-writer", PASSWORD, "annotator").id)
    view = next_task(engine, user, project_id, "write")
    latencies = []
    for i in range(n):
        start = time.perf_counter()
        view = submit_demonstration(engine, user, view.task_id, text=f"Engine reply {i}.", time_spent_s=3.0).next_task
        latencies.append(time.perf_counter() - start)
    engine.dispose()
    return latencies


def run(annotations: int, submissions: int, typing_keys: int) -> list[BenchRow]:
    from harness import VIEWPORT, chromium_available, field, launch_chromium, start_app, wait_loaded, wait_text
    from playwright.sync_api import sync_playwright

    if not chromium_available():
        print("bench_write skipped: /usr/bin/chromium is missing", flush=True)
        return []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        url = f"sqlite:///{folder / 'bench_write.db'}"
        project_id, seed_s = seed(url, AppBenchConfig(annotations=annotations))
        add_write_tasks(url, project_id, 3 * submissions + 50, folder)
        print(f"seeded {annotations:,} annotations and {3 * submissions + 50} write tasks in {seed_s:.1f} s", flush=True)
        server = start_app(url, folder / "streamlit.log")
        try:
            with sync_playwright() as p:
                browser = launch_chromium(p)
                page = browser.new_context(viewport=VIEWPORT).new_page()
                page.goto(server.url + "/write")
                field(page, "Username").fill("bench-annotator")
                field(page, "Password").fill(PASSWORD)
                field(page, "Password").press("Enter")
                wait_text(page, "Write a reply")
                wait_loaded(page)
                page.evaluate(INSTALL_STAMP_JS)
                submits = write_cycles(page, submissions)
                typing = typing_probe(page, typing_keys)
                page.close()
                bare = bare_rerun_latencies(browser, VIEWPORT, folder, submissions)
                browser.close()
        finally:
            server.stop()
        engine_only = engine_write_latencies(url, project_id, submissions)

    ms = 1000.0
    size = f"{annotations:,} annotations stored, SQLite, shared machine"
    p50, p95 = percentile(submits, 50), percentile(submits, 95)
    bare_p50, bare_p95 = percentile(bare, 50), percentile(bare, 95)
    engine_p95 = percentile(engine_only, 95)
    met = "met" if p95 * ms <= 300 else "NOT met"
    return [
        BenchRow("write: submit -> next task painted p50", p50 * ms, "ms", bare_p50 * ms, "bare Streamlit page redraw p50", speedup(p50, bare_p50), "", f"{len(submits)} submits, {size}"),
        BenchRow("write: submit -> next task painted p95", p95 * ms, "ms", bare_p95 * ms, "bare Streamlit page redraw p95", speedup(p95, bare_p95), f"p95 <= 300 ms ({met})", size),
        BenchRow("write: engine submit_demonstration+next alone p95", engine_p95 * ms, "ms", p95 * ms, "whole browser cycle p95", speedup(engine_p95, p95), "", f"p50 {percentile(engine_only, 50) * ms:.1f} ms"),
        BenchRow("write: websocket messages while typing into a 5,000-char draft", typing["frames"], "messages", typing_keys, "keys typed (a rerun per key)", None,
                 "no rerun per keystroke", f"{typing['posts']} draft POSTs; {typing['chars']:,} chars at the end; typed in {typing['typed_s']:.1f} s"),
        BenchRow("write: longest browser main-thread task while typing", typing["longest_ms"], "ms", None, "", None, "typing never blocks", "PerformanceObserver longtask (>= 50 ms; 0 = none)"),
    ]


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="50,000 annotations, 10 submissions, 100 keys")
    parser.add_argument("--annotations", type=int, default=None)
    parser.add_argument("--submissions", type=int, default=None)
    parser.add_argument("--typing-keys", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the rows here as JSON")
    args = parser.parse_args()
    annotations = args.annotations or (50_000 if args.quick else 1_000_000)
    submissions = args.submissions or (10 if args.quick else 30)
    keys = args.typing_keys or (100 if args.quick else 200)
    emit(run(annotations, submissions, keys), args.json)


if __name__ == "__main__":
    cli()
