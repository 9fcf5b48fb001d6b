"""Export with chosen label sources: `--sources human,judge:NAME`, people winning where both labelled a task."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session, select

from engine_fixtures import add_annotators, build_project
from rlhf.export import ExportError, ExportOptions, export_project
from rlhf.judge.run import JudgeError, JudgeOptions, judge_project
from rlhf.projects import update_project
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
    update_project(engine, SYSTEM, "mixed", judge_uses={"export": True})
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


def test_export_with_a_judge_source_is_refused_until_the_project_switches_it_on(mixed, tmp_path):
    engine, _, _ = mixed
    update_project(engine, SYSTEM, "mixed", judge_uses={"export": False})
    with pytest.raises(ExportError, match=r"project 'mixed': export with judge sources \(judge:sim\) is off.*--judge-export"):
        export_project(engine, SYSTEM, "mixed", format="raw", out=tmp_path / "j.jsonl", options=ExportOptions(sources=["human", "judge:sim"]))
    assert not (tmp_path / "j.jsonl").exists()
    humans = export_project(engine, SYSTEM, "mixed", format="raw", out=tmp_path / "h.jsonl", options=ExportOptions(sources=["human"], test_size=0))
    assert humans.rows == 4  # people's labels alone need no switch


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
    with pytest.raises(JudgeError, match=r"project 'votes': extra votes where judge judge:j disagrees .* is off.*--judge-votes"):
        request_votes_where_judge_disagrees(engine, SYSTEM, "votes", "j")
    with Session(engine) as session:
        assert [session.get(Task, t).target_overlap for t in built.pairwise_ids] == [None, None, None]  # the refusal changed nothing
    update_project(engine, SYSTEM, "votes", judge_uses={"votes": True})
    raised = request_votes_where_judge_disagrees(engine, SYSTEM, "votes", "j")
    assert raised == [built.pairwise_ids[0], built.pairwise_ids[2]]
    with Session(engine) as session:
        assert [session.get(Task, t).target_overlap for t in built.pairwise_ids] == [3, None, 3]
    assert request_votes_where_judge_disagrees(engine, SYSTEM, "votes", "j") == []  # now incomplete (and at the cap)


def test_project_update_flags_switch_each_judge_use(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rlhf.cli import app

    runner = CliRunner()
    monkeypatch.setenv("RLHF_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    assert runner.invoke(app, ["init"]).exit_code == 0
    assert runner.invoke(app, ["project", "create", "demo"]).exit_code == 0
    shown = json.loads(runner.invoke(app, ["project", "show", "demo"]).stdout)
    assert shown["judge_uses"] == {"export": False, "votes": False, "suggestions": False}
    updated = runner.invoke(app, ["project", "update", "demo", "--judge-export", "--judge-suggestions"])
    assert updated.exit_code == 0, updated.output
    assert json.loads(updated.stdout)["judge_uses"] == {"export": True, "votes": False, "suggestions": True}
    updated = runner.invoke(app, ["project", "update", "demo", "--no-judge-export", "--judge-votes"])
    assert json.loads(updated.stdout)["judge_uses"] == {"export": False, "votes": True, "suggestions": True}
    refused = runner.invoke(app, ["judge-votes", "--project", "demo", "--judge", "nobody"])
    assert refused.exit_code == 0, refused.output  # switched on: no judge verdicts, nothing to raise
