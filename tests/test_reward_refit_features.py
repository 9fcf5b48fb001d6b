"""Refitting the frozen-base feature weights on training prompts the adapter never saw (RewardConfig.refit_features)."""

from __future__ import annotations

import json

import pytest
import torch

from rlhf.reward import RewardConfig, RewardModel, train_reward_model
from rlhf.reward.similarity import refit_feature_weights, reply_redundancies
from test_reward_reply_redundancy import looping_preferences
from test_reward_train import tiny_config


def _bradley_terry_pairs(n: int, cross_weight: float, feature_weight: float, seed: int = 0):
    """(cross margin, feature margin) of pairs oriented as a Bradley–Terry judge with these weights labelled them."""
    generator = torch.Generator().manual_seed(seed)
    cross, feature = torch.randn(n, generator=generator), torch.randn(n, 1, generator=generator)
    logits = cross_weight * cross + feature_weight * feature[:, 0]
    flip = torch.rand(n, generator=generator) > torch.sigmoid(logits)
    sign = torch.where(flip, -1.0, 1.0)
    return cross * sign, feature * sign[:, None]


def test_the_refit_weight_is_what_unseen_pairs_need_not_what_training_left():
    # On these pairs the feature decides far more than the cross-encoder: the refit weight rises from training's 0.1.
    cross, feature = _bradley_terry_pairs(2000, cross_weight=1.0, feature_weight=3.0)
    refit = refit_feature_weights(cross, feature, torch.tensor([0.1]))
    assert refit.shape == (1,) and 2.4 < refit.item() < 3.6
    # A feature that says nothing about these pairs is fitted to about 0, whatever training left.
    cross, feature = _bradley_terry_pairs(2000, cross_weight=1.0, feature_weight=0.0, seed=1)
    assert abs(refit_feature_weights(cross, feature, torch.tensor([2.0])).item()) < 0.3
    # No pairs to fit on: training's weights stay.
    assert refit_feature_weights(torch.zeros(0), torch.zeros(0, 2), torch.tensor([0.5, -1.0])).tolist() == [0.5, -1.0]


def test_perfectly_separable_pairs_give_a_large_but_finite_weight():
    cross, feature = torch.zeros(50), torch.ones(50, 1)  # the feature alone is always right
    refit = refit_feature_weights(cross, feature, torch.tensor([0.0]))
    assert torch.isfinite(refit).all() and 4.0 < refit.item() < 6.0  # where the ridge balances the last gain (4.66)


def test_training_keeps_prompts_apart_and_saves_the_refit_weights(tiny_model_dir, tmp_path):
    data = looping_preferences(tmp_path / "loops.jsonl", per_split=24)
    # The adapter learns nothing at this step size and the feature weight only takes two Adam steps, so training
    # leaves the redundancy weight small; the kept prompts' pairs (the looping reply always loses) ask for a large one.
    config = tiny_config(tiny_model_dir, reply_redundancy=True, learning_rate=1e-8, max_steps=2, refit_features=0.25)
    result = train_reward_model(config, tmp_path / "rm", data=data)
    refit = result.metrics["feature_refit"]
    assert refit["features"] == ["redundancy"] and refit["pairs"] > 0 and refit["prompts"] > 0
    assert result.metrics["data"]["train_pairs"] + refit["pairs"] == 24  # the kept pairs are not trained on
    assert -0.5 < refit["trained_weights"][0] < 0 and refit["weights"][0] < -3.0
    assert refit["accuracy"] == 1.0 and refit["accuracy"] >= refit["accuracy_trained"]
    # The model saved, its metrics and its scores all use the refit weight.
    assert result.model_config.reply_redundancy_weight == pytest.approx(refit["weights"][0])
    assert result.metrics["prompt_similarity"]["redundancy_weight"] == pytest.approx(refit["weights"][0])
    assert json.loads((tmp_path / "rm" / "metrics.json").read_text())["feature_refit"]["weights"] == refit["weights"]
    scorer = RewardModel.load(tmp_path / "rm", device="cpu")
    prompts, replies = ["write about sum"] * 2, ["sum list five sum list five sum list five", "number world hello list function sum three five zero"]
    from rlhf.reward.scorer import raw_scores

    cross = raw_scores(scorer.model, scorer.encode(prompts, replies), pad_id=scorer.tokenizer.pad_token_id, batch_size=2, device="cpu")
    expected = cross + refit["weights"][0] * reply_redundancies(scorer.model, scorer.tokenizer, replies, max_length=64)
    torch.testing.assert_close(scorer.score(prompts, replies, normalize=False), expected, atol=1e-4, rtol=1e-4)
    assert result.metrics["held_out"]["accuracy"] == 1.0


def test_too_few_prompts_to_keep_any_apart_is_a_clear_error(tiny_model_dir, tmp_path):
    from rlhf.reward import RewardDataError

    data = tmp_path / "one.jsonl"
    rows = [{"prompt": "write about cat", "chosen": "cat sky", "rejected": "cat cat cat", "margin": 0.0, "agreement": 1.0, "split": split} for split in ("train", "test")]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(RewardDataError, match="refit_features 0.5: 1 training pairs leave no prompts"):
        train_reward_model(tiny_config(tiny_model_dir, reply_redundancy=True, refit_features=0.5), tmp_path / "rm", data=data)
    assert not (tmp_path / "rm").exists()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (dict(refit_features=0.2), "no frozen-base feature to refit"),
        (dict(refit_features=1.0, prompt_similarity="coverage"), "must be at least 0 and below 1"),
        (dict(refit_features=float("nan"), prompt_similarity="coverage"), "must be at least 0 and below 1"),
        (dict(refit_features=0.2, prompt_similarity="coverage", objective="joint"), "pairwise \\(not listwise\\) training only"),
    ],
)
def test_bad_refit_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        RewardConfig(**settings).validate()
