"""Listwise reward-model training: a ranking's replies are encoded once per step, the loss averages its pairs.

InstructGPT (Ouyang et al. 2022, §3.5 and appendix C.4) trains on all C(K, 2) comparisons of
a prompt as one batch element: each of the K replies goes through the model once and the loss
is the mean over the group's pairs of −log σ(r_c − r_r − margin). Shuffling the pairs into a
pairwise dataset instead encodes each reply K − 1 times per epoch (2·C(K, 2) forward passes
against K) and, they report, overfits within an epoch.

Here:
1. `groups_from_pairs` rebuilds groups from an export's rows: rows sharing a `group_id` (one
   ranking) form a group; a row without one (a comparison) is a group of its own;
2. `listwise_dataset` tokenises each distinct reply of a group once (`encode_pairs`, the same
   formatting as scoring) and keeps the group's pairs as indices into those sequences;
3. `collate_groups` pads every sequence of a batch of groups into one (S, T) tensor and turns
   the pairs into global indices, with the group of each pair;
4. `listwise_loss`: per group, the mean over its pairs; then the mean over the groups;
5. `ListwiseRewardTrainer` runs it with the Trainer machinery the pairwise trainer uses
   (checkpoints, resume, callbacks, length-grouped batches of whole groups).

A group is one dataset row, so a batch never splits a group; the train/test split is by prompt
(`rlhf.reward.data.load_preference_data`), and a group lies inside one prompt.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from rlhf.reward.data import encode_pairs, prompt_key
from rlhf.reward.scorer import pad_right, pooled_rewards


# ------------------------------------------------------------------------------------- data


def groups_from_pairs(pairs: pd.DataFrame) -> list[dict[str, Any]]:
    """Groups of an export's pair rows: {prompt, replies (distinct, first-seen order), pairs [(c, r)], margins}.

    `pairs` has prompt, chosen, rejected, margin and optionally group_id (NaN/None: own group).
    """
    keys = pairs["group_id"] if "group_id" in pairs.columns else pd.Series([None] * len(pairs))
    keys = [f"row-{i}" if k is None or (isinstance(k, float) and np.isnan(k)) else str(k) for i, k in enumerate(keys)]
    out: dict[str, dict[str, Any]] = {}
    margins = pairs["margin"].to_numpy(dtype=float) if "margin" in pairs.columns else np.zeros(len(pairs))
    for key, prompt, chosen, rejected, margin in zip(keys, pairs["prompt"], pairs["chosen"], pairs["rejected"], margins):
        group = out.setdefault(key, {"prompt": prompt, "replies": [], "pairs": [], "margins": []})
        if prompt_key(group["prompt"]) != prompt_key(prompt):
            raise ValueError(f"group {key!r} mixes prompts: a group is one prompt's ranking")
        index = {text: i for i, text in enumerate(group["replies"])}
        for text in (chosen, rejected):
            if text not in index:
                index[text] = len(group["replies"])
                group["replies"].append(text)
        group["pairs"].append((index[chosen], index[rejected]))
        group["margins"].append(0.0 if np.isnan(margin) else float(margin))
    return list(out.values())


def listwise_dataset(pairs: pd.DataFrame, tokenizer, config, use_template: bool):
    """A `datasets.Dataset` with one row per group: sequences (token ids per reply), chosen / rejected
    (pair indices into them), margin (per pair), length (longest sequence); and truncation counts."""
    from datasets import Dataset

    groups = groups_from_pairs(pairs)
    prompts = [g["prompt"] for g in groups for _ in g["replies"]]
    replies = [r for g in groups for r in g["replies"]]
    encoded = encode_pairs(tokenizer, prompts, replies, max_length=config.max_length, use_chat_template=use_template)
    columns: dict[str, list] = {"sequences": [], "chosen": [], "rejected": [], "margin": [], "length": []}
    start = 0
    for group in groups:
        sequences = encoded.ids[start : start + len(group["replies"])]
        start += len(group["replies"])
        columns["sequences"].append(sequences)
        columns["chosen"].append([c for c, _ in group["pairs"]])
        columns["rejected"].append([r for _, r in group["pairs"]])
        margin = group["margins"] if config.use_margin else [0.0] * len(group["pairs"])
        columns["margin"].append(margin)
        columns["length"].append(max(len(s) for s in sequences))
    counts = {
        "pairs": int(sum(len(c) for c in columns["chosen"])),
        "groups": len(groups),
        "sequences": len(replies),
        "prompts_truncated": encoded.prompts_truncated,
        "responses_truncated": encoded.responses_truncated,
    }
    return Dataset.from_dict(columns), counts


def collate_groups(examples: list[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """A batch of groups → input_ids / attention_mask (S, T) of every reply, and per pair (P,):
    chosen and rejected (indices into the S rows), margin, group (index of the pair's group in the batch)."""
    sequences, chosen, rejected, margin, group = [], [], [], [], []
    for g, example in enumerate(examples):
        offset = len(sequences)
        sequences.extend(example["sequences"])
        chosen.extend(offset + c for c in example["chosen"])
        rejected.extend(offset + r for r in example["rejected"])
        margin.extend(example["margin"])
        group.extend([g] * len(example["chosen"]))
    ids, mask = pad_right(sequences, pad_id)
    return {
        "input_ids": ids,  # (S, T)
        "attention_mask": mask,  # (S, T)
        "chosen": torch.tensor(chosen, dtype=torch.long),  # (P,)
        "rejected": torch.tensor(rejected, dtype=torch.long),  # (P,)
        "margin": torch.tensor(margin, dtype=torch.float32),  # (P,)
        "group": torch.tensor(group, dtype=torch.long),  # (P,)
    }


# ------------------------------------------------------------------------------------- loss


def listwise_loss(rewards: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor, group: torch.Tensor) -> torch.Tensor:
    """Mean over groups of the mean over each group's pairs of −log σ(r_c − r_r − margin).

    rewards (S,); chosen, rejected, margin, group (P,). Every group weighs the same whatever its
    K, as in InstructGPT's loss (1 / C(K, 2) per prompt).
    """
    per_pair = -nn.functional.logsigmoid(rewards[chosen] - rewards[rejected] - margin.to(rewards.dtype))  # (P,)
    n_groups = int(group.max().item()) + 1
    sums = torch.zeros(n_groups, dtype=per_pair.dtype, device=per_pair.device).index_add(0, group, per_pair)  # (G,)
    counts = torch.bincount(group, minlength=n_groups).to(per_pair.dtype)  # (G,)
    return (sums / counts).mean()


# ------------------------------------------------------------------------------------- trainer


def listwise_trainer_class():
    """A transformers Trainer for groups (built lazily: transformers is heavy to import)."""
    from transformers import Trainer

    from rlhf.reward.train import LengthGroupedPairSampler, RewardTrainingError

    class ListwiseRewardTrainer(Trainer):
        """Batches of whole groups; each reply encoded once per step; `listwise_loss`."""

        def __init__(self, *args, group_by_length: bool = True, **kwargs) -> None:
            self._group_by_length = group_by_length
            processing_class = kwargs.get("processing_class")
            pad_id = processing_class.pad_token_id if processing_class is not None else 0
            kwargs.setdefault("data_collator", lambda examples: collate_groups(examples, pad_id))
            super().__init__(*args, **kwargs)
            self._accuracy: list[float] = []

        def _get_train_sampler(self, train_dataset=None):
            dataset = train_dataset if train_dataset is not None else self.train_dataset
            if not self._group_by_length:
                return super()._get_train_sampler(train_dataset)
            batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
            return LengthGroupedPairSampler(list(dataset["length"]), batch, self.args.seed)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            rewards = pooled_rewards(model, inputs["input_ids"], inputs["attention_mask"])  # (S,)
            loss = listwise_loss(rewards, inputs["chosen"], inputs["rejected"], inputs["margin"], inputs["group"])
            if not torch.isfinite(loss):
                raise RewardTrainingError(f"the loss became {loss.item()} at step {self.state.global_step} (lower the learning rate?)")
            with torch.no_grad():
                self._accuracy.append((rewards[inputs["chosen"]] > rewards[inputs["rejected"]]).float().mean().item())
            return (loss, {"rewards": rewards}) if return_outputs else loss

        def log(self, logs: dict[str, float], *args, **kwargs) -> None:
            if self._accuracy and "loss" in logs:
                logs["accuracy"] = float(np.mean(self._accuracy))
                self._accuracy.clear()
            super().log(logs, *args, **kwargs)

    return ListwiseRewardTrainer
