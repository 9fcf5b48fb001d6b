"""`rlhf init`, `rlhf import` and `rlhf project ...`: bring a database to head, seed the sample project, import files, manage projects."""

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
        from rlhf.importer import ImportFormatError
        from rlhf.seed import SampleDataMissing, seed_sample_project

        try:
            summary = seed_sample_project(engine)
        except (SampleDataMissing, ImportFormatError) as exc:
            raise fail(str(exc)) from None
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


def _open_database(database_url: Optional[str]):
    """An engine on an initialised database, or exit 2 telling the user to run `rlhf init`."""
    from rlhf.db import current_revision, database_url as default_url, make_engine

    engine = make_engine(database_url or default_url())
    if current_revision(engine) is None:
        raise fail(f"database {engine.url.render_as_string(hide_password=True)} is not initialised: run `rlhf init` first")
    return engine


_DATABASE_OPTION = typer.Option(None, "--database-url", envvar="RLHF_DATABASE_URL", help="Database URL (default: SQLite file data/rlhf.db).")


@app.command("import")
def import_command(
    path: Path = typer.Argument(..., help="A .jsonl/.json, .csv, .parquet or .arrow file, or a `datasets` directory (save_to_disk)."),
    project: str = typer.Option(..., "--project", "-p", help="Project to import into (created if missing)."),
    as_labels: Optional[str] = typer.Option(None, "--as-labels", metavar="SOURCE", help="Store prompt/chosen/rejected rows as preferences from external user SOURCE."),
    round_: int = typer.Option(0, "--round", help="Round recorded on the imported responses."),
    pair_against_round: Optional[int] = typer.Option(None, "--pair-against-round", help="Pair new responses with this round's responses instead of with each other."),
    max_pairs_per_prompt: int = typer.Option(6, "--max-pairs-per-prompt", help="Cap on pairwise tasks per prompt (0 = none)."),
    no_ratings: bool = typer.Option(False, "--no-ratings", help="Do not create a rating task per response."),
    max_bytes: Optional[int] = typer.Option(None, "--max-bytes", help="Refuse files larger than this (default 1 GiB)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    database_url: Optional[str] = _DATABASE_OPTION,
) -> None:
    """Import prompts and model responses (and optionally preference labels) into a project.

    Example: rlhf import outputs.jsonl --project demo --max-pairs-per-prompt 3
    """
    from rlhf.importer import DEFAULT_MAX_BYTES, ImportFormatError, import_file
    from rlhf.progress import ConsoleReporter

    engine = _open_database(database_url)
    reporter = None if quiet else ConsoleReporter("import", unit="records")
    try:
        summary = import_file(
            engine,
            path,
            project,
            as_labels=as_labels,
            round=round_,
            pair_against_round=pair_against_round,
            max_pairs_per_prompt=max_pairs_per_prompt,
            make_rating_tasks=not no_ratings,
            max_bytes=DEFAULT_MAX_BYTES if max_bytes is None else max_bytes,
            reporter=reporter,
        )
    except ImportFormatError as exc:
        raise fail(str(exc)) from None
    finally:
        if reporter is not None:
            reporter.close()
    typer.echo(summary.line())


project_app = typer.Typer(help="Create, list, show and update labelling projects.", no_args_is_help=True)
app.add_typer(project_app, name="project")


def _read_rubric(rubric_file: Optional[Path]):
    """The rubric list from a JSON file, or None when no file is given."""
    if rubric_file is None:
        return None
    import json

    try:
        return json.loads(rubric_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise fail(f"{rubric_file}: not a readable JSON rubric ({exc})") from None


def _read_guidelines(guidelines: Optional[str], guidelines_file: Optional[Path]) -> Optional[str]:
    if guidelines_file is None:
        return guidelines
    try:
        return guidelines_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"{guidelines_file}: cannot read guidelines ({exc})") from None


def _split_tags(tags: Optional[str]):
    return None if tags is None else [t.strip() for t in tags.split(",") if t.strip()]


def _write_options(kinds: Optional[str], write_overlap: Optional[int], max_reply_chars: Optional[int]) -> dict:
    """The write-task settings given on the command line (None = not given)."""
    given = {"task_kinds": _split_tags(kinds), "write_overlap": write_overlap, "max_reply_chars": max_reply_chars}
    return {k: v for k, v in given.items() if v is not None}


def _show(project, counts: dict | None = None) -> None:
    import json

    from rlhf.projects import validate_judge_uses

    settings = {
        "id": project.id,
        "name": project.name,
        "description": project.description,
        "overlap": project.overlap,
        "max_overlap": project.max_overlap,
        "gold_rate": project.gold_rate,
        "visibility": project.visibility,
        "lease_minutes": project.lease_minutes,
        "seed": project.seed,
        "active": project.active,
        "rank_k_min": project.rank_k_min,
        "rank_k_max": project.rank_k_max,
        "selection": project.selection,
        "judge_uses": validate_judge_uses(project.judge_uses),
        "tags": project.tags,
        "task_kinds": project.task_kinds,
        "write_overlap": project.write_overlap,
        "max_reply_chars": project.max_reply_chars,
        "rubric": project.rubric,
        "guidelines": project.guidelines,
    }
    if counts is not None:
        settings["counts"] = counts
    typer.echo(json.dumps(settings, indent=2, ensure_ascii=False))


_RUBRIC_FILE = typer.Option(None, "--rubric-file", help="JSON file: a list of {name, question?, min, max, labels?}.")
_GUIDELINES_FILE = typer.Option(None, "--guidelines-file", help="Read the guidelines (markdown) from this file.")
_TAGS = typer.Option(None, "--tags", help="Comma-separated tags annotators can attach.")
_KINDS = typer.Option(None, "--kinds", help="What the project collects, comma-separated: rate, compare, write (default rate,compare).")
_WRITE_OVERLAP = typer.Option(None, "--write-overlap", help="Demonstrations per write task from distinct annotators (default 1).")
_MAX_REPLY_CHARS = typer.Option(None, "--max-reply-chars", help="Longest demonstration accepted, in characters (default 20000).")


@project_app.command("create")
def project_create(
    name: str = typer.Argument(..., help="Unique project name."),
    description: str = typer.Option("", "--description"),
    guidelines: Optional[str] = typer.Option(None, "--guidelines", help="Guidelines text (markdown)."),
    guidelines_file: Optional[Path] = _GUIDELINES_FILE,
    rubric_file: Optional[Path] = _RUBRIC_FILE,
    tags: Optional[str] = _TAGS,
    overlap: int = typer.Option(3, "--overlap", help="Annotations per task from distinct annotators."),
    max_overlap: Optional[int] = typer.Option(None, "--max-overlap", help="Upper bound with extra votes (default: overlap)."),
    gold_rate: float = typer.Option(0.0, "--gold-rate", help="Share of gold tasks handed out, 0 ≤ rate < 1."),
    visibility: str = typer.Option("blind", "--visibility", help="blind or reveal_after_submit."),
    lease_minutes: int = typer.Option(10, "--lease-minutes"),
    seed: int = typer.Option(0, "--seed", help="Seeds task order and pair choices."),
    kinds: Optional[str] = _KINDS,
    write_overlap: Optional[int] = _WRITE_OVERLAP,
    max_reply_chars: Optional[int] = _MAX_REPLY_CHARS,
    rank_k_min: Optional[int] = typer.Option(None, "--rank-k-min", help="Collect rankings of K replies per prompt, K from this (3-9)..."),
    rank_k_max: Optional[int] = typer.Option(None, "--rank-k-max", help="...to this (default: --rank-k-min)."),
    database_url: Optional[str] = _DATABASE_OPTION,
) -> None:
    """Create a project. Example: rlhf project create demo --overlap 3 --tags "unsafe,off-topic" """
    from rlhf.projects import ProjectValidationError, create_project
    from rlhf.roles import SYSTEM

    engine = _open_database(database_url)
    try:
        project = create_project(
            engine,
            SYSTEM,
            name,
            description=description,
            guidelines=_read_guidelines(guidelines, guidelines_file) or "",
            rubric=_read_rubric(rubric_file),
            tags=_split_tags(tags),
            overlap=overlap,
            max_overlap=max_overlap,
            gold_rate=gold_rate,
            visibility=visibility,
            lease_minutes=lease_minutes,
            seed=seed,
            **_write_options(kinds, write_overlap, max_reply_chars),
            rank_k_min=rank_k_min,
            rank_k_max=rank_k_max if rank_k_max is not None else rank_k_min,
        )
    except ProjectValidationError as exc:
        raise fail(str(exc)) from None
    typer.echo(f"created project {project.name!r} (id {project.id})")


@project_app.command("list")
def project_list(database_url: Optional[str] = _DATABASE_OPTION) -> None:
    """List projects with their sizes. Example: rlhf project list"""
    from rlhf.projects import list_projects, project_counts

    engine = _open_database(database_url)
    projects = list_projects(engine)
    if not projects:
        typer.echo("no projects")
        return
    typer.echo(f"{'id':>4}  {'name':<30} {'prompts':>8} {'responses':>10} {'tasks':>8}  visibility  overlap")
    for project in projects:
        counts = project_counts(engine, project.id)
        tasks = counts["rating_tasks"] + counts["pairwise_tasks"] + counts.get("write_tasks", 0)
        typer.echo(
            f"{project.id:>4}  {project.name:<30} {counts['prompts']:>8} {counts['responses']:>10} {tasks:>8}  "
            f"{project.visibility:<10}  {project.overlap}"
        )


@project_app.command("show")
def project_show(
    name: str = typer.Argument(..., help="Project name or id."),
    database_url: Optional[str] = _DATABASE_OPTION,
) -> None:
    """Print a project's settings and sizes as JSON. Example: rlhf project show demo"""
    from rlhf.projects import ProjectNotFound, get_project, project_counts

    engine = _open_database(database_url)
    try:
        project = get_project(engine, name)
    except ProjectNotFound as exc:
        raise fail(str(exc)) from None
    _show(project, project_counts(engine, project.id))


@project_app.command("update")
def project_update(
    name: str = typer.Argument(..., help="Project name or id."),
    new_name: Optional[str] = typer.Option(None, "--name", help="Rename the project."),
    description: Optional[str] = typer.Option(None, "--description"),
    guidelines: Optional[str] = typer.Option(None, "--guidelines"),
    guidelines_file: Optional[Path] = _GUIDELINES_FILE,
    rubric_file: Optional[Path] = _RUBRIC_FILE,
    tags: Optional[str] = _TAGS,
    overlap: Optional[int] = typer.Option(None, "--overlap"),
    max_overlap: Optional[int] = typer.Option(None, "--max-overlap"),
    gold_rate: Optional[float] = typer.Option(None, "--gold-rate"),
    visibility: Optional[str] = typer.Option(None, "--visibility"),
    lease_minutes: Optional[int] = typer.Option(None, "--lease-minutes"),
    seed: Optional[int] = typer.Option(None, "--seed"),
    active: Optional[bool] = typer.Option(None, "--active/--inactive", help="Open or close the project to annotators."),
    kinds: Optional[str] = _KINDS,
    write_overlap: Optional[int] = _WRITE_OVERLAP,
    max_reply_chars: Optional[int] = _MAX_REPLY_CHARS,
    rank_k_min: Optional[int] = typer.Option(None, "--rank-k-min", help="Collect rankings: fewest replies per ranking task (3-9)."),
    rank_k_max: Optional[int] = typer.Option(None, "--rank-k-max", help="Collect rankings: most replies per ranking task (3-9)."),
    selection: Optional[str] = typer.Option(
        None, "--selection", help="Which task goes next: least-annotated (default), uncertainty, disagreement or mixed (scored by a select-scores job)."
    ),
    judge_export: Optional[bool] = typer.Option(
        None, "--judge-export/--no-judge-export", help="Allow exports that use a judge's labels (--sources human,judge:NAME); off by default."
    ),
    judge_votes: Optional[bool] = typer.Option(
        None, "--judge-votes/--no-judge-votes", help="Allow `rlhf judge-votes`: extra human votes where a judge disagrees with the consensus; off by default."
    ),
    judge_suggestions: Optional[bool] = typer.Option(
        None, "--judge-suggestions/--no-judge-suggestions", help="Show a judge's verdict to annotators on the Compare and Rate pages; off by default."
    ),
    database_url: Optional[str] = _DATABASE_OPTION,
) -> None:
    """Change some settings of a project. Example: rlhf project update demo --overlap 5 --max-overlap 7"""
    from rlhf.projects import ProjectNotFound, ProjectValidationError, update_project
    from rlhf.roles import SYSTEM

    changes = {
        "name": new_name,
        "description": description,
        "guidelines": _read_guidelines(guidelines, guidelines_file),
        "rubric": _read_rubric(rubric_file),
        "tags": _split_tags(tags),
        "overlap": overlap,
        "max_overlap": max_overlap,
        "gold_rate": gold_rate,
        "visibility": visibility,
        "lease_minutes": lease_minutes,
        "seed": seed,
        "active": active,
        **_write_options(kinds, write_overlap, max_reply_chars),
        "rank_k_min": rank_k_min,
        "rank_k_max": rank_k_max,
        "selection": selection,
        "judge_uses": {use: on for use, on in (("export", judge_export), ("votes", judge_votes), ("suggestions", judge_suggestions)) if on is not None} or None,
    }
    changes = {k: v for k, v in changes.items() if v is not None}
    if not changes:
        raise fail("nothing to change: give at least one option")
    engine = _open_database(database_url)
    try:
        project = update_project(engine, SYSTEM, name, **changes)
    except (ProjectValidationError, ProjectNotFound) as exc:
        raise fail(str(exc)) from None
    _show(project)
