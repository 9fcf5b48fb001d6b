"""Reward-model training: TRL's RewardTrainer with a LoRA adapter (optionally on a 4-bit NF4 base).

The recipe, in order:
1. data: an export (any format) or a project exported on the fly; ties skipped and counted;
   held-out pairs from the export's test split (else prompts held out by `grouped_split`);
2. tokens: `rlhf.reward.data.encode_pairs` (the one formatting rule scoring also uses),
   truncating explicitly — TRL would silently drop pairs longer than `max_length`;
3. model: sequence classifier on the base (NF4 with double quantisation when asked), LoRA on
   every linear layer, the score head trained in full (`modules_to_save`);
4. train: RewardTrainer, with the reward read at each sequence's last real token (its EOS; the
   model's own pooling would skip it because pad == EOS), length-grouped batches, no gradient
   checkpointing on CPU, fp32 trainable parameters on CPU; checkpoints for `resume`;
5. evaluate: held-out accuracy and calibration next to the human agreement ceiling;
6. normalise: mean and std of raw scores over training responses, stored for `score()`;
7. save: adapter, score head, tokenizer, reward_config.json, metrics.json, lineage.json into a
   temporary directory renamed into place.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch
from torch import nn

from rlhf import __version__
from rlhf.models import default_device, load_sequence_classifier, load_tokenizer, lora_config, resolve_model, trainable_to_fp32
from rlhf.progress import Cancelled, NullReporter, Reporter
from rlhf.redact import redact
from rlhf.reward.config import LINEAGE_FILE, METRICS_FILE, SCORE_HEAD_FILE, RewardConfig, RewardModelConfig
from rlhf.reward.data import PreferenceData, RewardDataError, add_off_prompt_pairs, encode_pairs, load_preference_data, prompt_key, uses_chat_template
from rlhf.reward.evaluate import preference_metrics
from rlhf.reward.heldout import accuracy_by_strength
from rlhf.reward.objectives import margin_per_strength
from rlhf.reward.scorer import head_name_of, pooled_rewards, raw_scores, score_head_module
from rlhf.reward.similarity import REDUNDANCY, SIMILARITY_LEARNING_RATE, accuracies_alone, base_features
from rlhf.roles import SYSTEM, Actor

RUN_FILE = "run.json"
"""Inside the checkpoint directory: what the run trains on, so a resume with other data is refused."""
SIMILARITY_WEIGHT_FILE = "prompt_similarity.json"
"""Inside each checkpoint of a run with frozen-base features: their learned weights (not among the adapter's tensors)."""


class RewardTrainingError(ValueError):
    """Training cannot start or finish as asked (bad options, output exists, resume mismatch, NaN loss)."""


@dataclass
class RewardTrainingResult:
    """What `train_reward_model` produced."""

    out_dir: Path
    metrics: dict[str, Any]
    model_config: RewardModelConfig
    global_step: int
    artifact_id: int | None = None
    resumed_from_step: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def checkpoint_dir_for(out_dir: Path) -> Path:
    """Where checkpoints of a run writing `out_dir` live until it finishes: `<out_dir>.checkpoints` beside it."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".checkpoints")


# --------------------------------------------------------------------------- trainer pieces


def length_grouped_indices(lengths: list[int], batch_size: int, generator: torch.Generator, mega_factor: int = 8) -> list[int]:
    """A shuffled order in which each batch holds pairs of similar length.

    Shuffle, cut into megabatches of `mega_factor × batch_size`, sort each by length
    (descending), then shuffle the order of the batches (so long and short steps mix).
    Deterministic for a given generator state (resume replays the same order).
    """
    order = torch.randperm(len(lengths), generator=generator).tolist()
    mega = max(batch_size, mega_factor * batch_size)
    batches = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start : start + mega], key=lambda i: -lengths[i])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    batch_order = torch.randperm(len(batches), generator=generator).tolist()
    return [index for b in batch_order for index in batches[b]]


class LengthGroupedPairSampler(torch.utils.data.Sampler):
    """`length_grouped_indices` as a sampler; a new order each epoch, seeded."""

    def __init__(self, lengths: list[int], batch_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.seed, self.epoch = lengths, batch_size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(length_grouped_indices(self.lengths, self.batch_size, generator))


class LengthGroupedBatches:
    """Mixin for a Transformers Trainer: batches of similar length (`LengthGroupedPairSampler` over the
    training set's `length` column) when `group_by_length`; the trainer's own order otherwise."""

    def __init__(self, *args, group_by_length: bool = True, **kwargs) -> None:
        self._group_by_length = group_by_length
        super().__init__(*args, **kwargs)

    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self._group_by_length or "length" not in dataset.column_names:
            return super()._get_train_sampler(train_dataset)
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return LengthGroupedPairSampler(list(dataset["length"]), batch, self.args.seed)


def _make_trainer_class():
    """RewardTrainer reading the reward at the last real token, with length-grouped batches (built lazily: TRL is heavy)."""
    from trl import RewardTrainer

    class LastTokenRewardTrainer(LengthGroupedBatches, RewardTrainer):
        """TRL's RewardTrainer; only the pooling of the reward and the batch order differ.

        With `similarity_weight` set (one weight per frozen-base feature, RewardConfig.feature_kinds), the
        reward is the cross-encoder's score + the batch's `similarity` features (2B, F) · weights
        (rlhf.reward.similarity); the weights are trained by the same loss, in their own optimiser group.
        """

        similarity_weight: nn.Parameter | None = None
        feature_kinds: list[str] = []

        def create_optimizer(self, *args, **kwargs):
            optimizer = super().create_optimizer(*args, **kwargs)
            if self.similarity_weight is not None and not any(
                self.similarity_weight is p for group in optimizer.param_groups for p in group["params"]
            ):
                optimizer.add_param_group({"params": [self.similarity_weight], "lr": SIMILARITY_LEARNING_RATE, "weight_decay": 0.0})
            return optimizer

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # Same loss as RewardTrainer (−log σ(r_c − r_r − margin), optional centring term),
            # with rewards read at each sequence's EOS by the attention mask.
            mode = "train" if self.model.training else "eval"
            rewards = pooled_rewards(model, inputs["input_ids"], inputs["attention_mask"])  # (2B,)
            if self.similarity_weight is not None:
                rewards = rewards + inputs["similarity"].to(rewards.device, rewards.dtype) @ self.similarity_weight.to(rewards.device, rewards.dtype)
            rewards_chosen, rewards_rejected = torch.chunk(rewards, chunks=2)  # (B,), (B,)
            difference = rewards_chosen - rewards_rejected
            if "margin" in inputs:
                difference = difference - inputs["margin"].to(difference.dtype)
            loss = -nn.functional.logsigmoid(difference).mean()
            if self.args.center_rewards_coefficient is not None:
                loss = loss + self.args.center_rewards_coefficient * torch.mean((rewards_chosen + rewards_rejected) ** 2)
            if not torch.isfinite(loss):
                raise RewardTrainingError(f"the loss became {loss.item()} at step {self.state.global_step} (lower the learning rate?)")
            with torch.no_grad():
                self._metrics[mode]["accuracy"].append((rewards_chosen > rewards_rejected).float().mean().item())
                self._metrics[mode]["margin"].append((rewards_chosen - rewards_rejected).mean().item())
                self._metrics[mode]["mean_reward"].append(rewards.mean().item())
                if self.similarity_weight is not None:
                    for kind, weight in zip(self.feature_kinds, self.similarity_weight.tolist()):
                        self._metrics[mode][f"{kind}_weight"].append(weight)
            return (loss, {"rewards": rewards}) if return_outputs else loss

    return LastTokenRewardTrainer


class SimilarityCollator:
    """TRL's preference collator, plus `similarity` (2B, F): the chosen rows' frozen-base features, then the rejected
    rows' (as input_ids)."""

    def __init__(self, pad_token_id: int) -> None:
        from trl.trainer.reward_trainer import DataCollatorForPreference

        self.base = DataCollatorForPreference(pad_token_id=pad_token_id)

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base(examples)
        values = [e["chosen_similarity"] for e in examples] + [e["rejected_similarity"] for e in examples]
        batch["similarity"] = torch.tensor(values, dtype=torch.float32)
        return batch


def _similarity_weight_callback(weight: nn.Parameter):
    """Writes the feature weights into every checkpoint, so a resumed run starts from them."""
    from transformers import TrainerCallback

    class SaveSimilarityWeight(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            directory = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if directory.is_dir():
                (directory / SIMILARITY_WEIGHT_FILE).write_text(json.dumps({"weights": weight.detach().tolist()}))
            return control

    return SaveSimilarityWeight()


def _reporter_callback(reporter: Reporter):
    from transformers import TrainerCallback

    class ReporterCallback(TrainerCallback):
        """Progress and metrics to a `Reporter`; a stop request saves a checkpoint and ends training."""

        def __init__(self) -> None:
            self.cancelled = False
            self.first_step: int | None = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.first_step = state.global_step

        def on_step_end(self, args, state, control, **kwargs):
            reporter.progress(state.global_step, state.max_steps, f"step {state.global_step}/{state.max_steps}")
            if reporter.should_stop():
                self.cancelled = True
                control.should_save = True
                control.should_training_stop = True
            return control

        def on_log(self, args, state, control, logs=None, **kwargs):
            values = {k: float(v) for k, v in (logs or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if values:
                reporter.metrics(state.global_step, values)

    return ReporterCallback()


class LateWeightMean:
    """Stochastic weight averaging (Izmailov et al. 2018): the uniform mean of named tensors over the steps after
    `start_fraction` of `total`; `apply` copies the mean into them (nothing happens without a late step)."""

    def __init__(self, start_fraction: float, total: int) -> None:
        self.start_fraction, self.total = start_fraction, total
        self.sums: dict[str, torch.Tensor] = {}
        self.count = 0

    def after_step(self, step: int, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        if step <= self.start_fraction * self.total:
            return
        with torch.no_grad():
            for name, tensor in named:
                value = tensor.detach().to(torch.float32)
                if name in self.sums:
                    self.sums[name] += value
                else:
                    self.sums[name] = value.clone()
        self.count += 1

    def apply(self, named: Iterable[tuple[str, torch.Tensor]]) -> None:
        if not self.count:
            return
        with torch.no_grad():
            for name, tensor in named:
                if name in self.sums:
                    tensor.copy_((self.sums[name] / self.count).to(tensor.dtype))


def trainable_named(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]


def _weight_averaging_callback(start_fraction: float, extra: list[tuple[str, torch.Tensor]] | None = None):
    """Averages the trainable weights (and the `extra` named tensors, trained outside the model) over the steps after
    `start_fraction` of training; the mean replaces them at the end."""
    from transformers import TrainerCallback

    class WeightAveraging(TrainerCallback):
        """`LateWeightMean` driven by the Trainer's steps (its total known once training starts)."""

        def __init__(self) -> None:
            self.mean: LateWeightMean | None = None

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if model is None:
                return control
            if self.mean is None:
                self.mean = LateWeightMean(start_fraction, state.max_steps)
            self.mean.after_step(state.global_step, trainable_named(model) + list(extra or []))
            return control

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if model is not None and self.mean is not None:
                self.mean.apply(trainable_named(model) + list(extra or []))
            return control

    return WeightAveraging()


# --------------------------------------------------------------------------- the run


def _pairs_dataset(data_frame, tokenizer, config: RewardConfig, use_template: bool) -> tuple[Any, dict[str, int]]:
    """Tokenised pairs as a `datasets.Dataset` (chosen_ids, rejected_ids, length[, margin]) and truncation counts."""
    from datasets import Dataset

    prompts = data_frame["prompt"].tolist()
    chosen = encode_pairs(tokenizer, prompts, data_frame["chosen"].tolist(), max_length=config.max_length, use_chat_template=use_template)
    rejected = encode_pairs(tokenizer, prompts, data_frame["rejected"].tolist(), max_length=config.max_length, use_chat_template=use_template)
    columns: dict[str, Any] = {
        "chosen_ids": chosen.ids,
        "rejected_ids": rejected.ids,
        "length": [max(len(a), len(b)) for a, b in zip(chosen.ids, rejected.ids)],
    }
    margins = data_frame["margin"].to_numpy(dtype=float)
    if config.use_margin and not np.isnan(margins).all():
        columns["margin"] = np.nan_to_num(margins, nan=0.0).tolist()
    counts = {
        "pairs": len(chosen.ids),
        "prompts_truncated": max(chosen.prompts_truncated, rejected.prompts_truncated),
        "responses_truncated": chosen.responses_truncated + rejected.responses_truncated,
    }
    return Dataset.from_dict(columns), counts


def _trl_args(config: RewardConfig, checkpoints: Path, device: torch.device):
    from trl import RewardConfig as TRLRewardConfig

    on_cuda = device.type == "cuda"
    checkpointing = on_cuda if config.gradient_checkpointing is None else config.gradient_checkpointing
    # Newer Transformers renamed gradient checkpointing to activation checkpointing (the old name warns).
    names = {f.name for f in dataclasses.fields(TRLRewardConfig)}
    checkpointing_arg = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    return TRLRewardConfig(
        **{checkpointing_arg: checkpointing},
        output_dir=str(checkpoints),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        learning_rate=config.learning_rate,
        num_train_epochs=config.num_epochs,
        max_steps=config.max_steps,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        lr_scheduler_type=config.lr_scheduler_type,
        seed=config.seed,
        data_seed=config.seed,
        bf16=on_cuda,  # CPU bf16 matmuls are ~20x slower: fp32 there (DESIGN.md)
        max_length=None,  # already truncated explicitly; TRL would silently drop longer pairs
        center_rewards_coefficient=config.center_rewards_coefficient,
        logging_steps=config.logging_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=2,
        report_to="none",
        disable_tqdm=True,  # progress goes to our reporter
        remove_unused_columns=False,  # keep `length` for the sampler; the collator ignores it
        use_cpu=not on_cuda,
        dataloader_pin_memory=on_cuda,
    )


def _last_checkpoint(checkpoints: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None


def _run_fingerprint(config: RewardConfig, data: PreferenceData) -> dict[str, Any]:
    from rlhf.hashing import content_hash

    training = {k: v for k, v in asdict(config).items() if k not in ("save_steps", "logging_steps", "device", "max_steps", "num_epochs")}
    data_hash = data.manifest.content_hash if data.manifest else content_hash(data.train[["chosen", "rejected"]].to_dict("list"))
    return {"config": training, "data": data_hash}


def _prepare_checkpoints(checkpoints: Path, fingerprint: dict[str, Any], resume: bool, reporter: Reporter) -> str | None:
    """The checkpoint to resume from (None: start fresh); refuses to resume a run on other data or settings."""
    run_file = checkpoints / RUN_FILE
    last = _last_checkpoint(checkpoints)
    if resume and last is not None:
        recorded = json.loads(run_file.read_text()) if run_file.is_file() else None
        if recorded != json.loads(json.dumps(fingerprint, default=str)):
            raise RewardTrainingError(
                f"cannot resume from {last}: it was trained on other data or settings (start again without resume)"
            )
        reporter.log(f"resuming from {last}")
        return last
    if resume:
        reporter.log("no checkpoint to resume from: starting from step 0")
    if checkpoints.exists():
        shutil.rmtree(checkpoints)
    checkpoints.mkdir(parents=True)
    run_file.write_text(json.dumps(fingerprint, default=str, sort_keys=True))
    return None


def train_reward_model(
    config: RewardConfig,
    out_dir: str | os.PathLike,
    *,
    data: str | os.PathLike | None = None,
    engine=None,
    project: str | int | None = None,
    actor: Actor = SYSTEM,
    export_options=None,
    resume: bool = False,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    job_id: int | None = None,
    ratings: str | os.PathLike | None = None,
) -> RewardTrainingResult:
    """Train a reward model on `data` (an export path) or on `project` (exported on the fly from `engine`).

    `ratings`: a raw or ratings export for `config.objective` regression / joint (with `project`,
    its ratings are exported on the fly too); see `rlhf.reward.objectives`.

    Writes the reward directory `out_dir` (see module docstring) and, with an engine, an
    `Artifact(kind="reward_model")`. `reporter` receives progress (optimizer steps), metrics
    and log lines; when `reporter.should_stop()` turns true, a checkpoint is saved and
    `Cancelled` is raised — `resume=True` later continues from it. Raises RewardDataError /
    ExportError for unusable data, ModelNotFoundError for an unknown base, RewardTrainingError
    for bad options or an existing `out_dir` (unless `overwrite`); nothing is written to
    `out_dir` unless training finished.
    """
    reporter = reporter or NullReporter()
    config.validate()
    out_dir = Path(out_dir)
    if project is None:
        from rlhf.reward.objectives import check_sources

        check_sources(config.objective, data, ratings)
    if (data is None and ratings is None) == (project is None):
        raise RewardTrainingError("give either data (an export path) or project (with an engine), not both or neither")
    if out_dir.exists() and not overwrite:
        raise RewardTrainingError(f"output {str(out_dir)!r} exists (pass overwrite to replace it)")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    checkpoints = checkpoint_dir_for(out_dir)
    checkpoints.parent.mkdir(parents=True, exist_ok=True)

    # 1. data
    export_scratch = None
    try:
        if project is not None:
            if engine is None:
                raise RewardTrainingError("training from a project needs a database engine")
            from rlhf.export import ExportOptions, export_project

            export_scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.export-", dir=out_dir.parent))
            reporter.log(f"exporting project {project!r}")
            if config.objective != "pairwise":
                from rlhf.reward.objectives import export_project_data

                data, ratings = export_project_data(engine, actor, project, config, export_scratch, export_options)
            else:
                export_project(
                    engine, actor, project, format="trl", out=export_scratch / "pairs", record_artifact=False,
                    options=export_options or ExportOptions(test_size=config.eval_fraction, seed=config.seed),
                )
                data = export_scratch / "pairs"
        if config.objective != "pairwise":
            from rlhf.reward.objectives import project_weights, train_objective

            return train_objective(
                config, out_dir, pairs_path=data, ratings_path=ratings, engine=engine, actor=actor, reporter=reporter, job_id=job_id,
                timings=timings, started=started, exported_on_the_fly=project is not None, overwrite=overwrite,
                weights_of_project=project_weights(engine, project), resume=resume,
            )
        return _train(config, out_dir, Path(data), checkpoints, engine=engine, actor=actor, resume=resume, overwrite=overwrite,
                      reporter=reporter, job_id=job_id, timings=timings, started=started, exported_on_the_fly=project is not None)
    except Cancelled:
        raise
    except BaseException:
        # A run that failed before its first checkpoint leaves nothing to resume: leave nothing at all.
        if checkpoints.is_dir() and not any(checkpoints.glob("checkpoint-*")):
            shutil.rmtree(checkpoints, ignore_errors=True)
        raise
    finally:
        if export_scratch is not None:
            shutil.rmtree(export_scratch, ignore_errors=True)


def _train(config, out_dir, data_path, checkpoints, *, engine, actor, resume, overwrite, reporter, job_id, timings, started, exported_on_the_fly):
    data = load_preference_data(data_path, eval_fraction=config.eval_fraction, seed=config.seed)
    reporter.log(f"{len(data.train)} training pairs, {len(data.test)} held out, {data.ties_skipped} ties skipped")
    refit_pairs = None
    if config.refit_features:  # prompts the adapter never sees, for the feature weights' refit (before any pair is added)
        from rlhf.export import grouped_split

        kept = grouped_split([prompt_key(p) for p in data.train["prompt"]], config.refit_features, config.seed)
        if kept.all() or not kept.any():
            raise RewardDataError(f"refit_features {config.refit_features}: {len(data.train)} training pairs leave no prompts to refit on or none to train on")
        refit_pairs, data.train = data.train[kept].reset_index(drop=True), data.train[~kept].reset_index(drop=True)
        reporter.log(f"{len(refit_pairs)} pairs of {refit_pairs['prompt'].map(prompt_key).nunique()} training prompts kept apart to refit the feature weights")
    exported_train_pairs = len(data.train)
    if config.off_prompt_pairs:
        data.train = add_off_prompt_pairs(data.train, config.off_prompt_pairs, config.seed)
        reporter.log(f"{len(data.train) - exported_train_pairs} off-prompt pairs added (a reply to another prompt as the rejected one)")

    # 2. tokens
    source = resolve_model(config.base_model)
    device = torch.device(config.device) if config.device else default_device()
    tokenizer = load_tokenizer(source, padding_side="right")
    use_template = uses_chat_template(tokenizer)
    if config.listwise:  # groups of a ranking's pairs, each reply encoded once (rlhf.reward.listwise)
        from rlhf.reward.listwise import listwise_dataset, listwise_trainer_class

        train_set, truncation = listwise_dataset(data.train, tokenizer, config, use_template)
    else:
        train_set, truncation = _pairs_dataset(data.train, tokenizer, config, use_template)
    if truncation["prompts_truncated"] or truncation["responses_truncated"]:
        reporter.log(
            f"truncated to {config.max_length} tokens: {truncation['prompts_truncated']} prompts (from the left), "
            f"{truncation['responses_truncated']} responses (EOS kept); no pair dropped"
        )

    # 3. model
    fingerprint = _run_fingerprint(config, data)
    resume_from = _prepare_checkpoints(checkpoints, fingerprint, resume, reporter)
    torch.manual_seed(config.seed)  # the score head's initialisation
    model = load_sequence_classifier(source, load_in_4bit=config.load_in_4bit, device=device, pad_token_id=tokenizer.pad_token_id)
    head_name = head_name_of(model)
    kinds = config.feature_kinds()
    if kinds:  # fixed features of each text pair: computed once, on the base before any adapter
        prompts = data.train["prompt"].tolist()
        similarity_of = lambda replies: base_features(  # noqa: E731
            model, tokenizer, prompts, replies, kinds, max_length=config.max_length, batch_size=config.eval_batch_size, device=device,
        ).tolist()
        train_set = train_set.add_column("chosen_similarity", similarity_of(data.train["chosen"].tolist()))
        train_set = train_set.add_column("rejected_similarity", similarity_of(data.train["rejected"].tolist()))
        torch.manual_seed(config.seed)  # the head's initialisation does not depend on the feature being on
    from peft import get_peft_model

    lora = lora_config(
        "SEQ_CLS", r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout,
        target_modules=config.lora_target_modules, modules_to_save=[head_name],
    )
    model = get_peft_model(model, lora)

    # 4. train
    callback = _reporter_callback(reporter)
    callbacks = [callback]
    trainer_class = listwise_trainer_class() if config.listwise else _make_trainer_class()
    similarity_weight = None
    if kinds:
        similarity_weight = nn.Parameter(torch.tensor(_resumed_similarity_weights(resume_from, len(kinds)), dtype=torch.float32))
        callbacks.append(_similarity_weight_callback(similarity_weight))
    if config.average_weights_from:  # the feature weights with the adapter: the saved reward reads both
        extra = [("similarity_weight", similarity_weight)] if similarity_weight is not None else []
        callbacks.append(_weight_averaging_callback(config.average_weights_from, extra))
    trainer = trainer_class(
        model=model,
        args=_trl_args(config, checkpoints, device),
        train_dataset=train_set,
        processing_class=tokenizer,
        callbacks=callbacks,
        group_by_length=config.group_by_length,
        **({"data_collator": SimilarityCollator(tokenizer.pad_token_id)} if similarity_weight is not None else {}),
    )
    trainer.similarity_weight, trainer.feature_kinds = similarity_weight, kinds
    if device.type == "cpu":
        # TRL casts a 4-bit model's trainable parameters to bf16, which fp32 compute cannot mix with.
        trainable_to_fp32(trainer.model)
    if trainer.args.world_size > 1:
        raise RewardTrainingError("reward-model training runs in one process (one GPU or the CPU)")
    timings["prepare_s"] = time.perf_counter() - started
    train_started = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume_from)
    timings["train_s"] = time.perf_counter() - train_started
    if callback.cancelled:
        raise Cancelled(f"cancelled at step {trainer.state.global_step}; checkpoint saved in {checkpoints} (resume to continue)")
    model = trainer.model
    model.eval()

    pad_id = tokenizer.pad_token_id
    refit = None
    if refit_pairs is not None:
        refit = _refit_feature_weights(model, tokenizer, refit_pairs, similarity_weight, kinds, config, use_template, device)
        reporter.log(
            f"feature weights refit on {refit['pairs']} pairs of unseen prompts: "
            + ", ".join(f"{kind} {a:.3f} → {b:.3f}" for kind, a, b in zip(kinds, refit["trained_weights"], refit["weights"]))
            + f" (their accuracy {refit['accuracy_trained']:.3f} → {refit['accuracy']:.3f})"
        )

    # 5. evaluate on held-out pairs (raw scores: σ(r_c − r_r) is what the loss calibrates)
    test_chosen = encode_pairs(tokenizer, data.test["prompt"].tolist(), data.test["chosen"].tolist(), max_length=config.max_length, use_chat_template=use_template).ids
    test_rejected = encode_pairs(tokenizer, data.test["prompt"].tolist(), data.test["rejected"].tolist(), max_length=config.max_length, use_chat_template=use_template).ids
    chosen_scores = raw_scores(model, test_chosen, pad_id=pad_id, batch_size=config.eval_batch_size, device=device)
    rejected_scores = raw_scores(model, test_rejected, pad_id=pad_id, batch_size=config.eval_batch_size, device=device)
    similarity_metrics = None
    if similarity_weight is not None:
        weights = similarity_weight.detach().float()
        test_prompts = data.test["prompt"].tolist()
        similarity_of = lambda replies: base_features(  # noqa: E731
            model, tokenizer, test_prompts, replies, kinds, max_length=config.max_length, batch_size=config.eval_batch_size, device=device,
        )
        chosen_features, rejected_features = similarity_of(data.test["chosen"].tolist()), similarity_of(data.test["rejected"].tolist())
        cross_accuracy = float((chosen_scores > rejected_scores).float().mean()) if len(chosen_scores) else None
        chosen_scores = chosen_scores + chosen_features @ weights
        rejected_scores = rejected_scores + rejected_features @ weights
        similarity_metrics = feature_metrics(config, kinds, weights.tolist(), chosen_features, rejected_features, cross_accuracy)
        reporter.log("feature weights " + ", ".join(f"{kind} {w:.3f}" for kind, w in zip(kinds, weights.tolist())))
    held_out = preference_metrics(
        chosen_scores.numpy(), rejected_scores.numpy(), human_agreement=data.test["agreement"].to_numpy(float), n_bins=config.calibration_bins
    )
    held_out["by_strength"] = accuracy_by_strength(
        chosen_scores.numpy(), rejected_scores.numpy(), data.test["margin"].to_numpy(float), data.test["agreement"].to_numpy(float),
        margin_per_strength=margin_per_strength(data),
    )

    # 6. normalisation over (a sample of) the training responses
    responses = _normalization_sequences(train_set, config.normalization_samples, config.seed)
    train_raw = raw_scores(model, responses, pad_id=pad_id, batch_size=config.eval_batch_size, device=device)
    if similarity_weight is not None:
        train_raw = train_raw + torch.tensor(_similarities_of_sequences(train_set, responses), dtype=torch.float32) @ similarity_weight.detach().float()
    mean, std = float(train_raw.mean()), float(train_raw.std()) if len(train_raw) > 1 else 1.0
    std = std if std > 1e-6 and math.isfinite(std) else 1.0

    # 7. save
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    metrics = {
        "held_out": held_out,
        "train": {"first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None, "steps": trainer.state.global_step},
        "data": {"train_pairs": len(data.train), "off_prompt_pairs": len(data.train) - exported_train_pairs, "test_pairs": len(data.test), "ties_skipped": data.ties_skipped, **truncation},
        "normalization": {"mean": mean, "std": std, "responses": len(responses)},
        **({"prompt_similarity": similarity_metrics} if similarity_metrics is not None else {}),
        **({"feature_refit": refit} if refit is not None else {}),
        "export_hash": data.manifest.content_hash if data.manifest else None,
        "timings": timings,
    }
    model_config = RewardModelConfig(
        base_model=config.base_model,
        base_model_resolved=source.path,
        load_in_4bit=config.load_in_4bit,
        max_length=config.max_length,
        score_mean=mean,
        score_std=std,
        lora={"r": config.lora_r, "alpha": lora.lora_alpha, "dropout": config.lora_dropout, "target_modules": config.lora_target_modules},
        head_name=head_name,
        use_chat_template=use_template,
        export_hash=metrics["export_hash"],
        training=asdict(config),
        prompt_similarity=config.prompt_similarity,
        **named_feature_weights(kinds, similarity_weight.detach().tolist() if similarity_weight is not None else []),
    )
    lineage = {
        "kind": "reward_model",
        "base_model": config.base_model,
        "base_model_resolved": source.path,
        "data": "exported from the project for this run" if exported_on_the_fly else str(data_path.resolve()),
        "export_manifest": json_safe(asdict(data.manifest)) if data.manifest else None,
        "export_hash": metrics["export_hash"],
        "software_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resumed_from": resume_from,
    }
    lineage = redact(lineage)  # paths and the export manifest may carry a credential (issue 16, item 4)
    _save_reward_dir(model, tokenizer, model_config, metrics, lineage, out_dir, overwrite)
    shutil.rmtree(checkpoints, ignore_errors=True)
    artifact_id = None
    if engine is not None:
        project_id = data.manifest.project_id if data.manifest else None
        artifact_id = _record_artifact(engine, actor, out_dir, model_config, metrics, lineage, job_id, project_id)
    reporter.log(
        f"held-out accuracy {held_out['accuracy']:.3f} (human agreement {held_out['human_agreement']:.3f}), ECE {held_out['ece']:.3f}"
    )
    return RewardTrainingResult(
        out_dir=out_dir, metrics=metrics, model_config=model_config, global_step=trainer.state.global_step,
        artifact_id=artifact_id, resumed_from_step=_step_of(resume_from), timings=timings,
    )


def _refit_feature_weights(model, tokenizer, pairs, similarity_weight: nn.Parameter, kinds: list[str], config: RewardConfig, use_template: bool, device) -> dict[str, Any]:
    """Refit `similarity_weight` in place on `pairs` (prompts the adapter never trained on); what it did, for metrics.json."""
    from rlhf.reward.similarity import refit_feature_weights

    prompts = pairs["prompt"].tolist()
    scores, features = [], []
    for side in ("chosen", "rejected"):
        replies = pairs[side].tolist()
        ids = encode_pairs(tokenizer, prompts, replies, max_length=config.max_length, use_chat_template=use_template).ids
        scores.append(raw_scores(model, ids, pad_id=tokenizer.pad_token_id, batch_size=config.eval_batch_size, device=device))
        features.append(base_features(model, tokenizer, prompts, replies, kinds, max_length=config.max_length, batch_size=config.eval_batch_size, device=device))
    cross_margin, feature_margin = scores[0] - scores[1], features[0] - features[1]
    trained = similarity_weight.detach().float().clone()
    refit = refit_feature_weights(cross_margin, feature_margin, trained)
    with torch.no_grad():
        similarity_weight.copy_(refit)

    def accuracy(weights: torch.Tensor) -> float:
        return float(((cross_margin + feature_margin @ weights) > 0).float().mean())

    return {
        "pairs": len(pairs), "prompts": int(pairs["prompt"].map(prompt_key).nunique()), "features": list(kinds),
        "trained_weights": trained.tolist(), "weights": refit.tolist(),
        "accuracy_trained": accuracy(trained), "accuracy": accuracy(refit), "accuracy_cross_encoder_alone": float((cross_margin > 0).float().mean()),
    }


def _step_of(checkpoint: str | None) -> int:
    return int(Path(checkpoint).name.rsplit("-", 1)[-1]) if checkpoint else 0


def _normalization_sequences(train_set, limit: int, seed: int) -> list[list[int]]:
    """Distinct training responses (chosen and rejected), a seeded sample of at most `limit`."""
    columns = [c for c in ("chosen_ids", "rejected_ids") if c in train_set.column_names]
    unique = {tuple(ids) for column in columns for ids in train_set[column]}
    unique |= {tuple(ids) for group in (train_set["sequences"] if "sequences" in train_set.column_names else ()) for ids in group}
    sequences = sorted(unique)
    if len(sequences) > limit:
        sequences = random.Random(seed).sample(sequences, limit)
    return [list(s) for s in sequences]


def _similarities_of_sequences(train_set, sequences: list[list[int]]) -> list[list[float]]:
    """The frozen-base features of each of `sequences` (token ids of training pairs), read off the training set's columns."""
    known: dict[tuple[int, ...], list[float]] = {}
    for kind in ("chosen", "rejected"):
        for ids, value in zip(train_set[f"{kind}_ids"], train_set[f"{kind}_similarity"]):
            known[tuple(ids)] = value
    return [known[tuple(s)] for s in sequences]


def _resumed_similarity_weights(checkpoint: str | None, features: int) -> list[float]:
    """The feature weights a checkpoint saved (zeros to start, or for a checkpoint without them)."""
    path = Path(checkpoint) / SIMILARITY_WEIGHT_FILE if checkpoint else None
    if path is None or not path.is_file():
        return [0.0] * features
    # The run's fingerprint (its settings, features included) already matched, so the count does too.
    return [float(w) for w in json.loads(path.read_text())["weights"]]


def named_feature_weights(kinds: list[str], weights: list[float], per_dimension: list[list[float]] | None = None) -> dict[str, Any]:
    """RewardModelConfig's fields for the learned feature weights: the scalar's (and each head's) weight of the prompt
    similarity and of the reply redundancy; None for a feature the model does not add."""
    named = dict(zip(kinds, range(len(kinds))))
    similarity = next((i for kind, i in named.items() if kind != REDUNDANCY), None)
    redundancy = named.get(REDUNDANCY)
    fields: dict[str, Any] = {
        "prompt_similarity_weight": weights[similarity] if similarity is not None else None,
        "reply_redundancy_weight": weights[redundancy] if redundancy is not None else None,
    }
    if per_dimension is not None:
        fields["prompt_similarity_dimension_weights"] = per_dimension[similarity] if similarity is not None else None
        fields["reply_redundancy_dimension_weights"] = per_dimension[redundancy] if redundancy is not None else None
    return fields


def feature_metrics(config: RewardConfig, kinds: list[str], weights: list[float], chosen: torch.Tensor, rejected: torch.Tensor, cross_accuracy: float | None) -> dict[str, Any]:
    """metrics.json's `prompt_similarity`: each feature's learned weight and what each part of the reward alone gets
    right on the held-out pairs (the whole reward's accuracy is `held_out.accuracy`); `chosen` / `rejected` (N, F).
    The prompt similarity keeps its earlier keys (kind, weight, held_out_accuracy_similarity_alone)."""
    out: dict[str, Any] = {"kind": config.prompt_similarity, "features": list(kinds), "held_out_accuracy_cross_encoder_alone": cross_accuracy}
    for kind, weight in zip(kinds, weights):
        out["redundancy_weight" if kind == REDUNDANCY else "weight"] = weight
    return {**out, **accuracies_alone(kinds, chosen, rejected)}


def _save_reward_dir(model, tokenizer, model_config: RewardModelConfig, metrics, lineage, out_dir: Path, overwrite: bool) -> None:
    """Write everything into a temporary sibling directory, then rename it onto `out_dir`."""
    from safetensors.torch import save_file

    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        model.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))
        head = score_head_module(model)
        weight = head.weight.detach().float().cpu()
        if model_config.dimensions:  # one head per dimension: the file holds them folded into the scalar's (1, H)
            weight = torch.tensor(model_config.head_weights(), dtype=torch.float32) @ weight
        save_file({"weight": weight.reshape(1, -1).contiguous()}, str(staging / SCORE_HEAD_FILE))
        model_config.save(staging)
        (staging / METRICS_FILE).write_text(json.dumps(redact(json_safe(metrics)), indent=2))
        (staging / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, default=str))
        if out_dir.exists():
            if not overwrite:
                raise RewardTrainingError(f"output {str(out_dir)!r} exists (pass overwrite to replace it)")
            trash = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            out_dir.rename(trash)
            staging.rename(out_dir)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def json_safe(value):
    """`value` with NaN / inf floats as None and numpy scalars as Python ones: strict JSON, and storable in a JSON column."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _record_artifact(engine, actor, out_dir: Path, model_config: RewardModelConfig, metrics, lineage, job_id, project_id) -> int:
    """An Artifact(kind="reward_model") whose parent is the export it was trained on (when that export was recorded)."""
    import sqlalchemy as sa

    from rlhf.db import run_transaction
    from rlhf.hashing import file_sha256
    from rlhf.schema import Artifact

    export_hash = model_config.export_hash
    adapter_hash = file_sha256(out_dir / "adapter_model.safetensors")
    held_out = {k: v for k, v in metrics["held_out"].items() if k != "bins"}

    def work(session) -> int:
        parents = []
        if export_hash:
            query = sa.select(Artifact.id).where(Artifact.kind == "export", Artifact.content_hash == export_hash).order_by(Artifact.id)
            parents = list(session.execute(query).scalars())[-1:]
        artifact = Artifact(
            kind="reward_model",
            name=out_dir.name,
            path=str(out_dir.resolve()),
            content_hash=adapter_hash,
            project_id=project_id,
            job_id=job_id,
            parent_ids=parents,
            lineage=json_safe(lineage),
            metrics=json_safe({"held_out": held_out, "normalization": metrics["normalization"]}),
            created_by=getattr(actor, "id", None),
        )
        session.add(artifact)
        session.flush()
        return int(artifact.id)

    return run_transaction(engine, work)
