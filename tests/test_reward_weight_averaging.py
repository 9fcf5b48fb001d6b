"""Weight averaging of reward-model training: the saved weights are the mean over the late steps, not the last step's."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from rlhf.reward import RewardConfig, train_reward_model
from rlhf.reward.train import _weight_averaging_callback
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


@pytest.mark.parametrize("overrides", [{"average_weights_from": -0.1}, {"average_weights_from": 1.0}, {"average_weights_from": 0.5, "objective": "joint"}])
def test_bad_settings_are_refused(overrides):
    with pytest.raises(ValueError, match="average_weights_from"):
        RewardConfig(**overrides).validate()
