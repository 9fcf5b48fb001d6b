"""What PPO needs from a reward: the `RewardFunction` protocol and its adapters.

PPO asks for one score per (prompt, response). `RewardModelFunction` adapts a reward model
trained by `rlhf.reward` (it decodes nothing itself: it is given texts and re-tokenises them
with the reward model's own tokenizer and `format_pair`, so a reward model on another base or
tokenizer works too). `CallableReward` wraps a plain function, for tests, benchmarks and
rule-based rewards.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from rlhf.generate import PromptInput


class RewardError(ValueError):
    """A reward that cannot be used (missing directory, wrong output shape, non-finite scores)."""


@runtime_checkable
class RewardFunction(Protocol):
    """Scores responses: higher is better. Only `score` is required.

    Optional members, used when present: `base_model_path` (str, to decide whether the value
    head can start from the score head), `score_head_weight() -> (1, H)`, `describe() -> dict`
    (recorded in lineage.json).
    """

    def score(
        self,
        prompts: Sequence[PromptInput],
        responses: Sequence[str],
        *,
        query_response_ids: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One score per pair → (N,) float tensor. `query_response_ids`/`mask` (N, S) are the
        policy's own tokens, for rewards that share its tokenizer; others ignore them."""
        ...


class CallableReward:
    """A `RewardFunction` from `fn(prompts, responses) -> sequence of N floats`."""

    def __init__(self, fn: Callable[[Sequence[PromptInput], Sequence[str]], Sequence[float]], name: str | None = None):
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "callable")
        self.base_model_path = None

    def score(self, prompts, responses, *, query_response_ids=None, mask=None) -> torch.Tensor:
        return torch.as_tensor(list(self.fn(prompts, responses)), dtype=torch.float32)

    def describe(self) -> dict[str, Any]:
        return {"kind": "callable", "name": self.name}


class RewardDirectory:
    """A reward model directory read without loading any weights: its config, tokenizer and score head.

    Enough to decide whether the reward model can share the policy's base, and to start the
    value head from its score head.
    """

    def __init__(self, path: str | Path):
        from rlhf.models import load_tokenizer, resolve_model
        from rlhf.reward.config import SCORE_HEAD_FILE, RewardModelConfig
        from rlhf.reward.scorer import missing_files

        self.path = Path(path)
        if not self.path.is_dir():
            raise RewardError(f"reward model {str(self.path)!r}: no such directory")
        missing = missing_files(self.path)
        if missing:
            raise RewardError(f"reward model {str(self.path)!r}: missing {', '.join(missing)} (not a directory written by rlhf train-reward)")
        try:
            self.config = RewardModelConfig.load(self.path)
        except (ValueError, TypeError) as exc:
            raise RewardError(f"reward model {str(self.path)!r}: unreadable reward_config.json ({exc})") from None
        # As `RewardModel.load` finds it: the base resolved at training time if still here.
        resolved = Path(self.config.base_model_resolved)
        base = resolve_model(str(resolved) if (resolved / "config.json").is_file() else self.config.base_model)
        self.base_model_path = str(Path(base.path).resolve()) if Path(base.path).exists() else base.path
        self.tokenizer = load_tokenizer(str(self.path), padding_side="right")
        self._head_file = self.path / SCORE_HEAD_FILE

    def score_head_weight(self) -> torch.Tensor:
        """The score head's weight, (1, H) float32."""
        from safetensors.torch import load_file

        return load_file(str(self._head_file))["weight"].float().reshape(1, -1)

    def describe(self) -> dict[str, Any]:
        return {"kind": "reward_model", **reward_lineage(self.path)}

    def sharing_problem(self, policy_base: str, policy_tokenizer, load_in_4bit: bool) -> str | None:
        """Why this reward model cannot ride on the policy's base as an adapter; None when it can."""
        if not _same_path(self.base_model_path, policy_base):
            return f"its base {self.base_model_path!r} is not the policy's {policy_base!r}"
        if bool(self.config.load_in_4bit) != bool(load_in_4bit):
            trained = "a 4-bit" if self.config.load_in_4bit else "an unquantised"
            return f"it was trained on {trained} base and PPO's base is {'4-bit' if load_in_4bit else 'unquantised'}"
        if self.tokenizer.get_vocab() != policy_tokenizer.get_vocab():
            return "its tokenizer differs from the policy's"
        if self.config.feature_kinds():
            return "it adds features of its own base's embeddings (prompt–reply similarity, reply redundancy)"
        if self.config.pooling != "last_token":
            return f"its pooling {self.config.pooling!r} is not last_token"
        return None


class RewardModelFunction:
    """Adapter from `rlhf.reward.RewardModel` (its own base, loaded separately) to `RewardFunction`.

    Scores are the reward model's normalised ones; texts are re-tokenised by its tokenizer, so
    a reward model on another base than the policy's works.
    """

    def __init__(self, reward_model, *, batch_size: int = 16, directory: str | Path | None = None):
        self.model = reward_model
        self.batch_size = batch_size
        self.directory = Path(directory) if directory is not None else None
        self.base_model_path = str(reward_model.base_model_path)

    def score(self, prompts, responses, *, query_response_ids=None, mask=None) -> torch.Tensor:
        return self.model.score(list(prompts), list(responses), batch_size=self.batch_size)

    def score_head_weight(self) -> torch.Tensor:
        return self.model.score_head_weight()

    def describe(self) -> dict[str, Any]:
        info = {"kind": "reward_model", "placement": "separate base"}
        if self.directory is not None:
            info.update(reward_lineage(self.directory))
        return info


class _TrunkWithHead(torch.nn.Module):
    """A sequence classifier made of the PPO model's trunk and the reward's score head (no copies).

    It has the shape `rlhf.reward.scorer.raw_scores` expects (`.model` backbone, `.score` head),
    so scoring reuses the reward package's own pooling and batching.
    """

    base_model_prefix = "model"

    def __init__(self, trunk: torch.nn.Module, head: torch.nn.Linear):
        super().__init__()
        self.model = trunk
        self.score = head


class SharedBaseReward:
    """The reward model as a third, frozen adapter ("reward") on the PPO model's base.

    Used when the reward model was trained on the same base (same weights, tokenizer and
    quantisation): no second copy of the base is loaded. Formatting, truncation, pooling at the
    last real token and normalisation are the reward package's own, so scores equal
    `RewardModel.score` on the same inputs.
    """

    ADAPTER = "reward"

    def __init__(self, model, directory: RewardDirectory, *, batch_size: int = 16):
        from peft import LoraConfig
        from safetensors.torch import load_file

        self.directory = directory
        self.model = model
        self.batch_size = batch_size
        self.base_model_path = directory.base_model_path
        lora = LoraConfig.from_pretrained(str(directory.path))
        lora.task_type, lora.modules_to_save, lora.inference_mode = "CAUSAL_LM", None, True
        weights = {k: v for k, v in load_file(str(directory.path / "adapter_model.safetensors")).items() if "lora_" in k}
        model.add_frozen_adapter(self.ADAPTER, lora, weights)
        head = torch.nn.Linear(model.config.hidden_size, 1, bias=False, dtype=torch.float32)
        with torch.no_grad():
            head.weight.copy_(directory.score_head_weight())
        head.requires_grad_(False)
        self._classifier = _TrunkWithHead(model.trunk(), head.to(model.device))

    def score(self, prompts, responses, *, query_response_ids=None, mask=None) -> torch.Tensor:
        from rlhf.reward.data import encode_pairs
        from rlhf.reward.scorer import raw_scores

        config = self.directory.config
        if len(prompts) != len(responses):
            raise RewardError(f"{len(prompts)} prompts but {len(responses)} responses")
        ids = encode_pairs(
            self.directory.tokenizer, list(prompts), list(responses), max_length=config.max_length, use_chat_template=config.use_chat_template
        ).ids
        with self.model.adapter_scope(self.ADAPTER):
            raw = raw_scores(self._classifier, ids, pad_id=self.directory.tokenizer.pad_token_id, batch_size=self.batch_size, device=self.model.device)
        return (raw - config.score_mean) / config.score_std

    def score_head_weight(self) -> torch.Tensor:
        return self.directory.score_head_weight()

    def describe(self) -> dict[str, Any]:
        return {**self.directory.describe(), "placement": "adapter on the policy's base"}


def load_reward_function(
    directory: RewardDirectory | str | Path,
    *,
    device: torch.device | str | None = None,
    load_in_4bit: bool | None = None,
    batch_size: int = 16,
    share_with=None,
) -> SharedBaseReward | RewardModelFunction:
    """A reward directory as a `RewardFunction`: on `share_with`'s base when given, else loaded on its own."""
    if not isinstance(directory, RewardDirectory):
        directory = RewardDirectory(directory)
    if share_with is not None:
        return SharedBaseReward(share_with, directory, batch_size=batch_size)
    from rlhf.models import ModelNotFoundError
    from rlhf.reward import IncompleteRewardModel, RewardModel

    try:
        model = RewardModel.load(directory.path, device=device, load_in_4bit=load_in_4bit)
    except (IncompleteRewardModel, ModelNotFoundError) as exc:
        raise RewardError(str(exc)) from None
    return RewardModelFunction(model, batch_size=batch_size, directory=directory.path)


def reward_lineage(directory: str | Path) -> dict[str, Any]:
    """What lineage.json records about a reward directory: where, which export, which config."""
    import json

    from rlhf.hashing import content_hash

    directory = Path(directory)
    config = json.loads((directory / "reward_config.json").read_text())
    return {
        "dir": str(directory.resolve()),
        "export_hash": config.get("export_hash"),
        "base_model": config.get("base_model"),
        "reward_config_hash": content_hash(config),
    }


def checked_scores(scores: Any, expected: int, reward: Any) -> torch.Tensor:
    """The reward's output as a finite (N,) float32 CPU tensor, or a RewardError saying what is wrong."""
    name = _reward_name(reward)
    scores = torch.as_tensor(scores).detach().float().cpu()
    if scores.dim() == 2 and scores.size(1) == 1:
        scores = scores.squeeze(1)
    if scores.shape != (expected,):
        raise RewardError(f"reward {name}: returned shape {tuple(scores.shape)} for {expected} responses (expected ({expected},))")
    bad = (~torch.isfinite(scores)).nonzero().flatten().tolist()
    if bad:
        raise RewardError(f"reward {name}: non-finite score for {len(bad)} of {expected} responses (first at row {bad[0]}: {scores[bad[0]].item()})")
    return scores


def _reward_name(reward: Any) -> str:
    describe = getattr(reward, "describe", None)
    if callable(describe):
        info = describe()
        return str(info.get("dir") or info.get("name") or info.get("kind"))
    return type(reward).__name__


def value_head_init_weight(reward: Any, policy_base: str, mode: str) -> torch.Tensor | None:
    """The weight to start the value head from: the reward's score head when allowed and compatible.

    mode `random` → None. `reward` → the score head, or a RewardError saying why it cannot be
    used (another base, no score head). `auto` → the score head when the reward
    model shares the policy's base, else None.
    """
    if mode == "random":
        return None
    head = getattr(reward, "score_head_weight", None)
    reward_base = getattr(reward, "base_model_path", None)
    same_base = reward_base is not None and _same_path(reward_base, policy_base)
    if mode == "auto" and (head is None or not same_base):
        return None
    if head is None:
        raise RewardError(f"value_head_init='reward': reward {_reward_name(reward)} exposes no score head")
    if not same_base:
        raise RewardError(
            f"value_head_init='reward': the reward model's base {reward_base!r} is not the policy's base "
            f"{policy_base!r}; their hidden features differ (use value_head_init='random')"
        )
    return head().detach().float().reshape(1, -1)  # the width is checked against the policy when the head is built


def _same_path(a: str, b: str) -> bool:
    pa, pb = Path(a), Path(b)
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    return str(a) == str(b)
