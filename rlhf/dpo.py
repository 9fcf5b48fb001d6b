"""DPO on a (4-bit) LoRA policy through TRL's `DPOTrainer`: `train_dpo(config, *, reporter=None) -> DPOResult`.

Data: a TRL preference export (`rlhf export`: JSONL, Parquet or a datasets directory with
prompt / chosen / rejected), read and validated by `rlhf.reward.data` (ties skipped, the
export's own test split used for evaluation). Plain prompts become a user message when the
tokenizer has a chat template, so DPO sees prompts exactly as PPO and `rlhf generate` render them.

The reference is the base with the adapter disabled; when the policy starts from an SFT adapter,
TRL keeps a frozen copy of it ("ref") as the reference. Output: the output directory is a PEFT
adapter (`adapter_config.json` naming a resolvable base) plus `lineage.json` and `metrics.json`.

This module imports only the standard library at import time (the CLI reads `DPORunConfig`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlhf.ppo.config import PACKAGED_POLICY, ConfigFile


class DPOError(ValueError):
    """A DPO run that cannot start or had to stop; the message says why."""


@dataclass
class DPORunConfig(ConfigFile):
    data: str = ""
    """TRL preference export: a .jsonl / .parquet file or a datasets directory with prompt, chosen, rejected."""
    policy: str = PACKAGED_POLICY
    """Starting policy: a hub id, a local checkpoint, the packaged alias, or an SFT adapter directory
    (then a frozen copy of that adapter is the reference)."""
    out: str = "runs/dpo"
    """Output directory: the trained adapter, lineage.json, metrics.json, and TRL checkpoints."""
    load_in_4bit: bool = False
    """Quantise the base to 4-bit NF4 (QLoRA); the adapter trains in fp32."""
    device: str | None = None
    """"cpu", "cuda", "cuda:1", ...; None picks CUDA when present."""
    lora_r: int = 16
    """LoRA rank (for a new adapter)."""
    lora_alpha: int = 32
    """LoRA scaling numerator."""
    lora_target_modules: str = "all-linear"
    """Modules that carry LoRA: `all-linear` or a comma-separated list of module names."""
    beta: float = 0.1
    """DPO temperature: how far the policy may move from the reference (higher = closer)."""
    loss_type: str = "sigmoid"
    """TRL loss type: sigmoid (DPO), ipo, hinge, robust, ... (see TRL's DPOConfig)."""
    learning_rate: float = 5e-5
    """AdamW peak learning rate."""
    num_epochs: float = 1.0
    """Passes over the training pairs (ignored when `max_steps` > 0)."""
    max_steps: int = -1
    """Stop after this many optimiser steps; -1 runs `num_epochs`."""
    batch_size: int = 4
    """Preference pairs per step and device."""
    gradient_accumulation_steps: int = 1
    """Micro-batches accumulated per optimiser step."""
    max_length: int = 512
    """Tokens per sequence (prompt + response); longer sequences are truncated (TRL `truncation_mode`)."""
    truncation_mode: str = "keep_start"
    """Which end TRL keeps when a sequence is too long: keep_start or keep_end."""
    chat_template: bool = True
    """Turn plain-text prompts into a user message when the tokenizer has a chat template."""
    eval_fraction: float = 0.1
    """Share of prompts held out for evaluation when the export has no test split (0: none)."""
    logging_steps: int = 5
    """Report loss and reward margins every this many steps."""
    save_steps: int = 50
    """TRL checkpoint every this many steps (under `<out>/checkpoints`)."""
    resume: bool = False
    """Continue from the newest TRL checkpoint under `<out>/checkpoints`."""
    seed: int = 0
    """Seeds the adapter initialisation and the data order."""

    def validate(self) -> "DPORunConfig":
        if not self.data:
            raise ValueError("config field 'data' is required (a TRL preference export)")
        for name in ("lora_r", "batch_size", "gradient_accumulation_steps", "max_length"):
            if getattr(self, name) <= 0:
                raise ValueError(f"config field {name!r} must be positive, got {getattr(self, name)!r}")
        if self.beta <= 0:
            raise ValueError(f"config field 'beta' must be positive, got {self.beta}")
        if self.truncation_mode not in ("keep_start", "keep_end"):
            raise ValueError(f"config field 'truncation_mode' must be keep_start or keep_end, got {self.truncation_mode!r}")
        return self


@dataclass
class DPOResult:
    """What a finished DPO run produced; `output_dir` loads with `rlhf.models.resolve_model`."""

    output_dir: Path
    steps: int
    metrics: dict[str, Any]
    lineage: dict[str, Any]


# --------------------------------------------------------------------------- data


def preference_dataset_rows(frame, *, conversational: bool) -> list[dict[str, Any]]:
    """TRL DPO rows from a preference frame (prompt, chosen, rejected).

    conversational: prompts become message lists (a plain prompt → one user message) and the
    responses assistant messages, so TRL renders them with the chat template.
    """
    rows = []
    for prompt, chosen, rejected in zip(frame["prompt"], frame["chosen"], frame["rejected"]):
        if conversational:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            rows.append({
                "prompt": messages,
                "chosen": [{"role": "assistant", "content": chosen}],
                "rejected": [{"role": "assistant", "content": rejected}],
            })
        elif isinstance(prompt, str):
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
        else:
            raise DPOError("a chat prompt needs a tokenizer with a chat template (or chat_template=True)")
    return rows


# --------------------------------------------------------------------------- training


def _reporter_callback(reporter):
    from transformers import TrainerCallback

    from rlhf.progress import Cancelled

    class ReporterCallback(TrainerCallback):
        """Forward progress and logs to the reporter; stop cleanly when it asks to."""

        def on_step_end(self, args, state, control, **kwargs):
            reporter.progress(state.global_step, state.max_steps, "")
            if reporter.should_stop():
                control.should_save = True
                control.should_training_stop = True
                self.cancelled = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            numbers = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float))}
            if numbers:
                reporter.metrics(state.global_step, numbers)

    callback = ReporterCallback()
    callback.cancelled = False
    callback.Cancelled = Cancelled
    return callback


def train_dpo(config: DPORunConfig, *, reporter=None) -> DPOResult:
    """Train a LoRA policy with DPO on a preference export; write the adapter and lineage.json to `config.out`.

    Raises DPOError / RewardDataError (unusable data, naming the file and row), ModelNotFoundError
    (unknown policy), ValueError (bad config). When `reporter.should_stop()` turns true, TRL saves
    a checkpoint and `Cancelled` is raised; `resume=True` continues from it. Nothing is written to
    the output's adapter files unless training finished.
    """
    import torch
    from trl import DPOConfig, DPOTrainer

    from rlhf import __version__
    from rlhf.hashing import content_hash, file_sha256
    from rlhf.models import compute_dtype, load_causal_lm, load_tokenizer, lora_config, resolve_model, trainable_to_fp32
    from rlhf.ppo.model import portable_base_name
    from rlhf.progress import Cancelled, NullReporter
    from rlhf.redact import redact
    from rlhf.reward.data import load_preference_data

    reporter = reporter or NullReporter()
    config.validate()
    out = Path(config.out)
    device = torch.device(config.device) if config.device else (torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu"))
    on_cuda = device.type == "cuda"

    # 1. data
    data = load_preference_data(config.data, eval_fraction=config.eval_fraction, seed=config.seed)
    reporter.log(f"{len(data.train)} training pairs, {len(data.test)} held out, {data.ties_skipped} ties skipped")

    # 2. model: a new LoRA on the base, or the SFT adapter itself (TRL then freezes a copy as the reference)
    source = resolve_model(config.policy)
    tokenizer = load_tokenizer(source, padding_side="left")
    conversational = bool(config.chat_template and getattr(tokenizer, "chat_template", None))
    from datasets import Dataset

    train_set = Dataset.from_list(preference_dataset_rows(data.train, conversational=conversational))
    eval_set = Dataset.from_list(preference_dataset_rows(data.test, conversational=conversational)) if len(data.test) else None
    torch.manual_seed(config.seed)
    if source.kind == "adapter":
        model = load_causal_lm(source, load_in_4bit=config.load_in_4bit, device=device, trainable_adapter=True)
        peft_config = None
    else:
        model = load_causal_lm(source, load_in_4bit=config.load_in_4bit, device=device)
        targets = config.lora_target_modules
        targets = targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
        peft_config = lora_config("CAUSAL_LM", r=config.lora_r, alpha=config.lora_alpha, target_modules=targets)

    checkpoints = out / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    args = DPOConfig(
        output_dir=str(checkpoints),
        beta=config.beta,
        loss_type=[config.loss_type],
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_length=config.max_length,
        truncation_mode=config.truncation_mode,
        # CPU: fp32 compute (bf16 matmuls are ~20x slower here) and no activation checkpointing
        # (it only trades memory for time); CUDA: bf16 and checkpointing, TRL's defaults.
        bf16=on_cuda and compute_dtype(device) == torch.bfloat16,
        gradient_checkpointing=on_cuda,
        use_cpu=not on_cuda,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=2,
        eval_strategy="no",
        report_to=[],
        seed=config.seed,
        disable_dropout=True,
        dataloader_num_workers=0,
    )
    trainer = DPOTrainer(
        model=model, args=args, train_dataset=train_set, eval_dataset=eval_set, processing_class=tokenizer, peft_config=peft_config
    )
    # TRL casts a 4-bit model's adapter to bf16; with fp32 compute that crashes or halves the speed.
    if compute_dtype(device) == torch.float32:
        trainable_to_fp32(trainer.model)
    callback = _reporter_callback(reporter)
    trainer.add_callback(callback)

    # 3. train
    resume_from = None
    if config.resume:
        found = sorted(checkpoints.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
        resume_from = str(found[-1]) if found else None
        if resume_from is None:
            reporter.log("resume: no checkpoint yet, starting from scratch")
    result = trainer.train(resume_from_checkpoint=resume_from)
    if callback.cancelled:
        raise Cancelled(f"DPO cancelled at step {trainer.state.global_step}; resume continues from {checkpoints}")
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    if losses and not all(_finite(x) for x in losses):
        raise DPOError(f"DPO loss became non-finite (losses: {losses[-3:]}); nothing was written; checkpoints kept in {checkpoints}")
    metrics: dict[str, Any] = {"train_loss": result.training_loss, "steps": trainer.state.global_step}
    if eval_set is not None:
        metrics.update({k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, (int, float))})
    last_log = {k: v for entry in trainer.state.log_history for k, v in entry.items() if isinstance(v, (int, float))}
    metrics.update({f"last/{k}": v for k, v in last_log.items() if k.startswith(("rewards/", "logps/", "loss"))})

    # 4. outputs: staged, then moved into place (adapter_config.json last)
    base_name = portable_base_name(config.policy, source)
    staging = Path(tempfile.mkdtemp(prefix=".dpo-final-", dir=out))
    try:
        trainer.model.save_pretrained(str(staging), selected_adapters=["default"])
        adapter_config = json.loads((staging / "adapter_config.json").read_text())
        adapter_config["base_model_name_or_path"] = base_name
        (staging / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True))
        lineage = {
            "kind": "dpo",
            "rlhf_version": __version__,
            "base_model": base_name,
            "policy_start": config.policy,
            "reference": "frozen copy of the starting adapter" if source.kind == "adapter" else "base model (adapter disabled)",
            "data": {
                "path": str(Path(config.data).resolve()),
                "export_hash": data.manifest.content_hash if data.manifest else None,
                "rows_hash": content_hash(train_set.to_list()),
                "train_pairs": len(data.train),
                "test_pairs": len(data.test),
                "ties_skipped": data.ties_skipped,
                "conversational": conversational,
            },
            "config": config.to_dict(),
            "config_hash": content_hash(config.to_dict()),
            "adapter_sha256": file_sha256(staging / "adapter_model.safetensors"),
            "metrics": metrics,
        }
        lineage = redact(lineage)  # paths and the config may carry a credential (issue 16, item 4)
        (staging / "lineage.json").write_text(json.dumps(lineage, indent=2, sort_keys=True, default=str))
        (staging / "metrics.json").write_text(json.dumps(redact(metrics), indent=2, sort_keys=True, default=str))
        for name in ("adapter_model.safetensors", "lineage.json", "metrics.json", "adapter_config.json"):
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    reporter.log(f"DPO done: {trainer.state.global_step} steps, adapter in {out}")
    return DPOResult(out, trainer.state.global_step, metrics, lineage)


def _finite(value: float) -> bool:
    import math

    return isinstance(value, (int, float)) and math.isfinite(value)
