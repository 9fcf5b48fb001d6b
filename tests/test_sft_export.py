"""`rlhf export --format sft` (TRL conversational messages / prompt-completion, grouped split, manifest, review filter)
and edited ≻ original pairs with `--include-edits`."""

from __future__ import annotations

import json

import pytest

from engine_fixtures import add_annotators
from rlhf.annotate import next_task, submit_rating
from rlhf.demonstrations import submit_demonstration
from rlhf.export import ExportError, ExportOptions, export_project, read_export_rows, read_manifest
from rlhf.importer import import_file
from rlhf.projects import create_project
from rlhf.roles import SYSTEM

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]
ORIGINAL = "The answer is is is four four"
HI = "Hello there, how are you doing today my friend? I hope the weather is kind to you and that your morning coffee was as good as mine this fine bright day"


@pytest.fixture
def demo_project(engine, tmp_path):
    """Four write tasks answered: a substantive edit, a trivial one, two from scratch (one a chat); the edit reviewed 7, the trivial one 2."""
    create_project(engine, SYSTEM, "demo", task_kinds=["write", "rate"])
    records = [  # a prompts file: replies to edit on some prompts (read as shape (a)), none on others
        {"prompt": CHAT},
        {"prompt": "Sum 2 and 2", "responses": [{"text": ORIGINAL, "model": "m1"}]},
        {"prompt": "Say hi", "responses": [{"text": HI, "model": "m1"}]},
        {"prompt": "Name a colour"},
    ]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    project_id = import_file(engine, path, "demo").project_id
    writer, reviewer = add_annotators(engine, 2)
    replies = {
        "Sum 2 and 2": "Two plus two is four.",
        "Say hi": HI + ".",  # one word of 30 touched: not substantive
        "Name a colour": "Blue.",
    }
    view = next_task(engine, writer, project_id, "write")
    while view is not None:
        text = replies.get(view.prompt_text, "4")
        view = submit_demonstration(engine, writer, view.task_id, text=text).next_task
    task = next_task(engine, reviewer, project_id, "rating")
    while task is not None:
        score = 7 if task.response.text == "Two plus two is four." else 2
        task = submit_rating(engine, reviewer, task.task_id, scores={"helpfulness": score, "honesty": score, "harmlessness": score}).next_task
    return project_id


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_sft_messages_export_ends_each_conversation_with_the_demonstration(engine, demo_project, tmp_path):
    out = tmp_path / "sft.jsonl"
    manifest = export_project(engine, SYSTEM, "demo", format="sft", out=out, options=ExportOptions(test_size=0.25))
    rows = rows_of(out)
    assert manifest.rows == 4 and manifest.conversational and manifest.counts["demonstrations"] == 4
    by_last = {r["messages"][-1]["content"]: r for r in rows}
    assert set(by_last) == {"Two plus two is four.", HI + ".", "4", "Blue."}
    assert by_last["4"]["messages"] == CHAT + [{"role": "assistant", "content": "4"}]
    assert by_last["Blue."]["messages"] == [{"role": "user", "content": "Name a colour"}, {"role": "assistant", "content": "Blue."}]
    assert by_last["Two plus two is four."]["review_score"] == 7.0 and by_last["Blue."]["edit_ratio"] is None
    assert {r["split"] for r in rows} == {"train", "test"} and sum(r["split"] == "test" for r in rows) == 1
    assert all(set(r) >= {"messages", "split", "prompt_id", "task_id"} for r in rows)
    assert read_manifest(out).content_hash == manifest.content_hash
    # Same data and options, same hash.
    again = export_project(engine, SYSTEM, "demo", format="sft", out=tmp_path / "again.jsonl", options=ExportOptions(test_size=0.25))
    assert again.content_hash == manifest.content_hash


def test_sft_prompt_completion_and_the_review_filter(engine, demo_project, tmp_path):
    out = tmp_path / "pc.jsonl"
    options = ExportOptions(sft_shape="prompt-completion", min_review_score=5.0, test_size=0.0)
    manifest = export_project(engine, SYSTEM, "demo", format="sft", out=out, options=options)
    [row] = rows_of(out)
    assert row["prompt"] == [{"role": "user", "content": "Sum 2 and 2"}]
    assert row["completion"] == [{"role": "assistant", "content": "Two plus two is four."}]
    assert manifest.counts["dropped_review_score"] == 3
    with pytest.raises(ExportError, match="no demonstrations"):
        export_project(engine, SYSTEM, "demo", format="sft", out=tmp_path / "none.jsonl", options=ExportOptions(min_review_score=7.5))
    assert not (tmp_path / "none.jsonl").exists()
    with pytest.raises(ExportError, match="sft_shape"):
        export_project(engine, SYSTEM, "demo", format="sft", out=tmp_path / "bad.jsonl", options=ExportOptions(sft_shape="chatml"))


def test_substantive_edits_become_preference_pairs_only_when_asked(engine, demo_project, tmp_path):
    with pytest.raises(ExportError, match="no usable preference pairs"):
        export_project(engine, SYSTEM, "demo", format="trl", out=tmp_path / "off.jsonl")
    out = tmp_path / "edits.jsonl"
    manifest = export_project(engine, SYSTEM, "demo", format="trl", out=out, options=ExportOptions(include_edits=True, test_size=0.0))
    [pair] = rows_of(out)  # the punctuation-only edit is not a preference
    assert pair["source"] == "edit" and pair["chosen_model"] == "human-demonstration" and pair["rejected_model"] == "m1"
    assert pair["chosen"] == [{"role": "assistant", "content": "Two plus two is four."}]
    assert pair["rejected"] == [{"role": "assistant", "content": ORIGINAL}]
    assert manifest.counts["edit_pairs"] == 1
    frame = read_export_rows(out)
    assert {"prompt", "chosen", "rejected", "margin", "source", "split"} <= set(frame.columns)


def test_the_sft_export_loads_as_trl_conversational_data(engine, demo_project, tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import load_dataset

    from trl.data_utils import is_conversational

    for shape in ("messages", "prompt-completion"):
        out = tmp_path / f"{shape}.jsonl"
        export_project(engine, SYSTEM, "demo", format="sft", out=out, options=ExportOptions(sft_shape=shape, test_size=0.0))
        dataset = load_dataset("json", data_files=str(out), split="train")
        assert len(dataset) == 4 and is_conversational(dataset[0]), trl.__version__


def test_rlhf_export_cli_writes_sft_rows(engine, demo_project, tmp_path, db_url):
    from typer.testing import CliRunner

    from rlhf.cli import app

    out = tmp_path / "cli.jsonl"
    result = CliRunner().invoke(app, ["export", "--project", "demo", "--format", "sft", "--sft-shape", "prompt-completion", "--out", str(out), "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert "exported 4 rows" in result.output and all("completion" in r for r in rows_of(out))
    bad = CliRunner().invoke(app, ["export", "--project", "demo", "--format", "sft", "--sft-shape", "nope", "--out", str(tmp_path / "x.jsonl"), "--database-url", db_url])
    assert bad.exit_code != 0 and "sft_shape" in bad.output
