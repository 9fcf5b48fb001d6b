"""Weight averaging of reward-model training: the saved weights are the mean over the late steps, not the last step's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rlhf.reward import RewardConfig, train_reward_model
from rlhf.reward.train import LateWeightMean, _weight_averaging_callback
from test_reward_off_prompt import echo_preferences
from test_reward_train import tiny_config


def test_the_mean_of_the_steps_after_the_start_replaces_the_weights():
    model = nn.Linear(2, 1)
    model.bias.requires_grad_(False)  # frozen parameters are left alone
    callback = _weight_averaging_callback(0.5)
    seen = []
    for step in range(1, 9):
        with torch.no_grad():
            model.weight.fill_(float(step))
            model.bias.fill_(-1.0)
        if step > 4:
            seen.append(float(step))
        callback.on_step_end(None, SimpleNamespace(global_step=step, max_steps=8), None, model=model)
    callback.on_train_end(None, SimpleNamespace(global_step=8, max_steps=8), None, model=model)
    assert torch.allclose(model.weight, torch.full_like(model.weight, sum(seen) / len(seen)))  # steps 5-8: 6.5
    assert model.bias.item() == -1.0


def test_without_late_steps_nothing_changes():
    model = nn.Linear(2, 1)
    before = model.weight.detach().clone()
    _weight_averaging_callback(0.5).on_train_end(None, SimpleNamespace(global_step=0, max_steps=8), None, model=model)
    assert torch.equal(model.weight, before)


def test_averaged_training_saves_other_weights_than_the_last_step(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    data = echo_preferences(tmp_path / "echo.jsonl")
    last = train_reward_model(tiny_config(tiny_model_dir), tmp_path / "last", data=data)
    averaged = train_reward_model(tiny_config(tiny_model_dir, average_weights_from=0.5), tmp_path / "averaged", data=data)
    assert last.global_step == averaged.global_step == 24
    files = sorted(p.name for p in (tmp_path / "last").rglob("*.safetensors"))
    assert files
    differs = False
    for name in files:
        a = load_file(next((tmp_path / "last").rglob(name)))
        b = load_file(next((tmp_path / "averaged").rglob(name)))
        differs |= any(not torch.equal(a[k], b[k]) for k in a)
    assert differs


@pytest.mark.parametrize("overrides", [{"average_weights_from": -0.1}, {"average_weights_from": 1.0}, {"average_weights_from": float("nan"), "objective": "joint"}])
def test_bad_settings_are_refused(overrides):
    with pytest.raises(ValueError, match="average_weights_from"):
        RewardConfig(**overrides).validate()


def test_late_weight_mean_counts_only_the_late_steps_and_every_named_tensor():
    adapter, feature_weights = torch.zeros(3), torch.zeros(1, 2)
    mean = LateWeightMean(0.75, 8)  # steps 7 and 8
    for step in range(1, 9):
        adapter.fill_(float(step))
        feature_weights.fill_(-float(step))
        mean.after_step(step, [("adapter", adapter), ("features", feature_weights)])
    mean.apply([("adapter", adapter), ("features", feature_weights), ("never seen", torch.ones(1))])
    assert mean.count == 2 and torch.equal(adapter, torch.full((3,), 7.5)) and torch.equal(feature_weights, torch.full((1, 2), -7.5))
    untouched = torch.ones(2)
    LateWeightMean(0.5, 8).apply([("adapter", untouched)])  # no late step: nothing to copy
    assert torch.equal(untouched, torch.ones(2))


def _saved_tensors(directory):
    from safetensors.torch import load_file

    return {f"{path.name}:{key}": value for path in sorted(directory.rglob("*.safetensors")) for key, value in load_file(path).items()}


def test_joint_training_saves_the_mean_of_its_late_steps(tiny_model_dir, tmp_path):
    """Regression and joint average too (the plain loop): the mean over the last step alone is the last step's
    weights, to the bit; over the second half it is not, and the feature weights are averaged with the adapter."""
    import json

    from test_reward_objectives import raw_ratings

    pairs, ratings = echo_preferences(tmp_path / "echo.jsonl"), raw_ratings(tmp_path / "raw.jsonl")
    runs = {}
    for name, share in (("last", 0.0), ("last step averaged", 11.5 / 12), ("averaged", 0.5)):
        config = tiny_config(tiny_model_dir, objective="joint", max_steps=12, prompt_similarity="mean", average_weights_from=share)
        train_reward_model(config, tmp_path / name, data=pairs, ratings=ratings)
        feature_weights = json.loads((tmp_path / name / "reward_config.json").read_text())["prompt_similarity_dimension_weights"]
        runs[name] = (_saved_tensors(tmp_path / name), feature_weights)
    (last, last_features), (alone, alone_features), (averaged, averaged_features) = runs["last"], runs["last step averaged"], runs["averaged"]
    assert last and last.keys() == alone.keys() == averaged.keys()
    assert all(torch.equal(last[k], alone[k]) for k in last) and last_features == alone_features
    assert any(not torch.equal(last[k], averaged[k]) for k in last) and last_features != averaged_features


def test_pairwise_averages_its_feature_weight_with_the_adapter(tiny_model_dir, tmp_path):
    """The pairwise feature weight lives outside the model (the Trainer's extra parameter): averaged too, so the saved
    reward is one step's mean throughout, not an averaged adapter beside the last step's weight."""
    import json

    data = echo_preferences(tmp_path / "echo.jsonl")
    weights = {}
    for name, share in (("last", 0.0), ("last step averaged", 23.5 / 24), ("averaged", 0.5)):
        train_reward_model(tiny_config(tiny_model_dir, prompt_similarity="mean", average_weights_from=share), tmp_path / name, data=data)
        weights[name] = json.loads((tmp_path / name / "reward_config.json").read_text())["prompt_similarity_weight"]
    assert weights["last"] == weights["last step averaged"] and weights["last"] != weights["averaged"]
