"""The reply-redundancy feature: reward = cross-encoder + ... + u · redundancy(reply), u learned (rlhf.reward.similarity)."""

from __future__ import annotations

import json
import random

import pytest
import torch

from rlhf.reward import RewardConfig, RewardModel, train_reward_model
from rlhf.reward.similarity import REDUNDANCY_GAP, base_features, prompt_similarities, reply_redundancies, token_embeddings
from test_reward_train import tiny_config

TRAIN_WORDS = "cat dog tree sky blue green red python code poem story math".split()
HELD_OUT_WORDS = "number world hello list function sum three five zero honest answer steps".split()


def _model(tiny_model_dir):
    from rlhf.models import load_sequence_classifier, load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir), padding_side="right")
    return load_sequence_classifier(str(tiny_model_dir), device="cpu", pad_token_id=tokenizer.pad_token_id), tokenizer


def test_redundancy_is_each_tokens_best_match_a_few_positions_back(tiny_model_dir):
    model, tokenizer = _model(tiny_model_dir)
    replies = ["cat dog tree cat dog tree cat dog tree", "cat dog tree sky blue green red python code", "cat dog", ""]
    values = reply_redundancies(model, tokenizer, replies, max_length=64)
    # By hand from the token embeddings: rows from the gap-th on, columns at least `gap` back.
    tokens = token_embeddings(model, tokenizer, replies[:2], max_length=64, batch_size=1, device="cpu")
    gap = REDUNDANCY_GAP
    by_hand = [
        sum(max(float(t[i] @ t[j]) for j in range(0, i - gap + 1)) for i in range(gap, len(t))) / (len(t) - gap) for t in tokens
    ]
    torch.testing.assert_close(values[:2], torch.tensor(by_hand), atol=1e-5, rtol=1e-5)
    assert values[0] > 0.9 and values[0] > values[1] + 0.2  # the loop finds itself three tokens back
    assert values[2].item() == 0.0 and values[3].item() == 0.0  # too short to repeat anything
    # A column of `base_features`, beside the prompt similarity, in the order asked for.
    prompts = ["write about cat"] * 4
    features = base_features(model, tokenizer, prompts, replies, ["coverage", "redundancy"], max_length=64)
    assert features.shape == (4, 2)
    torch.testing.assert_close(features[:, 0], prompt_similarities(model, tokenizer, prompts, replies, max_length=64, kind="coverage"))
    torch.testing.assert_close(features[:, 1], values)
    assert base_features(model, tokenizer, prompts, replies, [], max_length=64).shape == (4, 0)


def looping_preferences(path, per_split: int = 24):
    """The preferred reply moves on (nine different words), the other loops over three words three times; held-out
    prompts use words no training pair contains, so only a reading of "loops" carries over."""
    rng = random.Random(0)
    rows = []
    for split, words in (("train", TRAIN_WORDS), ("test", HELD_OUT_WORDS)):
        for _ in range(per_split):
            topic = rng.choice(words)
            moving_on = " ".join(rng.sample(words, 9))
            loop = " ".join(rng.sample(words, 3) * 3)
            rows.append({"prompt": f"write about {topic}", "chosen": moving_on, "rejected": loop, "margin": 0.0, "agreement": 1.0, "split": split})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_the_learned_weight_carries_not_looping_to_unseen_words(tiny_model_dir, tmp_path):
    data = looping_preferences(tmp_path / "loops.jsonl")
    # The adapter's step size is too small to learn anything: what held-out pairs get right beyond the untrained
    # cross-encoder is the redundancy term's doing (its weight has its own step size).
    metrics = train_reward_model(tiny_config(tiny_model_dir, reply_redundancy=True, learning_rate=1e-8), tmp_path / "rm", data=data).metrics
    parts = metrics["prompt_similarity"]
    assert parts["features"] == ["redundancy"] and "weight" not in parts
    assert parts["redundancy_weight"] < -0.3  # looping loses in training, so its weight goes negative from 0
    assert parts["held_out_accuracy_redundancy_alone"] == 1.0
    assert metrics["held_out"]["accuracy"] >= parts["held_out_accuracy_cross_encoder_alone"] + 0.3
    assert metrics["held_out"]["accuracy"] >= 0.9


def test_both_features_are_learned_saved_and_scored_after_a_reload(tiny_model_dir, tmp_path):
    data = looping_preferences(tmp_path / "loops.jsonl", per_split=8)
    result = train_reward_model(tiny_config(tiny_model_dir, prompt_similarity="coverage", reply_redundancy=True, max_steps=8), tmp_path / "rm", data=data)
    config = result.model_config
    assert config.feature_kinds() == ["coverage", "redundancy"]
    assert config.reply_redundancy_weight == result.metrics["prompt_similarity"]["redundancy_weight"] != 0.0
    assert config.prompt_similarity_weight == result.metrics["prompt_similarity"]["weight"]
    scorer = RewardModel.load(tmp_path / "rm", device="cpu")
    assert scorer.config.feature_weights() == [config.prompt_similarity_weight, config.reply_redundancy_weight]
    prompts, replies = ["write about cat", "write about dog"], ["cat dog tree cat dog tree cat dog tree", "dog sky blue green red python code poem"]
    from rlhf.reward.scorer import raw_scores

    cross = raw_scores(scorer.model, scorer.encode(prompts, replies), pad_id=scorer.tokenizer.pad_token_id, batch_size=2, device="cpu")
    expected = cross + config.prompt_similarity_weight * scorer.prompt_similarity(prompts, replies) + config.reply_redundancy_weight * reply_redundancies(
        scorer.model, scorer.tokenizer, replies, max_length=64
    )
    torch.testing.assert_close(scorer.score(prompts, replies, normalize=False), expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="use score"):
        scorer.score_token_ids(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))


def test_a_resumed_run_restores_every_feature_weight(tiny_model_dir, tmp_path):
    from rlhf.progress import Cancelled
    from rlhf.reward.train import SIMILARITY_WEIGHT_FILE, checkpoint_dir_for
    from test_reward_train import RecordingReporter

    data = looping_preferences(tmp_path / "loops.jsonl", per_split=4)
    config = tiny_config(tiny_model_dir, prompt_similarity="mean", reply_redundancy=True, max_steps=6, save_steps=2, batch_size=4)
    straight = train_reward_model(config, tmp_path / "straight", data=data).model_config
    with pytest.raises(Cancelled, match="step 3"):
        train_reward_model(config, tmp_path / "rm", data=data, reporter=RecordingReporter(stop_after=3))
    saved = json.loads((checkpoint_dir_for(tmp_path / "rm") / "checkpoint-3" / SIMILARITY_WEIGHT_FILE).read_text())["weights"]
    assert len(saved) == 2 and all(w != 0.0 for w in saved)
    resumed = train_reward_model(config, tmp_path / "rm", data=data, resume=True).model_config
    assert resumed.reply_redundancy_weight == pytest.approx(straight.reply_redundancy_weight, abs=0.01)
    assert resumed.prompt_similarity_weight == pytest.approx(straight.prompt_similarity_weight, abs=0.01)


@pytest.mark.parametrize("objective", ["regression", "joint"])
def test_each_dimension_head_gets_its_own_redundancy_weight(objective, tiny_model_dir, tmp_path):
    """Ratings of `fluency` punish looping, ratings of `topic` do not care: only fluency's head leans on the feature."""
    rng = random.Random(1)
    rows = []
    for split, words in (("train", TRAIN_WORDS), ("test", HELD_OUT_WORDS)):
        for index in range(24):
            loops = index % 2 == 0
            reply = " ".join(rng.sample(words, 3) * 3) if loops else " ".join(rng.sample(words, 9))
            topic_score = 2 if index // 2 % 2 == 0 else 6  # half the loops and half the others each way: no link to looping
            prompt = f"write about {rng.choice(words)}"
            for annotator in ("ann-1", "ann-2"):
                rows.append({"kind": "rating", "annotator": annotator, "prompt": prompt, "response_a": reply,
                             "score_fluency": 2 if loops else 6, "score_topic": topic_score, "split": split})
    ratings = tmp_path / "ratings.jsonl"
    ratings.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = tiny_config(tiny_model_dir, objective=objective, reply_redundancy=True, learning_rate=1e-8, max_steps=40)
    metrics = train_reward_model(config, tmp_path / "rm", ratings=ratings).metrics
    per_head = metrics["prompt_similarity"]["redundancy_dimension_weights"]
    assert per_head["fluency"] < -0.3 and per_head["fluency"] < per_head["topic"] - 0.3  # measured: -0.42 against 0.26
    scorer = RewardModel.load(tmp_path / "rm", device="cpu")
    assert scorer.config.reply_redundancy_dimension_weights == [per_head["fluency"], per_head["topic"]]
    dims = scorer.score_dimensions(["write about sum"] * 2, ["sum list sum list sum list sum list", "number world hello list function sum three five zero"])
    assert dims["fluency"][0] < dims["fluency"][1]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="reply_redundancy: not with listwise"):
        RewardConfig(reply_redundancy=True, listwise=True).validate()


def test_each_feature_alone_picks_the_reply_its_direction_favours():
    from rlhf.reward.similarity import accuracies_alone

    chosen = torch.tensor([[0.9, 0.2], [0.1, 0.9], [0.5, 0.5]])
    rejected = torch.tensor([[0.3, 0.8], [0.4, 0.1], [0.5, 0.5]])
    # More similarity wins (1 of 3 pairs: a tie is not a win); less redundancy wins (1 of 3).
    assert accuracies_alone(["coverage", "redundancy"], chosen, rejected) == pytest.approx(
        {"held_out_accuracy_similarity_alone": 1 / 3, "held_out_accuracy_redundancy_alone": 1 / 3}
    )
    assert accuracies_alone(["redundancy"], chosen[:, 1:].numpy(), rejected[:, 1:].numpy()) == pytest.approx({"held_out_accuracy_redundancy_alone": 1 / 3})
    assert accuracies_alone(["mean"], torch.zeros(0, 1), torch.zeros(0, 1)) == {"held_out_accuracy_similarity_alone": None}
