"""Project statistics from the database (SQLite and PostgreSQL), rows inserted through rlhf.schema."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from rlhf.agreement import AgreementConfig, agreement_report
from rlhf.db import session_scope
from rlhf.roles import SYSTEM, PermissionDenied
from rlhf.schema import AnnotationRevision, Preference, Project, Prompt, Rating, Response, Task, User, utcnow
from rlhf.stats import (
    AGREEMENT_TABLE_COLUMNS,
    CONFUSION_COLUMNS,
    PAIRWISE_TABLE_COLUMNS,
    TREND_COLUMNS,
    StatsConfig,
    dashboard_data,
    project_stats,
)

RUBRIC = [
    {"name": "helpfulness", "question": "?", "min": 1, "max": 7, "labels": {}},
    {"name": "honesty", "question": "?", "min": 1, "max": 5, "labels": {}},
]
MODELS = ["alpha-1b", "beta-7b", "gamma-70b"]
QUALITY = {"alpha-1b": 2, "beta-7b": 4, "gamma-70b": 6}
CONFIG = StatsConfig(agreement=AgreementConfig(n_bootstrap=100, min_overlap=2), leaderboard_bootstrap=50, trend_points=4)


def build(engine, seed: int = 0) -> dict:
    """A project: 12 prompts x 3 models; a rating task per response, pairwise tasks per prompt;
    four annotators rate and compare, an external judge rates too, one rating was edited,
    one rating task is gold."""
    rng = np.random.default_rng(seed)
    start = utcnow() - timedelta(days=10)
    with session_scope(engine, write=True) as session:
        project = Project(name="stats-demo", rubric=RUBRIC)
        session.add(project)
        session.flush()
        users = [User(username=f"ann{i}", role="annotator") for i in range(4)]
        judge = User(username="judge", role="external")
        session.add_all(users + [judge])
        session.flush()
        rating_tasks, pair_tasks = [], []
        for p in range(12):
            prompt = Prompt(project_id=project.id, content_hash=f"p{p}", text=f"prompt {p}")
            session.add(prompt)
            session.flush()
            responses = []
            for model in MODELS:
                response = Response(prompt_id=prompt.id, content_hash=f"{p}-{model}", text="x" * (10 * QUALITY[model] + p), model_name=model)
                session.add(response)
                session.flush()
                responses.append(response)
                gold = p == 0 and model == "gamma-70b"
                task = Task(
                    project_id=project.id, kind="rating", prompt_id=prompt.id, response_a_id=response.id,
                    content_hash=f"r{p}-{model}", is_gold=gold, gold_answer={"scores": {"helpfulness": 6}} if gold else None,
                )
                session.add(task)
                session.flush()
                rating_tasks.append((task, model))
            for i, j in ((0, 1), (1, 2), (0, 2)):
                task = Task(project_id=project.id, kind="pairwise", prompt_id=prompt.id, response_a_id=responses[i].id,
                            response_b_id=responses[j].id, content_hash=f"q{p}-{i}{j}")
                session.add(task)
                session.flush()
                pair_tasks.append((task, MODELS[i], MODELS[j]))
        minute = 0
        for task, model in rating_tasks:
            for user in users + [judge]:
                minute += 1
                helpful = int(np.clip(QUALITY[model] + rng.choice([-1, 0, 0, 1]), 1, 7))
                honest = int(np.clip(QUALITY[model] // 2 + rng.choice([0, 0, 1]), 1, 5))
                session.add(Rating(task_id=task.id, user_id=user.id, scores={"helpfulness": helpful, "honesty": honest},
                                   time_spent_s=float(rng.uniform(5, 20)), created_at=start + timedelta(minutes=minute)))
        for task, model_a, model_b in pair_tasks:
            for user in users:
                minute += 1
                better = "a" if QUALITY[model_a] > QUALITY[model_b] else "b"
                choice = better if rng.random() < 0.8 else rng.choice(["a", "b", "tie", "both_bad"])
                session.add(Preference(task_id=task.id, user_id=user.id, choice=str(choice), strength=1 if choice in ("a", "b") else 0,
                                       shown_left=str(rng.choice(["a", "b"])), time_spent_s=float(rng.uniform(5, 20)),
                                       created_at=start + timedelta(minutes=minute)))
        session.flush()
        edited_task = rating_tasks[1][0]
        session.add(AnnotationRevision(kind="rating", annotation_id=1, task_id=edited_task.id, user_id=users[0].id, revision=1,
                                       payload={"scores": {"helpfulness": 1, "honesty": 1}, "updated_at": (start - timedelta(days=1)).isoformat()},
                                       replaced_at=start + timedelta(minutes=2)))
        ids = {"project": project.id, "users": [u.id for u in users], "judge": judge.id}
    return ids


def long_ratings(engine, dimension: str, include_external: bool = False) -> pd.DataFrame:
    from rlhf.frames import humans_only, rating_frame

    frame = rating_frame(engine, "stats-demo")
    if not include_external:
        frame = humans_only(frame)
    rows = frame[frame["dimension"] == dimension]
    return pd.DataFrame({"item": rows["task_id"], "annotator": rows["annotator_id"], "value": rows["value"]})


def test_project_stats_match_the_library_on_the_same_rows(engine):
    ids = build(engine)
    stats = project_stats(engine, SYSTEM, "stats-demo", CONFIG)
    by_name = {v.name: v for v in stats.variables}
    assert list(by_name) == ["helpfulness", "honesty", "preference"]
    for dimension, scale in (("helpfulness", list(range(1, 8))), ("honesty", list(range(1, 6)))):
        expected = agreement_report(long_ratings(engine, dimension), "ordinal", value_domain=scale, config=CONFIG.agreement)
        got = by_name[dimension].report
        assert got.krippendorff_alpha == pytest.approx(expected.krippendorff_alpha)
        assert got.gwet_ac1 == pytest.approx(expected.gwet_ac1)
        assert got.n_annotators == 4 and got.n_items == 36
        assert by_name[dimension].scale == [float(v) for v in scale]
    # Every item has four human ratings: Fleiss applies.
    assert by_name["helpfulness"].report.fleiss.value is not None
    assert by_name["preference"].report.level == "nominal"
    annotators = stats.annotators.set_index("username")
    assert set(annotators.index) == {"ann0", "ann1", "ann2", "ann3"}
    assert annotators.loc["ann0", "retest_n"] == 2  # the edited rating, both dimensions
    assert annotators.loc["ann0", "gold_n"] == 1
    assert annotators["position_n"].min() > 0
    board = stats.leaderboard.set_index("model")
    assert list(stats.leaderboard["model"]) == ["gamma-70b", "beta-7b", "alpha-1b"]
    assert board.loc["gamma-70b", "elo"] > 1000 > board.loc["alpha-1b", "elo"]
    assert stats.components == {0: sorted(MODELS)}
    summary = stats.summary()
    assert set(summary["dimensions"]) == {"helpfulness", "honesty"}
    assert summary["preferences"]["n_annotators"] == 4
    assert ids["judge"] not in set(stats.annotators["annotator"])


def test_external_labels_count_only_when_asked(engine):
    build(engine)
    stats = project_stats(engine, SYSTEM, "stats-demo", StatsConfig(include_external=True, agreement=AgreementConfig(n_bootstrap=0), leaderboard_bootstrap=0))
    helpfulness = next(v for v in stats.variables if v.name == "helpfulness")
    assert helpfulness.report.n_annotators == 5
    assert "judge" in set(stats.annotators["username"])


def test_dashboard_data_tables(engine):
    build(engine)
    data = dashboard_data(engine, SYSTEM, "stats-demo", CONFIG)
    assert list(data.agreement.columns) == AGREEMENT_TABLE_COLUMNS
    assert list(data.agreement["variable"]) == ["helpfulness", "honesty", "preference"]
    row = data.agreement.set_index("variable").loc["helpfulness"]
    assert row["alpha_low"] <= row["alpha"] <= row["alpha_high"]
    assert list(data.agreement_trend.columns) == TREND_COLUMNS
    trend = data.agreement_trend[data.agreement_trend["variable"] == "helpfulness"]
    assert 1 <= len(trend) <= 4 and trend["n_annotations"].is_monotonic_increasing
    assert trend["as_of"].is_monotonic_increasing
    assert trend["alpha"].iloc[-1] == pytest.approx(row["alpha"])
    assert list(data.pairwise_kappa.columns) == PAIRWISE_TABLE_COLUMNS
    # 4 annotators -> 6 pairs per variable.
    assert data.pairwise_kappa.groupby("variable").size().to_dict() == {"helpfulness": 6, "honesty": 6, "preference": 6}
    assert set(data.pairwise_kappa["username_a"]) <= {"ann0", "ann1", "ann2"}
    assert list(data.confusion.columns) == CONFUSION_COLUMNS
    assert data.confusion["count"].sum() > 0
    assert {"username", "flags", "is_spammer"} <= set(data.annotators.columns)
    assert list(data.leaderboard["model"]) == ["gamma-70b", "beta-7b", "alpha-1b"]


def test_statistics_are_for_admins(engine):
    ids = build(engine)
    with session_scope(engine) as session:
        annotator = session.get(User, ids["users"][0])
    with pytest.raises(PermissionDenied):
        project_stats(engine, annotator, "stats-demo", CONFIG)
    with pytest.raises(PermissionDenied):
        dashboard_data(engine, annotator, "stats-demo", CONFIG)


def test_unknown_project_and_empty_project(engine):
    from rlhf.frames import ProjectNotFound

    with pytest.raises(ProjectNotFound):
        project_stats(engine, SYSTEM, "nope", CONFIG)
    with session_scope(engine, write=True) as session:
        session.add(Project(name="empty"))
    stats = project_stats(engine, SYSTEM, "empty", CONFIG)
    assert stats.variables == [] and stats.annotators.empty and stats.leaderboard.empty
    data = dashboard_data(engine, SYSTEM, "empty", CONFIG)
    assert data.agreement.empty and data.agreement_trend.empty and data.pairwise_kappa.empty
