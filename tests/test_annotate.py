"""Submit and edit, validation, skips and flags, own history, progress, gold answers, reveal vs blind."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from engine_fixtures import add_annotators, build_project
from rlhf.annotate import (
    MAX_COMMENT_CHARS,
    ProjectInactive,
    TaskFull,
    TaskNotFound,
    ValidationError,
    flag_task,
    get_own_annotation,
    list_flags,
    next_task,
    progress,
    recent_annotations,
    resolve_flag,
    reveal_distribution,
    set_gold,
    skip_task,
    submit_preference,
    submit_rating,
    task_view_for_edit,
)
from rlhf.assign import left_side_for
from rlhf.db import session_scope
from rlhf.roles import SYSTEM, PermissionDenied
from rlhf.schema import AnnotationRevision, Preference, Rating, Skip, Task, utcnow

SCORES = {"helpfulness": 5, "honesty": 4, "harmlessness": 7}


def rows(engine, model):
    with session_scope(engine) as s:
        return s.execute(select(model)).scalars().all()


def count_of(engine, task_id):
    with session_scope(engine) as s:
        return s.execute(select(Task.annotation_count).where(Task.id == task_id)).scalar_one()


# ------------------------------------------------------------------------------ submit and edit


def test_resubmit_edits_with_history_and_identical_resubmit_is_a_no_op(engine):
    built = build_project(engine, n_rating=2, overlap=2)
    (user,) = add_annotators(engine, 1)
    view = next_task(engine, user, built.project, "rating")
    first = submit_rating(engine, user, view.task_id, scores=SCORES, tags=["unsafe"], comment="meh", time_spent_s=12.5)
    assert first.created and first.revision == 1 and first.next_task.task_id != view.task_id
    again = submit_rating(engine, user, view.task_id, scores=SCORES, tags=["unsafe"], comment="meh", time_spent_s=12.5)
    assert (again.annotation_id, again.created, again.revision) == (first.annotation_id, False, 1)
    edit = submit_rating(engine, user, view.task_id, scores={**SCORES, "helpfulness": 2}, comment="on reflection")
    assert (edit.annotation_id, edit.created, edit.revision) == (first.annotation_id, False, 2)

    (rating,) = rows(engine, Rating)
    assert rating.scores["helpfulness"] == 2 and rating.comment == "on reflection" and rating.revision == 2
    assert rating.time_spent_s == 12.5  # kept: the edit sent no time
    (history,) = rows(engine, AnnotationRevision)
    assert history.kind == "rating" and history.revision == 1 and history.annotation_id == rating.id
    assert history.payload["scores"] == SCORES and history.payload["tags"] == ["unsafe"] and history.payload["comment"] == "meh"
    assert count_of(engine, view.task_id) == 1


def test_preference_submit_and_edit_keep_the_shown_side(engine):
    built = build_project(engine, n_pairwise=1, overlap=1)
    (user,) = add_annotators(engine, 1)
    view = next_task(engine, user, built.project, "pairwise")
    result = submit_preference(engine, user, view.task_id, choice="b", strength=2, shown_left=view.shown_left, time_spent_s=4)
    assert result.created and result.next_task is None
    edit_view = task_view_for_edit(engine, user, view.task_id)
    assert edit_view.is_revisit and edit_view.shown_left == view.shown_left and edit_view.left == view.left
    assert edit_view.own.choice == "b" and edit_view.own.strength == 2 and edit_view.lease_expires_at is None
    edit = submit_preference(engine, user, view.task_id, choice="tie", strength=0, shown_left=edit_view.shown_left)
    assert edit.revision == 2 and not edit.created
    (pref,) = rows(engine, Preference)
    assert (pref.choice, pref.strength, pref.shown_left) == ("tie", 0, view.shown_left)
    assert rows(engine, AnnotationRevision)[0].payload["choice"] == "b"


def test_submit_without_lease_is_accepted_while_there_is_room(engine):
    built = build_project(engine, n_rating=1, overlap=2)
    alice, bob, carol = add_annotators(engine, 3)
    task_id = built.rating_ids[0]
    assert submit_rating(engine, alice, task_id, scores=SCORES, next_kind=None).created
    next_task(engine, bob, built.project, "rating")  # Bob holds the last slot
    with pytest.raises(TaskFull):
        submit_rating(engine, carol, task_id, scores=SCORES)
    assert submit_rating(engine, bob, task_id, scores=SCORES).created
    assert count_of(engine, task_id) == 2


def test_wrong_kind_and_unknown_task(engine):
    built = build_project(engine, n_rating=1, n_pairwise=1)
    (user,) = add_annotators(engine, 1)
    with pytest.raises(ValidationError) as err:
        submit_rating(engine, user, built.pairwise_ids[0], scores=SCORES)
    assert err.value.field == "task_id"
    with pytest.raises(ValidationError):
        submit_preference(engine, user, built.rating_ids[0], choice="a", strength=1, shown_left="a")
    with pytest.raises(TaskNotFound):
        submit_rating(engine, user, 999_999, scores=SCORES)


def test_inactive_project_refuses_new_annotations_but_allows_edits(sqlite_engine):
    from rlhf.schema import Project

    engine = sqlite_engine
    built = build_project(engine, n_rating=2, overlap=1)
    (user,) = add_annotators(engine, 1)
    first = submit_rating(engine, user, built.rating_ids[0], scores=SCORES, next_kind=None)
    with session_scope(engine, write=True) as s:
        s.get(Project, built.project.id).active = False
    with pytest.raises(ProjectInactive):
        submit_rating(engine, user, built.rating_ids[1], scores=SCORES)
    assert submit_rating(engine, user, built.rating_ids[0], scores={**SCORES, "honesty": 1}).revision == 2
    assert first.created


# ----------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"scores": {"helpfulness": 5, "honesty": 4}}, "scores.harmlessness"),
        ({"scores": {**SCORES, "style": 3}}, "scores.style"),
        ({"scores": {**SCORES, "honesty": 8}}, "scores.honesty"),
        ({"scores": {**SCORES, "honesty": 0}}, "scores.honesty"),
        ({"scores": {**SCORES, "honesty": 4.5}}, "scores.honesty"),
        ({"scores": {**SCORES, "honesty": True}}, "scores.honesty"),
        ({"scores": {**SCORES, "honesty": "4"}}, "scores.honesty"),
        ({"scores": [5, 4, 7]}, "scores"),
        ({"scores": SCORES, "tags": ["nice"]}, "tags"),
        ({"scores": SCORES, "tags": "unsafe"}, "tags"),
        ({"scores": SCORES, "comment": "x" * (MAX_COMMENT_CHARS + 1)}, "comment"),
        ({"scores": SCORES, "comment": 42}, "comment"),
        ({"scores": SCORES, "time_spent_s": -1}, "time_spent_s"),
        ({"scores": SCORES, "time_spent_s": float("nan")}, "time_spent_s"),
    ],
)
def test_rating_validation_names_the_field(sqlite_engine, kwargs, field):
    built = build_project(sqlite_engine, n_rating=1)
    (user,) = add_annotators(sqlite_engine, 1)
    with pytest.raises(ValidationError) as err:
        submit_rating(sqlite_engine, user, built.rating_ids[0], **kwargs)
    assert err.value.field == field
    assert rows(sqlite_engine, Rating) == []


@pytest.mark.parametrize(
    ("choice", "strength", "field"),
    [("c", 1, "choice"), ("a", 0, "strength"), ("a", 3, "strength"), ("tie", 1, "strength"), ("both_bad", 2, "strength"), ("b", True, "strength")],
)
def test_preference_validation_names_the_field(sqlite_engine, choice, strength, field):
    built = build_project(sqlite_engine, n_pairwise=1)
    (user,) = add_annotators(sqlite_engine, 1)
    task_id = built.pairwise_ids[0]
    with pytest.raises(ValidationError) as err:
        submit_preference(sqlite_engine, user, task_id, choice=choice, strength=strength, shown_left=left_side_for(task_id, user.id))
    assert err.value.field == field
    with pytest.raises(ValidationError) as err:
        submit_preference(sqlite_engine, user, task_id, choice="a", strength=1, shown_left="left")
    assert err.value.field == "shown_left"


# ------------------------------------------------------------------------------- skip and flag


def test_skip_is_idempotent_and_refused_after_annotating(engine):
    built = build_project(engine, n_rating=3, overlap=1)
    (user,) = add_annotators(engine, 1)
    view = next_task(engine, user, built.project, "rating")
    following = skip_task(engine, user, view.task_id, "unsure")
    assert following.task_id != view.task_id
    skip_task(engine, user, view.task_id, "unsure")  # again: nothing new
    assert len(rows(engine, Skip)) == 1
    submit_rating(engine, user, following.task_id, scores=SCORES)
    with pytest.raises(ValidationError) as err:
        skip_task(engine, user, following.task_id)
    assert err.value.field == "task_id"
    with pytest.raises(ValidationError):
        skip_task(engine, user, view.task_id, "x" * 501)


def test_flags_are_listed_and_resolved_by_admins(engine):
    built = build_project(engine, n_rating=2)
    (user,) = add_annotators(engine, 1)
    task_id = built.rating_ids[0]
    flag_id = flag_task(engine, user, task_id, "pii", "contains a phone number")
    assert flag_task(engine, user, task_id, "pii", "double click") == flag_id
    other = flag_task(engine, user, built.rating_ids[1], "broken")
    with pytest.raises(ValidationError) as err:
        flag_task(engine, user, task_id, "boring")
    assert err.value.field == "reason"
    with pytest.raises(TaskNotFound):
        flag_task(engine, user, 123456, "pii")
    flags = list_flags(engine, SYSTEM, built.project)
    assert [(f.id, f.reason, f.username) for f in flags] == [(flag_id, "pii", user.username), (other, "broken", user.username)]
    resolved = resolve_flag(engine, SYSTEM, flag_id, "dismissed")
    assert resolved.status == "dismissed" and resolved.resolved_at is not None
    assert [f.id for f in list_flags(engine, SYSTEM, built.project)] == [other]
    assert len(list_flags(engine, SYSTEM, built.project, status=None)) == 2


def test_admin_task_view_shows_models_and_a_on_the_left(sqlite_engine):
    from rlhf.annotate import task_view_for_admin

    built = build_project(sqlite_engine, n_pairwise=1)
    view = task_view_for_admin(sqlite_engine, SYSTEM, built.pairwise_ids[0])
    assert view.shown_left == "a" and view.left.model_name == "model-a" and view.right.model_name == "model-b"
    assert view.lease_expires_at is None and view.own is None
    with pytest.raises(TaskNotFound):
        task_view_for_admin(sqlite_engine, SYSTEM, 424242)


# ------------------------------------------------------------------------------- own history


def test_recent_annotations_and_own_annotation(engine):
    built = build_project(engine, n_rating=3, n_pairwise=2, overlap=2)
    alice, bob = add_annotators(engine, 2)
    t0 = utcnow()
    view = next_task(engine, alice, built.project, "rating", now=t0)
    minute = 0
    while view is not None:
        minute += 1
        view = submit_rating(engine, alice, view.task_id, scores=SCORES, now=t0 + timedelta(minutes=minute)).next_task
    pview = next_task(engine, alice, built.project, "pairwise", now=t0)
    submit_preference(engine, alice, pview.task_id, choice="a", strength=1, shown_left=pview.shown_left, now=t0 + timedelta(minutes=10), next_kind=None)
    submit_rating(engine, bob, built.rating_ids[0], scores={**SCORES, "honesty": 1}, next_kind=None)

    recent = recent_annotations(engine, alice, built.project, limit=3)
    assert [r.kind for r in recent] == ["pairwise", "rating", "rating"]
    assert recent[0].task_id == pview.task_id and recent[0].prompt_excerpt.startswith("Prompt")
    assert all(r.annotation_id for r in recent)
    mine = get_own_annotation(engine, alice, built.rating_ids[0])
    assert mine.scores == SCORES  # never Bob's
    assert get_own_annotation(engine, bob, built.rating_ids[1]) is None
    with pytest.raises(TaskNotFound):
        task_view_for_edit(engine, bob, built.rating_ids[1])


def test_progress_counts_today_total_and_queue(engine):
    built = build_project(engine, n_rating=4, n_pairwise=2, overlap=1)
    (user,) = add_annotators(engine, 1)
    now = utcnow().replace(hour=12)
    yesterday = now - timedelta(days=1)
    submit_rating(engine, user, built.rating_ids[0], scores=SCORES, now=yesterday, next_kind=None)
    submit_rating(engine, user, built.rating_ids[1], scores=SCORES, now=now, next_kind=None)
    skip_task(engine, user, built.rating_ids[2], now=now)
    p = progress(engine, user, built.project, now=now)
    assert (p.today, p.total, p.left_in_queue) == (1, 2, 1 + 2)
    assert progress(engine, user, built.project, kind="pairwise", now=now).left_in_queue == 2


# ------------------------------------------------------------------------------------- gold


def test_set_gold_validates_and_moves_the_task_out_of_the_regular_queue(engine):
    built = build_project(engine, n_rating=1, n_pairwise=1, overlap=1)
    (user,) = add_annotators(engine, 1)
    with pytest.raises(ValidationError) as err:
        set_gold(engine, SYSTEM, built.rating_ids[0], {"scores": {"helpfulness": 9}})
    assert err.value.field == "scores.helpfulness"
    with pytest.raises(ValidationError):
        set_gold(engine, SYSTEM, built.pairwise_ids[0], {"choice": "left"})
    set_gold(engine, SYSTEM, built.rating_ids[0], {"scores": {"helpfulness": 7}})
    set_gold(engine, SYSTEM, built.pairwise_ids[0], {"choice": "a", "strength": 2})
    with session_scope(engine) as s:
        gold = dict(s.execute(select(Task.id, Task.gold_answer).where(Task.is_gold)).all())
    assert gold == {built.rating_ids[0]: {"scores": {"helpfulness": 7}}, built.pairwise_ids[0]: {"choice": "a", "strength": 2}}
    # gold_rate is 0: gold tasks are never handed out as regular work
    assert next_task(engine, user, built.project, "rating") is None
    set_gold(engine, SYSTEM, built.rating_ids[0], None)
    assert next_task(engine, user, built.project, "rating").task_id == built.rating_ids[0]


# ---------------------------------------------------------------------------- reveal vs blind


def test_blind_project_never_reveals(engine):
    built = build_project(engine, n_rating=1, overlap=2)
    alice, bob = add_annotators(engine, 2)
    task_id = built.rating_ids[0]
    submit_rating(engine, alice, task_id, scores=SCORES, next_kind=None)
    submit_rating(engine, bob, task_id, scores={**SCORES, "honesty": 1}, next_kind=None)
    with pytest.raises(PermissionDenied):
        reveal_distribution(engine, alice, task_id)
    view = task_view_for_edit(engine, alice, task_id)
    assert view.own.scores == SCORES and view.response.model_name is None


def test_reveal_after_submit(engine):
    built = build_project(engine, n_pairwise=1, overlap=3, visibility="reveal_after_submit")
    users = add_annotators(engine, 3)
    task_id = built.pairwise_ids[0]
    with pytest.raises(PermissionDenied):
        reveal_distribution(engine, users[0], task_id)  # not submitted yet
    for user, choice in zip(users, ["a", "a", "tie"]):
        side = left_side_for(task_id, user.id)
        submit_preference(engine, user, task_id, choice=choice, strength=1 if choice == "a" else 0, shown_left=side, next_kind=None)
    dist = reveal_distribution(engine, users[0], task_id)
    assert dist.n == 3 and dist.choices == {"a": 2, "b": 0, "tie": 1, "both_bad": 0}
    # On a revisit in a reveal project, model names may be shown.
    view = task_view_for_edit(engine, users[0], task_id)
    assert {view.left.model_name, view.right.model_name} == {"model-a", "model-b"}


def test_reveal_on_gold_shows_no_more_than_a_regular_task(sqlite_engine):
    engine = sqlite_engine
    built = build_project(engine, n_gold_rating=1, overlap=2, gold_rate=0.5, visibility="reveal_after_submit")
    users = add_annotators(engine, 5)
    (gold_id,) = built.gold_ids
    for user in users:
        submit_rating(engine, user, gold_id, scores=SCORES, next_kind=None)
    dist = reveal_distribution(engine, users[-1], gold_id)
    assert dist.n == 2 and dist.scores["helpfulness"] == {5: 2} and dist.tags == {}


def test_annotator_reads_contain_only_their_own_labels(sqlite_engine):
    engine = sqlite_engine
    built = build_project(engine, n_rating=1, overlap=2)
    alice, bob = add_annotators(engine, 2)
    task_id = built.rating_ids[0]
    submit_rating(engine, bob, task_id, scores={"helpfulness": 1, "honesty": 1, "harmlessness": 1}, comment="bob's secret", next_kind=None)
    view = next_task(engine, alice, built.project, "rating")
    assert view.task_id == task_id and view.own is None and "secret" not in repr(view)
    result = submit_rating(engine, alice, task_id, scores=SCORES)
    assert "secret" not in repr(result)
    assert "secret" not in repr(recent_annotations(engine, alice, built.project))
    with session_scope(engine) as s:
        assert s.execute(select(func.count()).select_from(Rating)).scalar_one() == 2
