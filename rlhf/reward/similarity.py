"""The prompt–reply similarity feature: r(x, y) = cross-encoder score + w · sim(x, y).

A cross-encoder trained on preferences inside one prompt never has to read the prompt (both
replies answer it), so "does the reply address this prompt" does not carry to new prompts.
The frozen base model already knows it. `RewardConfig.prompt_similarity` adds a similarity of
prompt and reply read off the frozen base with one learned weight `w`, fitted jointly with the
cross-encoder by the same Bradley–Terry loss. Two similarities:

- `coverage` (the default): how much of the prompt the reply covers — the mean over the prompt's
  tokens of the best cosine with any of the reply's tokens (BERTScore recall, Zhang et al. 2020,
  of the prompt against the reply), on contextual token embeddings;
- `mean`: the cosine between the mean-pooled embeddings of prompt and reply (a sentence encoder's
  native use).

A second frozen-base feature reads the reply alone (`RewardConfig.reply_redundancy`):

- `redundancy`: how much the reply repeats itself — the mean over its tokens (from the
  `REDUNDANCY_GAP`-th on) of the best cosine with any earlier token at least `REDUNDANCY_GAP`
  positions back (BERTScore of the reply against its own past). A reply that loops over a phrase
  matches its own earlier tokens almost exactly; one that moves on does not. Cross-encoders trained
  on a few thousand pairs read looping poorly, and worse on prompts they never saw.

The embeddings come from the reward model's own base with its adapter switched off (no second
model to load; the features are fixed during training, so they are computed once per pair). Each
feature the reward adds gets its own learned weight (`base_features` returns them as columns).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch

from rlhf.reward.data import PromptInput

SIMILARITY_KINDS = ("coverage", "mean")
"""What `RewardConfig.prompt_similarity` may name (see the module docstring)."""
REDUNDANCY = "redundancy"
"""The reply-only feature's name in a feature list (`RewardConfig.reply_redundancy`)."""
REDUNDANCY_GAP = 3
"""A token is matched against tokens at least this many positions back: its immediate neighbours share context,
so their embeddings are close in any reply."""

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
    scope = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))  # less padding per batch
    out: torch.Tensor | None = None
    with scope:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = tokenizer([texts[i] for i in chunk], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            if batch["input_ids"].shape[1] == 0:  # only empty texts (a tokenizer without special tokens): no direction
                batch = _one_pad_token(batch, tokenizer)
            mask = batch["attention_mask"].to(device)
            hidden = backbone(input_ids=batch["input_ids"].to(device), attention_mask=mask).last_hidden_state.float()  # (b, T, H)
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (b, H)
            pooled = torch.nn.functional.normalize(pooled, dim=-1).cpu()
            if out is None:
                out = torch.empty(len(texts), pooled.shape[1])
            out[chunk] = pooled
    return out


def _one_pad_token(batch, tokenizer):
    """A batch of empty texts as one masked-out pad token each: the backbone cannot run on zero positions."""
    rows = batch["input_ids"].shape[0]
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return {
        "input_ids": torch.full((rows, 1), pad, dtype=torch.long),
        "attention_mask": torch.zeros((rows, 1), dtype=torch.long),
        "special_tokens_mask": torch.ones((rows, 1), dtype=torch.long),
    }


def prompt_similarities(
    model: torch.nn.Module, tokenizer, prompts: Sequence[PromptInput], responses: Sequence[str], *, max_length: int,
    batch_size: int = 32, device=None, kind: str = "mean",
) -> torch.Tensor:
    """sim(prompt, response) of each pair, (N,) float32 on CPU, `kind` coverage or mean; each distinct text is embedded once."""
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    if kind not in SIMILARITY_KINDS:
        raise ValueError(f"prompt similarity {kind!r}: expected one of {', '.join(SIMILARITY_KINDS)}")
    if not prompts:
        return torch.empty(0)
    device = device if device is not None else next(model.parameters()).device
    prompt_texts = [prompt_text(p) for p in prompts]
    if kind == "coverage":
        return _coverages(model, tokenizer, prompt_texts, list(responses), max_length=max_length, batch_size=batch_size, device=device)
    distinct = sorted(set(prompt_texts) | set(responses))
    index = {text: i for i, text in enumerate(distinct)}
    embeddings = embed_texts(model, tokenizer, distinct, max_length=max_length, batch_size=batch_size, device=device)
    left = embeddings[[index[t] for t in prompt_texts]]
    right = embeddings[[index[t] for t in responses]]
    return (left * right).sum(dim=-1)


@torch.inference_mode()
def token_embeddings(model: torch.nn.Module, tokenizer, texts: Sequence[str], *, max_length: int, batch_size: int, device) -> list[torch.Tensor]:
    """Each text's unit-length contextual token embeddings, (n_tokens, H) float32 on CPU, special tokens left out."""
    backbone = _backbone(model)
    scope = model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()
    out: list[torch.Tensor | None] = [None] * len(texts)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    with scope:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in chunk], padding=True, truncation=True, max_length=max_length, return_tensors="pt", return_special_tokens_mask=True
            )
            if batch["input_ids"].shape[1] == 0:  # only empty texts: no token to match
                batch = _one_pad_token(batch, tokenizer)
            mask = batch["attention_mask"]
            hidden = backbone(input_ids=batch["input_ids"].to(device), attention_mask=mask.to(device)).last_hidden_state.float().cpu()
            keep = mask.bool() & ~batch["special_tokens_mask"].bool()
            for row, i in enumerate(chunk):
                out[i] = torch.nn.functional.normalize(hidden[row][keep[row]], dim=-1)
    return out  # type: ignore[return-value]


def _coverages(model, tokenizer, prompts: list[str], responses: list[str], *, max_length: int, batch_size: int, device) -> torch.Tensor:
    """Mean over each prompt's tokens of the best cosine with its response's tokens; 0 where either has no token.

    Prompts' token embeddings are kept (few); responses' are used batch by batch and dropped (many, long).
    """
    distinct_prompts = sorted(set(prompts))
    prompt_tokens = dict(zip(distinct_prompts, token_embeddings(model, tokenizer, distinct_prompts, max_length=max_length, batch_size=batch_size, device=device)))
    pairs = sorted(set(zip(prompts, responses)), key=lambda pair: -len(pair[1]))
    values: dict[tuple[str, str], float] = {}
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        replies = token_embeddings(model, tokenizer, [reply for _, reply in chunk], max_length=max_length, batch_size=batch_size, device=device)
        for (prompt, reply), reply_tokens in zip(chunk, replies):
            question = prompt_tokens[prompt]
            values[(prompt, reply)] = float((question @ reply_tokens.T).max(dim=1).values.mean()) if len(question) and len(reply_tokens) else 0.0
    return torch.tensor([values[pair] for pair in zip(prompts, responses)], dtype=torch.float32)


def reply_redundancies(model: torch.nn.Module, tokenizer, responses: Sequence[str], *, max_length: int, batch_size: int = 32, device=None) -> torch.Tensor:
    """How much each reply repeats itself, (N,) float32 on CPU: the mean over its tokens i ≥ gap of the best cosine
    with a token j ≤ i − gap (gap `REDUNDANCY_GAP`), on the frozen base's contextual embeddings; 0 when the reply
    has no more than `gap` tokens. Each distinct reply is embedded once."""
    if not responses:
        return torch.empty(0)
    device = device if device is not None else next(model.parameters()).device
    distinct = sorted(set(responses), key=len, reverse=True)
    values: dict[str, float] = {}
    for start in range(0, len(distinct), batch_size):
        chunk = distinct[start : start + batch_size]
        for reply, tokens in zip(chunk, token_embeddings(model, tokenizer, chunk, max_length=max_length, batch_size=batch_size, device=device)):
            values[reply] = _self_match(tokens, REDUNDANCY_GAP)
    return torch.tensor([values[r] for r in responses], dtype=torch.float32)


def _self_match(tokens: torch.Tensor, gap: int) -> float:
    """Mean over rows i ≥ gap of max_{j ≤ i − gap} cos(t_i, t_j) for unit rows `tokens` (n, H); 0 when n ≤ gap."""
    n = len(tokens)
    if n <= gap:
        return 0.0
    cosines = tokens @ tokens.T
    position = torch.arange(n)
    earlier = position[None, :] <= position[:, None] - gap  # (i, j): j at least `gap` before i
    best = cosines.masked_fill(~earlier, float("-inf")).max(dim=1).values[gap:]
    return float(best.mean())


def feature_direction(kind: str) -> float:
    """+1 when more of the feature should mean a better reply (a prompt similarity), −1 when less (redundancy)."""
    return -1.0 if kind == REDUNDANCY else 1.0


def accuracies_alone(kinds: Sequence[str], chosen, rejected) -> dict[str, float | None]:
    """What each feature alone gets right on pairs, the better reply by `feature_direction`: chosen / rejected (N, F),
    tensors or arrays; `held_out_accuracy_similarity_alone` and `held_out_accuracy_redundancy_alone` (None: no pair)."""
    out: dict[str, float | None] = {}
    for column, kind in enumerate(kinds):
        name = "redundancy" if kind == REDUNDANCY else "similarity"
        wins = feature_direction(kind) * (chosen[:, column] - rejected[:, column]) > 0
        out[f"held_out_accuracy_{name}_alone"] = float(wins.sum()) / len(wins) if len(wins) else None
    return out


def base_features(
    model: torch.nn.Module, tokenizer, prompts: Sequence[PromptInput], responses: Sequence[str], kinds: Sequence[str], *, max_length: int,
    batch_size: int = 32, device=None,
) -> torch.Tensor:
    """The frozen base's features of each (prompt, reply), (N, len(kinds)) float32 on CPU, one column per kind
    (coverage / mean: `prompt_similarities`; redundancy: `reply_redundancies`)."""
    columns = []
    for kind in kinds:
        if kind == REDUNDANCY:
            columns.append(reply_redundancies(model, tokenizer, list(responses), max_length=max_length, batch_size=batch_size, device=device))
        else:
            columns.append(prompt_similarities(model, tokenizer, prompts, responses, max_length=max_length, batch_size=batch_size, device=device, kind=kind))
    return torch.stack(columns, dim=1) if columns else torch.zeros(len(responses), 0)


REFIT_L2 = 1e-3
"""Ridge on the refit weights: a handful of separable validation pairs would otherwise send them to infinity."""


def refit_feature_weights(cross_margin: torch.Tensor, feature_margin: torch.Tensor, start: torch.Tensor, *, steps: int = 100) -> torch.Tensor:
    """Feature weights w refit by Bradley–Terry on pairs the adapter never trained on (`RewardConfig.refit_features`).

    `cross_margin` (N,): the trained cross-encoder's chosen − rejected score, held fixed (an offset);
    `feature_margin` (N, F): the features' chosen − rejected. Maximises mean log σ(cross + feature · w) − REFIT_L2 |w|²
    from `start` (the weights training learned). Why: trained jointly, the weights are fitted where the cross-encoder
    already knows the prompts (it has memorised them), so they come out as small as the training prompts need, while on
    new prompts the cross-encoder knows less and the features, which carry over, should count for more.
    """
    cross = cross_margin.detach().double().reshape(-1)
    if len(cross) == 0:
        return start.detach().clone()
    features = feature_margin.detach().double().reshape(len(cross), -1)
    weights = start.detach().double().reshape(-1).clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([weights], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def loss_of() -> torch.Tensor:
        optimizer.zero_grad()
        loss = -torch.nn.functional.logsigmoid(cross + features @ weights).mean() + REFIT_L2 * (weights**2).sum()
        loss.backward()
        return loss

    optimizer.step(loss_of)
    refit = weights.detach()
    if not torch.isfinite(refit).all():  # nothing to learn from: keep what training found
        return start.detach().clone()
    return refit.to(start.dtype)
