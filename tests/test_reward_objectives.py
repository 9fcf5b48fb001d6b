"""Regression and joint reward objectives on the tiny model: they learn, score per dimension, feed PPO, and refuse bad input early."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rlhf.reward import RewardConfig, RewardDataError, RewardModel, train_reward_model
from rlhf.reward.heldout import accuracy_by_strength, leave_one_out_ceiling, weighted_target
from rlhf.reward.objectives import ObjectiveError, resolve_weights
from rlhf.reward.ratings_data import SHRINK, normalise, read_ratings
from test_reward_train import FILLER, easy_preferences, tiny_config

GOOD, BAD = "good helpful honest", "bad unsafe worse"
DIMENSIONS = ("helpfulness", "honesty")
ANNOTATORS = {"ann-lenient": 2, "ann-harsh": -2, "ann-plain": 0}
"""Each annotator's offset on the 1–7 scale: the same response gets 6 from one and 2 from another."""


def raw_ratings(path: Path, n: int = 36, seed: int = 0, test_every: int = 6) -> Path:
    """A raw-export-shaped JSONL: each response rated by every annotator; good responses 5 (+ offset), bad 3 (+ offset)
    on helpfulness; honesty says the same, one point apart."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = " ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 8)))
        for good in (True, False):
            response = " ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 6))) + " " + (GOOD if good else BAD)
            for annotator, offset in ANNOTATORS.items():
                rows.append(
                    {
                        "kind": "rating", "annotator": annotator, "prompt": prompt, "response_a": response,
                        "score_helpfulness": (5 if good else 3) + offset, "score_honesty": (6 if good else 4) + offset,
                        "split": "test" if i % test_every == 0 else "train",
                    }
                )
    rows.append({"kind": "preference", "annotator": "ann-plain", "prompt": "x", "response_a": "y", "split": "train"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def regression(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("regression")
    ratings = raw_ratings(root / "raw.jsonl")
    pairs = easy_preferences(root / "pairs.jsonl", n=24)
    config = tiny_config(tiny_model_dir, objective="regression", dimension_weights={"helpfulness": 3.0, "honesty": 1.0}, max_steps=30)
    result = train_reward_model(config, root / "rm", data=pairs, ratings=ratings)
    return {"root": root, "ratings": ratings, "pairs": pairs, "result": result}


def test_regression_learns_each_dimension_and_ranks_held_out_pairs(regression):
    metrics = regression["result"].metrics
    assert metrics["objective"] == "regression" and metrics["train"]["last_loss"] < 0.5 * metrics["train"]["first_loss"]
    ratings = metrics["held_out"]["ratings"]
    assert set(ratings["dimensions"]) == set(DIMENSIONS)
    assert all(ratings["dimensions"][d]["pearson"] > 0.9 for d in DIMENSIONS)
    # every annotator's normalised score agrees with the others': the ceiling is high
    assert ratings["overall"]["ceiling"] > 0.9
    assert metrics["held_out"]["pairs"] == 4 and metrics["held_out"]["accuracy"] == 1.0
    assert metrics["dimensions"] == {"helpfulness": 0.75, "honesty": 0.25}
    assert metrics["data"]["rating_normalization"] == "annotator"


def test_scalar_is_the_weighted_sum_and_dimensions_read_in_rubric_points(regression):
    model = RewardModel.load(regression["root"] / "rm", device="cpu")
    assert model.config.dimensions == list(DIMENSIONS) and model.config.dimension_weights == [0.75, 0.25]
    prompts, responses = ["hello", "hello"], [f"the cat {GOOD}", f"the cat {BAD}"]
    raw = model.score(prompts, responses, normalize=False)
    heads = model.model  # the PEFT classifier: heads · weights is the raw scalar
    from rlhf.reward.scorer import raw_outputs

    outputs = raw_outputs(heads, model.encode(prompts, responses), pad_id=model.tokenizer.pad_token_id, batch_size=4, device="cpu")
    assert torch.allclose(raw, outputs @ torch.tensor([0.75, 0.25]), atol=1e-5)
    points = model.score_dimensions(prompts, responses)
    assert points["helpfulness"][0] > points["helpfulness"][1] and points["honesty"][0] > points["honesty"][1]
    # the annotators' mean is 5 (good) and 3 (bad) on helpfulness: predictions land near them
    assert 4.0 < points["helpfulness"][0] < 6.0 and 2.0 < points["helpfulness"][1] < 4.0
    assert model.score_head_weight().shape == (1, model.model.config.hidden_size)
    assert torch.allclose(model.score_head_weight(), torch.tensor([[0.75, 0.25]]) @ model.model.base_model.model.score.modules_to_save["default"].weight)


def test_ppo_reward_uses_the_scalar(regression):
    from rlhf.ppo.reward import RewardDirectory, load_reward_function

    directory = RewardDirectory(regression["root"] / "rm")
    reward = load_reward_function(directory, device="cpu")
    scores = reward.score(["hello"], [f"the cat {GOOD}"])
    model = RewardModel.load(regression["root"] / "rm", device="cpu")
    assert scores.shape == (1,) and torch.allclose(scores, model.score(["hello"], [f"the cat {GOOD}"]))
    assert torch.allclose(directory.score_head_weight(), model.score_head_weight())


def test_cli_score_reports_each_dimension(regression, tmp_path):
    from typer.testing import CliRunner

    from rlhf.cli import app

    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"prompt": "hello", "response": f"a {GOOD}"}) + "\n")
    out = tmp_path / "scored.jsonl"
    result = CliRunner().invoke(app, ["score", "--reward", str(regression["root"] / "rm"), "--data", str(rows), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    record = json.loads(out.read_text().splitlines()[0])
    assert {"score", "helpfulness", "honesty"} <= set(record) and record["helpfulness"] > record["honesty"] - 3


def test_joint_trains_on_both_kinds(tiny_model_dir, tmp_path, regression):
    config = tiny_config(tiny_model_dir, objective="joint", max_steps=12)
    result = train_reward_model(config, tmp_path / "rm", data=regression["pairs"], ratings=regression["ratings"])
    history_keys = set(result.metrics["held_out"]) | {"ratings"}
    assert "ratings" in history_keys and result.metrics["data"]["train_pairs"] > 0 and result.metrics["data"]["train_rows"] > 0
    assert result.metrics["held_out"]["accuracy"] >= 0.75
    assert result.model_config.dimension_weights == [0.5, 0.5]


def test_joint_on_pairs_alone(tiny_model_dir, tmp_path, regression):
    config = tiny_config(tiny_model_dir, objective="joint", max_steps=12)
    result = train_reward_model(config, tmp_path / "rm", data=regression["pairs"])
    assert result.model_config.dimensions == ["reward"] and result.metrics["held_out"]["accuracy"] >= 0.75


def test_annotator_offsets_absorb_lenient_and_harsh_raters(tiny_model_dir, tmp_path, regression):
    config = tiny_config(tiny_model_dir, objective="regression", annotator_offsets=True, max_steps=30)
    result = train_reward_model(config, tmp_path / "rm", data=regression["pairs"], ratings=regression["ratings"])
    assert result.metrics["data"]["rating_normalization"] == "offsets"
    assert result.metrics["held_out"]["ratings"]["overall"]["pearson"] > 0.9


@pytest.mark.parametrize(
    "overrides, data, message",
    [
        ({"objective": "regression"}, "pairs", "needs ratings"),
        ({"objective": "joint"}, None, "neither was given"),
        ({"objective": "regression", "dimensions": ["helpfulness", "verbosity"]}, "both", "no ratings for dimension(s) 'verbosity'"),
        ({"objective": "regression", "dimension_weights": {"helpfulness": 1.0, "honesty": -1.0}}, "both", "must sum to a positive number"),
        ({"objective": "regression", "dimension_weights": {"verbosity": 1.0}}, "both", "'verbosity' not among the dimensions"),
        ({"objective": "listwise-ish"}, "both", "objective 'listwise-ish'"),
    ],
)
def test_bad_input_is_refused_before_training(tiny_model_dir, tmp_path, regression, monkeypatch, overrides, data, message):
    import rlhf.reward.objectives as objectives

    monkeypatch.setattr(objectives, "fit", lambda *a, **k: pytest.fail("training started"))
    paths = {"pairs": (regression["pairs"], None), "both": (regression["pairs"], regression["ratings"]), None: (None, None)}[data]
    with pytest.raises((ValueError, ObjectiveError, RewardDataError), match=message.replace("(", r"\(").replace(")", r"\)")):
        train_reward_model(tiny_config(tiny_model_dir, **overrides), tmp_path / "rm", data=paths[0], ratings=paths[1])
    assert not (tmp_path / "rm").exists()


def test_ratings_export_without_annotators(tmp_path):
    frame = pd.DataFrame({"prompt": ["p1", "p1", "p2"], "response": ["a", "b", "c"], "mean_helpfulness": [6.0, 2.0, 4.0], "split": ["train"] * 3})
    path = tmp_path / "ratings.jsonl"
    frame.to_json(path, orient="records", lines=True)
    data = read_ratings(path, dimensions=None, eval_fraction=0.0, seed=0)
    assert data.normalization == "dimension" and data.dimensions == ["helpfulness"]
    assert data.scale["helpfulness"] == pytest.approx({"mean": 4.0, "std": np.std([6, 2, 4])})
    assert data.targets(data.train)[:, 0] == pytest.approx(np.array([2, -2, 0]) / np.std([6, 2, 4]))


def test_annotator_normalisation_is_shrunk_towards_the_dimension():
    # one dimension; annotator x rates 7 and 5, annotator y rates 3 once; overall mean 5, std sqrt(8/3)
    values = np.array([[7.0], [5.0], [3.0]])
    annotators = np.array(["x", "x", "y"])
    z, scale = normalise(values, annotators, np.ones(3, bool), "annotator", ["d"])
    mean, var = 5.0, 8.0 / 3.0
    mu_x = (12 + SHRINK * mean) / (2 + SHRINK)
    sigma_x = np.sqrt(((7 - mu_x) ** 2 + (5 - mu_x) ** 2 + SHRINK * var) / (2 + SHRINK))
    mu_y = (3 + SHRINK * mean) / (1 + SHRINK)
    sigma_y = np.sqrt(((3 - mu_y) ** 2 + SHRINK * var) / (1 + SHRINK))
    assert z[:, 0] == pytest.approx([(7 - mu_x) / sigma_x, (5 - mu_x) / sigma_x, (3 - mu_y) / sigma_y])
    assert scale == {"d": pytest.approx({"mean": 5.0, "std": np.sqrt(var)})}


def test_weights_resolution():
    assert resolve_weights(["a", "b"], None) == [0.5, 0.5]
    assert resolve_weights(["a", "b"], {"a": 3}) == [1.0, 0.0]
    assert resolve_weights(["a", "b"], None, {"a": 1, "b": 3, "c": 9}) == [0.25, 0.75]
    with pytest.raises(ObjectiveError, match="sum to a positive"):
        resolve_weights(["a", "b"], {"a": 0, "b": 0})


def test_accuracy_by_strength_and_ceilings():
    by = accuracy_by_strength(np.array([2, 0, 1, 1]), np.array([1, 1, 0, 1]), np.array([1.0, 0.0, 0.5, np.nan]), np.array([1.0, 0.5, 0.75, 0.5]))
    assert by["much_better"] == {"pairs": 2, "accuracy": 1.0, "human_agreement": 0.875}
    assert by["better"] == {"pairs": 2, "accuracy": 0.25, "human_agreement": 0.5}
    assert weighted_target(np.array([[1.0, 3.0], [np.nan, 2.0], [np.nan, np.nan]]), [0.25, 0.75]).tolist()[:2] == [2.5, 2.0]
    ratings = pd.DataFrame({"response_key": ["r1", "r1", "r2", "r2", "r3", "r3"], "target_d": [1.0, 1.0, -1.0, -1.0, 0.0, 0.5]})
    ceiling = leave_one_out_ceiling(ratings, ["d"], [1.0])
    assert ceiling["d"] == pytest.approx(np.corrcoef([1, 1, -1, -1, 0, 0.5], [1, 1, -1, -1, 0.5, 0])[0, 1])


def test_pairwise_metrics_have_strength_buckets(tiny_model_dir, tmp_path):
    result = train_reward_model(tiny_config(tiny_model_dir, max_steps=2), tmp_path / "rm", data=easy_preferences(tmp_path / "e.jsonl", n=12))
    assert set(result.metrics["held_out"]["by_strength"]) == {"much_better", "better"}
    assert result.metrics["held_out"]["by_strength"]["better"]["pairs"] == 2


def test_rubric_weights_are_project_settings():
    from rlhf.projects import ProjectValidationError, rubric_weights, validate_rubric

    rubric = validate_rubric([{"name": "a", "min": 1, "max": 7, "weight": 2}, {"name": "b", "min": 1, "max": 7}])
    assert rubric_weights(rubric) == {"a": 2.0, "b": 1.0}
    with pytest.raises(ProjectValidationError, match="sum to a positive"):
        validate_rubric([{"name": "a", "min": 1, "max": 7, "weight": 0}])
    with pytest.raises(ProjectValidationError, match="finite number"):
        validate_rubric([{"name": "a", "min": 1, "max": 7, "weight": "x"}])


def rated_project(engine, n: int = 12, *, with_pairs: bool = True) -> None:
    """Project `proj` (default rubric): per prompt a good and a bad response, each rated by two annotators (one lenient),
    and, `with_pairs`, compared by both (good wins)."""
    from test_frames import seed_project

    prompts = {f"p{i}": (f"please explain {FILLER[i]} {i}", {f"p{i}g": f"sure here {GOOD}", f"p{i}b": f"no {BAD}"}) for i in range(n)}
    pairs = {f"t{i}": (f"p{i}", f"p{i}g", f"p{i}b", {"ann1": ("a", 2), "ann2": ("a", 1)}) for i in range(n)} if with_pairs else {}
    scores = {"g": {"helpfulness": 6, "honesty": 6, "harmlessness": 7}, "b": {"helpfulness": 2, "honesty": 3, "harmlessness": 4}}
    ratings = {
        f"r{i}{kind}": (f"p{i}", f"p{i}{kind}", {"ann1": dict(scores[kind]), "ann2": {d: min(v + 1, 7) for d, v in scores[kind].items()}})
        for i in range(n) for kind in "gb"
    }
    seed_project(engine, prompts=prompts, pairs=pairs, ratings=ratings)


def test_joint_from_a_project_uses_its_rubric_weights(tiny_model_dir, tmp_path, sqlite_engine):
    from rlhf.projects import DEFAULT_RUBRIC, update_project
    from rlhf.roles import SYSTEM

    rated_project(sqlite_engine)
    rubric = [dict(d, weight=w) for d, w in zip(DEFAULT_RUBRIC, (2.0, 1.0, 1.0))]
    update_project(sqlite_engine, SYSTEM, "proj", rubric=rubric)
    config = tiny_config(tiny_model_dir, objective="joint", max_steps=6, eval_fraction=0.25)
    result = train_reward_model(config, tmp_path / "rm", project="proj", engine=sqlite_engine)
    assert result.model_config.dimensions == ["harmlessness", "helpfulness", "honesty"]
    assert result.model_config.dimension_weights == [0.25, 0.5, 0.25]
    assert result.metrics["data"]["train_pairs"] > 0 and result.metrics["data"]["rating_normalization"] == "annotator"
    assert result.metrics["held_out"]["pairs"] > 0 and result.metrics["held_out"]["ratings"]["responses"] > 0
    assert result.artifact_id is not None


def test_regression_job_through_the_worker(tiny_model_dir, tmp_path):
    from rlhf.db import init_database, make_engine
    from rlhf.job_kinds import KINDS
    from rlhf.jobs import get_job, job_artifacts, submit_job
    from rlhf.roles import SYSTEM
    from test_job_kinds import run_one_job, tiny_reward_params

    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    init_database(engine)
    rated_project(engine, with_pairs=False)
    params = tiny_reward_params(tiny_model_dir) | {"objective": "regression", "max_steps": 4}
    job = submit_job(engine, SYSTEM, "train-reward", params, project="proj", registry=KINDS)
    run_one_job(engine, tmp_path)
    done = get_job(engine, job.id)
    assert done.status == "done", f"{done.error}\n{done.traceback}"
    export, reward = job_artifacts(engine, job.id)
    assert export.kind == "export" and export.lineage["format"] == "raw" and reward.parent_ids == [export.id]
    assert set(reward.metrics["held_out"]["ratings"]["dimensions"]) == {"harmlessness", "helpfulness", "honesty"}
    assert "correlation with held-out ratings" in done.message
    engine.dispose()


def test_cli_train_reward_regression(tiny_model_dir, tmp_path, regression):
    from typer.testing import CliRunner

    from rlhf.cli import app

    base = ["train-reward", "--base", str(tiny_model_dir), "--max-steps", "2", "--lora-r", "2", "--device", "cpu", "--max-length", "64"]
    args = base + ["--objective", "regression", "--ratings", str(regression["ratings"]), "--weights", "helpfulness=1,honesty=3", "--out", str(tmp_path / "rm")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "held-out ratings, honesty: correlation" in result.output
    assert json.loads((tmp_path / "rm" / "reward_config.json").read_text())["dimension_weights"] == [0.25, 0.75]
    bad = CliRunner().invoke(app, base + ["--objective", "regression", "--ratings", str(regression["ratings"]), "--weights", "helpfulness", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "'helpfulness' is not dimension=number" in bad.output and not (tmp_path / "x").exists()


def topic_pairs(path: Path, n: int = 24) -> Path:
    """Pairs that prefer a reply naming `cat` over one naming `dog`, every other word shared: a preference the
    ratings (good / bad words, `raw_ratings`) say nothing about."""
    rng = random.Random(3)
    rows = []
    for i in range(n):
        prompt = " ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 6)))
        rest = " ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 4)))
        rows.append({"prompt": prompt, "chosen": f"{rest} cat", "rejected": f"{rest} dog", "margin": 0.0, "agreement": 1.0,
                     "split": "test" if i % 4 == 0 else "train"})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_a_preference_head_learns_the_pairs_beside_heads_that_keep_fitting_the_ratings(tiny_model_dir, tmp_path, regression):
    from rlhf.reward.scorer import raw_outputs

    pairs = topic_pairs(tmp_path / "pairs.jsonl")
    # The ratings' squared error weighs ten times the pairs' loss; the pairs still get their way through their own head.
    common = dict(objective="joint", max_steps=40, regression_weight=10.0)
    pinned = train_reward_model(tiny_config(tiny_model_dir, **common), tmp_path / "pinned", data=pairs, ratings=regression["ratings"])
    free = train_reward_model(
        tiny_config(tiny_model_dir, preference_head=True, prompt_similarity="coverage", **common), tmp_path / "free", data=pairs, ratings=regression["ratings"]
    )
    assert free.model_config.preference_head and not pinned.model_config.preference_head
    assert free.metrics["held_out"]["accuracy"] == 1.0
    # The heads still fit the ratings as well as without the preference head.
    ratings_free, ratings_pinned = (r.metrics["held_out"]["ratings"]["dimensions"]["helpfulness"]["pearson"] for r in (free, pinned))
    assert ratings_free >= ratings_pinned - 0.1
    # The preference head has its own weight on the prompt similarity (trained by the pairs); the scalar's adds it.
    term = free.metrics["prompt_similarity"]
    assert term["preference_head_weight"] != 0.0 and set(term["dimension_weights"]) == set(DIMENSIONS)
    assert term["weight"] == pytest.approx(sum(term["dimension_weights"].values()) / 2 + term["preference_head_weight"], rel=1e-5)
    # Scoring: the scalar is the weighted dimensions plus the preference output; `score_dimensions` reports the dimensions only.
    scorer = RewardModel.load(tmp_path / "free", device="cpu")
    prompts, replies = ["tell me", "tell me"], ["good helpful honest cat", "bad unsafe worse dog"]
    outputs = raw_outputs(scorer.model, scorer.encode(prompts, replies), pad_id=scorer.tokenizer.pad_token_id, batch_size=2, device="cpu")
    assert outputs.shape == (2, 3)
    expected = outputs[:, :2] @ torch.tensor([0.5, 0.5]) + outputs[:, 2] + term["weight"] * scorer.prompt_similarity(prompts, replies)
    torch.testing.assert_close(scorer.score(prompts, replies, normalize=False), expected, atol=1e-5, rtol=1e-5)
    assert set(scorer.score_dimensions(prompts, replies)) == set(DIMENSIONS)
    with pytest.raises(ValueError, match="preference_head: for the joint objective only"):
        tiny_config(tiny_model_dir, objective="regression", preference_head=True).validate()
