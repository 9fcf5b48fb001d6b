"""`rlhf export`, `rlhf train-reward`, `rlhf score`: judgments → training data → reward model → scores.

Backends are imported inside the command bodies: `export` never imports torch, and
`rlhf --help` imports none of pandas, torch or sqlmodel.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rlhf.cli import app, fail


def _engine(database_url: Optional[str]):
    from rlhf.db import database_url as default_url, make_engine

    return make_engine(database_url or default_url())


@app.command("export")
def export_command(
    project: str = typer.Option(..., "--project", help="Project name or id."),
    out: Path = typer.Option(..., "--out", help="Output: a .jsonl or .parquet file, or a directory (a datasets DatasetDict)."),
    format: str = typer.Option("trl", "--format", help="trl (prompt/chosen/rejected pairs), ratings (per response), raw (every annotation) or sft (demonstrations)."),
    aggregate: str = typer.Option("majority", "--aggregate", help="How a pair's votes become one label: majority or dawid-skene."),
    min_votes: int = typer.Option(1, "--min-votes", help="Drop pairs (from ratings: responses) with fewer votes."),
    min_agreement: float = typer.Option(0.0, "--min-agreement", help="Drop pairs whose share of votes agreeing with the label is lower (0-1)."),
    keep_ties: bool = typer.Option(False, "--keep-ties", help="Keep tie / both-bad pairs, marked with tie=true (TRL has no tie loss)."),
    include_external: bool = typer.Option(False, "--include-external", help="Include labels from external sources (datasets, model judges)."),
    exclude_gold: bool = typer.Option(False, "--exclude-gold", help="Leave out judgments on gold tasks."),
    sources: Optional[str] = typer.Option(None, "--sources", help="Label sources, comma-separated: human and external users such as judge:NAME (people win where both labelled a task)."),
    humans_win: bool = typer.Option(True, "--humans-win/--all-sources", help="With --sources: drop external labels on tasks people labelled (default), or keep every source's votes."),
    from_ratings: bool = typer.Option(False, "--from-ratings", help="trl: build pairs from rubric ratings (higher mean wins)."),
    dimension: Optional[str] = typer.Option(None, "--dimension", help="With --from-ratings: rank by this rubric dimension (default: mean over dimensions)."),
    no_margin: bool = typer.Option(False, "--no-margin", help="trl: leave out the margin column."),
    rank_margin: bool = typer.Option(False, "--rank-margin", help="trl, rankings: margin from rank distance (adjacent places 0)."),
    test_size: float = typer.Option(0.1, "--test-size", help="Share of prompts held out as the test split (0 for none)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the grouped split."),
    sft_shape: str = typer.Option("messages", "--sft-shape", help="sft: messages (TRL conversational) or prompt-completion."),
    min_review_score: Optional[float] = typer.Option(None, "--min-review-score", help="sft: keep demonstrations the reviewers rated at least this (mean rubric points)."),
    include_edits: bool = typer.Option(False, "--include-edits", help="trl: add edited > original pairs from substantive edits of model replies (source=edit)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="RLHF_DATABASE_URL", help="Database URL."),
) -> None:
    """Export a project's judgments as TRL preference pairs, per-response ratings, raw annotations, or demonstrations for SFT."""
    from rlhf.export import ExportError, ExportOptions, export_project
    from rlhf.projects import ProjectNotFound
    from rlhf.roles import SYSTEM

    options = ExportOptions(
        aggregate=aggregate,
        min_votes=min_votes,
        min_agreement=min_agreement,
        keep_ties=keep_ties,
        include_external=include_external,
        include_gold=not exclude_gold,
        sources=[x.strip() for x in sources.split(",") if x.strip()] if sources is not None else None,
        humans_win=humans_win,
        from_ratings=from_ratings,
        rating_dimension=dimension,
        margin=not no_margin,
        rank_margin=rank_margin,
        test_size=test_size,
        seed=seed,
        sft_shape=sft_shape,
        min_review_score=min_review_score,
        include_edits=include_edits,
    )
    try:
        manifest = export_project(_engine(database_url), SYSTEM, project, format=format, out=out, options=options, overwrite=overwrite)
    except (ExportError, ProjectNotFound) as exc:
        raise fail(str(exc)) from None
    splits = ", ".join(f"{name} {count}" for name, count in manifest.split_counts.items())
    typer.echo(f"exported {manifest.rows} rows ({splits}) to {out}")
    typer.echo(f"content hash {manifest.content_hash}")


@app.command("train-reward")
def train_reward_command(
    out: Path = typer.Option(..., "--out", help="Reward model directory to write."),
    data: Optional[Path] = typer.Option(None, "--data", help="A TRL preference export (.jsonl, .parquet or dataset directory)."),
    project: Optional[str] = typer.Option(None, "--project", help="Train on this project, exported on the fly (instead of --data)."),
    base: str = typer.Option("smollm2-135m-instruct", "--base", help="Base model: HF id, local directory, .gguf file, or smollm2-135m-instruct (packaged)."),
    load_in_4bit: bool = typer.Option(False, "--4bit", help="Quantise the frozen base to NF4 (QLoRA)."),
    lora_r: int = typer.Option(16, "--lora-r", help="LoRA rank."),
    lora_alpha: Optional[int] = typer.Option(None, "--lora-alpha", help="LoRA alpha (default 2r)."),
    max_length: int = typer.Option(512, "--max-length", help="Tokens per sequence; longer pairs are truncated (prompt from the left), never dropped."),
    batch_size: int = typer.Option(8, "--batch-size", help="Pairs per step (groups per step with --listwise)."),
    listwise: bool = typer.Option(False, "--listwise", help="Train on whole rankings (the export's group_id): each reply encoded once per step, loss = mean over the group's pairs."),
    gradient_accumulation: int = typer.Option(1, "--grad-accum", help="Micro-batches per optimiser step."),
    learning_rate: float = typer.Option(1e-4, "--lr", help="Peak learning rate."),
    epochs: float = typer.Option(1.0, "--epochs", help="Passes over the training pairs."),
    max_steps: int = typer.Option(-1, "--max-steps", help="Stop after this many steps (-1: run --epochs)."),
    eval_fraction: float = typer.Option(0.1, "--eval-fraction", help="Prompts held out when the data has no test split."),
    no_margin: bool = typer.Option(False, "--no-margin", help="Ignore the export's margin column."),
    save_steps: int = typer.Option(50, "--save-steps", help="Checkpoint every N steps (for --resume)."),
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: CUDA when present)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint of an interrupted run into the same --out."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    aggregate: str = typer.Option("majority", "--aggregate", help="With --project: majority or dawid-skene."),
    min_votes: int = typer.Option(1, "--min-votes", help="With --project: drop pairs with fewer votes."),
    min_agreement: float = typer.Option(0.0, "--min-agreement", help="With --project: drop pairs with lower agreement."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="RLHF_DATABASE_URL", help="Database URL (with --project)."),
    objective: str = typer.Option("pairwise", "--objective", help="pairwise (Bradley–Terry on pairs), regression (one head per rubric dimension on ratings) or joint (both)."),
    ratings: Optional[Path] = typer.Option(None, "--ratings", help="regression / joint: a raw export (annotator-normalised) or a ratings export."),
    dimensions: Optional[str] = typer.Option(None, "--dimensions", help="regression / joint: rubric dimensions to predict, comma-separated (default: all in the ratings)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="regression / joint: the scalar's weights, e.g. helpfulness=2,honesty=1 (default: the project's rubric weights, else equal)."),
    regression_weight: float = typer.Option(1.0, "--regression-weight", help="joint: weight of the ratings' squared error beside the pairs' loss."),
    annotator_offsets: bool = typer.Option(False, "--annotator-offsets", help="regression / joint with a raw export: fit per-annotator offsets instead of normalising each annotator."),
    average_weights_from: float = typer.Option(0.0, "--average-weights-from", help="Save the weights averaged over the steps after this share of training (0.5: the second half)."),
    off_prompt_pairs: float = typer.Option(0.0, "--off-prompt-pairs", help="Add this many pairs per training pair whose rejected reply answers another prompt (0.5: one per two pairs)."),
    prompt_similarity: str = typer.Option("off", "--prompt-similarity", help="Add a learned weight (one per dimension head for regression / joint) times the frozen base's prompt–reply similarity to the reward: coverage (BERTScore recall of the prompt) or mean (pooled cosine); off by default."),
    preference_head: bool = typer.Option(False, "--preference-head", help="joint: one more output trained by the pairs alone, added to the weighted dimensions in the scalar reward."),
    reply_redundancy: bool = typer.Option(False, "--reply-redundancy", help="Add a learned weight times how much the reply repeats itself (the frozen base's tokens against the reply's own earlier ones) to the reward."),
    refit_features: float = typer.Option(0.0, "--refit-features", help="Pairwise with --prompt-similarity / --reply-redundancy: keep this share of the training prompts from the adapter and refit the feature weights on their pairs after training (0.2: one in five)."),
) -> None:
    """Train a reward model (TRL RewardTrainer + LoRA, optionally on a 4-bit base) on an export or a project."""
    if data is not None and project is not None or data is None and project is None and ratings is None:
        raise fail("give either --data EXPORT (and/or --ratings EXPORT) or --project NAME")
    from rlhf.reward.objectives import ObjectiveError, parse_weights

    try:
        dimension_weights = parse_weights(weights) if weights else None
    except ObjectiveError as exc:
        raise fail(str(exc)) from None
    from rlhf.export import ExportError, ExportOptions
    from rlhf.projects import ProjectNotFound
    from rlhf.models import ModelNotFoundError
    from rlhf.progress import Cancelled, ConsoleReporter
    from rlhf.reward import RewardConfig, RewardDataError, RewardTrainingError, train_reward_model

    config = RewardConfig(
        base_model=base,
        load_in_4bit=load_in_4bit,
        max_length=max_length,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        learning_rate=learning_rate,
        num_epochs=epochs,
        max_steps=max_steps,
        batch_size=batch_size,
        gradient_accumulation_steps=gradient_accumulation,
        use_margin=not no_margin,
        eval_fraction=eval_fraction,
        save_steps=save_steps,
        seed=seed,
        device=device,
        listwise=listwise,
        objective=objective,
        dimensions=[d.strip() for d in dimensions.split(",") if d.strip()] if dimensions else None,
        dimension_weights=dimension_weights,
        regression_weight=regression_weight,
        annotator_offsets=annotator_offsets,
        off_prompt_pairs=off_prompt_pairs,
        average_weights_from=average_weights_from,
        prompt_similarity=prompt_similarity,
        reply_redundancy=reply_redundancy,
        preference_head=preference_head,
        refit_features=refit_features,
    )
    engine = _engine(database_url) if project is not None else None
    export_options = ExportOptions(aggregate=aggregate, min_votes=min_votes, min_agreement=min_agreement, test_size=eval_fraction, seed=seed)
    reporter = ConsoleReporter("reward model", unit="step")
    try:
        result = train_reward_model(
            config, out, data=data, engine=engine, project=project, export_options=export_options,
            resume=resume, overwrite=overwrite, reporter=reporter, ratings=ratings,
        )
    except (ExportError, ProjectNotFound, ModelNotFoundError, RewardDataError, RewardTrainingError, ValueError) as exc:
        raise fail(str(exc)) from None
    except Cancelled as exc:
        raise fail(str(exc), code=1) from None
    finally:
        reporter.close()
    held_out = result.metrics["held_out"]
    typer.echo(f"saved reward model to {out} after {result.global_step} steps")
    typer.echo(
        f"held-out pairs {held_out['pairs']}: accuracy {held_out['accuracy']:.3f}, "
        f"human agreement {held_out['human_agreement']:.3f}, ECE {held_out['ece']:.3f}"
    )
    for name, figures in (held_out.get("ratings") or {}).get("dimensions", {}).items():
        typer.echo(f"held-out ratings, {name}: correlation {figures['pearson']:.3f} (ceiling {figures['ceiling']:.3f})")


@app.command("score")
def score_command(
    reward: Path = typer.Option(..., "--reward", help="Reward model directory (from train-reward)."),
    data: Path = typer.Option(..., "--data", help="JSONL/Parquet with prompt and response, or an export with prompt/chosen/rejected."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write rows with their scores here (.jsonl); default: print them."),
    batch_size: int = typer.Option(16, "--batch-size", help="Sequences per forward pass."),
    raw: bool = typer.Option(False, "--raw", help="Raw scores instead of normalised ones."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, ... (default: CUDA when present)."),
) -> None:
    """Score prompt/response pairs with a reward model (normalised: mean 0, std 1 over its training responses)."""
    import json

    from rlhf.models import ModelNotFoundError
    from rlhf.reward import IncompleteRewardModel, RewardDataError, RewardModel
    from rlhf.reward.data import read_scoring_rows

    try:
        rows = read_scoring_rows(data)
        model = RewardModel.load(reward, device=device)
    except (RewardDataError, IncompleteRewardModel, ModelNotFoundError) as exc:
        raise fail(str(exc)) from None
    scores = model.score(rows["prompt"].tolist(), rows["response"].tolist(), batch_size=batch_size, normalize=not raw)
    rows["score"] = scores.tolist()
    for name, points in model.score_dimensions(rows["prompt"].tolist(), rows["response"].tolist(), batch_size=batch_size).items():
        rows[name] = points.tolist()  # regression / joint: each rubric dimension, in rubric points
    lines = [json.dumps(record, ensure_ascii=False) for record in rows.to_dict("records")]
    if out is None:
        for line in lines:
            typer.echo(line)
        return
    import os
    import tempfile

    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write("\n".join(lines) + "\n")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    typer.echo(f"scored {len(rows)} responses (mean {scores.mean().item():.3f}) → {out}")


def _run_sft(config) -> None:
    from rlhf.models import ModelNotFoundError
    from rlhf.progress import Cancelled, ConsoleReporter
    from rlhf.sft import SFTError, train_sft

    reporter = ConsoleReporter("sft", unit="step")
    try:
        result = train_sft(config, reporter=reporter)
    except (SFTError, ModelNotFoundError, ValueError) as exc:
        reporter.close()
        raise fail(str(exc)) from None
    except Cancelled as exc:
        reporter.close()
        raise fail(str(exc), code=1) from None
    reporter.close()
    held_out = result.metrics["held_out"]
    typer.echo(f"SFT ({config.method}) done: {result.steps} steps; policy in {result.output_dir}")
    if held_out["before"] and held_out["after"]:
        before, after = held_out["before"], held_out["after"]
        typer.echo(
            f"held-out loss {before['loss']:.4f} → {after['loss']:.4f}, perplexity {before['perplexity']:.2f} → "
            f"{after['perplexity']:.2f} ({held_out['examples']} examples)"
        )


def _register_sft() -> None:
    from rlhf.cli.policy import config_command
    from rlhf.sft import SFTRunConfig

    config_command(
        SFTRunConfig, "sft", _run_sft,
        "Supervised fine-tuning on demonstrations (TRL SFTTrainer, reply tokens only): --method full, lora or qlora.",
    )


_register_sft()
