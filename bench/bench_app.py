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
   core, the CPU seconds do not;
6. the same submit → next task painted while a PPO job trains through a local worker, started
   as `rlhf app` starts it (`rlhf.cli.jobs.worker_command`: job processes at `--job-nice`, with
   `--job-threads` threads, defaults 10 and all cores but one). The worker first trains a
   reward model (a `train-reward` job), then the PPO job starts; timing begins once PPO has
   finished an iteration, and the job must still be running when it ends. Targets: p95 ≤ 250 ms
   quiet, ≤ 300 ms under PPO. `--ppo-model smollm2`: the packaged SmolLM2-135M on a 4-bit base
   (bench_ppo.py's setup, reward model on the same base); `tiny`: a tiny random Llama built
   offline (what a small smoke run can afford); `none`: skip.

Sizes: `--quick` (50,000 annotations, 10 submissions, tiny PPO model), or each with its flag:

    .venv/bin/python bench/bench_app.py --annotations 1000000 --submissions 30 --warm-sign-ins 5 --ppo-model smollm2

Chromium is `/usr/bin/chromium`.
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from _common import REPO_ROOT, BenchRow, emit, percentile, speedup

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
    ppo_model: str = "smollm2"
    """The PPO job trained during the loaded phase: smollm2 (packaged, 4-bit), tiny, or none (skip)."""
    job_nice: int | None = None
    """The local worker's --job-nice; None: its default."""
    job_threads: int | None = None
    """The local worker's --job-threads; None: its default."""
    job_timeout_s: float = 1800.0
    """How long the reward model's training and PPO's first iteration may take before the phase gives up."""


FULL = AppBenchConfig()
QUICK = AppBenchConfig(annotations=50_000, submissions=10, warm_sign_ins=2, ppo_model="tiny", job_timeout_s=600.0)


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
    """A new Streamlit session in a new tab of `context`, signed out (its cookies cleared, its
    cache kept): open the sign-in page, type the account, time Enter → Rate page usable.
    Returns (seconds, page)."""
    from harness import field, wait_loaded

    # A sign-in survives new tabs (the session cookie): drop it, keep the HTTP cache.
    context.clear_cookies()
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


# --------------------------------------------------------------------------- the PPO phase

PREFERENCE_WORDS = "the a model answer question code list number sky tree story steps first then".split()


def preference_rows(n: int = 32) -> list[dict]:
    """An export-shaped JSONL's rows that a reward model learns in a few steps (chosen ends well)."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        prompt = " ".join(rng.choice(PREFERENCE_WORDS) for _ in range(rng.randint(3, 8)))
        shared = " ".join(rng.choice(PREFERENCE_WORDS) for _ in range(rng.randint(2, 6)))
        rows.append({"prompt": prompt, "chosen": f"{shared} good helpful honest", "rejected": f"{shared} bad unsafe worse",
                     "margin": 0.0, "agreement": 0.75, "split": "test" if i % 8 == 0 else "train"})
    return rows


def ppo_job_params(model: str, folder: Path) -> tuple[dict, dict]:
    """(train-reward params, ppo params) for `model`: smollm2 (bench_ppo.py's workload) or tiny."""
    data = folder / "preferences.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in preference_rows()))
    prompts = folder / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in preference_rows()))
    if model == "tiny":
        sys.path.insert(0, str(REPO_ROOT / "tests"))
        from tiny_models import save_tiny_causal_lm

        base = str(save_tiny_causal_lm(folder / "tiny-lm"))
        reward = {"base_model": base, "max_steps": 8, "batch_size": 8, "learning_rate": 3e-3, "lora_r": 4, "max_length": 64}
        ppo = {"policy": base, "batch_size": 8, "num_mini_batches": 2, "ppo_epochs": 4, "response_length": 16, "lora_r": 4, "lora_alpha": 8,
               "value_adapter_layers": 1}
    elif model == "smollm2":
        from rlhf.models import PACKAGED_SMOLLM2

        reward = {"base_model": PACKAGED_SMOLLM2, "load_in_4bit": True, "max_steps": 4, "batch_size": 8, "lora_r": 16, "max_length": 96}
        ppo = {"policy": PACKAGED_SMOLLM2, "load_in_4bit": True, "batch_size": 8, "num_mini_batches": 2, "ppo_epochs": 4, "response_length": 48,
               "lora_r": 16, "lora_alpha": 32, "temperature": 0.7, "learning_rate": 1e-4}
    else:
        raise ValueError(f"unknown --ppo-model {model!r}: smollm2, tiny or none")
    reward |= {"data": str(data), "device": "cpu", "save_steps": 1000, "logging_steps": 2}
    # Far more iterations than the measurement lasts: the job is cancelled once it is over.
    ppo |= {"prompts": str(prompts), "device": "cpu", "total_iterations": 100_000, "checkpoint_every": 0, "sample_count": 0}
    return reward, ppo


class LocalWorker:
    """`python -m rlhf.worker serve` as `rlhf app` starts it, on the bench's database and folder."""

    def __init__(self, url: str, folder: Path, config: AppBenchConfig) -> None:
        from rlhf.cli.jobs import worker_command

        command = worker_command(sys.executable, database_url=url, poll_interval=0.25, job_nice=config.job_nice, job_threads=config.job_threads)
        self.log = open(folder / "worker.log", "wb")
        env = dict(os.environ, RLHF_DATA_DIR=str(folder / "worker-data"))
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def cpu_seconds(self) -> float:
        return cpu_seconds([self.process.pid] + descendants(self.process.pid))

    def stop(self) -> None:
        from rlhf.cli.jobs import stop_process

        stop_process(self.process)
        self.log.close()


def wait_for_job(engine, job_id: int, ready, timeout_s: float, what: str):
    """Poll the job until `ready(job)`; raises with its error when it finished otherwise or the time ran out."""
    from rlhf.jobs import FINISHED_STATUSES, get_job

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = get_job(engine, job_id)
        if ready(job):
            return job
        if job.status in FINISHED_STATUSES:
            raise RuntimeError(f"{what}: job {job_id} ended {job.status}: {job.error}\n{job.traceback or ''}")
        time.sleep(1.0)
    raise RuntimeError(f"{what}: job {job_id} not ready within {timeout_s:.0f} s")


def start_ppo_job(url: str, folder: Path, config: AppBenchConfig):
    """A local worker training PPO (after its reward model); returns (worker, job id) once PPO has done an iteration."""
    from rlhf.db import make_engine
    from rlhf.job_kinds import load_registry
    from rlhf.jobs import job_artifacts, job_metrics, submit_job
    from rlhf.roles import SYSTEM

    reward_params, ppo_params = ppo_job_params(config.ppo_model, folder)
    engine = make_engine(url)
    registry = load_registry()
    worker = LocalWorker(url, folder, config)
    try:
        started = time.monotonic()
        reward_job = submit_job(engine, SYSTEM, "train-reward", reward_params, registry=registry)
        wait_for_job(engine, reward_job.id, lambda j: j.status == "done", config.job_timeout_s, "reward model")
        reward = [a for a in job_artifacts(engine, reward_job.id) if a.kind == "reward_model"][0]
        ppo_job = submit_job(engine, SYSTEM, "ppo", ppo_params | {"reward_artifact_id": reward.id}, registry=registry)
        wait_for_job(engine, ppo_job.id, lambda j: j.status == "running" and job_metrics(engine, j.id), config.job_timeout_s, "PPO's first iteration")
        print(f"PPO ({config.ppo_model}) running as job {ppo_job.id} after {time.monotonic() - started:.0f} s", flush=True)
    except BaseException:
        worker.stop()
        raise
    finally:
        engine.dispose()
    return worker, ppo_job.id


def stop_ppo_job(url: str, job_id: int) -> tuple[str, int]:
    """Cancel the job; returns (its status before the cancel, the PPO iterations it logged)."""
    from rlhf.db import make_engine
    from rlhf.jobs import cancel_job, get_job, job_metrics
    from rlhf.roles import SYSTEM

    engine = make_engine(url)
    try:
        status = get_job(engine, job_id).status
        iterations = len(job_metrics(engine, job_id))
        cancel_job(engine, SYSTEM, job_id)
    finally:
        engine.dispose()
    return status, iterations


def run(quick: bool = False, config: AppBenchConfig | None = None) -> list[BenchRow]:
    from harness import VIEWPORT, chromium_available, launch_chromium, start_app
    from playwright.sync_api import sync_playwright

    if not chromium_available():
        print("bench_app skipped: /usr/bin/chromium is missing", flush=True)
        return []
    config = config or (QUICK if quick else FULL)
    loaded = None
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
                if config.ppo_model != "none":
                    loaded = measure_under_ppo(url, Path(tmp), config, context, server.url)
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
    rows = [
        BenchRow("app: submit -> next task painted p50", submit_p50 * ms, "ms", bare_p50 * ms, "bare Streamlit page redraw p50", speedup(submit_p50, bare_p50), "", f"{len(submits)} submits, {size}"),
        BenchRow("app: submit -> next task painted p95", submit_p95 * ms, "ms", bare_p95 * ms, "bare Streamlit page redraw p95", speedup(submit_p95, bare_p95), "p95 <= 250 ms (quiet)", size),
        BenchRow("app: digit key -> Rate page redrawn p50", rerun_p50 * ms, "ms", bare_p50 * ms, "bare Streamlit page redraw p50", speedup(rerun_p50, bare_p50), "", "no database write"),
        BenchRow("app: server CPU per task (3 digit keys + submit)", server_cpu * ms, "ms", None, "", None, "", "4 reruns; not inflated by waiting for a core"),
        BenchRow("app: browser CPU per task (3 digit keys + submit)", browser_cpu * ms, "ms", None, "", None, "", "Chromium + driver, software rendering"),
        BenchRow("app: engine submit+next alone p95", engine_p95 * ms, "ms", submit_p95 * ms, "whole browser cycle p95", speedup(engine_p95, submit_p95), "", f"p50 {engine_p50 * ms:.1f} ms; share of the cycle"),
        BenchRow("app: first paint of Rate after sign-in (cold browser)", cold * ms, "ms", warm_median * ms, "warm sign-ins median", speedup(cold, warm_median), "<= 1.5 s", "nothing cached, first session of the server"),
        BenchRow("app: first paint of Rate after sign-in (warm browser, median)", warm_median * ms, "ms", None, "", None, "<= 1.5 s", f"max {max(warm) * ms:.0f} ms over {len(warm)}" if warm else ""),
    ]
    if loaded is not None:
        ppo_p50, ppo_p95 = percentile(loaded.submits, 50), percentile(loaded.submits, 95)
        note = (f"{config.ppo_model} PPO job {loaded.status} throughout, {loaded.iterations} iterations logged, "
                f"job used {loaded.job_cpu_per_s:.2f} CPU-s per s (nice {loaded.nice}, {loaded.threads} threads); {size}")
        rows += [
            BenchRow("app: submit -> next task painted p95 while PPO trains", ppo_p95 * ms, "ms", submit_p95 * ms, "quiet p95, same run", speedup(ppo_p95, submit_p95), "p95 <= 300 ms", note),
            BenchRow("app: submit -> next task painted p50 while PPO trains", ppo_p50 * ms, "ms", submit_p50 * ms, "quiet p50, same run", speedup(ppo_p50, submit_p50), "", f"{len(loaded.submits)} submits"),
        ]
    return rows


@dataclass
class LoadedPhase:
    """The submit cycles timed while a PPO job ran, and evidence that it did."""

    submits: list[float]
    status: str
    """The job's status when the timing ended (it must be `running`)."""
    iterations: int
    job_cpu_per_s: float
    """CPU seconds the worker's process tree used per wall second while the cycles were timed."""
    nice: int
    threads: int


def measure_under_ppo(url: str, folder: Path, config: AppBenchConfig, context, base_url: str) -> LoadedPhase:
    """Start a local worker with a PPO job, then time `config.submissions` cycles in a new session."""
    from rlhf.worker import DEFAULT_JOB_NICE, default_job_threads

    worker, job_id = start_ppo_job(url, folder, config)
    try:
        _, page = sign_in_timed(context, base_url)
        cpu_before, wall_before = worker.cpu_seconds(), time.monotonic()
        submits, _ = submit_cycles(page, config.submissions)
        job_cpu_per_s = (worker.cpu_seconds() - cpu_before) / (time.monotonic() - wall_before)
        page.close()
        status, iterations = stop_ppo_job(url, job_id)
    finally:
        worker.stop()
    if status != "running":
        raise RuntimeError(f"the PPO job was {status} before the timing ended: the figures were not taken under load")
    nice = config.job_nice if config.job_nice is not None else DEFAULT_JOB_NICE
    threads = config.job_threads if config.job_threads is not None else default_job_threads()
    return LoadedPhase(submits, status, iterations, job_cpu_per_s, nice, threads)


def cli() -> None:
    """`python bench/bench_app.py [--quick] [--annotations N] [--submissions N] [--warm-sign-ins N]
    [--ppo-model smollm2|tiny|none] [--job-nice N] [--job-threads N] [--json PATH]`."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke run (the flags below override them)")
    parser.add_argument("--json", default=None, help="also write the rows here as JSON")
    parser.add_argument("--annotations", type=int, help="ratings stored before measuring")
    parser.add_argument("--submissions", type=int, help="timed submit cycles per phase")
    parser.add_argument("--warm-sign-ins", type=int)
    parser.add_argument("--ppo-model", choices=("smollm2", "tiny", "none"))
    parser.add_argument("--job-nice", type=int, help="the local worker's --job-nice (default: its own, 10)")
    parser.add_argument("--job-threads", type=int, help="the local worker's --job-threads (default: its own, all cores but one)")
    parser.add_argument("--job-timeout", type=float, dest="job_timeout_s", help="seconds for the reward model and PPO's first iteration")
    args = parser.parse_args()
    overrides = {k: v for k, v in vars(args).items() if k not in ("quick", "json") and v is not None}
    emit(run(config=replace(QUICK if args.quick else FULL, **overrides)), args.json)


if __name__ == "__main__":
    cli()
