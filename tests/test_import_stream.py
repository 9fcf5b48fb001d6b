"""The reader process of large imports: the same rows as reading in process, its errors, and its crash."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
import sys
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session

import rlhf.importer.stream as stream
from rlhf.db import init_database, make_engine
from rlhf.importer import ImportFormatError, import_file
from rlhf.schema import Prompt, Response, Task
from test_importer import table_counts, write_jsonl


def _records(n: int) -> list[dict]:
    return [
        {
            "prompt": f"question {i}" if i % 3 else [{"role": "user", "content": f"chat question {i}"}],
            "category": f"c{i % 4}",
            "responses": [{"text": f"answer {j} to {i}", "model": f"m{j}", "meta": {"temperature": 0.1 * j, "seed": j}} for j in range(1 + i % 5)],
        }
        for i in range(n)
    ] + [
        {"prompt": "question 1", "responses": [{"text": "a late extra answer", "model": "m9"}]},  # merges into an earlier prompt
        {"prompt": "twice", "responses": [{"text": "same", "model": "m"}, {"text": "same", "model": "m"}, {"text": "other", "model": "m"}]},
    ]


def _snapshot(engine) -> dict[str, list]:
    """Every imported row by content, ids translated to hashes (ids may differ between databases)."""
    with Session(engine) as session:
        prompts = {p.id: p.content_hash for p in session.exec(select(Prompt)).scalars()}
        responses = {r.id: (prompts[r.prompt_id], r.content_hash) for r in session.exec(select(Response)).scalars()}
        response_rows = sorted(
            (prompts[r.prompt_id], r.content_hash, r.text, r.model_name, json.dumps(r.generation_params, sort_keys=True), r.round)
            for r in session.exec(select(Response)).scalars()
        )
        task_rows = sorted(
            (t.kind, t.content_hash, t.shuffle_key, prompts[t.prompt_id], responses[t.response_a_id], responses.get(t.response_b_id))
            for t in session.exec(select(Task)).scalars()
        )
    return {"prompts": sorted(prompts.values()), "responses": response_rows, "tasks": task_rows}


def test_reader_process_writes_exactly_what_reading_in_process_writes(db_url, tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "big.jsonl", _records(60))
    in_process = make_engine(f"sqlite:///{tmp_path / 'in_process.db'}")
    init_database(in_process)
    assert not stream.use_reader_process(path.stat().st_size)
    expected = import_file(in_process, path, "p", chunk_prompts=7)

    engine = make_engine(db_url)
    init_database(engine)
    monkeypatch.setattr(stream, "READER_PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(stream, "available_cpus", lambda: 2)
    started = []
    real_popen = subprocess.Popen
    monkeypatch.setattr(stream.subprocess, "Popen", lambda *a, **k: started.append(a) or real_popen(*a, **k))
    summary = import_file(engine, path, "p", chunk_prompts=7)

    assert started, "the reader process was not used"
    assert summary.counts() == expected.counts()
    assert _snapshot(engine) == _snapshot(in_process)
    # ... and a second import through it adds nothing.
    again = import_file(engine, path, "p", chunk_prompts=7)
    assert again.rows_added == 0 and again.responses_skipped == summary.responses_added + summary.responses_skipped
    engine.dispose()
    in_process.dispose()


def test_bad_line_read_by_the_reader_process_names_the_place_and_writes_nothing(sqlite_engine, tmp_path, monkeypatch):
    monkeypatch.setattr(stream, "READER_PROCESS_MIN_BYTES", 0)
    monkeypatch.setattr(stream, "available_cpus", lambda: 2)
    import_file(sqlite_engine, write_jsonl(tmp_path / "first.jsonl", _records(5)), "p")
    before = table_counts(sqlite_engine)
    records = _records(30)
    records[20]["responses"][0]["model"] = ""
    path = write_jsonl(tmp_path / "bad.jsonl", records)
    with pytest.raises(ImportFormatError) as raised:
        import_file(sqlite_engine, path, "p", chunk_prompts=4)  # the error comes after several chunks were written
    assert str(raised.value) == f"{path}:21: field 'responses[0].model': empty text"
    assert (raised.value.path, raised.value.line, raised.value.field) == (str(path), 21, "responses[0].model")
    assert table_counts(sqlite_engine) == before


def test_a_reader_process_that_dies_is_an_error_not_an_early_end():
    dying = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.stderr.write('out of memory\\n'); sys.exit(3)"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    with pytest.raises(stream.ReaderProcessError, match=r"stopped unexpectedly \(exit code 3\) out of memory"):
        list(stream._received(dying))
    dying.stdout.close()
    dying.stderr.close()


def test_reader_process_is_for_large_files_on_more_than_one_core(monkeypatch):
    monkeypatch.setattr(stream, "available_cpus", lambda: 2)
    assert stream.use_reader_process(stream.READER_PROCESS_MIN_BYTES)
    assert not stream.use_reader_process(stream.READER_PROCESS_MIN_BYTES - 1)
    monkeypatch.setattr(stream, "available_cpus", lambda: 1)
    assert not stream.use_reader_process(10 * stream.READER_PROCESS_MIN_BYTES)


def test_prepared_prompts_carry_the_plan_the_writer_would_make(tmp_path):
    from rlhf.importer.pairing import orient_pair, pairwise_task_hash, rating_task_hash, task_draw
    from rlhf.importer.readers import open_source

    path = write_jsonl(tmp_path / "few.jsonl", _records(5))
    from rlhf.importer.pairing import TaskPlanning

    planning = TaskPlanning(seed=1234, round=0, max_pairs_per_prompt=6, make_rating_tasks=True)
    with open_source(Path(path)) as source:
        chunks = list(stream.read_chunks(source, 10, planning, prepare=True))
    prompt = chunks[0][1][4]  # five responses: ten candidate pairs, six chosen
    hashes = [r.content_hash for r in prompt.responses]
    tasks, repeats = prompt.task_plan
    assert repeats == 0 and [t[0] for t in tasks] == ["rating"] * 5 + ["pairwise"] * 6
    digest = rating_task_hash(prompt.content_hash, hashes[0])
    assert tasks[0] == ("rating", digest, task_draw(1234, digest)[0], hashes[0], None)
    kind, digest, key, a, b = tasks[5]
    assert digest == pairwise_task_hash(prompt.content_hash, a, b) and key == task_draw(1234, digest)[0]
    assert (a, b) == orient_pair(task_draw(1234, digest)[1], a, b)
    uses = Counter(h for t in tasks[5:] for h in t[3:])
    assert sorted(uses.values()) == [2, 2, 2, 3, 3]  # balanced: every response compared at least twice
    assert prompt.responses[1].encoded_json == (json.dumps(prompt.responses[1].generation_params), None)
