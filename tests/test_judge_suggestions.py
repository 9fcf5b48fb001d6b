"""Judge suggestions: shown only where the project switched them on, recorded per annotation, and anchoring measured from the record."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select

from engine_fixtures import add_annotators, build_project
from rlhf.annotate import ValidationError, submit_preference
from rlhf.assign import left_side_for
from rlhf.judge.suggestions import JudgeSuggestion, anchoring, suggestion_text, task_suggestion
from rlhf.projects import update_project
from rlhf.roles import SYSTEM
from rlhf.schema import Judgment, Preference, User


def _judge(engine, project_id: int, task_ids, choice: str = "a", name: str = "judge:j") -> None:
    with Session(engine) as session:
        judge = session.exec(select(User).where(User.username == name)).first() or User(username=name, role="external")
        session.add(judge)
        session.flush()
        for task_id in task_ids:
            session.add(Judgment(project_id=project_id, task_id=task_id, user_id=judge.id, kind="pairwise", status="parsed",
                                 verdict={"choice": choice, "orders": {"ab": choice, "ba": choice}}, raw=[], template_hash="", model={}))
        session.commit()


def test_no_suggestion_until_the_project_switches_it_on(engine):
    built = build_project(engine, n_pairwise=2, name="s")
    _judge(engine, built.project.id, built.pairwise_ids[:1])
    assert task_suggestion(engine, built.project.id, built.pairwise_ids[0]) is None
    update_project(engine, SYSTEM, "s", judge_uses={"suggestions": True})
    assert task_suggestion(engine, built.project.id, built.pairwise_ids[0]) == JudgeSuggestion("judge:j", "pairwise", choice="a")
    assert task_suggestion(engine, built.project.id, built.pairwise_ids[1]) is None  # no verdict yet


def test_the_text_is_in_the_annotators_display_terms():
    said = JudgeSuggestion("judge:j", "pairwise", choice="a")
    assert suggestion_text(said, "a") == "Judge suggestion (judge:j): response A is better."
    assert suggestion_text(said, "b") == "Judge suggestion (judge:j): response B is better."  # task a shown on the right
    assert suggestion_text(JudgeSuggestion("judge:j", "pairwise", choice="tie"), "b") == "Judge suggestion (judge:j): a tie."
    assert suggestion_text(JudgeSuggestion("judge:j", "rating", scores={"helpful": 5, "honest": 4})) == "Judge suggestion (judge:j): helpful 5, honest 4."


def test_suggestion_shown_is_recorded_on_creation_kept_on_edit_and_checked(engine):
    built = build_project(engine, n_pairwise=2, name="s", overlap=2, max_overlap=2)
    person = add_annotators(engine, 1)[0]
    task = built.pairwise_ids[0]
    side = left_side_for(task, person.id)
    with pytest.raises(ValidationError, match="suggestion_shown"):
        submit_preference(engine, person, task, choice="a", strength=1, shown_left=side, suggestion_shown="yes")
    submit_preference(engine, person, task, choice="a", strength=1, shown_left=side, suggestion_shown=True)
    submit_preference(engine, person, task, choice="b", strength=1, shown_left=side, suggestion_shown=False)  # an edit
    with Session(engine) as session:
        stored = session.exec(select(Preference).where(Preference.user_id == person.id)).all()
    assert [(p.choice, p.suggestion_shown) for p in stored] == [("b", True)]  # what was on screen the first time


def test_anchoring_splits_agreement_with_the_judge_by_shown(engine):
    built = build_project(engine, n_pairwise=4, name="s", overlap=2, max_overlap=2)
    people = add_annotators(engine, 2)
    _judge(engine, built.project.id, built.pairwise_ids, choice="a")
    with Session(engine) as session:
        # shown: 3 of 4 follow the judge; not shown: 1 of 4 agree (None counts as not shown)
        for task_id, (first, second) in zip(built.pairwise_ids, (("a", "a"), ("a", "b"), ("b", "b"), ("a", "b"))):
            shown = task_id in built.pairwise_ids[:2]
            session.add(Preference(task_id=task_id, user_id=people[0].id, choice=first, strength=1, suggestion_shown=shown))
            session.add(Preference(task_id=task_id, user_id=people[1].id, choice=second, strength=1, suggestion_shown=True if shown else None))
        session.commit()
    result = anchoring(engine, built.project.id)
    assert result == {"shown": {"n": 4, "agree_with_judge": 0.75}, "not_shown": {"n": 4, "agree_with_judge": 0.25}, "difference": 0.5}
    from rlhf.judge.metrics import judge_report, report_tables

    report = judge_report(engine, "s")
    assert report["anchoring"] == result
    assert report_tables(report)["anchoring"].to_dict("records") == [
        {"annotations": "shown", "n": 4, "agree_with_judge": 0.75}, {"annotations": "not shown", "n": 4, "agree_with_judge": 0.25}]
