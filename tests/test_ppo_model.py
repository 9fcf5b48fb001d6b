"""Policy, value and reference on one base: sharing, the critic's short path, sampling, saving."""

from __future__ import annotations

import pytest
import torch

from rlhf.models import load_causal_lm, load_tokenizer, resolve_model, weights_footprint_bytes
from rlhf.ppo.core import logprobs_from_logits
from rlhf.ppo.model import AdapterSettings, ModelSetupError, PolicyValueModel, build_policy_value_model

SMALL = AdapterSettings(r=4, alpha=8, value_layers=1)


@pytest.fixture(autouse=True)
def _one_thread():
    # The CPU is shared with other jobs; one thread avoids spin-waiting on preempted workers.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _perturb(model: PolicyValueModel, adapter: str, scale: float = 0.05, seed: int = 1) -> None:
    """Give an adapter non-zero weights (LoRA B starts at 0, which would hide mistakes)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.peft.named_parameters():
            if f"lora_B.{adapter}." in name:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)


def _batch(tokenizer, texts=("hello world", "write a short poem about the blue sky please")):
    encoded = tokenizer(list(texts), return_tensors="pt", padding=True)
    return encoded.input_ids, encoded.attention_mask


def _perturbed_rollout(tiny_model_dir, value_seed: int):
    """A model with non-zero policy and value adapters, and one sampled batch: (model, full, mask, length)."""
    tokenizer = load_tokenizer(tiny_model_dir)
    model = build_policy_value_model(tiny_model_dir, device="cpu", adapters=SMALL)
    _perturb(model, "policy")
    _perturb(model, "value", seed=value_seed)
    ids, mask = _batch(tokenizer)
    full, full_mask, responses, _ = _query_response(model, tokenizer, ids, mask)
    return model, full, full_mask, responses.size(1)


def _plain_logits(causal_lm, full, full_mask, length):
    """Response-position logits of a plain causal LM, positions counted from each row's first real token."""
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)
    return causal_lm(input_ids=full, attention_mask=full_mask, position_ids=positions).logits[:, -length - 1 : -1]


def _query_response(model, tokenizer, ids, mask, new_tokens=5, seed=0):
    torch.manual_seed(seed)
    responses, sampler = model.generate(
        ids, mask, max_new_tokens=new_tokens, temperature=0.7, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    full = torch.cat([ids, responses], 1)
    full_mask = torch.cat([mask, torch.ones_like(responses)], 1)
    return full, full_mask, responses, sampler


@pytest.mark.parametrize("four_bit", [False, True], ids=["fp32", "nf4"])
def test_policy_value_and_reference_share_one_base(tiny_model_dir, four_bit):
    model = build_policy_value_model(tiny_model_dir, load_in_4bit=four_bit, device="cpu", adapters=SMALL)
    base_alone = load_causal_lm(tiny_model_dir, load_in_4bit=four_bit, device="cpu")

    # Every non-trainable tensor is a base weight, held once: same count and bytes as the base alone.
    trainable = {id(p) for p in model.trainable_parameters()}
    frozen = [p for p in model.parameters() if id(p) not in trainable and "lora_" not in _name_of(model, p)]
    pointers = [p.data_ptr() for p in frozen]
    assert len(pointers) == len(set(pointers))
    assert sum(p.numel() * p.element_size() for p in frozen) == sum(
        p.numel() * p.element_size() for p in base_alone.parameters()
    )
    adapter_bytes = sum(p.numel() * p.element_size() for p in model.trainable_parameters())
    assert weights_footprint_bytes(model) == weights_footprint_bytes(base_alone) + adapter_bytes
    # trainable = policy LoRA + value LoRA + value head, all fp32
    assert all(p.dtype == torch.float32 and p.requires_grad for p in model.trainable_parameters())


def _name_of(model, param):
    for name, candidate in model.named_parameters():
        if candidate is param:
            return name
    return ""


def test_reference_is_the_base_with_adapters_disabled(tiny_model_dir):
    model, full, full_mask, length = _perturbed_rollout(tiny_model_dir, value_seed=2)
    ref_logits, _ = model.reference_forward(full, full_mask, length)
    expected = _plain_logits(load_causal_lm(tiny_model_dir, device="cpu"), full, full_mask, length)
    assert torch.allclose(ref_logits, expected, atol=1e-5)
    policy_logits = model.policy_logits(full, full_mask, length)
    assert not torch.allclose(policy_logits, ref_logits, atol=1e-3)  # the perturbed policy differs


def test_sampler_logprobs_match_a_fresh_forward_on_left_padded_rows(tiny_model_dir):
    tokenizer = load_tokenizer(tiny_model_dir)
    model = build_policy_value_model(tiny_model_dir, device="cpu", adapters=SMALL)
    _perturb(model, "policy")
    ids, mask = _batch(tokenizer)
    assert (mask == 0).any()  # the short prompt is left-padded
    full, full_mask, responses, sampler = _query_response(model, tokenizer, ids, mask, new_tokens=6)
    with torch.no_grad():
        forward = logprobs_from_logits(model.policy_logits(full, full_mask, responses.size(1)), responses, 0.7)
    assert torch.allclose(forward, sampler, atol=1e-4)


def test_sampling_ignores_the_checkpoints_stored_generation_settings(tiny_model_dir):
    """A stored repetition_penalty / top_k would change what is sampled without the log-probs knowing."""
    import transformers.generation.utils as generation_utils

    tokenizer = load_tokenizer(tiny_model_dir)
    model = build_policy_value_model(tiny_model_dir, device="cpu", adapters=SMALL)
    stored = model.peft.get_base_model().generation_config
    stored.repetition_penalty, stored.top_p, stored.no_repeat_ngram_size = 1.5, 0.5, 2
    seen = []
    original = generation_utils.GenerationMixin._get_logits_processor

    def spy(self, *args, **kwargs):
        processors = original(self, *args, **kwargs)
        seen.append([type(p).__name__ for p in processors])
        return processors

    generation_utils.GenerationMixin._get_logits_processor = spy
    try:
        ids, mask = _batch(tokenizer)
        _query_response(model, tokenizer, ids, mask, new_tokens=3)
    finally:
        generation_utils.GenerationMixin._get_logits_processor = original
    assert seen == [["_SamplerLogprobs"]]
    assert model.peft.get_base_model().generation_config.repetition_penalty == 1.5  # restored afterwards


def test_critic_short_path_equals_full_forward(tiny_model_dir):
    model, full, full_mask, length = _perturbed_rollout(tiny_model_dir, value_seed=3)
    _, features = model.reference_forward(full, full_mask, length)
    assert features.shape == (2, full.size(1) - 1, model.config.hidden_size)
    short = model.values(full, full_mask, length, features)
    model.use_value_shortcut = False
    full_path = model.values(full, full_mask, length)
    assert torch.allclose(short, full_path, atol=1e-5)
    assert model.validate_value_shortcut(full, full_mask)
    # the value adapter only touches the top layer: the lower layer is shared with the reference
    value_params = [n for n, _ in model.named_trainable_parameters() if ".value." in n]
    assert value_params and all(".layers.1." in n for n in value_params)


def test_value_head_starts_from_a_score_head_of_the_right_width(tiny_model_dir):
    hidden = 64
    head = torch.linspace(-1, 1, hidden).view(1, hidden)
    model = build_policy_value_model(tiny_model_dir, device="cpu", adapters=SMALL, value_head_weight=head)
    assert torch.equal(model.value_head.weight.data, head)
    with pytest.raises(ModelSetupError, match="hidden size is 64"):
        build_policy_value_model(tiny_model_dir, device="cpu", adapters=SMALL, value_head_weight=torch.zeros(1, 32))


def test_sft_adapter_start_keeps_a_frozen_reference_copy(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(tiny_model_dir)
    first = build_policy_value_model(tiny_model_dir, device="cpu", adapters=SMALL)
    _perturb(first, "policy", scale=0.2)
    sft_dir = first.save_policy_adapter(tmp_path / "sft", str(tiny_model_dir))

    model = build_policy_value_model(sft_dir, device="cpu", adapters=SMALL)
    assert model.reference_adapter == "reference"
    assert not any(".reference." in n for n, _ in model.named_trainable_parameters())
    ids, mask = _batch(tokenizer)
    full, full_mask, responses, _ = _query_response(model, tokenizer, ids, mask)
    length = responses.size(1)
    ref_before, _ = model.reference_forward(full, full_mask, length)
    with torch.no_grad():
        assert torch.allclose(model.policy_logits(full, full_mask, length), ref_before, atol=1e-5)  # policy starts at SFT
    _perturb(model, "policy", seed=9)
    ref_after, _ = model.reference_forward(full, full_mask, length)
    assert torch.equal(ref_before, ref_after)
    assert torch.allclose(ref_after, _plain_logits(load_causal_lm(sft_dir, device="cpu"), full, full_mask, length), atol=1e-5)


def test_saved_policy_adapter_loads_through_resolve_model(tiny_model_dir, tmp_path):
    tokenizer = load_tokenizer(tiny_model_dir)
    model = build_policy_value_model(tiny_model_dir, device="cpu", adapters=SMALL)
    _perturb(model, "policy")
    out = model.save_policy_adapter(tmp_path / "policy", str(tiny_model_dir))
    source = resolve_model(out)
    assert source.kind == "adapter" and source.adapter_of == str(tiny_model_dir)
    ids, mask = _batch(tokenizer)
    full, full_mask, responses, _ = _query_response(model, tokenizer, ids, mask)
    expected = _plain_logits(load_causal_lm(out, device="cpu"), full, full_mask, responses.size(1))
    with torch.no_grad():
        assert torch.allclose(model.policy_logits(full, full_mask, responses.size(1)), expected, atol=1e-5)
