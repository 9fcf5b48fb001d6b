"""Importing ranked records as external rankings (`--as-labels`): three ways to give the order, bad orders refused whole."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from rlhf.db import session_scope
from rlhf.importer import import_file
from rlhf.importer.errors import ImportFormatError
from rlhf.projects import create_project
from rlhf.ranking import parse_ranking
from rlhf.roles import SYSTEM
from rlhf.schema import Ranking, Response, Task


def replies(n=3):
    return [{"text": f"reply {i}", "model": f"m{i}"} for i in range(n)]


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def stored(engine):
    """{task_id: groups of model names best first} of the imported rankings."""
    with session_scope(engine) as s:
        models = dict(s.execute(select(Response.id, Response.model_name)).all())
        tasks = dict(s.execute(select(Task.id, Task.response_ids).where(Task.kind == "ranking")).all())
        return {
            r.task_id: [sorted(models[tasks[r.task_id][c]] for c in group) for group in r.groups]
            for r in s.execute(select(Ranking)).scalars()
        }


@pytest.mark.parametrize(
    "record",
    [
        {"prompt": "p", "responses": replies(), "ranking": "C > A = B"},
        {"prompt": "p", "responses": replies(), "ranking": [[2], [0, 1]]},
        {"prompt": "p", "responses": [{**r, "rank": place} for r, place in zip(replies(), (2, 2, 1))]},
        {"prompt": "p", "ranking": "listed", "responses": [replies()[2], replies()[0], {**replies()[1], "tied_with_previous": True}]},
    ],
    ids=["letters", "groups", "rank-field", "listed-best-first"],
)
def test_every_way_of_giving_the_order_stores_the_same_ranking(engine, tmp_path, record):
    create_project(engine, SYSTEM, "ranked", rank_k_min=3, rank_k_max=4)
    summary = import_file(engine, write(tmp_path / "r.jsonl", [record]), "ranked", as_labels="source-ranker")
    assert summary.ranking_tasks_added == 1 and summary.labels_added == 1
    assert list(stored(engine).values()) == [[["m2"], ["m0", "m1"]]]
    again = import_file(engine, write(tmp_path / "r.jsonl", [record]), "ranked", as_labels="source-ranker")
    assert again.labels_added == 0 and again.labels_skipped == 1


@pytest.mark.parametrize(
    "record, field, message",
    [
        ({"prompt": "q", "responses": replies(), "ranking": "C > A"}, "ranking", "leaves out card B"),
        ({"prompt": "q", "responses": replies(), "ranking": "C > A > A > B"}, "ranking", "names card A twice"),
        ({"prompt": "q", "responses": replies(), "ranking": "C > A > D > B"}, "ranking", "not on this task"),
        ({"prompt": "q", "responses": [{**r, "rank": 0} for r in replies()]}, "responses[0].rank", "place 1"),
        ({"prompt": "q", "responses": replies(), "ranking": "C A B", "rank": 1}, "ranking", "not both"),
        ({"prompt": "q", "responses": replies(5), "ranking": "A B C D E"}, "ranking", "this project ranks 3 to 4"),
    ],
)
def test_bad_rankings_name_line_and_field_and_import_nothing(engine, tmp_path, record, field, message):
    create_project(engine, SYSTEM, "ranked", rank_k_min=3, rank_k_max=4)
    good = {"prompt": "fine", "responses": replies(), "ranking": "A B C"}
    with pytest.raises(ImportFormatError, match=message) as caught:
        import_file(engine, write(tmp_path / "bad.jsonl", [good, record]), "ranked", as_labels="source-ranker")
    assert caught.value.line == 2 and caught.value.field == field
    with session_scope(engine) as s:
        assert s.execute(select(func.count()).select_from(Task)).scalar_one() == 0
        assert s.execute(select(func.count()).select_from(Ranking)).scalar_one() == 0


def test_replies_that_do_not_match_the_ranking_task_are_refused(engine, tmp_path):
    create_project(engine, SYSTEM, "ranked", rank_k_min=3, rank_k_max=5)
    import_file(engine, write(tmp_path / "first.jsonl", [{"prompt": "p", "responses": replies(3)}]), "ranked")
    other = [{"prompt": "p", "responses": [{"text": "another", "model": "m9"}, *replies(2)], "ranking": "A B C"}]
    with pytest.raises(ImportFormatError, match="must be the ranking task's") as caught:
        import_file(engine, write(tmp_path / "second.jsonl", other), "ranked", as_labels="source-ranker")
    assert caught.value.line == 1 and caught.value.field == "ranking"
    with session_scope(engine) as s:
        assert s.execute(select(func.count()).select_from(Ranking)).scalar_one() == 0


def test_a_mismatched_line_after_good_ones_names_its_line_and_imports_none_of_the_file(engine, tmp_path):
    create_project(engine, SYSTEM, "ranked", rank_k_min=3, rank_k_max=5)
    import_file(engine, write(tmp_path / "first.jsonl", [{"prompt": "p", "responses": replies(3)}]), "ranked")
    with session_scope(engine) as s:
        before = [s.execute(select(func.count()).select_from(table)).scalar_one() for table in (Task, Response, Ranking)]
    lines = [
        {"prompt": "a new prompt", "responses": replies(3), "ranking": "B A C"},
        {"prompt": "another new prompt", "responses": replies(3), "ranking": "A B C"},
        {"prompt": "p", "responses": [*replies(2), {"text": "not the task's reply", "model": "m7"}], "ranking": "C B A"},
    ]
    with pytest.raises(ImportFormatError, match="must be the ranking task's") as caught:
        import_file(engine, write(tmp_path / "second.jsonl", lines), "ranked", as_labels="source-ranker")
    assert caught.value.line == 3 and caught.value.field == "ranking"
    with session_scope(engine) as s:
        assert [s.execute(select(func.count()).select_from(table)).scalar_one() for table in (Task, Response, Ranking)] == before


def test_rankings_into_a_project_without_rankings_are_refused(engine, tmp_path):
    with pytest.raises(ImportFormatError, match="does not collect rankings"):
        import_file(engine, write(tmp_path / "r.jsonl", [{"prompt": "p", "responses": replies(), "ranking": "A B C"}]), "plain", as_labels="src")
    # without --as-labels the order is ignored, the replies import
    summary = import_file(engine, write(tmp_path / "r.jsonl", [{"prompt": "p", "responses": replies(), "ranking": "A B C"}]), "plain")
    assert summary.responses_added == 3 and summary.labels_added == 0


@given(st.one_of(st.text(alphabet="ABCDE =>x", max_size=12), st.lists(st.lists(st.integers(-1, 5), max_size=3), max_size=4)))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_rankings_either_import_as_parsed_or_fail_cleanly(sqlite_engine, tmp_path, ranking):
    from rlhf.importer.shapes import normalise_responses_record

    try:
        prompt = normalise_responses_record({"prompt": "p", "responses": replies(4), "ranking": ranking})
    except ImportFormatError as exc:
        assert exc.field == "ranking"
        return
    expected = parse_ranking(ranking, 4)
    hashes = [r.content_hash for r in prompt.responses]
    assert prompt.rankings[0].groups == tuple(tuple(hashes[i] for i in g) for g in expected)
