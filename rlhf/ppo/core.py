"""PPO for RLHF as pure tensor functions: masks, EOS truncation, rewards, KL, GAE, clipped losses.

Shapes: B = rows (episodes), T = response tokens. A `mask` is a bool (B, T) tensor, True on the
response's real tokens: from the first token up to and including the EOS (or the last token
when there is none). Every reduction is over masked positions only, so padding never leaks
into a mean, a variance or a loss.

References: Stiennon et al. (2020), "Learning to summarize from human feedback"; Huang et al.
(2024), "The N+ Implementation Details of RLHF with PPO" (numbers below cite its details);
Schulman et al. (2016) for GAE; Ziegler et al. (2019) for the adaptive KL controller.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------- masked statistics


def masked_mean(values: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `values` where `mask` is True; over everything (scalar) or along `dim`.

    values: any shape; mask: same shape, bool. Empty selections give 0 rather than NaN so a
    fully masked row never poisons a loss.
    """
    mask = mask.to(values.dtype)
    if dim is None:
        return (values * mask).sum() / mask.sum().clamp(min=1.0)
    return (values * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(values: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the masked elements (scalar); Bessel-corrected when `unbiased` and n > 1."""
    mean = masked_mean(values, mask)
    centred_sq = (values - mean) ** 2
    variance = masked_mean(centred_sq, mask)
    if unbiased:
        count = mask.sum().to(values.dtype)
        if count > 1:
            variance = variance * count / (count - 1)
    return variance


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise the masked elements to unit variance (and zero mean when `shift_mean`).

    Masked-out positions are returned as 0 so downstream sums stay clean. N+ detail 11: the
    advantages are whitened over the batch's real tokens.
    """
    mean = masked_mean(values, mask)
    variance = masked_var(values, mask)
    whitened = (values - mean) * torch.rsqrt(variance + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, torch.zeros_like(whitened))


# --------------------------------------------------------------------------- responses and EOS


def first_true_indices(bools: torch.Tensor, dtype: torch.dtype = torch.long) -> torch.Tensor:
    """Index of the first True in each row of a (B, T) bool tensor; T for rows with none. → (B,)"""
    length = bools.size(-1)
    positions = torch.arange(length, dtype=dtype, device=bools.device).expand_as(bools)
    filled = torch.where(bools, positions, torch.full_like(positions, length))
    return filled.min(dim=-1).values


class TruncatedResponses(NamedTuple):
    """Responses cut after their first EOS. All tensors have B rows.

    tokens: (B, T) with every token after the first EOS replaced by `pad_token_id`.
    mask: (B, T) bool, True up to and including the EOS (the whole row when there is none).
    lengths: (B,) number of real tokens (EOS included); the last real token is at `lengths - 1`.
    has_eos: (B,) bool, whether the response ended by itself.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    has_eos: torch.Tensor


def truncate_after_eos(responses: torch.Tensor, eos_token_id: int, pad_token_id: int) -> TruncatedResponses:
    """Cut each (B, T) response after its first EOS (N+ detail 23: truncate, then score).

    The EOS stays a real token: when the pad token equals EOS (SmolLM2), the lengths still come
    from the first EOS, never from "the first pad", so the score lands on the EOS itself.
    """
    is_eos = responses == eos_token_id
    first_eos = first_true_indices(is_eos)  # (B,) T when absent
    positions = torch.arange(responses.size(1), device=responses.device).expand_as(responses)
    mask = positions <= first_eos.unsqueeze(1)
    has_eos = first_eos < responses.size(1)
    lengths = torch.where(has_eos, first_eos + 1, torch.full_like(first_eos, responses.size(1)))
    tokens = torch.where(mask, responses, torch.full_like(responses, pad_token_id))
    return TruncatedResponses(tokens, mask, lengths, has_eos)


def penalise_missing_eos(scores: torch.Tensor, has_eos: torch.Tensor, penalty: float | None) -> torch.Tensor:
    """Subtract `penalty` from the (B,) scores of responses without EOS (N+ detail 23.3)."""
    if penalty is None:
        return scores
    return torch.where(has_eos, scores, scores - penalty)


# --------------------------------------------------------------------------- log-probabilities


def logprobs_from_logits(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of each token under softmax(logits / temperature).

    logits: (B, T, V) predicting `tokens`: (B, T). → (B, T) float32. The sampling temperature must
    be applied here too, or the PPO ratio is not 1 at the start (N+ detail 4).
    """
    scaled = logits.float() / temperature
    # log_softmax at one index = logit - logsumexp: avoids materialising a second (B, T, V) tensor.
    chosen = torch.gather(scaled, -1, tokens.unsqueeze(-1)).squeeze(-1)
    return chosen - torch.logsumexp(scaled, dim=-1)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) at each position: (B, T, V) → (B, T)."""
    scaled = logits.float() / temperature
    log_probs = F.log_softmax(scaled, dim=-1)
    return -(log_probs.exp() * log_probs).sum(-1)


class KLEstimates(NamedTuple):
    """Per-token estimates of KL(policy || reference) from samples of the policy, each (B, T).

    k1 = log p - log q: unbiased, can be negative per token.
    k3 = (q/p - 1) - log(q/p): unbiased, never negative, lower variance (Schulman, "Approximating
    KL divergence", 2020).
    """

    k1: torch.Tensor
    k3: torch.Tensor


def kl_estimators(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> KLEstimates:
    """k1 and k3 from (B, T) log-probs of the sampled tokens under the policy and the reference."""
    log_ratio = logprobs - ref_logprobs  # log p/q
    k1 = log_ratio
    k3 = torch.expm1(-log_ratio) + log_ratio
    return KLEstimates(k1, k3)


# --------------------------------------------------------------------------- rewards and advantages


def per_token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, mask: torch.Tensor, lengths: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards for each response token: -kl_coef * kl everywhere, plus the score on the last real token.

    scores: (B,); kl, mask: (B, T); lengths: (B,) ≥ 1. Returns (rewards, non_score_rewards), both
    (B, T) and zero on masked-out positions. The score sits on the EOS token (the last real
    token), where the episode ends (Stiennon et al. 2020, eq. 2).
    """
    non_score = torch.where(mask, -kl_coef * kl, torch.zeros_like(kl))
    rewards = non_score.clone()
    rows = torch.arange(scores.size(0), device=scores.device)
    rewards[rows, lengths - 1] += scores.to(rewards.dtype)
    return rewards, non_score


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over each response (Schulman et al. 2016).

    rewards, values: (B, T); mask: (B, T) bool, a prefix of each row (real tokens). The episode
    ends after the last real token, so the value after it is 0. Returns (advantages, returns),
    (B, T), zero where masked; returns = advantages + values (the value targets).

        delta_t = r_t + gamma * V_{t+1} - V_t
        A_t = delta_t + gamma * lam * A_{t+1}
    """
    maskf = mask.to(values.dtype)
    rewards = rewards * maskf
    values = values * maskf
    next_advantage = torch.zeros_like(values[:, 0])
    advantages = torch.zeros_like(values)
    length = values.size(1)
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(values[:, 0])
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        next_advantage = (delta + gamma * lam * next_advantage) * maskf[:, t]
        advantages[:, t] = next_advantage
    returns = (advantages + values) * maskf
    return advantages, returns


# --------------------------------------------------------------------------- losses


class PolicyLoss(NamedTuple):
    """Scalar tensors: loss (to minimise), clip fraction, approximate KL(old || new) = ½ E[(log r)²],
    and the mean ratio r."""

    loss: torch.Tensor
    clipfrac: torch.Tensor
    approx_kl: torch.Tensor
    ratio: torch.Tensor


def policy_loss(
    new_logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> PolicyLoss:
    """PPO's clipped surrogate, averaged over real tokens. All inputs (B, T); mask bool (B, T).

        L = E[max(-A r, -A clip(r, 1-eps, 1+eps))],  r = exp(new - old)
    """
    # Zero outside the mask before exp: after the EOS the log-probs are of padding and may differ
    # by tens of nats, and an inf there would turn the masked mean (and its gradient) into NaN.
    log_ratio = torch.where(mask, new_logprobs - old_logprobs, torch.zeros_like(new_logprobs))
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = 0.5 * masked_mean(log_ratio.detach() ** 2, mask)
        mean_ratio = masked_mean(ratio.detach(), mask)
    return PolicyLoss(loss, clipfrac, approx_kl, mean_ratio)


class ValueLoss(NamedTuple):
    """Scalar tensors: loss (to minimise) and the fraction of tokens where clipping bound."""

    loss: torch.Tensor
    clipfrac: torch.Tensor


def value_loss(
    new_values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
) -> ValueLoss:
    """Clipped value loss ½ E[max((V - R)², (clip(V, V_old ± eps) - R)²)] over real tokens; (B, T) inputs."""
    clipped_values = old_values + torch.clamp(new_values - old_values, -clip_range_value, clip_range_value)
    unclipped_loss = (new_values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_loss > unclipped_loss).float(), mask)
    return ValueLoss(loss, clipfrac)


# --------------------------------------------------------------------------- KL coefficient


@dataclass
class KLController:
    """The KL penalty coefficient beta: fixed, or adaptive (Ziegler et al. 2019, section 2.2).

    Adaptive: e = clip(KL / target - 1, -0.2, 0.2); beta *= 1 + e * n / horizon, where KL is the
    mean per-response KL of the last batch and n the number of episodes in it.
    """

    value: float
    adaptive: bool = False
    target: float = 6.0
    horizon: int = 10000

    def update(self, mean_kl: float, n_episodes: int) -> float:
        """Adjust beta after a batch (no-op when fixed); returns the new value."""
        if self.adaptive and math.isfinite(mean_kl):
            error = min(max(mean_kl / self.target - 1.0, -0.2), 0.2)
            self.value *= 1.0 + error * n_episodes / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value, "adaptive": self.adaptive, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
        self.adaptive = bool(state["adaptive"])
        self.target = float(state["target"])
        self.horizon = int(state["horizon"])


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions of left-padded rows: 0 at each row's first real token. (B, S) → (B, S) long.

    Generation numbers positions this way; every later forward pass must too, or with absolute
    position embeddings (GPT-2) the log-probs differ from the sampler's (N+ detail 21; rotary
    embeddings happen to be invariant to a per-row shift). Pad positions get 0 (masked anyway).
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


__all__ = [
    "KLController",
    "KLEstimates",
    "PolicyLoss",
    "TruncatedResponses",
    "ValueLoss",
    "compute_gae",
    "entropy_from_logits",
    "first_true_indices",
    "kl_estimators",
    "logprobs_from_logits",
    "masked_mean",
    "masked_var",
    "masked_whiten",
    "penalise_missing_eos",
    "per_token_rewards",
    "policy_loss",
    "position_ids_from_mask",
    "truncate_after_eos",
    "value_loss",
]
