"""CLI: `rlhf init [--sample]`, `rlhf import` (exit 2 with file:line field on bad input), `rlhf project ...`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhf.cli import app

FIXTURES = Path(__file__).parent / "data" / "import"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def db(tmp_path, runner, monkeypatch) -> str:
    """An initialised SQLite database; RLHF_DATABASE_URL points at it for every command."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("RLHF_DATABASE_URL", url)
    result = runner.invoke(app, ["init"])
    assert result.exit_code == 0, result.output
    return url


def invoke(runner: CliRunner, *args: str):
    return runner.invoke(app, list(args))


def test_import_prints_a_summary(runner, db):
    result = invoke(runner, "import", str(FIXTURES / "responses.jsonl"), "--project", "demo", "--quiet")

    assert result.exit_code == 0, result.output
    assert "added 3 prompts, 9 responses, 9 rating + 10 pairwise tasks" in result.stdout


def test_import_options_reach_the_importer(runner, db):
    result = invoke(
        runner, "import", str(FIXTURES / "preferences.jsonl"), "-p", "prefs", "--as-labels", "hh", "--no-ratings", "--max-pairs-per-prompt", "0", "-q"
    )

    assert result.exit_code == 0, result.output
    assert "0 rating + 3 pairwise tasks, 3 labels" in result.stdout


def test_bad_file_exits_2_naming_file_line_and_field(runner, db, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok", "responses": []}\n{"prompt": "x", "responses": [{"text": "", "model": "m"}]}\n')

    result = invoke(runner, "import", str(bad), "--project", "demo", "-q")

    assert result.exit_code == 2
    assert f"error: {bad}:2: field 'responses[0].text': empty text" in result.stderr
    listing = invoke(runner, "project", "list")
    assert "no projects" in listing.stdout  # nothing written, not even the project


def test_oversized_and_unsupported_files_exit_2(runner, db, tmp_path):
    too_big = invoke(runner, "import", str(FIXTURES / "responses.jsonl"), "-p", "demo", "--max-bytes", "100", "-q")
    other = tmp_path / "notes.txt"
    other.write_text("hello")
    unsupported = invoke(runner, "import", str(other), "-p", "demo", "-q")

    assert too_big.exit_code == 2 and "over the import limit of 100 bytes" in too_big.stderr
    assert unsupported.exit_code == 2 and "unsupported format '.txt'" in unsupported.stderr


def test_import_into_an_uninitialised_database_exits_2(runner, tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")

    result = invoke(runner, "import", str(FIXTURES / "responses.jsonl"), "-p", "demo", "-q")

    assert result.exit_code == 2 and "rlhf init" in result.stderr


def test_project_create_list_show_update(runner, db, tmp_path):
    rubric = tmp_path / "rubric.json"
    rubric.write_text(json.dumps([{"name": "quality", "min": 1, "max": 5}]))
    guidelines = tmp_path / "guide.md"
    guidelines.write_text("# Guide")

    created = invoke(runner, "project", "create", "demo", "--rubric-file", str(rubric), "--guidelines-file", str(guidelines), "--tags", "a, b", "--overlap", "2")
    assert created.exit_code == 0, created.output
    invoke(runner, "import", str(FIXTURES / "responses.jsonl"), "-p", "demo", "-q")

    listing = invoke(runner, "project", "list")
    assert listing.exit_code == 0 and "demo" in listing.stdout and " 9 " in listing.stdout
    shown = json.loads(invoke(runner, "project", "show", "demo").stdout)
    assert shown["rubric"] == [{"name": "quality", "min": 1, "max": 5}]
    assert (shown["tags"], shown["overlap"], shown["guidelines"]) == (["a", "b"], 2, "# Guide")
    assert shown["counts"]["prompts"] == 3

    updated = invoke(runner, "project", "update", "demo", "--overlap", "3", "--max-overlap", "5", "--inactive")
    assert updated.exit_code == 0, updated.output
    assert json.loads(updated.stdout)["max_overlap"] == 5 and json.loads(updated.stdout)["active"] is False


def test_project_errors_exit_2(runner, db, tmp_path):
    invoke(runner, "project", "create", "demo")

    duplicate = invoke(runner, "project", "create", "demo")
    bad_overlap = invoke(runner, "project", "create", "other", "--overlap", "0")
    missing = invoke(runner, "project", "show", "ghost")
    invalid_update = invoke(runner, "project", "update", "demo", "--visibility", "public")
    nothing = invoke(runner, "project", "update", "demo")
    bad_rubric = tmp_path / "rubric.json"
    bad_rubric.write_text("[{")
    unreadable = invoke(runner, "project", "create", "x", "--rubric-file", str(bad_rubric))

    assert duplicate.exit_code == 2 and "already exists" in duplicate.stderr
    assert bad_overlap.exit_code == 2 and "overlap:" in bad_overlap.stderr
    assert missing.exit_code == 2 and "no project 'ghost'" in missing.stderr
    assert invalid_update.exit_code == 2 and "visibility:" in invalid_update.stderr
    assert nothing.exit_code == 2
    assert unreadable.exit_code == 2 and "rubric" in unreadable.stderr


def test_init_sample_seeds_once(runner, db, tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(FIXTURES / "sample_project.jsonl", data / "sample_project.jsonl")
    monkeypatch.setattr("rlhf.seed.sample_data_dir", lambda: data)

    first = invoke(runner, "init", "--sample")
    second = invoke(runner, "init", "--sample")

    assert first.exit_code == 0, first.output
    assert "added 2 prompts" in first.stdout
    assert "added 0 prompts" in second.stdout


def test_init_sample_without_data_exits_2(runner, db, tmp_path, monkeypatch):
    monkeypatch.setattr("rlhf.seed.sample_data_dir", lambda: tmp_path / "nowhere")

    result = invoke(runner, "init", "--sample")

    assert result.exit_code == 2 and "sample data not found" in result.stderr


def test_command_module_imports_nothing_heavy_at_import_time():
    """`rlhf --help` stays fast: backends are imported inside the command bodies only."""
    import ast

    import rlhf.cli.foundation as module

    tree = ast.parse(Path(module.__file__).read_text())
    top_level = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            top_level.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            top_level.add(node.module)
    assert top_level <= {"__future__", "pathlib", "typing", "typer", "rlhf.cli"}
