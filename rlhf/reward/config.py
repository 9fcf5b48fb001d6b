"""Reward-model settings: `RewardConfig` (how to train) and `RewardModelConfig` (what a trained model is, saved as reward_config.json)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rlhf.models import DEFAULT_REWARD_BASE

REWARD_CONFIG_FILE = "reward_config.json"
METRICS_FILE = "metrics.json"
LINEAGE_FILE = "lineage.json"
SCORE_HEAD_FILE = "score_head.safetensors"
FORMAT_VERSION = 1


@dataclass
class RewardConfig:
    """How a reward model is trained: base, LoRA, optimisation, data handling. One field, one meaning."""

    base_model: str = DEFAULT_REWARD_BASE
    """Base model as the user typed it: an HF id, a local directory, a .gguf file, or the packaged SmolLM2 alias."""
    load_in_4bit: bool = False
    """Quantise the frozen base to NF4 with double quantisation (QLoRA); the adapter and head stay in the compute dtype."""
    max_length: int = 512
    """Tokens per sequence (prompt + response + EOS). Longer pairs are truncated, never dropped: the prompt loses
    tokens from the left first; a response longer than the rest of the budget is cut on the right, keeping its EOS."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int | None = None
    """LoRA scaling numerator; None means 2 × r."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA path."""
    lora_target_modules: str | list[str] = "all-linear"
    """Which linear layers get adapters; "all-linear" is every linear layer of the backbone."""
    learning_rate: float = 1e-4
    """AdamW peak learning rate."""
    num_epochs: float = 1.0
    """Passes over the training pairs (ignored when `max_steps` > 0)."""
    max_steps: int = -1
    """Stop after this many optimiser steps; -1 runs `num_epochs`."""
    batch_size: int = 8
    """Preference pairs per step and device (each pair is two sequences)."""
    gradient_accumulation_steps: int = 1
    """Micro-batches accumulated per optimiser step."""
    warmup_ratio: float = 0.0
    """Share of the steps spent warming the learning rate up linearly."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    lr_scheduler_type: str = "linear"
    """Transformers scheduler name (linear, cosine, constant, ...)."""
    seed: int = 0
    """Seeds the score head's initialisation, batch order and the held-out split."""
    use_margin: bool = True
    """Use the export's `margin` column in the loss, −log σ(r_c − r_r − margin), when it is present."""
    center_rewards_coefficient: float | None = None
    """Optional penalty on the mean reward squared (Eisenstein et al. 2023); normalisation is done after training anyway."""
    group_by_length: bool = True
    """Batch pairs of similar length together (less padding, faster); the order is still seeded and shuffled."""
    gradient_checkpointing: bool | None = None
    """Recompute activations in the backward pass to save memory; None means on for CUDA, off on CPU (pure cost there)."""
    eval_fraction: float = 0.1
    """Share of prompts held out for evaluation when the data has no test split of its own."""
    eval_batch_size: int = 16
    """Sequences per forward pass when scoring held-out pairs and normalisation responses."""
    normalization_samples: int = 2048
    """At most this many training responses are scored to compute the normalisation mean and std."""
    calibration_bins: int = 10
    """Reliability-diagram bins for the held-out calibration (ECE)."""
    save_steps: int = 50
    """Checkpoint every this many steps (resume restarts from the last one)."""
    logging_steps: int = 5
    """Report loss / accuracy every this many steps."""
    device: str | None = None
    """"cpu", "cuda", "cuda:1", ...; None picks CUDA when present."""
    listwise: bool = False
    """Train on whole groups (a ranking's pairs, by the export's `group_id`): each reply encoded once per
    step, the loss the mean over the group's pairs (rlhf.reward.listwise); `batch_size` then counts groups."""
    objective: Literal["pairwise", "regression", "joint"] = "pairwise"
    """`pairwise`: Bradley–Terry on preference pairs (TRL RewardTrainer). `regression`: one head per rubric dimension
    fitted to annotator-normalised ratings; the reward is their weighted mean. `joint`: both losses on one model
    (Bradley–Terry on the weighted mean), each on the data kind that exists (rlhf.reward.objectives)."""
    dimensions: list[str] | None = None
    """regression / joint: the rubric dimensions to predict, one head each; None: every dimension the ratings hold."""
    dimension_weights: dict[str, float] | None = None
    """regression / joint: weight of each dimension in the scalar reward r = Σ w_d ŝ_d / Σ w_d (missing ones weigh 0
    when any is given); None: the project's rubric weights, else 1 each. The weights must sum to a positive number."""
    regression_weight: float = 1.0
    """joint: weight λ of the ratings' squared error next to the pairs' Bradley–Terry loss (L = L_BT + λ L_MSE)."""
    off_prompt_pairs: float = 0.0
    """Add this many pairs per training pair (0.25: one for every four) whose rejected reply is a preferred reply
    to another training prompt (rlhf.reward.data.add_off_prompt_pairs): they teach the model to read the prompt,
    which preferences inside one prompt never force. 0: only the exported pairs. Not with `listwise`."""
    average_weights_from: float = 0.0
    """Save the mean of the trainable weights over the steps after this share of training (0.5: the second half;
    stochastic weight averaging), not the last step's, to damp the step-to-step noise of a small data set; every
    objective, the frozen-base feature weights averaged with the adapter. 0: the last step's weights. A resumed
    pairwise run averages from where it resumed."""
    prompt_similarity: Literal["off", "coverage", "mean"] = "off"
    """The reward is the cross-encoder's score + w · sim(prompt, reply), sim read off the frozen base (adapter
    off), w one learned weight (rlhf.reward.similarity): `coverage` the mean over prompt tokens of the best cosine with
    a reply token (BERTScore recall), `mean` the cosine of mean-pooled embeddings. It carries "does the reply address
    this prompt" to prompts never trained on; scoring then embeds prompt and reply too. Regression / joint: each
    dimension's head gets its own weight v_d (the scalar's w is Σ_d w_d v_d). Not with listwise."""
    reply_redundancy: bool = False
    """Add a second frozen-base feature with its own learned weight: how much the reply repeats itself (the mean over
    its tokens of the best cosine with an earlier token a few positions back; rlhf.reward.similarity). It carries
    "does not loop" to prompts never trained on. With or without `prompt_similarity`; per dimension head for
    regression / joint. Not with listwise."""
    preference_head: bool = False
    """joint with pairs: one more output beside the dimension heads, trained by the pairs' Bradley–Terry loss alone;
    the scalar reward is Σ_d w_d ŝ_d + p(x). The heads keep fitting the ratings while the pairs get a free direction
    for what the ratings do not say (without it the pairs can only move the heads the ratings pin)."""
    refit_features: float = 0.0
    """Pairwise with frozen-base features: keep this share of the training prompts away from the adapter (0.2: one in
    five), train on the rest, then refit the feature weights by Bradley–Terry on the kept prompts' pairs with the
    trained cross-encoder's scores held fixed (rlhf.reward.similarity.refit_feature_weights). Trained jointly, the
    weights are only as large as the prompts the cross-encoder has memorised need; fitted on prompts it never saw,
    they are as large as new prompts need. 0: the weights training learned."""
    annotator_offsets: bool = False
    """regression / joint with a raw export: fit each annotator's own offset per dimension next to the heads (the
    heads then predict the average annotator), instead of normalising each annotator's scores beforehand."""

    def feature_kinds(self) -> list[str]:
        """The frozen-base features the reward adds, in weight order (rlhf.reward.similarity.base_features)."""
        return ([self.prompt_similarity] if self.prompt_similarity != "off" else []) + (["redundancy"] if self.reply_redundancy else [])

    def validate(self) -> None:
        problems = []
        if self.max_length < 8:
            problems.append(f"max_length {self.max_length}: must be at least 8")
        if self.lora_r < 1:
            problems.append(f"lora_r {self.lora_r}: must be at least 1")
        if self.batch_size < 1:
            problems.append(f"batch_size {self.batch_size}: must be at least 1")
        if not 0.0 <= self.off_prompt_pairs <= 4.0:  # NaN fails this too
            problems.append(f"off_prompt_pairs {self.off_prompt_pairs}: must be between 0 and 4")
        elif self.off_prompt_pairs and self.listwise:
            problems.append("off_prompt_pairs: not with listwise training (an added pair belongs to no ranking)")
        if not 0.0 <= self.refit_features < 1.0:  # NaN fails this too
            problems.append(f"refit_features {self.refit_features}: must be at least 0 and below 1")
        elif self.refit_features and not self.feature_kinds():
            problems.append("refit_features: the reward has no frozen-base feature to refit (set prompt_similarity or reply_redundancy)")
        elif self.refit_features and (self.objective != "pairwise" or self.listwise):
            problems.append("refit_features: pairwise (not listwise) training only")
        if self.prompt_similarity not in ("off", "coverage", "mean"):
            problems.append(f"prompt_similarity {self.prompt_similarity!r}: expected off, coverage or mean")
        elif self.prompt_similarity != "off" and self.listwise:
            problems.append("prompt_similarity: not with listwise training")
        if self.preference_head and self.objective != "joint":
            problems.append(f"preference_head: for the joint objective only (got {self.objective})")
        if self.reply_redundancy and self.listwise:
            problems.append("reply_redundancy: not with listwise training")
        if not 0.0 <= self.average_weights_from < 1.0:
            problems.append(f"average_weights_from {self.average_weights_from}: must be in [0, 1)")
        if not 0.0 <= self.eval_fraction < 1.0:
            problems.append(f"eval_fraction {self.eval_fraction}: must be in [0, 1)")
        if self.learning_rate <= 0:
            problems.append(f"learning_rate {self.learning_rate}: must be positive")
        problems.extend(objective_problems(self))
        if problems:
            raise ValueError("; ".join(problems))


OBJECTIVES = ("pairwise", "regression", "joint")


def objective_problems(config: RewardConfig) -> list[str]:
    """What is wrong with the objective's settings (checked before any data is read)."""
    problems = []
    if config.objective not in OBJECTIVES:
        problems.append(f"objective {config.objective!r}: expected one of {', '.join(OBJECTIVES)}")
    if config.dimensions is not None and (not config.dimensions or len(set(config.dimensions)) != len(config.dimensions)):
        problems.append(f"dimensions {config.dimensions!r}: must be distinct names, at least one")
    if config.dimension_weights is not None:
        weights = config.dimension_weights
        if not weights or any(isinstance(w, bool) or not isinstance(w, (int, float)) or w != w for w in weights.values()):
            problems.append(f"dimension_weights {weights!r}: expected a number for each dimension")
        elif sum(weights.values()) <= 0:
            problems.append(f"dimension_weights {weights!r}: must sum to a positive number (they sum to {sum(weights.values()):g})")
        elif config.dimensions is not None and set(weights) - set(config.dimensions):
            problems.append(f"dimension_weights: {', '.join(sorted(set(weights) - set(config.dimensions)))} not among dimensions {config.dimensions}")
    if config.regression_weight < 0:
        problems.append(f"regression_weight {config.regression_weight}: must not be negative")
    return problems


@dataclass
class RewardModelConfig:
    """A trained reward model, as saved in `reward_config.json`: enough to rebuild it and score like training did."""

    base_model: str
    """The base as the user typed it."""
    base_model_resolved: str
    """The local directory or hub id it resolved to at training time."""
    load_in_4bit: bool
    """Whether training used an NF4 base (scoring uses the same unless told otherwise)."""
    max_length: int
    """Token budget per sequence; scoring truncates exactly like training did."""
    score_mean: float
    """Mean raw score over training responses; `score()` subtracts it."""
    score_std: float
    """Std of raw scores over training responses; `score()` divides by it."""
    lora: dict[str, Any]
    """r, alpha, dropout, target_modules of the adapter."""
    head_name: str = "score"
    """Name of the linear score head module (saved with the adapter and as score_head.safetensors)."""
    pooling: str = "last_token"
    """Where the score is read: `last_token` = the last position whose attention mask is 1 (the response's EOS)."""
    use_chat_template: bool = True
    """Whether prompts were rendered with the tokenizer's chat template (see `rlhf.reward.data.format_pair`)."""
    export_hash: str | None = None
    """Content hash of the export the model was trained on (from its manifest)."""
    training: dict[str, Any] = field(default_factory=dict)
    """The RewardConfig used, as a dict."""
    objective: str = "pairwise"
    """How it was trained (RewardConfig.objective)."""
    dimensions: list[str] = field(default_factory=list)
    """regression / joint: the rubric dimension each head predicts, in head order (empty: one scalar head)."""
    dimension_weights: list[float] = field(default_factory=list)
    """regression / joint: the scalar's weight of each head, summing to 1 (the raw reward is heads · weights)."""
    dimension_scale: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per dimension, `mean` and `std` in rubric points of the training ratings: a head's prediction ŝ (in
    annotator-normalised units) reads as mean + std · ŝ points on the rubric."""
    prompt_similarity: str = "off"
    """Which prompt–reply similarity the raw reward adds (RewardConfig.prompt_similarity): off, coverage or mean."""
    prompt_similarity_weight: float | None = None
    """Its learned weight w in the raw reward (cross-encoder + w · similarity); None: no such term."""
    prompt_similarity_dimension_weights: list[float] | None = None
    """Regression / joint with a prompt similarity: each dimension head's own weight v_d on it (in head order);
    `prompt_similarity_weight` is then the scalar's, Σ_d w_d v_d."""
    preference_head: bool = False
    """joint: the model has one output after the dimension heads, the pairs' own (RewardConfig.preference_head); the
    scalar adds it with weight 1."""
    reply_redundancy_weight: float | None = None
    """The learned weight of the reply's self-repetition in the raw reward (RewardConfig.reply_redundancy); None: no
    such term."""
    reply_redundancy_dimension_weights: list[float] | None = None
    """Regression / joint with reply redundancy: each dimension head's own weight on it (in head order)."""
    format_version: int = FORMAT_VERSION
    """Layout version of the reward directory."""

    def head_weights(self) -> list[float] | None:
        """The scalar's weight of each model output: the dimension weights, then 1 for a preference head; None for a
        single-output (pairwise) model."""
        if not self.dimensions:
            return None
        return list(self.dimension_weights) + ([1.0] if self.preference_head else [])

    def feature_kinds(self) -> list[str]:
        """The frozen-base features the raw reward adds (rlhf.reward.similarity.base_features), in the order of
        `feature_weights`."""
        return ([self.prompt_similarity if self.prompt_similarity != "off" else "mean"] if self.prompt_similarity_weight is not None else []) + (
            ["redundancy"] if self.reply_redundancy_weight is not None else []
        )

    def feature_weights(self) -> list[float]:
        """The scalar's weight of each of `feature_kinds`."""
        return [w for w in (self.prompt_similarity_weight, self.reply_redundancy_weight) if w is not None]

    def feature_dimension_weights(self) -> list[list[float]] | None:
        """Regression / joint: each feature's weight per dimension head, (features × dimensions); None otherwise."""
        rows = [w for w in (self.prompt_similarity_dimension_weights, self.reply_redundancy_dimension_weights) if w is not None]
        return rows or None

    def save(self, directory: Path) -> None:
        (Path(directory) / REWARD_CONFIG_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path) -> "RewardModelConfig":
        values = json.loads((Path(directory) / REWARD_CONFIG_FILE).read_text())
        known = {f.name for f in dataclasses.fields(cls)}
        missing = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in values]
        if missing:
            raise ValueError(f"{Path(directory) / REWARD_CONFIG_FILE}: missing fields {', '.join(missing)}")
        return cls(**{k: v for k, v in values.items() if k in known})
