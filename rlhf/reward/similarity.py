"""The prompt–reply similarity feature: r(x, y) = cross-encoder score + w · cos(e(x), e(y)).

A cross-encoder trained on preferences inside one prompt never has to read the prompt (both
replies answer it), so "does the reply address this prompt" does not carry to new prompts.
The frozen base model used as a bi-encoder already knows it: the cosine between the mean-pooled
embeddings of prompt and reply. `RewardConfig.prompt_similarity` adds that cosine with one
learned weight `w`, fitted jointly with the cross-encoder by the same Bradley–Terry loss.

The embeddings come from the reward model's own base with its adapter switched off (no second
model to load; the feature is fixed during training, so it is computed once per text).
"""

from __future__ import annotations

from typing import Sequence

import torch

from rlhf.reward.data import PromptInput

SIMILARITY_LEARNING_RATE = 0.05
"""Adam step size of the one similarity weight. The adapter's rate (1e-4) would move a single number by at most
~0.1 over a whole run, far below the few units a cosine difference needs to count next to the cross-encoder's score."""


def prompt_text(prompt: PromptInput) -> str:
    """What the prompt is about: the text itself, or a chat prompt's turns' contents joined by blank lines."""
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(str(turn.get("content", "")) for turn in prompt)


def _backbone(model: torch.nn.Module) -> torch.nn.Module:
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    prefix = getattr(inner, "base_model_prefix", "")
    backbone = getattr(inner, prefix, None) if prefix else None
    if not isinstance(backbone, torch.nn.Module):
        raise ValueError(f"{type(inner).__name__} has no backbone {prefix!r}: the prompt similarity needs one")
    return backbone


@torch.inference_mode()
def embed_texts(model: torch.nn.Module, tokenizer, texts: Sequence[str], *, max_length: int, batch_size: int, device) -> torch.Tensor:
    """Unit-length mean-pooled embeddings from the frozen base (adapter off), (N, H) float32 on CPU."""
    if not texts:
        return torch.empty(0, 0)
    backbone = _backbone(model)
    scope = model.disable_adapter() if hasattr(model, "disable_adapter") else _nothing()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # less padding per batch
    out: torch.Tensor | None = None
    with scope:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in chunk], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            mask = batch["attention_mask"].to(device)
            hidden = backbone(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state.float()  # (b, T, H)
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (b, H)
            pooled = torch.nn.functional.normalize(pooled, dim=-1).cpu()
            if out is None:
                out = torch.empty(len(texts), pooled.shape[1])
            out[chunk] = pooled
    return out


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def prompt_similarities(
    model: torch.nn.Module, tokenizer, prompts: Sequence[PromptInput], responses: Sequence[str], *, max_length: int, batch_size: int = 32, device=None
) -> torch.Tensor:
    """cos(e(prompt), e(response)) of each pair, (N,) float32 on CPU; each distinct text is embedded once."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if not prompts:
        return torch.empty(0)
    device = device if device is not None else next(model.parameters()).device
    prompt_texts = [prompt_text(p) for p in prompts]
    distinct = sorted(set(prompt_texts) | set(responses))
    index = {text: i for i, text in enumerate(distinct)}
    embeddings = embed_texts(model, tokenizer, distinct, max_length=max_length, batch_size=batch_size, device=device)
    left = embeddings[[index[t] for t in prompt_texts]]
    right = embeddings[[index[t] for t in responses]]
    return (left * right).sum(dim=-1)
