"""Off-prompt pairs: a preferred reply to another prompt as the rejected one, so a reward model has to read the prompt."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf.reward import RewardConfig, RewardDataError, RewardModel, train_reward_model
from rlhf.reward.data import add_off_prompt_pairs, prompt_key
from test_reward_train import tiny_config

TOPICS = "cat dog tree sky blue world hello yes".split()


def frame(prompts: list[str], margins: list[float] | None = None) -> pd.DataFrame:
    n = len(prompts)
    return pd.DataFrame({
        "prompt": prompts, "chosen": [f"{p} chosen {i}" for i, p in enumerate(prompts)], "rejected": [f"{p} rejected {i}" for i, p in enumerate(prompts)],
        "split": "train", "margin": margins if margins is not None else [0.0] * n, "agreement": 0.75, "tie": False,
    })


def test_added_pairs_reject_a_preferred_reply_to_another_prompt():
    train = frame(["a", "a", "b", "c", "c", "d"], margins=[0.0, 0.5, np.nan, 1.0, 0.0, 0.5])
    out = add_off_prompt_pairs(train, 1.0, seed=3)
    assert len(out) == 12
    pd.testing.assert_frame_equal(out.iloc[:6], train)  # the exported pairs are untouched, in order
    added = out.iloc[6:]
    chosen_by_prompt = {p: set(train.loc[train["prompt"] == p, "chosen"]) for p in train["prompt"]}
    for _, row in added.iterrows():
        assert row["chosen"] in chosen_by_prompt[row["prompt"]]
        owner = train.loc[train["chosen"] == row["rejected"], "prompt"].item()
        assert owner != row["prompt"]  # a reply annotators preferred, for some other prompt
    for first, mirror in zip(added.iloc[0::2].itertuples(), added.iloc[1::2].itertuples()):
        # every reply wins once and loses once: nothing about a reply alone gets a net push
        assert (first.chosen, first.rejected) == (mirror.rejected, mirror.chosen)
        assert train.loc[train["chosen"] == mirror.chosen, "prompt"].item() == mirror.prompt
    assert (added["margin"] == 0.0).all() and (added["agreement"] == 1.0).all() and (added["split"] == "train").all()
    pd.testing.assert_frame_equal(out, add_off_prompt_pairs(train, 1.0, seed=3))  # seeded
    assert add_off_prompt_pairs(train, 0.0, seed=3) is train


def test_chat_prompts_are_told_apart_by_their_messages():
    chat = [[{"role": "user", "content": t}] for t in ("one", "one", "two")]
    out = add_off_prompt_pairs(frame(chat), 2.0, seed=0)
    added = out.iloc[3:]
    assert len(added) == 6
    assert all(prompt_key(p) == prompt_key(chat[2]) for p, r in zip(added["prompt"], added["rejected"]) if "one" in r)


def test_one_prompt_cannot_give_off_prompt_pairs():
    with pytest.raises(RewardDataError, match="at least two prompts"):
        add_off_prompt_pairs(frame(["a", "a"]), 1.0, seed=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from("abcde"), min_size=2, max_size=30), st.floats(0.0, 4.0), st.integers(0, 2**16))
def test_fuzzed_frames_keep_the_invariants(prompts, share, seed):
    train = frame(prompts)
    if len(set(prompts)) < 2:
        if round(share * len(train) / 2) > 0:
            with pytest.raises(RewardDataError):
                add_off_prompt_pairs(train, share, seed)
        return
    out = add_off_prompt_pairs(train, share, seed)
    added = out.iloc[len(train):]
    assert len(added) == 2 * int(round(share * len(train) / 2))
    owner = dict(zip(train["chosen"], train["prompt"]))
    assert all(owner[r] != p for p, r in zip(added["prompt"], added["rejected"]))


@pytest.mark.parametrize(
    "overrides, message",
    [({"off_prompt_pairs": -0.1}, "between 0 and 4"), ({"off_prompt_pairs": 5.0}, "between 0 and 4"), ({"off_prompt_pairs": float("nan")}, "between 0 and 4"), ({"off_prompt_pairs": 0.5, "listwise": True}, "listwise")],
)
def test_bad_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        RewardConfig(**overrides).validate()


def echo_preferences(path: Path, n: int = 64, test_every: int = 4) -> Path:
    """Pairs that say nothing about the prompt: both replies repeat the prompt's topic word, the chosen one ends
    "fine" and the rejected one "ok". Only off-prompt pairs can teach that a reply should be about its prompt."""
    rows = []
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        rows.append({
            "prompt": f"talk about {topic}", "chosen": f"{topic} {topic} fine", "rejected": f"{topic} {topic} ok",
            "margin": 0.0, "agreement": 1.0, "split": "test" if i % test_every == 0 else "train",
        })
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def own_topic_preferred(reward_dir: Path) -> float:
    """Share of (prompt, own-topic reply, other-topic reply) triples where the own-topic reply scores higher."""
    model = RewardModel.load(reward_dir, device="cpu")
    triples = [(a, b) for a in TOPICS for b in TOPICS if a != b]
    own = model.score([f"talk about {a}" for a, _ in triples], [f"{a} {a} fine" for a, _ in triples])
    other = model.score([f"talk about {a}" for a, _ in triples], [f"{b} {b} fine" for a, b in triples])
    return float((own > other).float().mean())


def test_off_prompt_pairs_teach_the_model_to_read_the_prompt(tiny_model_dir, tmp_path):
    data = echo_preferences(tmp_path / "echo.jsonl")
    plain = train_reward_model(tiny_config(tiny_model_dir), tmp_path / "plain", data=data)
    taught = train_reward_model(tiny_config(tiny_model_dir, off_prompt_pairs=1.0), tmp_path / "taught", data=data)
    assert plain.metrics["data"]["off_prompt_pairs"] == 0 and plain.metrics["data"]["train_pairs"] == 48
    assert taught.metrics["data"]["off_prompt_pairs"] == 48 and taught.metrics["data"]["train_pairs"] == 96
    assert taught.metrics["data"]["test_pairs"] == 16  # held-out pairs are never augmented
    # The exported pairs say nothing about the prompt: without the added pairs the model guesses (0.52 here,
    # 0.45-0.64 over seeds); with them it prefers the reply about the prompt's topic (0.79; 0.75-0.89 over seeds).
    assert own_topic_preferred(tmp_path / "plain") < 0.65
    assert own_topic_preferred(tmp_path / "taught") > 0.7


def test_cli_flag_reaches_training(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from rlhf.cli import app

    data = echo_preferences(tmp_path / "echo.jsonl", n=16)
    args = ["train-reward", "--data", str(data), "--base", str(tiny_model_dir), "--out", str(tmp_path / "rm"), "--max-steps", "1", "--lora-r", "2", "--device", "cpu", "--max-length", "64"]
    result = CliRunner().invoke(app, [*args, "--off-prompt-pairs", "0.5", "--average-weights-from", "0.5"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert metrics["data"]["train_pairs"] == 12 + 6 and metrics["data"]["off_prompt_pairs"] == 6
    result = CliRunner().invoke(app, [*args[:-6], "--out", str(tmp_path / "rm2"), "--off-prompt-pairs", "9"])
    assert result.exit_code == 2 and "off_prompt_pairs 9" in result.output and not (tmp_path / "rm2").exists()


def test_joint_training_adds_them_from_training_prompts_only(tiny_model_dir, tmp_path):
    from rlhf.reward.objectives import load_objective_data

    data = echo_preferences(tmp_path / "echo.jsonl")
    joint = load_objective_data(RewardConfig(objective="joint", off_prompt_pairs=1.0), data, None, None)
    assert len(joint.pairs.train) == 96 and len(joint.pairs.test) == 16 and joint.off_prompt_pairs == 48
    held_out = {prompt_key(p) for p in joint.pairs.test["prompt"]}
    added = joint.pairs.train.iloc[48:]
    assert not held_out & {prompt_key(p) for p in added["prompt"]}
    assert not set(joint.pairs.test["chosen"]) & set(added["rejected"])
    trained = train_reward_model(tiny_config(tiny_model_dir, objective="joint", off_prompt_pairs=1.0, max_steps=2), tmp_path / "rm", data=data)
    assert (trained.metrics["data"]["train_pairs"], trained.metrics["data"]["off_prompt_pairs"]) == (96, 48)
