"""One PPO rollout: sample responses, cut them at EOS, run the reference and the critic, score.

Then `compute_advantages` turns the rollout into per-token rewards, advantages and returns:
the numbered steps of the RLHF recipe (Stiennon et al. 2020; N+ implementation details).
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from rlhf.generate import left_pad
from rlhf.ppo import core
from rlhf.ppo.reward import checked_scores


@dataclass
class PhaseTimer:
    """Seconds spent per phase (generate, forward, score, train) since the last `reset`.

    `clock` is wall time by default; benchmarks on a shared machine may pass
    `time.process_time` (CPU seconds of this process), which other jobs do not inflate.
    """

    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    clock: Callable[[], float] = time.perf_counter

    @contextmanager
    def phase(self, name: str):
        start = self.clock()
        try:
            yield
        finally:
            self.seconds[name] += self.clock() - start

    def reset(self) -> dict[str, float]:
        out = dict(self.seconds)
        self.seconds = defaultdict(float)
        return out


@dataclass
class Rollout:
    """A batch of B episodes on the training device. S = P + T (prompt width + response width).

    query_responses, attention_mask: (B, S) long — left-padded prompts then responses cut at EOS
    (pad after it; mask 1 up to and including the EOS).
    responses: (B, T) long; mask: (B, T) bool (real response tokens); lengths, has_eos: (B,).
    logprobs: (B, T) the sampler's log-probs of the responses (the "old" policy's).
    ref_logprobs: (B, T) the reference's; values: (B, T) the critic's, before each token.
    features: (B, S-1, H) reference trunk features the critic's top layers start from.
    scores: (B,) reward after the missing-EOS penalty; raw_scores: (B,) before it.
    """

    query_responses: torch.Tensor
    attention_mask: torch.Tensor
    responses: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    has_eos: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor
    values: torch.Tensor
    features: torch.Tensor
    scores: torch.Tensor
    raw_scores: torch.Tensor
    prompts: list[Any]
    response_texts: list[str]

    @property
    def response_length(self) -> int:
        return self.responses.size(1)


@dataclass
class Advantages:
    """Per-token quantities from a rollout, all (B, T) and zero on masked-out positions."""

    kl: torch.Tensor
    kl_k3: torch.Tensor
    rewards: torch.Tensor
    non_score_rewards: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


def _chunks(total: int, size: int | None):
    size = size or total
    for start in range(0, total, size):
        yield slice(start, min(total, start + size))


def _pad_right(tensors: list[torch.Tensor], value: float) -> torch.Tensor:
    width = max(t.size(1) for t in tensors)
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.size(1)), value=value) for t in tensors], 0)


def collect_rollout(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    prompts: list[Any],
    reward,
    *,
    response_length: int,
    temperature: float,
    missing_eos_penalty: float | None,
    generation_batch_size: int | None = None,
    forward_batch_size: int | None = None,
    timer: PhaseTimer | None = None,
) -> Rollout:
    """Sample one response per prompt and gather everything the PPO update needs (no gradients).

    Steps: 1. generate (sampler log-probs recorded); 2. truncate after the first EOS;
    3. reference log-probs and critic features in one pass, then values; 4. decode and score,
    penalising responses without EOS.
    """
    timer = timer or PhaseTimer()
    device = model.device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    queries, query_mask = left_pad(prompt_ids, pad)
    queries, query_mask = queries.to(device), query_mask.to(device)

    # 1. sample
    with timer.phase("generate"):
        sampled, sampler_logprobs = [], []
        for rows in _chunks(len(prompt_ids), generation_batch_size):
            responses, logprobs = model.generate(
                queries[rows], query_mask[rows], max_new_tokens=response_length, temperature=temperature,
                eos_token_id=eos, pad_token_id=pad,
            )
            sampled.append(responses)
            sampler_logprobs.append(logprobs)
        raw_responses = _pad_right(sampled, pad)
        logprobs = _pad_right(sampler_logprobs, 0.0)

    # 2. truncate after the first EOS: the EOS stays, it carries the score
    truncated = core.truncate_after_eos(raw_responses, eos, pad)
    query_responses = torch.cat([queries, truncated.tokens], 1)
    attention_mask = torch.cat([query_mask, truncated.mask.long()], 1)
    length = truncated.tokens.size(1)

    # 3. reference log-probs + critic features (one pass), then the critic's values
    with timer.phase("forward"):
        ref_logprobs, values, features = [], [], []
        for rows in _chunks(len(prompt_ids), forward_batch_size):
            ref_logits, feats = model.reference_forward(query_responses[rows], attention_mask[rows], length)
            ref_logprobs.append(core.logprobs_from_logits(ref_logits, truncated.tokens[rows], temperature))
            del ref_logits
            with torch.no_grad():
                values.append(model.values(query_responses[rows], attention_mask[rows], length, feats).float())
            features.append(feats)
        ref_logprobs = torch.cat(ref_logprobs, 0)
        values = torch.cat(values, 0)
        features = torch.cat(features, 0)

    # 4. score the decoded responses
    with timer.phase("score"):
        texts = [
            tokenizer.decode(row[: int(n)].tolist(), skip_special_tokens=True)
            for row, n in zip(truncated.tokens.cpu(), truncated.lengths.cpu())
        ]
        raw_scores = reward.score(prompts, texts, query_response_ids=query_responses, mask=attention_mask)
        raw_scores = checked_scores(raw_scores, len(texts), reward).to(device)
        scores = core.penalise_missing_eos(raw_scores, truncated.has_eos, missing_eos_penalty)

    return Rollout(
        query_responses=query_responses,
        attention_mask=attention_mask,
        responses=truncated.tokens,
        mask=truncated.mask,
        lengths=truncated.lengths,
        has_eos=truncated.has_eos,
        logprobs=logprobs.to(device),
        ref_logprobs=ref_logprobs,
        values=values,
        features=features,
        scores=scores,
        raw_scores=raw_scores,
        prompts=list(prompts),
        response_texts=texts,
    )


def compute_advantages(
    rollout: Rollout, *, kl_coef: float, kl_estimator: str = "k1", gamma: float = 1.0, lam: float = 0.95, whiten_rewards: bool = False
) -> Advantages:
    """5. per-token KL penalty + score at the EOS; 6. GAE; 7. whiten advantages (over real tokens)."""
    mask = rollout.mask
    estimates = core.kl_estimators(rollout.logprobs, rollout.ref_logprobs)
    kl = torch.where(mask, estimates.k1, torch.zeros_like(estimates.k1))
    kl_k3 = torch.where(mask, estimates.k3, torch.zeros_like(estimates.k3))
    penalty_kl = kl if kl_estimator == "k1" else kl_k3
    rewards, non_score = core.per_token_rewards(rollout.scores, penalty_kl, kl_coef, mask, rollout.lengths)
    if whiten_rewards:
        rewards = core.masked_whiten(rewards, mask, shift_mean=False)
    values = torch.where(mask, rollout.values, torch.zeros_like(rollout.values))
    advantages, returns = core.compute_gae(rewards, values, mask, gamma, lam)
    advantages = core.masked_whiten(advantages, mask)
    return Advantages(kl, kl_k3, rewards, non_score, advantages, returns)
