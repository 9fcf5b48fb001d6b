"""`rlhf init` and `rlhf import`: bring a database to head, seed the sample project, import files."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rlhf.cli import app, fail


@app.command()
def init(
    sample: bool = typer.Option(False, "--sample", help="Seed the sample project from data/ if it is not there yet."),
    database_url: Optional[str] = typer.Option(None, "--database-url", envvar="RLHF_DATABASE_URL", help="Database URL (default: SQLite file data/rlhf.db)."),
) -> None:
    """Create or upgrade the database to the newest schema (safe to run again)."""
    from rlhf.db import database_url as default_url, init_database, make_engine

    engine = make_engine(database_url or default_url())
    head = init_database(engine)
    typer.echo(f"database {engine.url.render_as_string(hide_password=True)} at revision {head}")
    if sample:
        from rlhf.seed import seed_sample_project

        summary = seed_sample_project(engine)
        typer.echo(summary)
    try:
        from rlhf.auth import ensure_admin
    except ImportError:  # the annotation engine is not installed yet
        return
    created = ensure_admin(engine)
    if created is not None:
        username, password = created
        typer.echo(f"created admin user {username!r} with one-time password: {password}")
        typer.echo("sign in and change it; it is not shown again")
