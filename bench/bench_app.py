"""The annotation app in a real browser: submit → next task painted, and first paint after sign-in.

What is measured (headless Chromium through Playwright, against `streamlit run labeling_app/app.py`):
1. seed: a SQLite database holding 1,000,000 ratings (`bench_submit.seed`: bulk Core inserts,
   360,000 rating tasks, 60,000 still open) and one annotator who signs in through the form;
2. first paint: from the Enter that submits the sign-in form to the Rate page drawn and usable
   (the run finished, no placeholder left, the Submit button visible): cold (a browser that has
   never loaded the app, first session of the server) and warm (the same browser signing in again
   in a new tab: a new session, the app's scripts in the HTTP cache) (target ≤ 1.5 s);
3. submit → next task painted: per task, digits 4 5 6 score the rubric, then Enter is timed from
   the key press to the next task drawn (its "n submitted" line shown and the run finished),
   measured in the page with `performance.now()` (target p95 ≤ 300 ms);
4. anchors, same machine and run: a bare Streamlit page (one line of text and a button on Enter)
   redrawn by the same key, in the same browser — Streamlit's own floor; the rerun a digit key
   causes on the Rate page (no database write); the engine's submit + next task called from
   Python on the same database. So the figure splits into Streamlit, our page, and the engine;
5. CPU time (server, browser) per task: on a shared machine the wall-clock figures wait for a
   core, the CPU seconds do not.

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
    if (marker && !document.body.textContent.includes(marker)) return false;
    return performance.now() - window.__pressedAt;
}"""


BARE_APP = """import streamlit as st

st.session_state.setdefault("n", 0)


def submit():
    st.session_state.n += 1


st.markdown(f"{st.session_state.n} submitted in this session")
st.button("Submit", type="primary", shortcut="Enter", on_click=submit)
"""
"""The anchor: the least a Streamlit page can redraw on a key press."""


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


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(x) for x in handle.read().split()]
    except OSError:
        return []


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (the Streamlit server, Playwright's driver, Chromium's processes)."""
    found, stack = [], _children(pid)
    while stack:
        child = stack.pop()
        found.append(child)
        stack.extend(_children(child))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the live processes `pids` have used (Linux /proc)."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        except (OSError, IndexError, ValueError):
            continue
    return total / tick


STATE_JS = """(marker) => ({
    state: document.querySelector('[data-testid="stApp"]').getAttribute('data-test-script-state'),
    placeholders: document.querySelectorAll('[data-testid="stSkeleton"]').length,
    primary: !!document.querySelector('[data-testid="stBaseButton-primary"]'),
    marker_shown: document.body.textContent.includes(marker || ''),
    header: (document.querySelector('[data-testid="stCaptionContainer"]') || {}).textContent,
})"""


def timed(page, marker: str | None = None, timeout_ms: float = 60_000) -> float:
    """Seconds from the last key press to the page drawn (containing `marker`, when given)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    # Polled every 10 ms (not every frame) so the measuring costs the browser little CPU; the
    # stamp is taken in the page, so the figure is exact to the poll interval.
    try:
        return page.wait_for_function(PAINTED_JS, arg=marker, timeout=timeout_ms, polling=10).json_value() / 1000.0
    except PlaywrightTimeout:
        raise RuntimeError(f"waiting for {marker!r}: the page shows {page.evaluate(STATE_JS, marker)}") from None


def sign_in_timed(context, base_url: str) -> tuple[float, object]:
    """A new Streamlit session in a new tab of `context`: open the sign-in page, type the account,
    time Enter → Rate page usable. Returns (seconds, page)."""
    from harness import field, wait_loaded

    page = context.new_page()
    page.goto(base_url)
    wait_loaded(page)
    page.evaluate(INSTALL_STAMP_JS)
    field(page, "Username").fill("bench-annotator")
    field(page, "Password").fill(PASSWORD)
    field(page, "Password").press("Enter")
    return timed(page, "Rate a response"), page


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


def bare_rerun_latencies(browser, viewport, folder: Path, n: int) -> list[float]:
    """Enter → redrawn on the bare anchor page, `n` times (its own server, same browser)."""
    from harness import start_app, wait_loaded

    script = folder / "bare_app.py"
    script.write_text(BARE_APP, encoding="utf-8")
    server = start_app("sqlite://", folder / "bare.log", app=script)
    try:
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        page.goto(server.url)
        wait_loaded(page)
        page.evaluate(INSTALL_STAMP_JS)
        latencies = []
        for i in range(1, n + 1):
            page.keyboard.press("Enter")
            latencies.append(timed(page, f"{i} submitted in this session"))
        context.close()
        return latencies
    finally:
        server.stop()


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
    from harness import VIEWPORT, chromium_available, launch_chromium, start_app
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
                # Cold: a browser that has never loaded the app (no cached scripts), first session of the server.
                context = browser.new_context(viewport=VIEWPORT)
                cold, page = sign_in_timed(context, server.url)
                # CPU time of everything that serves the cycle (server, driver, browser): a figure the
                # load of a shared machine does not inflate, unlike the wall-clock latencies.
                import os

                server_pids = [server.process.pid] + descendants(server.process.pid)
                browser_pids = [pid for pid in descendants(os.getpid()) if pid not in server_pids]
                server_before, browser_before = cpu_seconds(server_pids), cpu_seconds(browser_pids)
                submits, digit_reruns = submit_cycles(page, config.submissions)
                server_cpu = (cpu_seconds(server_pids) - server_before) / config.submissions
                browser_cpu = (cpu_seconds(browser_pids) - browser_before) / config.submissions
                page.close()
                # Warm: the same browser signing in again in a new tab (its HTTP cache holds the app's scripts).
                warm = []
                for _ in range(config.warm_sign_ins):
                    seconds, page = sign_in_timed(context, server.url)
                    warm.append(seconds)
                    page.close()
                bare = bare_rerun_latencies(browser, VIEWPORT, Path(tmp), config.submissions)
                browser.close()
        finally:
            server.stop()
        engine_only = engine_submit_latencies(url, project_id, config.submissions)

    ms = 1000.0
    size = f"{config.annotations:,} stored, SQLite"
    rerun_p50 = percentile(digit_reruns, 50)
    engine_p50, engine_p95 = percentile(engine_only, 50), percentile(engine_only, 95)
    bare_p50, bare_p95 = percentile(bare, 50), percentile(bare, 95)
    submit_p50, submit_p95 = percentile(submits, 50), percentile(submits, 95)
    warm_median = statistics.median(warm) if warm else float("nan")
    return [
        BenchRow("app: submit -> next task painted p50", submit_p50 * ms, "ms", bare_p50 * ms, "bare Streamlit page redraw p50", speedup(submit_p50, bare_p50), "", f"{len(submits)} submits, {size}"),
        BenchRow("app: submit -> next task painted p95", submit_p95 * ms, "ms", bare_p95 * ms, "bare Streamlit page redraw p95", speedup(submit_p95, bare_p95), "p95 <= 300 ms", size),
        BenchRow("app: digit key -> Rate page redrawn p50", rerun_p50 * ms, "ms", bare_p50 * ms, "bare Streamlit page redraw p50", speedup(rerun_p50, bare_p50), "", "no database write"),
        BenchRow("app: server CPU per task (3 digit keys + submit)", server_cpu * ms, "ms", None, "", None, "", "4 reruns; not inflated by waiting for a core"),
        BenchRow("app: browser CPU per task (3 digit keys + submit)", browser_cpu * ms, "ms", None, "", None, "", "Chromium + driver, software rendering"),
        BenchRow("app: engine submit+next alone p95", engine_p95 * ms, "ms", submit_p95 * ms, "whole browser cycle p95", speedup(engine_p95, submit_p95), "", f"p50 {engine_p50 * ms:.1f} ms; share of the cycle"),
        BenchRow("app: first paint of Rate after sign-in (cold browser)", cold * ms, "ms", warm_median * ms, "warm sign-ins median", speedup(cold, warm_median), "<= 1.5 s", "nothing cached, first session of the server"),
        BenchRow("app: first paint of Rate after sign-in (warm browser, median)", warm_median * ms, "ms", None, "", None, "<= 1.5 s", f"max {max(warm) * ms:.0f} ms over {len(warm)}" if warm else ""),
    ]


if __name__ == "__main__":
    main(run)
