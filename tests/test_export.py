"""Export: TRL pairs (plain and conversational), aggregation options, filters, grouped split, manifest, formats."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sqlmodel import select

from rlhf.db import session_scope
from rlhf.export import (
    ExportError,
    ExportOptions,
    export_project,
    grouped_split,
    manifest_path_for,
    read_export_rows,
    read_manifest,
    vote_labels,
)
from rlhf.roles import SYSTEM, PermissionDenied
from rlhf.schema import Artifact, User
from test_frames import seed_project

PLAIN_PROMPTS = {
    "p1": ("Say hello", {"p1a": "Hello there!", "p1b": "Go away.", "p1c": "Hi."}),
    "p2": ("Name a colour", {"p2a": "Blue.", "p2b": "Seven."}),
}


def small_project(engine, name="proj", prompts=PLAIN_PROMPTS):
    """t1: 2 humans say a (strengths 2 and 1), the external judge says b; t2: a tie; t3: a 1–1 split; t4: b by one vote."""
    return seed_project(
        engine,
        name,
        prompts=prompts,
        pairs={
            "t1": ("p1", "p1a", "p1b", {"ann1": ("a", 2), "ann2": ("a", 1), "judge": ("b", 1)}),
            "t2": ("p1", "p1b", "p1c", {"ann1": ("tie", 0), "ann2": ("tie", 0)}),
            "t3": ("p1", "p1a", "p1c", {"ann1": ("a", 1), "ann2": ("b", 1)}),
            "t4": ("p2", "p2a", "p2b", {"ann3": ("b", 2)}),
        },
    )


def test_trl_plain_rows_majority_humans_only(engine, tmp_path):
    seeded = small_project(engine)
    out = tmp_path / "prefs.jsonl"
    manifest = export_project(engine, SYSTEM, "proj", format="trl", out=out, options=ExportOptions(test_size=0))
    rows = pd.read_json(out, lines=True).set_index("task_id")
    assert list(rows.reset_index().columns[:4]) == ["prompt", "chosen", "rejected", "margin"] or "margin" in rows
    assert sorted(rows.index) == sorted([seeded.tasks["t1"], seeded.tasks["t4"]])  # tie and split vote dropped
    t1 = rows.loc[seeded.tasks["t1"]]
    assert (t1.prompt, t1.chosen, t1.rejected) == ("Say hello", "Hello there!", "Go away.")
    assert t1.votes == 2 and t1.agreement == 1.0  # the external judge's "b" is not counted
    assert t1.margin == pytest.approx(0.5)  # strengths 2 and 1 → (1 + 0) / 2
    t4 = rows.loc[seeded.tasks["t4"]]
    assert (t4.chosen, t4.rejected, t4.margin) == ("Seven.", "Blue.", 1.0)
    assert manifest.counts["dropped_ties"] == 1 and manifest.counts["dropped_no_majority"] == 1
    assert manifest.conversational is False and manifest.rows == 2
    assert set(rows.split) == {"train"}


def test_external_labels_are_opt_in(engine, tmp_path):
    seeded = small_project(engine)
    options = ExportOptions(include_external=True, test_size=0)
    export_project(engine, SYSTEM, "proj", format="trl", out=tmp_path / "all.jsonl", options=options)
    rows = pd.read_json(tmp_path / "all.jsonl", lines=True).set_index("task_id")
    assert rows.loc[seeded.tasks["t1"]].votes == 3
    assert rows.loc[seeded.tasks["t1"]].agreement == pytest.approx(2 / 3)


def test_keep_ties_marks_them(engine, tmp_path):
    seeded = small_project(engine)
    export_project(engine, SYSTEM, "proj", format="trl", out=tmp_path / "t.jsonl", options=ExportOptions(keep_ties=True, test_size=0))
    rows = pd.read_json(tmp_path / "t.jsonl", lines=True).set_index("task_id")
    tie = rows.loc[seeded.tasks["t2"]]
    assert bool(tie.tie) and tie.margin == 0.0
    assert not bool(rows.loc[seeded.tasks["t1"]].tie)


def test_conversational_rows_when_a_prompt_is_chat(engine, tmp_path):
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour"}]
    prompts = {"p1": PLAIN_PROMPTS["p1"], "p2": (chat, PLAIN_PROMPTS["p2"][1])}
    seeded = small_project(engine, prompts=prompts)
    out = tmp_path / "conv.parquet"
    manifest = export_project(engine, SYSTEM, "proj", format="trl", out=out, options=ExportOptions(test_size=0))
    assert manifest.conversational is True
    rows = read_export_rows(out).set_index("task_id")
    t4 = rows.loc[seeded.tasks["t4"]]
    assert [dict(m) for m in t4.prompt] == chat
    assert [dict(m) for m in t4.chosen] == [{"role": "assistant", "content": "Seven."}]
    t1 = rows.loc[seeded.tasks["t1"]]  # a plain prompt becomes one user message
    assert [dict(m) for m in t1.prompt] == [{"role": "user", "content": "Say hello"}]
    assert [dict(m) for m in t1.rejected] == [{"role": "assistant", "content": "Go away."}]


def test_min_votes_and_min_agreement_filters(engine, tmp_path):
    seeded = small_project(engine)
    manifest = export_project(
        engine, SYSTEM, "proj", format="trl", out=tmp_path / "a.jsonl", options=ExportOptions(min_votes=2, test_size=0)
    )
    rows = pd.read_json(tmp_path / "a.jsonl", lines=True)
    assert rows.task_id.tolist() == [seeded.tasks["t1"]]
    assert manifest.counts["dropped_min_votes"] == 1  # t4 has one vote

    options = ExportOptions(include_external=True, min_agreement=0.7, test_size=0)
    manifest = export_project(engine, SYSTEM, "proj", format="trl", out=tmp_path / "b.jsonl", options=options)
    rows = pd.read_json(tmp_path / "b.jsonl", lines=True)
    assert rows.task_id.tolist() == [seeded.tasks["t4"]]  # t1 at 2/3 agreement is dropped
    assert manifest.counts["dropped_min_agreement"] == 1


def test_vote_labels_on_a_small_frame():
    votes = pd.DataFrame({"item": [1, 1, 1, 2, 2], "annotator": [1, 2, 3, 1, 2], "value": ["a", "a", "b", "a", "b"]})
    labels = vote_labels(votes, "majority")
    assert labels.loc[1, "label"] == "a" and labels.loc[1, "agreement"] == pytest.approx(2 / 3)
    assert not labels.loc[1, "split_vote"] and labels.loc[2, "split_vote"]
    assert labels["votes"].tolist() == [3, 2]


def test_dawid_skene_option_outvotes_an_unreliable_majority(engine, tmp_path):
    # ann1..ann3 always agree with each other on the first 8 tasks; on the last task two
    # unreliable annotators (who disagree with them everywhere else) outvote ann1.
    prompts = {f"p{i}": (f"prompt {i}", {f"p{i}a": f"good {i}", f"p{i}b": f"bad {i}"}) for i in range(9)}
    pairs = {}
    for i in range(8):
        pairs[f"t{i}"] = (f"p{i}", f"p{i}a", f"p{i}b", {"ann1": ("a", 1), "ann2": ("a", 1), "ann3": ("a", 1), "bad1": ("b", 1), "bad2": ("b", 1)})
    pairs["t8"] = ("p8", "p8a", "p8b", {"ann1": ("a", 1), "bad1": ("b", 1), "bad2": ("b", 1)})
    seeded = seed_project(engine, prompts=prompts, pairs=pairs)
    majority = export_project(engine, SYSTEM, "proj", format="trl", out=tmp_path / "m.jsonl", options=ExportOptions(test_size=0))
    ds = export_project(
        engine, SYSTEM, "proj", format="trl", out=tmp_path / "d.jsonl", options=ExportOptions(aggregate="dawid-skene", test_size=0)
    )
    by_majority = pd.read_json(tmp_path / "m.jsonl", lines=True).set_index("task_id")
    by_ds = pd.read_json(tmp_path / "d.jsonl", lines=True).set_index("task_id")
    assert by_majority.loc[seeded.tasks["t8"]].chosen == "bad 8"
    assert by_ds.loc[seeded.tasks["t8"]].chosen == "good 8"
    assert by_ds.loc[seeded.tasks["t8"]].agreement == pytest.approx(1 / 3)  # share of raw votes for the DS label
    assert majority.options["aggregate"] == "majority" and ds.options["aggregate"] == "dawid-skene"


def many_prompts_project(engine, n_prompts=20):
    prompts = {f"p{i}": (f"prompt number {i}", {f"p{i}a": f"good answer {i}", f"p{i}b": f"bad answer {i}", f"p{i}c": f"meh {i}"}) for i in range(n_prompts)}
    pairs = {}
    for i in range(n_prompts):
        pairs[f"t{i}x"] = (f"p{i}", f"p{i}a", f"p{i}b", {"ann1": ("a", 1), "ann2": ("a", 2)})
        pairs[f"t{i}y"] = (f"p{i}", f"p{i}c", f"p{i}b", {"ann1": ("a", 1)})
    return seed_project(engine, prompts=prompts, pairs=pairs)


def test_split_is_grouped_by_prompt_and_deterministic(engine, tmp_path):
    many_prompts_project(engine)
    options = ExportOptions(test_size=0.25, seed=3)
    first = export_project(engine, SYSTEM, "proj", format="trl", out=tmp_path / "one", options=options)
    second = export_project(engine, SYSTEM, "proj", format="trl", out=tmp_path / "two", options=ExportOptions(test_size=0.25, seed=3))
    one, two = read_export_rows(tmp_path / "one"), read_export_rows(tmp_path / "two")
    train_prompts = set(one[one.split == "train"].prompt_id)
    test_prompts = set(one[one.split == "test"].prompt_id)
    assert train_prompts and test_prompts and not train_prompts & test_prompts
    assert len(test_prompts) == 5  # 25% of 20 prompts
    assert first.split_counts == {"train": 30, "test": 10}
    pd.testing.assert_frame_equal(one, two)
    assert first.content_hash == second.content_hash  # stable hash for the same data and options
    other = export_project(engine, SYSTEM, "proj", format="trl", out=tmp_path / "three", options=ExportOptions(test_size=0.25, seed=4))
    assert other.content_hash != first.content_hash


def test_grouped_split_properties():
    keys = [f"k{i % 7}" for i in range(50)]
    mask = grouped_split(keys, 0.3, seed=1)
    by_key = pd.DataFrame({"key": keys, "test": mask}).groupby("key")["test"].nunique()
    assert (by_key == 1).all()
    assert np.array_equal(mask, grouped_split(keys, 0.3, seed=1))
    assert grouped_split(["only"] * 3, 0.5, seed=0).sum() == 0  # one group can't be split
    assert grouped_split(["a", "b"], 0.01, seed=0).sum() == 1  # at least one held-out group
    # Adding prompts never moves an existing prompt across (its rank depends on its own key).
    grown = grouped_split(keys + [f"new{i}" for i in range(30)], 0.3, seed=1)[: len(keys)]
    assert not np.any(mask & ~grown)


def test_dataset_directory_and_manifest(engine, tmp_path):
    many_prompts_project(engine, n_prompts=6)
    out = tmp_path / "ds"
    manifest = export_project(engine, SYSTEM, "proj", format="trl", out=out, options=ExportOptions(test_size=0.34))
    from datasets import load_from_disk

    loaded = load_from_disk(str(out))
    assert set(loaded.keys()) == {"train", "test"}
    assert {"prompt", "chosen", "rejected", "margin", "prompt_id", "votes", "agreement"} <= set(loaded["train"].column_names)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["content_hash"] == manifest.content_hash and on_disk["project"] == "proj"
    assert on_disk["options"]["test_size"] == 0.34 and on_disk["software_version"]
    assert read_manifest(out).rows == manifest.rows == 12
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left behind
    with session_scope(engine) as session:
        artifact = session.exec(select(Artifact)).one()
    assert (artifact.kind, artifact.content_hash, artifact.path) == ("export", manifest.content_hash, str(out.resolve()))
    assert manifest.artifact_id == artifact.id


def test_file_manifest_sits_beside_the_file(engine, tmp_path):
    small_project(engine)
    out = tmp_path / "prefs.parquet"
    export_project(engine, SYSTEM, "proj", format="trl", out=out, options=ExportOptions(test_size=0))
    assert manifest_path_for(out) == tmp_path / "prefs.manifest.json"
    assert read_manifest(out).files == ["prefs.parquet", "prefs.manifest.json"]


def test_pairs_from_ratings(engine, tmp_path):
    seeded = seed_project(
        engine,
        prompts=PLAIN_PROMPTS,
        pairs={},
        ratings={
            "r1": ("p1", "p1a", {"ann1": {"helpfulness": 7, "honesty": 5}, "ann2": {"helpfulness": 5, "honesty": 5}}),
            "r2": ("p1", "p1b", {"ann1": {"helpfulness": 2, "honesty": 5}, "ann2": {"helpfulness": 5, "honesty": 5}}),
            "r3": ("p1", "p1c", {"ann1": {"helpfulness": 6, "honesty": 6}, "ann2": {"helpfulness": 6, "honesty": 4}}),
        },
    )
    options = ExportOptions(from_ratings=True, test_size=0)
    export_project(engine, SYSTEM, "proj", format="trl", out=tmp_path / "r.jsonl", options=options)
    rows = pd.read_json(tmp_path / "r.jsonl", lines=True)
    # Means over dimensions: p1a (6 + 5) / 2 = 5.5, p1b (3.5 + 5) / 2 = 4.25, p1c (6 + 5) / 2 = 5.5.
    pairs = {(r.chosen, r.rejected): r for r in rows.itertuples()}
    assert set(pairs) == {("Hello there!", "Go away."), ("Hi.", "Go away.")}  # p1a = p1c is a tie, dropped
    first = pairs[("Hello there!", "Go away.")]
    assert first.margin == pytest.approx(1.25) and first.votes == 2
    # per-annotator means: p1a [6, 5], p1b [3.5, 5] → comparisons 6>3.5, 6>5, 5>3.5, 5=5 → 3.5 / 4.
    assert first.agreement == pytest.approx(3.5 / 4)
    by_dimension = ExportOptions(from_ratings=True, rating_dimension="helpfulness", test_size=0)
    export_project(engine, SYSTEM, "proj", format="trl", out=tmp_path / "h.jsonl", options=by_dimension)
    # helpfulness means: p1a 6, p1b 3.5, p1c 6 → two pairs with margin 2.5, p1a = p1c tied.
    by_helpfulness = pd.read_json(tmp_path / "h.jsonl", lines=True)
    assert len(by_helpfulness) == 2 and set(by_helpfulness.margin) == {2.5}
    assert seeded.project_id


def test_ratings_format(engine, tmp_path):
    seed_project(
        engine,
        prompts=PLAIN_PROMPTS,
        pairs={},
        ratings={
            "r1": ("p1", "p1a", {"ann1": {"helpfulness": 7, "honesty": 5}, "ann2": {"helpfulness": 5, "honesty": 5}, "ann3": {"helpfulness": 7, "honesty": 4}}),
            "r2": ("p2", "p2a", {"ann1": {"helpfulness": 3, "honesty": 3}}),
        },
    )
    manifest = export_project(engine, SYSTEM, "proj", format="ratings", out=tmp_path / "r.jsonl", options=ExportOptions(test_size=0))
    rows = pd.read_json(tmp_path / "r.jsonl", lines=True).set_index("response")
    first = rows.loc["Hello there!"]
    assert first.n == 3
    assert first.mean_helpfulness == pytest.approx(19 / 3) and first.mean_honesty == pytest.approx(14 / 3)
    # helpfulness values 7,5,7 → 1 agreeing pair of 3; honesty 5,5,4 → 1 of 3.
    assert first.agreement == pytest.approx(1 / 3)
    assert np.isnan(rows.loc["Blue."].agreement) and rows.loc["Blue."].n == 1
    assert manifest.counts["responses"] == 2
    export_project(engine, SYSTEM, "proj", format="ratings", out=tmp_path / "m.jsonl", options=ExportOptions(min_votes=2, test_size=0))
    assert len(pd.read_json(tmp_path / "m.jsonl", lines=True)) == 1


def test_raw_format_pseudonymises_annotators(engine, tmp_path):
    seeded = seed_project(
        engine,
        prompts=PLAIN_PROMPTS,
        pairs={"t1": ("p1", "p1a", "p1b", {"ann1": ("a", 2), "ann2": ("b", 1)})},
        ratings={"r1": ("p2", "p2a", {"ann1": {"helpfulness": 6, "honesty": 5}})},
    )
    export_project(engine, SYSTEM, "proj", format="raw", out=tmp_path / "raw.jsonl", options=ExportOptions(test_size=0))
    export_project(engine, SYSTEM, "proj", format="raw", out=tmp_path / "raw2.jsonl", options=ExportOptions(test_size=0))
    text = (tmp_path / "raw.jsonl").read_text()
    assert "proj-ann1" not in text and "ann1" not in text.replace("ann-", "")
    rows = pd.read_json(tmp_path / "raw.jsonl", lines=True)
    assert len(rows) == 3 and set(rows.kind) == {"preference", "rating"}
    rating = rows[rows.kind == "rating"].iloc[0]
    assert (rating.score_helpfulness, rating.score_honesty, rating.response_a) == (6, 5, "Blue.")
    ann1 = rows[(rows.kind == "preference") & (rows.choice == "a")].annotator.iloc[0]
    assert rating.annotator == ann1  # stable within one export
    again = pd.read_json(tmp_path / "raw2.jsonl", lines=True)
    assert not set(again.annotator) & set(rows.annotator)  # a fresh salt per export: unlinkable
    assert seeded.users


def test_no_usable_pairs_is_a_clear_error_and_writes_nothing(engine, tmp_path):
    seed_project(engine, prompts=PLAIN_PROMPTS, pairs={"t1": ("p1", "p1a", "p1b", {"ann1": ("tie", 0)})})
    outputs = tmp_path / "out"
    outputs.mkdir()
    for out in (outputs / "x.jsonl", outputs / "dir"):
        with pytest.raises(ExportError, match="no usable preference pairs.*dropped_ties 1"):
            export_project(engine, SYSTEM, "proj", format="trl", out=out)
    assert list(outputs.iterdir()) == []
    with session_scope(engine) as session:
        assert session.exec(select(Artifact)).all() == []


def test_bad_requests(engine, tmp_path):
    small_project(engine)
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    annotator = User(username="someone", role="annotator", active=True)
    with pytest.raises(PermissionDenied):
        export_project(engine, annotator, "proj", format="trl", out=tmp_path / "x.jsonl")
    with pytest.raises(ExportError, match="format 'csv'"):
        export_project(engine, SYSTEM, "proj", format="csv", out=tmp_path / "x.jsonl")
    with pytest.raises(ExportError, match=r"\.jsonl or \.parquet"):
        export_project(engine, SYSTEM, "proj", format="trl", out=tmp_path / "x.csv")
    with pytest.raises(ExportError, match="aggregate"):
        export_project(engine, SYSTEM, "proj", format="trl", out=tmp_path / "x.jsonl", options=ExportOptions(aggregate="mean"))
    with pytest.raises(ExportError, match="rating dimension 'nope'"):
        export_project(engine, SYSTEM, "proj", format="trl", out=tmp_path / "x.jsonl", options=ExportOptions(from_ratings=True, rating_dimension="nope"))
    (tmp_path / "exists.jsonl").write_text("keep me")
    with pytest.raises(ExportError, match="exists"):
        export_project(engine, SYSTEM, "proj", format="trl", out=tmp_path / "exists.jsonl")
    assert (tmp_path / "exists.jsonl").read_text() == "keep me"
    export_project(engine, SYSTEM, "proj", format="trl", out=tmp_path / "exists.jsonl", overwrite=True, options=ExportOptions(test_size=0))
    assert len(pd.read_json(tmp_path / "exists.jsonl", lines=True)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.jsonl", "exists.manifest.json"]


def test_read_export_rows_names_the_bad_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n{oops\n')
    with pytest.raises(ExportError, match="line 2"):
        read_export_rows(bad)
    with pytest.raises(ExportError, match="no such file"):
        read_export_rows(tmp_path / "missing.jsonl")


def test_cli_export(engine, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from rlhf.cli import app

    small_project(engine)
    monkeypatch.setenv("RLHF_DATABASE_URL", engine.url.render_as_string(hide_password=False))
    out = tmp_path / "cli.jsonl"
    result = CliRunner().invoke(app, ["export", "--project", "proj", "--format", "trl", "--out", str(out), "--test-size", "0"])
    assert result.exit_code == 0, result.output
    assert "2 rows" in result.output and out.is_file()
    result = CliRunner().invoke(app, ["export", "--project", "proj", "--format", "trl", "--out", str(tmp_path / "y.jsonl"), "--min-votes", "9"])
    assert result.exit_code == 2 and "no usable preference pairs" in result.output
    result = CliRunner().invoke(app, ["export", "--project", "nope", "--out", str(tmp_path / "z.jsonl")])
    assert result.exit_code == 2 and "no project 'nope'" in result.output


def test_canonical_lines_are_the_canonical_json_of_each_record():
    from rlhf.export import canonical_json_lines, rows_hash
    from rlhf.hashing import canonical_json, content_hash

    rows = pd.DataFrame(
        {
            "prompt": ['say "hi"\n', "ünïcødé ✓", None, "100%"],
            "chosen": [[{"role": "assistant", "content": "a\tb"}], [{"role": "assistant", "content": ""}], [], [{"content": "x", "role": "user"}]],
            "margin": [0.5, float("nan"), 1e-20, -3.0],
            "votes": [1, 2, 3, 4],
            "task_id": pd.array([1, None, 3, 4], dtype="Int64"),
            "tie": [True, False, True, False],
            "weird key %s": ["x", "y", "z", "w"],
        }
    )
    records = [{k: (None if (isinstance(v, float) and v != v) or v is pd.NA else v) for k, v in r.items()} for r in rows.to_dict("records")]
    assert canonical_json_lines(rows) == [canonical_json(r) for r in records]
    assert rows_hash(rows) == content_hash(records)
