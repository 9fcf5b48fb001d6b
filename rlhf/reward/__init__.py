"""Reward models: train on an export (TRL RewardTrainer + LoRA, optionally on a 4-bit base), evaluate, and score.

`RewardModel.load(dir).score(prompts, responses)` is the scoring contract PPO builds on;
`train_reward_model(config, out_dir, data=...)` is what the CLI and the job worker call.
"""

from rlhf.reward.config import RewardConfig, RewardModelConfig
from rlhf.reward.data import RewardDataError, format_pair
from rlhf.reward.scorer import IncompleteRewardModel, RewardModel
from rlhf.reward.train import RewardTrainingError, RewardTrainingResult, train_reward_model

__all__ = [
    "IncompleteRewardModel",
    "RewardConfig",
    "RewardDataError",
    "RewardModel",
    "RewardModelConfig",
    "RewardTrainingError",
    "RewardTrainingResult",
    "format_pair",
    "train_reward_model",
]
