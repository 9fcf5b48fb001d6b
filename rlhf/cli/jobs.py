"""`rlhf app`, `rlhf worker` and `rlhf job submit|list|show|cancel|logs|kinds`.

Only typer is imported at module level; the backend is imported inside each command.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from rlhf.cli import app, fail

job_app = typer.Typer(help="Queue, watch and cancel jobs (training, generation, export).", no_args_is_help=True)
app.add_typer(job_app, name="job")

_DB_OPTION = typer.Option(None, "--database-url", envvar="RLHF_DATABASE_URL", help="Database URL (default: SQLite file data/rlhf.db).")


def _engine(database_url: Optional[str]):
    from rlhf.db import make_engine

    return make_engine(database_url)


# --------------------------------------------------------------------------- pure helpers


def parse_param(text: str) -> tuple[str, Any]:
    """`key=value` → (key, value); the value is JSON when it parses (3, 0.5, true, [1,2]), else text."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ValueError(f"--param {text!r}: expected key=value")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key, value


def gather_params(params: list[str], params_json: Optional[str], params_file: Optional[Path]) -> dict[str, Any]:
    """Params from a JSON file, then a JSON string, then `--param key=value` (later ones win)."""
    merged: dict[str, Any] = {}
    for source, text in ((str(params_file), params_file.read_text() if params_file else None), ("--params-json", params_json)):
        if text is None:
            continue
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{source}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})") from exc
        if not isinstance(loaded, dict):
            raise ValueError(f"{source}: expected a JSON object of params")
        merged.update(loaded)
    for item in params:
        key, value = parse_param(item)
        merged[key] = value
    return merged


def format_job_line(job) -> str:
    created = job.created_at.strftime("%Y-%m-%d %H:%M:%S") if job.created_at else "-"
    progress = f"{100 * job.progress:5.1f}%"
    return f"{job.id:>6}  {job.kind:<13} {job.status:<10} {progress}  {created}  {job.message[:60]}"


def streamlit_command(python: str, app_path: Path, *, port: int, address: Optional[str], headless: bool) -> list[str]:
    """`python -m streamlit run server.py` with our server options (Streamlit serves the `st.App` it defines)."""
    command = [python, "-m", "streamlit", "run", str(app_path), "--server.port", str(port)]
    if address:
        command += ["--server.address", address]
    command += ["--server.headless", "true" if headless else "false", "--browser.gatherUsageStats", "false"]
    return command


def worker_command(
    python: str, *, database_url: Optional[str], poll_interval: float, job_nice: Optional[int] = None, job_threads: Optional[int] = None
) -> list[str]:
    command = [python, "-m", "rlhf.worker", "serve", "--poll-interval", str(poll_interval)]
    if database_url:
        command += ["--database-url", database_url]
    if job_nice is not None:
        command += ["--job-nice", str(job_nice)]
    if job_threads is not None:
        command += ["--job-threads", str(job_threads)]
    return command


_JOB_NICE_OPTION = typer.Option(
    10, "--job-nice", envvar="RLHF_JOB_NICE", min=0, max=19,
    help="Niceness of job processes (0-19): higher leaves the CPU to the app first.",
)
_JOB_THREADS_OPTION = typer.Option(
    None, "--job-threads", envvar="RLHF_JOB_THREADS", min=1,
    help="CPU threads per job process (torch, OpenMP, BLAS, tokenizers); default: all cores but one.",
)


def default_app_path() -> Path:
    """`labeling_app/server.py` of the installed package (found without importing it): the `st.App`
    that runs the router `app.py` with the routes that keep a sign-in across reloads."""
    import importlib.util

    spec = importlib.util.find_spec("labeling_app")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the labeling_app package is not installed")
    return Path(spec.origin).with_name("server.py")


def stop_process(process: subprocess.Popen, *, sig: int = signal.SIGTERM, grace_s: float = 20.0) -> int:
    """Send `sig`, wait up to `grace_s`, then SIGKILL; returns the exit code."""
    return stop_processes([process], sig=sig, grace_s=grace_s)[0]


def stop_processes(processes: list[subprocess.Popen], *, sig: int = signal.SIGTERM, grace_s: float = 20.0) -> list[int]:
    """Signal every process first, then wait for all of them against one deadline (SIGKILL for
    whoever is still there at `grace_s`); their exit codes in order.

    One after the other, a slow Streamlit shutdown and then the worker's would add up: Ctrl-C
    would take two grace periods on a loaded machine instead of one.
    """
    for process in processes:
        if process.poll() is None:
            try:
                process.send_signal(sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
    return [process.wait() for process in processes]


# --------------------------------------------------------------------------- rlhf app / worker


@app.command("app")
def app_command(
    port: int = typer.Option(8501, "--port", help="Streamlit server port."),
    address: Optional[str] = typer.Option(None, "--address", help="Address to bind (default: Streamlit's, all interfaces; 127.0.0.1 for this machine only)."),
    worker: bool = typer.Option(True, "--worker/--no-worker", help="Also start one local job worker (stopped with the app)."),
    headless: bool = typer.Option(True, "--headless/--open-browser", help="Do not open a browser window."),
    poll_interval: float = typer.Option(0.25, "--poll-interval", help="The local worker's idle poll interval in seconds."),
    job_nice: int = _JOB_NICE_OPTION,
    job_threads: Optional[int] = _JOB_THREADS_OPTION,
    database_url: Optional[str] = _DB_OPTION,
) -> None:
    """Start the web app (Streamlit) and, by default, one local job worker; Ctrl-C stops both."""
    env = dict(os.environ)
    if database_url:
        env["RLHF_DATABASE_URL"] = database_url
    try:
        app_path = default_app_path()
    except FileNotFoundError as exc:
        raise fail(str(exc))
    # Ctrl-C (SIGINT) and SIGTERM (`timeout`, systemd, `docker stop`) only set a flag that the loop
    # below reads. A KeyboardInterrupt raised wherever the signal lands could land inside
    # `Popen.poll()` between taking and releasing its internal lock, and the `wait()` that stops
    # the child would then block forever: `rlhf app` hanging after Ctrl-C.
    stop_requested: list[int] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop_requested.append(signum))
    worker_process = None
    if worker:
        # Its own session: the worker hears from us (SIGTERM), so it can hand its running job back
        # to the queue before it exits.
        worker_process = subprocess.Popen(
            worker_command(sys.executable, database_url=database_url, poll_interval=poll_interval, job_nice=job_nice, job_threads=job_threads),
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        typer.echo(f"started job worker (pid {worker_process.pid})", err=True)
    # Streamlit gets its own session too: its uvicorn server (st.App) turns a terminal's SIGINT
    # into "Aborted!" and exit code 1, while SIGTERM from us stops it cleanly.
    streamlit = subprocess.Popen(
        streamlit_command(sys.executable, app_path, port=port, address=address, headless=headless),
        env=env,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    code = 0
    try:
        while not stop_requested:
            code = streamlit.poll()
            if code is not None:
                break
            if worker_process is not None and worker_process.poll() is not None:
                typer.echo(f"warning: the job worker exited with code {worker_process.returncode}; jobs will wait", err=True)
                worker_process = None
            time.sleep(0.5)  # a signal's handler runs during the sleep; the loop sees the flag at once after it
        if stop_requested:
            typer.echo("stopping", err=True)
    finally:
        stopped = stop_processes([streamlit] + ([worker_process] if worker_process is not None else []), sig=signal.SIGTERM)[0]
    if stop_requested:
        code = stopped
    raise typer.Exit(0 if code in (0, -signal.SIGINT, -signal.SIGTERM) else code)


def _die_with_parent() -> None:
    """In a child before exec (Linux): receive SIGTERM when `rlhf app` dies, even by kill -9, since
    the children run in their own sessions and no terminal signal reaches them."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@app.command("worker")
def worker_cli(
    once: bool = typer.Option(False, "--once", help="Run at most one job, then exit."),
    burst: bool = typer.Option(False, "--burst", help="Run jobs until the queue is empty, then exit."),
    poll_interval: float = typer.Option(0.25, "--poll-interval", help="Idle: seconds between looks for a queued job."),
    worker_id: Optional[str] = typer.Option(None, "--worker-id", help="Name recorded on claimed jobs (default host-pid-random)."),
    kinds: Optional[str] = typer.Option(None, "--kinds", help="Claim only these kinds, comma-separated (e.g. ppo,dpo,train-reward)."),
    launcher: Optional[str] = typer.Option(None, "--launcher", help='Command prefix for multi-GPU kinds, e.g. "accelerate launch --num_processes 8".'),
    launch_kinds: Optional[str] = typer.Option(None, "--launch-kinds", help="Kinds run through --launcher, comma-separated (default: ppo)."),
    kind_module: list[str] = typer.Option([], "--kind-module", help="A module exposing JOB_KINDS with more job kinds (repeatable)."),
    heartbeat_interval: float = typer.Option(2.0, "--heartbeat-interval", help="Seconds between heartbeats of a running job."),
    stale_after: float = typer.Option(30.0, "--stale-after", help="A running job without a heartbeat for this long is re-queued."),
    cancel_grace: float = typer.Option(10.0, "--cancel-grace", help="Seconds a cancelled job may take to stop before it is killed."),
    max_attempts: int = typer.Option(3, "--max-attempts", help="Give up (fail) a job whose worker died this many times."),
    artifacts_dir: Optional[Path] = typer.Option(None, "--artifacts-dir", help="Where artifacts go (default data/artifacts)."),
    job_nice: int = _JOB_NICE_OPTION,
    job_threads: Optional[int] = _JOB_THREADS_OPTION,
    database_url: Optional[str] = _DB_OPTION,
) -> None:
    """Claim queued jobs and run each in a child process (Ctrl-C: the running job is re-queued)."""
    from rlhf.job_kinds import load_registry
    from rlhf.worker import Worker, WorkerConfig, install_stop_signals

    def split(text: Optional[str]) -> Optional[tuple[str, ...]]:
        return None if text is None else tuple(k.strip() for k in text.split(",") if k.strip())

    registry = load_registry(list(kind_module) or None)
    for name in (split(kinds) or ()) + (split(launch_kinds) or ()):
        if name not in registry:
            raise fail(f"unknown job kind {name!r}; known kinds: {', '.join(sorted(registry))}")
    config = WorkerConfig(
        poll_interval_s=poll_interval,
        heartbeat_interval_s=heartbeat_interval,
        stale_after_s=stale_after,
        cancel_grace_s=cancel_grace,
        max_attempts=max_attempts,
        kinds=split(kinds),
        kind_modules=tuple(kind_module),
        launcher=launcher,
        launch_kinds=split(launch_kinds),
        artifacts_dir=artifacts_dir,
        job_nice=job_nice,
        job_threads=job_threads,
    )
    if worker_id:
        config.worker_id = worker_id
    engine = _engine(database_url)
    worker = Worker(engine, config, registry=registry)
    install_stop_signals(worker)
    typer.echo(f"worker {worker.worker_id} on {engine.url.render_as_string(hide_password=True)}; kinds: {', '.join(worker.claimable_kinds())}", err=True)
    outcomes = worker.run(once=once, burst=burst)
    for outcome in outcomes:
        typer.echo(f"job {outcome.job_id}: {outcome.status}")
    engine.dispose()


# --------------------------------------------------------------------------- rlhf job ...


@job_app.command("submit")
def job_submit(
    kind: str = typer.Argument(..., help="train-reward, ppo, dpo, generate, export or simulate (see `rlhf job kinds`)."),
    param: list[str] = typer.Option([], "--param", "-p", help="key=value (value parsed as JSON when it can be); repeatable."),
    params_json: Optional[str] = typer.Option(None, "--params-json", help="All params as one JSON object."),
    params_file: Optional[Path] = typer.Option(None, "--params-file", exists=True, dir_okay=False, help="A JSON file of params."),
    project: Optional[str] = typer.Option(None, "--project", help="The project the job works on (name)."),
    wait: bool = typer.Option(False, "--wait", help="Follow the job until it finishes (a worker must be running)."),
    database_url: Optional[str] = _DB_OPTION,
) -> None:
    """Queue a job; prints its id."""
    from rlhf.job_kinds import load_registry
    from rlhf.jobs import InvalidJobParams, submit_job
    from rlhf.roles import SYSTEM

    try:
        params = gather_params(param, params_json, params_file)
    except ValueError as exc:
        raise fail(str(exc))
    engine = _engine(database_url)
    try:
        job = submit_job(engine, SYSTEM, kind, params, project=project, registry=load_registry())
    except InvalidJobParams as exc:
        raise fail(str(exc))
    typer.echo(job.id)
    if wait:
        final = _follow(engine, job.id)
        raise typer.Exit(0 if final == "done" else 1)


def _follow(engine, job_id: int, interval_s: float = 1.0) -> str:
    """Print progress and new log lines until the job finishes; returns its final status."""
    from rlhf.jobs import FINISHED_STATUSES, get_job

    shown = ""
    while True:
        job = get_job(engine, job_id)
        new = job.log_tail[len(shown):] if job.log_tail.startswith(shown) else job.log_tail
        for line in new.splitlines():
            if line:
                typer.echo(line, err=True)
        shown = job.log_tail
        if job.status in FINISHED_STATUSES:
            typer.echo(f"job {job_id}: {job.status} {job.message}", err=True)
            if job.error:
                typer.echo(job.error, err=True)
            return job.status
        time.sleep(interval_s)


@job_app.command("list")
def job_list(
    status: Optional[str] = typer.Option(None, "--status", help="queued, running, done, failed or cancelled."),
    kind: Optional[str] = typer.Option(None, "--kind"),
    limit: int = typer.Option(50, "--limit"),
    database_url: Optional[str] = _DB_OPTION,
) -> None:
    """Jobs, newest first."""
    from rlhf.jobs import InvalidJobParams, list_jobs
    from rlhf.roles import SYSTEM

    engine = _engine(database_url)
    try:
        jobs = list_jobs(engine, SYSTEM, status=status, kind=kind, limit=limit)
    except InvalidJobParams as exc:
        raise fail(str(exc))
    typer.echo(f"{'id':>6}  {'kind':<13} {'status':<10} {'prog':>6}  {'created (UTC)':<19}  message")
    for job in jobs:
        typer.echo(format_job_line(job))


@job_app.command("show")
def job_show(job_id: int = typer.Argument(...), database_url: Optional[str] = _DB_OPTION) -> None:
    """A job's state, params, latest metrics, artifacts with their lineage, and error."""
    from rlhf.jobs import JobNotFound, artifact_lineage, get_job, job_artifacts, job_metrics

    engine = _engine(database_url)
    try:
        job = get_job(engine, job_id)
    except JobNotFound as exc:
        raise fail(str(exc))
    typer.echo(f"job {job.id}: {job.kind}  {job.status}  {100 * job.progress:.1f}%  {job.message}")
    typer.echo(f"  worker {job.worker_id or '-'}  attempts {job.attempts}  cancel requested: {job.cancel_requested}")
    typer.echo(f"  created {job.created_at:%Y-%m-%d %H:%M:%S}  started {_when(job.started_at)}  finished {_when(job.finished_at)}")
    typer.echo(f"  params {json.dumps(job.params, sort_keys=True)}")
    points = job_metrics(engine, job_id)
    if points:
        typer.echo(f"  metrics: {len(points)} points; last at step {points[-1].step}: {json.dumps(points[-1].values, sort_keys=True)}")
    for artifact in job_artifacts(engine, job_id):
        typer.echo(f"  artifact {artifact.id} {artifact.kind} {artifact.name}: {artifact.path}")
        for ancestor in artifact_lineage(engine, artifact.id)[1:]:
            typer.echo(f"    built from artifact {ancestor.id} {ancestor.kind} {ancestor.name} ({ancestor.content_hash or '-'})")
    if job.error:
        typer.echo(f"  error: {job.error}")
    if job.traceback:
        typer.echo(job.traceback)


def _when(value) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


@job_app.command("cancel")
def job_cancel(job_id: int = typer.Argument(...), database_url: Optional[str] = _DB_OPTION) -> None:
    """Cancel a queued job at once, or ask its worker to stop a running one."""
    from rlhf.jobs import JobNotFound, cancel_job
    from rlhf.roles import SYSTEM

    engine = _engine(database_url)
    try:
        job = cancel_job(engine, SYSTEM, job_id)
    except JobNotFound as exc:
        raise fail(str(exc))
    if job.status == "running":
        typer.echo(f"job {job_id}: cancel requested; its worker will stop it")
    else:
        typer.echo(f"job {job_id}: {job.status}")


@job_app.command("logs")
def job_logs(
    job_id: int = typer.Argument(...),
    lines: Optional[int] = typer.Option(None, "--lines", "-n", help="Only the newest N lines."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the job finishes."),
    database_url: Optional[str] = _DB_OPTION,
) -> None:
    """The job's log tail (the newest 200 lines are kept in the database)."""
    from rlhf.jobs import JobNotFound, job_log

    engine = _engine(database_url)
    try:
        if follow:
            _follow(engine, job_id)
            return
        for line in job_log(engine, job_id, lines=lines):
            typer.echo(line)
    except JobNotFound as exc:
        raise fail(str(exc))


@job_app.command("kinds")
def job_kinds(as_json: bool = typer.Option(False, "--json", help="Print the kinds and params schema as JSON.")) -> None:
    """The job kinds and their params (name, type, default, help)."""
    from rlhf.job_kinds import describe_kinds

    described = describe_kinds()
    if as_json:
        typer.echo(json.dumps(described, indent=2, default=str))
        return
    for name, kind in described.items():
        typer.echo(f"{name}: {kind['summary']}")
        if not kind["available"]:
            typer.echo(f"    ({kind['unavailable_reason']})")
        for spec in kind["params"]:
            default = "required" if spec["required"] else f"default {json.dumps(spec['default'], default=str)}"
            typer.echo(f"    {spec['name']} ({spec['type']}; {default}) {spec['help']}".rstrip())
