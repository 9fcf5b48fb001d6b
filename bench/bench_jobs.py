"""Jobs and workers: claim latency of an idle worker, staleness of a running job's progress, surviving crashes.

Targets (RLHF Studio issue 8):
- a queued job is claimed within 1 s by an idle worker (distribution over `jobs` submissions,
  on SQLite and PostgreSQL); anchor: a naive poller that sleeps 1 s between looks;
- the progress of a running job, as read from the database, is at most 2 s old; anchor for
  the cost side: writing every progress call straight to the database (what the throttled
  reporter avoids), measured as time per call on the training loop;
- a worker survives 20 consecutive failing jobs (exceptions, os._exit, segfaults, SIGKILL)
  and still runs the 21st.

The worker runs as its own process (`python -m rlhf.worker serve`), each job in its child, as
in production; the job kinds used here are this module's `JOB_KINDS`.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

from _common import REPO_ROOT, BenchRow, main, percentile

BENCH_DIR = Path(__file__).resolve().parent
POSTGRES_URL = os.environ.get("RLHF_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
CRASH_MODES = ("exception", "os_exit", "segfault", "sigkill", "sys_exit")


# --------------------------------------------------------------------------- the bench's job kinds


def _noop_validate(params):
    from rlhf.job_kinds import ParamSpec, check_params

    return check_params("bench-noop", [ParamSpec("n", int, 0)], params)


def _noop_run(engine, job, params, reporter, workdir):
    from rlhf.job_kinds import JobResult

    return JobResult(message="noop")


def _tick_validate(params):
    from rlhf.job_kinds import ParamSpec, check_params

    return check_params("bench-tick", [ParamSpec("steps", int, 100), ParamSpec("step_s", float, 0.05)], params)


def _tick_run(engine, job, params, reporter, workdir):
    from rlhf.job_kinds import JobResult
    from rlhf.progress import check_stop

    for step in range(params["steps"]):
        check_stop(reporter)
        time.sleep(params["step_s"])
        # The message carries the wall time of the report, so a reader can tell how old it is.
        reporter.progress(step + 1, params["steps"], f"{time.time():.6f}")
        reporter.metrics(step, {"loss": 1.0 / (step + 1)})
    return JobResult(message="ticked")


def _crash_validate(params):
    from rlhf.job_kinds import ParamSpec, check_params

    return check_params("bench-crash", [ParamSpec("mode", str, "exception")], params)


def _crash_run(engine, job, params, reporter, workdir):
    (workdir / "half").mkdir()
    mode = params["mode"]
    if mode == "exception":
        raise RuntimeError("planned failure")
    if mode == "os_exit":
        os._exit(1)
    if mode == "segfault":
        import ctypes

        ctypes.string_at(0)
    if mode == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "sys_exit":
        sys.exit(3)
    raise ValueError(mode)


def _job_kinds():
    from rlhf.job_kinds import JobKind

    return {
        "bench-noop": JobKind("bench-noop", "returns at once", _noop_validate, _noop_run),
        "bench-tick": JobKind("bench-tick", "reports progress every step", _tick_validate, _tick_run),
        "bench-crash": JobKind("bench-crash", "fails on purpose", _crash_validate, _crash_run),
    }


JOB_KINDS = _job_kinds()


# --------------------------------------------------------------------------- databases and the worker process


@contextmanager
def database(backend: str, workdir: Path):
    """A migrated database: a SQLite file in `workdir`, or a fresh schema on the PostgreSQL server."""
    from sqlalchemy import text

    from rlhf.db import init_database, make_engine

    if backend == "sqlite":
        engine = make_engine(f"sqlite:///{workdir / 'bench.db'}")
        init_database(engine)
        try:
            yield engine
        finally:
            engine.dispose()
        return
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL, pool_size=1)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = make_engine(f"{POSTGRES_URL}?options=-csearch_path%3D{schema}")
    try:
        init_database(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def postgres_reachable() -> bool:
    from sqlalchemy import text

    from rlhf.db import make_engine

    engine = make_engine(POSTGRES_URL, pool_size=1)
    try:
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        return True
    except Exception:  # noqa: BLE001 - any failure means: skip PostgreSQL
        return False
    finally:
        engine.dispose()


@contextmanager
def worker_process(engine, workdir: Path, poll_interval: float = 0.25):
    """`python -m rlhf.worker serve` on `engine`'s database with this module's kinds, stopped with SIGTERM."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["RLHF_DATA_DIR"] = str(workdir)
    url = engine.url.render_as_string(hide_password=False)
    command = [sys.executable, "-m", "rlhf.worker", "serve", "--database-url", url, "--kind-module", "bench_jobs", "--poll-interval", str(poll_interval)]
    with open(workdir / "worker.err", "ab") as errors:
        process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=errors)
        try:
            yield process
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def submit(engine, kind: str, **params) -> int:
    from rlhf.jobs import submit_job
    from rlhf.roles import SYSTEM

    return submit_job(engine, SYSTEM, kind, params, registry=dict(JOB_KINDS)).id


def wait_finished(engine, job_id: int, timeout_s: float = 120.0):
    from rlhf.jobs import FINISHED_STATUSES, get_job

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = get_job(engine, job_id)
        if job.status in FINISHED_STATUSES:
            return job
        time.sleep(0.02)
    raise TimeoutError(f"job {job_id} did not finish within {timeout_s} s")


def wait_claimed(engine, job_id: int, timeout_s: float = 60.0):
    from rlhf.jobs import get_job

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = get_job(engine, job_id)
        if job.started_at is not None:
            return job
        time.sleep(0.01)
    raise TimeoutError(f"job {job_id} was not claimed within {timeout_s} s")


# --------------------------------------------------------------------------- measurements


def wait_idle(workdir: Path, timeout_s: float = 60.0) -> None:
    """Until the worker has reaped its last child (it removes the job's workdir after the child exits)."""
    tmp = workdir / "artifacts" / ".tmp"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not tmp.exists() or not any(tmp.iterdir()):
            return
        time.sleep(0.01)
    raise TimeoutError("the worker did not become idle")


def claim_latencies(engine, workdir: Path, jobs: int, seed: int = 0) -> list[float]:
    """Seconds from submit to claim (the rows' `created_at` → `started_at`) for `jobs` jobs handed to an idle worker."""
    import random

    rng = random.Random(seed)
    latencies = []
    with worker_process(engine, workdir):
        wait_finished(engine, submit(engine, "bench-noop"))  # the worker is up
        for _ in range(jobs):
            wait_idle(workdir)
            time.sleep(rng.uniform(0.05, 0.6))  # land anywhere in the poll cycle
            job = wait_finished(engine, submit(engine, "bench-noop"))
            latencies.append((job.started_at - job.created_at).total_seconds())
    return latencies


def naive_poller_latencies(engine, jobs: int, interval_s: float = 1.0, seed: int = 0) -> list[float]:
    """The anchor: a loop that claims (the same atomic claim) then sleeps `interval_s`, no child process."""
    import random

    from rlhf.jobs import claim_next_job, finish_job

    rng = random.Random(seed)
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            job = claim_next_job(engine, "naive")
            if job is not None:
                finish_job(engine, job.id, "naive")
            stop.wait(interval_s)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    latencies = []
    try:
        for _ in range(jobs):
            time.sleep(rng.uniform(0.05, 0.6))
            job = wait_finished(engine, submit(engine, "bench-noop"))
            latencies.append((job.started_at - job.created_at).total_seconds())
    finally:
        stop.set()
        thread.join()
    return latencies


def progress_lags(engine, workdir: Path, steps: int, step_s: float) -> list[float]:
    """How old the progress read from the database is, sampled every 50 ms while a job reports every `step_s`."""
    from rlhf.jobs import get_job

    lags = []
    with worker_process(engine, workdir):
        job_id = submit(engine, "bench-tick", steps=steps, step_s=step_s)
        wait_claimed(engine, job_id)
        while True:
            job = get_job(engine, job_id)
            if job.status != "running":
                break
            if job.message:
                lags.append(time.time() - float(job.message))
            time.sleep(0.05)
        if job.status != "done":
            raise RuntimeError(f"tick job ended {job.status}: {job.error}")
    return lags


def reporter_call_cost(engine, calls: int) -> tuple[float, float]:
    """Seconds per progress+metrics call on the training loop: our throttled reporter vs a direct write each call."""
    from rlhf.jobs import claim_next_job, report_state
    from rlhf.worker import DatabaseReporter

    job_id = submit(engine, "bench-noop")
    claim_next_job(engine, "cost")
    reporter = DatabaseReporter(engine, job_id, "cost", interval_s=0.5).start()
    start = time.perf_counter()
    for i in range(calls):
        reporter.progress(i + 1, calls, "x")
        reporter.metrics(i, {"loss": 1.0})
    ours = (time.perf_counter() - start) / calls
    reporter.close()
    start = time.perf_counter()
    for i in range(calls):
        report_state(engine, job_id, "cost", progress=(i + 1) / calls, message="x", metric_points=[(i, {"loss": 1.0})])
    direct = (time.perf_counter() - start) / calls
    return ours, direct


def survive_failures(engine, workdir: Path, failures: int) -> tuple[int, bool, float]:
    """Submit `failures` crashing jobs then one good one; returns (failed as expected, last one done, seconds per job)."""
    ids = [submit(engine, "bench-crash", mode=CRASH_MODES[i % len(CRASH_MODES)]) for i in range(failures)]
    last = submit(engine, "bench-noop")
    start = time.perf_counter()
    with worker_process(engine, workdir):
        final = wait_finished(engine, last, timeout_s=60 + 15 * failures)
    elapsed = time.perf_counter() - start
    from rlhf.jobs import get_job

    failed = sum(1 for i in ids if (job := get_job(engine, i)).status == "failed" and job.traceback)
    leftovers = [p for p in (workdir / "artifacts" / ".tmp").glob("*")] if (workdir / "artifacts" / ".tmp").exists() else []
    if leftovers:
        raise RuntimeError(f"failed jobs left work directories behind: {leftovers}")
    return failed, final.status == "done", elapsed / (failures + 1)


# --------------------------------------------------------------------------- the table


def run(quick: bool = False) -> list[BenchRow]:
    jobs = 5 if quick else 20
    failures = 5 if quick else 20
    tick_steps, tick_s = (40, 0.05) if quick else (200, 0.05)
    backends = ["sqlite"] + (["postgres"] if postgres_reachable() else [])
    rows: list[BenchRow] = []
    for backend in backends:
        with tempfile.TemporaryDirectory(prefix=f"bench-jobs-{backend}-") as tmp:
            workdir = Path(tmp)
            with database(backend, workdir) as engine:
                ours = claim_latencies(engine, workdir, jobs)
                naive = naive_poller_latencies(engine, jobs)
                rows.append(
                    BenchRow(
                        f"claim latency p95, idle worker ({backend}, {jobs} jobs)",
                        percentile(ours, 95), "s", percentile(naive, 95), "poller sleeping 1 s",
                        percentile(naive, 95) / max(percentile(ours, 95), 1e-9), "≤ 1 s",
                        f"p50 {statistics.median(ours):.3f} s, max {max(ours):.3f} s",
                    )
                )
                lags = progress_lags(engine, workdir, tick_steps, tick_s)
                ours_call, direct_call = reporter_call_cost(engine, 200)
                rows.append(
                    BenchRow(
                        f"progress age while running, max ({backend}, report every {tick_s:g} s)",
                        max(lags), "s", target="≤ 2 s",
                        note=f"p50 {statistics.median(lags):.3f} s, p95 {percentile(lags, 95):.3f} s over {len(lags)} reads",
                    )
                )
                rows.append(
                    BenchRow(
                        f"reporter cost per progress+metrics call ({backend})",
                        ours_call * 1e6, "µs", direct_call * 1e6, "direct DB write per call",
                        direct_call / max(ours_call, 1e-12), "training loop never waits on the DB",
                    )
                )
                failed, last_done, per_job = survive_failures(engine, workdir, failures)
                rows.append(
                    BenchRow(
                        f"worker survives {failures} failing jobs, runs the next ({backend})",
                        float(failed), f"of {failures} failed with traceback", target=f"{failures}/{failures} and next done",
                        note=f"next job {'done' if last_done else 'NOT done'}; {per_job:.2f} s per job incl. child start",
                    )
                )
    return rows


if __name__ == "__main__":
    main(run)
