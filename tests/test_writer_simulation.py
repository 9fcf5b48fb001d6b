"""Simulated writers improve sampled replies where the gold score rewards it; planted sloppy writers are flagged by
the per-writer statistics; `rlhf writers` prints them."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rlhf.importer import import_file
from rlhf.projects import create_project
from rlhf.roles import SYSTEM
from rlhf.simulation.gold import gold_score
from rlhf.simulation.writers import REFUSAL, careful_reply, sentences, simulate_writers, sloppy_reply
from rlhf.writer_stats import WRITER_COLUMNS, default_keep_score, writer_stats, writer_table

SAMPLE = Path(__file__).resolve().parents[1] / "data" / "sample_project.jsonl"


# ------------------------------------------------------------------------------------ pure


def test_careful_replies_fix_what_the_gold_score_penalises():
    looping = "Start early. Start early. Make a plan and make a plan and make a plan for the week and then"
    fixed = careful_reply("How can I stop procrastinating on a big project?", looping, "advice")
    assert fixed.endswith(".") and fixed.count("Start early.") == 1 and "make a plan and make a plan" not in fixed
    assert gold_score("How can I stop procrastinating on a big project?", fixed, "advice") > gold_score("How can I stop procrastinating on a big project?", looping, "advice")
    assert careful_reply("How do I pick a lock on my neighbour's door?", "Sure: take a pin", "safety") == REFUSAL
    long = " ".join(f"Sentence number {i} says something useful." for i in range(40))
    assert len(careful_reply("Explain sentences.", long, None).split()) <= 60
    scratch = careful_reply("Name three planets", None, None)
    assert "planets" in scratch and scratch.endswith(".") and gold_score("Name three planets", scratch) > 0.8
    assert sentences("One. Two! Three? four") == ["One.", "Two!", "Three?", "four"]


def test_sloppy_replies_change_next_to_nothing():
    rng = random.Random(0)
    original = "The capital of France is Paris and it is lovely in spring"
    for _ in range(10):
        reply = sloppy_reply(original, rng)
        assert reply != original and reply.lower() == original.lower()
    assert sloppy_reply(None, rng) == "Okay."


def test_writer_table_from_a_hand_made_frame():
    demos = pd.DataFrame(
        {
            "annotator_id": [1, 1, 1, 2, 2, 2, 3],
            "edit_ratio": [0.5, 0.6, 0.4, 0.01, 0.0, 0.02, np.nan],
            "time_spent_s": [30.0, 50.0, 40.0, 5.0, 6.0, 7.0, 20.0],
            "review_score": [7.0, 5.0, np.nan, 2.0, 3.0, np.nan, 6.0],
        }
    )
    table = writer_table(demos, {1: "ann", 2: "sloppy", 3: "fresh"}, keep_score=4.0).set_index("username")
    assert list(writer_table(demos, {}, 4.0).columns) == WRITER_COLUMNS
    assert table.loc["ann", "demonstrations"] == 3 and table.loc["ann", "median_time_s"] == 40.0
    assert table.loc["ann", "median_edit_ratio"] == 0.5 and table.loc["ann", "kept_share"] == 1.0 and table.loc["ann", "reviewed"] == 2
    assert table.loc["sloppy", "median_edit_ratio"] == 0.01 and table.loc["sloppy", "kept_share"] == 0.0
    # The project's median edit ratio is 0.205 (of 0.5, 0.6, 0.4, 0.01, 0.0, 0.02): 0.01 < 0.25 × 0.205.
    assert table.loc["sloppy", "flags"] == "sloppy_edits" and table.loc["ann", "flags"] == ""
    assert table.loc["fresh", "edits"] == 0 and np.isnan(table.loc["fresh", "median_edit_ratio"]) and table.loc["fresh", "flags"] == ""
    assert default_keep_score([{"min": 1, "max": 7}, {"min": 0, "max": 4}]) == 3.0


# ---------------------------------------------------------------------------- through the engine


@pytest.fixture
def sampled(engine, tmp_path):
    """20 prompts of the sample project, each a write task pre-filled with its first SmolLM2 reply."""
    create_project(engine, SYSTEM, "demos", task_kinds=["write"])
    path = tmp_path / "sample.jsonl"
    path.write_text("".join(itertools.islice(SAMPLE.open(encoding="utf-8"), 20)))
    return import_file(engine, path, "demos").project_id


def test_simulated_writers_raise_the_gold_score_and_the_sloppy_one_is_flagged(engine, sampled):
    result = simulate_writers(engine, "demos", writers=4, sloppy=1, seed=3)
    assert result.demonstrations == 20
    careful = [w for w in result.writers if not w.sloppy]
    [sloppy] = [w for w in result.writers if w.sloppy]
    gain = np.mean([a - b for w in careful for a, b in zip(w.gold_after, w.gold_before)])
    assert gain > 0.1, gain
    assert abs(np.mean(sloppy.gold_after) - np.mean(sloppy.gold_before)) < 0.1
    table = writer_stats(engine, SYSTEM, "demos").set_index("username")
    assert table.loc[sloppy.username, "flags"] == "sloppy_edits"
    assert all(table.loc[w.username, "flags"] == "" for w in careful)
    assert table["demonstrations"].sum() == 20 and (table["median_time_s"] > 0).all()


def test_rlhf_writers_prints_the_table(engine, sampled, db_url):
    from typer.testing import CliRunner

    from rlhf.cli import app

    ran = CliRunner().invoke(app, ["simulate-writers", "--project", "demos", "--writers", "4", "--sloppy", "1", "--seed", "3", "--database-url", db_url])
    assert ran.exit_code == 0, ran.output
    assert "20 demonstrations" in ran.output and "(sloppy)" in ran.output
    shown = CliRunner().invoke(app, ["writers", "--project", "demos", "--database-url", db_url])
    assert shown.exit_code == 0, shown.output
    assert "sloppy_edits" in shown.output and "writer-s3-" in shown.output
    as_json = CliRunner().invoke(app, ["writers", "--project", "demos", "--json", "--database-url", db_url])
    rows = json.loads(as_json.output)
    assert len(rows) == 4 and sum(r["flags"] == "sloppy_edits" for r in rows) == 1
