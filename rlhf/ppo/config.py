"""`PPOConfig`: every setting of a PPO run, one docstring per field (read by the CLI for --help).

This module imports only the standard library: the CLI builds its options from these fields
while `rlhf --help` must stay fast and free of torch.

Defaults follow Huang et al. (2024), "The N+ Implementation Details of RLHF with PPO", scaled
down to LoRA on a small model (higher learning rate, short responses).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGED_POLICY = "smollm2-135m-instruct"
"""Same string as `rlhf.models.PACKAGED_SMOLLM2` (not imported: that module imports torch)."""


@dataclass
class PPOConfig:
    # ------------------------------------------------------------------ inputs and outputs
    policy: str = PACKAGED_POLICY
    """Starting policy: a hub id, a local checkpoint, the packaged alias, or an SFT adapter directory
    (then the reference policy is a frozen copy of that adapter)."""
    reward: str = ""
    """Reward model directory written by `rlhf train-reward` (holds `reward_config.json`)."""
    prompts: str = ""
    """A project name or id in the database, or a JSONL file whose lines have a `prompt` field
    (a string, or a list of chat messages with `role` and `content`)."""
    out: str = "runs/ppo"
    """Output directory: checkpoints, final policy adapter, lineage.json, metrics and samples."""
    database_url: str | None = None
    """Database URL used when `prompts` names a project (default: $RLHF_DATABASE_URL or data/rlhf.db)."""

    # ------------------------------------------------------------------ model
    load_in_4bit: bool = False
    """Quantise the shared base to 4-bit NF4 (QLoRA); the adapters and value head stay in fp32."""
    device: str | None = None
    """Device for a single-process run (default: CUDA if present, else CPU); under
    `accelerate launch` each process uses its own accelerator device."""
    lora_r: int = 16
    """LoRA rank of the policy and value adapters."""
    lora_alpha: int = 32
    """LoRA scaling numerator (alpha / r scales the update)."""
    lora_target_modules: str = "all-linear"
    """Modules that carry LoRA: `all-linear` or a comma-separated list of module names."""
    value_adapter_layers: int | None = 4
    """How many of the top decoder layers carry the value adapter. The layers below are the frozen
    reference trunk, whose features the reference pass already computes, so the critic trains
    through only these layers (about L/k times cheaper than a full critic). None: every layer."""
    value_head_init: str = "auto"
    """Value head initialisation: `reward` (copy the reward model's score head; needs the same base),
    `random`, or `auto` (reward when the bases match, else random)."""
    reward_on_policy_base: bool = True
    """When the reward model was trained on the policy's base (same weights, tokenizer and
    quantisation), load its LoRA as a third frozen adapter on the shared base instead of a second
    copy of the base. Otherwise (or when off) it loads on its own base."""

    # ------------------------------------------------------------------ rollouts
    total_iterations: int = 30
    """Number of PPO iterations (rollout, score, update)."""
    batch_size: int = 8
    """Prompts per iteration, per process (one response each)."""
    response_length: int = 48
    """Maximum new tokens per response; responses without EOS by then get `missing_eos_penalty`."""
    max_prompt_length: int = 256
    """Longest prompt in tokens (after the chat template). Longer prompts are an error unless
    `truncate_prompts` is set."""
    truncate_prompts: bool = False
    """Left-truncate prompts longer than `max_prompt_length` (keeping their end) and log how many,
    instead of refusing them."""
    chat_template: bool = True
    """Wrap plain-text prompts as a user message in the tokenizer's chat template (when it has one)."""
    temperature: float = 0.7
    """Sampling temperature. Every log-probability (policy, reference, rollout) uses logits / T
    (N+ implementation details, detail 4)."""
    generation_batch_size: int | None = None
    """Prompts generated at once (default: the whole batch); lower it to bound memory."""
    forward_batch_size: int | None = None
    """Rows per no-grad forward pass (reference, values) in the rollout (default: the whole batch)."""
    reward_batch_size: int = 16
    """Rows per reward-model call."""
    missing_eos_penalty: float | None = 1.0
    """Subtracted from the score of a response that ends without EOS (Ziegler et al. 2019); None: off."""

    # ------------------------------------------------------------------ PPO update
    ppo_epochs: int = 4
    """Passes over each rollout batch."""
    num_mini_batches: int = 2
    """Mini-batches per epoch (the batch is shuffled each epoch); one optimiser step each."""
    learning_rate: float = 1e-4
    """Adam learning rate for the adapters and the value head (LoRA needs more than full fine-tuning)."""
    anneal_lr: bool = True
    """Decay the learning rate linearly to zero over `total_iterations`."""
    adam_eps: float = 1e-5
    """Adam epsilon (1e-5 as in the OpenAI baselines, not PyTorch's 1e-8)."""
    max_grad_norm: float = 1.0
    """Global gradient-norm clip over all trainable parameters."""
    gamma: float = 1.0
    """Discount factor (1: rewards arrive once per episode)."""
    lam: float = 0.95
    """GAE lambda."""
    clip_range: float = 0.2
    """Policy ratio clip epsilon."""
    clip_range_value: float = 0.2
    """Value prediction clip around the rollout values."""
    vf_coef: float = 0.1
    """Weight of the value loss against the policy loss."""
    whiten_rewards: bool = False
    """Whiten per-token rewards before GAE (off in the N+ baseline)."""

    # ------------------------------------------------------------------ KL penalty
    kl_coef: float = 0.05
    """Initial coefficient of the per-token KL penalty (beta)."""
    adaptive_kl: bool = False
    """Adapt the coefficient towards `kl_target` (Ziegler et al. 2019) instead of keeping it fixed."""
    kl_target: float = 6.0
    """Target KL per response in nats, for the adaptive controller."""
    kl_horizon: int = 10000
    """Horizon (in episodes) of the adaptive controller."""
    kl_estimator: str = "k1"
    """Estimator used in the reward penalty: `k1` (log-ratio) or `k3` ((r-1) - log r, non-negative).
    Both are logged."""

    # ------------------------------------------------------------------ checks, logging, checkpoints
    seed: int = 0
    """Random seed (each process adds its rank)."""
    self_check: bool = True
    """On the first mini-batch of the first epoch check ratio = 1 and KL(policy || sampler) = 0, and
    stop with an error otherwise (catches padding, position-id and temperature bugs)."""
    self_check_tolerance: float | None = None
    """Largest mean |log-prob difference| (nats per token) the self-check allows; None: 1e-3 when
    computing in fp32, 5e-2 in bf16."""
    checkpoint_every: int = 10
    """Save a checkpoint every this many iterations (and at the end); 0: only at the end."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk (oldest removed first)."""
    resume: str | None = None
    """Resume from a checkpoint directory, or `latest` for the newest one under `out`."""
    sample_count: int = 4
    """Prompts in the before/after sample table."""
    sample_max_new_tokens: int | None = None
    """Response length for the sample table (default: `response_length`)."""

    def validate(self) -> "PPOConfig":
        """Raise ValueError naming the field for settings that cannot work; returns self."""
        positive = ("total_iterations", "batch_size", "response_length", "max_prompt_length", "ppo_epochs",
                    "num_mini_batches", "lora_r", "reward_batch_size")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"config field {name!r} must be positive, got {getattr(self, name)!r}")
        if self.batch_size % self.num_mini_batches:
            raise ValueError(
                f"config field 'batch_size' ({self.batch_size}) must be divisible by 'num_mini_batches' ({self.num_mini_batches})"
            )
        if self.temperature <= 0:
            raise ValueError(f"config field 'temperature' must be > 0, got {self.temperature}")
        if not math.isfinite(self.kl_coef) or self.kl_coef < 0:
            raise ValueError(f"config field 'kl_coef' must be a finite number ≥ 0, got {self.kl_coef!r}")
        if self.adaptive_kl and not (math.isfinite(self.kl_target) and self.kl_target > 0):
            # a target ≤ 0 would drive the coefficient to 0 without a word
            raise ValueError(f"config field 'kl_target' must be a finite number > 0 with adaptive_kl, got {self.kl_target!r}")
        if self.adaptive_kl and self.kl_horizon <= 0:
            # 0 would divide by zero after the first iteration, once the rollout has been paid for
            raise ValueError(f"config field 'kl_horizon' must be positive with adaptive_kl, got {self.kl_horizon!r}")
        if self.kl_estimator not in ("k1", "k3"):
            raise ValueError(f"config field 'kl_estimator' must be 'k1' or 'k3', got {self.kl_estimator!r}")
        if self.value_head_init not in ("auto", "reward", "random"):
            raise ValueError(f"config field 'value_head_init' must be auto, reward or random, got {self.value_head_init!r}")
        if self.value_adapter_layers is not None and self.value_adapter_layers <= 0:
            raise ValueError("config field 'value_adapter_layers' must be positive or None")
        if not 0.0 <= self.lam <= 1.0 or not 0.0 <= self.gamma <= 1.0:
            raise ValueError("config fields 'gamma' and 'lam' must lie in [0, 1]")
        return self

    @property
    def mini_batch_size(self) -> int:
        return self.batch_size // self.num_mini_batches

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> "PPOConfig":
        """Build from a mapping; unknown keys are an error naming them (typos must not pass silently)."""
        return _from_dict(cls, values, source=source)

    @classmethod
    def from_json(cls, path: str | Path) -> "PPOConfig":
        return _from_json(cls, path)


# --------------------------------------------------------------------------- shared helpers


class ConfigFile:
    """`to_dict` / `from_dict` / `from_json` for a run's config dataclass (unknown keys are an error naming them)."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], *, source: str = "config"):
        return _from_dict(cls, values, source=source)

    @classmethod
    def from_json(cls, path: str | Path):
        return _from_json(cls, path)


def _from_dict(cls, values: dict[str, Any], *, source: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{source}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return cls(**values)


def _from_json(cls, path: str | Path):
    path = Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"config file {path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"config file {path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if not isinstance(values, dict):
        raise ValueError(f"config file {path}: expected a JSON object of field names to values")
    return _from_dict(cls, values, source=f"config file {path}")


__all__ = ["PPOConfig", "PACKAGED_POLICY"]
