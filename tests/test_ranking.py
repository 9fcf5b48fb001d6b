"""Ranking tasks: parsing and validation, submit / edit / skip / flag / gold through the shared engine, the migration."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select, text

from engine_fixtures import add_annotators, annotate_in_threads, create_project
from ranking_fixtures import add_ranking_tasks
from rlhf.annotate import (
    TaskFull,
    ValidationError,
    flag_task,
    get_own_annotation,
    next_task,
    progress,
    reveal_distribution,
    set_gold,
    skip_task,
    submit_preference,
    submit_ranking,
    task_view_for_edit,
)
from rlhf.assign import request_extra_votes
from rlhf.db import current_revision, init_database, make_engine, session_scope
from rlhf.ranking import (
    RankingError,
    card_order_for,
    format_ranking,
    from_shown,
    implied_pairs,
    kendall_tau,
    parse_ranking,
    ranking_agreement,
    ranks,
    to_shown,
)
from rlhf.roles import SYSTEM
from rlhf.schema import AnnotationRevision, Ranking, Task


def rows(engine, model):
    with session_scope(engine) as s:
        return s.execute(select(model)).scalars().all()


# ------------------------------------------------------------------------------------ pure


def test_parse_accepts_letters_sentences_and_groups():
    assert parse_ranking("C A D B", 4) == ((2,), (0,), (3,), (1,))
    assert parse_ranking("c > a = d > b", 4) == ((2,), (0, 3), (1,))
    assert parse_ranking("CA=DB", 4) == ((2,), (0, 3), (1,))
    assert parse_ranking([[2], [0, 3], [1]], 4) == ((2,), (0, 3), (1,))
    assert parse_ranking([["C"], ["A", "D"], "B"], 4) == ((2,), (0, 3), (1,))
    assert format_ranking(((2,), (0, 3), (1,))) == "C > A = D > B"


@pytest.mark.parametrize(
    "value, message",
    [
        ("C A D", "leaves out card B"),
        ("C A D B A", "names card A twice"),
        ("C A D B E", "card 'E' is not on this task"),
        ([[0], [1], [2], [3], [7]], "card 7 is not on this task"),
        ("", "is empty"),
        ("= A B C D", "nothing comes before"),
        ("A B C D =", "ends with '='"),
        ("A B C D !", "'!' is not a card letter"),
        ([[0, 1], [], [2, 3]], "empty group"),
        (42, "must be text"),
    ],
)
def test_bad_rankings_name_the_problem(value, message):
    with pytest.raises(RankingError, match="ranking: .*" + message.replace("(", r"\(").replace("'", "'")):
        parse_ranking(value, 4)


@given(st.text(alphabet="ABCDEFGHIJ =>,x", max_size=24), st.integers(3, 9))
@settings(max_examples=200, deadline=None)
def test_parse_never_crashes_and_valid_results_cover_every_card_once(text_, k):
    try:
        groups = parse_ranking(text_, k)
    except RankingError:
        return
    cards = [c for g in groups for c in g]
    assert sorted(cards) == list(range(k))
    assert parse_ranking(format_ranking(groups), k) == groups


def test_ranks_pairs_and_tau_by_hand():
    groups = ((2,), (0, 3), (1,))  # C > A = D > B
    assert ranks(groups, 4) == [2.5, 4.0, 1.0, 2.5]
    pairs = {(i, j): s for i, j, s in implied_pairs(groups)}
    assert pairs == {(0, 1): 1, (0, 2): -1, (0, 3): 0, (1, 2): -1, (1, 3): -1, (2, 3): 1}
    assert kendall_tau(groups, groups) == pytest.approx(1.0)
    reverse = ((1,), (0, 3), (2,))
    assert kendall_tau(groups, reverse) == pytest.approx(-1.0)
    # tau-b by hand: x = A>B>C>D, y = B>A>C=D; C=4, D=1 of 6 pairs, y ties 1 pair: (4-1)/sqrt(6*5)
    assert kendall_tau(((0,), (1,), (2,), (3,)), ((1,), (0,), (2, 3))) == pytest.approx(3 / 30**0.5)
    assert kendall_tau(((0, 1, 2),), ((0,), (1,), (2,))) is None
    scipy_stats = pytest.importorskip("scipy.stats")
    x, y = ranks(((0,), (1,), (2,), (3,)), 4), ranks(((1,), (0,), (2, 3)), 4)
    assert kendall_tau(((0,), (1,), (2,), (3,)), ((1,), (0,), (2, 3))) == pytest.approx(scipy_stats.kendalltau(x, y).statistic)


def test_card_order_is_a_stable_permutation_and_round_trips():
    order = card_order_for(7, 3, 5)
    assert sorted(order) == list(range(5)) and order == card_order_for(7, 3, 5)
    assert len({card_order_for(7, u, 5) for u in range(30)}) > 5
    groups = ((2,), (0, 3), (1,), (4,))
    assert from_shown(to_shown(groups, order), order) == groups
    assert ranking_agreement([groups, groups]) == 1.0
    assert ranking_agreement([groups]) is None


# ------------------------------------------------------------------------------------ engine


def _project(engine, n=3, k=4, **settings):
    project = create_project(engine, name="rank", rank_k_min=3, rank_k_max=5, **settings)
    return project, add_ranking_tasks(engine, project.id, n, k)


def test_submit_edit_by_resubmit_keeps_history_and_counts_once(engine):
    project, ids = _project(engine, overlap=2)
    (user,) = add_annotators(engine, 1)
    view = next_task(engine, user, project, "ranking")
    assert view.kind == "ranking" and len(view.cards) == 4 and view.task_id in ids
    assert view.shown_order == card_order_for(view.task_id, user.id, 4)
    # the page shows cards in display order: card at position p is task card shown_order[p]
    assert [c.text.split(" to ")[0] for c in view.cards] == [f"Answer {i}" for i in view.shown_order]
    first = submit_ranking(engine, user, view.task_id, ranking="C > A = D > B", time_spent_s=9.0)
    assert first.created and first.revision == 1 and first.next_task is not None and first.next_task.task_id != view.task_id
    again = submit_ranking(engine, user, view.task_id, ranking=[[2], [0, 3], [1]])
    assert (again.annotation_id, again.created, again.revision) == (first.annotation_id, False, 1)
    edit = submit_ranking(engine, user, view.task_id, ranking="A B C D", all_bad=True)
    assert (edit.annotation_id, edit.created, edit.revision) == (first.annotation_id, False, 2)
    (row,) = rows(engine, Ranking)
    assert row.groups == [[0], [1], [2], [3]] and row.all_bad and row.revision == 2 and row.time_spent_s == 9.0
    assert row.shown_order == list(view.shown_order)
    (history,) = rows(engine, AnnotationRevision)
    assert history.kind == "ranking" and history.payload["groups"] == [[2], [0, 3], [1]] and history.payload["all_bad"] is False
    with session_scope(engine) as s:
        assert s.get(Task, view.task_id).annotation_count == 1
    own = get_own_annotation(engine, user, view.task_id)
    assert own.ranking == ((0,), (1,), (2,), (3,)) and own.all_bad is True
    revisit = task_view_for_edit(engine, user, view.task_id)
    assert revisit.is_revisit and revisit.shown_order == view.shown_order and len(revisit.cards) == 4
    assert progress(engine, user, project.id, kind="ranking").total == 1


@pytest.mark.parametrize(
    "ranking, field, message",
    [
        ("C A D", "ranking", "leaves out card B"),
        ("C A A D B", "ranking", "names card A twice"),
        ("C A D B F", "ranking", "not on this task"),
        ([[2], [0], [3]], "ranking", "leaves out card B"),
        ([[2], [0, 0], [3], [1]], "ranking", "names card A twice"),
        ([[2], [0], [3], [1], [9]], "ranking", "not on this task"),
    ],
)
def test_bad_rankings_store_nothing(engine, ranking, field, message):
    project, _ = _project(engine)
    (user,) = add_annotators(engine, 1)
    view = next_task(engine, user, project, "ranking")
    with pytest.raises(ValidationError, match=message) as caught:
        submit_ranking(engine, user, view.task_id, ranking=ranking)
    assert caught.value.field == field
    assert rows(engine, Ranking) == []
    with session_scope(engine) as s:
        assert s.get(Task, view.task_id).annotation_count == 0


def test_k_outside_the_project_range_is_refused(engine):
    project = create_project(engine, name="rank", rank_k_min=3, rank_k_max=4)
    (task_id,) = add_ranking_tasks(engine, project.id, 1, k=6)
    (user,) = add_annotators(engine, 1)
    with pytest.raises(ValidationError, match="shows 6 replies; this project ranks 3 to 4") as caught:
        submit_ranking(engine, user, task_id, ranking="A B C D E F")
    assert caught.value.field == "k" and rows(engine, Ranking) == []


def test_k_below_the_project_range_is_refused_and_nothing_is_counted(engine):
    project = create_project(engine, name="rank", rank_k_min=4, rank_k_max=5)
    (task_id,) = add_ranking_tasks(engine, project.id, 1, k=3)
    (user,) = add_annotators(engine, 1)
    with pytest.raises(ValidationError, match="shows 3 replies; this project ranks 4 to 5") as caught:
        submit_ranking(engine, user, task_id, ranking="A B C")
    assert caught.value.field == "k" and rows(engine, Ranking) == []
    with session_scope(engine) as s:
        assert s.get(Task, task_id).annotation_count == 0


def test_wrong_kind_all_bad_type_and_full_tasks(engine):
    project, ids = _project(engine, n=1, overlap=1)
    a, b = add_annotators(engine, 2)
    with pytest.raises(ValidationError, match="use submit_ranking"):
        submit_preference(engine, a, ids[0], choice="a", strength=1, shown_left="a")
    with pytest.raises(ValidationError, match="all_bad"):
        submit_ranking(engine, a, ids[0], ranking="A B C D", all_bad="yes")
    view = next_task(engine, a, project, "ranking")
    assert next_task(engine, b, project, "ranking") is None  # leased to a: overlap 1
    with pytest.raises(TaskFull):
        submit_ranking(engine, b, view.task_id, ranking="A B C D")
    submit_ranking(engine, a, view.task_id, ranking="A B C D")


def test_skip_flag_gold_and_reveal(engine):
    project, ids = _project(engine, n=2, overlap=2, visibility="reveal_after_submit")
    a, b = add_annotators(engine, 2)
    view = next_task(engine, a, project, "ranking")
    nxt = skip_task(engine, a, view.task_id, "cannot judge")
    assert nxt is not None and nxt.task_id != view.task_id and nxt.kind == "ranking"
    assert flag_task(engine, a, nxt.task_id, "broken") > 0
    with pytest.raises(ValidationError, match="answer.ranking: leaves out"):
        set_gold(engine, SYSTEM, ids[0], {"ranking": "A B"})
    set_gold(engine, SYSTEM, ids[0], {"ranking": "B > A = C > D"})
    with session_scope(engine) as s:
        assert s.get(Task, ids[0]).gold_answer == {"ranking": [[1], [0, 2], [3]]}
    submit_ranking(engine, a, nxt.task_id, ranking="A B C D")
    submit_ranking(engine, b, nxt.task_id, ranking="D C B A")  # room left: overlap 2
    dist = reveal_distribution(engine, a, nxt.task_id)
    assert dist.kind == "ranking" and dist.n == 2 and sorted(dist.mean_ranks) == [2.5, 2.5, 2.5, 2.5]


def test_extra_votes_use_ranking_agreement(engine):
    project, ids = _project(engine, n=1, overlap=2, max_overlap=3)
    a, b = add_annotators(engine, 2)
    for user, order in ((a, "A B C D"), (b, "D C B A")):
        submit_ranking(engine, user, ids[0], ranking=order)
    assert request_extra_votes(engine, SYSTEM, project.id, min_agreement=0.5) == ids


def test_concurrent_annotators_fill_every_ranking_task_exactly(engine):
    project, ids = _project(engine, n=12, overlap=3)
    users = add_annotators(engine, 6)
    done = annotate_in_threads(engine, users, project.id, "ranking")
    assert len(done) == 12 * 3
    per_task = {t: sum(1 for d in done if d[0] == t) for t in ids}
    assert set(per_task.values()) == {3}
    with session_scope(engine) as s:
        assert s.execute(select(func.count()).select_from(Ranking)).scalar_one() == 36
        assert set(s.execute(select(Task.annotation_count).where(Task.kind == "ranking")).scalars()) == {3}


# ------------------------------------------------------------------------------------ migration


def test_a_database_at_0003_upgrades_in_place_to_rankings(db_url):
    from alembic import command

    from rlhf.db import _alembic_config

    engine = make_engine(db_url)
    command.upgrade(_alembic_config(engine), "0003")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO project (name, description, guidelines, rubric, tags, overlap, max_overlap, gold_rate, visibility, lease_minutes, seed, active, created_at) "
                                "VALUES ('old', '', '', '[]', '[]', 2, 2, 0, 'blind', 10, 0, true, CURRENT_TIMESTAMP)"))  # fmt: skip
    init_database(engine)
    assert current_revision(engine) not in ("0003", None)
    assert "ranking" in inspect(engine).get_table_names()
    assert {"response_ids"} <= {c["name"] for c in inspect(engine).get_columns("task")}
    with engine.connect() as connection:
        assert connection.execute(text("SELECT name, rank_k_min, rank_k_max FROM project")).one() == ("old", None, None)
    engine.dispose()


# ------------------------------------------------------------------------------------ import


def test_import_makes_one_ranking_task_per_prompt_with_k_in_range(engine):
    from rlhf.importer.core import import_records
    from rlhf.projects import create_project as create

    create(engine, SYSTEM, "ranked", rank_k_min=3, rank_k_max=4)
    records = [
        {"prompt": "four", "responses": [{"text": f"reply {i}", "model": f"m{i}"} for i in range(4)]},
        {"prompt": "two", "responses": [{"text": f"reply {i}", "model": f"m{i}"} for i in range(2)]},
        {"prompt": "five", "responses": [{"text": f"reply {i}", "model": f"m{i}"} for i in range(5)]},
    ]
    summary = import_records(engine, records, "ranked")
    assert summary.ranking_tasks_added == 1 and summary.ranking_prompts_out_of_range == 2
    assert "1 ranking tasks" in summary.line()
    with session_scope(engine) as s:
        (task,) = s.execute(select(Task).where(Task.kind == "ranking")).scalars().all()
        assert len(task.response_ids) == 4 and task.response_a_id == task.response_ids[0]
    assert import_records(engine, records, "ranked").ranking_tasks_added == 0
    plain = import_records(engine, records, "no-rankings")
    assert plain.ranking_tasks_added == 0 and plain.pairwise_tasks_added > 0


def test_cli_project_rank_range(sqlite_engine):
    import json as _json

    from typer.testing import CliRunner

    from rlhf.cli import app

    url = str(sqlite_engine.url)
    runner = CliRunner()
    created = runner.invoke(app, ["project", "create", "ranked", "--rank-k-min", "4", "--database-url", url])
    assert created.exit_code == 0, created.output
    shown = _json.loads(runner.invoke(app, ["project", "show", "ranked", "--database-url", url]).output)
    assert (shown["rank_k_min"], shown["rank_k_max"]) == (4, 4)
    bad = runner.invoke(app, ["project", "update", "ranked", "--rank-k-max", "12", "--database-url", url])
    assert bad.exit_code != 0 and "rank_k_max" in bad.output


def test_seeding_rankings_in_sql_keeps_counts_in_step(engine):
    from engine_fixtures import add_annotators
    from ranking_fixtures import seed_rankings_in_sql

    project = create_project(engine, name="seeded", overlap=3, rank_k_min=4, rank_k_max=4)
    ids = add_ranking_tasks(engine, project.id, 5, annotation_counts=[3, 2, 0, 1, 3])
    users = add_annotators(engine, 4)
    assert seed_rankings_in_sql(engine, project.id, [u.id for u in users]) == 9
    view = next_task(engine, users[0], project, "ranking")
    assert view.task_id in (ids[2], ids[3], ids[1])
