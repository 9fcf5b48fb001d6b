"""`rlhf simulate`: simulated annotators with planted noise, biases and spammers label a project through the annotation engine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from rlhf.cli import app, fail


@app.command()
def simulate(
    project: str = typer.Option(..., "--project", help="Project name (or id) to label."),
    annotators: int = typer.Option(10, "--annotators", help="Simulated annotators (accounts <prefix>-s<seed>-<nnn>, created when missing)."),
    spammers: int = typer.Option(0, "--spammers", help="How many of them answer at random, fast."),
    noise: float = typer.Option(0.1, "--noise", help="Bradley–Terry temperature on the gold scale (0–1): 0 follows the gold score exactly."),
    position_bias: float = typer.Option(0.0, "--position-bias", help="Probability that a position-biased annotator picks the left response regardless."),
    position_bias_share: float = typer.Option(0.25, "--position-bias-share", help="Share of the careful annotators given the position bias."),
    length_bias: float = typer.Option(0.0, "--length-bias", help="Tilt toward the longer response, logits per doubling of length."),
    length_bias_share: float = typer.Option(0.25, "--length-bias-share", help="Share of the careful annotators given the length bias."),
    seed: int = typer.Option(0, "--seed", help="Seeds the planted profiles and every answer (same seed, same annotations)."),
    kind: str = typer.Option("both", "--kind", help="rating, pairwise, both or ranking."),
    max_annotations: Optional[int] = typer.Option(None, "--max-annotations", help="Stop after this many annotations (default: until the tasks are full)."),
    username_prefix: str = typer.Option("sim", "--username-prefix", help="Prefix of the simulated accounts' names."),
    planted_truth: Optional[Path] = typer.Option(None, "--planted-truth", help="Write the planted truth (profiles, counts) here as JSON."),
    as_json: bool = typer.Option(False, "--json", help="Print the planted truth as JSON instead of a summary."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="RLHF_DATABASE_URL", help="Database URL (default: SQLite file data/rlhf.db)."),
) -> None:
    """Simulated annotators label a project via next_task / submit_*, each with a hidden gold preference."""
    from rlhf.db import database_url as default_url, make_engine
    from rlhf.progress import ConsoleReporter
    from rlhf.projects import ProjectNotFound
    from rlhf.simulation import SimulationConfig, SimulationError
    from rlhf.simulation import simulate as run_simulation

    config = SimulationConfig(
        annotators=annotators, spammers=spammers, noise=noise, position_bias=position_bias, position_bias_share=position_bias_share,
        length_bias=length_bias, length_bias_share=length_bias_share, seed=seed, kind=kind,  # type: ignore[arg-type]
        max_annotations=max_annotations, username_prefix=username_prefix,
    )
    try:
        config.validate()
    except ValueError as exc:
        raise fail(str(exc)) from None
    engine = make_engine(database_url or default_url())
    reporter = None if as_json else ConsoleReporter("simulate", unit="annotation")
    try:
        result = run_simulation(engine, project, config, reporter=reporter, planted_truth_path=planted_truth)
    except (ProjectNotFound, SimulationError) as exc:
        raise fail(str(exc)) from None
    finally:
        if reporter is not None:
            reporter.close()
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(result.planted_truth(), indent=2, sort_keys=True, default=str))
        return
    typer.echo(result.line())
    for trait, names in result.planted_truth()["planted"].items():
        typer.echo(f"  {trait}: {', '.join(names) if names else '-'}")
    if result.planted_truth_path:
        typer.echo(f"planted truth written to {result.planted_truth_path}")


@app.command("simulate-writers")
def simulate_writers_command(
    project: str = typer.Option(..., "--project", help="Project name (or id) whose write tasks to answer."),
    writers: int = typer.Option(5, "--writers", help="Simulated writers (accounts <prefix>-s<seed>-<nnn>, created when missing)."),
    sloppy: int = typer.Option(1, "--sloppy", help="How many of them barely edit the reply they are shown."),
    seed: int = typer.Option(0, "--seed", help="Seeds who is sloppy and every draw."),
    max_demonstrations: Optional[int] = typer.Option(None, "--max-demonstrations", help="Stop after this many (default: until no write task is left)."),
    username_prefix: str = typer.Option("writer", "--username-prefix", help="Prefix of the simulated accounts' names."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="RLHF_DATABASE_URL", help="Database URL (default: SQLite file data/rlhf.db)."),
) -> None:
    """Simulated writers answer write tasks, improving the shown reply where the gold score rewards it; sloppy ones barely edit."""
    from rlhf.db import database_url as default_url, make_engine
    from rlhf.projects import ProjectNotFound
    from rlhf.simulation.writers import simulate_writers

    engine = make_engine(database_url or default_url())
    try:
        result = simulate_writers(engine, project, writers=writers, sloppy=sloppy, seed=seed, max_demonstrations=max_demonstrations, username_prefix=username_prefix)
    except (ProjectNotFound, ValueError) as exc:
        raise fail(str(exc)) from None
    finally:
        engine.dispose()
    typer.echo(result.line())
    for writer in result.writers:
        row = writer.as_dict()
        before, after = row["mean_gold_before"], row["mean_gold_after"]
        gold = f"gold {before:.3f} -> {after:.3f}" if before is not None else "no demonstrations"
        typer.echo(f"  {row['username']}{' (sloppy)' if row['sloppy'] else ''}: {row['demonstrations']} written, {gold}")
