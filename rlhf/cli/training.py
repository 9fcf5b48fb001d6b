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
    format: str = typer.Option("trl", "--format", help="trl (prompt/chosen/rejected pairs), ratings (per response) or raw (every annotation)."),
    aggregate: str = typer.Option("majority", "--aggregate", help="How a pair's votes become one label: majority or dawid-skene."),
    min_votes: int = typer.Option(1, "--min-votes", help="Drop pairs (from ratings: responses) with fewer votes."),
    min_agreement: float = typer.Option(0.0, "--min-agreement", help="Drop pairs whose share of votes agreeing with the label is lower (0-1)."),
    keep_ties: bool = typer.Option(False, "--keep-ties", help="Keep tie / both-bad pairs, marked with tie=true (TRL has no tie loss)."),
    include_external: bool = typer.Option(False, "--include-external", help="Include labels from external sources (datasets, model judges)."),
    exclude_gold: bool = typer.Option(False, "--exclude-gold", help="Leave out judgments on gold tasks."),
    from_ratings: bool = typer.Option(False, "--from-ratings", help="trl: build pairs from rubric ratings (higher mean wins)."),
    dimension: Optional[str] = typer.Option(None, "--dimension", help="With --from-ratings: rank by this rubric dimension (default: mean over dimensions)."),
    no_margin: bool = typer.Option(False, "--no-margin", help="trl: leave out the margin column."),
    test_size: float = typer.Option(0.1, "--test-size", help="Share of prompts held out as the test split (0 for none)."),
    seed: int = typer.Option(0, "--seed", help="Seeds the grouped split."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="RLHF_DATABASE_URL", help="Database URL."),
) -> None:
    """Export a project's judgments as TRL preference pairs, per-response ratings, or raw annotations."""
    from rlhf.export import ExportError, ExportOptions, export_project
    from rlhf.frames import ProjectNotFound
    from rlhf.roles import SYSTEM

    options = ExportOptions(
        aggregate=aggregate,
        min_votes=min_votes,
        min_agreement=min_agreement,
        keep_ties=keep_ties,
        include_external=include_external,
        include_gold=not exclude_gold,
        from_ratings=from_ratings,
        rating_dimension=dimension,
        margin=not no_margin,
        test_size=test_size,
        seed=seed,
    )
    try:
        manifest = export_project(_engine(database_url), SYSTEM, project, format=format, out=out, options=options, overwrite=overwrite)
    except (ExportError, ProjectNotFound) as exc:
        raise fail(str(exc)) from None
    splits = ", ".join(f"{name} {count}" for name, count in manifest.split_counts.items())
    typer.echo(f"exported {manifest.rows} rows ({splits}) to {out}")
    typer.echo(f"content hash {manifest.content_hash}")
