"""An export with only external labels names how many were left out and the flag that uses them (issue 16, item 14)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rlhf.export import ExportError, ExportOptions, export_project
from rlhf.importer import import_file
from rlhf.roles import SYSTEM

PREFERENCES = Path(__file__).parent / "data" / "import" / "preferences.jsonl"  # 3 preference rows


@pytest.fixture
def only_external(engine):
    import_file(engine, PREFERENCES, "judged", as_labels="gpt-judge")
    return engine


@pytest.mark.parametrize("format", ["trl", "raw"])
def test_export_of_only_external_labels_says_how_many_were_left_out_and_how_to_use_them(only_external, tmp_path, format):
    with pytest.raises(ExportError) as caught:
        export_project(only_external, SYSTEM, "judged", format=format, out=tmp_path / "out.jsonl")
    message = str(caught.value)
    assert "3 label(s) from external sources" in message and "--include-external" in message
    assert not (tmp_path / "out.jsonl").exists()

    manifest = export_project(only_external, SYSTEM, "judged", format=format, out=tmp_path / "out.jsonl", options=ExportOptions(include_external=True))
    assert manifest.rows == 3 and manifest.counts["left_out_external"] == 0


def test_a_project_without_any_labels_does_not_mention_external_ones(engine, tmp_path):
    import_file(engine, PREFERENCES, "bare")
    with pytest.raises(ExportError) as caught:
        export_project(engine, SYSTEM, "bare", format="trl", out=tmp_path / "out.jsonl")
    assert "external" not in str(caught.value) and "no annotations" in str(caught.value)


def test_cli_export_names_the_left_out_labels_and_the_flag(tmp_path, monkeypatch):
    from rlhf.cli import app
    from rlhf.db import init_database, make_engine

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = make_engine(url)
    init_database(engine)
    import_file(engine, PREFERENCES, "judged", as_labels="gpt-judge")
    monkeypatch.setenv("RLHF_DATABASE_URL", url)

    result = CliRunner().invoke(app, ["export", "--project", "judged", "--out", str(tmp_path / "pairs.jsonl")])
    assert result.exit_code == 2
    assert "3 label(s) from external sources" in result.output and "pass --include-external" in result.output

    result = CliRunner().invoke(app, ["export", "--project", "judged", "--out", str(tmp_path / "pairs.jsonl"), "--include-external"])
    assert result.exit_code == 0, result.output
    assert "exported 3 rows" in result.output
