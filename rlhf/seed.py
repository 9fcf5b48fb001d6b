"""The sample project: `data/sample_project.jsonl` (prompts with real model outputs) imported into project `sample`.

`rlhf init --sample` and `make run` call `seed_sample_project`, so a fresh checkout opens on
something to annotate. Seeding twice adds nothing (the import is idempotent).
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.engine import Engine

import rlhf
from rlhf.roles import SYSTEM, Actor

SAMPLE_PROJECT = "sample"
SAMPLE_FILE = "sample_project.jsonl"
SAMPLE_GUIDELINES = "sample_guidelines.md"
SAMPLE_DESCRIPTION = "Sample prompts with real model outputs, shipped in data/sample_project.jsonl."


class SampleDataMissing(FileNotFoundError):
    """The sample data file is not where the package expects it (a wheel install without data/)."""


def sample_data_dir() -> Path:
    """The repository's `data/` directory, located from the package (not the working directory)."""
    return Path(rlhf.__file__).resolve().parents[1] / "data"


def seed_sample_project(engine: Engine, *, data_dir: Path | None = None, actor: Actor = SYSTEM) -> str:
    """Import the sample file into project `sample` (created with the sample guidelines when
    present); returns a one-line summary. Raises SampleDataMissing when the file is absent,
    ImportFormatError when it is malformed (then nothing of it is written)."""
    from rlhf.importer import import_file
    from rlhf.projects import ProjectNotFound, create_project, get_project, update_project

    data_dir = sample_data_dir() if data_dir is None else Path(data_dir)
    sample = data_dir / SAMPLE_FILE
    if not sample.is_file():
        raise SampleDataMissing(f"sample data not found at {sample}: run from a source checkout, or import your own file with `rlhf import`")
    guidelines_path = data_dir / SAMPLE_GUIDELINES
    guidelines = guidelines_path.read_text(encoding="utf-8") if guidelines_path.is_file() else ""
    try:
        project = get_project(engine, SAMPLE_PROJECT)
        if guidelines and not project.guidelines:
            # Guidelines an admin has written since are theirs; only fill in missing ones.
            update_project(engine, actor, project.id, guidelines=guidelines)
    except ProjectNotFound:
        create_project(engine, actor, SAMPLE_PROJECT, description=SAMPLE_DESCRIPTION, guidelines=guidelines)
    summary = import_file(engine, sample, SAMPLE_PROJECT, actor=actor)
    return f"sample project: {summary.line()}"
