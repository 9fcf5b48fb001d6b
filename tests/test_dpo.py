"""DPO through TRL on the tiny model: two steps, 4-bit, SFT-adapter start, outputs, bad input, CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from rlhf.dpo import DPORunConfig, preference_dataset_rows, train_dpo
from rlhf.models import load_causal_lm, resolve_model
from rlhf.progress import Cancelled, RecordingReporter
from rlhf.reward.data import RewardDataError


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def export_file(path: Path, n: int = 12, conversational: bool = False) -> Path:
    """A TRL preference export like `rlhf export` writes (split column, margin)."""
    rng = random.Random(0)
    words = "the a is to of and in it this that yes no please hello world cat dog tree sky blue".split()
    rows = []
    for i in range(n):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
        row = {"prompt": prompt, "chosen": "good helpful answer", "rejected": "bad unsafe answer", "margin": 0.0,
               "split": "test" if i % 6 == 0 else "train"}
        if conversational:
            row["prompt"] = [{"role": "user", "content": prompt}]
            row["chosen"] = [{"role": "assistant", "content": row["chosen"]}]
            row["rejected"] = [{"role": "assistant", "content": row["rejected"]}]
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(tiny_model_dir, data, out, **overrides) -> DPORunConfig:
    values = dict(data=str(data), policy=str(tiny_model_dir), out=str(out), device="cpu", max_steps=2, batch_size=2,
                  lora_r=4, lora_alpha=8, max_length=64, learning_rate=1e-3, logging_steps=1, save_steps=1000)
    values.update(overrides)
    return DPORunConfig(**values)


def _adapter_weights(directory: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(directory / "adapter_model.safetensors"))


@pytest.mark.parametrize("four_bit", [False, True], ids=["fp32", "nf4"])
def test_two_dpo_steps_write_a_loadable_adapter_with_lineage(tiny_model_dir, tmp_path, four_bit):
    out = tmp_path / "dpo"
    reporter = RecordingReporter()
    result = train_dpo(tiny_config(tiny_model_dir, export_file(tmp_path / "pairs.jsonl"), out, load_in_4bit=four_bit), reporter=reporter)
    assert result.steps == 2
    assert [p[0] for p in reporter.progress_calls] == [1, 2]
    assert reporter.metric_points and "loss" in reporter.metric_points[0][1]
    source = resolve_model(out)
    assert source.kind == "adapter" and source.adapter_of == str(tiny_model_dir)
    weights = _adapter_weights(out)
    assert weights and all(w.dtype == torch.float32 for w in weights.values())
    assert any("lora_B" in k and w.abs().sum() > 0 for k, w in weights.items())  # trained away from zero
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["kind"] == "dpo" and lineage["data"]["train_pairs"] == 10 and lineage["data"]["test_pairs"] == 2
    assert lineage["reference"] == "base model (adapter disabled)" and lineage["config"]["max_steps"] == 2
    assert "eval_loss" in result.metrics
    load_causal_lm(out, device="cpu")  # loads back as a policy


def test_conversational_export_and_an_sft_adapter_start(tiny_model_dir, tmp_path):
    first = train_dpo(tiny_config(tiny_model_dir, export_file(tmp_path / "plain.jsonl"), tmp_path / "sft"))
    before = _adapter_weights(first.output_dir)
    second = train_dpo(tiny_config(first.output_dir, export_file(tmp_path / "chat.jsonl", conversational=True), tmp_path / "dpo2"))
    lineage = json.loads((second.output_dir / "lineage.json").read_text())
    assert lineage["reference"] == "frozen copy of the starting adapter" and lineage["data"]["conversational"]
    assert resolve_model(second.output_dir).adapter_of == str(tiny_model_dir)  # base of the SFT adapter, not the adapter
    after = _adapter_weights(second.output_dir)
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)


def test_plain_prompts_become_chat_messages_when_asked():
    import pandas as pd

    frame = pd.DataFrame({"prompt": ["hi"], "chosen": ["a"], "rejected": ["b"]})
    assert preference_dataset_rows(frame, conversational=True) == [
        {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "a"}],
         "rejected": [{"role": "assistant", "content": "b"}]}
    ]
    assert preference_dataset_rows(frame, conversational=False) == [{"prompt": "hi", "chosen": "a", "rejected": "b"}]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"prompt": "p", "chosen": "a"}\n', "missing column"),
        ('{"prompt": "p", "chosen": "a", "rejected": 3}\n', "row 1: field 'rejected'"),
    ],
)
def test_bad_export_names_the_place_and_writes_nothing(tiny_model_dir, tmp_path, content, message):
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    with pytest.raises(RewardDataError, match=message):
        train_dpo(tiny_config(tiny_model_dir, data, tmp_path / "out"))
    assert not (tmp_path / "out" / "adapter_config.json").exists()


def test_cancel_stops_with_a_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "dpo"
    with pytest.raises(Cancelled):
        train_dpo(tiny_config(tiny_model_dir, export_file(tmp_path / "pairs.jsonl"), out, max_steps=4), reporter=RecordingReporter(stop_after=1))
    assert list((out / "checkpoints").glob("checkpoint-*")) and not (out / "adapter_config.json").exists()


def test_cli_dpo(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from rlhf.cli import app

    data = export_file(tmp_path / "pairs.jsonl")
    out = tmp_path / "cli"
    args = ["dpo", "--data", str(data), "--policy", str(tiny_model_dir), "--out", str(out), "--device", "cpu", "--max-steps", "1",
            "--batch-size", "2", "--lora-r", "4", "--max-length", "64"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert (out / "lineage.json").is_file()
    bad = CliRunner().invoke(app, ["dpo", "--data", str(tmp_path / "missing.jsonl"), "--policy", str(tiny_model_dir), "--out", str(out)])
    assert bad.exit_code == 2 and "missing.jsonl" in bad.output
