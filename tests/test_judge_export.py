"""Export with chosen label sources: `--sources human,judge:NAME`, people winning where both labelled a task."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session, select

from engine_fixtures import add_annotators, build_project
from rlhf.export import ExportError, ExportOptions, export_project
from rlhf.judge.run import JudgeOptions, judge_project
from rlhf.roles import SYSTEM
from rlhf.schema import Preference, User
from rlhf.simulation.judge import SimulatedJudge


@pytest.fixture
def mixed(engine):
    """6 pairs: people chose b on the first 2; an (order-consistent, always-b-or-a) simulated judge labelled all it could."""
    built = build_project(engine, n_pairwise=6, name="mixed")
    people = add_annotators(engine, 2)
    with Session(engine) as session:
        for task_id in built.pairwise_ids[:2]:
            for person in people:
                session.add(Preference(task_id=task_id, user_id=person.id, choice="b", strength=1))
        session.commit()
    judge_project(engine, SYSTEM, "mixed", SimulatedJudge(noise=0.0, seed=1), JudgeOptions(name="sim", kinds=("pairwise",)))
    with Session(engine) as session:
        judge_id = session.exec(select(User.id).where(User.username == "judge:sim")).one()
        judged = set(session.exec(select(Preference.task_id).where(Preference.user_id == judge_id)))
    assert judged - set(built.pairwise_ids[:2]), "the judge labelled some task the people did not"
    return engine, built, judged


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sources_choose_labels_and_people_win(mixed, tmp_path):
    engine, built, judged = mixed
    humans = export_project(engine, SYSTEM, "mixed", format="raw", out=tmp_path / "h.jsonl", options=ExportOptions(sources=["human"], test_size=0))
    assert humans.rows == 4
    both = export_project(engine, SYSTEM, "mixed", format="raw", out=tmp_path / "b.jsonl", options=ExportOptions(sources=["human", "judge:sim"], test_size=0))
    assert both.rows == 4 + len(judged - set(built.pairwise_ids[:2]))  # the judge only where no person labelled
    every = export_project(engine, SYSTEM, "mixed", format="raw", out=tmp_path / "a.jsonl",
                           options=ExportOptions(sources=["human", "judge:sim"], humans_win=False, test_size=0))
    assert every.rows == 4 + len(judged)
    judge_only = export_project(engine, SYSTEM, "mixed", format="raw", out=tmp_path / "j.jsonl", options=ExportOptions(sources=["judge:sim"], test_size=0))
    assert judge_only.rows == len(judged) and judge_only.options["sources"] == ["judge:sim"]


def test_an_unknown_or_human_source_name_is_refused(mixed, tmp_path):
    engine, _, _ = mixed
    with pytest.raises(ExportError, match="judge:nobody"):
        export_project(engine, SYSTEM, "mixed", format="trl", out=tmp_path / "x.jsonl", options=ExportOptions(sources=["human", "judge:nobody"]))
    with pytest.raises(ExportError, match="ann0"):
        export_project(engine, SYSTEM, "mixed", format="trl", out=tmp_path / "x.jsonl", options=ExportOptions(sources=["ann0"]))
    assert not (tmp_path / "x.jsonl").exists()


def test_extra_votes_where_the_judge_contradicts_the_people(engine):
    from rlhf.judge.templates import JudgeTemplates
    from rlhf.judge.uses import request_votes_where_judge_disagrees
    from rlhf.schema import Judgment, Task

    built = build_project(engine, n_pairwise=3, name="votes", overlap=2, max_overlap=3)
    people = add_annotators(engine, 2)
    with Session(engine) as session:
        judge = User(username="judge:j", role="external")
        session.add(judge)
        session.flush()
        for task_id, verdict in zip(built.pairwise_ids, ("a", "b", "a")):
            for person in people:
                session.add(Preference(task_id=task_id, user_id=person.id, choice="b", strength=1))
            session.get(Task, task_id).annotation_count = 2
            session.add(Judgment(project_id=built.project.id, task_id=task_id, user_id=judge.id, kind="pairwise", status="parsed",
                                 verdict={"choice": verdict, "orders": {"ab": verdict, "ba": verdict}}, raw=[],
                                 template_hash=JudgeTemplates().hash_for("pairwise"), model={}))
        session.commit()
    raised = request_votes_where_judge_disagrees(engine, SYSTEM, "votes", "j")
    assert raised == [built.pairwise_ids[0], built.pairwise_ids[2]]
    with Session(engine) as session:
        assert [session.get(Task, t).target_overlap for t in built.pairwise_ids] == [3, None, 3]
    assert request_votes_where_judge_disagrees(engine, SYSTEM, "votes", "j") == []  # now incomplete (and at the cap)
