"""Rankings in `rlhf export --format trl`: C(K, 2) pairs per ranking with a group id, ties per --keep-ties, margin from rank distance."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from engine_fixtures import add_annotators, create_project
from ranking_fixtures import add_ranking_tasks
from rlhf.annotate import submit_ranking
from rlhf.export import ExportOptions, export_project, read_export_rows
from rlhf.roles import SYSTEM


def seeded(engine, n_tasks=8):
    project = create_project(engine, name="ranked", overlap=2, rank_k_min=4, rank_k_max=4)
    ids = add_ranking_tasks(engine, project.id, n_tasks, k=4)
    a, b = add_annotators(engine, 2)
    for task_id in ids:
        submit_ranking(engine, a, task_id, ranking="D C B A", next_kind=None)  # card j = model-j; D best
        submit_ranking(engine, b, task_id, ranking="D B=C A", next_kind=None)  # one tie
    return project, ids


def test_each_ranking_expands_into_its_pairs_with_a_group(engine, tmp_path):
    project, ids = seeded(engine)
    manifest = export_project(engine, SYSTEM, project.id, format="trl", out=tmp_path / "pairs.jsonl", options=ExportOptions(test_size=0.25))
    rows = read_export_rows(tmp_path / "pairs.jsonl")
    assert manifest.counts["rankings"] == 16 and manifest.counts["dropped_ranking_ties"] == 8
    assert len(rows) == 8 * (6 + 5)  # C(4,2) = 6 pairs, less the tied one for the second annotator
    sizes = rows.groupby("group_id").size()
    assert len(sizes) == 16 and set(sizes) == {6, 5}
    # chosen is always the better-ranked reply: D beats everything, A loses everything
    assert not rows["rejected"].str.startswith("Answer 3").any() and not rows["chosen"].str.startswith("Answer 0").any()
    # a group never straddles the split, and the split is by prompt
    assert rows.groupby("group_id")["split"].nunique().max() == 1
    assert set(rows["split"]) == {"train", "test"}
    assert (rows["margin"] == 0).all()


def test_keep_ties_and_rank_margin(engine, tmp_path):
    project, _ = seeded(engine, n_tasks=2)
    options = ExportOptions(keep_ties=True, rank_margin=True, margin_per_strength=1.0, test_size=0.0)
    export_project(engine, SYSTEM, project.id, format="trl", out=tmp_path / "ties.jsonl", options=options)
    rows = read_export_rows(tmp_path / "ties.jsonl")
    assert len(rows) == 2 * 12 and rows["tie"].sum() == 2
    first = rows[rows["group_id"] == rows["group_id"].iloc[0]]
    # D > C > B > A: distances 1, 2, 3 -> margins 0, 1, 2
    assert sorted(first["margin"]) == [0, 0, 0, 1, 1, 2]
    assert rows.loc[rows["tie"], "margin"].eq(0).all()


def test_cli_export_with_rank_margin(sqlite_engine, tmp_path):
    from rlhf.cli import app

    seeded(sqlite_engine, n_tasks=3)
    out = tmp_path / "cli.jsonl"
    result = CliRunner().invoke(app, ["export", "--project", "ranked", "--out", str(out), "--rank-margin", "--test-size", "0", "--database-url", str(sqlite_engine.url)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 * 11 and {"group_id", "margin", "prompt", "chosen", "rejected"} <= set(rows[0])
    assert max(r["margin"] for r in rows) == 2.0
