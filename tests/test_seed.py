"""Seeding the sample project: idempotent, guidelines from data/, a clear error without the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import rlhf
from rlhf.projects import get_project, project_counts, update_project
from rlhf.roles import SYSTEM
from rlhf.seed import SAMPLE_PROJECT, SampleDataMissing, sample_data_dir, seed_sample_project

FIXTURES = Path(__file__).parent / "data" / "import"


@pytest.fixture
def data_dir(tmp_path) -> Path:
    shutil.copy(FIXTURES / "sample_project.jsonl", tmp_path / "sample_project.jsonl")
    shutil.copy(FIXTURES / "sample_guidelines.md", tmp_path / "sample_guidelines.md")
    return tmp_path


def test_seed_imports_the_sample_with_guidelines(engine, data_dir):
    line = seed_sample_project(engine, data_dir=data_dir)

    project = get_project(engine, SAMPLE_PROJECT)
    assert project.guidelines.startswith("# Fixture guidelines")
    assert project_counts(engine, project.id)["prompts"] == 2
    assert project_counts(engine, project.id)["responses"] == 5
    assert "\n" not in line and "added 2 prompts" in line


def test_seeding_twice_adds_nothing_and_keeps_edited_guidelines(sqlite_engine, data_dir):
    seed_sample_project(sqlite_engine, data_dir=data_dir)
    update_project(sqlite_engine, SYSTEM, SAMPLE_PROJECT, guidelines="edited by an admin")
    before = project_counts(sqlite_engine, get_project(sqlite_engine, SAMPLE_PROJECT).id)

    line = seed_sample_project(sqlite_engine, data_dir=data_dir)

    after = project_counts(sqlite_engine, get_project(sqlite_engine, SAMPLE_PROJECT).id)
    assert {k: v for k, v in after.items() if k != "imports"} == {k: v for k, v in before.items() if k != "imports"}
    assert "added 0 prompts" in line
    assert get_project(sqlite_engine, SAMPLE_PROJECT).guidelines == "edited by an admin"


def test_seed_without_guidelines_file(sqlite_engine, data_dir):
    (data_dir / "sample_guidelines.md").unlink()

    seed_sample_project(sqlite_engine, data_dir=data_dir)

    assert get_project(sqlite_engine, SAMPLE_PROJECT).guidelines == ""


def test_missing_sample_file_is_a_clear_error(sqlite_engine, tmp_path):
    with pytest.raises(SampleDataMissing, match="sample_project.jsonl"):
        seed_sample_project(sqlite_engine, data_dir=tmp_path)


def test_data_dir_is_found_from_the_package():
    assert sample_data_dir() == Path(rlhf.__file__).resolve().parents[1] / "data"


@pytest.mark.skipif(not (sample_data_dir() / "sample_project.jsonl").is_file(), reason="data/sample_project.jsonl not generated yet")
def test_the_shipped_sample_file_imports(sqlite_engine):
    line = seed_sample_project(sqlite_engine)

    counts = project_counts(sqlite_engine, get_project(sqlite_engine, SAMPLE_PROJECT).id)
    assert counts["prompts"] > 0 and counts["responses"] >= counts["prompts"]
    assert "added" in line
