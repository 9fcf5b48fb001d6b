"""Jobs in the database: submit and validate, list, cancel, atomic claim, heartbeat, re-queue, lineage."""

from __future__ import annotations

import multiprocessing
import threading
from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import update
from typer.testing import CliRunner

from rlhf.db import session_scope
from rlhf.job_kinds import JobKind, JobResult, ParamSpec, check_params
from rlhf.jobs import (
    ArtifactRecord,
    InvalidJobParams,
    JobNotFound,
    append_log_lines,
    artifact_lineage,
    cancel_job,
    claim_next_job,
    fail_job,
    finish_job,
    get_job,
    heartbeat,
    job_artifacts,
    job_log,
    job_metrics,
    list_artifacts,
    list_jobs,
    metrics_long,
    progress_fraction,
    release_job,
    report_state,
    requeue_stale_jobs,
    submit_job,
)
from rlhf.jsonsafe import json_safe
from rlhf.roles import SYSTEM, PermissionDenied
from rlhf.schema import Artifact, Job, Project, User, utcnow


def _noop_run(engine, job, params, reporter, workdir):
    return JobResult()


KINDS = {
    "echo": JobKind("echo", "test kind", lambda p: check_params("echo", [ParamSpec("n", int, 1), ParamSpec("name", str, "x")], p), _noop_run),
    "needs-project": JobKind("needs-project", "test kind", lambda p: dict(p), _noop_run, needs_project=True),
    "other": JobKind("other", "test kind", lambda p: dict(p), _noop_run),
}


def submit(engine, kind="echo", **params) -> Job:
    return submit_job(engine, SYSTEM, kind, params, registry=KINDS)


def backdate_heartbeat(engine, job_id: int, seconds: float) -> None:
    with session_scope(engine, write=True) as session:
        session.execute(update(Job).where(Job.id == job_id).values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))


# --------------------------------------------------------------------------- submit / list / cancel


def test_submit_validates_and_normalises_params(engine):
    job = submit(engine, n=3.0)
    assert (job.status, job.kind, job.params, job.progress, job.attempts) == ("queued", "echo", {"n": 3, "name": "x"}, 0.0, 0)
    assert get_job(engine, job.id).params == {"n": 3, "name": "x"}

    with pytest.raises(InvalidJobParams, match="echo: field 'n' must be an integer, got 'three'"):
        submit(engine, n="three")
    with pytest.raises(InvalidJobParams, match=r"echo: unknown field\(s\) lr; known fields: n, name"):
        submit(engine, lr=0.1)
    with pytest.raises(InvalidJobParams, match="unknown job kind 'nope'"):
        submit_job(engine, SYSTEM, "nope", {}, registry=KINDS)
    with pytest.raises(InvalidJobParams, match="params must be a mapping"):
        submit_job(engine, SYSTEM, "echo", [1, 2], registry=KINDS)
    with pytest.raises(InvalidJobParams, match="params must be JSON values"):
        submit_job(engine, SYSTEM, "other", {"x": float("nan")}, registry=KINDS)
    with session_scope(engine) as session:
        assert session.query(Job).count() == 1, "a rejected submit writes nothing"


def test_submit_is_admin_only_and_records_who_and_which_project(engine):
    with session_scope(engine, write=True) as session:
        admin = User(username="boss", role="admin")
        annotator = User(username="ann", role="annotator")
        session.add_all([admin, annotator, Project(name="demo")])
    with pytest.raises(PermissionDenied, match="ann may not submit jobs"):
        submit_job(engine, annotator, "echo", {}, registry=KINDS)
    with pytest.raises(InvalidJobParams, match="needs-project: a project is required"):
        submit_job(engine, admin, "needs-project", {}, registry=KINDS)
    with pytest.raises(InvalidJobParams, match="unknown project 'missing'"):
        submit_job(engine, admin, "needs-project", {}, project="missing", registry=KINDS)
    job = submit_job(engine, admin, "needs-project", {}, project="demo", registry=KINDS)
    assert job.created_by == admin.id and job.project_id is not None
    assert [j.id for j in list_jobs(engine, SYSTEM, project="demo")] == [job.id]


def test_product_kind_without_backend_says_not_available(engine, monkeypatch):
    import rlhf.job_kinds as job_kinds

    monkeypatch.setattr(job_kinds, "module_available", lambda name: False)
    with pytest.raises(InvalidJobParams, match="job kind 'simulate' is not available yet"):
        submit_job(engine, SYSTEM, "simulate", {}, project=None, registry=job_kinds.load_registry())


def test_list_jobs_filters_newest_first(engine):
    first, second, third = submit(engine), submit(engine, "other"), submit(engine)
    cancel_job(engine, SYSTEM, second.id)
    assert [j.id for j in list_jobs(engine, SYSTEM)] == [third.id, second.id, first.id]
    assert [j.id for j in list_jobs(engine, SYSTEM, status="queued")] == [third.id, first.id]
    assert [j.id for j in list_jobs(engine, SYSTEM, kind="other")] == [second.id]
    assert [j.id for j in list_jobs(engine, SYSTEM, status=["cancelled", "done"], kind=["echo", "other"])] == [second.id]
    assert len(list_jobs(engine, SYSTEM, limit=2)) == 2
    with pytest.raises(InvalidJobParams, match="unknown job status 'finished'"):
        list_jobs(engine, SYSTEM, status="finished")
    with pytest.raises(PermissionDenied):
        list_jobs(engine, None)


def test_cancel_queued_at_once_running_on_request_finished_unchanged(engine):
    finished, running, queued = submit(engine), submit(engine), submit(engine)
    assert claim_next_job(engine, "w1").id == finished.id
    assert claim_next_job(engine, "w2").id == running.id

    row = cancel_job(engine, SYSTEM, queued.id)
    assert (row.status, row.cancel_requested, row.message) == ("cancelled", True, "cancelled before it started")
    assert row.finished_at is not None
    assert claim_next_job(engine, "w3") is None, "a cancelled job is never claimed"

    row = cancel_job(engine, SYSTEM, running.id)
    assert (row.status, row.cancel_requested) == ("running", True)
    assert heartbeat(engine, running.id, "w2").cancel_requested, "its worker hears of it"

    finish_job(engine, finished.id, "w1")
    assert cancel_job(engine, SYSTEM, finished.id).status == "done"
    with pytest.raises(JobNotFound):
        cancel_job(engine, SYSTEM, 10_000)
    with pytest.raises(JobNotFound):
        get_job(engine, 10_000)
    with pytest.raises(PermissionDenied):
        cancel_job(engine, User(username="ann", role="annotator"), running.id)


# --------------------------------------------------------------------------- claim


def test_claim_takes_oldest_of_wanted_kinds_and_resets_the_attempt(engine):
    a, b = submit(engine), submit(engine, "other")
    assert claim_next_job(engine, "w", kinds=["other"]).id == b.id
    assert claim_next_job(engine, "w", kinds=[]) is None
    job = claim_next_job(engine, "w")
    assert (job.id, job.status, job.worker_id, job.attempts) == (a.id, "running", "w", 1)
    assert job.started_at is not None and job.heartbeat_at is not None
    assert claim_next_job(engine, "w") is None

    # a second attempt starts from a clean slate: no old metrics, error or progress
    report_state(engine, a.id, "w", progress=0.5, metric_points=[(0, {"loss": 1.0})])
    backdate_heartbeat(engine, a.id, 100)
    assert requeue_stale_jobs(engine, stale_after_s=10).requeued == [a.id]
    again = claim_next_job(engine, "w2")
    assert (again.id, again.attempts, again.progress) == (a.id, 2, 0.0)
    assert job_metrics(engine, a.id) == []


def test_two_threads_one_job_exactly_one_claims(engine):
    job = submit(engine)
    barrier = threading.Barrier(8)
    results = []

    def race(name):
        barrier.wait()
        results.append(claim_next_job(engine, name))

    threads = [threading.Thread(target=race, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0].id == job.id
    assert get_job(engine, job.id).worker_id == winners[0].worker_id


def test_many_threads_many_jobs_each_claimed_once(engine):
    ids = {submit(engine, n=i).id for i in range(40)}
    claimed: dict[str, list[int]] = {}

    def drain(name):
        mine = claimed.setdefault(name, [])
        while (job := claim_next_job(engine, name)) is not None:
            mine.append(job.id)

    threads = [threading.Thread(target=drain, args=(f"t{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids_ in claimed.values() for i in ids_]
    assert sorted(every) == sorted(ids), "each job claimed exactly once"
    with session_scope(engine) as session:
        rows = session.query(Job).all()
    assert all(row.status == "running" and row.attempts == 1 for row in rows)
    assert {row.id: row.worker_id for row in rows} == {i: name for name, mine in claimed.items() for i in mine}


def _claim_in_process(url, name, barrier, out):
    from rlhf.db import make_engine
    from rlhf.jobs import claim_next_job

    engine = make_engine(url, pool_size=1)
    barrier.wait()
    mine = []
    while (job := claim_next_job(engine, name)) is not None:
        mine.append(job.id)
    out.put((name, mine))
    engine.dispose()


def test_worker_processes_race_each_job_claimed_once(engine):
    ids = sorted(submit(engine, n=i).id for i in range(30))
    context = multiprocessing.get_context("spawn")
    barrier, out = context.Barrier(2), context.Queue()
    url = engine.url.render_as_string(hide_password=False)
    processes = [context.Process(target=_claim_in_process, args=(url, f"p{i}", barrier, out)) for i in range(2)]
    for p in processes:
        p.start()
    results = dict(out.get(timeout=60) for _ in processes)
    for p in processes:
        p.join(30)
    assert sorted(i for mine in results.values() for i in mine) == ids


# --------------------------------------------------------------------------- heartbeat / re-queue


def test_heartbeat_and_requeue_of_a_silent_worker(engine):
    job = submit(engine)
    claim_next_job(engine, "alive")
    assert heartbeat(engine, job.id, "alive").owned
    assert not heartbeat(engine, job.id, "somebody-else").owned
    assert requeue_stale_jobs(engine, stale_after_s=60).requeued == [], "a fresh heartbeat keeps the job"

    backdate_heartbeat(engine, job.id, 120)
    summary = requeue_stale_jobs(engine, stale_after_s=60)
    assert summary.requeued == [job.id]
    row = get_job(engine, job.id)
    assert (row.status, row.worker_id, row.heartbeat_at, row.attempts) == ("queued", None, None, 1)
    assert row.message.startswith("re-queued: worker alive stopped heartbeating")
    hb = heartbeat(engine, job.id, "alive")
    assert not hb.owned, "the silent worker learns it lost the job"
    assert not report_state(engine, job.id, "alive", progress=0.9).owned
    assert get_job(engine, job.id).progress == 0.0, "a lost worker writes nothing"


def test_requeue_gives_up_after_max_attempts_and_honours_cancel(engine):
    doomed, cancelled = submit(engine), submit(engine)
    for attempt in range(1, 4):
        claimed = claim_next_job(engine, f"w{attempt}")
        assert (claimed.id, claimed.attempts) == (doomed.id, attempt)
        backdate_heartbeat(engine, doomed.id, 100)
        summary = requeue_stale_jobs(engine, stale_after_s=10, max_attempts=3)
    assert summary.failed == [doomed.id] and summary.requeued == []
    row = get_job(engine, doomed.id)
    assert row.status == "failed" and row.error.startswith("gave up after 3 attempts: worker w3 stopped heartbeating")

    claim_next_job(engine, "w")
    cancel_job(engine, SYSTEM, cancelled.id)
    backdate_heartbeat(engine, cancelled.id, 100)
    assert requeue_stale_jobs(engine, stale_after_s=10).cancelled == [cancelled.id]
    assert get_job(engine, cancelled.id).status == "cancelled"


def test_release_returns_the_job_without_counting_the_attempt(engine):
    job = submit(engine)
    claim_next_job(engine, "w")
    assert not release_job(engine, job.id, "not-me")
    assert release_job(engine, job.id, "w", reason="shutting down")
    row = get_job(engine, job.id)
    assert (row.status, row.attempts, row.message) == ("queued", 0, "re-queued: shutting down")


# --------------------------------------------------------------------------- outcome, metrics, artifacts


def test_report_finish_and_fail_are_guarded_by_the_owner(engine):
    a, b = submit(engine), submit(engine)
    claim_next_job(engine, "w")
    claim_next_job(engine, "w")
    state = report_state(engine, a.id, "w", progress=0.25, message="m" * 3000, log_tail="one\ntwo", metric_points=[(1, {"loss": 2.0}), (2, {"loss": float("inf")})])
    assert state.owned and not state.cancel_requested
    row = get_job(engine, a.id)
    assert (row.progress, len(row.message), job_log(engine, a.id), job_log(engine, a.id, lines=1)) == (0.25, 2000, ["one", "two"], ["two"])
    assert [(p.step, p.values) for p in job_metrics(engine, a.id)] == [(1, {"loss": 2.0}), (2, {"loss": None})]
    assert [p.step for p in job_metrics(engine, a.id, since_step=1)] == [2]

    assert finish_job(engine, a.id, "intruder") is None
    rows = finish_job(engine, a.id, "w", artifacts=[ArtifactRecord(kind="export", name="e", path="/x", content_hash="h" * 64)], final_metrics={"acc": 0.5})
    assert [r.kind for r in rows] == ["export"] and rows[0].job_id == a.id
    assert finish_job(engine, a.id, "w") is None, "a job finishes once"
    assert get_job(engine, a.id).status == "done"
    assert job_metrics(engine, a.id)[-1].values == {"acc": 0.5}

    assert fail_job(engine, b.id, "w", error="boom", traceback="Traceback ...")
    row = get_job(engine, b.id)
    assert (row.status, row.error, row.traceback, row.message) == ("failed", "boom", "Traceback ...", "failed: boom")
    assert not fail_job(engine, b.id, "w", error="again")


def test_artifact_lineage_walks_parents_nearest_first(engine):
    def add(session, kind, parents):
        row = Artifact(kind=kind, name=kind, path="", parent_ids=parents)
        session.add(row)
        session.flush()
        return row.id

    with session_scope(engine, write=True) as session:
        export = add(session, "export", [])
        extra_export = add(session, "export", [])
        reward = add(session, "reward_model", [export])
        policy = add(session, "policy", [reward, extra_export, 9999])  # 9999: a deleted parent
        generation = add(session, "generation", [policy, reward])  # reward reached twice
    chain = artifact_lineage(engine, generation)
    assert [a.id for a in chain] == [generation, policy, reward, extra_export, export]
    assert [a.id for a in artifact_lineage(engine, export)] == [export]
    assert [a.id for a in list_artifacts(engine, kind="export")] == [extra_export, export]
    with pytest.raises(JobNotFound):
        artifact_lineage(engine, 123456)


def test_job_artifacts_lists_what_the_job_recorded(engine):
    job = submit(engine)
    claim_next_job(engine, "w")
    finish_job(engine, job.id, "w", artifacts=[ArtifactRecord(kind="policy", name="p", parent_ids=[1], lineage={"base": "m"})])
    [artifact] = job_artifacts(engine, job.id)
    assert (artifact.kind, artifact.parent_ids, artifact.lineage, artifact.path) == ("policy", [1], {"base": "m"}, "")


# --------------------------------------------------------------------------- pure helpers


def test_json_safe_and_progress_fraction():
    import numpy as np

    assert json_safe({"a": np.float32(0.5), "b": float("nan"), "c": [np.int64(3), float("-inf")], 4: True}) == {"a": 0.5, "b": None, "c": [3, None], "4": True}
    assert progress_fraction(3, 4) == 0.75 and progress_fraction(5, 4) == 1.0
    assert progress_fraction(3, None) is None and progress_fraction(3, 0) is None


@given(st.lists(st.text(max_size=1200), max_size=300), st.integers(min_value=1, max_value=50))
def test_log_tail_is_bounded(lines, keep):
    tail = append_log_lines("old line", lines, keep=keep)
    kept = tail.splitlines()
    assert len(kept) <= keep
    assert all(len(line) <= 1000 for line in kept)


def test_metrics_long_rows():
    class Point:
        def __init__(self, step, values):
            self.step, self.values, self.created_at = step, values, None

    rows = metrics_long([Point(0, {"loss": 1.0, "acc": 0.5}), Point(1, {"loss": 0.5})])
    assert [(r["step"], r["metric"], r["value"]) for r in rows] == [(0, "loss", 1.0), (0, "acc", 0.5), (1, "loss", 0.5)]


# --------------------------------------------------------------------------- command line


def test_job_commands(sqlite_engine, monkeypatch, tmp_path):
    from rlhf.cli import app

    monkeypatch.setenv("RLHF_DATABASE_URL", str(sqlite_engine.url))
    runner = CliRunner()
    params_file = tmp_path / "p.json"
    params_file.write_text('{"mode": "exception"}')

    # the product kinds are validated like any other; unknown fields are named
    result = runner.invoke(app, ["job", "submit", "simulate", "--param", "bogus=1"])
    assert result.exit_code == 2 and "simulate" in result.output

    monkeypatch.setenv("RLHF_JOB_KIND_MODULES", "test_worker")
    result = runner.invoke(app, ["job", "submit", "test-sleep", "-p", "steps=3", "-p", "step_s=0.5"])
    assert result.exit_code == 0, result.output
    job_id = int(result.output.strip())
    assert get_job(sqlite_engine, job_id).params["steps"] == 3
    result = runner.invoke(app, ["job", "submit", "test-crash", "--params-file", str(params_file)])
    crash_id = int(result.output.strip())
    assert get_job(sqlite_engine, crash_id).params == {"mode": "exception"}
    result = runner.invoke(app, ["job", "submit", "test-sleep", "-p", "steps=many"])
    assert result.exit_code == 2 and "field 'steps' must be an integer" in result.output
    result = runner.invoke(app, ["job", "submit", "test-sleep", "-p", "novalue"])
    assert result.exit_code == 2 and "expected key=value" in result.output

    listing = runner.invoke(app, ["job", "list", "--status", "queued"]).output
    assert f"{job_id:>6}  test-sleep" in listing and f"{crash_id:>6}  test-crash" in listing
    assert runner.invoke(app, ["job", "list", "--status", "nope"]).exit_code == 2

    claim_next_job(sqlite_engine, "w")
    report_state(sqlite_engine, job_id, "w", progress=0.5, log_tail="hello\nworld", metric_points=[(3, {"loss": 0.1})])
    shown = runner.invoke(app, ["job", "show", str(job_id)]).output
    assert "test-sleep  running  50.0%" in shown and 'last at step 3: {"loss": 0.1}' in shown
    assert runner.invoke(app, ["job", "logs", str(job_id), "-n", "1"]).output == "world\n"
    assert "cancel requested" in runner.invoke(app, ["job", "cancel", str(job_id)]).output
    assert f"job {crash_id}: cancelled" in runner.invoke(app, ["job", "cancel", str(crash_id)]).output
    assert runner.invoke(app, ["job", "show", "999"]).exit_code == 2

    kinds = runner.invoke(app, ["job", "kinds"]).output
    assert "test-sleep: sleeps with progress" in kinds and "export:" in kinds


def _imported_modules(path) -> set[str]:
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_queue_imports_no_kind_code():
    # DESIGN: the queue knows no kind's code; the worker holds the registry and hands it in.
    import subprocess
    import sys
    from pathlib import Path

    import rlhf

    package = Path(rlhf.__file__).parent
    assert "rlhf.job_kinds" not in _imported_modules(package / "jobs.py"), "not even inside a function"
    assert "rlhf.jobs" not in _imported_modules(package / "generate.py"), "json_safe comes from rlhf.jsonsafe"
    probe = "import sys, rlhf.jobs, rlhf.generate; print(sorted(m for m in sys.modules if m in ('rlhf.job_kinds', 'rlhf.worker')))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    with pytest.raises(TypeError, match="registry"):
        submit_job(None, SYSTEM, "echo", {})  # the registry is handed in, never looked up by the queue
