"""The Training page and reward objectives: the form offers objective and dimension weights; "Compare reward models"
shows accuracy by pair strength and the correlation with held-out ratings beside their ceilings."""

from __future__ import annotations

import pytest

from apphelpers import no_exception
from rlhf.jobs import ArtifactRecord, list_jobs
from test_training import admin_on_training, frame_with, record_artifacts, submit_button, tp

REGRESSION_METRICS = {
    "held_out": {
        "accuracy": 0.74, "human_agreement": 0.8, "pairs": 50,
        "by_strength": {"much_better": {"pairs": 20, "accuracy": 0.9, "human_agreement": 0.92}, "better": {"pairs": 30, "accuracy": 0.63, "human_agreement": 0.72}},
        "ratings": {
            "responses": 40,
            "overall": {"pearson": 0.61, "ceiling": 0.7},
            "dimensions": {"helpfulness": {"pearson": 0.64, "ceiling": 0.72}, "honesty": {"pearson": 0.5, "ceiling": None}},
        },
    }
}


def test_evaluation_rows_beside_their_ceilings():
    pairwise = {"held_out": {"accuracy": 0.7, "human_agreement": 0.8, "pairs": 50, "by_strength": {"better": {"pairs": 30, "accuracy": 0.6, "human_agreement": 0.72}}}}
    rows = tp.comparison_rows([("R", REGRESSION_METRICS), ("P", pairwise)])
    table = {r["metric"]: (r["R"], r["P"]) for r in rows}
    assert table["Accuracy, much better pairs"] == (0.9, None)
    assert table["Accuracy, better pairs"] == (0.63, 0.6)
    assert table["Human agreement, better pairs"] == (0.72, 0.72)
    assert table["Correlation with held-out ratings (reward)"] == (0.61, None)
    assert table["Ratings ceiling (one annotator vs the others)"] == (0.7, None)
    assert table["Correlation, helpfulness"] == (0.64, None) and table["Ceiling, helpfulness"] == (0.72, None)
    assert "Ceiling, honesty" not in table  # no model has it
    only_pairs = tp.comparison_rows([("P", {"held_out": {"accuracy": 0.7}})])
    assert not any(r["metric"].startswith(("Accuracy,", "Correlation")) for r in only_pairs)


def test_compare_reward_models_shows_ratings_correlation(app_env):
    record_artifacts(
        app_env,
        [
            ArtifactRecord(kind="reward_model", name="rm-pairwise", metrics={"held_out": {"accuracy": 0.7, "human_agreement": 0.8, "pairs": 50}}),
            ArtifactRecord(kind="reward_model", name="rm-regression", metrics=REGRESSION_METRICS),
        ],
    )
    at = admin_on_training(app_env)
    no_exception(at)
    table = frame_with(at, "metric").set_index("metric")
    assert table.loc["Correlation, helpfulness"].dropna().tolist() == [0.64]
    assert table.loc["Accuracy, much better pairs"].dropna().tolist() == [0.9]


def test_the_form_offers_objective_and_weights(app_env):
    at = admin_on_training(app_env)
    objective = at.selectbox(key=tp.field_key("train-reward", "objective"))
    assert objective.options == ["pairwise", "regression", "joint"]
    objective.set_value("joint")
    at.text_area(key=tp.field_key("train-reward", "dimension_weights")).input('{"helpfulness": 2, "honesty": 1}')
    submit_button(at).click().run()
    no_exception(at)
    [job] = list_jobs(app_env.engine, app_env.admin, kind="train-reward")
    assert job.params["objective"] == "joint" and job.params["dimension_weights"] == {"helpfulness": 2, "honesty": 1}


def test_weights_that_do_not_sum_positive_are_refused_by_the_form(app_env):
    at = admin_on_training(app_env)
    at.selectbox(key=tp.field_key("train-reward", "objective")).set_value("regression")
    at.text_area(key=tp.field_key("train-reward", "dimension_weights")).input('{"helpfulness": 0}')
    submit_button(at).click().run()
    no_exception(at)
    assert any("must sum to a positive number" in e.value for e in at.error)
    assert list_jobs(app_env.engine, app_env.admin, kind="train-reward") == []
