"""Scoring with a trained reward model: `RewardModel.load(dir).score(prompts, responses)`.

The contract PPO builds on:
- `score(prompts, responses)` formats and tokenises exactly as training did (`rlhf.reward.data`)
  and returns normalised scores, shape (N,): (raw − mean) / std over the training responses.
- `score_token_ids(input_ids, attention_mask)` scores sequences already tokenised with the same
  tokenizer; the score is read at each row's last position whose attention mask is 1 (left or
  right padding both work; pad == EOS is fine because padding is found by the mask, not the id).
- `score_head_weight()` is the linear head's weight, (1, hidden).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import torch

from rlhf.models import ModelNotFoundError, default_device, load_sequence_classifier, load_tokenizer, resolve_model
from rlhf.reward.config import LINEAGE_FILE, METRICS_FILE, REWARD_CONFIG_FILE, SCORE_HEAD_FILE, RewardModelConfig
from rlhf.reward.data import PromptInput, encode_pairs, format_pair

REQUIRED_FILES = (REWARD_CONFIG_FILE, "adapter_config.json", "adapter_model.safetensors", SCORE_HEAD_FILE, "tokenizer_config.json")
"""What a complete reward directory holds (besides metrics.json and lineage.json)."""
OPTIONAL_FILES = (METRICS_FILE, LINEAGE_FILE)


class IncompleteRewardModel(ValueError):
    """The reward directory is missing files (an interrupted save, or not a reward model at all)."""


# --------------------------------------------------------------------------- tensor helpers


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last position whose mask is 1. (B, T) → (B,) long; all-zero rows give 0.

    Works for left and right padding alike; never looks at token ids, so an EOS that doubles
    as the pad token is still found when it ends a sequence.
    """
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(dim=-1)


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, (B, T): left padding does not shift a sequence's positions."""
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def head_name_of(model: torch.nn.Module) -> str:
    """The name of the sequence-classification head: `score` (decoders) or `classifier` (encoders)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    for name in ("score", "classifier"):
        if isinstance(getattr(inner, name, None), torch.nn.Module):
            return name
    raise ValueError(f"{type(inner).__name__} has no `score` or `classifier` head: not a sequence-classification model")


def score_head_module(model: torch.nn.Module) -> torch.nn.Module:
    """The head layer itself: the trained copy when PEFT wraps it (`modules_to_save`), else the head."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = getattr(inner, head_name_of(model))
    if hasattr(head, "modules_to_save"):
        active = head.active_adapter
        return head.modules_to_save[active if isinstance(active, str) else active[0]]
    return head


def _reads_last_token(inner: torch.nn.Module) -> bool:
    """Decoder classifiers (a `score` head over a backbone) are pooled by us at the last real token."""
    return hasattr(inner, "score") and hasattr(inner, getattr(inner, "base_model_prefix", "") or "-")


def pooled_rewards(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Raw rewards, (B, T) ids and mask → (B,) float32, read at each row's last real token.

    `model` is a sequence classifier, bare or wrapped by PEFT. For decoders the backbone runs
    once and only the pooled hidden state (B, H) goes through the head. The model's own
    pooling is bypassed on purpose: it finds the end by "last token that is not the pad id",
    which skips the EOS when pad == EOS. Encoders (a `classifier` head) pool themselves.
    A model with one head per rubric dimension gives `heads · weights` (D,) (regression / joint).
    """
    outputs = pooled_outputs(model, input_ids, attention_mask)  # (B, D)
    return outputs[:, 0] if weights is None else outputs @ weights.to(outputs.device, outputs.dtype)


def pooled_outputs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Every head's raw output, (B, T) ids and mask → (B, D) float32, pooled as `pooled_rewards` says."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not _reads_last_token(inner):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    backbone = getattr(inner, inner.base_model_prefix)
    hidden = backbone(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).last_hidden_state  # (B, T, H)
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    pooled = hidden[rows, last_token_index(attention_mask).to(hidden.device)]  # (B, H)
    head = inner.score
    head_weight = next(head.parameters())
    return head(pooled.to(head_weight.dtype)).float()  # (B, D)


def pad_right(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token lists into (B, T) ids and attention mask."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = torch.tensor(sequence, dtype=torch.long)
        mask[row, : len(sequence)] = 1
    return ids, mask


@torch.inference_mode()
def raw_scores(
    model: torch.nn.Module, sequences: Sequence[Sequence[int]], *, pad_id: int, batch_size: int, device, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Raw rewards of tokenised sequences, (N,) float32 on CPU, batched longest-first (less padding)."""
    outputs = raw_outputs(model, sequences, pad_id=pad_id, batch_size=batch_size, device=device)  # (N, D)
    return outputs[:, 0] if weights is None else outputs @ weights.float().cpu()


@torch.inference_mode()
def raw_outputs(model: torch.nn.Module, sequences: Sequence[Sequence[int]], *, pad_id: int, batch_size: int, device) -> torch.Tensor:
    """Every head's raw output for tokenised sequences, (N, D) float32 on CPU, batched longest-first."""
    if not sequences:
        return torch.empty(0, 1)
    order = sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
    out: torch.Tensor | None = None
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = pad_right([sequences[i] for i in chunk], pad_id)
        values = pooled_outputs(model, ids.to(device), mask.to(device)).cpu()  # (b, D)
        if out is None:
            out = torch.empty(len(sequences), values.shape[1])
        out[chunk] = values
    return out


# --------------------------------------------------------------------------- the model


def missing_files(directory: Path) -> list[str]:
    """Files a complete reward directory needs that `directory` lacks."""
    return [name for name in REQUIRED_FILES if not (Path(directory) / name).is_file()]


class RewardModel:
    """A trained reward model (base + LoRA adapter + score head) that scores like training did.

    Attributes: `model` (the PEFT-wrapped classifier, eval mode), `tokenizer`, `config`
    (RewardModelConfig from reward_config.json), `base_model_path` (the resolved base), `device`.
    """

    def __init__(self, model, tokenizer, config: RewardModelConfig, base_model_path: str, device: torch.device) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.base_model_path = base_model_path
        self.device = device
        # One head per rubric dimension (regression / joint): the scalar reward is heads · weights.
        self.weights = torch.tensor(config.head_weights(), dtype=torch.float32) if config.dimensions else None

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str | torch.device | None = None, load_in_4bit: bool | None = None) -> "RewardModel":
        """Load a reward directory written by `train_reward_model`.

        `load_in_4bit=None` loads the base as training did. Raises IncompleteRewardModel when
        files are missing, ModelNotFoundError when the base model cannot be found.
        """
        from peft import PeftModel

        directory = Path(path)
        if not directory.is_dir():
            raise IncompleteRewardModel(f"reward model {str(directory)!r}: no such directory")
        missing = missing_files(directory)
        if missing:
            raise IncompleteRewardModel(f"reward model {str(directory)!r}: missing {', '.join(missing)} (not a complete reward directory)")
        try:
            config = RewardModelConfig.load(directory)
        except (ValueError, TypeError) as exc:
            raise IncompleteRewardModel(f"reward model {str(directory)!r}: unreadable {REWARD_CONFIG_FILE} ({exc})") from exc
        source = _resolve_base(config)
        device = torch.device(device) if device is not None else default_device()
        quantised = config.load_in_4bit if load_in_4bit is None else load_in_4bit
        tokenizer = load_tokenizer(str(directory), padding_side="right")
        heads = len(config.head_weights() or [0.0])
        base = load_sequence_classifier(source, num_labels=heads, load_in_4bit=quantised, device=device, pad_token_id=tokenizer.pad_token_id)
        model = PeftModel.from_pretrained(base, str(directory))
        model.eval()
        return cls(model, tokenizer, config, source.path, device)

    # ------------------------------------------------------------------ formatting

    def format_pair(self, prompt: PromptInput, response: str) -> str:
        """The exact text (prompt rendered as in training, response, EOS) that `score` scores."""
        return format_pair(self.tokenizer, prompt, response, use_chat_template=self.config.use_chat_template)

    def encode(self, prompts: Sequence[PromptInput], responses: Sequence[str]) -> list[list[int]]:
        """Token ids of each pair, truncated like training (prompt from the left; the EOS kept)."""
        return encode_pairs(
            self.tokenizer, prompts, responses, max_length=self.config.max_length, use_chat_template=self.config.use_chat_template
        ).ids

    # ------------------------------------------------------------------ scores

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        """(raw − mean) / std with the training responses' statistics (mean 0, std 1 over them)."""
        return (raw - self.config.score_mean) / self.config.score_std

    def score(
        self, prompts: Sequence[PromptInput], responses: Sequence[str], *, batch_size: int = 16, normalize: bool = True
    ) -> torch.Tensor:
        """Scores of (prompt, response) pairs: (N,) float32 on CPU; normalised unless `normalize=False`."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        raw = raw_scores(
            self.model, self.encode(prompts, responses), pad_id=self.tokenizer.pad_token_id, batch_size=batch_size, device=self.device, weights=self.weights
        )
        if self.config.feature_kinds() and len(prompts):
            raw = raw + self.base_features(prompts, responses, batch_size=batch_size) @ torch.tensor(self.config.feature_weights(), dtype=torch.float32)
        return self.normalize(raw) if normalize else raw

    def base_features(self, prompts: Sequence[PromptInput], responses: Sequence[str], *, batch_size: int = 16) -> torch.Tensor:
        """The frozen base's features the raw reward adds (`config.feature_kinds()`: the prompt similarity, the reply's
        redundancy), (N, F): the columns `config.feature_weights()` multiply."""
        from rlhf.reward.similarity import base_features

        return base_features(
            self.model, self.tokenizer, prompts, responses, self.config.feature_kinds(), max_length=self.config.max_length, batch_size=batch_size,
            device=self.device,
        )

    def prompt_similarity(self, prompts: Sequence[PromptInput], responses: Sequence[str], *, batch_size: int = 16) -> torch.Tensor:
        """The frozen base's similarity of prompt and response (`config.prompt_similarity`: coverage or mean), (N,):
        the feature `prompt_similarity_weight` multiplies."""
        from rlhf.reward.similarity import prompt_similarities

        return prompt_similarities(
            self.model, self.tokenizer, prompts, responses, max_length=self.config.max_length, batch_size=batch_size, device=self.device,
            kind=self.config.prompt_similarity if self.config.prompt_similarity != "off" else "mean",
        )

    def score_dimensions(self, prompts: Sequence[PromptInput], responses: Sequence[str], *, batch_size: int = 16) -> dict[str, torch.Tensor]:
        """Each rubric dimension's predicted score in rubric points, {dimension: (N,)}; empty for a pairwise model.

        A head predicts the annotator-normalised score ŝ (plus v_d · similarity with a prompt-similarity term); it
        reads as mean + std · ŝ points with the training ratings' mean and std of that dimension (`dimension_scale`).
        """
        if not self.config.dimensions:
            return {}
        outputs = raw_outputs(self.model, self.encode(prompts, responses), pad_id=self.tokenizer.pad_token_id, batch_size=batch_size, device=self.device)
        outputs = outputs[:, : len(self.config.dimensions)]  # a preference head after them is no dimension
        per_dimension = self.config.feature_dimension_weights()
        if per_dimension is not None and len(prompts):  # each head's own share of each feature's term
            outputs = outputs + self.base_features(prompts, responses, batch_size=batch_size) @ torch.tensor(per_dimension, dtype=outputs.dtype)
        scale = self.config.dimension_scale
        return {
            name: scale.get(name, {}).get("mean", 0.0) + scale.get(name, {}).get("std", 1.0) * outputs[:, d]
            for d, name in enumerate(self.config.dimensions)
        }

    @torch.inference_mode()
    def score_token_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, normalize: bool = True) -> torch.Tensor:
        """Scores of tokenised sequences (B, T) → (B,) float32 on the inputs' device.

        The score is read at each row's last position whose mask is 1; that token should be
        the EOS ending the response (as in training). Uses the reward model's tokenizer ids.
        A model with a prompt-similarity term needs the prompt and reply apart: use `score`.
        """
        if self.config.feature_kinds():
            raise ValueError("this reward model adds features of its frozen base (prompt–reply similarity, reply redundancy), which need prompt and reply apart: use score(prompts, responses)")
        raw = pooled_rewards(self.model, input_ids.to(self.device), attention_mask.to(self.device), self.weights).to(input_ids.device)
        return self.normalize(raw) if normalize else raw

    def score_head_weight(self) -> torch.Tensor:
        """The linear score head's weight, (1, hidden), a detached float32 copy (heads folded by their weights)."""
        weight = score_head_module(self.model).weight.detach().float()  # (D, H)
        return (weight if self.weights is None else self.weights @ weight).reshape(1, -1).clone()

def _resolve_base(config: RewardModelConfig):
    """The base as resolved at training time when it still exists here, else what the user typed, resolved again."""
    resolved = Path(config.base_model_resolved)
    if resolved.is_dir() and (resolved / "config.json").is_file():
        return resolve_model(str(resolved))
    try:
        return resolve_model(config.base_model)
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(f"reward model base: {exc}") from exc
