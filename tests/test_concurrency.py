"""Racing annotators on SQLite and PostgreSQL: exact overlap, nothing lost, nothing duplicated, no lock errors.

32 threads, and separately 4 spawned processes of 8 threads (each process with its own engine from the URL), work
through a project of 500 tasks with overlap 3 until nothing is left. To keep each test near
30 s on a loaded 2-core machine, a third of the tasks start with 1 annotation and a third
with 2 (bulk-seeded by two earlier annotators), so the racers make the remaining 1,000 —
and every fill level, including "one slot left", is raced. Every acknowledged submit must be
in the database, every task must end with exactly 3 annotations from 3 distinct annotators,
and `annotation_count` must equal the real row count. Any exception in a worker (a lock error
that escaped the retries, a TaskFull) fails the test.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

import pytest
from sqlalchemy import func, select

from engine_fixtures import add_annotators, add_tasks, annotate_in_threads, build_project, create_project, process_annotators, seed_ratings_in_sql
from rlhf.annotate import submit_rating
from rlhf.assign import next_task
from rlhf.db import session_scope
from rlhf.schema import Rating, Task

N_TASKS = 500
OVERLAP = 3
SCORES = {"helpfulness": 5, "honesty": 4, "harmlessness": 7}

pytestmark = pytest.mark.timeout(300)


def half_filled_project(engine):
    """500 tasks, overlap 3; task i starts with i % 3 annotations from two earlier annotators."""
    project = create_project(engine, overlap=OVERLAP)
    add_tasks(engine, project.id, N_TASKS, "rating", annotation_counts=[i % 3 for i in range(N_TASKS)])
    earlier = [u.id for u in add_annotators(engine, 2, prefix="earlier")]
    seeded = seed_ratings_in_sql(engine, project.id, earlier)
    return project, seeded


def check_invariants(engine, project_id: int, acknowledged: list[tuple[int, int, int]], seeded: int) -> None:
    with session_scope(engine) as s:
        stored = s.execute(
            select(Rating.task_id, Rating.user_id, Rating.id).join(Task, Task.id == Rating.task_id).where(Task.project_id == project_id)
        ).all()
        counters = dict(s.execute(select(Task.id, Task.annotation_count).where(Task.project_id == project_id)).all())
    stored_set = {tuple(r) for r in stored}
    assert len(acknowledged) == len(set(acknowledged)), "an annotation was acknowledged twice"
    assert len(stored_set) == len(acknowledged) + seeded
    assert set(acknowledged) <= stored_set, "an acknowledged annotation is missing"
    per_task = Counter(task_id for task_id, _, _ in stored)
    assert len(counters) == N_TASKS
    assert all(per_task[t] == OVERLAP for t in counters), f"tasks off overlap: {[(t, per_task[t]) for t in counters if per_task[t] != OVERLAP][:5]}"
    assert counters == dict(per_task), "annotation_count differs from the real row count"
    pairs = Counter((task_id, user_id) for task_id, user_id, _ in stored)
    assert max(pairs.values()) == 1


def test_32_threads_fill_every_task_exactly(engine):
    project, seeded = half_filled_project(engine)
    users = add_annotators(engine, 32)
    acknowledged = annotate_in_threads(engine, users, project.id, "rating", seed=1)
    check_invariants(engine, project.id, acknowledged, seeded)


def test_4_processes_fill_every_task_exactly(engine):
    project, seeded = half_filled_project(engine)
    users = add_annotators(engine, 32)  # 8 annotator threads in each process
    url = engine.url.render_as_string(hide_password=False)
    groups = [[u.id for u in users[i::4]] for i in range(4)]
    # An executor, not a Pool: a worker that dies (even while starting) fails the test with
    # BrokenProcessPool at once, where a Pool silently replaces it and waits for its result forever.
    with ProcessPoolExecutor(4, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(process_annotators, url, group, project.id, "rating", 100 * i) for i, group in enumerate(groups)]
        acknowledged = [item for future in futures for item in future.result()]
    check_invariants(engine, project.id, acknowledged, seeded)


def test_racing_double_submit_creates_one_row(engine):
    built = build_project(engine, n_rating=1, overlap=3)
    (user,) = add_annotators(engine, 1)
    task_id = built.rating_ids[0]
    barrier = threading.Barrier(8)
    results, errors = [], []

    def click():
        barrier.wait()
        try:
            results.append(submit_rating(engine, user, task_id, scores=SCORES, next_kind=None))
        except Exception as exc:  # noqa: BLE001 - any error is a failure, reported below
            errors.append(exc)

    threads = [threading.Thread(target=click) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(r.created for r in results) == 1 and len({r.annotation_id for r in results}) == 1
    assert {r.revision for r in results} == {1}
    with session_scope(engine) as s:
        assert s.execute(select(func.count()).select_from(Rating)).scalar_one() == 1
        assert s.execute(select(Task.annotation_count)).scalar_one() == 1


def test_racing_tabs_of_one_user_get_one_task(engine):
    built = build_project(engine, n_rating=20, overlap=1)
    (user,) = add_annotators(engine, 1)
    barrier = threading.Barrier(6)
    seen, errors = [], []

    def open_tab():
        barrier.wait()
        try:
            seen.append(next_task(engine, user, built.project, "rating").task_id)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_tab) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(seen)) == 1
