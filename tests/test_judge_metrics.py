"""Judge metrics: hand-computed small cases, and the simulated judges' planted biases recovered (flags right, no false flag)."""

from __future__ import annotations

import pandas as pd
import pytest

from rlhf.judge.metrics import consensus, human_ceiling, judge_pair_metrics, judge_report, report_tables

VOTES = {
    1: [("ann", "a"), ("bob", "a"), ("cat", "b")],
    2: [("ann", "b"), ("bob", "b"), ("cat", "b")],
    3: [("ann", "a"), ("bob", "b")],
}


def test_consensus_needs_a_unique_mode_and_enough_votes():
    assert consensus(["a", "a", "b"]) == "a"
    assert consensus(["a", "b"]) is None
    assert consensus(["a"]) is None and consensus(["a"], min_votes=1) == "a"


def test_human_ceiling_by_hand():
    ceiling = human_ceiling(VOTES)
    # Task 1: ann vs {a,b} none, bob none, cat vs {a,a}=a miss; task 2: three hits; task 3: one vote left each, none.
    assert ceiling["loo_n"] == 4 and ceiling["loo_consensus_agreement"] == pytest.approx(3 / 4)
    # Pairs: task 1 (1 of 3 agree), task 2 (3 of 3), task 3 (0 of 1) -> 4 / 7.
    assert ceiling["pairs_n"] == 7 and ceiling["human_human_agreement"] == pytest.approx(4 / 7)


def test_judge_pair_metrics_by_hand():
    judgments = pd.DataFrame([
        {"task_id": 1, "status": "parsed", "choice": "a", "order_ab": "a", "order_ba": "a"},
        {"task_id": 2, "status": "inconsistent", "choice": None, "order_ab": "a", "order_ba": "b"},
        {"task_id": 3, "status": "parsed", "choice": "tie", "order_ab": "tie", "order_ba": "tie"},
        {"task_id": 4, "status": "unparsed", "choice": None, "order_ab": None, "order_ba": "b"},
    ])
    lengths = {t: (10, 20, 2 * t, 2 * t + 1) for t in (1, 2, 3, 4)}
    out = judge_pair_metrics(judgments, VOTES, lengths, pd.DataFrame())
    assert out["status"] == {"parsed": 2, "inconsistent": 1, "unparsed": 1}
    assert out["position_consistency"] == pytest.approx(2 / 3)
    assert out["agreement_with_consensus"] == 1.0 and out["consensus_n"] == 1  # task 1 only (task 3 has no consensus)
    assert out["agreement_with_annotators"] == {"ann": {"agreement": 0.5, "n": 2}, "bob": {"agreement": 0.5, "n": 2}, "cat": {"agreement": 0.0, "n": 1}}
    assert out["mean_agreement_with_humans"] == pytest.approx(2 / 5)
    assert out["confusion"]["a"]["a"] == 1 and out["confusion"]["inconsistent"]["b"] == 1
    # Decisive per-order verdicts: task 1 (ab: a = first; ba: a = second), task 2 (ab: a first; ba: b first), task 4 (ba: b first): 4 of 5 first.
    assert out["position_n"] == 5 and out["first_share"] == pytest.approx(4 / 5)
    assert out["flags"] == []  # far fewer than 20 judgments


@pytest.fixture(scope="module")
def judged_sample(tmp_path_factory):
    """The sample project labelled by 6 unbiased simulated people, then judged by three simulated judges."""
    from rlhf.db import init_database, make_engine
    from rlhf.judge.run import JudgeOptions, judge_project
    from rlhf.roles import SYSTEM
    from rlhf.seed import seed_sample_project
    from rlhf.simulation import SimulationConfig, simulate
    from rlhf.simulation.judge import SimulatedJudge

    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('judges') / 'j.db'}")
    init_database(engine)
    seed_sample_project(engine)
    project = "sample"
    simulate(engine, project, SimulationConfig(annotators=6, kind="pairwise", seed=0))
    judges = {"fair": SimulatedJudge(seed=1), "first": SimulatedJudge(position_bias=0.4, seed=2), "longer": SimulatedJudge(length_bias=2.0, seed=3)}
    for name, judge in judges.items():
        judge_project(engine, SYSTEM, project, judge, JudgeOptions(name=name, kinds=("pairwise",)))
    yield engine, project
    engine.dispose()


@pytest.mark.slow
def test_planted_biases_are_recovered_and_the_unbiased_judge_is_not_flagged(judged_sample):
    engine, project = judged_sample
    report = judge_report(engine, project)
    judges = report["judges"]
    assert judges["judge:fair"]["flags"] == []
    assert judges["judge:first"]["flags"] == ["position_bias"]
    assert judges["judge:longer"]["flags"] == ["length_bias"]
    assert judges["judge:first"]["position_consistency"] < judges["judge:fair"]["position_consistency"]
    assert judges["judge:first"]["first_share"] > 0.6 > judges["judge:fair"]["first_share"]
    assert judges["judge:longer"]["length_tilt"] > 0.5
    # An unbiased judge with people's noise agrees with the consensus about as well as the people do.
    assert abs(judges["judge:fair"]["agreement_with_consensus"] - report["human"]["loo_consensus_agreement"]) < 0.15
    tables = report_tables(report)
    assert set(tables["summary"]["judge"]) == {"judge:fair", "judge:first", "judge:longer"}
    assert tables["confusion"].groupby("judge")["count"].sum().gt(0).all()


@pytest.mark.slow
def test_stats_json_and_the_dashboard_show_the_judges(judged_sample, monkeypatch):
    import json

    from typer.testing import CliRunner

    from rlhf.cli import app

    engine, project = judged_sample
    result = CliRunner().invoke(app, ["stats", "--project", project, "--json", "--bootstrap", "0", "--database-url", str(engine.url)])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["judges"]["judges"]["judge:first"]["flags"] == ["position_bias"]
    assert "human_human_agreement" in payload["judges"]["human"]
