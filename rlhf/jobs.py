"""Jobs in the database: submit, list, cancel, claim atomically, heartbeat, re-queue, finish.

A job is one row of `rlhf.schema.Job` (kind, params, status, progress, log tail, error and
traceback, the worker holding it) with a metrics time series (`JobMetric`) and the artifacts it
produced (`Artifact`, each naming the artifacts it was built from).

Life of a job::

    submit_job ──> queued ──claim_next_job──> running ──finish_job──> done
                     │  ▲                       │  ├──fail_job──────> failed
                     │  └──requeue_stale_jobs───┤  └──finish_cancelled> cancelled
                     └──cancel_job──> cancelled  (worker lost: back to queued, or failed
                                                   after `max_attempts` starts)

Every write that a worker makes while it runs a job is guarded by `worker_id = ? AND status =
'running'`: a worker whose job was re-queued (it stopped heartbeating) cannot overwrite the new
attempt, and a job finishes at most once.

`attempts` counts the times a worker started the job (incremented on claim). An interrupted
start that the worker hands back itself (`release_job`, e.g. on Ctrl-C) does not count.

The queue knows no kind's code (it imports nothing of `rlhf.job_kinds`): `submit_job` is handed
the registry of kinds (`KindContract`s) that validates the params.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from rlhf.db import is_sqlite, run_transaction, session_scope
from rlhf.jsonsafe import json_safe
from rlhf.redact import redact, redact_text
from rlhf.roles import Actor, check_admin
from rlhf.schema import JOB_STATUSES, Artifact, Job, JobMetric, Project, utcnow

ACTIVE_STATUSES = ("queued", "running")
FINISHED_STATUSES = ("done", "failed", "cancelled")
LOG_TAIL_LINES = 200
"""The job row keeps this many of the newest log lines (the full log is the worker's log file)."""
LOG_LINE_MAX_CHARS = 1000
MESSAGE_MAX_CHARS = 2000
"""`Job.message` is a VARCHAR(2000)."""
DEFAULT_MAX_ATTEMPTS = 3


class JobError(Exception):
    """Base class of the errors this module raises on purpose."""


class JobNotFound(JobError, LookupError):
    """No job (or artifact) with that id."""


class InvalidJobParams(JobError, ValueError):
    """The params of a submitted job are wrong; the message names the kind and the field."""


@dataclass(frozen=True)
class Heartbeat:
    """What a worker learns when it heartbeats a job it runs."""

    owned: bool
    """False when the job is no longer running under this worker (re-queued or finished): stop it."""
    cancel_requested: bool
    """An admin asked to cancel: tell the job to stop, kill it after the grace period."""


@dataclass
class RequeueSummary:
    """Job ids that `requeue_stale_jobs` put back in the queue, failed, or cancelled."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)


@dataclass
class ArtifactRecord:
    """An artifact a finished job produced, to be written with `finish_job`.

    A job's `run` names paths inside its workdir; the worker renames them into place and
    records the final paths. `path` is "" for an artifact that lives in the database only
    (a generated round).
    """

    kind: str
    """export, reward_model, policy, generation."""
    name: str
    path: str = ""
    """The artifact: a directory or a file."""
    root: str = ""
    """The directory moved into place when it is not `path` itself (a file plus its manifest)."""
    content_hash: str | None = None
    parent_ids: list[int] = field(default_factory=list)
    """Ids of the (already recorded) artifacts this one was built from."""
    parent_refs: list[int] = field(default_factory=list)
    """Positions of earlier artifacts of the same job it was built from (an export made by the
    job that then trains on it); resolved to ids when the job's artifacts are recorded."""
    lineage: dict[str, Any] = field(default_factory=dict)
    """Provenance: export hash, base model, config."""
    metrics: dict[str, Any] = field(default_factory=dict)


class KindContract(Protocol):
    """What the queue asks of a job kind at submit time; the registry that holds them
    (`rlhf.job_kinds.load_registry()`, the worker's) is passed in, so the queue knows no kind's code."""

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """params → normalised params; raises InvalidJobParams / ValueError naming the field."""
        ...

    def project_required(self, params: dict[str, Any]) -> bool:
        """True when a job with these params works on a project."""
        ...


# --------------------------------------------------------------------------- pure helpers


def truncate(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, marking the cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + "…"


def append_log_lines(tail: str, lines: Iterable[str], *, keep: int = LOG_TAIL_LINES) -> str:
    """The log tail `tail` with `lines` appended, keeping the newest `keep` lines.

    Each line is cut to LOG_LINE_MAX_CHARS; embedded newlines split a line in several.
    """
    kept = tail.splitlines() if tail else []
    for line in lines:
        for part in str(line).splitlines() or [""]:
            kept.append(truncate(redact_text(part), LOG_LINE_MAX_CHARS))  # the row and the worker's log file
    return "\n".join(kept[-keep:])


def progress_fraction(done: float, total: float | None) -> float | None:
    """`done / total` clipped to [0, 1]; None when the total is unknown."""
    if total is None or not total or not math.isfinite(float(total)):
        return None
    value = float(done) / float(total)
    if not math.isfinite(value):
        return None
    return min(1.0, max(0.0, value))


def metrics_long(points: Sequence[JobMetric]) -> list[dict[str, Any]]:
    """Metric points as long-format rows `{step, metric, value, created_at}` (one per value).

    Suited to plotting a series per metric; non-numeric values (None for NaN) are kept so a
    gap shows where the value was not finite.
    """
    rows = []
    for point in points:
        for name, value in point.values.items():
            rows.append({"step": point.step, "metric": name, "value": value, "created_at": point.created_at})
    return rows


# --------------------------------------------------------------------------- admin-facing API


def _resolve_project_id(session: Session, project: Project | int | str | None) -> int | None:
    if project is None:
        return None
    if isinstance(project, Project):
        return project.id
    if isinstance(project, int):
        row = session.get(Project, project)
    else:
        row = session.exec(select(Project).where(Project.name == project)).first()
    if row is None:
        raise InvalidJobParams(f"unknown project {project!r}")
    return row.id


def validate_job_params(kind: str, params: dict[str, Any] | None, registry: Mapping[str, KindContract]) -> dict[str, Any]:
    """The params of a `kind` job, checked and normalised by its validator in `registry`.

    Raises InvalidJobParams naming the kind and the field (unknown kind, unknown or missing
    field, wrong type, a kind whose backend is not installed yet).
    """
    if kind not in registry:
        raise InvalidJobParams(f"unknown job kind {kind!r}; known kinds: {', '.join(sorted(registry))}")
    if params is not None and not isinstance(params, dict):
        raise InvalidJobParams(f"{kind}: params must be a mapping of field to value, not {type(params).__name__}")
    try:
        checked = registry[kind].validate(dict(params or {}))
    except InvalidJobParams:
        raise
    except (TypeError, ValueError, KeyError) as exc:
        raise InvalidJobParams(f"{kind}: {exc}") from exc
    try:
        json.dumps(checked, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidJobParams(f"{kind}: params must be JSON values (numbers, strings, lists, mappings): {exc}") from exc
    if redact(checked) != checked:
        # Params are stored and shown to every admin: a credential would leak there (issue 16, item 4).
        raise InvalidJobParams(
            f"{kind}: params must not carry credentials (a password, token or key); "
            "the worker reads the database from its own RLHF_DATABASE_URL and secrets from its environment"
        )
    return checked


def submit_job(
    engine: Engine,
    actor: Actor,
    kind: str,
    params: dict[str, Any] | None = None,
    *,
    registry: Mapping[str, KindContract],
    project: Project | int | str | None = None,
) -> Job:
    """Queue a job of `kind` with `params` (admin only); returns the queued row.

    `params` are validated and normalised by the kind's validator first (InvalidJobParams
    names the field); `project` (row, id or name) is recorded on the job and is required by
    kinds that work on a project. `registry`: the kinds a worker runs, e.g.
    `rlhf.job_kinds.load_registry()` (the product kinds plus `$RLHF_JOB_KIND_MODULES`).
    """
    checked = validate_job_params(kind, params, registry)

    def work(session: Session) -> Job:
        check_admin(session, actor, "submit jobs")
        project_id = _resolve_project_id(session, project)
        if registry[kind].project_required(checked) and project_id is None:
            raise InvalidJobParams(f"{kind}: a project is required (--project)")
        job = Job(kind=kind, params=checked, project_id=project_id, created_by=getattr(actor, "id", None))
        session.add(job)
        session.flush()
        return job

    job = run_transaction(engine, work)
    _notify_new_job(engine)
    return job


NOTIFY_CHANNEL = "rlhf_jobs"
"""PostgreSQL LISTEN/NOTIFY channel on which `submit_job` wakes idle workers."""


def _notify_new_job(engine: Engine) -> None:
    # Idle workers on PostgreSQL LISTEN on this channel, so they claim at once instead of at
    # their next poll; the poll stays as the fallback (and is all SQLite has).
    if is_sqlite(engine):
        return
    from sqlalchemy import text

    try:
        with engine.begin() as connection:
            connection.execute(text(f"NOTIFY {NOTIFY_CHANNEL}"))
    except Exception:  # noqa: BLE001 - a lost wake-up only delays the claim to the next poll
        pass


def _row_or_raise(engine: Engine, table: type, row_id: int, what: str):
    with session_scope(engine) as session:
        row = session.get(table, row_id)
    if row is None:
        raise JobNotFound(f"no {what} with id {row_id}")
    return row


def get_job(engine: Engine, job_id: int) -> Job:
    """The job row; raises JobNotFound."""
    return _row_or_raise(engine, Job, job_id, "job")


def list_jobs(
    engine: Engine,
    actor: Actor,
    *,
    status: str | Sequence[str] | None = None,
    kind: str | Sequence[str] | None = None,
    project: Project | int | str | None = None,
    limit: int = 50,
) -> list[Job]:
    """Jobs newest first (admin only), filtered by status(es), kind(s) and project."""
    check_admin(engine, actor, "list jobs")
    statuses = [status] if isinstance(status, str) else list(status or [])
    for value in statuses:
        if value not in JOB_STATUSES:
            raise InvalidJobParams(f"unknown job status {value!r}; one of {', '.join(JOB_STATUSES)}")
    kinds = [kind] if isinstance(kind, str) else list(kind or [])
    with session_scope(engine) as session:
        stmt = select(Job)
        if statuses:
            stmt = stmt.where(Job.status.in_(statuses))
        if kinds:
            stmt = stmt.where(Job.kind.in_(kinds))
        if project is not None:
            stmt = stmt.where(Job.project_id == _resolve_project_id(session, project))
        stmt = stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        return list(session.exec(stmt).all())


def cancel_job(engine: Engine, actor: Actor, job_id: int) -> Job:
    """Cancel a job (admin only) and return its row as it is now.

    queued → cancelled at once; running → `cancel_requested` set, its worker stops it (the job
    stops at its next safe point, or is killed after the worker's grace period); a finished
    job is returned unchanged.
    """

    def work(session: Session) -> Job:
        check_admin(session, actor, "cancel jobs")
        now = utcnow()
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(status="cancelled", cancel_requested=True, finished_at=now, message="cancelled before it started")
        )
        session.execute(update(Job).where(Job.id == job_id, Job.status == "running").values(cancel_requested=True))
        job = session.get(Job, job_id, populate_existing=True)
        if job is None:
            raise JobNotFound(f"no job with id {job_id}")
        return job

    return run_transaction(engine, work)


def job_metrics(engine: Engine, job_id: int, *, since_step: int | None = None) -> list[JobMetric]:
    """The job's metrics time series, oldest first (`since_step`: only points after it)."""
    with session_scope(engine) as session:
        stmt = select(JobMetric).where(JobMetric.job_id == job_id)
        if since_step is not None:
            stmt = stmt.where(JobMetric.step > since_step)
        return list(session.exec(stmt.order_by(JobMetric.step, JobMetric.id)).all())


def job_log(engine: Engine, job_id: int, *, lines: int | None = None) -> list[str]:
    """The newest log lines of the job (at most LOG_TAIL_LINES are kept; `lines`: fewer)."""
    tail = get_job(engine, job_id).log_tail
    kept = tail.splitlines() if tail else []
    return kept[-lines:] if lines else kept


def job_artifacts(engine: Engine, job_id: int) -> list[Artifact]:
    """The artifacts the job produced (only a job that finished `done` has any)."""
    with session_scope(engine) as session:
        return list(session.exec(select(Artifact).where(Artifact.job_id == job_id).order_by(Artifact.id)).all())


def get_artifact(engine: Engine, artifact_id: int) -> Artifact:
    """The artifact row; raises JobNotFound."""
    return _row_or_raise(engine, Artifact, artifact_id, "artifact")


def list_artifacts(
    engine: Engine, *, kind: str | None = None, project: Project | int | str | None = None, limit: int = 100
) -> list[Artifact]:
    """Artifacts newest first, e.g. the reward models a PPO job may use (`kind="reward_model"`)."""
    with session_scope(engine) as session:
        stmt = select(Artifact)
        if kind is not None:
            stmt = stmt.where(Artifact.kind == kind)
        if project is not None:
            stmt = stmt.where(Artifact.project_id == _resolve_project_id(session, project))
        return list(session.exec(stmt.order_by(Artifact.created_at.desc(), Artifact.id.desc()).limit(limit)).all())


def artifact_lineage(engine: Engine, artifact_id: int) -> list[Artifact]:
    """The artifact followed by everything it was built from, nearest first (breadth-first).

    Walks `Artifact.parent_ids`: a generated round → its policy → the reward model → the
    export it was trained on. Each ancestor appears once; ids of deleted parents are skipped.
    """
    with session_scope(engine) as session:
        start = session.get(Artifact, artifact_id)
        if start is None:
            raise JobNotFound(f"no artifact with id {artifact_id}")
        order = [start]
        seen = {start.id}
        frontier = list(start.parent_ids or [])
        while frontier:
            wanted = [i for i in dict.fromkeys(int(i) for i in frontier) if i not in seen]
            if not wanted:
                break
            rows = {a.id: a for a in session.exec(select(Artifact).where(Artifact.id.in_(wanted))).all()}
            frontier = []
            for parent_id in wanted:
                seen.add(parent_id)
                parent = rows.get(parent_id)
                if parent is not None:
                    order.append(parent)
                    frontier.extend(parent.parent_ids or [])
        return order


# --------------------------------------------------------------------------- worker-facing API


def _queued_filter(stmt, kinds: Sequence[str] | None):
    stmt = stmt.where(Job.status == "queued")
    if kinds is not None:
        stmt = stmt.where(Job.kind.in_(list(kinds)))
    return stmt


def has_queued_job(engine: Engine, kinds: Sequence[str] | None = None) -> bool:
    """True when a job (of one of `kinds`) waits: a read-only check idle workers poll."""
    with session_scope(engine) as session:
        return session.exec(_queued_filter(select(Job.id), kinds).limit(1)).first() is not None


def claim_next_job(engine: Engine, worker_id: str, *, kinds: Sequence[str] | None = None) -> Job | None:
    """Atomically take the oldest queued job (of one of `kinds`) for `worker_id`; None if none.

    PostgreSQL: `SELECT … FOR UPDATE SKIP LOCKED`, so concurrent workers each lock a different
    row. SQLite: the whole read-then-write runs under BEGIN IMMEDIATE (one writer at a time) and
    the UPDATE is guarded by `status = 'queued'`. Either way two workers never claim one job.
    The claimed row is `running`, heartbeated now, `attempts` + 1, with the previous attempt's
    metrics, error and progress cleared.
    """
    if kinds is not None and not kinds:
        return None
    # A read-only look first: idle polling must not take SQLite's write lock every time.
    if not has_queued_job(engine, kinds):
        return None

    def work(session: Session) -> Job | None:
        stmt = _queued_filter(select(Job.id), kinds).order_by(Job.created_at, Job.id).limit(1)
        if not is_sqlite(engine):
            stmt = stmt.with_for_update(skip_locked=True)
        job_id = session.exec(stmt).first()
        if job_id is None:
            return None
        now = utcnow()
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == "queued")
            .values(
                status="running",
                worker_id=worker_id,
                heartbeat_at=now,
                started_at=now,
                finished_at=None,
                attempts=Job.attempts + 1,
                progress=0.0,
                message="",
                error=None,
                traceback=None,
            )
        )
        if result.rowcount != 1:
            return None
        session.execute(delete(JobMetric).where(JobMetric.job_id == job_id))
        return session.get(Job, job_id, populate_existing=True)

    return run_transaction(engine, work)


def _owned(job_id: int, worker_id: str):
    return (Job.id == job_id, Job.worker_id == worker_id, Job.status == "running")


def heartbeat(engine: Engine, job_id: int, worker_id: str) -> Heartbeat:
    """Mark the job alive under `worker_id`; says whether it is still ours and whether to cancel."""

    def work(session: Session) -> Heartbeat:
        result = session.execute(update(Job).where(*_owned(job_id, worker_id)).values(heartbeat_at=utcnow()))
        if result.rowcount != 1:
            return Heartbeat(owned=False, cancel_requested=False)
        cancel = session.exec(select(Job.cancel_requested).where(Job.id == job_id)).one()
        return Heartbeat(owned=True, cancel_requested=bool(cancel))

    return run_transaction(engine, work)


def job_control(engine: Engine, job_id: int, worker_id: str) -> Heartbeat:
    """Read-only: whether the job still runs under `worker_id`, and whether cancel was asked."""
    with session_scope(engine) as session:
        row = session.exec(select(Job.worker_id, Job.status, Job.cancel_requested).where(Job.id == job_id)).first()
    if row is None:
        return Heartbeat(owned=False, cancel_requested=False)
    owner, status, cancel = row
    return Heartbeat(owned=(owner == worker_id and status == "running"), cancel_requested=bool(cancel))


def report_state(
    engine: Engine,
    job_id: int,
    worker_id: str,
    *,
    progress: float | None = None,
    message: str | None = None,
    log_tail: str | None = None,
    metric_points: Sequence[tuple[int, dict[str, Any]]] = (),
) -> Heartbeat:
    """Write a running job's progress, message, log tail and new metric points in one transaction.

    Nothing is written unless the job still runs under `worker_id`; returns what `heartbeat`
    returns, so the caller learns about a cancel or a lost job from the same round trip.
    """

    def work(session: Session) -> Heartbeat:
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if progress is not None:
            values["progress"] = progress
        if message is not None:
            values["message"] = truncate(redact_text(message), MESSAGE_MAX_CHARS)
        if log_tail is not None:
            values["log_tail"] = redact_text(log_tail)
        result = session.execute(update(Job).where(*_owned(job_id, worker_id)).values(**values))
        if result.rowcount != 1:
            return Heartbeat(owned=False, cancel_requested=False)
        for step, point in metric_points:
            session.add(JobMetric(job_id=job_id, step=int(step), values=redact(json_safe(point))))
        cancel = session.exec(select(Job.cancel_requested).where(Job.id == job_id)).one()
        return Heartbeat(owned=True, cancel_requested=bool(cancel))

    return run_transaction(engine, work)


def finish_job(
    engine: Engine,
    job_id: int,
    worker_id: str,
    *,
    artifacts: Sequence[ArtifactRecord] = (),
    message: str = "done",
    log_tail: str | None = None,
    final_metrics: dict[str, Any] | None = None,
) -> list[Artifact] | None:
    """Mark the job done and record its artifacts, all in one transaction.

    Returns the artifact rows, or None when the job no longer runs under `worker_id` (it was
    re-queued or cancelled meanwhile): then nothing is written and the caller must remove the
    files it put in place. `final_metrics` become one last point of the series, at the last step.
    """

    def work(session: Session) -> list[Artifact] | None:
        values: dict[str, Any] = {"status": "done", "progress": 1.0, "finished_at": utcnow(), "message": truncate(redact_text(message), MESSAGE_MAX_CHARS)}
        if log_tail is not None:
            values["log_tail"] = redact_text(log_tail)
        result = session.execute(update(Job).where(*_owned(job_id, worker_id)).values(**values))
        if result.rowcount != 1:
            return None
        job = session.get(Job, job_id, populate_existing=True)
        if final_metrics:
            last = session.exec(select(JobMetric.step).where(JobMetric.job_id == job_id).order_by(JobMetric.step.desc()).limit(1)).first()
            session.add(JobMetric(job_id=job_id, step=int(last or 0), values=redact(json_safe(final_metrics))))
        rows: list[Artifact] = []
        for position, record in enumerate(artifacts):
            bad_refs = [r for r in record.parent_refs if not 0 <= r < position]
            if bad_refs:
                raise ValueError(f"artifact {record.name!r}: parent_refs {bad_refs} must name earlier artifacts of the job")
            parents = [int(i) for i in record.parent_ids] + [rows[r].id for r in record.parent_refs]
            row = Artifact(
                kind=record.kind,
                name=record.name,
                path=record.path,
                content_hash=record.content_hash,
                project_id=job.project_id,
                job_id=job_id,
                parent_ids=list(dict.fromkeys(parents)),
                lineage=redact(json_safe(record.lineage)),
                metrics=redact(json_safe(record.metrics)),
                created_by=job.created_by,
            )
            session.add(row)
            session.flush()  # its id, for the artifacts after it that name it in parent_refs
            rows.append(row)
        return rows

    return run_transaction(engine, work)


def fail_job(
    engine: Engine,
    job_id: int,
    worker_id: str,
    *,
    error: str,
    traceback: str | None = None,
    log_tail: str | None = None,
) -> bool:
    """Mark the job failed with `error` and `traceback`; False if it no longer runs under `worker_id`."""
    error = redact_text(error)  # a connection error or a config echoed in a message may hold a password
    values: dict[str, Any] = {
        "status": "failed",
        "finished_at": utcnow(),
        "error": error,
        "traceback": None if traceback is None else redact_text(traceback),
        "message": truncate(f"failed: {error}", MESSAGE_MAX_CHARS),
    }
    if log_tail is not None:
        values["log_tail"] = redact_text(log_tail)
    return _guarded_update(engine, job_id, worker_id, values)


def finish_cancelled(engine: Engine, job_id: int, worker_id: str, *, message: str = "cancelled", log_tail: str | None = None) -> bool:
    """Mark a running job cancelled (it stopped on request); False if it is no longer ours."""
    values: dict[str, Any] = {"status": "cancelled", "finished_at": utcnow(), "message": truncate(redact_text(message), MESSAGE_MAX_CHARS)}
    if log_tail is not None:
        values["log_tail"] = redact_text(log_tail)
    return _guarded_update(engine, job_id, worker_id, values)


def release_job(engine: Engine, job_id: int, worker_id: str, *, reason: str = "worker stopped") -> bool:
    """Hand a running job back to the queue (worker shutting down); the start does not count."""
    values = {
        "status": "queued",
        "worker_id": None,
        "heartbeat_at": None,
        "started_at": None,
        "progress": 0.0,
        "attempts": Job.attempts - 1,
        "message": truncate(f"re-queued: {reason}", MESSAGE_MAX_CHARS),
    }
    return _guarded_update(engine, job_id, worker_id, values)


def _guarded_update(engine: Engine, job_id: int, worker_id: str, values: dict[str, Any]) -> bool:
    def work(session: Session) -> bool:
        return session.execute(update(Job).where(*_owned(job_id, worker_id)).values(**values)).rowcount == 1

    return run_transaction(engine, work)


def requeue_stale_jobs(engine: Engine, *, stale_after_s: float, max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> RequeueSummary:
    """Put back in the queue every running job whose worker has not heartbeated for `stale_after_s`.

    A job already started `max_attempts` times is marked failed instead (its runs keep dying:
    out of memory, a machine that crashes); a job whose cancel was requested is marked
    cancelled. Safe to call from every worker at once: each row is changed by one of them.
    """
    cutoff = utcnow() - timedelta(seconds=stale_after_s)

    def work(session: Session) -> RequeueSummary:
        summary = RequeueSummary()
        stmt = select(Job).where(Job.status == "running", Job.heartbeat_at < cutoff)
        if not is_sqlite(engine):
            stmt = stmt.with_for_update(skip_locked=True)
        now = utcnow()
        for job in session.exec(stmt).all():
            lost = f"worker {job.worker_id} stopped heartbeating (last at {job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC)"
            if job.cancel_requested:
                values = {"status": "cancelled", "finished_at": now, "message": truncate(f"cancelled; {lost}", MESSAGE_MAX_CHARS)}
                bucket = summary.cancelled
            elif job.attempts >= max_attempts:
                error = f"gave up after {job.attempts} attempts: {lost}"
                values = {"status": "failed", "finished_at": now, "error": error, "message": truncate(f"failed: {error}", MESSAGE_MAX_CHARS)}
                bucket = summary.failed
            else:
                values = {
                    "status": "queued",
                    "worker_id": None,
                    "heartbeat_at": None,
                    "started_at": None,
                    "progress": 0.0,
                    "message": truncate(f"re-queued: {lost}", MESSAGE_MAX_CHARS),
                }
                bucket = summary.requeued
            # Guarded by the heartbeat we read: a worker that heartbeats right now keeps its job.
            result = session.execute(
                update(Job)
                .where(Job.id == job.id, Job.status == "running", Job.worker_id == job.worker_id, Job.heartbeat_at < cutoff)
                .values(**values)
            )
            if result.rowcount == 1:
                bucket.append(job.id)
        return summary

    return run_transaction(engine, work)
