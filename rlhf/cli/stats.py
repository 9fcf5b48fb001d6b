"""`rlhf agreement`, `rlhf stats` and `rlhf leaderboard`: agreement, annotator quality and model rankings.

Nothing here imports torch; pandas, numpy and the database come in inside the command bodies.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

import typer

from rlhf.cli import app, fail

LEVEL_HELP = "Level of measurement: nominal, ordinal, interval or ratio."


def _json_safe(value: Any) -> Any:
    """Plain JSON values: NaN and infinities become null, numpy scalars Python numbers."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _print_json(payload: Any) -> None:
    typer.echo(json.dumps(_json_safe(payload), indent=2, allow_nan=False, default=str))


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _print_pairs(rows: list[tuple[str, Any]]) -> None:
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        typer.echo(f"{name.ljust(width)}  {_fmt(value)}")


def _report_rows(summary: dict[str, Any]) -> list[tuple[str, Any]]:
    order = [
        "n_items", "n_annotators", "n_annotations", "krippendorff_alpha", "krippendorff_alpha_ci", "fleiss_kappa",
        "gwet_ac1", "gwet_ac2", "percent_agreement", "cohen_kappa", "cohen_kappa_linear", "cohen_kappa_quadratic",
        "pairwise_cohen_pairs", "pairwise_cohen_mean",
    ]
    rows = []
    for key in order:
        if key not in summary:
            continue
        value = summary[key]
        if key == "krippendorff_alpha_ci" and value is not None:
            value = f"[{value[0]:.4f}, {value[1]:.4f}]"
        if key == "gwet_ac2":
            key = f"gwet_ac2 ({summary.get('gwet_ac2_weights')})"
        rows.append((key, value))
    return rows


def _engine(database_url: Optional[str]):
    from rlhf.db import database_url as default_url, make_engine

    return make_engine(database_url or default_url())


@app.command()
def agreement(
    csv_path: Path = typer.Argument(..., metavar="CSV", help="CSV with columns item,annotator,value (one row per rating)."),
    level: str = typer.Option("nominal", "--level", help=LEVEL_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    min_overlap: int = typer.Option(10, "--min-overlap", help="Shared items a pair of annotators needs for its Cohen's kappa."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap replicates for alpha's 95% interval (0 = none)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
) -> None:
    """Inter-annotator agreement of a CSV of ratings: Krippendorff's alpha, Fleiss, Gwet, percent agreement, Cohen."""
    from rlhf.agreement import LEVELS, AgreementConfig, agreement_report
    from rlhf.stats import CsvInputError, read_ratings_csv

    if level not in LEVELS:
        raise fail(f"--level must be one of {', '.join(LEVELS)}, not {level!r}")
    try:
        ratings = read_ratings_csv(csv_path, level)
    except CsvInputError as exc:
        raise fail(str(exc)) from None
    if ratings.empty:
        raise fail(f"{csv_path}: no ratings (every value is empty)")
    config = AgreementConfig(min_overlap=min_overlap, n_bootstrap=bootstrap, seed=seed)
    try:
        report = agreement_report(ratings[["item", "annotator", "value"]], level, config=config)
    except ValueError as exc:
        raise fail(f"{csv_path}: {exc}") from None
    summary = report.summary()
    if as_json:
        _print_json(summary)
        return
    typer.echo(f"{csv_path} ({level})")
    _print_pairs(_report_rows(summary))
    for name, note in report.notes.items():
        typer.echo(f"note: {name}: {note}")


@app.command()
def stats(
    project: str = typer.Option(..., "--project", help="Project name (or id)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    level: str = typer.Option("ordinal", "--level", help="Level of the rubric dimensions. " + LEVEL_HELP),
    include_external: bool = typer.Option(False, "--include-external", help="Also count labels from external sources (datasets, model judges)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap replicates for alpha's interval (0 = none)."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="RLHF_DATABASE_URL", help="Database URL (default: SQLite file data/rlhf.db)."),
) -> None:
    """Agreement per rubric dimension and for preferences, the annotator table and the leaderboard of a project."""
    from rlhf.agreement import LEVELS, AgreementConfig
    from rlhf.frames import ProjectNotFound
    from rlhf.roles import SYSTEM
    from rlhf.stats import StatsConfig, project_stats

    if level not in LEVELS:
        raise fail(f"--level must be one of {', '.join(LEVELS)}, not {level!r}")
    config = StatsConfig(level=level, include_external=include_external, agreement=AgreementConfig(n_bootstrap=bootstrap))
    try:
        result = project_stats(_engine(database_url), SYSTEM, project, config)
    except ProjectNotFound as exc:
        raise fail(str(exc)) from None
    summary = result.summary()
    from rlhf.judge.metrics import judge_report, report_tables

    report = judge_report(_engine(database_url), project)
    judges = report_tables(report)
    if report["judges"]:
        summary["judges"] = report
    if as_json:
        _print_json(summary)
        return
    typer.echo(f"project {result.project}")
    if not result.variables:
        typer.echo("no annotations yet")
    for variable in result.variables:
        title = f"dimension {variable.name}" if variable.kind == "rating" else "preferences"
        typer.echo(f"\n{title} ({variable.report.level})")
        _print_pairs(_report_rows(variable.report.summary()))
    if len(result.annotators):
        columns = ["username", "n_ratings", "n_rating_scores", "n_comparisons", "agreement_with_others", "loo_consensus_agreement", "gold_accuracy",
                   "left_share", "median_time_s", "ds_skill", "flags"]
        typer.echo("\nannotators")
        typer.echo(result.annotators[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if len(result.leaderboard):
        typer.echo("\nleaderboard")
        typer.echo(_leaderboard_text(result.leaderboard))
    if result.rankings is not None:
        _print_rankings(result.rankings)
    if len(judges["summary"]):
        typer.echo("\njudges (pairs; agreement with the human consensus beside the people's own)")
        typer.echo(judges["summary"].to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def _print_rankings(rankings) -> None:
    """The ranking section of `rlhf stats`: agreement, annotators, Plackett–Luce leaderboard."""
    summary = rankings.summary()
    typer.echo("\nrankings")
    _print_pairs([(name, summary[name]) for name in ("n_rankings", "n_tasks", "kendalls_w", "krippendorff_alpha_ordinal", "implied_pair_agreement")])
    if len(rankings.annotators):
        columns = [c for c in ("annotator", "n_rankings", "loo_tau", "position_tau", "all_bad_share", "gold_tau", "length_tilt", "length_p_value") if c in rankings.annotators]
        typer.echo(rankings.annotators[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if len(rankings.leaderboard):
        typer.echo("\nPlackett–Luce leaderboard (rankings)")
        typer.echo(rankings.leaderboard.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


@app.command()
def writers(
    project: str = typer.Option(..., "--project", help="Project name (or id)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON rows instead of a table."),
    keep_score: Optional[float] = typer.Option(None, "--keep-score", help="Review score a demonstration needs to count as kept (default: the middle of the rubric scale)."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="RLHF_DATABASE_URL", help="Database URL (default: SQLite file data/rlhf.db)."),
) -> None:
    """Demonstrations per writer: written, median time, share of the original changed, kept after review; sloppy editors flagged."""
    from rlhf.frames import ProjectNotFound
    from rlhf.roles import SYSTEM
    from rlhf.writer_stats import writer_stats

    try:
        table = writer_stats(_engine(database_url), SYSTEM, project, keep_score=keep_score)
    except ProjectNotFound as exc:
        raise fail(str(exc)) from None
    if as_json:
        _print_json(json.loads(table.to_json(orient="records")))
        return
    if table.empty:
        typer.echo("no demonstrations yet")
        return
    typer.echo(table.drop(columns=["annotator_id"]).to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def _leaderboard_text(board) -> str:
    columns = ["rank", "model", "elo", "elo_low", "elo_high", "wins", "losses", "ties", "component"]
    return board[columns].to_string(index=False, float_format=lambda v: f"{v:.1f}")


@app.command()
def leaderboard(
    csv_path: Optional[Path] = typer.Argument(None, metavar="[CSV]", help="CSV with columns model_a,model_b,winner (a, b, tie, both_bad)."),
    project: Optional[str] = typer.Option(None, "--project", help="Rank the models of a project's pairwise judgments instead."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    bootstrap: int = typer.Option(200, "--bootstrap", help="Bootstrap rounds for the 95% intervals (0 = none)."),
    both_bad: str = typer.Option("tie", "--both-bad", help="How 'both_bad' counts: tie (neither preferred) or drop."),
    seed: int = typer.Option(0, "--seed", help="Seed of the bootstrap."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="RLHF_DATABASE_URL", help="Database URL (default: SQLite file data/rlhf.db)."),
) -> None:
    """Bradley–Terry (Davidson ties) leaderboard on the Elo scale with bootstrap intervals."""
    from rlhf.aggregation.bradley_terry import BradleyTerry, comparisons_from_preferences
    from rlhf.stats import CsvInputError, read_comparisons_csv, records

    if (csv_path is None) == (project is None):
        raise fail("give a CSV file or --project NAME (one of them)")
    if both_bad not in ("tie", "drop"):
        raise fail(f"--both-bad must be tie or drop, not {both_bad!r}")
    if project is not None:
        from rlhf.frames import ProjectNotFound, humans_only, preference_frame

        try:
            comparisons = comparisons_from_preferences(humans_only(preference_frame(_engine(database_url), project)))
        except ProjectNotFound as exc:
            raise fail(str(exc)) from None
        source = f"project {project}"
    else:
        try:
            comparisons = read_comparisons_csv(csv_path)
        except CsvInputError as exc:
            raise fail(str(exc)) from None
        source = str(csv_path)
    if comparisons.empty:
        raise fail(f"{source}: no comparisons between different models")
    model = BradleyTerry(n_bootstrap=bootstrap, both_bad=both_bad, seed=seed).fit(comparisons)  # type: ignore[arg-type]
    if as_json:
        _print_json(
            {
                "source": source,
                "n_comparisons": int(len(comparisons)),
                "tie_parameter": model.tie_parameter_,
                "components": {str(k): v for k, v in model.component_members().items()},
                "models": records(model.leaderboard_),
            }
        )
        return
    typer.echo(f"{source}: {len(comparisons)} comparisons, {len(model.models_)} models, tie parameter {model.tie_parameter_:.3f}")
    typer.echo(_leaderboard_text(model.leaderboard_))
    members = model.component_members()
    if len(members) > 1:
        typer.echo("the comparison graph is not connected: Elo scores compare only within a component")
        for component, models in members.items():
            typer.echo(f"  component {component}: {', '.join(models)}")
