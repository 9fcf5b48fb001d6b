"""Regression and joint reward objectives: one head per rubric dimension, fitted to ratings (and pairs).

`pairwise` stays TRL's RewardTrainer (`rlhf.reward.train`). The other two objectives train here,
on the same base, LoRA, tokenisation and pooling, with a plain PyTorch loop:

- `regression`: the model has one output per rubric dimension d; on ratings (one response, its
  annotator-normalised scores, `rlhf.reward.ratings_data`) the loss is the squared error
  L_MSE = mean_{rated (x, d)} (ŝ_d(x) + b_{a,d} − z_{x,d})², with b the optional per-annotator
  offsets (0 without `annotator_offsets`);
- with `prompt_similarity` (rlhf.reward.similarity), each head adds its own learned weight v_d times the frozen
  base's prompt–reply similarity: ŝ_d(x) = head_d(x) + v_d · sim(x), in both losses; `reply_redundancy` adds
  the reply's self-repetition the same way, with its own weights u_d;
- `joint`: the same model, the scalar reward r(x) = Σ_d w_d ŝ_d(x) (weights summing to 1) enters
  the Bradley–Terry loss on pairs, L_BT = −log σ(r(chosen) − r(rejected) − margin), and
  L = L_BT + λ L_MSE with λ = `regression_weight`; each step takes one batch of each data kind
  that exists (the shorter one cycles).

The scalar reward of both is that weighted sum Σ_d w_d ŝ_d: weights from `dimension_weights`,
else the project's rubric (`weight` of each dimension), else equal; they must sum to a positive
number and are divided by their sum. It is normalised over the training responses like a
pairwise model's, so PPO and `rlhf score` use it unchanged.

Steps, as in `rlhf.reward.train`: 1. data → 2. tokens → 3. model → 4. train → 5. evaluate →
6. normalise → 7. save (temporary directory renamed into place). Resume is for pairwise runs only.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from rlhf import __version__
from rlhf.progress import Cancelled, Reporter
from rlhf.redact import redact
from rlhf.reward.config import RewardConfig, RewardModelConfig
from rlhf.reward.data import PreferenceData, RewardDataError, add_off_prompt_pairs, encode_pairs, load_preference_data, prompt_key, uses_chat_template
from rlhf.reward.evaluate import preference_metrics
from rlhf.reward.heldout import accuracy_by_strength, leave_one_out_ceiling, rating_metrics
from rlhf.reward.ratings_data import RatingsData, read_ratings
from rlhf.reward.scorer import head_name_of, pad_right, pooled_outputs, raw_outputs
from rlhf.reward.similarity import REDUNDANCY, SIMILARITY_LEARNING_RATE, accuracies_alone, base_features


class ObjectiveError(ValueError):
    """The objective cannot run on the data given (checked before any training starts)."""


def check_sources(objective: str, pairs: Any, ratings: Any) -> None:
    """Which data each objective needs: regression the ratings, joint at least one kind, pairwise the pairs."""
    if objective == "regression" and ratings is None:
        raise ObjectiveError("objective 'regression' needs ratings (a raw or ratings export: --ratings, or --project)")
    if objective == "joint" and pairs is None and ratings is None:
        raise ObjectiveError("objective 'joint' needs preference pairs, ratings or both; neither was given")
    if objective == "pairwise" and pairs is None:
        raise ObjectiveError("objective 'pairwise' needs preference pairs (--data or --project)")


def resolve_weights(dimensions: Sequence[str], given: Mapping[str, float] | None, project: Mapping[str, float] | None = None) -> list[float]:
    """The scalar's weight of each dimension, summing to 1.

    `given` (the run's `dimension_weights`): dimensions it does not name weigh 0 and it may not
    name others. Else `project` (the rubric's weights; a dimension it lacks weighs 1). Else 1 each.
    """
    if given is not None:
        unknown = sorted(set(given) - set(dimensions))
        if unknown:
            raise ObjectiveError(f"dimension_weights: {', '.join(map(repr, unknown))} not among the dimensions trained ({', '.join(dimensions)})")
        weights = [float(given.get(d, 0.0)) for d in dimensions]
        origin = "dimension_weights"
    elif project:
        weights = [float(project.get(d, 1.0)) for d in dimensions]
        origin = "the project's rubric weights"
    else:
        weights = [1.0] * len(dimensions)
        origin = "equal weights"
    total = sum(weights)
    if not total > 0 or not all(math.isfinite(w) for w in weights):
        raise ObjectiveError(f"{origin} {dict(zip(dimensions, weights))}: must sum to a positive number (they sum to {total:g})")
    return [w / total for w in weights]


def parse_weights(text: str) -> dict[str, float]:
    """`helpfulness=2,honesty=1` → {"helpfulness": 2.0, "honesty": 1.0}; ObjectiveError naming the bad part."""
    weights = {}
    for part in (p.strip() for p in text.split(",")):
        name, sep, value = part.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            weights[name.strip()] = float(value)
        except ValueError:
            raise ObjectiveError(f"--weights: {part!r} is not dimension=number") from None
    return weights


def project_weights(engine, project: str | int | None) -> dict[str, float] | None:
    """The rubric weights of `project` ({dimension: weight}, 1 where unset); None without a project."""
    if engine is None or project is None:
        return None
    from rlhf.projects import get_project, rubric_weights

    return rubric_weights(get_project(engine, project).rubric)


def export_project_data(engine, actor, project, config: RewardConfig, scratch: Path, export_options=None) -> tuple[Path | None, Path | None]:
    """Export `project`'s pairs (trl) and ratings (raw) into `scratch` with one split; a kind the project lacks is None."""
    import dataclasses

    from rlhf.export import ExportError, ExportOptions, export_project

    options = export_options or ExportOptions(test_size=config.eval_fraction, seed=config.seed)
    try:
        export_project(engine, actor, project, format="trl", out=scratch / "pairs.jsonl", record_artifact=False, options=options)
        pairs: Path | None = scratch / "pairs.jsonl"
    except ExportError:
        pairs = None  # no usable pairs: the ratings alone (regression, or joint on ratings)
    manifest = export_project(
        engine, actor, project, format="raw", out=scratch / "ratings.jsonl", record_artifact=False, options=dataclasses.replace(options, salt=None),
    )
    ratings = scratch / "ratings.jsonl" if manifest.counts.get("ratings") else None
    check_sources(config.objective, pairs, ratings)
    return pairs, ratings


@dataclass
class ObjectiveData:
    """What a regression / joint run trains and evaluates on; held-out prompts of either kind are in neither training set."""

    pairs: PreferenceData | None
    ratings: RatingsData | None
    dimensions: list[str]
    weights: list[float]
    dropped: dict[str, int]
    off_prompt_pairs: int = 0
    """Pairs added by `add_off_prompt_pairs` (joint), counted in `pairs.train`."""


def load_objective_data(config: RewardConfig, pairs_path, ratings_path, weights_of_project: Mapping[str, float] | None) -> ObjectiveData:
    """Read both data kinds, check them against the objective, and keep every held-out prompt out of training."""
    check_sources(config.objective, pairs_path, ratings_path)
    pairs = load_preference_data(pairs_path, eval_fraction=config.eval_fraction, seed=config.seed) if pairs_path is not None else None
    ratings = None
    if ratings_path is not None:
        ratings = read_ratings(ratings_path, dimensions=config.dimensions, eval_fraction=config.eval_fraction, seed=config.seed, annotator_offsets=config.annotator_offsets)
    if ratings is not None:
        dimensions = ratings.dimensions
    else:
        dimensions = list(config.dimensions or config.dimension_weights or weights_of_project or ["reward"])
    weights = resolve_weights(dimensions, config.dimension_weights, weights_of_project)
    dropped = {"train_pairs_on_held_out_prompts": 0, "train_ratings_on_held_out_prompts": 0}
    off_prompt = 0
    held_out = set()
    if pairs is not None:
        held_out |= {prompt_key(p) for p in pairs.test["prompt"]}
    if ratings is not None:
        held_out |= set(ratings.test["prompt_key"])
    if pairs is not None:
        keep = np.array([prompt_key(p) not in held_out for p in pairs.train["prompt"]], dtype=bool)
        dropped["train_pairs_on_held_out_prompts"] = int((~keep).sum())
        pairs.train = pairs.train[keep].reset_index(drop=True)
        if config.off_prompt_pairs and config.objective == "joint" and len(pairs.train):  # regression trains on ratings only
            exported = len(pairs.train)
            pairs.train = add_off_prompt_pairs(pairs.train, config.off_prompt_pairs, config.seed)
            off_prompt = len(pairs.train) - exported
    if ratings is not None:
        keep = ~ratings.train["prompt_key"].isin(held_out).to_numpy()
        dropped["train_ratings_on_held_out_prompts"] = int((~keep).sum())
        ratings.train = ratings.train[keep].reset_index(drop=True)
    if (pairs is None or pairs.train.empty) and (ratings is None or ratings.train.empty):
        raise RewardDataError("no training data left once the held-out prompts are set aside")
    if config.objective == "regression" and ratings.train.empty:
        raise RewardDataError(f"{ratings.source}: no training ratings once the held-out prompts are set aside")
    return ObjectiveData(pairs, ratings if config.objective != "pairwise" else None, dimensions, weights, dropped, off_prompt)


# --------------------------------------------------------------------------- batches and losses


def batch_order(lengths: Sequence[int], batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless length-grouped batches of indices, a new seeded order each epoch (`length_grouped_indices`)."""
    from rlhf.reward.train import length_grouped_indices

    epoch = 0
    while True:
        order = length_grouped_indices(list(lengths), batch_size, torch.Generator().manual_seed(seed + epoch))
        for start in range(0, len(order), batch_size):
            yield order[start : start + batch_size]
        epoch += 1


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None = None) -> torch.Tensor:
    """−mean log σ(r_c − r_r − margin), (B,) each → scalar."""
    difference = chosen - rejected
    if margin is not None:
        difference = difference - margin
    return -nn.functional.logsigmoid(difference).mean()


def masked_squared_error(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean of (predicted − target)² over the entries whose target is not NaN, (B, D) each → scalar (0 when none)."""
    rated = ~torch.isnan(target)
    errors = torch.where(rated, predicted - torch.nan_to_num(target), torch.zeros_like(predicted)) ** 2
    return errors.sum() / rated.sum().clamp(min=1)


@dataclass
class EncodedData:
    """Token ids of the training data: pairs (chosen, rejected, margin) and ratings (ids, targets, annotator)."""

    chosen: list[list[int]]
    rejected: list[list[int]]
    margins: np.ndarray
    rated: list[list[int]]
    targets: np.ndarray
    annotators: np.ndarray
    truncation: dict[str, int]
    chosen_similarity: np.ndarray | None = None
    rejected_similarity: np.ndarray | None = None
    rated_similarity: np.ndarray | None = None
    """With frozen-base features (RewardConfig.feature_kinds): each chosen / rejected / rated row's, (N, F)."""

    def similarity_of_sequences(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """The features of each of `sequences` (token ids of training rows), (n, F), read off the columns above."""
        known: dict[tuple[int, ...], list[float]] = {}
        for ids, values in ((self.chosen, self.chosen_similarity), (self.rejected, self.rejected_similarity), (self.rated, self.rated_similarity)):
            if values is not None:
                known.update(zip(map(tuple, ids), values.tolist()))
        return np.array([known[tuple(s)] for s in sequences], dtype=np.float32)


def add_similarities(encoded: EncodedData, data: ObjectiveData, model, tokenizer, config: RewardConfig, device) -> None:
    """Fill the feature columns (`config.feature_kinds()`), read off `model` (the base, before any adapter)."""

    def similarity(prompts, responses) -> np.ndarray:
        return base_features(
            model, tokenizer, list(prompts), list(responses), config.feature_kinds(), max_length=config.max_length, batch_size=config.eval_batch_size,
            device=device,
        ).numpy()

    if encoded.chosen:
        train = data.pairs.train
        encoded.chosen_similarity, encoded.rejected_similarity = similarity(train["prompt"], train["chosen"]), similarity(train["prompt"], train["rejected"])
    if encoded.rated:
        train = data.ratings.train
        encoded.rated_similarity = similarity(train["prompt"], train["response"])


def encode_training_data(data: ObjectiveData, tokenizer, config: RewardConfig, use_template: bool) -> EncodedData:
    def encode(prompts, responses):
        return encode_pairs(tokenizer, list(prompts), list(responses), max_length=config.max_length, use_chat_template=use_template)

    chosen = rejected = rated = None
    margins, targets, annotators = np.zeros(0), np.zeros((0, len(data.dimensions))), np.zeros(0, dtype=int)
    if data.pairs is not None and config.objective == "joint" and not data.pairs.train.empty:
        train = data.pairs.train
        chosen, rejected = encode(train["prompt"], train["chosen"]), encode(train["prompt"], train["rejected"])
        margins = np.nan_to_num(train["margin"].to_numpy(float), nan=0.0) if config.use_margin else np.zeros(len(train))
    if data.ratings is not None and not data.ratings.train.empty:
        train = data.ratings.train
        rated = encode(train["prompt"], train["response"])
        targets, annotators = data.ratings.targets(train), train["annotator"].to_numpy(dtype=int)
    parts = [p for p in (chosen, rejected, rated) if p is not None]
    return EncodedData(
        chosen=chosen.ids if chosen else [], rejected=rejected.ids if rejected else [], margins=margins,
        rated=rated.ids if rated else [], targets=targets, annotators=annotators,
        truncation={
            "pairs": len(chosen.ids) if chosen else 0,
            "rated_responses": len(rated.ids) if rated else 0,
            "prompts_truncated": sum(p.prompts_truncated for p in parts),
            "responses_truncated": sum(p.responses_truncated for p in parts),
        },
    )


# --------------------------------------------------------------------------- the run


def train_objective(
    config: RewardConfig, out_dir: Path, *, pairs_path, ratings_path, engine, actor, reporter: Reporter, job_id, timings, started,
    exported_on_the_fly: bool, overwrite: bool, weights_of_project: Mapping[str, float] | None = None, resume: bool = False,
):
    """Train a regression or joint reward model and write its directory (see the module docstring)."""
    from peft import get_peft_model

    from rlhf.models import default_device, load_sequence_classifier, load_tokenizer, lora_config, resolve_model, trainable_to_fp32
    from rlhf.reward.train import RewardTrainingResult, _record_artifact, _save_reward_dir, json_safe, named_feature_weights

    # 1. data
    data = load_objective_data(config, pairs_path, ratings_path, weights_of_project)
    if resume:
        reporter.log(f"resume is for pairwise runs: the {config.objective} run starts from step 0")
    described = [f"{len(data.pairs.train)} training pairs, {len(data.pairs.test)} held out" if data.pairs is not None else "no pairs"]
    if data.ratings is not None:
        described.append(f"{len(data.ratings.train)} rating rows ({data.ratings.normalization} normalised), {len(data.ratings.test)} responses held out")
    reporter.log(f"{config.objective}: " + "; ".join(described) + f"; dimensions {', '.join(f'{d} ({w:.2f})' for d, w in zip(data.dimensions, data.weights))}")

    # 2. tokens
    source = resolve_model(config.base_model)
    device = torch.device(config.device) if config.device else default_device()
    tokenizer = load_tokenizer(source, padding_side="right")
    use_template = uses_chat_template(tokenizer)
    encoded = encode_training_data(data, tokenizer, config, use_template)

    # 3. model: one output per dimension, LoRA, the heads trained in full
    torch.manual_seed(config.seed)
    preference_heads = 1 if config.preference_head and encoded.chosen else 0  # the pairs' own output, after the dimensions
    if config.preference_head and not preference_heads:
        reporter.log("no training pairs: the model gets no preference head")
    model = load_sequence_classifier(
        source, num_labels=len(data.dimensions) + preference_heads, load_in_4bit=config.load_in_4bit, device=device, pad_token_id=tokenizer.pad_token_id
    )
    head_name = head_name_of(model)
    similarity_weights = None
    kinds = config.feature_kinds()
    if kinds:  # fixed per row: read once, off the base before the adapter exists
        add_similarities(encoded, data, model, tokenizer, config, device)
        # (F, D [+ 1]): each output's own weight on each feature; a preference head's is trained by the pairs alone
        similarity_weights = nn.Parameter(torch.zeros(len(kinds), len(data.dimensions) + preference_heads, device=device))
        torch.manual_seed(config.seed)  # the adapter's initialisation does not depend on the feature being on
    lora = lora_config(
        "SEQ_CLS", r=config.lora_r, alpha=config.lora_alpha, dropout=config.lora_dropout, target_modules=config.lora_target_modules, modules_to_save=[head_name],
    )
    model = get_peft_model(model, lora)
    if device.type == "cpu":
        trainable_to_fp32(model)
    offsets = nn.Parameter(torch.zeros(max(data.ratings.annotators if data.ratings else 0, 1), len(data.dimensions), device=device))

    # 4. train
    timings["prepare_s"] = time.perf_counter() - started
    train_started = time.perf_counter()
    head_weights = list(data.weights) + [1.0] * preference_heads  # the scalar: Σ_d w_d ŝ_d (+ the preference head)
    history = fit(model, encoded, head_weights, offsets, config, device, tokenizer.pad_token_id, reporter, similarity_weights)
    timings["train_s"] = time.perf_counter() - train_started
    model.eval()

    # 5. evaluate
    pad_id = tokenizer.pad_token_id
    held_out, similarity_parts = evaluate_objective(model, data, tokenizer, config, use_template, device, similarity_weights, preference_heads)

    # 6. normalisation of the scalar over (a sample of) the training responses
    weights = torch.tensor(head_weights)
    responses = sorted({tuple(s) for s in encoded.chosen + encoded.rejected + encoded.rated})
    if len(responses) > config.normalization_samples:
        responses = random.Random(config.seed).sample(responses, config.normalization_samples)
    train_outputs = raw_outputs(model, [list(s) for s in responses], pad_id=pad_id, batch_size=config.eval_batch_size, device=device)
    if similarity_weights is not None:
        similarity = torch.from_numpy(encoded.similarity_of_sequences(responses))
        train_outputs = train_outputs + feature_terms(similarity, similarity_weights.detach().cpu(), train_outputs.shape[1])
    train_raw = train_outputs @ weights
    mean = float(train_raw.mean())
    std = float(train_raw.std()) if len(train_raw) > 1 else 1.0
    std = std if std > 1e-6 and math.isfinite(std) else 1.0

    # 7. save
    export_hash = next((d.manifest.content_hash for d in (data.pairs, data.ratings) if d is not None and d.manifest), None)
    metrics = {
        "objective": config.objective,
        "held_out": held_out,
        "train": {
            "first_loss": history[0]["loss"] if history else None, "last_loss": history[-1]["loss"] if history else None,
            "steps": history[-1]["step"] if history else 0,
        },
        "data": {
            "train_pairs": len(data.pairs.train) if data.pairs is not None else 0,
            "off_prompt_pairs": data.off_prompt_pairs,
            "test_pairs": len(data.pairs.test) if data.pairs is not None else 0,
            "ties_skipped": data.pairs.ties_skipped if data.pairs is not None else 0,
            "rating_normalization": data.ratings.normalization if data.ratings is not None else None,
            **(data.ratings.counts if data.ratings is not None else {}),
            **data.dropped,
            **encoded.truncation,
        },
        "dimensions": dict(zip(data.dimensions, data.weights)),
        "normalization": {"mean": mean, "std": std, "responses": len(responses)},
        **({"prompt_similarity": similarity_metrics(config, data, similarity_weights, similarity_parts, head_weights)} if similarity_weights is not None else {}),
        "export_hash": export_hash,
        "timings": timings,
    }
    model_config = RewardModelConfig(
        base_model=config.base_model, base_model_resolved=source.path, load_in_4bit=config.load_in_4bit, max_length=config.max_length,
        score_mean=mean, score_std=std,
        lora={"r": config.lora_r, "alpha": lora.lora_alpha, "dropout": config.lora_dropout, "target_modules": config.lora_target_modules},
        head_name=head_name, use_chat_template=use_template, export_hash=export_hash, training=asdict(config),
        objective=config.objective, dimensions=list(data.dimensions), dimension_weights=list(data.weights),
        dimension_scale=data.ratings.scale if data.ratings is not None else {},
        prompt_similarity=config.prompt_similarity,
        **(named_feature_weights(kinds, (similarity_weights.detach().cpu() @ weights).tolist(), similarity_weights.detach().cpu()[:, : len(data.dimensions)].tolist()) if similarity_weights is not None else {}),
        preference_head=bool(preference_heads),
    )
    manifests = {kind: json_safe(asdict(d.manifest)) for kind, d in (("pairs", data.pairs), ("ratings", data.ratings)) if d is not None and d.manifest}
    lineage = redact({
        "kind": "reward_model",
        "objective": config.objective,
        "base_model": config.base_model,
        "base_model_resolved": source.path,
        "data": "exported from the project for this run" if exported_on_the_fly else {k: str(Path(v).resolve()) for k, v in (("pairs", pairs_path), ("ratings", ratings_path)) if v is not None},
        "export_manifest": manifests.get("pairs") or manifests.get("ratings"),
        "export_manifests": manifests,
        "export_hash": export_hash,
        "software_version": __version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resumed_from": None,
    })
    _save_reward_dir(model, tokenizer, model_config, metrics, lineage, out_dir, overwrite)
    artifact_id = None
    if engine is not None:
        manifest = next((d.manifest for d in (data.pairs, data.ratings) if d is not None and d.manifest), None)
        artifact_id = _record_artifact(engine, actor, out_dir, model_config, metrics, lineage, job_id, manifest.project_id if manifest else None)
    reporter.log(summary_line(held_out))
    return RewardTrainingResult(out_dir=out_dir, metrics=metrics, model_config=model_config, global_step=metrics["train"]["steps"], artifact_id=artifact_id, timings=timings)


def similarity_metrics(
    config: RewardConfig, data: ObjectiveData, similarity_weights: nn.Parameter, parts: Mapping[str, Any], head_weights: Sequence[float]
) -> dict[str, Any]:
    """The learned weights of each feature's term, the scalar's (Σ_d w_d v_d, plus a preference head's own) and each
    dimension's v_d, and what each part of the scalar alone gets right on the held-out pairs (as a pairwise model's
    metrics say)."""
    per_output = similarity_weights.detach().cpu()  # (F, D [+ 1])
    scalar = (per_output @ torch.tensor(list(head_weights))).tolist()
    dimensions = len(data.dimensions)
    out: dict[str, Any] = {"kind": config.prompt_similarity, "features": config.feature_kinds()}
    for kind, weight, row in zip(config.feature_kinds(), scalar, per_output.tolist()):
        prefix = "redundancy_" if kind == REDUNDANCY else ""
        out[f"{prefix}weight"] = weight
        out[f"{prefix}dimension_weights"] = dict(zip(data.dimensions, row[:dimensions]))
        if len(row) > dimensions:
            out[f"{prefix}preference_head_weight"] = row[dimensions]
    return {**out, **parts}


def summary_line(held_out: Mapping[str, Any]) -> str:
    """One line: pair accuracy beside the ceiling, and the overall correlation with held-out ratings when known."""
    parts = []
    if held_out.get("pairs"):
        parts.append(f"held-out accuracy {held_out['accuracy']:.3f} (human agreement {held_out['human_agreement']:.3f}), ECE {held_out['ece']:.3f}")
    overall = (held_out.get("ratings") or {}).get("overall")
    if overall:
        parts.append(f"correlation with held-out ratings {overall['pearson']:.3f} (ceiling {overall['ceiling']:.3f})")
    return "; ".join(parts) or "no held-out data"


def fit(
    model, encoded: EncodedData, weights: Sequence[float], offsets: nn.Parameter, config: RewardConfig, device, pad_id: int, reporter: Reporter,
    similarity_weights: nn.Parameter | None = None,
) -> list[dict[str, float]]:
    """The optimisation loop; returns the logged history [{step, loss, ...}]. Raises Cancelled on a stop request.

    `similarity_weights` (F, D): each head's weight on each of the rows' frozen-base features, in their own optimiser
    group (the adapter's step size would hardly move a single number; see SIMILARITY_LEARNING_RATE)."""
    from transformers import get_scheduler

    from rlhf.reward.train import LateWeightMean, RewardTrainingError, trainable_named

    has_pairs, has_ratings = bool(encoded.chosen), bool(encoded.rated)
    batches_per_epoch = max(math.ceil(len(encoded.chosen) / config.batch_size), math.ceil(len(encoded.rated) / config.batch_size))
    micro_steps = config.max_steps * config.gradient_accumulation_steps if config.max_steps > 0 else math.ceil(config.num_epochs * batches_per_epoch)
    total = max(1, micro_steps // config.gradient_accumulation_steps)
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": trainable, "weight_decay": config.weight_decay}]
    if encoded.annotators.size and (encoded.annotators >= 0).any():
        groups.append({"params": [offsets], "weight_decay": 0.0})
    if similarity_weights is not None:
        groups.append({"params": [similarity_weights], "weight_decay": 0.0, "lr": SIMILARITY_LEARNING_RATE})
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate)
    scheduler = get_scheduler(config.lr_scheduler_type, optimizer, num_warmup_steps=int(config.warmup_ratio * total), num_training_steps=total)
    w = torch.tensor(list(weights), device=device)  # one per output: the dimensions', then a preference head's 1
    dimensions = encoded.targets.shape[1]
    pair_batches = batch_order([max(len(a), len(b)) for a, b in zip(encoded.chosen, encoded.rejected)], config.batch_size, config.seed) if has_pairs else None
    rating_batches = batch_order([len(s) for s in encoded.rated], config.batch_size, config.seed + 1) if has_ratings else None
    lam = config.regression_weight if config.objective == "joint" else 1.0
    history: list[dict[str, float]] = []
    window: dict[str, list[float]] = {}
    # The feature weights are averaged with the adapter and the heads: the scalar reward reads all of them.
    averaged = LateWeightMean(config.average_weights_from, total) if config.average_weights_from else None
    extra = [("similarity_weights", similarity_weights)] if similarity_weights is not None else []
    model.train()
    for step in range(1, total + 1):
        for _ in range(config.gradient_accumulation_steps):
            loss = torch.zeros((), device=device)
            if pair_batches is not None:
                rows = next(pair_batches)
                ids, mask = pad_right([encoded.chosen[i] for i in rows] + [encoded.rejected[i] for i in rows], pad_id)
                outputs = pooled_outputs(model, ids.to(device), mask.to(device))  # (2B, D [+ 1])
                if similarity_weights is not None:
                    similarity = np.concatenate([encoded.chosen_similarity[rows], encoded.rejected_similarity[rows]])
                    outputs = outputs + feature_terms(torch.as_tensor(similarity, device=device), similarity_weights, outputs.shape[1])
                rewards = outputs @ w  # (2B,)
                chosen, rejected = torch.chunk(rewards, 2)
                margin = torch.tensor(encoded.margins[rows], dtype=torch.float32, device=device)
                pair_loss = bradley_terry_loss(chosen, rejected, margin)
                loss = loss + pair_loss
                window.setdefault("loss/pairs", []).append(pair_loss.item())
                window.setdefault("accuracy", []).append((chosen > rejected).float().mean().item())
            if rating_batches is not None:
                rows = next(rating_batches)
                ids, mask = pad_right([encoded.rated[i] for i in rows], pad_id)
                predicted = pooled_outputs(model, ids.to(device), mask.to(device))[:, :dimensions]  # (B, D): a preference head fits no rating
                if similarity_weights is not None:
                    predicted = predicted + torch.as_tensor(encoded.rated_similarity[rows], device=device) @ similarity_weights[:, :dimensions]
                annotator = torch.as_tensor(encoded.annotators[rows], device=device)
                shift = torch.where((annotator >= 0)[:, None], offsets[annotator.clamp(min=0)], torch.zeros_like(predicted))
                target = torch.as_tensor(encoded.targets[rows], dtype=torch.float32, device=device)
                rating_loss = masked_squared_error(predicted + shift, target)
                loss = loss + lam * rating_loss
                window.setdefault("loss/ratings", []).append(rating_loss.item())
            if not torch.isfinite(loss):
                raise RewardTrainingError(f"the loss became {loss.item()} at step {step} (lower the learning rate?)")
            window.setdefault("loss", []).append(loss.item())
            (loss / config.gradient_accumulation_steps).backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if averaged is not None:
            averaged.after_step(step, trainable_named(model) + extra)
        reporter.progress(step, total, f"step {step}/{total}")
        if step % max(config.logging_steps, 1) == 0 or step == total or step == 1:
            entry = {"step": step, **{k: float(np.mean(v)) for k, v in window.items()}, "learning_rate": scheduler.get_last_lr()[0]}
            if similarity_weights is not None:
                for kind, weight in zip(config.feature_kinds(), (similarity_weights.detach() @ w).tolist()):
                    entry[f"{kind}_weight"] = weight
            history.append(entry)
            reporter.metrics(step, {k: v for k, v in entry.items() if k != "step"})
            window = {}
        if reporter.should_stop():
            raise Cancelled(f"cancelled at step {step} ({config.objective} runs do not checkpoint: start again)")
    if averaged is not None:
        averaged.apply(trainable_named(model) + extra)
    return history


def evaluate_objective(
    model, data: ObjectiveData, tokenizer, config: RewardConfig, use_template: bool, device, similarity_weights: nn.Parameter | None = None,
    preference_heads: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Held-out pairs (accuracy, calibration, by strength) and held-out ratings (correlations), beside their ceilings;
    and, with a similarity term, what each part of the scalar alone gets right on the held-out pairs."""
    weights = torch.tensor(list(data.weights) + [1.0] * preference_heads)  # per output: the scalar is outputs · weights
    dimensions = len(data.dimensions)
    pad_id = tokenizer.pad_token_id
    per_dimension = similarity_weights.detach().cpu() if similarity_weights is not None else None  # (F, D)
    parts: dict[str, Any] = {}

    def similarity(prompts, responses) -> torch.Tensor:
        return base_features(
            model, tokenizer, list(prompts), list(responses), config.feature_kinds(), max_length=config.max_length, batch_size=config.eval_batch_size,
            device=device,
        )

    def heads(prompts, responses) -> torch.Tensor:
        ids = encode_pairs(tokenizer, list(prompts), list(responses), max_length=config.max_length, use_chat_template=use_template).ids
        outputs = raw_outputs(model, ids, pad_id=pad_id, batch_size=config.eval_batch_size, device=device)  # (N, D)
        if per_dimension is not None:
            outputs = outputs + feature_terms(similarity(prompts, responses), per_dimension, outputs.shape[1])
        return outputs

    held_out: dict[str, Any]
    if data.pairs is not None and not data.pairs.test.empty:
        test = data.pairs.test
        chosen, rejected = (heads(test["prompt"], test["chosen"]) @ weights).numpy(), (heads(test["prompt"], test["rejected"]) @ weights).numpy()
        if per_dimension is not None:
            terms = (per_dimension @ weights).numpy()  # (F,): the scalar's weight of each feature
            chosen_features, rejected_features = similarity(test["prompt"], test["chosen"]).numpy(), similarity(test["prompt"], test["rejected"]).numpy()
            parts = {
                "held_out_accuracy_cross_encoder_alone": float(((chosen - chosen_features @ terms) > (rejected - rejected_features @ terms)).mean()),
                **accuracies_alone(config.feature_kinds(), chosen_features, rejected_features),
            }
        held_out = preference_metrics(chosen, rejected, human_agreement=test["agreement"].to_numpy(float), n_bins=config.calibration_bins)
        held_out["by_strength"] = accuracy_by_strength(chosen, rejected, test["margin"].to_numpy(float), test["agreement"].to_numpy(float), margin_per_strength=margin_per_strength(data.pairs))
    else:
        held_out = preference_metrics(np.zeros(0), np.zeros(0))
    if data.ratings is not None and not data.ratings.test.empty:
        outputs = heads(data.ratings.test["prompt"], data.ratings.test["response"]).numpy()
        ceiling = leave_one_out_ceiling(data.ratings.test_ratings, data.dimensions, data.weights) if data.ratings.test_ratings is not None else None
        held_out["ratings"] = rating_metrics(outputs @ weights.numpy(), outputs[:, :dimensions], data.ratings.targets(data.ratings.test), data.dimensions, data.weights, ceiling)
    return held_out, parts


def feature_terms(features: torch.Tensor, weights: torch.Tensor, outputs: int) -> torch.Tensor:
    """Each output's share of the frozen-base features, (N, outputs): features (N, F) @ weights (F, ≤ outputs), padded
    with zeros for outputs the weights do not cover."""
    terms = features @ weights
    return nn.functional.pad(terms, (0, outputs - terms.shape[1]))


def margin_per_strength(pairs: PreferenceData) -> float:
    """The export's margin of a "much better" vote (its manifest's option), 1.0 when unknown."""
    options = pairs.manifest.options if pairs.manifest else {}
    return float(options.get("margin_per_strength", 1.0) or 1.0)


def run_objective_job(engine, job, params: Mapping[str, Any], config: RewardConfig, reporter: Reporter, workdir: Path):
    """A train-reward job with objective regression / joint: its pairs and ratings (recorded exports of the project
    unless paths are given), the project's rubric weights, then `train_objective`. Returns the job's JobResult."""
    from rlhf.export import ExportError, ExportOptions
    from rlhf.job_kinds import JobResult, _job_label, export_into, preference_source, reward_record

    artifacts, parent_ids, parent_refs = [], [], []
    started = time.perf_counter()
    # 1. pairs: given, or the project's (none is fine when the objective can do without)
    pairs = None
    try:
        source = preference_source(engine, job, params, workdir, reporter, test_size=config.eval_fraction, seed=config.seed)
        pairs, parent_ids, parent_refs, artifacts = source.path, list(source.parent_ids), list(source.parent_refs), list(source.artifacts)
    except ExportError as exc:
        if params.get("export_artifact_id") is not None or params.get("data"):
            raise
        reporter.log(f"no preference pairs exported ({exc}): training on the ratings alone")
    # 2. ratings: given, or the project's raw export (same split options as the pairs)
    ratings = Path(params["ratings_data"]) if params.get("ratings_data") else None
    if ratings is None and job.project_id is not None:
        options = ExportOptions(**({"test_size": config.eval_fraction, "seed": config.seed} | dict(params.get("export_options") or {})))
        record = export_into(engine, job, workdir, format="raw", output="jsonl", options=options, reporter=reporter, subdir="ratings-export")
        if record.metrics.get("ratings"):
            ratings = Path(record.path)
            parent_refs.append(len(artifacts))
            artifacts.append(record)
    check_sources(config.objective, pairs, ratings)
    # 3. train (no engine: the worker records the artifact once the directory is in place)
    result = train_objective(
        config, workdir / "reward_model", pairs_path=pairs, ratings_path=ratings, engine=None, actor=None, reporter=reporter, job_id=job.id,
        timings={}, started=started, exported_on_the_fly=False, overwrite=False, weights_of_project=project_weights(engine, job.project_id),
    )
    record = reward_record(result.out_dir, result.metrics, _job_label(engine, job, "reward", "model"))
    record.parent_ids, record.parent_refs = parent_ids, parent_refs
    artifacts.append(record)
    held_out = result.metrics.get("held_out", {})
    summary = {f"held_out/{k}": v for k, v in held_out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return JobResult(artifacts=artifacts, metrics=summary, message=summary_line(held_out))
