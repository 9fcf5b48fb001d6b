"""`rlhf selection status|score`: the project's active-selection order, and scoring it now (without a worker)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from rlhf.cli import app, fail
from rlhf.cli.foundation import _DATABASE_OPTION, _open_database

selection_app = typer.Typer(help="Active selection: which task is handed out next (see `rlhf project update --selection`).", no_args_is_help=True)
app.add_typer(selection_app, name="selection")


def _project_id(engine, project: str) -> int:
    from rlhf.projects import ProjectNotFound, get_project

    try:
        return int(get_project(engine, project).id)
    except ProjectNotFound as exc:
        raise fail(str(exc)) from None


@selection_app.command("status")
def selection_status_command(
    project: str = typer.Option(..., "--project", "-p", help="Project name or id."),
    database_url: Optional[str] = _DATABASE_OPTION,
) -> None:
    """The strategy asked, the order in force, why it fell back, whether it is stale (JSON). Example: rlhf selection status -p demo"""
    from rlhf.selection.scores import labels_by_strategy, selection_status

    engine = _open_database(database_url)
    project_id = _project_id(engine, project)
    status = selection_status(engine, project_id)
    out = {
        "selection": status.selection,
        "applied": status.applied,
        "fallback": status.fallback,
        "note": status.note,
        "stale": status.stale,
        "scored_tasks": status.scored_tasks,
        "computed_at": status.computed_at.isoformat() if status.computed_at else None,
        "labels_by_strategy": labels_by_strategy(engine, project_id),
    }
    typer.echo(json.dumps(out, indent=2))


@selection_app.command("score")
def selection_score_command(
    project: str = typer.Option(..., "--project", "-p", help="Project name or id."),
    seed: int = typer.Option(0, "--seed"),
    database_url: Optional[str] = _DATABASE_OPTION,
) -> None:
    """Score the project's open tasks now, in this process (what the select-scores job does). Example: rlhf selection score -p demo"""
    from rlhf.progress import ConsoleReporter
    from rlhf.selection.scores import SelectionConfig, compute_scores

    engine = _open_database(database_url)
    run = compute_scores(engine, _project_id(engine, project), SelectionConfig(seed=seed), reporter=ConsoleReporter("select-scores"))
    typer.echo(run.line())
