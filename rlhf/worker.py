"""The job worker: claims queued jobs, runs each in a child process, heartbeats, honours cancel.

Parent (`Worker`, `rlhf worker`):
1. claim the oldest queued job atomically (`rlhf.jobs.claim_next_job`); idle, poll every
   `poll_interval_s` (on PostgreSQL a LISTEN wakes it as soon as a job is submitted);
2. make a fresh workdir `<artifacts>/.tmp/<job>-a<attempt>-<random>` (removing any other
   workdir of the job: we own it now, so they are dead attempts') and start the child
   `python -m rlhf.worker run-job ID` (through `launcher`, e.g. `accelerate launch`, for the
   kinds that allow it) in its own process group, output to `<logs>/<job-id>.log`;
3. heartbeat from a thread while it runs; when cancel is requested the child stops itself, and
   after `cancel_grace_s` the parent kills its process group; a job re-queued under us is killed;
4. when the child has gone: if it did not record an outcome (a crash, a segfault, the OOM
   killer), mark the job failed with the exit reason and the tail of its output (faulthandler
   prints the Python stack on a segfault); remove the workdir, so a failed job leaves nothing;
5. every `requeue_every_s`, put back jobs whose worker stopped heartbeating, and remove the
   workdirs of attempts that are over (`dead_workdirs`: a worker killed mid-job leaves one).

Child (`execute_job`): runs the kind's adapter with a `DatabaseReporter` (progress, metrics
and log lines written to the job's row by a background thread at most every
`report_interval_s`, the last state always flushed; `should_stop()` true once cancel is
requested), then renames the artifacts into place and marks the job done in one transaction,
or records the exception and its traceback. An artifact's place, `<kind>/<job>-<name>`, depends
on the job alone: a re-run after an attempt that died between placing and recording replaces
that attempt's copy instead of adding a second one (`place_artifacts`).

A crash, a segfault or an out-of-memory kill of a job takes down only its child: the worker
goes on with the next job.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback as traceback_module
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from rlhf.jobs import (
    FINISHED_STATUSES,
    LOG_TAIL_LINES,
    ArtifactRecord,
    Heartbeat,
    append_log_lines,
    claim_next_job,
    fail_job,
    finish_cancelled,
    finish_job,
    get_job,
    heartbeat,
    job_control,
    progress_fraction,
    release_job,
    report_state,
    requeue_stale_jobs,
)
from rlhf.jsonsafe import json_safe
from rlhf.progress import NullReporter

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from rlhf.job_kinds import JobKind, JobResult
    from rlhf.schema import Job

WORKER_PID_ENV = "RLHF_WORKER_PID"
"""The child exits when this process is gone, so an orphaned job never holds a GPU."""
FAULT_ENV = "RLHF_WORKER_FAULT"
"""Test-only: names a point where a job process kills its worker and itself (see `_fault_point`)."""
EXIT_LOST = 3
"""Child exit code: the job was no longer ours (re-queued or cancelled) when it finished."""
EXIT_ORPHANED = 70
MAX_BACKOFF_S = 10.0
"""Longest wait between claim attempts while the database does not answer."""
OUTPUT_TAIL_CHARS = 20_000
"""How much of a crashed child's output becomes the job's traceback."""
DEFAULT_JOB_NICE = 10
"""Job processes run at this niceness by default: the app's requests (niceness 0) get a core first."""
JOB_NICE_ENV = "RLHF_JOB_NICE"
JOB_THREADS_ENV = "RLHF_JOB_THREADS"
"""Defaults of `rlhf worker` / `rlhf app` --job-nice and --job-threads."""
THREAD_LIMIT_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS", "RAYON_NUM_THREADS")
"""Read at start-up by torch (intra-op pool), MKL, OpenBLAS, numexpr and HF tokenizers (Rayon)."""


def usable_cpus() -> int:
    """The cores this process may run on (its affinity mask, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_job_threads() -> int:
    """All cores but one, at least 1: a job never takes the core the app's server needs."""
    return max(1, usable_cpus() - 1)


def make_worker_id() -> str:
    """`host-pid-random`: unique among all workers sharing a database."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass
class WorkerConfig:
    """How a worker polls, heartbeats, launches and cleans up."""

    worker_id: str = field(default_factory=make_worker_id)
    """Recorded on every job it claims; unique per worker process."""
    poll_interval_s: float = 0.25
    """Idle: how often to look for a queued job (a queued job is claimed within about this)."""
    heartbeat_interval_s: float = 2.0
    """While a job runs: how often its row's `heartbeat_at` is refreshed."""
    stale_after_s: float = 30.0
    """A running job whose heartbeat is older than this lost its worker and is re-queued."""
    requeue_every_s: float = 10.0
    """How often this worker looks for stale jobs (any worker may re-queue any job)."""
    max_attempts: int = 3
    """A job started this many times whose worker died each time is marked failed."""
    cancel_grace_s: float = 10.0
    """After a cancel request, how long the job may take to stop itself before it is killed."""
    kinds: tuple[str, ...] | None = None
    """Claim only these kinds (e.g. training kinds on a GPU box); None: every kind it knows."""
    kind_modules: tuple[str, ...] = ()
    """Extra modules exposing `JOB_KINDS`, loaded here and in every job's child process."""
    launcher: str | None = None
    """Command prefix for launchable kinds, e.g. "accelerate launch --num_processes 8"."""
    launch_kinds: tuple[str, ...] | None = None
    """Kinds run through `launcher`; None: those whose JobKind is `launchable` (ppo)."""
    artifacts_dir: Path | None = None
    """Where finished artifacts go (`<kind>/<job-id>-<name>`); default `<data dir>/artifacts`."""
    log_dir: Path | None = None
    """Each job's full output, `<job-id>.log`; default `<data dir>/logs/jobs`."""
    report_interval_s: float = 0.5
    """The child writes progress / metrics / log lines to the job's row at most this often."""
    python: str = sys.executable
    """The interpreter that runs job children."""
    job_nice: int = DEFAULT_JOB_NICE
    """Niceness of each job process (0-19, higher yields the CPU sooner), so annotators on the same
    machine do not feel a training job; never lower than the worker's own (that needs root)."""
    job_threads: int | None = None
    """CPU threads per job process (torch, OpenMP, MKL, BLAS, tokenizers); None: `default_job_threads()`."""


# --------------------------------------------------------------------------- child side


class DatabaseReporter:
    """A `rlhf.progress.Reporter` that writes a running job's state to its row.

    Calls only update memory (a training step never waits on the database); a background
    thread writes progress, message, the log tail (newest LOG_TAIL_LINES) and new metric points
    at most every `interval_s`, and polls `cancel_requested`. `close()` writes the last state.
    Writes are guarded by `worker_id`: once the job is no longer ours, nothing more is written
    and `should_stop()` is true. `echo`: also print each log line there (the child's output,
    i.e. the worker's full log file for the job).
    """

    def __init__(
        self, engine: Engine, job_id: int, worker_id: str, *, interval_s: float = 0.5, initial_log: str = "", echo: TextIO | None = None
    ) -> None:
        self._engine = engine
        self._echo = echo
        self._job_id = job_id
        self._worker_id = worker_id
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._lines: deque[str] = deque(initial_log.splitlines() if initial_log else [], maxlen=LOG_TAIL_LINES)
        self._progress: float | None = None
        self._message: str | None = None
        self._pending_metrics: list[tuple[int, dict[str, Any]]] = []
        self._dirty = False
        self.cancel_requested = False
        self.lost = False
        self.write_errors = 0
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"job-{job_id}-reporter", daemon=True)

    def start(self) -> DatabaseReporter:
        self._thread.start()
        return self

    # Reporter protocol -------------------------------------------------------------------
    def progress(self, done: float, total: float | None = None, message: str = "") -> None:
        fraction = progress_fraction(done, total)
        with self._lock:
            if fraction is not None:
                self._progress = fraction
            if message or fraction is None:
                self._message = message or f"{done:g} done"
            self._dirty = True

    def metrics(self, step: int, values: dict[str, float]) -> None:
        with self._lock:
            self._pending_metrics.append((int(step), json_safe(dict(values))))
            self._dirty = True

    def log(self, line: str) -> None:
        tail = append_log_lines("", [line])
        if self._echo is not None:  # the worker's log file keeps every line, the row the newest
            print(tail, file=self._echo, flush=True)
        with self._lock:
            self._lines.extend(tail.splitlines() or [""])
            self._dirty = True

    def should_stop(self) -> bool:
        return self.cancel_requested or self.lost

    # ------------------------------------------------------------------------------------
    def log_tail(self) -> str:
        with self._lock:
            return "\n".join(self._lines)

    def flush(self) -> None:
        """Write pending state now (and learn about cancel); DB errors are counted and retried."""
        with self._lock:
            dirty = self._dirty
            progress, message = self._progress, self._message
            points, self._pending_metrics = self._pending_metrics, []
            tail = "\n".join(self._lines)
            self._dirty = False
        try:
            if dirty:
                state = report_state(
                    self._engine, self._job_id, self._worker_id, progress=progress, message=message, log_tail=tail, metric_points=points
                )
            else:
                state = job_control(self._engine, self._job_id, self._worker_id)
        except Exception as exc:  # noqa: BLE001 - a DB hiccup must not kill the job; retry next tick
            self.write_errors += 1
            print(f"job reporter: could not write job state ({exc.__class__.__name__}: {exc}); will retry", file=sys.stderr)
            with self._lock:
                self._pending_metrics = points + self._pending_metrics
                self._dirty = self._dirty or dirty
            return
        self.lost = self.lost or not state.owned
        self.cancel_requested = self.cancel_requested or state.cancel_requested

    def _loop(self) -> None:
        while not self._closed.wait(self._interval_s):
            self.flush()

    def close(self) -> None:
        """Stop the background thread and write the last state."""
        self._closed.set()
        if self._thread.is_alive():
            self._thread.join()
        self.flush()


class ControlOnlyReporter(NullReporter):
    """For the non-main ranks under a launcher: reports nothing, but learns about cancel."""

    def __init__(self, engine: Engine, job_id: int, worker_id: str, *, interval_s: float = 0.5) -> None:
        self._engine, self._job_id, self._worker_id, self._interval_s = engine, job_id, worker_id, interval_s
        self._state = Heartbeat(owned=True, cancel_requested=False)
        self._checked_at = 0.0

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= self._interval_s:
            self._checked_at = now
            try:
                self._state = job_control(self._engine, self._job_id, self._worker_id)
            except Exception:  # noqa: BLE001 - keep the last known state
                pass
        return self._state.cancel_requested or not self._state.owned

    def close(self) -> None:
        pass


def safe_name(name: str) -> str:
    """`name` usable as one path component: letters, digits, `._-`, at most 120 characters."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "artifact"
    return cleaned[:120]


def artifact_destinations(artifacts_dir: Path, records: list[ArtifactRecord], job_id: int) -> list[Path | None]:
    """Where each record goes: `<artifacts_dir>/<artifact kind>/<job id>-<name>` (None: no file).

    The place is a function of the job and the record's position alone, never of what is on
    disk: a re-run of the job (an earlier attempt died after placing) finds the same places and
    replaces what is there. Two records of one job with the same kind and name get `-2`, `-3`.
    """
    seen: dict[Path, int] = {}
    out: list[Path | None] = []
    for record in records:
        if not record.path:
            out.append(None)
            continue
        base = artifacts_dir / safe_name(record.kind) / f"{job_id}-{safe_name(record.name)}"
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else base.with_name(f"{base.name}-{seen[base]}"))
    return out


def _inside(workdir: Path, path: str, record: ArtifactRecord) -> Path:
    resolved = Path(path) if Path(path).is_absolute() else workdir / path
    resolved = resolved.resolve()
    if workdir not in resolved.parents:
        raise ValueError(f"artifact {record.name!r}: {resolved} is not inside the job's workdir {workdir}")
    if not resolved.exists():
        raise FileNotFoundError(f"artifact {record.name!r}: {resolved} was not written")
    return resolved


DISPLACED_DIR = ".displaced"
"""Inside the workdir: what an earlier attempt of the job had placed, moved aside by this one."""


@dataclass
class Placement:
    """What `place_artifacts` moved, so that it can be undone while the job's end is not committed."""

    placed: list[tuple[Path, int]] = field(default_factory=list)
    """(final path, its inode): undo removes a path only while it is still the one we put there."""
    displaced: list[tuple[Path, Path]] = field(default_factory=list)
    """(final path, where an earlier attempt's copy was moved aside in our workdir)."""

    @property
    def paths(self) -> list[Path]:
        return [path for path, _ in self.placed]

    def undo(self) -> None:
        """Remove what we placed and put back what we displaced (the job's end was not recorded)."""
        for path, inode in reversed(self.placed):
            try:
                ours = path.lstat().st_ino == inode
            except FileNotFoundError:
                continue
            if ours:  # else a newer attempt already replaced it: leave theirs alone
                remove_paths([path])
        for path, saved in reversed(self.displaced):
            if saved.exists() and not path.exists():
                os.replace(saved, path)
        self.placed, self.displaced = [], []


def place_artifacts(records: list[ArtifactRecord], workdir: Path, artifacts_dir: Path, job_id: int) -> tuple[list[ArtifactRecord], Placement]:
    """Rename each artifact from `workdir` to its final place; returns the records with final paths and the `Placement`.

    What moves is `record.root` when set (and `path` must lie inside it), else `record.path`.
    A path outside `workdir` is refused (ValueError): only what the job wrote in its own
    directory can be moved atomically, and nothing else may be deleted on failure. A final
    place already taken was left by an earlier attempt of this job that died before recording
    its end (nothing recorded points there): it is moved aside into `workdir/.displaced` (so the
    workdir's removal deletes it) and replaced, so a re-run never leaves a second copy. On any
    error, the placement is undone before the error propagates.
    """
    from dataclasses import replace

    placement = Placement()
    out: list[ArtifactRecord] = []
    workdir = workdir.resolve()
    try:
        for position, (record, destination) in enumerate(zip(records, artifact_destinations(artifacts_dir, records, job_id))):
            if destination is None:
                out.append(record)
                continue
            path = _inside(workdir, record.path, record)
            moved = _inside(workdir, record.root, record) if record.root else path
            if moved != path and moved not in path.parents:
                raise ValueError(f"artifact {record.name!r}: {path} is not inside its root {moved}")
            destination.parent.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(destination):
                aside = workdir / DISPLACED_DIR / str(position)
                aside.parent.mkdir(exist_ok=True)
                os.replace(destination, aside)
                placement.displaced.append((destination, aside))
            os.replace(moved, destination)
            placement.placed.append((destination, destination.lstat().st_ino))
            final = destination / path.relative_to(moved) if moved != path else destination
            out.append(replace(record, path=str(final.resolve()), root=str(destination.resolve()) if record.root else ""))
    except BaseException:
        placement.undo()
        raise
    return out, placement


def remove_paths(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


# Work directories: `<artifacts>/.tmp/<job id>-a<attempt>-<random>` -------------------------

_WORKDIR_NAME = re.compile(r"^(?P<job>\d+)-(?:a(?P<attempt>\d+)-)?[0-9a-f]+$")


def workdir_name(job: Job) -> str:
    """`<job id>-a<attempt>-<random>`: keyed by job and attempt, so dead attempts can be found."""
    return f"{job.id}-a{job.attempts}-{uuid.uuid4().hex[:8]}"


def workdirs_by_job(tmp_root: Path) -> dict[int, list[tuple[Path, int | None]]]:
    """The work directories under `tmp_root` by job id, each with its attempt (None: unknown)."""
    found: dict[int, list[tuple[Path, int | None]]] = {}
    try:
        entries = list(tmp_root.iterdir())
    except FileNotFoundError:
        return found
    for entry in entries:
        match = _WORKDIR_NAME.match(entry.name)
        if match and entry.is_dir() and not entry.is_symlink():
            attempt = int(match["attempt"]) if match["attempt"] else None
            found.setdefault(int(match["job"]), []).append((entry, attempt))
    return found


def dead_workdirs(listed: dict[int, list[tuple[Path, int | None]]], jobs: dict[int, tuple[str, int]]) -> list[Path]:
    """The work directories of attempts that are over: `listed` as `workdirs_by_job` found them,
    `jobs`: id → (status, attempts) read from the database *after* that listing.

    A directory whose job is not running belongs to an attempt that ended (a workdir is made
    only after its claim, so none listed before the read can be a newer attempt's); one whose
    job has started again since (more attempts) is dead too. Directories of running attempts
    (perhaps another worker's, on a shared filesystem) and of jobs unknown to this database are kept.
    """
    dead = []
    for job_id, dirs in listed.items():
        if job_id not in jobs:
            continue
        status, attempts = jobs[job_id]
        for path, attempt in dirs:
            if status != "running" or (attempt is not None and attempt < attempts):
                dead.append(path)
    return dead


def lower_priority(nice: int, pid: int = 0) -> None:
    """Set process `pid`'s niceness (0: this process) to `nice`, if that lowers its priority.

    Raising a priority back needs privileges, and a worker started under `nice 15` keeps its
    jobs at 15 at least. Best effort: a process that is already gone is left alone.
    """
    try:
        current = os.getpriority(os.PRIO_PROCESS, pid)
        if nice > current:
            os.setpriority(os.PRIO_PROCESS, pid, min(nice, 19))
    except (ProcessLookupError, PermissionError):
        pass


def _main_rank() -> bool:
    # Under `accelerate launch` / torchrun every rank runs the job; rank 0 alone writes to the DB.
    return os.environ.get("RANK", "0") == "0"


def execute_job(
    engine: Engine,
    job_id: int,
    worker_id: str,
    workdir: Path,
    artifacts_dir: Path,
    registry: dict[str, JobKind],
    *,
    report_interval_s: float = 0.5,
) -> int:
    """Run job `job_id` here (the child process) and record its outcome; returns the exit code.

    0: done or cancelled (recorded); 1: failed (error and traceback recorded);
    EXIT_LOST: the job was no longer ours, nothing recorded.
    """
    from rlhf.progress import Cancelled

    job = get_job(engine, job_id)
    if job.status != "running" or job.worker_id != worker_id:
        return EXIT_LOST
    main_rank = _main_rank()
    if not main_rank:
        return _execute_on_secondary_rank(engine, job, worker_id, workdir, registry, report_interval_s)

    header = f"--- attempt {job.attempts} on worker {worker_id} ---"
    reporter = DatabaseReporter(
        engine, job_id, worker_id, interval_s=report_interval_s, initial_log=append_log_lines(job.log_tail, [header]), echo=sys.stdout
    )
    reporter.start()
    try:
        kind = registry.get(job.kind)
        if kind is None:
            raise LookupError(f"this worker does not know job kind {job.kind!r}")
        params = kind.validate(dict(job.params))
        result = kind.run(engine, job, params, reporter, workdir)
    except Cancelled:
        reporter.log("cancelled")
        reporter.close()
        return 0 if finish_cancelled(engine, job_id, worker_id, log_tail=reporter.log_tail()) else EXIT_LOST
    except BaseException as exc:  # noqa: BLE001 - SystemExit and KeyboardInterrupt in a job are failures too
        trace = traceback_module.format_exc()
        reporter.log(f"failed: {exc.__class__.__name__}: {exc}")
        reporter.close()
        if reporter.lost:
            return EXIT_LOST
        fail_job(engine, job_id, worker_id, error=_describe_exception(exc), traceback=trace, log_tail=reporter.log_tail())
        return 1
    reporter.close()
    if reporter.lost:
        return EXIT_LOST
    return _finalise(engine, job, worker_id, workdir, artifacts_dir, result, reporter)


def _describe_exception(exc: BaseException) -> str:
    text = str(exc)
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def _finalise(engine: Engine, job: Job, worker_id: str, workdir: Path, artifacts_dir: Path, result: JobResult, reporter: DatabaseReporter) -> int:
    placement = Placement()
    try:
        records, placement = place_artifacts(list(result.artifacts), workdir, artifacts_dir, job.id)
        _fault_point("kill-worker-after-placement")
        rows = finish_job(
            engine, job.id, worker_id, artifacts=records, message=result.message, log_tail=reporter.log_tail(), final_metrics=result.metrics
        )
    except BaseException as exc:  # noqa: BLE001
        placement.undo()
        fail_job(engine, job.id, worker_id, error=_describe_exception(exc), traceback=traceback_module.format_exc(), log_tail=reporter.log_tail())
        return 1
    if rows is None:  # re-queued or cancelled while we finished: the next attempt owns the job
        placement.undo()
        return EXIT_LOST
    return 0


def _fault_point(name: str) -> None:
    """Test-only crash injection: with `$RLHF_WORKER_FAULT` = `name`, die here as a machine
    crash would (SIGKILL to the worker, then to this job process), so the tests can check what a
    re-run finds. Unset in normal use, and then nothing happens."""
    if os.environ.get(FAULT_ENV) != name:
        return
    worker_pid = os.environ.get(WORKER_PID_ENV)
    if worker_pid:
        os.kill(int(worker_pid), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _execute_on_secondary_rank(engine, job, worker_id, workdir, registry, report_interval_s) -> int:
    from rlhf.progress import Cancelled

    # Rank 0 records the outcome; an error here ends this process non-zero, the launcher then
    # stops every rank and the worker records the failure with the output's tail.
    reporter = ControlOnlyReporter(engine, job.id, worker_id, interval_s=report_interval_s)
    kind = registry[job.kind]
    try:
        kind.run(engine, job, kind.validate(dict(job.params)), reporter, workdir)
    except Cancelled:
        pass
    return 0


# --------------------------------------------------------------------------- parent side


def describe_exit(returncode: int) -> str:
    """Why a child stopped, in words: `exited with code 1`, `killed by SIGSEGV (segmentation fault)`."""
    if returncode >= 0:
        if returncode > 128 and returncode - 128 < signal.NSIG:  # a shell or launcher reporting a signal
            return f"exited with code {returncode} ({_signal_words(returncode - 128)})"
        return f"exited with code {returncode}"
    return f"killed by {_signal_words(-returncode)}"


def _signal_words(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    notes = {
        "SIGSEGV": "segmentation fault",
        "SIGKILL": "out of memory? the kernel's OOM killer sends SIGKILL",
        "SIGABRT": "aborted",
        "SIGBUS": "bus error",
        "SIGFPE": "arithmetic error",
    }
    return f"{name} ({notes[name]})" if name in notes else name


class _HeartbeatThread(threading.Thread):
    """Heartbeats one job every `interval_s` and remembers what it learnt."""

    def __init__(self, engine: Engine, job_id: int, worker_id: str, interval_s: float) -> None:
        super().__init__(name=f"job-{job_id}-heartbeat", daemon=True)
        self._engine, self._job_id, self._worker_id, self._interval_s = engine, job_id, worker_id, interval_s
        self.done = threading.Event()
        self.lost = False
        self.cancel_requested_at: float | None = None

    def run(self) -> None:
        while not self.done.wait(self._interval_s):
            try:
                state = heartbeat(self._engine, self._job_id, self._worker_id)
            except Exception as exc:  # noqa: BLE001 - retry next beat; too long and the job is re-queued
                print(f"worker: heartbeat of job {self._job_id} failed: {exc}", file=sys.stderr)
                continue
            if not state.owned:
                self.lost = True
                return
            if state.cancel_requested and self.cancel_requested_at is None:
                self.cancel_requested_at = time.monotonic()


@dataclass
class JobOutcome:
    """How one claimed job ended, as this worker saw it."""

    job_id: int
    status: str
    """done, failed, cancelled, requeued (released on shutdown) or lost (re-queued by another)."""
    returncode: int | None = None


class Worker:
    """Claims and runs jobs from the database of `engine`, one at a time, each in a child process."""

    def __init__(self, engine: Engine, config: WorkerConfig | None = None, *, registry: dict[str, JobKind] | None = None) -> None:
        from rlhf.db import data_dir
        from rlhf.job_kinds import load_registry

        self.engine = engine
        self.config = config or WorkerConfig()
        self.registry = registry if registry is not None else load_registry(list(self.config.kind_modules) or None)
        self.artifacts_dir = Path(self.config.artifacts_dir or data_dir() / "artifacts").resolve()
        self.log_dir = Path(self.config.log_dir or data_dir() / "logs" / "jobs").resolve()
        self.stop_event = threading.Event()
        self.outcomes: list[JobOutcome] = []
        self._last_requeue = 0.0
        self._listener = None

    @property
    def worker_id(self) -> str:
        return self.config.worker_id

    def claimable_kinds(self) -> list[str]:
        kinds = self.config.kinds if self.config.kinds is not None else tuple(self.registry)
        return [k for k in kinds if k in self.registry]

    def stop(self) -> None:
        """Ask the loop to end: a running job is killed and handed back to the queue."""
        self.stop_event.set()

    # main loop ---------------------------------------------------------------------------
    def run(self, *, once: bool = False, burst: bool = False, max_jobs: int | None = None) -> list[JobOutcome]:
        """Claim and run jobs until stopped.

        `once`: run at most one job (none queued: return at once). `burst`: run jobs until the
        queue is empty. `max_jobs`: stop after that many. Returns the outcomes of this call.
        """
        start = len(self.outcomes)
        self._listen()
        backoff = self.config.poll_interval_s
        try:
            while not self.stop_event.is_set():
                self._maybe_requeue()
                try:
                    job = claim_next_job(self.engine, self.worker_id, kinds=self.claimable_kinds())
                except Exception as exc:  # noqa: BLE001 - the database restarts, the network drops: wait and retry
                    print(f"worker {self.worker_id}: cannot claim ({exc.__class__.__name__}: {exc}); retrying in {backoff:.1f} s", file=sys.stderr)
                    self.stop_event.wait(backoff)
                    backoff = min(2 * backoff, MAX_BACKOFF_S)
                    continue
                backoff = self.config.poll_interval_s
                if job is None:
                    if once or burst:
                        break
                    self._wait_for_work()
                    continue
                self.outcomes.append(self._run_guarded(job))
                ran = len(self.outcomes) - start
                if once or (max_jobs is not None and ran >= max_jobs):
                    break
        finally:
            self._unlisten()
        return self.outcomes[start:]

    def _run_guarded(self, job: Job) -> JobOutcome:
        # An error of ours (not the job's) while supervising, e.g. the database gone while we
        # record the outcome: the job stays `running` without heartbeats and is re-queued as stale.
        try:
            return self.run_claimed(job)
        except Exception as exc:  # noqa: BLE001
            print(f"worker {self.worker_id}: supervising job {job.id} failed: {traceback_module.format_exc()}", file=sys.stderr)
            return JobOutcome(job.id, f"unknown ({exc.__class__.__name__})")

    def _maybe_requeue(self) -> None:
        now = time.monotonic()
        if now - self._last_requeue < self.config.requeue_every_s:
            return
        self._last_requeue = now
        try:
            summary = requeue_stale_jobs(self.engine, stale_after_s=self.config.stale_after_s, max_attempts=self.config.max_attempts)
        except Exception as exc:  # noqa: BLE001 - try again at the next round
            print(f"worker: re-queue of stale jobs failed: {exc}", file=sys.stderr)
            return
        for label, ids in (("re-queued", summary.requeued), ("failed", summary.failed), ("cancelled", summary.cancelled)):
            if ids:
                print(f"worker {self.worker_id}: {label} stale job(s) {ids}", file=sys.stderr)
        try:
            self.sweep_dead_workdirs()
        except Exception as exc:  # noqa: BLE001 - leftovers wait for the next round
            print(f"worker: sweeping dead work directories failed: {exc}", file=sys.stderr)
        if "select-scores" in self.claimable_kinds():
            try:  # active selection: re-score projects whose labels or reward model moved on (rlhf.selection)
                from rlhf.selection.scores import queue_stale_scoring

                queue_stale_scoring(self.engine)
            except Exception as exc:  # noqa: BLE001 - scores stay as they are until the next round
                print(f"worker: queueing stale selection scores failed: {exc}", file=sys.stderr)

    def sweep_dead_workdirs(self) -> list[Path]:
        """Remove the work directories of attempts that are over (workers killed mid-job); returns them."""
        from sqlmodel import select

        from rlhf.db import session_scope
        from rlhf.schema import Job

        listed = workdirs_by_job(self.artifacts_dir / ".tmp")  # before the read: see dead_workdirs
        if not listed:
            return []
        with session_scope(self.engine) as session:
            rows = session.exec(select(Job.id, Job.status, Job.attempts).where(Job.id.in_(list(listed)))).all()
        dead = dead_workdirs(listed, {job_id: (status, attempts) for job_id, status, attempts in rows})
        remove_paths(dead)
        return dead

    # idle waiting: LISTEN on PostgreSQL, a plain sleep on SQLite ------------------------------
    def _listen(self) -> None:
        from rlhf.db import is_sqlite
        from rlhf.jobs import NOTIFY_CHANNEL

        if is_sqlite(self.engine) or self._listener is not None:
            return
        try:
            import psycopg

            url = self.engine.url
            params = {"host": url.host, "port": url.port, "user": url.username, "password": url.password, "dbname": url.database}
            self._listener = psycopg.connect(autocommit=True, **{k: v for k, v in params.items() if v is not None})
            self._listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except Exception as exc:  # noqa: BLE001 - polling alone still works
            print(f"worker: LISTEN unavailable, polling only ({exc.__class__.__name__})", file=sys.stderr)
            self._listener = None

    def _unlisten(self) -> None:
        if self._listener is not None:
            try:
                self._listener.close()
            finally:
                self._listener = None

    def _wait_for_work(self) -> None:
        interval = self.config.poll_interval_s
        if self._listener is None:
            self.stop_event.wait(interval)
            return
        try:
            for _ in self._listener.notifies(timeout=interval, stop_after=1):
                pass
        except Exception:  # noqa: BLE001 - the connection broke: fall back to polling
            self._unlisten()
            self.stop_event.wait(interval)

    # one job -------------------------------------------------------------------------------
    def child_command(self, job: Job, workdir: Path) -> list[str]:
        """The command line that runs `job` in a child (through the launcher for launchable kinds)."""
        args = ["-m", "rlhf.worker", "run-job", str(job.id), "--worker-id", self.worker_id, "--workdir", str(workdir)]
        args += ["--artifacts-dir", str(self.artifacts_dir), "--report-interval", str(self.config.report_interval_s)]
        for module in self.config.kind_modules:
            args += ["--kind-module", module]
        if self.config.launcher and job.kind in self._launch_kinds():
            # `accelerate launch ... -m rlhf.worker run-job ...`: every rank runs the job, rank 0 reports.
            return shlex.split(self.config.launcher) + args
        return [self.config.python, "-X", "faulthandler"] + args

    def _launch_kinds(self) -> set[str]:
        if self.config.launch_kinds is not None:
            return set(self.config.launch_kinds)
        return {name for name, kind in self.registry.items() if kind.launchable}

    def child_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["RLHF_DATABASE_URL"] = self.engine.url.render_as_string(hide_password=False)
        env[WORKER_PID_ENV] = str(os.getpid())
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONFAULTHANDLER"] = "1"
        threads = str(self.job_threads)
        for name in THREAD_LIMIT_VARS:
            env[name] = threads
        env[JOB_NICE_ENV] = str(self.config.job_nice)  # each process of the job (every rank) applies it at start
        return env

    @property
    def job_threads(self) -> int:
        return self.config.job_threads if self.config.job_threads is not None else default_job_threads()

    def run_claimed(self, job: Job) -> JobOutcome:
        """Run a job this worker has claimed, to its end; the workdir is always removed."""
        tmp_root = self.artifacts_dir / ".tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        # We own the job now: any other workdir of it is a dead attempt's (a crashed worker's).
        remove_paths([path for path, _ in workdirs_by_job(tmp_root).get(job.id, [])])
        workdir = tmp_root / workdir_name(job)
        workdir.mkdir()
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{job.id}.log"
        try:
            return self._supervise(job, workdir, log_path)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _supervise(self, job: Job, workdir: Path, log_path: Path) -> JobOutcome:
        with open(log_path, "ab") as log_file:
            start_offset = log_file.tell()
            log_file.write(f"=== job {job.id} attempt {job.attempts} on {self.worker_id} ===\n".encode())
            log_file.flush()
            try:
                process = subprocess.Popen(
                    self.child_command(job, workdir),
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=self.child_env(),
                    start_new_session=True,  # its own process group: we kill launcher and ranks together
                )
            except OSError as exc:
                fail_job(self.engine, job.id, self.worker_id, error=f"could not start the job process: {exc}")
                return JobOutcome(job.id, "failed")
        # At once, not only when the child gets to it: its imports already compete for a core.
        lower_priority(self.config.job_nice, process.pid)
        beat = _HeartbeatThread(self.engine, job.id, self.worker_id, self.config.heartbeat_interval_s)
        beat.start()
        killed_for = None
        try:
            while process.poll() is None:
                if self.stop_event.is_set():
                    killed_for = "shutdown"
                elif beat.lost and not self._recorded_by_child(job.id):
                    killed_for = "lost"
                elif beat.cancel_requested_at is not None and time.monotonic() - beat.cancel_requested_at > self.config.cancel_grace_s:
                    killed_for = "cancel"
                if killed_for:
                    self._kill(process)
                    break
                try:
                    process.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
                self._maybe_requeue()
        finally:
            beat.done.set()
            beat.join()
        if process.poll() is None:  # the child recorded its outcome and is exiting
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._kill(process)
        returncode = process.wait()
        return self._settle(job, returncode, killed_for, log_path, start_offset)

    def _recorded_by_child(self, job_id: int) -> bool:
        """True when the job finished under this worker (the child wrote its outcome)."""
        job = get_job(self.engine, job_id)
        return job.worker_id == self.worker_id and job.status in FINISHED_STATUSES

    def _kill(self, process: subprocess.Popen) -> None:
        """SIGTERM the child's process group, SIGKILL it if still there after 5 s."""
        for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 30.0)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(timeout=wait_s)
                return
            except subprocess.TimeoutExpired:
                continue

    def _settle(self, job: Job, returncode: int, killed_for: str | None, log_path: Path, start_offset: int) -> JobOutcome:
        """Record what the child could not: its crash, a kill for cancel, a release on shutdown."""
        state = job_control(self.engine, job.id, self.worker_id)
        if not state.owned:  # the child recorded its outcome, or another worker owns the job now
            row = get_job(self.engine, job.id)
            status = row.status if row.worker_id == self.worker_id and row.status in FINISHED_STATUSES else "lost"
            return JobOutcome(job.id, status, returncode)
        output = _read_from(log_path, start_offset)
        if killed_for == "shutdown":
            release_job(self.engine, job.id, self.worker_id, reason=f"worker {self.worker_id} stopped")
            return JobOutcome(job.id, "requeued", returncode)
        if killed_for == "cancel":
            finish_cancelled(self.engine, job.id, self.worker_id, message=f"cancelled: killed after not stopping within {self.config.cancel_grace_s:g} s")
            return JobOutcome(job.id, "cancelled", returncode)
        if returncode == 0:
            error = "the job process exited without recording a result"
        else:
            error = f"the job process {describe_exit(returncode)}"
        trace = output.strip() or "(the job process printed nothing)"
        fail_job(self.engine, job.id, self.worker_id, error=error, traceback=trace, log_tail=append_log_lines(get_job(self.engine, job.id).log_tail, [f"failed: {error}"]))
        return JobOutcome(job.id, "failed", returncode)


def _read_from(path: Path, offset: int) -> str:
    """The output written to `path` since `offset`, at most its last OUTPUT_TAIL_CHARS."""
    try:
        size = path.stat().st_size
    except OSError:
        return ""
    with open(path, "rb") as handle:
        handle.seek(max(offset, size - OUTPUT_TAIL_CHARS))
        return handle.read().decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- entry points


def _watch_parent(pid: int, interval_s: float = 0.5) -> None:
    """Exit hard when the worker `pid` is gone: an orphaned job would hold memory and a GPU."""

    def watch() -> None:
        while True:
            time.sleep(interval_s)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                _REAL_EXIT(EXIT_ORPHANED)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="watch-worker", daemon=True).start()


_REAL_EXIT = os._exit


def _exit_printing_stack(job_pid: int):
    """An os._exit that first prints where it was called from (nonzero code, job process only).

    A library calling os._exit skips every handler; the stack makes the job's traceback show
    where it happened. Forked helpers (data loader workers) ending with os._exit(0) print nothing.
    """

    def exit_(code: int) -> None:
        if code != 0 and os.getpid() == job_pid:
            print(f"os._exit({code}) called from:", file=sys.stderr)
            traceback_module.print_stack(file=sys.stderr)
            sys.stderr.flush()
        _REAL_EXIT(code)

    return exit_


def run_job_main(args: argparse.Namespace) -> int:
    """`python -m rlhf.worker run-job ID ...`: the child process of one job."""
    from rlhf.db import make_engine
    from rlhf.job_kinds import load_registry

    faulthandler.enable()  # a segfault prints the Python stack of every thread to our output
    os._exit = _exit_printing_stack(os.getpid())
    if os.environ.get(JOB_NICE_ENV):
        lower_priority(int(os.environ[JOB_NICE_ENV]))  # also the ranks a launcher started
    parent = os.environ.get(WORKER_PID_ENV)
    if parent:
        _watch_parent(int(parent))
    engine = make_engine(os.environ.get("RLHF_DATABASE_URL"), pool_size=2)
    registry = load_registry(args.kind_module or None)
    try:
        code = execute_job(
            engine, args.job_id, args.worker_id, Path(args.workdir), Path(args.artifacts_dir), registry, report_interval_s=args.report_interval
        )
    finally:
        engine.dispose()
    # The outcome is recorded: skip the interpreter's teardown (seconds with torch loaded), so
    # the worker is free for the next job sooner.
    sys.stdout.flush()
    sys.stderr.flush()
    _REAL_EXIT(code)


def serve_main(args: argparse.Namespace) -> int:
    """`python -m rlhf.worker serve`: a worker until SIGINT / SIGTERM (what `rlhf app` starts)."""
    from rlhf.db import make_engine

    config = WorkerConfig(
        **({"worker_id": args.worker_id} if args.worker_id else {}),
        poll_interval_s=args.poll_interval,
        kind_modules=tuple(args.kind_module or ()),
        job_nice=args.job_nice,
        job_threads=args.job_threads,
    )
    engine = make_engine(args.database_url)
    worker = Worker(engine, config)
    install_stop_signals(worker)
    print(f"worker {worker.worker_id} polling {engine.url.render_as_string(hide_password=True)}", file=sys.stderr, flush=True)
    try:
        worker.run(once=args.once)
    finally:
        engine.dispose()
    return 0


def install_stop_signals(worker: Worker) -> None:
    """SIGINT / SIGTERM stop the worker cleanly (its running job is killed and re-queued)."""

    def stop(name: str) -> None:
        print(f"worker {worker.worker_id}: {name}, stopping", file=sys.stderr, flush=True)
        worker.stop()

    def handler(signum, _frame) -> None:
        # Everything happens in another thread: the handler runs in the main thread between two of its
        # steps, possibly while that thread holds the event's lock (entering or leaving
        # `stop_event.wait`) or is inside a write to stderr; setting the event here would then wait for
        # that lock forever, and printing here would raise "reentrant call" in the middle of that write.
        threading.Thread(target=stop, args=(signal.Signals(signum).name,), name="stop-on-signal", daemon=True).start()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlhf.worker", description="RLHF Studio job worker (internal entry points).")
    sub = parser.add_subparsers(dest="command", required=True)
    run_job = sub.add_parser("run-job", help="run one claimed job (started by the worker)")
    run_job.add_argument("job_id", type=int)
    run_job.add_argument("--worker-id", required=True)
    run_job.add_argument("--workdir", required=True)
    run_job.add_argument("--artifacts-dir", required=True)
    run_job.add_argument("--report-interval", type=float, default=0.5)
    run_job.add_argument("--kind-module", action="append")
    serve = sub.add_parser("serve", help="claim and run jobs until stopped")
    serve.add_argument("--database-url", default=None)
    serve.add_argument("--worker-id", default=None)
    serve.add_argument("--poll-interval", type=float, default=0.25)
    serve.add_argument("--kind-module", action="append")
    serve.add_argument("--once", action="store_true")
    serve.add_argument("--job-nice", type=int, default=int(os.environ.get(JOB_NICE_ENV) or DEFAULT_JOB_NICE))
    serve.add_argument("--job-threads", type=int, default=int(os.environ[JOB_THREADS_ENV]) if os.environ.get(JOB_THREADS_ENV) else None)
    args = parser.parse_args(argv)
    if args.command == "run-job":
        return run_job_main(args)
    return serve_main(args)


if __name__ == "__main__":
    sys.exit(main())
