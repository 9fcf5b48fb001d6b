"""Listwise reward training: groups from a ranking export, collation, InstructGPT's loss, a tiny run that learns."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from rlhf.reward import RewardConfig, train_reward_model
from rlhf.reward.listwise import collate_groups, groups_from_pairs, listwise_loss

FILLER = "the a is to of and in it this that yes no please thanks hello world cat dog tree sky blue".split()
QUALITY_WORDS = ["awful unsafe", "poor", "fine okay", "good helpful honest"]


def ranking_export(path: Path, n_prompts: int = 24, k: int = 4, seed: int = 0, test_every: int = 6) -> Path:
    """An export-shaped JSONL of rankings: per prompt K replies ending in a quality phrase, all C(K,2) pairs, one group each."""
    rng = random.Random(seed)
    rows = []
    for p in range(n_prompts):
        prompt = " ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 8)))
        replies = [f"{' '.join(rng.choice(FILLER) for _ in range(rng.randint(1, 6)))} {QUALITY_WORDS[q]}" for q in range(k)]
        split = "test" if p % test_every == 0 else "train"
        for worse, better in itertools.combinations(range(k), 2):
            rows.append({"prompt": prompt, "chosen": replies[better], "rejected": replies[worse], "margin": 0.0, "agreement": 1.0,
                         "group_id": f"rank-{p}-0", "split": split})  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_groups_collect_each_rankings_pairs_and_replies_once():
    pairs = pd.DataFrame(
        {
            "prompt": ["p", "p", "p", "q"],
            "chosen": ["x", "x", "y", "u"],
            "rejected": ["y", "z", "z", "v"],
            "margin": [0.0, 1.0, 0.0, float("nan")],
            "group_id": ["g1", "g1", "g1", None],
        }
    )
    groups = groups_from_pairs(pairs)
    assert [g["replies"] for g in groups] == [["x", "y", "z"], ["u", "v"]]
    assert groups[0]["pairs"] == [(0, 1), (0, 2), (1, 2)] and groups[0]["margins"] == [0.0, 1.0, 0.0]
    assert groups[1]["pairs"] == [(0, 1)] and groups[1]["margins"] == [0.0]
    with pytest.raises(ValueError, match="mixes prompts"):
        groups_from_pairs(pairs.assign(group_id=["g1"] * 4))


def test_collate_offsets_pairs_into_one_batch():
    examples = [
        {"sequences": [[1, 2], [3]], "chosen": [0], "rejected": [1], "margin": [0.0]},
        {"sequences": [[4], [5, 6, 7], [8]], "chosen": [0, 0], "rejected": [1, 2], "margin": [0.5, 0.0]},
    ]
    batch = collate_groups(examples, pad_id=0)
    assert batch["input_ids"].shape == (5, 3) and batch["attention_mask"].sum().item() == 8
    assert batch["chosen"].tolist() == [0, 2, 2] and batch["rejected"].tolist() == [1, 3, 4]
    assert batch["group"].tolist() == [0, 1, 1] and batch["margin"].tolist() == [0.0, 0.5, 0.0]


def test_loss_is_the_mean_over_groups_of_each_groups_mean_pair_loss():
    rewards = torch.tensor([2.0, 0.0, 1.0, -1.0, 0.5])
    chosen, rejected = torch.tensor([0, 0, 2, 3]), torch.tensor([1, 2, 1, 4])
    margin, group = torch.tensor([0.0, 0.0, 0.0, 1.0]), torch.tensor([0, 0, 0, 1])
    pair = lambda c, r, m=0.0: -nn.functional.logsigmoid(torch.tensor(c - r - m))  # noqa: E731
    first = (pair(2.0, 0.0) + pair(2.0, 1.0) + pair(1.0, 0.0)) / 3
    second = pair(-1.0, 0.5, 1.0)
    assert listwise_loss(rewards, chosen, rejected, margin, group).item() == pytest.approx(((first + second) / 2).item())
    # K = 2 groups only: the pairwise (Bradley–Terry) loss
    two = listwise_loss(rewards, torch.tensor([0, 2]), torch.tensor([1, 3]), torch.zeros(2), torch.tensor([0, 1]))
    assert two.item() == pytest.approx(((pair(2.0, 0.0) + pair(1.0, -1.0)) / 2).item())


def test_listwise_training_learns_rankings_and_moves_every_parameter(tiny_model_dir, tmp_path):
    from rlhf.reward import RewardModel
    from test_reward_train import initial_trainable_parameters

    data = ranking_export(tmp_path / "ranked.jsonl")
    config = RewardConfig(base_model=str(tiny_model_dir), max_steps=20, batch_size=4, learning_rate=3e-3, lora_r=4, logging_steps=4,
                          max_length=64, device="cpu", save_steps=1000, listwise=True)  # fmt: skip
    result = train_reward_model(config, tmp_path / "rm", data=data)
    metrics = result.metrics
    assert metrics["data"]["groups"] == 20 and metrics["data"]["sequences"] == 80 and metrics["data"]["pairs"] == 120
    assert metrics["train"]["last_loss"] < 0.7 * metrics["train"]["first_loss"]
    assert metrics["held_out"]["pairs"] == 4 * 6 and metrics["held_out"]["accuracy"] >= 0.8
    before = initial_trainable_parameters(tiny_model_dir, config)
    after = dict(RewardModel.load(tmp_path / "rm", device="cpu").model.named_parameters())
    assert [name for name, value in before.items() if torch.equal(value, after[name].detach())] == []


def test_cli_train_reward_listwise(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from rlhf.cli import app

    data = ranking_export(tmp_path / "ranked.jsonl", n_prompts=8)
    result = CliRunner().invoke(app, ["train-reward", "--data", str(data), "--out", str(tmp_path / "rm"), "--base", str(tiny_model_dir),
                                      "--listwise", "--max-steps", "2", "--batch-size", "2", "--max-length", "64", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "rm" / "reward_config.json").read_text())["training"]["listwise"] is True


def test_the_train_reward_job_kind_takes_listwise():
    from rlhf.job_kinds import _reward_config, _validate_train_reward

    checked = _validate_train_reward({"data": "ranked.jsonl", "listwise": True})
    assert checked["listwise"] is True and _reward_config(checked).listwise is True
