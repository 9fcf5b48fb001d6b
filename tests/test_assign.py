"""Assignment: overlap, no repeats, leases (injected clock), second tab, ordering, gold, sides, extra votes."""

from __future__ import annotations

import dataclasses
import random
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from engine_fixtures import add_annotators, add_tasks, build_project, random_submit
from rlhf.annotate import skip_task, submit_preference, submit_rating
from rlhf.assign import (
    RubricDimension,
    TaskFull,
    TaskView,
    ValidationError,
    effective_target,
    left_side_for,
    next_task,
    pairwise_agreement,
    rating_agreement,
    renew_lease,
    request_extra_votes,
)
from rlhf.auth import deactivate_user
from rlhf.db import session_scope
from rlhf.roles import SYSTEM, PermissionDenied
from rlhf.schema import Lease, Rating, Task, utcnow

SCORES = {"helpfulness": 5, "honesty": 5, "harmlessness": 7}


def counts(engine, project_id):
    with session_scope(engine) as s:
        return dict(s.execute(select(Task.id, Task.annotation_count).where(Task.project_id == project_id)).all())


# ------------------------------------------------------------------------------- pure helpers


def test_effective_target_is_raised_by_extra_votes_but_capped():
    assert effective_target(3, 3, None) == 3
    assert effective_target(3, 5, 4) == 4
    assert effective_target(3, 5, 9) == 5
    assert effective_target(3, 5, 2) == 3  # never below the project's overlap


def test_agreement_by_hand():
    assert pairwise_agreement(["a", "a", "tie"]) == pytest.approx(1 / 3)
    assert pairwise_agreement(["b", "b"]) == 1.0
    assert pairwise_agreement(["a"]) is None
    rubric = [RubricDimension("h", "", 1, 7)]
    # pairs (1,7): 0; (1,4): 0.5; (7,4): 0.5 → mean 1/3
    assert rating_agreement([{"h": 1}, {"h": 7}, {"h": 4}], rubric) == pytest.approx(1 / 3)
    assert rating_agreement([{"h": 5}, {"h": 5}], rubric) == 1.0


def test_sides_are_seeded_by_task_and_user_and_balanced():
    sides = [left_side_for(t, u) for t in range(1, 41) for u in range(1, 26)]
    assert left_side_for(7, 3) == left_side_for(7, 3)
    share = sides.count("a") / len(sides)
    assert 0.45 < share < 0.55


# ----------------------------------------------------------------------- overlap and repeats


def test_overlap_is_exact_and_nobody_repeats(engine):
    built = build_project(engine, n_rating=12, overlap=3)
    users = add_annotators(engine, 5)
    rng = random.Random(0)
    seen: dict[int, list[int]] = {u.id: [] for u in users}
    # Round-robin so the annotators interleave like real ones.
    views = {u.id: next_task(engine, u, built.project, "rating") for u in users}
    while any(v is not None for v in views.values()):
        for u in users:
            view = views[u.id]
            if view is None:
                continue
            seen[u.id].append(view.task_id)
            views[u.id] = random_submit(engine, u, view, rng).next_task
    assert set(counts(engine, built.project.id).values()) == {3}
    for task_ids in seen.values():
        assert len(task_ids) == len(set(task_ids))
    assert sum(len(v) for v in seen.values()) == 36


def test_skipped_task_is_never_offered_again(engine):
    built = build_project(engine, n_rating=3, overlap=1)
    (user,) = add_annotators(engine, 1)
    first = next_task(engine, user, built.project, "rating")
    following = skip_task(engine, user, first.task_id, "not my field")
    offered = []
    view = following
    while view is not None:
        offered.append(view.task_id)
        view = submit_rating(engine, user, view.task_id, scores=SCORES).next_task
    assert first.task_id not in offered and len(offered) == 2


def test_least_annotated_first_then_shuffle_key(sqlite_engine):
    engine = sqlite_engine
    built = build_project(engine, n_rating=6, overlap=3)
    (user,) = add_annotators(engine, 1)
    ids = built.rating_ids
    with session_scope(engine, write=True) as s:
        # two tasks already have 1 annotation: they go last; among count 0, smallest shuffle key first
        s.execute(update(Task).where(Task.id.in_(ids[:2])).values(annotation_count=1))
        keys = dict(s.execute(select(Task.id, Task.shuffle_key).where(Task.id.in_(ids))).all())
    expected = sorted(ids[2:], key=keys.get) + sorted(ids[:2], key=keys.get)
    order = []
    view = next_task(engine, user, built.project, "rating")
    while view is not None:
        order.append(view.task_id)
        view = submit_rating(engine, user, view.task_id, scores=SCORES).next_task
    assert order == expected


def test_queue_uses_the_index(sqlite_engine):
    """The pick walks ix_task_queue (no table scan), whatever the number of tasks."""
    from sqlalchemy import event

    engine = sqlite_engine
    built = build_project(engine, n_rating=50)
    (user,) = add_annotators(engine, 1)
    seen = []

    def capture(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().startswith("SELECT task.id") and "ORDER BY task.annotation_count" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        next_task(engine, user, built.project, "rating")
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    statement, parameters = seen[0]
    with engine.connect() as conn:
        plan = " | ".join(row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all())
    assert "USING INDEX ix_task_queue" in plan and "SCAN task" not in plan and "TEMP B-TREE" not in plan, plan


# ---------------------------------------------------------------------------------- leases


def test_lease_blocks_others_until_it_expires(engine):
    built = build_project(engine, n_rating=1, overlap=1, lease_minutes=10)
    alice, bob = add_annotators(engine, 2)
    t0 = utcnow()
    view = next_task(engine, alice, built.project, "rating", now=t0)
    assert view.lease_expires_at == t0 + timedelta(minutes=10)
    assert next_task(engine, bob, built.project, "rating", now=t0 + timedelta(minutes=9)) is None
    taken = next_task(engine, bob, built.project, "rating", now=t0 + timedelta(minutes=11))
    assert taken is not None and taken.task_id == view.task_id
    # Alice's lease ran out and Bob filled the task: her late submit must not over-fill it.
    submit_rating(engine, bob, view.task_id, scores=SCORES, now=t0 + timedelta(minutes=12))
    with pytest.raises(TaskFull):
        submit_rating(engine, alice, view.task_id, scores=SCORES, now=t0 + timedelta(minutes=13))
    assert counts(engine, built.project.id) == {view.task_id: 1}


def test_lease_is_renewed_on_activity(engine):
    built = build_project(engine, n_rating=1, overlap=1, lease_minutes=10)
    alice, bob = add_annotators(engine, 2)
    t0 = utcnow()
    view = next_task(engine, alice, built.project, "rating", now=t0)
    again = next_task(engine, alice, built.project, "rating", now=t0 + timedelta(minutes=8))
    assert again.task_id == view.task_id and again.lease_expires_at == t0 + timedelta(minutes=18)
    assert renew_lease(engine, alice, view.task_id, now=t0 + timedelta(minutes=15)) == t0 + timedelta(minutes=25)
    assert next_task(engine, bob, built.project, "rating", now=t0 + timedelta(minutes=20)) is None
    assert renew_lease(engine, alice, view.task_id, now=t0 + timedelta(minutes=30)) is None  # expired: not revived
    assert next_task(engine, bob, built.project, "rating", now=t0 + timedelta(minutes=30)).task_id == view.task_id


def test_second_tab_sees_the_same_task(engine):
    built = build_project(engine, n_rating=5, n_pairwise=5, overlap=2)
    (user,) = add_annotators(engine, 1)
    for kind in ("rating", "pairwise"):
        first = next_task(engine, user, built.project, kind)
        second = next_task(engine, user, built.project, kind)
        assert second.task_id == first.task_id and second.shown_left == first.shown_left
    with session_scope(engine) as s:
        assert s.execute(select(func.count()).select_from(Lease)).scalar_one() == 2


def test_two_live_leases_keep_returning_the_oldest(sqlite_engine):
    """If a user ever holds two live leases (two tabs racing), every tab settles on the oldest."""
    engine = sqlite_engine
    built = build_project(engine, n_rating=3, overlap=1)
    (user,) = add_annotators(engine, 1)
    t0 = utcnow()
    first = next_task(engine, user, built.project, "rating", now=t0)
    other = next(t for t in built.rating_ids if t != first.task_id)
    with session_scope(engine, write=True) as s:
        s.add(Lease(task_id=other, user_id=user.id, expires_at=t0 + timedelta(minutes=10), created_at=t0 + timedelta(seconds=1)))
    seen = {next_task(engine, user, built.project, "rating", now=t0 + timedelta(minutes=i)).task_id for i in range(1, 5)}
    assert seen == {first.task_id}


def test_concurrent_leases_never_exceed_overlap(engine):
    built = build_project(engine, n_rating=1, overlap=2)
    users = add_annotators(engine, 4)
    got = [next_task(engine, u, built.project, "rating") for u in users]
    assert [v is not None for v in got] == [True, True, False, False]


# ------------------------------------------------------------------------------------ gold


def test_gold_mixing_rate_with_a_seed(sqlite_engine):
    engine = sqlite_engine
    built = build_project(engine, n_rating=400, n_gold_rating=80, overlap=1, gold_rate=0.2)
    (user,) = add_annotators(engine, 1)
    gold = set(built.gold_ids)

    def run(seed):
        rng = random.Random(seed)
        handed = []
        view = next_task(engine, user, built.project, "rating", rng=rng)
        while view is not None and len(handed) < 250:
            handed.append(view.task_id)
            view = submit_rating(engine, user, view.task_id, scores=SCORES, rng=rng).next_task
        return handed

    handed = run(7)
    share = sum(t in gold for t in handed) / len(handed)
    # Binomial(250, 0.2): sd = 0.025; 4 sd either side.
    assert 0.1 < share < 0.3
    assert len(handed) == len(set(handed))  # each gold task at most once per annotator


def test_gold_is_seen_by_everyone_once_and_takes_no_overlap(engine):
    built = build_project(engine, n_rating=2, n_gold_rating=1, overlap=1, gold_rate=0.999)
    users = add_annotators(engine, 4)
    (gold_id,) = built.gold_ids
    for user in users:
        view = next_task(engine, user, built.project, "rating", rng=random.Random(0))
        assert view.task_id == gold_id
        nxt = submit_rating(engine, user, gold_id, scores=SCORES, rng=random.Random(0)).next_task
        assert nxt is None or nxt.task_id != gold_id
    assert counts(engine, built.project.id)[gold_id] == 4


class FixedDraw:
    """An rng whose gold draw is fixed: 0.0 always picks gold (if any), 0.99 never does."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def test_task_view_never_reveals_gold(engine):
    built = build_project(engine, n_rating=1, n_gold_rating=1, overlap=1, gold_rate=0.5)
    alice, bob = add_annotators(engine, 2)
    names = [f.name for f in dataclasses.fields(TaskView)]
    assert not any("gold" in n for n in names)
    now = utcnow()
    gold_view = next_task(engine, alice, built.project, "rating", rng=FixedDraw(0.0), now=now)
    regular = next_task(engine, bob, built.project, "rating", rng=FixedDraw(0.99), now=now)
    assert gold_view.task_id == built.gold_ids[0] and regular.task_id == built.rating_ids[0]
    # Same shape, same lease: only the content differs.
    same = ("project_id", "kind", "rubric", "tags", "guidelines", "lease_expires_at", "is_revisit", "own", "shown_left", "left", "right", "prompt_messages", "project_name")
    assert [getattr(gold_view, n) for n in same] == [getattr(regular, n) for n in same]
    assert "gold" not in repr(gold_view).lower()


# ------------------------------------------------------------------------------- pairwise


def test_pairwise_view_has_sides_in_display_order_and_blind_models(engine):
    built = build_project(engine, n_pairwise=4, overlap=1)
    (user,) = add_annotators(engine, 1)
    view = next_task(engine, user, built.project, "pairwise")
    expected = left_side_for(view.task_id, user.id)
    assert view.shown_left == expected and view.response is None
    left_text = view.left.text
    assert left_text.startswith("Answer A") == (expected == "a")
    assert view.left.model_name is None and view.right.model_name is None
    with session_scope(engine) as s:
        assert s.execute(select(Lease.left_side)).scalar_one() == expected
    with pytest.raises(ValidationError) as err:
        submit_preference(engine, user, view.task_id, choice="a", strength=1, shown_left="b" if expected == "a" else "a")
    assert err.value.field == "shown_left"


# ------------------------------------------------------------------------------ extra votes


def test_extra_votes_for_low_agreement(engine):
    built = build_project(engine, n_pairwise=2, overlap=2, max_overlap=3)
    users = add_annotators(engine, 3)
    agree, split = built.pairwise_ids
    for i, user in enumerate(users[:2]):
        for task_id in (agree, split):
            next_task(engine, user, built.project, "pairwise")
            side = left_side_for(task_id, user.id)
            choice = "a" if task_id == agree or i == 0 else "b"
            submit_preference(engine, user, task_id, choice=choice, strength=1, shown_left=side, next_kind=None)
    third = users[2]
    assert next_task(engine, third, built.project, "pairwise") is None
    assert request_extra_votes(engine, SYSTEM, built.project, min_agreement=0.5) == [split]
    view = next_task(engine, third, built.project, "pairwise")
    assert view.task_id == split
    submit_preference(engine, third, split, choice="a", strength=1, shown_left=view.shown_left)
    assert counts(engine, built.project.id) == {agree: 2, split: 3}
    # The cap is max_overlap: no more votes, however low the agreement.
    assert request_extra_votes(engine, SYSTEM, built.project, min_agreement=1.0) == []


def test_inactive_project_and_deactivated_user(engine):
    built = build_project(engine, n_rating=2, overlap=1, active=False)
    (user,) = add_annotators(engine, 1)
    assert next_task(engine, user, built.project, "rating") is None
    other = build_project(engine, n_rating=2, overlap=1, name="open")
    deactivate_user(engine, SYSTEM, user.username)
    with pytest.raises(PermissionDenied):
        next_task(engine, user, other.project, "rating")  # the stale object still says active


def test_bad_kind_is_a_validation_error(sqlite_engine):
    built = build_project(sqlite_engine, n_rating=1)
    (user,) = add_annotators(sqlite_engine, 1)
    with pytest.raises(ValidationError) as err:
        next_task(sqlite_engine, user, built.project, "juggling")
    assert err.value.field == "kind"


def test_extra_tasks_added_later_join_the_queue(sqlite_engine):
    engine = sqlite_engine
    built = build_project(engine, n_rating=1, overlap=1)
    (user,) = add_annotators(engine, 1)
    view = next_task(engine, user, built.project, "rating")
    assert submit_rating(engine, user, view.task_id, scores=SCORES).next_task is None
    (new_id,) = add_tasks(engine, built.project.id, 1, "rating", tag="later")
    assert next_task(engine, user, built.project, "rating").task_id == new_id
    with session_scope(engine) as s:
        assert s.execute(select(func.count()).select_from(Rating)).scalar_one() == 1


@pytest.mark.parametrize("ranked", [False, True])
def test_the_queue_pick_writes_limit_1_into_the_sql(ranked):
    # A bound LIMIT made PostgreSQL plan every prepared call afresh (see assign.LIMIT_ONE).
    from sqlalchemy.dialects import postgresql

    from rlhf.assign import _gold_statement, _held_lease_statement, _pick_statement

    for statement in (_pick_statement("rating", False, True, False, ranked), _gold_statement("pairwise"), _held_lease_statement()):
        sql = str(statement.compile(dialect=postgresql.psycopg.dialect()))
        assert "LIMIT 1" in sql and "LIMIT %(" not in sql
