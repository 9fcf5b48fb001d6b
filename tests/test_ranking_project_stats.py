"""Ranking statistics of a stored project: `project_stats`, `rlhf stats --json`, the shared leaderboard, gold tau, the dashboard tab."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from engine_fixtures import add_annotators, create_project
from ranking_fixtures import add_ranking_tasks
from rlhf.annotate import set_gold, submit_ranking
from rlhf.roles import SYSTEM
from rlhf.stats import StatsConfig, project_stats

# card j of every task is model-j; the truth is model-3 > model-2 > model-1 > model-0 (longer is better here)
TRUTH = [[3], [2], [1], [0]]


def seeded(engine, n_tasks=6):
    project = create_project(engine, name="ranked", overlap=3, rank_k_min=4, rank_k_max=4)
    ids = add_ranking_tasks(engine, project.id, n_tasks, k=4)
    users = add_annotators(engine, 3)
    for t, task_id in enumerate(ids):
        for u, user in enumerate(users):
            order = TRUTH if u < 2 else ([[2], [3], [1], [0]] if t % 2 else [[3], [1, 2], [0]])
            submit_ranking(engine, user, task_id, ranking=order, next_kind=None)
    return project, ids, users


def test_project_stats_report_rankings_and_one_leaderboard(engine):
    project, ids, users = seeded(engine)
    result = project_stats(engine, SYSTEM, project.id, StatsConfig(leaderboard_bootstrap=0))
    rankings = result.rankings
    assert rankings.n_rankings == 18 and rankings.n_tasks == 6
    assert 0.5 < rankings.kendalls_w < 1.0 and 0.5 < rankings.pair_agreement < 1.0
    assert list(rankings.leaderboard["model"]) == ["model-3", "model-2", "model-1", "model-0"]
    # the Bradley–Terry leaderboard counts the pairs the rankings imply
    assert set(result.leaderboard["model"]) == {f"model-{j}" for j in range(4)}
    assert result.leaderboard.sort_values("rank")["model"].iloc[0] == "model-3"
    table = rankings.annotators.set_index("annotator")
    assert table.loc[users[0].id, "loo_tau"] > table.loc[users[2].id, "loo_tau"]
    summary = result.summary()["rankings"]
    assert summary["n_rankings"] == 18 and len(summary["annotators"]) == 3


def test_gold_rankings_score_annotators_by_tau(engine):
    project, ids, users = seeded(engine, n_tasks=2)
    set_gold(engine, SYSTEM, ids[0], {"ranking": TRUTH})
    result = project_stats(engine, SYSTEM, project.id, StatsConfig(leaderboard_bootstrap=0, include_gold=False))
    table = result.rankings.annotators.set_index("annotator")
    assert table.loc[users[0].id, "gold_tau"] == pytest.approx(1.0)
    assert table.loc[users[2].id, "gold_tau"] < 1.0
    assert result.rankings.n_tasks == 1  # the gold task is left out of agreement


def test_cli_stats_json_and_text_carry_rankings(sqlite_engine, monkeypatch):
    from rlhf.cli import app

    seeded(sqlite_engine)
    url = str(sqlite_engine.url)
    runner = CliRunner()
    result = runner.invoke(app, ["stats", "--project", "ranked", "--json", "--bootstrap", "0", "--database-url", url])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["rankings"]["n_rankings"] == 18 and payload["rankings"]["kendalls_w"] is not None
    text = runner.invoke(app, ["stats", "--project", "ranked", "--bootstrap", "0", "--database-url", url])
    assert text.exit_code == 0 and "Plackett–Luce leaderboard" in text.output and "kendalls_w" in text.output
