"""Prompts-only records (write tasks) alone and mixed with records of other shapes in one file; fuzzed prompts-only files."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlhf.importer import ImportFormatError, import_file
from rlhf.importer.shapes import flatten_messages
from rlhf.projects import create_project
from rlhf.roles import SYSTEM
from rlhf.schema import Task
from test_demonstrations import all_rows, write_file
from test_importer import table_counts

REPLIES = [{"text": "Hello there.", "model": "m1"}, {"text": "Hi!", "model": "m2"}]


def tasks_by_kind(engine) -> dict[str, int]:
    counts: dict[str, int] = {}
    for task in all_rows(engine, Task):
        counts[task.kind] = counts.get(task.kind, 0) + 1
    return counts


@pytest.mark.parametrize("order", ["prompts-first", "responses-first"])
def test_prompts_only_records_mix_with_response_records_in_either_order(engine, tmp_path, order):
    create_project(engine, SYSTEM, "demo")  # rate + compare
    alone = [{"prompt": "Write a haiku"}, {"prompt": [{"role": "user", "content": "Name a river"}], "category": "geo"}]
    answered = [{"prompt": "Say hi", "responses": REPLIES}, {"prompt": "Say bye", "response": "Bye.", "model": "m1"}]
    records = alone + answered if order == "prompts-first" else answered + alone
    summary = import_file(engine, write_file(tmp_path, records), "demo")
    assert (summary.write_tasks_added, summary.responses_added, summary.rating_tasks_added) == (2, 3, 3)
    assert tasks_by_kind(engine) == {"write": 2, "rating": 3, "pairwise": 1}


def test_a_prompt_given_alone_and_with_replies_gets_one_write_task_starting_from_its_first_reply(engine, tmp_path):
    create_project(engine, SYSTEM, "demo")
    summary = import_file(engine, write_file(tmp_path, [{"prompt": "Say hi", "responses": REPLIES}, {"prompt": "Say hi"}]), "demo")
    assert summary.write_tasks_added == 1
    [write] = [t for t in all_rows(engine, Task) if t.kind == "write"]
    assert write.response_a_id is not None  # pre-filled: the annotator edits the imported reply


def test_a_mix_that_cannot_be_honoured_is_refused_naming_the_line_and_writes_nothing(engine, tmp_path):
    create_project(engine, SYSTEM, "demo")
    before = table_counts(engine)
    records = [{"prompt": "Write a haiku"}, {"prompt": "Say hi", "responses": REPLIES, "chosen": "Hi!", "rejected": "Go."}]
    with pytest.raises(ImportFormatError, match=r"prompts.jsonl:2: field 'chosen': carries both 'responses'"):
        import_file(engine, write_file(tmp_path, records), "demo")
    records = [{"prompt": "Say hi", "responses": REPLIES}, {"prompt": "Write a haiku", "catgory": "x"}]
    with pytest.raises(ImportFormatError, match=r"prompts.jsonl:2: no known shape fits the columns \[catgory, prompt\]"):
        import_file(engine, write_file(tmp_path, records), "demo")
    assert table_counts(engine) == before


# --------------------------------------------------------------------------- fuzz

ROLES = st.sampled_from(["user", "assistant", "system", "tool", ""])
TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=10)
MESSAGES = st.lists(st.fixed_dictionaries({"role": ROLES, "content": TEXT}), max_size=3)
PROMPT_ONLY = st.fixed_dictionaries(
    {"prompt": TEXT | MESSAGES},
    optional={"category": TEXT | st.none() | st.integers(), "meta": st.none() | st.dictionaries(TEXT, TEXT | st.integers(), max_size=2) | TEXT},
)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _expected_prompt(record: dict) -> str | None:
    """The prompt's stored text when the record is valid, None when it must be refused (a loose oracle)."""
    prompt = record["prompt"]
    if isinstance(prompt, list):
        if not prompt or not any(m["role"] == "user" for m in prompt):
            return None
        return flatten_messages(prompt)
    return prompt


@FUZZ
@given(records=st.lists(PROMPT_ONLY, min_size=1, max_size=6))
def test_a_prompts_only_file_makes_one_write_task_per_distinct_prompt_or_is_refused_naming_a_line(engine, records):
    before = table_counts(engine)
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "fuzz.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        try:
            summary = import_file(engine, path, "fuzz")
        except ImportFormatError as exc:
            assert str(path) in str(exc) and ":" in str(exc).removeprefix(str(path))  # names the file and its line
            assert table_counts(engine) == before
            return
    assert all(_expected_prompt(r) is not None for r in records)  # every record it kept was a valid prompt
    assert summary.responses_added == 0 and summary.rating_tasks_added == 0 and summary.pairwise_tasks_added == 0
    # One write task per new prompt; a prompt an earlier example stored already has its task.
    assert (summary.write_tasks_added, summary.tasks_skipped) == (summary.prompts_added, summary.prompts_skipped)
