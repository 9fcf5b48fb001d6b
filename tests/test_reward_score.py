"""Scoring with a trained reward model: same text, same tokens, same EOS, same scores as training; normalisation; bad dirs."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch

from rlhf.reward import IncompleteRewardModel, RewardModel, train_reward_model
from rlhf.reward.data import read_preference_pairs
from rlhf.reward.scorer import last_token_index, pooled_rewards
from test_reward_train import easy_preferences, tiny_config


@pytest.fixture(scope="module")
def reward_dir(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("scoring")
    data = easy_preferences(root / "easy.jsonl", n=36)
    train_reward_model(tiny_config(tiny_model_dir, max_steps=12), root / "rm", data=data)
    return root


@pytest.fixture(scope="module")
def model(reward_dir):
    return RewardModel.load(reward_dir / "rm", device="cpu")


def test_held_out_scores_match_training_time(reward_dir, model):
    metrics = json.loads((reward_dir / "rm" / "metrics.json").read_text())
    pairs, _ = read_preference_pairs(reward_dir / "easy.jsonl")
    test = pairs[pairs.split == "test"]
    chosen = model.score(test.prompt.tolist(), test.chosen.tolist(), normalize=False)
    rejected = model.score(test.prompt.tolist(), test.rejected.tolist(), normalize=False)
    assert (chosen - rejected).mean().item() == pytest.approx(metrics["held_out"]["mean_margin"], abs=1e-4)


def test_training_batches_and_scoring_agree(model):
    """The trainer's collated, right-padded chosen+rejected batch gives the same rewards as `score`."""
    from trl.trainer.reward_trainer import DataCollatorForPreference

    prompts = ["hello world", "the cat is blue and the sky is green"]
    chosen, rejected = ["good helpful honest", "yes"], ["bad", "no no no bad unsafe worse"]
    examples = [{"chosen_ids": c, "rejected_ids": r} for c, r in zip(model.encode(prompts, chosen), model.encode(prompts, rejected))]
    batch = DataCollatorForPreference(pad_token_id=model.tokenizer.pad_token_id)(examples)
    with torch.no_grad():
        in_training = pooled_rewards(model.model, batch["input_ids"], batch["attention_mask"])  # (4,)
    scored = torch.cat([model.score(prompts, chosen, normalize=False), model.score(prompts, rejected, normalize=False)])
    torch.testing.assert_close(in_training, scored, atol=1e-5, rtol=1e-5)


def test_score_token_ids_with_left_padding_matches_score(model):
    prompts, responses = ["hello", "the dog is in the tree"], ["good helpful honest", "bad"]
    sequences = model.encode(prompts, responses)
    width = max(len(s) for s in sequences)
    pad = model.tokenizer.pad_token_id
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in sequences])
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences])
    torch.testing.assert_close(model.score_token_ids(ids, mask), model.score(prompts, responses), atol=1e-5, rtol=1e-5)


def test_reward_is_read_at_the_eos(model):
    (ids,) = model.encode(["hello"], ["good helpful honest"])
    eos = model.tokenizer.eos_token_id
    assert ids[-1] == eos and eos == model.tokenizer.pad_token_id  # pad == EOS, like SmolLM2
    full = torch.tensor([ids])
    at_eos = model.score_token_ids(full, torch.ones_like(full), normalize=False)
    before_eos = model.score_token_ids(full[:, :-1], torch.ones_like(full[:, :-1]), normalize=False)
    assert not torch.allclose(at_eos, before_eos)
    # The model's own pooling ("last token that is not the pad id") would skip the EOS:
    with torch.no_grad():
        native = model.model(input_ids=full, attention_mask=torch.ones_like(full)).logits[:, 0]
    torch.testing.assert_close(native, before_eos, atol=1e-5, rtol=1e-5)
    assert last_token_index(torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]])).tolist() == [2, 3, 0]


def test_format_pair_is_the_scored_text(model):
    text = model.format_pair("hello world", "good answer")
    assert text == "<|im_start|>user\nhello world<|im_end|>\n<|im_start|>assistant\ngood answer<|im_end|>"
    tokens = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokens == model.encode(["hello world"], ["good answer"])[0]


def test_normalised_scores_have_mean_zero_on_training_responses(reward_dir, model):
    pairs, _ = read_preference_pairs(reward_dir / "easy.jsonl")
    train = pairs[pairs.split == "train"]
    responses = pd.DataFrame(
        {"prompt": list(train.prompt) * 2, "response": list(train.chosen) + list(train.rejected)}
    ).drop_duplicates()
    scores = model.score(responses.prompt.tolist(), responses.response.tolist())
    assert abs(scores.mean().item()) < 1e-3
    assert scores.std().item() == pytest.approx(1.0, abs=1e-3)
    raw = model.score(responses.prompt.tolist(), responses.response.tolist(), normalize=False)
    assert raw.mean().item() == pytest.approx(model.config.score_mean, abs=1e-4)


def test_model_contract(model, reward_dir):
    from safetensors.torch import load_file

    weight = model.score_head_weight()
    assert weight.shape == (1, 64) and weight.dtype == torch.float32
    torch.testing.assert_close(weight, load_file(str(reward_dir / "rm" / "score_head.safetensors"))["weight"])
    assert model.config.max_length == 64 and model.config.use_chat_template is True
    assert model.base_model_path == model.config.base_model_resolved
    chat = [{"role": "system", "content": "be good"}, {"role": "user", "content": "hello"}]
    scores = model.score([chat, "hello"], ["good helpful honest", "bad unsafe worse"], batch_size=1)
    assert scores.shape == (2,) and scores[0] > scores[1]
    assert model.score([], []).shape == (0,)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        model.score(["a", "b"], ["c"])


@pytest.mark.parametrize("remove", ["adapter_model.safetensors", "reward_config.json", "score_head.safetensors"])
def test_incomplete_directory_is_a_clear_error(reward_dir, tmp_path, remove):
    copy = tmp_path / "rm"
    shutil.copytree(reward_dir / "rm", copy)
    (copy / remove).unlink()
    with pytest.raises(IncompleteRewardModel, match=f"missing {remove}"):
        RewardModel.load(copy, device="cpu")


def test_unreadable_config_and_missing_dir(reward_dir, tmp_path):
    with pytest.raises(IncompleteRewardModel, match="no such directory"):
        RewardModel.load(tmp_path / "nowhere")
    copy = tmp_path / "rm"
    shutil.copytree(reward_dir / "rm", copy)
    (copy / "reward_config.json").write_text('{"base_model": "x"}')
    with pytest.raises(IncompleteRewardModel, match="missing fields"):
        RewardModel.load(copy, device="cpu")


def test_cli_score(reward_dir, tmp_path):
    from typer.testing import CliRunner

    from rlhf.cli import app

    rows = tmp_path / "rows.jsonl"
    rows.write_text(
        json.dumps({"prompt": "hello", "response": "good helpful honest"}) + "\n" + json.dumps({"prompt": "hello", "response": "bad unsafe worse"}) + "\n"
    )
    out = tmp_path / "scored.jsonl"
    result = CliRunner().invoke(app, ["score", "--reward", str(reward_dir / "rm"), "--data", str(rows), "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    scored = pd.read_json(out, lines=True)
    assert list(scored.role) == ["response", "response"] and scored.score[0] > scored.score[1]

    result = CliRunner().invoke(app, ["score", "--reward", str(reward_dir / "rm"), "--data", str(reward_dir / "easy.jsonl"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    printed = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert len(printed) == 72 and {p["role"] for p in printed} == {"chosen", "rejected"}

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "x", "answer": "y"}) + "\n")
    result = CliRunner().invoke(app, ["score", "--reward", str(reward_dir / "rm"), "--data", str(bad)])
    assert result.exit_code == 2 and "expected columns 'prompt' and 'response'" in result.output
    result = CliRunner().invoke(app, ["score", "--reward", str(tmp_path), "--data", str(rows)])
    assert result.exit_code == 2 and "missing" in result.output
