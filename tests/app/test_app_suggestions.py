"""Compare and Rate show a judge's suggestion only where the project switched suggestions on; each annotation records whether it was shown."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from apphelpers import go, no_exception, rows, signed_in_app, texts
from labeling_app import flow

from rlhf.projects import update_project
from rlhf.roles import SYSTEM
from rlhf.schema import Judgment, Preference, Rating, Task, User


def judge_every_task(app_env) -> None:
    """A parsed verdict from judge:sim on every task: pairs say a (task terms), ratings score every dimension 3."""
    with Session(app_env.engine) as session:
        judge = User(username="judge:sim", role="external")
        session.add(judge)
        session.flush()
        for task in session.exec(select(Task).where(Task.project_id == app_env.project_id)):
            if task.kind == "pairwise":
                verdict = {"choice": "a", "orders": {"ab": "a", "ba": "a"}}
            else:
                verdict = {"scores": {"quality": 3}}
            session.add(Judgment(project_id=app_env.project_id, task_id=task.id, user_id=judge.id, kind=task.kind, status="parsed",
                                 verdict=verdict, raw=[], template_hash="", model={}))
        session.commit()


def page_text(at) -> str:
    return " ".join(texts(at)) + " ".join(e.value for e in at.info)


@pytest.mark.parametrize("on", [False, True])
def test_compare_shows_the_suggestion_in_display_terms_and_records_it(app_env, on):
    judge_every_task(app_env)
    if on:
        update_project(app_env.engine, SYSTEM, app_env.project_id, judge_uses={"suggestions": True})
    at = go(signed_in_app(app_env.annotator, app_env.project_id), "compare.py")
    no_exception(at)
    view = at.session_state[flow.slot_key("pairwise")].task
    shown_a = "A" if view.shown_left == "a" else "B"  # the task's response a is shown on the left when shown_left is a
    assert (f"Judge suggestion (judge:sim): response {shown_a} is better." in page_text(at)) is on
    at = at.button(key="compare.choice.tie").click().run()
    at = at.button(key="compare.submit").click().run()
    no_exception(at)
    stored = rows(app_env.engine, Preference.__table__)
    assert [p.suggestion_shown for p in stored] == [on]


@pytest.mark.parametrize("on", [False, True])
def test_rate_shows_the_suggestion_and_records_it(app_env, on):
    judge_every_task(app_env)
    if on:
        update_project(app_env.engine, SYSTEM, app_env.project_id, judge_uses={"suggestions": True})
    at = go(signed_in_app(app_env.annotator, app_env.project_id), "rate.py")
    no_exception(at)
    assert ("Judge suggestion (judge:sim): quality 3." in page_text(at)) is on
    for _ in at.session_state[flow.slot_key("rating")].task.rubric:
        at = at.button(key="rate.key.4").click().run()
    at = at.button(key="rate.submit").click().run()
    no_exception(at)
    assert [r.suggestion_shown for r in rows(app_env.engine, Rating.__table__)] == [on]
