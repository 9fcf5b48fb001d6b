"""A signed-in object is not a permission: every role-checked backend function re-reads the caller's account.

Issue 16, item 3: after `set_role(..., "annotator")` or `deactivate_user(...)`, the `User`
object a page loaded earlier still says `role="admin", active=True`. Each function below must
refuse that stale object (PermissionDenied) and write nothing, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
from sqlalchemy import select

from engine_fixtures import add_annotators, build_project
from rlhf import annotate, assign, auth, export, generate, jobs, projects, stats
from rlhf.auth import create_user, deactivate_user, set_role
from rlhf.importer import core as importer_core
from rlhf.importer import import_file, import_records
from rlhf.job_kinds import JobKind, JobResult
from rlhf.jobs import submit_job
from rlhf.models import ModelNotFoundError
from rlhf.roles import SYSTEM, PermissionDenied
from rlhf.schema import User
from rlhf.stats import StatsConfig

DATA = Path(__file__).parent / "data" / "import"
ECHO = {"echo": JobKind("echo", "test kind", lambda p: dict(p), lambda engine, job, params, reporter, workdir: JobResult())}


def _admin_calls(engine, built, job_id: int, victim: str, out: Path):
    """Every admin backend function, called with the stale object `a` standing in for the caller."""
    task_id = built.rating_ids[0]
    name = built.project.name
    return {
        # accounts, flags, gold, extra votes (rlhf.auth / annotate / assign)
        "create_user": lambda a: create_user(engine, a, "newbie", "a long password"),
        "deactivate_user": lambda a: deactivate_user(engine, a, victim),
        "reactivate_user": lambda a: auth.reactivate_user(engine, a, victim),
        "reset_password": lambda a: auth.reset_password(engine, a, victim),
        "set_role": lambda a: set_role(engine, a, victim, "admin"),
        "list_users": lambda a: auth.list_users(engine, a),
        "list_flags": lambda a: annotate.list_flags(engine, a, built.project),
        "resolve_flag": lambda a: annotate.resolve_flag(engine, a, 1),
        "set_gold": lambda a: annotate.set_gold(engine, a, task_id, {"scores": {"helpfulness": 7}}),
        "task_view_for_admin": lambda a: annotate.task_view_for_admin(engine, a, task_id),
        "request_extra_votes": lambda a: assign.request_extra_votes(engine, a, built.project, min_agreement=0.5),
        # data in and out
        "export_project": lambda a: export.export_project(engine, a, name, format="raw", out=out / "raw.jsonl"),
        "import_file": lambda a: import_file(engine, DATA / "responses.jsonl", "imported", actor=a),
        "import_records": lambda a: import_records(engine, [{"prompt": "p", "responses": [{"text": "r", "model": "m"}]}], "imported", actor=a),
        # projects
        "create_project": lambda a: projects.create_project(engine, a, "new-project"),
        "update_project": lambda a: projects.update_project(engine, a, name, overlap=1),
        "get_or_create_project": lambda a: projects.get_or_create_project(engine, a, "new-project"),
        # jobs
        "submit_job": lambda a: submit_job(engine, a, "echo", {}, registry=ECHO),
        "list_jobs": lambda a: jobs.list_jobs(engine, a),
        "cancel_job": lambda a: jobs.cancel_job(engine, a, job_id),
        # statistics, generation
        "project_stats": lambda a: stats.project_stats(engine, a, name, StatsConfig(leaderboard_bootstrap=0)),
        "dashboard_data": lambda a: stats.dashboard_data(engine, a, name, StatsConfig(leaderboard_bootstrap=0)),
        "generate_round": lambda a: generate.generate_round(engine, a, policy=out / "no-policy", project=name, round=1),
    }


def _annotator_calls(engine, built):
    """Every annotator-level function (leasing, submitting, reading one's own work)."""
    rating, pair = built.rating_ids[0], built.pairwise_ids[0]
    project = built.project
    return {
        "next_task": lambda u: assign.next_task(engine, u, project, "rating"),
        "renew_lease": lambda u: assign.renew_lease(engine, u, rating),
        "submit_rating": lambda u: annotate.submit_rating(engine, u, rating, scores={"helpfulness": 5, "honesty": 5, "harmlessness": 5}),
        "submit_preference": lambda u: annotate.submit_preference(engine, u, pair, choice="a", strength=2, shown_left="a"),
        "submit_ranking": lambda u: annotate.submit_ranking(engine, u, rating, ranking="A B C"),  # the role check comes before the kind's
        "skip_task": lambda u: annotate.skip_task(engine, u, rating),
        "flag_task": lambda u: annotate.flag_task(engine, u, rating, "other"),
        "recent_annotations": lambda u: annotate.recent_annotations(engine, u, project),
        "get_own_annotation": lambda u: annotate.get_own_annotation(engine, u, rating),
        "task_view_for_edit": lambda u: annotate.task_view_for_edit(engine, u, rating),
        "progress": lambda u: annotate.progress(engine, u, project),
        "reveal_distribution": lambda u: annotate.reveal_distribution(engine, u, rating),
    }


_NAMES_ONLY = SimpleNamespace(rating_ids=[1], pairwise_ids=[2], project=SimpleNamespace(name="p"))
ADMIN_FUNCTIONS = sorted(_admin_calls(None, _NAMES_ONLY, 1, "x", Path(".")))
ANNOTATOR_FUNCTIONS = sorted(_annotator_calls(None, _NAMES_ONLY))


def _snapshot(engine) -> dict[str, list[str]]:
    """Every row of every table, as sorted reprs: equal snapshots mean nothing was written."""
    from sqlmodel import SQLModel

    with engine.connect() as connection:
        return {
            table.name: sorted(repr(tuple(row)) for row in connection.execute(select(table)))
            for table in SQLModel.metadata.sorted_tables
        }


def _stale(engine, username: str, role: str, how: str) -> User:
    """A `User` object loaded while `username` was an active `role`, then demoted or deactivated."""
    create_user(engine, SYSTEM, username, "a long password", role=role)
    stale = auth.authenticate(engine, username, "a long password")
    if how == "demoted":
        set_role(engine, SYSTEM, username, "annotator")
    else:
        deactivate_user(engine, SYSTEM, username)
    assert (stale.role, stale.active) == (role, True)  # the object the page still holds
    return stale


@pytest.fixture
def world(engine, tmp_path, monkeypatch):
    monkeypatch.setattr(auth, "_hasher", lambda: auth.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    built = build_project(engine, n_rating=2, n_pairwise=1, overlap=2)
    create_user(engine, SYSTEM, "root", "a long password", role="admin")  # an admin remains after the demotion
    (victim,) = add_annotators(engine, 1, prefix="victim")
    annotate.flag_task(engine, victim, built.rating_ids[0], "other")
    annotate.submit_rating(engine, victim, built.rating_ids[1], scores={"helpfulness": 6, "honesty": 6, "harmlessness": 6})  # something to export
    job = submit_job(engine, SYSTEM, "echo", {}, registry=ECHO)
    out = tmp_path / "out"
    out.mkdir()
    return built, job.id, victim.username, out


@pytest.mark.parametrize("how", ["demoted", "deactivated"])
@pytest.mark.parametrize("function", ADMIN_FUNCTIONS)
def test_a_stale_admin_object_is_refused_and_writes_nothing(engine, world, function, how):
    built, job_id, victim, out = world
    stale = _stale(engine, "boss", "admin", how)
    call = _admin_calls(engine, built, job_id, victim, out)[function]
    before = _snapshot(engine)

    with pytest.raises(PermissionDenied, match="boss may not"):
        call(stale)

    assert _snapshot(engine) == before
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("function", ANNOTATOR_FUNCTIONS)
def test_a_stale_annotator_object_of_a_deactivated_account_is_refused(engine, world, function):
    built, _, _, _ = world
    stale = _stale(engine, "ann", "annotator", "deactivated")
    call = _annotator_calls(engine, built)[function]
    before = _snapshot(engine)

    with pytest.raises(PermissionDenied, match="account deactivated"):
        call(stale)

    assert _snapshot(engine) == before


def test_the_admin_calls_work_for_a_current_admin(engine, world):
    """Sanity: the refusals above are about the stored role, not a broken call."""
    built, job_id, victim, out = world
    create_user(engine, SYSTEM, "boss", "a long password", role="admin")
    boss = auth.authenticate(engine, "boss", "a long password")
    calls = _admin_calls(engine, built, job_id, victim, out)
    for function in ADMIN_FUNCTIONS:
        if function == "generate_round":
            with pytest.raises((generate.GenerationRoundError, ModelNotFoundError)):  # past the role check: no policy
                calls[function](boss)
        else:
            calls[function](boss)


def test_the_annotator_calls_work_for_a_current_annotator(engine, world):
    built, _, _, _ = world
    create_user(engine, SYSTEM, "ann", "a long password")
    ann = auth.authenticate(engine, "ann", "a long password")
    calls = _annotator_calls(engine, built)
    # in an order that makes each call meaningful: lease, then annotate, then read back
    for function in ("next_task", "renew_lease", "submit_rating", "get_own_annotation", "task_view_for_edit", "recent_annotations",
                     "progress", "submit_preference", "flag_task"):
        calls[function](ann)
    with pytest.raises(PermissionDenied, match="blind"):  # past the role check: the project is blind
        calls["reveal_distribution"](ann)
    with pytest.raises(assign.ValidationError, match="already annotated"):  # past the role check
        calls["skip_task"](ann)


def test_every_role_checked_function_is_covered():
    """Guard: a new public function that checks a role must join the lists above."""
    modules = (auth, annotate, assign, export, importer_core, projects, jobs, stats, generate)
    markers = ("check_admin(", "check_annotator(", "lock_annotator(", "_caller_and_context(", "_submit(", "_import_stream(")
    checked = set()
    for module in modules:
        for name, fn in vars(module).items():
            if inspect.isfunction(fn) and fn.__module__ == module.__name__ and not name.startswith("_"):
                if any(marker in inspect.getsource(fn) for marker in markers) and name not in ("lock_annotator",):
                    checked.add(name)
    assert checked == set(ADMIN_FUNCTIONS) | set(ANNOTATOR_FUNCTIONS)
