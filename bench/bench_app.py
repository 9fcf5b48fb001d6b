"""The annotation app in a real browser: submit → next task painted, and first paint after sign-in.

What is measured (headless Chromium through Playwright, against `streamlit run labeling_app/app.py`):
1. seed: a SQLite database holding 1,000,000 ratings (`bench_submit.seed`: bulk Core inserts,
   360,000 rating tasks, 60,000 still open) and one annotator who signs in through the form;
2. first paint: from the Enter that submits the sign-in form to the Rate page drawn and usable
   (the run finished, no placeholder left, the Submit button visible), for a cold first session
   and for fresh sessions after it (target ≤ 1.5 s);
3. submit → next task painted: per task, digits 4 5 6 score the rubric, then Enter is timed from
   the key press to the next task drawn (its "n submitted" line shown and the run finished),
   measured in the page with `performance.now()` (target p95 ≤ 300 ms);
4. anchors, same page and run: the rerun a digit key causes (same page redrawn, no database
   write) and the engine's own submit + next task called from Python on the same database, so
   the figures split into Streamlit's rerun, the engine, and the rest.

Sizes scale with `--quick` (50,000 annotations, 10 submissions). Chromium is `/usr/bin/chromium`.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from _common import REPO_ROOT, BenchRow, main, percentile, speedup

sys.path.insert(0, str(REPO_ROOT / "tests" / "browser"))  # the app harness shared with the browser tests

PASSWORD = "benchmark the app"
DIGITS = "456"

# In-page timing: a capture-phase keydown listener stamps the press; the wait returns the gap.
INSTALL_STAMP_JS = """() => {
    if (window.__benchInstalled) return;
    window.__benchInstalled = true;
    document.addEventListener('keydown', e => { window.__pressedAt = performance.now(); }, true);
}"""
PAINTED_JS = """(marker) => {
    const app = document.querySelector('[data-testid="stApp"]');
    if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
    if (document.querySelector('[data-testid="stSkeleton"]')) return false;
    if (!document.querySelector('[data-testid="stBaseButton-primary"]')) return false;
    if (marker && !document.body.innerText.includes(marker)) return false;
    return performance.now() - window.__pressedAt;
}"""


@dataclass(frozen=True)
class AppBenchConfig:
    """Sizes of one run."""

    annotations: int = 1_000_000
    """Ratings stored before measuring."""
    submissions: int = 30
    """Timed submit → next task cycles."""
    warm_sign_ins: int = 5
    """Fresh sessions timed after the cold first one."""


FULL = AppBenchConfig()
QUICK = AppBenchConfig(annotations=50_000, submissions=10, warm_sign_ins=2)


def seed(url: str, config: AppBenchConfig):
    """A migrated database with `config.annotations` ratings and the annotator who signs in; (project id, seconds)."""
    from bench_submit import BenchConfig, seed as seed_annotations

    from rlhf.auth import create_user
    from rlhf.db import init_database, make_engine
    from rlhf.roles import SYSTEM

    engine = make_engine(url)
    init_database(engine)
    project, _, seconds = seed_annotations(engine, BenchConfig(annotations=config.annotations))
    create_user(engine, SYSTEM, "bench-annotator", PASSWORD, "annotator")
    engine.dispose()
    return project.id, seconds


def timed(page, marker: str | None = None, timeout_ms: float = 60_000) -> float:
    """Seconds from the last key press to the page drawn (containing `marker`, when given)."""
    return page.wait_for_function(PAINTED_JS, arg=marker, timeout=timeout_ms, polling="raf").json_value() / 1000.0


def sign_in_timed(browser, base_url: str) -> tuple[float, object]:
    """A fresh session: open the sign-in page, type the account, time Enter → Rate page usable."""
    from harness import VIEWPORT, field, wait_loaded

    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(base_url)
    wait_loaded(page)
    page.evaluate(INSTALL_STAMP_JS)
    field(page, "Username").fill("bench-annotator")
    field(page, "Password").fill(PASSWORD)
    field(page, "Password").press("Enter")
    return timed(page, "Rate a response"), context


def submit_cycles(page, n: int) -> tuple[list[float], list[float]]:
    """(submit → painted seconds, digit-key rerun seconds) over `n` rating tasks."""
    submits, digit_reruns = [], []
    for i in range(1, n + 1):
        for dim, digit in zip(("Helpfulness", "Honesty", "Harmlessness"), DIGITS):
            page.keyboard.press(digit)
            digit_reruns.append(timed(page, f"{dim} — {digit}"))
        page.keyboard.press("Enter")
        submits.append(timed(page, f"{i} submitted in this session"))
    return submits, digit_reruns


def engine_submit_latencies(url: str, project_id: int, n: int) -> list[float]:
    """The engine alone on the same database: submit_rating (which returns the next task), n times."""
    from rlhf.assign import next_task
    from rlhf.auth import create_user
    from rlhf.annotate import submit_rating
    from rlhf.db import make_engine
    from rlhf.roles import SYSTEM

    engine = make_engine(url)
    user = create_user(engine, SYSTEM, "bench-engine", PASSWORD, "annotator")
    from rlhf.auth import load_user

    user = load_user(engine, user.id)
    rng = random.Random(0)
    view = next_task(engine, user, project_id, "rating")
    latencies = []
    for _ in range(n):
        scores = {d.name: rng.randint(d.min, d.max) for d in view.rubric}
        start = time.perf_counter()
        view = submit_rating(engine, user, view.task_id, scores=scores, time_spent_s=3.0).next_task
        latencies.append(time.perf_counter() - start)
    engine.dispose()
    return latencies


def run(quick: bool = False) -> list[BenchRow]:
    from harness import chromium_available, launch_chromium, start_app
    from playwright.sync_api import sync_playwright

    if not chromium_available():
        print("bench_app skipped: /usr/bin/chromium is missing", flush=True)
        return []
    config = QUICK if quick else FULL
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'bench_app.db'}"
        project_id, seed_s = seed(url, config)
        print(f"seeded {config.annotations:,} annotations in {seed_s:.1f} s", flush=True)
        server = start_app(url, Path(tmp) / "streamlit.log")
        try:
            with sync_playwright() as p:
                browser = launch_chromium(p)
                cold, context = sign_in_timed(browser, server.url)
                page = context.pages[0]
                submits, digit_reruns = submit_cycles(page, config.submissions)
                context.close()
                warm = []
                for _ in range(config.warm_sign_ins):
                    seconds, context = sign_in_timed(browser, server.url)
                    warm.append(seconds)
                    context.close()
                browser.close()
        finally:
            server.stop()
        engine_only = engine_submit_latencies(url, project_id, config.submissions)

    ms = 1000.0
    size = f"{config.annotations:,} stored, SQLite"
    rerun_p50, rerun_p95 = percentile(digit_reruns, 50), percentile(digit_reruns, 95)
    engine_p50, engine_p95 = percentile(engine_only, 50), percentile(engine_only, 95)
    submit_p50, submit_p95 = percentile(submits, 50), percentile(submits, 95)
    warm_median = statistics.median(warm) if warm else float("nan")
    return [
        BenchRow("app: submit -> next task painted p50", submit_p50 * ms, "ms", rerun_p50 * ms, "same page rerun on a digit key p50", speedup(submit_p50, rerun_p50), "", f"{len(submits)} submits, {size}"),
        BenchRow("app: submit -> next task painted p95", submit_p95 * ms, "ms", rerun_p95 * ms, "same page rerun on a digit key p95", speedup(submit_p95, rerun_p95), "p95 <= 300 ms", size),
        BenchRow("app: engine submit+next alone p95", engine_p95 * ms, "ms", submit_p95 * ms, "whole browser cycle p95", speedup(engine_p95, submit_p95), "", f"p50 {engine_p50 * ms:.1f} ms; share of the cycle"),
        BenchRow("app: first paint of Rate after sign-in (cold session)", cold * ms, "ms", warm_median * ms, "warm sessions median", speedup(cold, warm_median), "<= 1.5 s", "first session after server start"),
        BenchRow("app: first paint of Rate after sign-in (warm, median)", warm_median * ms, "ms", None, "", None, "<= 1.5 s", f"max {max(warm) * ms:.0f} ms over {len(warm)}" if warm else ""),
    ]


if __name__ == "__main__":
    main(run)
