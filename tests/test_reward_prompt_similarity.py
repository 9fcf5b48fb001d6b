"""The prompt–reply similarity term: reward = cross-encoder score + w · cos(e(prompt), e(reply)), w learned."""

from __future__ import annotations

import json
import random

import pytest
import torch

from rlhf.reward import RewardConfig, RewardModel, train_reward_model
from rlhf.reward.similarity import prompt_similarities, prompt_text
from test_reward_off_prompt import TOPICS, echo_preferences
from test_reward_train import tiny_config


def test_prompt_text_reads_every_turn():
    assert prompt_text("plain") == "plain"
    assert prompt_text([{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]) == "be brief\n\nhi"


def test_cosines_are_of_the_frozen_base_and_each_text_is_embedded_once(tiny_model_dir):
    from peft import get_peft_model

    from rlhf.models import load_sequence_classifier, load_tokenizer, lora_config

    tokenizer = load_tokenizer(str(tiny_model_dir), padding_side="right")
    model = load_sequence_classifier(str(tiny_model_dir), device="cpu", pad_token_id=tokenizer.pad_token_id)
    prompts, replies = ["talk about cat", "talk about cat", "talk about dog"], ["cat cat fine", "dog dog fine", "cat cat fine"]
    before = prompt_similarities(model, tokenizer, prompts, replies, max_length=64)
    assert before.shape == (3,) and torch.all(before.abs() <= 1.0 + 1e-5)
    assert prompt_similarities(model, tokenizer, ["cat"], ["cat"], max_length=64).item() == pytest.approx(1.0, abs=1e-5)
    coverage = prompt_similarities(model, tokenizer, prompts, replies, max_length=64, kind="coverage")
    # Training an adapter must not move the feature: it is read with the adapter switched off.
    peft_model = get_peft_model(model, lora_config("SEQ_CLS", r=4, modules_to_save=["score"]))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.add_(torch.randn_like(parameter))
    after = prompt_similarities(peft_model, tokenizer, prompts, replies, max_length=64)
    torch.testing.assert_close(after, before)
    torch.testing.assert_close(prompt_similarities(peft_model, tokenizer, prompts, replies, max_length=64, kind="coverage"), coverage)
    with pytest.raises(ValueError, match="prompt similarity 'max'"):
        prompt_similarities(peft_model, tokenizer, prompts, replies, max_length=64, kind="max")


def test_coverage_is_the_prompt_tokens_best_match_in_the_reply(tiny_model_dir):
    from rlhf.models import load_sequence_classifier, load_tokenizer
    from rlhf.reward.similarity import token_embeddings

    tokenizer = load_tokenizer(str(tiny_model_dir), padding_side="right")
    model = load_sequence_classifier(str(tiny_model_dir), device="cpu", pad_token_id=tokenizer.pad_token_id)
    coverage = lambda p, r: prompt_similarities(model, tokenizer, p, r, max_length=64, kind="coverage")  # noqa: E731
    assert coverage(["cat dog"], ["cat dog"]).item() == pytest.approx(1.0, abs=1e-5)  # every prompt token finds itself
    prompts, replies = ["write about cat", "write about cat", "tree sky"], ["cat cat here", "dog dog here", "sky blue tree"]
    values = coverage(prompts, replies)
    # The same numbers, by hand from the token embeddings (a prompt's and a reply's, batch by batch).
    tokens = token_embeddings(model, tokenizer, prompts + replies, max_length=64, batch_size=2, device="cpu")
    by_hand = [float((tokens[i] @ tokens[3 + i].T).max(dim=1).values.mean()) for i in range(3)]
    torch.testing.assert_close(values, torch.tensor(by_hand), atol=1e-5, rtol=1e-5)
    assert values[0] > values[1]  # the reply that mentions the prompt's topic covers more of it
    assert coverage(["cat", "cat"], ["", "cat"]).tolist()[0] == 0.0 and coverage(["cat"], [""]).item() == 0.0  # nothing to match
    assert prompt_similarities(model, tokenizer, ["cat"], [""], max_length=64).item() == 0.0  # no direction: cosine 0
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        prompt_similarities(model, tokenizer, prompts[:2], replies[:1], max_length=64)


SEEN = "cat dog tree sky blue green red python code poem story math".split()
UNSEEN = "number world hello list function sum".split()


def topical_preferences(path, per_topic: int = 6):
    """The preferred reply is about the prompt's topic, the other about another topic. Held-out prompts ask about
    topics no training pair mentions: a cross-encoder that memorised the training topics has nothing to go on."""
    rng = random.Random(0)
    rows = []
    for split, topics in (("train", SEEN), ("test", UNSEEN)):
        for topic in topics:
            for _ in range(per_topic):
                other = rng.choice([t for t in topics if t != topic])
                rows.append({"prompt": f"write about {topic}", "chosen": f"{topic} {topic} here", "rejected": f"{other} {other} here",
                             "margin": 0.0, "agreement": 1.0, "split": split})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("kind", ["coverage", "mean"])
def test_the_learned_weight_carries_topicality_to_unseen_prompts(kind, tiny_model_dir, tmp_path):
    data = topical_preferences(tmp_path / "topical.jsonl")
    # The adapter's step size is made too small to learn anything, so what the held-out pairs get right beyond the
    # untrained cross-encoder is the similarity term's doing (its weight has its own step size).
    config = tiny_config(tiny_model_dir, prompt_similarity=kind, learning_rate=1e-8)
    metrics = train_reward_model(config, tmp_path / "sim", data=data).metrics
    weight, parts = metrics["prompt_similarity"]["weight"], metrics["prompt_similarity"]
    assert weight > 0.3  # the training pairs reward similarity to the prompt, so its weight grows from 0
    assert parts["held_out_accuracy_similarity_alone"] > 0.7  # the frozen base: 0.78 on these unseen topics
    # Measured: the untrained cross-encoder 0.42, the sum 0.75.
    assert metrics["held_out"]["accuracy"] >= parts["held_out_accuracy_cross_encoder_alone"] + 0.15
    plain = train_reward_model(tiny_config(tiny_model_dir, learning_rate=1e-8), tmp_path / "plain", data=data).metrics
    assert plain["held_out"]["accuracy"] == pytest.approx(parts["held_out_accuracy_cross_encoder_alone"])


def test_scores_add_the_weighted_similarity_and_survive_a_reload(tiny_model_dir, tmp_path):
    data = echo_preferences(tmp_path / "echo.jsonl")
    plain = train_reward_model(tiny_config(tiny_model_dir, max_steps=2), tmp_path / "plain", data=data)
    with_term = train_reward_model(tiny_config(tiny_model_dir, prompt_similarity="coverage", max_steps=6), tmp_path / "sim", data=data)
    assert "prompt_similarity" not in plain.metrics and plain.model_config.prompt_similarity_weight is None
    weight = with_term.model_config.prompt_similarity_weight
    assert weight == with_term.metrics["prompt_similarity"]["weight"]
    saved = json.loads((tmp_path / "sim" / "reward_config.json").read_text())
    assert saved["prompt_similarity_weight"] == weight
    scorer = RewardModel.load(tmp_path / "sim", device="cpu")
    prompts, replies = [f"talk about {t}" for t in TOPICS], [f"{t} {t} fine" for t in TOPICS]
    cross_only = scorer.score(prompts, replies, normalize=False) - weight * scorer.prompt_similarity(prompts, replies)
    from rlhf.reward.scorer import raw_scores

    expected = raw_scores(scorer.model, scorer.encode(prompts, replies), pad_id=scorer.tokenizer.pad_token_id, batch_size=4, device="cpu")
    torch.testing.assert_close(cross_only, expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="use score"):
        scorer.score_token_ids(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))


@pytest.mark.parametrize(
    "overrides, message",
    [({"listwise": True}, "not with listwise"), ({"prompt_similarity": "max"}, "expected off, coverage or mean")],
)
def test_bad_settings_are_refused(overrides, message):
    with pytest.raises(ValueError, match=message):
        RewardConfig(**{"prompt_similarity": "coverage", **overrides}).validate()


def test_a_resumed_run_starts_from_the_saved_weight(tiny_model_dir, tmp_path):
    from rlhf.progress import Cancelled
    from rlhf.reward.train import SIMILARITY_WEIGHT_FILE, checkpoint_dir_for
    from test_reward_train import RecordingReporter

    data = topical_preferences(tmp_path / "topical.jsonl", per_topic=2)
    config = tiny_config(tiny_model_dir, prompt_similarity="mean", max_steps=6, save_steps=2, batch_size=4)
    straight = train_reward_model(config, tmp_path / "straight", data=data).model_config.prompt_similarity_weight
    with pytest.raises(Cancelled, match="step 3"):
        train_reward_model(config, tmp_path / "rm", data=data, reporter=RecordingReporter(stop_after=3))
    saved = json.loads((checkpoint_dir_for(tmp_path / "rm") / "checkpoint-3" / SIMILARITY_WEIGHT_FILE).read_text())["weights"][0]
    assert saved > 0
    resumed = train_reward_model(config, tmp_path / "rm", data=data, resume=True)
    assert resumed.resumed_from_step == 3
    # The weight and its optimiser state come back: the resumed run ends near the straight one (0.1734 vs 0.1749;
    # a resume is not bit-exact for the adapter either). Restarting the weight from 0 at step 3 ends at 0.048.
    assert resumed.model_config.prompt_similarity_weight == pytest.approx(straight, abs=0.01)


def test_cli_flag_reaches_training(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from rlhf.cli import app

    data = topical_preferences(tmp_path / "topical.jsonl", per_topic=1)
    args = ["train-reward", "--data", str(data), "--base", str(tiny_model_dir), "--out", str(tmp_path / "rm"), "--max-steps", "2", "--lora-r", "2", "--device", "cpu", "--max-length", "64"]
    result = CliRunner().invoke(app, [*args, "--prompt-similarity", "coverage"])
    assert result.exit_code == 0, result.output
    assert "feature weights coverage" in result.output
    metrics = json.loads((tmp_path / "rm" / "metrics.json").read_text())
    assert metrics["prompt_similarity"]["weight"] != 0.0
    result = CliRunner().invoke(app, [*args[:-12], "--out", str(tmp_path / "rm2"), "--prompt-similarity", "coverage", "--listwise"])
    assert result.exit_code != 0 and "listwise" in result.output and not (tmp_path / "rm2").exists()


def test_ppo_does_not_put_such_a_model_on_the_policy_base(tiny_model_dir, tmp_path):
    from rlhf.models import load_tokenizer
    from rlhf.ppo.reward import RewardDirectory

    data = topical_preferences(tmp_path / "topical.jsonl", per_topic=1)
    train_reward_model(tiny_config(tiny_model_dir, prompt_similarity="coverage", max_steps=1), tmp_path / "rm", data=data)
    directory = RewardDirectory(tmp_path / "rm")
    problem = directory.sharing_problem(directory.base_model_path, load_tokenizer(str(tiny_model_dir)), False)
    assert problem is not None and "similarity" in problem


def topical_ratings(path, per_topic: int = 4):
    """Ratings in the raw export's shape: a reply about the prompt's topic gets 6 on both dimensions, one about another
    topic 2. Training prompts on SEEN topics, held-out ones on UNSEEN topics (as `topical_preferences`)."""
    rng = random.Random(1)
    rows = []
    for split, topics in (("train", SEEN), ("test", UNSEEN)):
        for topic in topics:
            for _ in range(per_topic):
                other = rng.choice([t for t in topics if t != topic])
                for reply, score in ((f"{topic} {topic} here", 6), (f"{other} {other} here", 2)):
                    for annotator in ("ann-1", "ann-2"):
                        rows.append({"kind": "rating", "annotator": annotator, "prompt": f"write about {topic}", "response_a": reply,
                                     "score_helpfulness": score, "score_honesty": score, "split": split})
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("objective", ["regression", "joint"])
def test_each_dimension_head_learns_its_own_similarity_weight(objective, tiny_model_dir, tmp_path):
    pairs, ratings = topical_preferences(tmp_path / "topical.jsonl"), topical_ratings(tmp_path / "ratings.jsonl")
    # As for pairwise: the adapter cannot learn (step 1e-8), so what carries to the unseen topics is the term.
    config = tiny_config(tiny_model_dir, objective=objective, prompt_similarity="coverage", learning_rate=1e-8, max_steps=80)
    result = train_reward_model(config, tmp_path / "sim", data=pairs, ratings=ratings)
    metrics, model_config = result.metrics, result.model_config
    per_dimension = metrics["prompt_similarity"]["dimension_weights"]
    assert set(per_dimension) == {"helpfulness", "honesty"} and all(v > 0.1 for v in per_dimension.values())  # measured: 0.20 / 0.28 (regression), 0.98 / 1.01 (joint)
    assert model_config.prompt_similarity_dimension_weights == list(per_dimension.values())
    # The scalar's weight is the dimensions' weighted sum (equal weights here).
    assert model_config.prompt_similarity_weight == pytest.approx(sum(per_dimension.values()) / 2, rel=1e-5)
    parts = metrics["prompt_similarity"]
    assert metrics["held_out"]["accuracy"] >= parts["held_out_accuracy_cross_encoder_alone"] + 0.15  # measured: 0.50 → 0.69 / 0.78
    # Held-out ratings: the heads alone would be flat on unseen topics; with the term they rank on-topic replies higher.
    assert metrics["held_out"]["ratings"]["overall"]["pearson"] > 0.25  # measured: 0.37 (regression), 0.49 (joint)

    # Each dimension `rlhf score` reports carries its own share of the term, and so does the scalar.
    scorer = RewardModel.load(tmp_path / "sim", device="cpu")
    prompts, replies = ["write about hello", "write about hello"], ["hello hello here", "sum sum here"]
    similarity = scorer.prompt_similarity(prompts, replies)
    from rlhf.reward.scorer import raw_outputs

    heads = raw_outputs(scorer.model, scorer.encode(prompts, replies), pad_id=scorer.tokenizer.pad_token_id, batch_size=4, device="cpu")
    dimensions = scorer.score_dimensions(prompts, replies)
    for d, name in enumerate(("helpfulness", "honesty")):
        scale = model_config.dimension_scale[name]
        expected = scale["mean"] + scale["std"] * (heads[:, d] + per_dimension[name] * similarity)
        torch.testing.assert_close(dimensions[name], expected, atol=1e-4, rtol=1e-4)
    raw = scorer.score(prompts, replies, normalize=False)
    torch.testing.assert_close(raw, heads.mean(dim=1) + model_config.prompt_similarity_weight * similarity, atol=1e-4, rtol=1e-4)
