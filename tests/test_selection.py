"""Active selection: strategy maths by hand, the stored order that next_task walks, reasons on annotations, fallback, staleness."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select, update

from engine_fixtures import add_annotators, build_project
from rlhf.annotate import submit_preference, submit_rating
from rlhf.assign import left_side_for, next_task
from rlhf.db import session_scope
from rlhf.projects import ProjectValidationError, update_project
from rlhf.roles import SYSTEM
from rlhf.schema import Job, Preference, Rating, SelectionScore, SelectionState, Task
from rlhf.selection import strategies as st
from rlhf.selection.ensemble import HeadEnsemble
from rlhf.selection.scores import (
    REFRESH_MIN_LABELS,
    compute_scores,
    queue_stale_scoring,
    selection_status,
    stale_reason,
    store_order,
)
from rlhf.schema import utcnow

# ------------------------------------------------------------------------------ pure maths


def test_uncertainty_is_the_probability_of_the_wrong_order():
    # Φ(−|Δ|/σ): Δ = 0 → 0.5; Δ = σ → Φ(−1) = 0.158655; sign of Δ does not matter
    scores = st.uncertainty_scores(np.array([0.0, 2.0, -2.0, 1.0, 0.0]), np.array([1.0, 2.0, 2.0, 0.0, 0.0]))
    assert scores == pytest.approx([0.5, 0.158655, 0.158655, 0.0, 0.5], abs=1e-6)


def test_posterior_entropy_by_hand():
    e = st.posterior_entropy(np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]]))
    h = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75)) / math.log(2)
    assert e == pytest.approx([1.0, 0.0, h], abs=1e-9)


def test_order_puts_the_highest_score_first_and_spaces_the_random_share():
    ranked = st.order([10, 11, 12, 13], np.array([0.1, 0.9, 0.5, 0.7]))
    assert ranked.task_ids.tolist() == [11, 13, 12, 10]
    assert not ranked.is_random.any()
    mixed = st.order(list(range(100)), np.arange(100, dtype=float), random_share=0.25, seed=3)
    assert mixed.is_random.sum() == 25
    assert mixed.is_random[3::4].all() and not mixed.is_random[0::4].any()  # slots 3, 7, 11, ...: evenly spaced
    assert sorted(mixed.task_ids.tolist()) == list(range(100))  # every task exactly once
    scored = mixed.task_ids[~mixed.is_random]
    assert (np.diff(scored) < 0).all()  # the rest by score, highest first
    with pytest.raises(ValueError):
        st.order([1], np.ones(1), random_share=1.0)


def test_blend_is_the_mean_rank_quantile():
    assert st.blend(np.array([1.0, 2.0, 3.0]), np.array([30.0, 20.0, 10.0])) == pytest.approx([2 / 3, 2 / 3, 2 / 3])


def test_ensemble_spread_shrinks_where_the_labels_are():
    rng = np.random.default_rng(0)
    diffs = np.column_stack([rng.normal(size=200), np.zeros(200)])  # labels only along the first feature
    wins = (diffs[:, 0] + 0.3 * rng.normal(size=200) > 0).astype(float)
    ensemble = HeadEnsemble(n_heads=6, l2=0.1, seed=1).fit(diffs, wins)
    mean, spread = ensemble.predict(np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert mean[0] > 1.0  # the learnt direction
    assert spread.shape == (2,) and (spread >= 0).all()
    assert ensemble.weights_.shape == (6, 2)


def test_stale_reason():
    class State:
        requested, labels_at, reward_artifact_id = "uncertainty", 100, 7

    assert stale_reason(None, "least-annotated", 10, None) is None
    assert stale_reason(None, "mixed", 0, None) == "never scored"
    assert stale_reason(State, "mixed", 100, 7).startswith("strategy changed")
    assert stale_reason(State, "uncertainty", 100, 8) == "a newer reward model"
    assert stale_reason(State, "uncertainty", 100 + REFRESH_MIN_LABELS - 1, 7) is None
    assert stale_reason(State, "uncertainty", 100 + REFRESH_MIN_LABELS, 7) == f"{REFRESH_MIN_LABELS} new label(s)"


# ------------------------------------------------------------------------------ the product path


def test_selection_setting_is_validated_and_queues_scoring(engine):
    built = build_project(engine, n_pairwise=3, overlap=1)
    with pytest.raises(ProjectValidationError, match="selection"):
        update_project(engine, SYSTEM, built.project.id, selection="clever")
    update_project(engine, SYSTEM, built.project.id, selection="disagreement")
    update_project(engine, SYSTEM, built.project.id, selection="disagreement")  # unchanged: no second job
    with session_scope(engine) as s:
        jobs = s.execute(select(Job.kind, Job.project_id, Job.status)).all()
    assert jobs == [("select-scores", built.project.id, "queued")]


def test_next_task_follows_the_stored_rank_within_the_least_annotated(engine):
    built = build_project(engine, n_pairwise=6, overlap=2, selection="mixed")
    ids = built.pairwise_ids
    wanted = [ids[4], ids[1], ids[5], ids[0], ids[2], ids[3]]
    ranked = st.Ranked(np.array(wanted), np.linspace(1, 0, 6), np.array([False, True, False, False, False, False]))
    store_order(engine, built.project.id, "mixed", ranked, utcnow())
    users = add_annotators(engine, 2)
    seen = []
    view = next_task(engine, users[0], built.project.id, "pairwise")
    while view is not None:
        seen.append(view.task_id)
        view = submit_preference(engine, users[0], view.task_id, choice="a", strength=1, shown_left=view.shown_left, next_kind="pairwise").next_task
    assert seen == wanted
    # a second annotator: every task has 1 vote now, so the order is the rank again
    view = next_task(engine, users[1], built.project.id, "pairwise")
    assert view.task_id == wanted[0]
    with session_scope(engine) as s:
        reasons = s.execute(select(Preference.task_id, Preference.selection_strategy, Preference.selection_score, Preference.selection_random)).all()
    by_task = {r.task_id: r for r in reasons}
    assert by_task[wanted[1]].selection_random is True and by_task[wanted[0]].selection_random is False
    assert by_task[wanted[0]].selection_strategy == "mixed" and by_task[wanted[0]].selection_score == pytest.approx(1.0)


def test_least_annotated_projects_ignore_stored_ranks_and_record_least_annotated(engine):
    built = build_project(engine, n_rating=4, overlap=1)
    ids = built.rating_ids
    store_order(engine, built.project.id, "uncertainty", st.Ranked(np.array(ids[::-1]), np.ones(4), np.zeros(4, bool)), utcnow())
    with session_scope(engine) as s:
        by_shuffle = s.execute(select(Task.id).where(Task.project_id == built.project.id).order_by(Task.shuffle_key)).scalars().all()
    user = add_annotators(engine, 1)[0]
    view = next_task(engine, user, built.project.id, "rating")
    assert view.task_id == by_shuffle[0]
    submit_rating(engine, user, view.task_id, scores={"helpfulness": 5, "honesty": 5, "harmlessness": 5})
    with session_scope(engine) as s:
        assert s.execute(select(Rating.selection_strategy, Rating.selection_score)).one() == ("least-annotated", None)


def test_disagreement_scores_put_split_votes_first_and_record_the_run(engine):
    built = build_project(engine, n_pairwise=6, overlap=4, selection="disagreement")
    ids = built.pairwise_ids
    users = add_annotators(engine, 4)
    # tasks 0-3: three annotators agree (a, b, a, b); task 4: split a, a, b; task 5: no votes
    for task_id, choices in zip(ids, ("aaa", "bbb", "aaa", "bbb", "aab")):
        for user, choice in zip(users, choices):
            submit_preference(engine, user, task_id, choice=choice, strength=1, shown_left=left_side_for(task_id, user.id))
    run = compute_scores(engine, built.project.id)
    assert run.applied == "disagreement" and run.scored_tasks == 6 and run.labels == 15
    with session_scope(engine) as s:
        scores = dict(s.execute(select(SelectionScore.task_id, SelectionScore.score)).all())
        ranks = dict(s.execute(select(Task.id, Task.selection_rank).where(Task.project_id == built.project.id)).all())
        state = s.get(SelectionState, built.project.id)
        assert state.applied == "disagreement" and state.labels_at == 15 and len(state.history) == 1
    assert scores[ids[4]] > max(scores[t] for t in ids[:4])
    assert ranks[ids[4]] < min(ranks[t] for t in ids[:4])
    fourth = users[3]
    assert next_task(engine, fourth, built.project.id, "pairwise").task_id == ids[5]  # least-annotated still comes first
    view = submit_preference(engine, fourth, ids[5], choice="a", strength=1, shown_left=left_side_for(ids[5], fourth.id), next_kind="pairwise").next_task
    assert view.task_id == ids[4]  # then the split vote, before the agreed ones
    status = selection_status(engine, built.project.id)
    assert status.applied == "disagreement" and not status.fallback and status.stale is None


def test_uncertainty_without_a_reward_model_falls_back_and_says_so(engine, caplog):
    built = build_project(engine, n_pairwise=3, overlap=1, selection="uncertainty")
    store_order(engine, built.project.id, "uncertainty", st.Ranked(np.array(built.pairwise_ids), np.ones(3), np.zeros(3, bool)), utcnow())
    with caplog.at_level("WARNING"):
        run = compute_scores(engine, built.project.id)
    assert run.applied == "least-annotated" and run.scored_tasks == 0
    assert "no reward model" in run.note and "falling back to least-annotated" in run.note
    assert any("needs a reward model" in r.message for r in caplog.records)
    with session_scope(engine) as s:
        assert s.execute(select(SelectionScore)).first() is None
        assert set(s.execute(select(Task.selection_rank)).scalars()) == {0}
    status = selection_status(engine, built.project.id)
    assert status.fallback and "no reward model" in status.note
    # annotation goes on, recorded as least-annotated
    user = add_annotators(engine, 1)[0]
    view = next_task(engine, user, built.project.id, "pairwise")
    submit_preference(engine, user, view.task_id, choice="b", strength=1, shown_left=view.shown_left)
    with session_scope(engine) as s:
        assert s.execute(select(Preference.selection_strategy)).scalar_one() == "least-annotated"


def judge_every_pair(engine, user, project_id) -> list[int]:
    """The annotator takes and answers pairwise tasks until the engine has none left; the task ids, in order."""
    done = []
    view = next_task(engine, user, project_id, "pairwise")
    while view is not None:
        done.append(view.task_id)
        view = submit_preference(engine, user, view.task_id, choice="a", strength=1, shown_left=view.shown_left, next_kind="pairwise").next_task
    return done


def test_a_missing_score_table_never_blocks_annotation(engine):
    built = build_project(engine, n_pairwise=3, overlap=1, selection="uncertainty")
    user = add_annotators(engine, 1)[0]
    done = judge_every_pair(engine, user, built.project.id)
    assert sorted(done) == sorted(built.pairwise_ids)


def test_a_stale_score_table_never_blocks_annotation(engine):
    from engine_fixtures import add_tasks

    built = build_project(engine, n_pairwise=3, overlap=1, selection="disagreement")
    compute_scores(engine, built.project.id)  # ranks and score rows for the three tasks
    later = add_tasks(engine, built.project.id, 2, "pairwise", seed=1)  # imported after scoring: rank 0, no score row
    with session_scope(engine, write=True) as s:  # strategy changed and no job has run since
        s.execute(update(type(built.project)).values(selection="uncertainty"))
    assert selection_status(engine, built.project.id).stale.startswith("strategy changed")
    user = add_annotators(engine, 1)[0]
    done = judge_every_pair(engine, user, built.project.id)
    assert sorted(done) == sorted(built.pairwise_ids + later)
    with session_scope(engine) as s:  # the disagreement scores are not the strategy in force: not recorded as its reason
        assert set(s.execute(select(Preference.selection_strategy)).scalars()) == {"least-annotated"}


def test_worker_check_queues_stale_projects_once(engine):
    built = build_project(engine, n_pairwise=3, overlap=1)
    assert queue_stale_scoring(engine) == []  # least-annotated, never scored: nothing to do
    with session_scope(engine, write=True) as s:
        s.execute(update(type(built.project)).values(selection="mixed"))
    first = queue_stale_scoring(engine)
    assert len(first) == 1 and queue_stale_scoring(engine) == []  # one pending job is enough


# ------------------------------------------------------------------------------ uncertainty with a real (tiny) reward model


@pytest.fixture(scope="module")
def tiny_reward_dir(tiny_model_dir, tmp_path_factory):
    from rlhf.reward import train_reward_model
    from test_reward_train import easy_preferences, tiny_config

    root = tmp_path_factory.mktemp("selection-rm")
    train_reward_model(tiny_config(tiny_model_dir, max_steps=12), root / "rm", data=easy_preferences(root / "easy.jsonl", n=36))
    return (root / "rm").resolve()


def test_reward_features_reproduce_the_scores(tiny_reward_dir):
    from rlhf.reward.scorer import RewardModel
    from rlhf.selection.reward_features import reward_scores_and_features

    model = RewardModel.load(tiny_reward_dir, device="cpu")
    prompts = ["hello there", "a b", "one two three four five six"]
    responses = ["good helpful honest", "bad unsafe worse and more words here", "good"]
    raw, features = reward_scores_and_features(model, prompts, responses, batch_size=2)
    assert raw == pytest.approx(model.score(prompts, responses, normalize=False).numpy(), abs=1e-4)  # input order kept
    assert features.shape[0] == 3


def test_uncertainty_ranks_pairs_by_the_reward_model_and_its_ensemble(engine, tiny_reward_dir):
    from rlhf.schema import Artifact, Response

    built = build_project(engine, n_pairwise=16, overlap=1, selection="uncertainty")
    ids = built.pairwise_ids
    with session_scope(engine, write=True) as s:
        tasks = s.execute(select(Task.id, Task.response_a_id, Task.response_b_id).where(Task.id.in_(ids)).order_by(Task.id)).all()
        for i, task in enumerate(tasks):  # half the pairs easy for the model (good vs bad), half not (good vs good)
            s.execute(update(Response).where(Response.id == task.response_a_id).values(text="the answer good helpful honest"))
            other = "the answer bad unsafe worse" if i % 2 else "the answer good helpful honest now"
            s.execute(update(Response).where(Response.id == task.response_b_id).values(text=other))
        s.add(Artifact(kind="reward_model", name="rm", path=str(tiny_reward_dir), project_id=built.project.id))
    user = add_annotators(engine, 1)[0]
    view = next_task(engine, user, built.project.id, "pairwise")
    for _ in range(9):  # nine labels (least-annotated order) so the ensemble is fitted
        view = submit_preference(engine, user, view.task_id, choice="a", strength=1, shown_left=view.shown_left, next_kind="pairwise").next_task
    submit_preference(engine, user, view.task_id, choice="a", strength=1, shown_left=view.shown_left)  # release the lease
    run = compute_scores(engine, built.project.id)
    assert run.applied == "uncertainty" and run.scored_tasks == 6 and "reward model artifact" in run.note
    assert run.rm_accuracy_random is not None and run.random_pairs == 10  # least-annotated labels are the unbiased share
    with session_scope(engine) as s:
        rows = s.execute(select(SelectionScore.task_id, SelectionScore.score, SelectionScore.rank).order_by(SelectionScore.rank)).all()
    scores = [r.score for r in rows]
    assert all(0 <= x <= 0.5 for x in scores) and scores == sorted(scores, reverse=True)
    reader = add_annotators(engine, 1, prefix="late")[0]
    assert next_task(engine, reader, built.project.id, "pairwise").task_id == rows[0].task_id


def test_export_carries_why_each_task_was_chosen(engine, tmp_path):
    from rlhf.export import export_project, read_export_rows

    built = build_project(engine, n_pairwise=4, overlap=1, selection="mixed")
    ids = built.pairwise_ids
    store_order(engine, built.project.id, "mixed", st.Ranked(np.array(ids), np.array([0.9, 0.8, 0.7, 0.6]), np.array([False, True, False, False])), utcnow())
    user = add_annotators(engine, 1)[0]
    view = next_task(engine, user, built.project.id, "pairwise")
    for _ in range(2):
        view = submit_preference(engine, user, view.task_id, choice="a", strength=1, shown_left=view.shown_left, next_kind="pairwise").next_task
    export_project(engine, SYSTEM, built.project.id, format="raw", out=tmp_path / "raw.jsonl")
    raw = read_export_rows(tmp_path / "raw.jsonl").set_index("task_id")
    assert raw.loc[ids[0], "selection_strategy"] == "mixed" and raw.loc[ids[0], "selection_score"] == pytest.approx(0.9)
    assert bool(raw.loc[ids[1], "selection_random"]) is True and bool(raw.loc[ids[0], "selection_random"]) is False
    export_project(engine, SYSTEM, built.project.id, format="trl", out=tmp_path / "trl.jsonl")
    trl = read_export_rows(tmp_path / "trl.jsonl").set_index("task_id")
    assert list(trl.loc[[ids[0], ids[1]], "selection_random"].astype(bool)) == [False, True]


def test_cli_update_selection_and_status(engine, tmp_path):
    from typer.testing import CliRunner

    from rlhf.cli import app

    built = build_project(engine, n_pairwise=2, overlap=1)
    url = engine.url.render_as_string(hide_password=False)
    runner = CliRunner()
    result = runner.invoke(app, ["project", "update", str(built.project.id), "--selection", "uncertainty", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert '"selection": "uncertainty"' in result.output
    bad = runner.invoke(app, ["project", "update", str(built.project.id), "--selection", "best", "--database-url", url])
    assert bad.exit_code == 2 and "selection" in bad.output
    scored = runner.invoke(app, ["selection", "score", "-p", str(built.project.id), "--database-url", url])
    assert scored.exit_code == 0 and "least-annotated" in scored.output and "no reward model" in scored.output
    status = runner.invoke(app, ["selection", "status", "-p", str(built.project.id), "--database-url", url])
    assert '"fallback": true' in status.output


def test_select_scores_job_kind_checks_its_params_and_runs(engine, tmp_path):
    from rlhf.job_kinds import KINDS
    from rlhf.jobs import InvalidJobParams
    from rlhf.progress import RecordingReporter

    kind = KINDS["select-scores"]
    assert kind.validate({})["n_heads"] == 8
    with pytest.raises(InvalidJobParams, match="select-scores: n_heads"):
        kind.validate({"n_heads": 1})
    built = build_project(engine, n_pairwise=2, overlap=1, selection="mixed")

    class FakeJob:
        project_id = built.project.id

    reporter = RecordingReporter()
    result = kind.run(engine, FakeJob(), kind.validate({}), reporter, tmp_path)
    assert result.metrics["scored_tasks"] == 2 and "mixed" in result.message
    assert any("no reward model" in line for line in reporter.lines)


from hypothesis import given, settings, strategies as hs  # noqa: E402


@settings(max_examples=60, deadline=None)
@given(scores=hs.lists(hs.floats(-1e6, 1e6), max_size=60), share=hs.sampled_from([0.0, 0.1, 0.25, 0.5, 0.9]), seed=hs.integers(0, 2**16))
def test_order_is_a_permutation_with_the_promised_random_share(scores, share, seed):
    ids = list(range(100, 100 + len(scores)))
    ranked = st.order(ids, np.array(scores, dtype=float), random_share=share, seed=seed)
    assert sorted(ranked.task_ids.tolist()) == ids
    assert int(ranked.is_random.sum()) == int(np.floor(len(scores) * share + 1e-9))
    chosen = ranked.scores[~ranked.is_random]
    assert (np.diff(chosen) <= 0).all()  # the non-random positions are by score, highest first


def test_ratings_export_carries_why_each_response_was_chosen(engine, tmp_path):
    from rlhf.export import export_project, read_export_rows

    built = build_project(engine, n_rating=3, overlap=1, selection="mixed")
    ids = built.rating_ids
    store_order(engine, built.project.id, "mixed", st.Ranked(np.array(ids), np.array([0.9, 0.8, 0.7]), np.array([False, True, False])), utcnow())
    user = add_annotators(engine, 1)[0]
    view = next_task(engine, user, built.project.id, "rating")
    for _ in range(2):
        view = submit_rating(engine, user, view.task_id, scores={"helpfulness": 5, "honesty": 5, "harmlessness": 5}, next_kind="rating").next_task
    with session_scope(engine) as s:
        response_of = dict(s.execute(select(Task.id, Task.response_a_id).where(Task.id.in_(ids))).all())
    export_project(engine, SYSTEM, built.project.id, format="ratings", out=tmp_path / "ratings.jsonl")
    rows = read_export_rows(tmp_path / "ratings.jsonl").set_index("response_id")
    assert {"selection_strategy", "selection_score", "selection_random"} <= set(rows.columns)
    first, second = rows.loc[response_of[ids[0]]], rows.loc[response_of[ids[1]]]
    assert first["selection_strategy"] == "mixed" and first["selection_score"] == pytest.approx(0.9) and not bool(first["selection_random"])
    assert second["selection_strategy"] == "mixed" and bool(second["selection_random"]) is True
    assert response_of[ids[2]] not in rows.index  # not rated: no row
