"""PPO on a QLoRA policy: one base carrying the policy and value adapters, the reference as the disabled adapter.

Public entry points (imported lazily so that `rlhf.ppo.config` stays torch-free for the CLI):
`PPOConfig`, `train_ppo(config, *, reporter=None) -> PPOResult`, the `RewardFunction` protocol
and its adapters, and the pure tensor functions in `rlhf.ppo.core`.
"""

from __future__ import annotations

from typing import Any

from rlhf.ppo.config import PPOConfig

_LAZY = {
    "train_ppo": "rlhf.ppo.trainer",
    "PPOResult": "rlhf.ppo.trainer",
    "PPOError": "rlhf.ppo.trainer",
    "SelfCheckError": "rlhf.ppo.trainer",
    "NonFiniteLossError": "rlhf.ppo.trainer",
    "RewardFunction": "rlhf.ppo.reward",
    "CallableReward": "rlhf.ppo.reward",
    "RewardModelFunction": "rlhf.ppo.reward",
    "load_reward_function": "rlhf.ppo.reward",
    "PolicyValueModel": "rlhf.ppo.model",
    "build_policy_value_model": "rlhf.ppo.model",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rlhf.ppo' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = ["PPOConfig", *_LAZY]
