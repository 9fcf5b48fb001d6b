"""Import: every format and shape, chat prompts, idempotency, pair cap, rounds, labels, and bad input
leaving every table unchanged (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session, SQLModel

from rlhf.importer import ImportFormatError, import_file, import_records
from rlhf.importer.pairing import SHUFFLE_KEY_MASK, task_draw
from rlhf.progress import Cancelled, RecordingReporter
from rlhf.roles import PermissionDenied
from rlhf.schema import ImportRecord, Preference, Project, Prompt, Response, Task, User

DATA = Path(__file__).parent / "data" / "import"


def table_counts(engine) -> dict[str, int]:
    """Rows in every table of the schema: the fingerprint a failed import must not change."""
    with engine.connect() as connection:
        return {
            table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
            for table in SQLModel.metadata.sorted_tables
        }


def rows(engine, model, *where):
    with Session(engine) as session:
        statement = select(model).where(*where) if where else select(model)
        return list(session.scalars(statement))


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def prompt_record(prompt, n: int, model_prefix: str = "m", text_prefix: str = "answer") -> dict:
    return {"prompt": prompt, "responses": [{"text": f"{text_prefix} {i} to {prompt}", "model": f"{model_prefix}{i}"} for i in range(n)]}


# ---------------------------------------------------------------- shape (a), JSONL


def test_jsonl_responses_shape_imports_prompts_responses_and_tasks(engine):
    summary = import_file(engine, DATA / "responses.jsonl", "demo")

    assert (summary.records, summary.prompts_added, summary.responses_added) == (3, 3, 9)
    assert summary.rating_tasks_added == 9
    assert summary.pairwise_tasks_added == 6 + 1 + 3  # C(4,2) + C(2,2) + C(3,2), all under the cap of 6
    assert summary.project_created and summary.import_id is not None
    project = rows(engine, Project, Project.name == "demo")[0]
    prompts = {p.category: p for p in rows(engine, Prompt, Prompt.project_id == project.id)}
    assert prompts["geography"].text == "What is the capital of France?"
    assert prompts["geography"].messages is None
    assert prompts["geography"].meta == {"source": "fixture"}
    paris = rows(engine, Response, Response.text == "Paris.")[0]
    assert (paris.model_name, paris.round, paris.generation_params) == ("alpha", 0, {"temperature": 0.7, "seed": 1})
    tasks = rows(engine, Task, Task.project_id == project.id)
    assert all(t.annotation_count == 0 and not t.is_gold for t in tasks)
    assert all((t.response_b_id is None) == (t.kind == "rating") for t in tasks)
    record = rows(engine, ImportRecord)[0]
    assert record.counts["responses_added"] == 9 and len(record.file_hash) == 64


def test_chat_prompt_keeps_messages_and_a_flat_text(engine):
    import_file(engine, DATA / "responses.jsonl", "demo")

    chat = rows(engine, Prompt, Prompt.category == "chat")[0]
    assert chat.messages == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "Name a primary colour."},
    ]
    assert chat.text == "system: Answer briefly.\n\nuser: Name a primary colour."


def test_second_import_of_the_same_file_adds_nothing(engine):
    first = import_file(engine, DATA / "responses.jsonl", "demo")
    before = table_counts(engine)

    second = import_file(engine, DATA / "responses.jsonl", "demo")

    after = table_counts(engine)
    assert after.pop("importrecord") == before.pop("importrecord") + 1
    assert after == before
    assert second.rows_added == 0 and not second.project_created
    assert (second.prompts_skipped, second.responses_skipped, second.tasks_skipped) == (3, 9, 9)
    assert second.file_hash == first.file_hash


def test_shuffle_keys_are_seeded_from_the_task_hash(engine):
    import_file(engine, DATA / "responses.jsonl", "demo")

    tasks = rows(engine, Task)
    assert all(t.shuffle_key == task_draw(0, t.content_hash)[0] for t in tasks)
    assert all(0 <= t.shuffle_key <= SHUFFLE_KEY_MASK for t in tasks)
    assert len({t.shuffle_key for t in tasks}) == len(tasks)


def test_no_ratings_option(sqlite_engine):
    summary = import_file(sqlite_engine, DATA / "responses.jsonl", "demo", make_rating_tasks=False)

    assert summary.rating_tasks_added == 0
    assert {t.kind for t in rows(sqlite_engine, Task)} == {"pairwise"}


# ---------------------------------------------------------------- shape (b), CSV / Parquet


def test_csv_rows_shape_groups_rows_by_prompt(engine):
    summary = import_file(engine, DATA / "rows.csv", "demo")

    assert (summary.records, summary.prompts_added, summary.responses_added) == (5, 2, 5)
    assert summary.pairwise_tasks_added == 3 + 1
    math = rows(engine, Prompt, Prompt.category == "math")[0]
    answers = {r.model_name: r for r in rows(engine, Response, Response.prompt_id == math.id)}
    assert answers["alpha"].text == "4"
    assert answers["alpha"].generation_params == {"temperature": 0.7, "top_p": 0.9}
    assert answers["gamma"].generation_params == {"temperature": 1.2}  # the empty top_p cell is absent


def test_parquet_rows_and_responses_shapes(sqlite_engine, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = tmp_path / "rows.parquet"
    pq.write_table(
        pa.table({"prompt": ["p1", "p1", "p2"], "text": ["a", "b", "c"], "model": ["x", "y", "x"], "temperature": [0.5, None, 1.0]}),
        flat,
        row_group_size=2,
    )
    nested = tmp_path / "responses.parquet"
    pq.write_table(
        pa.Table.from_pylist(
            [
                {"prompt": [{"role": "user", "content": "hi"}], "responses": [{"text": "hello", "model": "x"}, {"text": "hey", "model": "y"}]},
                {"prompt": [{"role": "user", "content": "bye"}], "responses": [{"text": "ciao", "model": "x"}]},
            ]
        ),
        nested,
    )

    flat_summary = import_file(sqlite_engine, flat, "flat")
    nested_summary = import_file(sqlite_engine, nested, "nested")

    assert (flat_summary.prompts_added, flat_summary.responses_added, flat_summary.pairwise_tasks_added) == (2, 3, 1)
    b = rows(sqlite_engine, Response, Response.text == "b")[0]
    assert b.generation_params is None  # the null temperature is not a parameter
    assert (nested_summary.prompts_added, nested_summary.responses_added) == (2, 3)
    assert rows(sqlite_engine, Prompt, Prompt.text == "user: hi")[0].messages == [{"role": "user", "content": "hi"}]


# ---------------------------------------------------------------- shape (c), preferences


def test_preference_rows_import_responses_and_pairs_without_labels(engine):
    summary = import_file(engine, DATA / "preferences.jsonl", "prefs")

    assert (summary.prompts_added, summary.responses_added, summary.pairwise_tasks_added) == (3, 6, 3)
    assert summary.labels_added == 0
    assert table_counts(engine)["preference"] == 0
    models = Counter(r.model_name for r in rows(engine, Response))
    assert models == {"alpha": 1, "beta": 1, "unknown": 4}


def test_as_labels_stores_external_preferences_that_do_not_count_as_annotations(engine):
    summary = import_file(engine, DATA / "preferences.jsonl", "prefs", as_labels="hh-source")

    assert summary.labels_added == 3
    source = rows(engine, User, User.username == "hh-source")[0]
    assert source.role == "external" and source.password_hash is None
    with Session(engine) as session:
        for preference in session.scalars(select(Preference)):
            task = session.get(Task, preference.task_id)
            winner = session.get(Response, task.response_a_id if preference.choice == "a" else task.response_b_id)
            loser = session.get(Response, task.response_b_id if preference.choice == "a" else task.response_a_id)
            assert preference.user_id == source.id and preference.strength == 1
            assert len(winner.text) > len(loser.text)  # in the fixture, every chosen answer is the longer one
            assert task.annotation_count == 0

    again = import_file(engine, DATA / "preferences.jsonl", "prefs", as_labels="hh-source")
    assert (again.labels_added, again.labels_skipped) == (0, 3)


def test_labels_get_their_pair_task_even_with_no_pairs_allowed(sqlite_engine):
    summary = import_file(sqlite_engine, DATA / "preferences.jsonl", "prefs", as_labels="src", max_pairs_per_prompt=0)

    assert summary.pairwise_tasks_added == 3 and summary.labels_added == 3


def test_chosen_side_is_a_or_b_by_a_seeded_coin(sqlite_engine, tmp_path):
    records = [{"prompt": f"question {i}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(40)]
    import_file(sqlite_engine, write_jsonl(tmp_path / "p.jsonl", records), "prefs", as_labels="src")

    choices = Counter(p.choice for p in rows(sqlite_engine, Preference))
    assert choices["a"] > 5 and choices["b"] > 5  # not always the same side


def test_conversational_preferences(engine):
    summary = import_file(engine, DATA / "preferences_chat.jsonl", "chat", as_labels="judge")

    assert (summary.prompts_added, summary.responses_added, summary.labels_added) == (2, 4, 2)
    merci = rows(engine, Response, Response.text == "Merci.")[0]
    prompt = rows(engine, Prompt, Prompt.id == merci.prompt_id)[0]
    assert prompt.messages[-1] == {"role": "user", "content": "Translate 'thank you' into French."}


def test_identical_chosen_and_rejected_makes_no_pair(sqlite_engine, tmp_path):
    path = write_jsonl(tmp_path / "same.jsonl", [{"prompt": "q", "chosen": "same", "rejected": "same"}])

    summary = import_file(sqlite_engine, path, "p", as_labels="src")

    assert (summary.responses_added, summary.responses_skipped, summary.identical_pairs) == (1, 1, 1)
    assert summary.pairwise_tasks_added == 0 and summary.labels_added == 0


def test_as_labels_refuses_a_human_account(engine):
    with Session(engine) as session:
        session.add(User(username="alice", role="annotator"))
        session.commit()
    before = table_counts(engine)

    with pytest.raises(ImportFormatError, match="as_labels.*annotator"):
        import_file(engine, DATA / "preferences.jsonl", "prefs", as_labels="alice")

    assert table_counts(engine) == before


# ---------------------------------------------------------------- datasets directories and Arrow


def test_datasets_directory_with_splits(engine, tmp_path):
    import datasets

    records = [json.loads(line) for line in (DATA / "preferences.jsonl").read_text().splitlines()]
    for record in records:
        record.setdefault("chosen_model", None)
        record.setdefault("rejected_model", None)
        record.setdefault("margin", None)
    dataset = datasets.DatasetDict({"train": datasets.Dataset.from_list(records[:2]), "test": datasets.Dataset.from_list(records[2:])})
    dataset.save_to_disk(str(tmp_path / "ds"))

    summary = import_file(engine, tmp_path / "ds", "ds", as_labels="src")

    assert (summary.records, summary.prompts_added, summary.labels_added) == (3, 3, 3)
    assert Counter(r.model_name for r in rows(engine, Response))["unknown"] == 4


def test_single_dataset_directory_and_arrow_file(sqlite_engine, tmp_path):
    import datasets

    records = [json.loads(line) for line in (DATA / "responses.jsonl").read_text().splitlines()]
    plain = [r for r in records if isinstance(r["prompt"], str)]
    for record in plain:
        record.pop("meta", None)
        record.pop("category", None)
        for response in record["responses"]:
            response.pop("meta", None)
    dataset = datasets.Dataset.from_list(plain)
    dataset.save_to_disk(str(tmp_path / "ds"))
    arrow_files = sorted((tmp_path / "ds").glob("*.arrow"))

    summary = import_file(sqlite_engine, tmp_path / "ds", "ds")
    again = import_file(sqlite_engine, arrow_files[0], "ds")

    assert (summary.prompts_added, summary.responses_added) == (2, 7)
    assert again.rows_added == 0 and again.responses_skipped == 7


# ---------------------------------------------------------------- pairs: cap, balance, determinism, rounds


def test_pair_cap_is_balanced_and_deterministic(sqlite_engine, tmp_path):
    path = write_jsonl(tmp_path / "five.jsonl", [prompt_record("q", 5)])

    summary = import_file(sqlite_engine, path, "a", max_pairs_per_prompt=3)
    import_file(sqlite_engine, path, "b", max_pairs_per_prompt=3)

    assert summary.pairwise_tasks_added == 3
    by_project = {}
    with Session(sqlite_engine) as session:
        for project in session.scalars(select(Project)):
            pairs = []
            for task in session.scalars(select(Task).where(Task.project_id == project.id, Task.kind == "pairwise")):
                a, b = session.get(Response, task.response_a_id), session.get(Response, task.response_b_id)
                pairs.append((a.content_hash, b.content_hash, task.shuffle_key))
            by_project[project.name] = sorted(pairs)
    assert by_project["a"] == by_project["b"]  # same seed, same pairs, same sides, same keys
    usage = Counter(h for a, b, _ in by_project["a"] for h in (a, b))
    assert len(usage) == 5 and max(usage.values()) == 2  # 6 slots over 5 responses: everyone compared


def test_pair_cap_zero_means_no_pairs(sqlite_engine):
    summary = import_file(sqlite_engine, DATA / "responses.jsonl", "demo", max_pairs_per_prompt=0)

    assert summary.pairwise_tasks_added == 0 and summary.rating_tasks_added == 9


def test_project_seed_changes_the_shuffle_keys(sqlite_engine, tmp_path):
    from rlhf.projects import create_project
    from rlhf.roles import SYSTEM

    create_project(sqlite_engine, SYSTEM, "seeded", seed=7)
    import_file(sqlite_engine, DATA / "responses.jsonl", "seeded")
    import_file(sqlite_engine, DATA / "responses.jsonl", "default")

    keys = {}
    with Session(sqlite_engine) as session:
        for project in session.scalars(select(Project)):
            keys[project.name] = {t.content_hash: t.shuffle_key for t in session.scalars(select(Task).where(Task.project_id == project.id))}
    assert keys["seeded"].keys() == keys["default"].keys()
    assert keys["seeded"] != keys["default"]
    assert all(key == task_draw(7, digest)[0] for digest, key in keys["seeded"].items())


def test_a_later_file_adds_pairs_up_to_the_cap_across_files(sqlite_engine, tmp_path):
    first = write_jsonl(tmp_path / "one.jsonl", [prompt_record("q", 2, model_prefix="a")])
    second = write_jsonl(tmp_path / "two.jsonl", [prompt_record("q", 3, model_prefix="b", text_prefix="other")])

    one = import_file(sqlite_engine, first, "p", max_pairs_per_prompt=4)
    two = import_file(sqlite_engine, second, "p", max_pairs_per_prompt=4)

    assert one.pairwise_tasks_added == 1
    assert two.pairwise_tasks_added == 3  # capped at 4 for the prompt, of the C(5,2) = 10 possible
    assert table_counts(sqlite_engine)["task"] == 5 + 4


def test_rows_of_one_prompt_spread_over_chunks(sqlite_engine, tmp_path):
    records = [{"prompt": f"p{i % 3}", "response": f"r{i}", "model": f"m{i}"} for i in range(12)]
    path = write_jsonl(tmp_path / "rows.jsonl", records)

    summary = import_file(sqlite_engine, path, "p", chunk_prompts=2, max_pairs_per_prompt=3)

    assert (summary.prompts_added, summary.responses_added, summary.pairwise_tasks_added) == (3, 12, 9)
    again = import_file(sqlite_engine, path, "p", chunk_prompts=2, max_pairs_per_prompt=3)
    assert again.rows_added == 0


def test_round_pairing_pairs_new_responses_with_the_previous_round(engine):
    import_records(engine, [prompt_record("q", 4, model_prefix="base")], "loop")

    summary = import_records(
        engine,
        [prompt_record("q", 2, model_prefix="policy", text_prefix="better")],
        "loop",
        round=1,
        pair_against_round=0,
        source_name="round-1",
    )

    assert summary.responses_added == 2 and summary.rating_tasks_added == 2
    assert summary.pairwise_tasks_added == 6  # 2 new x 4 old = 8 candidates, capped at 6
    with Session(engine) as session:
        rounds = {r.id: r.round for r in session.scalars(select(Response))}
        new_pairs = [t for t in session.scalars(select(Task).where(Task.kind == "pairwise")) if {rounds[t.response_a_id], rounds[t.response_b_id]} != {0}]
        assert len(new_pairs) == 6
        assert all({rounds[t.response_a_id], rounds[t.response_b_id]} == {0, 1} for t in new_pairs)
        usage = Counter(i for t in new_pairs for i in (t.response_a_id, t.response_b_id) if rounds[i] == 1)
        assert sorted(usage.values()) == [3, 3]
    assert rows(engine, ImportRecord)[-1].source == "round-1"


def test_round_without_pair_against_pairs_within_the_round(sqlite_engine):
    import_records(sqlite_engine, [prompt_record("q", 3)], "loop")
    summary = import_records(sqlite_engine, [prompt_record("q", 3, model_prefix="p", text_prefix="new")], "loop", round=1)

    assert summary.pairwise_tasks_added == 3  # only pairs within round 1


def test_import_records_validates_options_and_records(sqlite_engine):
    before = table_counts(sqlite_engine)
    with pytest.raises(ImportFormatError, match="pair_against_round"):
        import_records(sqlite_engine, [prompt_record("q", 2)], "loop", round=1, pair_against_round=1)
    with pytest.raises(ImportFormatError, match=r"gen:2: field 'responses\[0\]\.text': empty text"):
        import_records(sqlite_engine, [prompt_record("q", 2), {"prompt": "r", "responses": [{"text": " ", "model": "m"}]}], "loop", source_name="gen")
    assert table_counts(sqlite_engine) == before


def test_import_records_consumes_a_generator(sqlite_engine):
    summary = import_records(sqlite_engine, (prompt_record(f"q{i}", 2) for i in range(5)), "gen", chunk_prompts=2)

    assert (summary.prompts_added, summary.responses_added, summary.pairwise_tasks_added) == (5, 10, 5)


# ---------------------------------------------------------------- permissions, progress, cancellation


def test_annotators_may_not_import(sqlite_engine):
    annotator = User(username="bob", role="annotator", id=5)

    with pytest.raises(PermissionDenied):
        import_file(sqlite_engine, DATA / "responses.jsonl", "demo", actor=annotator)
    with pytest.raises(PermissionDenied):
        import_records(sqlite_engine, [prompt_record("q", 2)], "demo", actor=annotator)


def test_progress_is_reported_and_cancel_rolls_everything_back(sqlite_engine, tmp_path):
    path = write_jsonl(tmp_path / "many.jsonl", [prompt_record(f"q{i}", 2) for i in range(10)])
    reporter = RecordingReporter()
    import_file(sqlite_engine, path, "p", reporter=reporter, chunk_prompts=3)
    assert [done for done, _, _ in reporter.progress_calls] == [3, 6, 9, 10]

    before = table_counts(sqlite_engine)
    stopper = RecordingReporter(stop_after=2)
    other = write_jsonl(tmp_path / "other.jsonl", [prompt_record(f"other {i}", 2) for i in range(10)])
    with pytest.raises(Cancelled):
        import_file(sqlite_engine, other, "p", reporter=stopper, chunk_prompts=3)
    assert table_counts(sqlite_engine) == before


# ---------------------------------------------------------------- bad input: a clear error, nothing written

GOOD = json.dumps(prompt_record("fine", 2))


def _bad_cases() -> list[tuple[str, str, bytes, dict, str]]:
    """(case id, file name, bytes, import kwargs, expected message fragment)."""

    def jl(*lines) -> bytes:
        return ("\n".join(lines) + "\n").encode("utf-8")

    chunked_late_error = [json.dumps(prompt_record(f"q{i}", 3)) for i in range(7)] + ['{"prompt": "late", "responses": [{"text": "x", "model": 3}]}']
    return [
        ("malformed-json", "f.jsonl", jl(GOOD, GOOD, '{"prompt": "x", "responses": ['), {}, "f.jsonl:3: malformed JSON"),
        # Each record's shape is its own (a prompt alone is a write task), so a misspelt field fits no shape.
        ("misspelt-field", "f.jsonl", jl(GOOD, '{"prompt": "x", "respones": []}'), {}, "f.jsonl:2: no known shape fits the columns [prompt, respones]"),
        ("two-shapes", "f.jsonl", jl(GOOD, '{"prompt": "x", "responses": [], "chosen": "a"}'), {}, "f.jsonl:2: field 'chosen': carries both 'responses'"),
        ("misnamed-column", "f.jsonl", jl('{"promt": "x", "responses": []}'), {}, "f.jsonl:1: field 'prompt': missing column"),
        ("no-shape", "f.jsonl", jl('{"prompt": "x", "answer": "y"}'), {}, "no known shape"),
        (
            "empty-text",
            "f.jsonl",
            jl(GOOD, json.dumps({"prompt": "p", "responses": [{"text": "a", "model": "m"}, {"text": "b", "model": "m"}, {"text": "", "model": "m"}]})),
            {},
            "f.jsonl:2: field 'responses[2].text': empty text",
        ),
        ("wrong-type", "f.jsonl", jl('{"prompt": "x", "responses": [{"text": "a", "model": 7}]}'), {}, "f.jsonl:1: field 'responses[0].model': expected a string"),
        ("responses-not-list", "f.jsonl", jl('{"prompt": "x", "responses": "a"}'), {}, "field 'responses': expected a list"),
        ("prompt-number", "f.jsonl", jl('{"prompt": 12, "responses": []}'), {}, "field 'prompt': expected a string or a list"),
        ("chat-no-role", "f.jsonl", jl('{"prompt": [{"content": "hi"}], "responses": []}'), {}, "field 'prompt[0].role': missing"),
        ("nan", "f.jsonl", jl('{"prompt": "x", "responses": [{"text": "a", "model": "m", "meta": {"t": NaN}}]}'), {}, "f.jsonl:1: malformed JSON"),
        ("nul", "f.jsonl", jl('{"prompt": "x\\u0000y", "responses": []}'), {}, "field 'prompt': contains a NUL character"),
        ("surrogate", "f.jsonl", jl('{"prompt": "x", "responses": [{"text": "\\ud800", "model": "m"}]}'), {}, "field 'responses[0].text': not valid Unicode"),
        ("not-utf8", "f.jsonl", GOOD.encode() + b"\n" + b'{"prompt": "\xff"}\n', {}, "f.jsonl:2: not valid UTF-8"),
        ("json-array", "f.json", b'[{"prompt": "x", "responses": []}]\n', {}, "write one object per line"),
        ("not-object", "f.jsonl", jl(GOOD, "42"), {}, "f.jsonl:2: expected a JSON object"),
        ("empty-file", "f.jsonl", b"\n\n", {}, "no records"),
        ("unsupported", "f.txt", b"prompt,response\n", {}, "unsupported format '.txt'"),
        ("too-large", "f.jsonl", jl(GOOD), {"max_bytes": 10}, "over the import limit of 10 bytes"),
        ("model-too-long", "f.jsonl", jl(json.dumps({"prompt": "x", "responses": [{"text": "a", "model": "m" * 301}]})), {}, "longer than 300"),
        ("late-error-after-chunks", "f.jsonl", jl(*chunked_late_error), {"chunk_prompts": 2}, "f.jsonl:8: field 'responses[0].model'"),
        ("csv-missing-model", "f.csv", b"prompt,response\nq,a\n", {}, "f.csv:1: field 'model': missing column"),
        ("csv-ragged", "f.csv", b"prompt,response,model\nq,a,m\nq,b\n", {}, "f.csv:3: 2 cells, but the header has 3 columns"),
        ("csv-duplicate-header", "f.csv", b"prompt,prompt,model\nq,a,m\n", {}, "appears twice"),
        ("csv-empty-response", "f.csv", b"prompt,response,model\nq,a,m\nq,  ,m\n", {}, "f.csv:3: field 'response': empty text"),
        ("csv-bad-meta", "f.csv", b"prompt,response,model,meta\nq,a,m,{oops\n", {}, "f.csv:2: field 'meta': not valid JSON"),
        ("csv-empty", "f.csv", b"", {}, "empty file"),
        ("pref-missing-rejected", "f.jsonl", jl('{"prompt": "x", "chosen": "y"}'), {}, "field 'rejected'"),
        ("pref-bad-margin", "f.jsonl", jl('{"prompt": "x", "chosen": "y", "rejected": "z", "margin": "big"}'), {}, "field 'margin': expected a number"),
        (
            "pref-last-turn-user",
            "f.jsonl",
            jl(json.dumps({"prompt": [{"role": "user", "content": "q"}], "chosen": [{"role": "user", "content": "a"}], "rejected": "b"})),
            {},
            "field 'chosen[0].role': last turn must be the assistant's",
        ),
        ("bad-project-name", "f.jsonl", jl(GOOD), {"project": "  "}, "field 'project'"),
        ("bad-label-source", "f.jsonl", jl(GOOD), {"as_labels": ""}, "field 'as_labels': empty text"),
        ("negative-cap", "f.jsonl", jl(GOOD), {"max_pairs_per_prompt": -1}, "field 'max_pairs_per_prompt'"),
    ]


BAD_CASES = _bad_cases()


@pytest.mark.parametrize("case", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_raises_a_located_error_and_writes_nothing(engine, tmp_path, case):
    _, name, content, kwargs, expected = case
    import_file(engine, DATA / "responses.jsonl", "demo")  # the project exists and has rows
    before = table_counts(engine)
    path = tmp_path / name
    path.write_bytes(content)
    kwargs = dict(kwargs)
    project = kwargs.pop("project", "demo-new")

    with pytest.raises(ImportFormatError) as raised:
        import_file(engine, path, project, **kwargs)

    assert expected in str(raised.value)
    assert table_counts(engine) == before


def test_error_fields_are_separate_attributes(tmp_path, sqlite_engine):
    path = tmp_path / "f.jsonl"
    path.write_text(GOOD + "\n" + '{"prompt": "x", "responses": [{"text": "", "model": "m"}]}\n')

    with pytest.raises(ImportFormatError) as raised:
        import_file(sqlite_engine, path, "demo")

    assert (raised.value.path, raised.value.line, raised.value.field, raised.value.message) == (str(path), 2, "responses[0].text", "empty text")


def test_missing_path_and_non_dataset_directory(sqlite_engine, tmp_path):
    with pytest.raises(ImportFormatError, match="no such file"):
        import_file(sqlite_engine, tmp_path / "absent.jsonl", "demo")
    with pytest.raises(ImportFormatError, match="not a `datasets` directory"):
        import_file(sqlite_engine, tmp_path, "demo")
    assert table_counts(sqlite_engine)["project"] == 0


def test_corrupt_parquet_and_arrow_are_format_errors(sqlite_engine, tmp_path):
    for name in ("bad.parquet", "bad.arrow"):
        path = tmp_path / name
        path.write_bytes(b"PAR1 this is not really a parquet file")
        with pytest.raises(ImportFormatError, match="not a readable"):
            import_file(sqlite_engine, path, "demo")
    assert table_counts(sqlite_engine)["project"] == 0
