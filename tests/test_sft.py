"""SFT through TRL on the tiny model: full / LoRA / QLoRA, reply-only loss, truncation, resume, outputs, bad input."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch

from rlhf.models import load_causal_lm, load_tokenizer, resolve_model
from rlhf import sft as sft_module
from rlhf.progress import Cancelled, RecordingReporter
from rlhf.sft import (
    SFTDataError,
    SFTError,
    SFTExample,
    SFTRunConfig,
    encode_examples,
    estimate_training_memory,
    held_out_loss,
    parse_sft_record,
    read_sft_rows,
    train_sft,
)

WORDS = "the a is to of and in it this that yes no please hello world cat dog tree sky blue".split()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sft_file(path: Path, n: int = 12, shape: str = "messages", reply: str = "good helpful answer . yes") -> Path:
    """An SFT export like `rlhf export --format sft` writes: messages (or prompt/completion) and split."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        split = "test" if i % 6 == 0 else "train"
        if shape == "messages":
            rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": reply}], "split": split})
        else:
            rows.append({"prompt": [{"role": "user", "content": prompt}], "completion": [{"role": "assistant", "content": reply}], "split": split})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(model, data, out, **overrides) -> SFTRunConfig:
    values = dict(data=str(data), policy=str(model), out=str(out), device="cpu", max_steps=3, batch_size=4, lora_r=4,
                  lora_alpha=8, max_length=64, learning_rate=1e-2, logging_steps=1, save_steps=1000, eval_batch_size=4)
    values.update(overrides)
    return SFTRunConfig(**values)


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("method", ["lora", "qlora", "full"])
def test_each_method_learns_the_replies_and_writes_a_policy_with_lineage(tiny_model_dir, tmp_path, method):
    out = tmp_path / "sft"
    reporter = RecordingReporter()
    lr = 1e-2 if method != "full" else 3e-3
    result = train_sft(tiny_config(tiny_model_dir, sft_file(tmp_path / "d.jsonl"), out, method=method, learning_rate=lr), reporter=reporter)
    assert result.steps == 3 and [p[0] for p in reporter.progress_calls] == [1, 2, 3]
    assert reporter.metric_points and "loss" in reporter.metric_points[0][1]
    held = result.metrics["held_out"]
    assert held["after"]["loss"] < held["before"]["loss"]  # the reply became likelier on unseen prompts
    assert math.isclose(held["after"]["perplexity"], math.exp(held["after"]["loss"]), rel_tol=1e-6)
    assert json.loads((out / "metrics.json").read_text())["held_out"]["examples"] == 2
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["kind"] == "sft" and lineage["method"] == method and lineage["data"]["train_examples"] == 10
    assert lineage["weights_sha256"]
    source = resolve_model(out)
    if method == "full":
        assert source.kind == "local" and (out / "model.safetensors").is_file()
        base = load_causal_lm(tiny_model_dir, device="cpu")
        changed = load_causal_lm(out, device="cpu").state_dict()
        assert all(not torch.equal(changed[k], v) for k, v in base.state_dict().items() if "layers.0" in k and v.ndim == 2)
    else:
        assert source.kind == "adapter" and source.adapter_of == str(tiny_model_dir)
        from safetensors.torch import load_file

        weights = load_file(str(out / "adapter_model.safetensors"))
        assert all(w.dtype == torch.float32 for w in weights.values())
        assert any("lora_B" in k and w.abs().sum() > 0 for k, w in weights.items())
    memory = result.metrics["memory"]["measured"]
    # Adam: two fp32 moments per trainable parameter (plus a scalar step count per tensor)
    assert memory["gradients"] > 0 and 2 * memory["gradients"] <= memory["optimizer_state"] <= 2.01 * memory["gradients"]
    assert not (tmp_path / "sft.checkpoints").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_prompt_completion_rows_train_the_same_as_messages(tiny_model_dir, tmp_path):
    a = train_sft(tiny_config(tiny_model_dir, sft_file(tmp_path / "m.jsonl"), tmp_path / "a"))
    b = train_sft(tiny_config(tiny_model_dir, sft_file(tmp_path / "p.jsonl", shape="prompt-completion"), tmp_path / "b"))
    assert a.metrics["held_out"]["after"]["loss"] == pytest.approx(b.metrics["held_out"]["after"]["loss"], rel=1e-5)


def test_loss_is_on_the_reply_tokens_only(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir, padding_side="right")
    example = SFTExample(prompt=[{"role": "user", "content": "hello world"}], completion="yes please", split="train", where="x")
    encoded = encode_examples(tokenizer, [example], max_length=64, use_chat_template=True)
    ids, mask = encoded.input_ids[0], encoded.completion_mask[0]
    learnt = [i for i, m in zip(ids, mask) if m]
    assert tokenizer.decode(learnt[:-1]) == "yes please" and learnt[-1] == tokenizer.eos_token_id
    prompt_text = tokenizer.apply_chat_template([{"role": "user", "content": "hello world"}], add_generation_prompt=True, tokenize=False)
    assert ids[: mask.index(1)] == tokenizer(prompt_text, add_special_tokens=False)["input_ids"]


def test_overlong_examples_are_truncated_and_counted_never_dropped(tiny_model_dir, tmp_path):
    long_reply = " ".join(["cat dog tree"] * 30)  # 90 tokens
    data = sft_file(tmp_path / "long.jsonl", reply=long_reply)
    result = train_sft(tiny_config(tiny_model_dir, data, tmp_path / "out", max_length=32, max_steps=1))
    assert result.metrics["data"]["replies_truncated"] == 12 and result.metrics["data"]["train_examples"] == 10
    tokenizer = load_tokenizer(tiny_model_dir, padding_side="right")
    encoded = encode_examples(tokenizer, read_sft_rows(data), max_length=32, use_chat_template=True)
    assert all(len(ids) == 32 for ids in encoded.input_ids)
    assert all(m[-1] == 0 and sum(m) > 10 for m in encoded.completion_mask)  # the cut end is not learnt as an end
    with pytest.raises(SFTDataError, match=r"long\.jsonl: line 1: longer than max_length=32"):
        train_sft(tiny_config(tiny_model_dir, data, tmp_path / "refused", max_length=32, overlong="error"))
    assert not (tmp_path / "refused").exists()


def test_cancel_then_resume_finishes_the_run(tiny_model_dir, tmp_path):
    class StopAfterTwo(RecordingReporter):
        def should_stop(self):
            return len(self.progress_calls) >= 2

    data = sft_file(tmp_path / "d.jsonl", n=24)
    config = tiny_config(tiny_model_dir, data, tmp_path / "out", max_steps=4, save_steps=1)
    with pytest.raises(Cancelled):
        train_sft(config, reporter=StopAfterTwo())
    assert not (tmp_path / "out").exists() and any((tmp_path / "out.checkpoints").glob("checkpoint-2"))
    reporter = RecordingReporter()
    result = train_sft(tiny_config(tiny_model_dir, data, tmp_path / "out", max_steps=4, save_steps=1, resume=True), reporter=reporter)
    assert result.steps == 4 and [p[0] for p in reporter.progress_calls] == [3, 4]
    assert json.loads((tmp_path / "out" / "lineage.json").read_text())["resumed_from"].endswith("checkpoint-2")


def test_non_finite_loss_stops_and_writes_nothing(tiny_model_dir, tmp_path, monkeypatch):
    from trl import SFTTrainer

    real = SFTTrainer.compute_loss

    def poisoned(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = real(self, model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        return loss * float("nan")

    monkeypatch.setattr(SFTTrainer, "compute_loss", poisoned)  # the loss on CUDA
    real_reply_loss = sft_module.reply_token_loss

    def poisoned_reply_loss(model, inputs, num_items_in_batch=None):  # the loss on CPU
        loss, logits = real_reply_loss(model, inputs, num_items_in_batch)
        return loss * float("nan"), logits

    monkeypatch.setattr(sft_module, "reply_token_loss", poisoned_reply_loss)
    with pytest.raises(SFTError, match="non-finite at step 1"):
        train_sft(tiny_config(tiny_model_dir, sft_file(tmp_path / "d.jsonl"), tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_held_out_loss_is_token_weighted():
    class Uniform(torch.nn.Module):
        training = False

        def forward(self, input_ids, attention_mask, **kwargs):
            return type("Out", (), {"logits": torch.zeros(*input_ids.shape, 4)})()

    result = held_out_loss(Uniform(), [[1, 2, 3], [1, 2]], [[0, 1, 1], [0, 1]], pad_id=0, batch_size=1, device="cpu")
    assert result["tokens"] == 3 and result["loss"] == pytest.approx(math.log(4)) and result["perplexity"] == pytest.approx(4.0)


# --------------------------------------------------------------------------- bad input and refusals


def test_full_method_that_cannot_fit_is_refused_before_loading(tiny_model_dir, tmp_path, monkeypatch):
    import rlhf.models
    import rlhf.sft

    monkeypatch.setattr(rlhf.sft, "available_memory_bytes", lambda device: 1000)
    monkeypatch.setattr(rlhf.models, "load_causal_lm", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SFTError, match=r"--method full .* needs about .* GiB .* only .* free: use --method lora or --method qlora"):
        train_sft(tiny_config(tiny_model_dir, sft_file(tmp_path / "d.jsonl"), tmp_path / "out", method="full"))
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.checkpoints").exists()


def test_memory_estimate_counts_weights_gradients_and_adam_state():
    full = estimate_training_memory(1000, method="full", trainable_parameters=1000, optim="adamw_torch")
    assert (full.weights, full.gradients, full.optimizer_state, full.total) == (4000, 4000, 8000, 16000)
    qlora = estimate_training_memory(1000, method="qlora", trainable_parameters=10, optim="paged_adamw_8bit")
    assert (qlora.weights, qlora.gradients, qlora.optimizer_state) == (562 + 40, 40, 20)


@pytest.mark.parametrize("optim", ["paged_adamw_8bit", "paged_adamw_32bit"])
def test_paged_optimizers_fail_at_once_without_cuda(tmp_path, optim, monkeypatch):
    import rlhf.sft

    monkeypatch.setattr(rlhf.sft, "load_sft_data", lambda *a, **k: pytest.fail("data was read"))
    with pytest.raises(SFTError, match=rf"{optim}.* needs CUDA.*use --optim adamw_torch"):
        train_sft(SFTRunConfig(data=str(tmp_path / "x.jsonl"), out=str(tmp_path / "o"), device="cpu", optim=optim))


def test_unknown_optimizer_and_unknown_model_are_named(tiny_model_dir, tmp_path):
    from rlhf.models import ModelNotFoundError

    with pytest.raises(SFTError, match="'adamw_tourch' is not a Transformers optimiser"):
        train_sft(tiny_config(tiny_model_dir, sft_file(tmp_path / "d.jsonl"), tmp_path / "o", optim="adamw_tourch"))
    with pytest.raises(ModelNotFoundError, match="no/such-model"):
        train_sft(tiny_config("no/such-model", sft_file(tmp_path / "d.jsonl"), tmp_path / "o"))
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "lines, message",
    [
        ([], r"e\.jsonl: no rows"),
        (["", "  "], r"e\.jsonl: no rows"),
        (['{"messages": [{"role": "user", "content": "hi"}]}'], r"line 1: field 'messages': no assistant turn"),
        (['{"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "hi"}]}'], r"line 1: field 'messages': the last turn is 'user'"),
        (['{"messages": [{"role": "assistant", "content": "a"}]}'], r"line 1: field 'messages': only an assistant turn"),
        (['{"text": "hello"}'], r"line 1: missing field 'messages' \(or 'prompt' and 'completion'\); found: text"),
        (['{"prompt": "hi"}'], r"line 1: missing field 'completion'"),
        (['{"prompt": "hi", "completion": "  "}'], r"line 1: field 'completion': empty reply"),
        (['{"prompt": "hi", "completion": "ok", "split": "dev"}'], r"line 1: field 'split': expected 'train' or 'test'"),
        (['{"prompt": "hi", "completion": "ok"}', "", "[1]"], r"line 3: expected a JSON object"),
        (['{"prompt": "hi", "completion": "ok"}', "{oops"], r"line 2: not valid JSON"),
        (['{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "ok"}]}'], r"line 1: field 'messages'\[0\]"),
        (['{"prompt": "", "completion": "ok"}'], r"line 1: field 'prompt': empty prompt"),
        (['{"messages": [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "ok"}]}'],
         r"line 1: field 'messages': the prompt has no user turn"),
        (['{"prompt": [{"role": "system", "content": "Be brief."}], "completion": "ok"}'], r"line 1: field 'prompt': the prompt has no user turn"),
        (['{"prompt": "hi", "completion": [{"role": "user", "content": "ok"}]}'], r"line 1: field 'completion'"),
        (['{"prompt": "hi", "completion": "ok"}', '{"messages": [{"role": "user", "content": "hi"}, {"role": "user", "content": "again"}]}'],
         r"e\.jsonl: line 2: field 'messages': no assistant turn"),
    ],
)
def test_bad_sft_files_name_the_file_line_and_field(tmp_path, lines, message):
    path = tmp_path / "e.jsonl"
    path.write_text("\n".join(lines) + ("\n" if lines else ""))
    with pytest.raises(SFTDataError, match=message):
        read_sft_rows(path)


def test_dataset_directory_and_parquet_exports_read_with_their_split(tmp_path):
    from datasets import Dataset, DatasetDict

    rows = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]} for i in range(3)]
    DatasetDict({"train": Dataset.from_list(rows[:2]), "test": Dataset.from_list(rows[2:])}).save_to_disk(str(tmp_path / "dir"))
    examples = read_sft_rows(tmp_path / "dir")
    assert [(e.completion, e.split) for e in examples] == [("a0", "train"), ("a1", "train"), ("a2", "test")]
    import pandas as pd

    pd.DataFrame([{"prompt": "q", "completion": "a", "split": "test"}]).to_parquet(tmp_path / "x.parquet")
    assert read_sft_rows(tmp_path / "x.parquet")[0].split == "test"
    bad = tmp_path / "bad.parquet"
    pd.DataFrame([{"prompt": "q", "completion": None}]).to_parquet(bad)
    with pytest.raises(SFTDataError, match=r"bad\.parquet: row 1: missing field 'completion'"):
        read_sft_rows(bad)


def test_config_refusals():
    with pytest.raises(ValueError, match="give data"):
        SFTRunConfig().validate()
    with pytest.raises(ValueError, match="method"):
        SFTRunConfig(data="x", method="half").validate()
    with pytest.raises(ValueError, match="max_length"):
        SFTRunConfig(data="x", max_length=4).validate()


def test_project_without_an_sft_export_format_is_a_clear_error(tmp_path, monkeypatch):
    import rlhf.export

    monkeypatch.setattr(rlhf.export, "EXPORT_FORMATS", ("trl", "ratings", "raw"))
    with pytest.raises(SFTError, match="--project needs `rlhf export --format sft`.*pass --data"):
        train_sft(SFTRunConfig(project="demo", out=str(tmp_path / "o"), device="cpu", database_url=f"sqlite:///{tmp_path}/x.db"))
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- fuzz


from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["role", "content", "x"]), inner, max_size=3),
    max_leaves=8,
)
_message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", 3]), "content": st.text(max_size=6) | st.integers()})
_record = st.dictionaries(
    st.sampled_from(["messages", "prompt", "completion", "split", "other"]),
    _json | st.lists(_message, max_size=4) | st.sampled_from(["train", "test"]),
    max_size=4,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_record)
def test_any_record_parses_or_is_refused_with_its_place(record):
    try:
        example = parse_sft_record(record, "f.jsonl: line 7")
    except SFTDataError as exc:
        assert str(exc).startswith("f.jsonl: line 7")
        return
    assert example.completion.strip() and example.split in ("train", "test")
    assert isinstance(example.prompt, str) or (example.prompt and all(set(m) == {"role", "content"} for m in example.prompt))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(max_size=30) | _record.map(json.dumps), max_size=4))
def test_any_jsonl_file_reads_or_names_a_line(tmp_path, lines):
    path = tmp_path / "fuzz.jsonl"
    path.write_text("\n".join(lines))
    try:
        examples = read_sft_rows(path)
    except SFTDataError as exc:
        assert str(exc).startswith(str(path))
        return
    assert examples


def test_an_existing_output_is_refused_unless_overwrite(tiny_model_dir, tmp_path):
    data, out = sft_file(tmp_path / "d.jsonl"), tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SFTError, match="exists \\(pass overwrite"):
        train_sft(tiny_config(tiny_model_dir, data, out, max_steps=1))
    assert (out / "keep.txt").read_text() == "mine"
    train_sft(tiny_config(tiny_model_dir, data, out, max_steps=1, overwrite=True))
    assert not (out / "keep.txt").exists() and (out / "adapter_model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "out"]
