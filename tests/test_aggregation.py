"""Majority vote and Dawid–Skene: tiny frames with exact answers, planted confusion matrices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rlhf.aggregation import DawidSkene, MajorityVote
from rlhf.aggregation.dawid_skene import spammer_scores


def frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["item", "annotator", "value"])


def test_majority_vote_three_rows():
    mv = MajorityVote().fit(frame([("t1", "w1", "yes"), ("t1", "w2", "yes"), ("t1", "w3", "no")]))
    assert mv.labels_.to_dict() == {"t1": "yes"}
    assert mv.confidence_["t1"] == pytest.approx(2 / 3)
    assert mv.probas_.loc["t1", "no"] == pytest.approx(1 / 3)
    assert mv.n_votes_["t1"] == 3


def test_majority_vote_breaks_ties_toward_the_smallest_label_every_time():
    rows = [("t1", "w1", "b"), ("t1", "w2", "a"), ("t2", "w1", 3), ("t2", "w2", 1)]
    df = frame(rows[:2])
    for _ in range(3):
        assert MajorityVote().fit(df).labels_["t1"] == "a"
    numbers = frame([("t2", "w1", 3), ("t2", "w2", 1), ("t2", "w3", 2), ("t2", "w4", 2), ("t2", "w5", 1)])
    fitted = MajorityVote().fit(numbers)
    assert fitted.labels_["t2"] == 1 and fitted.confidence_["t2"] == pytest.approx(0.4)
    # Integer labels stay integers.
    assert isinstance(fitted.labels_["t2"], (int, np.integer))


def test_majority_vote_fit_returns_self_and_ignores_missing_values():
    model = MajorityVote()
    assert model.fit(frame([(1, "a", 1.0), (1, "b", np.nan), (2, "a", 2.0)])) is model
    assert model.n_votes_.to_dict() == {1: 1, 2: 1}


def simulate(n_items=6000, n_annotators=30, n_classes=3, per_item=5, n_spammers=4, seed=0):
    """Labels from planted confusion matrices: (long frame, truth (I,), confusions (J, K, K))."""
    rng = np.random.default_rng(seed)
    priors = np.linspace(2, 1, n_classes)
    priors /= priors.sum()
    truth = rng.choice(n_classes, n_items, p=priors)
    confusions = []
    for j in range(n_annotators):
        if j < n_spammers:
            confusions.append(np.tile(rng.dirichlet(np.ones(n_classes) * 2), (n_classes, 1)))
        else:
            matrix = rng.dirichlet(np.ones(n_classes), size=n_classes) * 0.3
            matrix[np.arange(n_classes), np.arange(n_classes)] += 0.7 * rng.uniform(0.8, 1.0)
            confusions.append(matrix / matrix.sum(axis=1, keepdims=True))
    confusions = np.array(confusions)
    items = np.repeat(np.arange(n_items), per_item)
    annotators = np.concatenate([rng.choice(n_annotators, per_item, replace=False) for _ in range(n_items)])
    cumulative = np.cumsum(confusions[annotators, truth[items]], axis=1)
    values = (rng.random(items.size)[:, None] > cumulative).sum(axis=1)
    return frame(list(zip(items, annotators, values))), truth, confusions


def test_dawid_skene_recovers_planted_confusion_matrices():
    df, truth, confusions = simulate()
    model = DawidSkene().fit(df)
    estimated = model.errors_.to_numpy().reshape(-1, 3, 3)
    order = model.errors_.index.get_level_values("annotator").unique().to_numpy()
    assert np.abs(estimated - confusions[order]).max() < 0.08
    assert np.abs(estimated - confusions[order]).mean() < 0.02
    accuracy_ds = np.mean(model.labels_.sort_index().to_numpy() == truth)
    accuracy_mv = np.mean(MajorityVote().fit(df).labels_.sort_index().to_numpy() == truth)
    assert accuracy_ds > accuracy_mv
    np.testing.assert_allclose(model.probas_.sum(axis=1), 1.0)
    np.testing.assert_allclose(model.priors_.to_numpy(), np.bincount(truth) / truth.size, atol=0.02)


def test_dawid_skene_scores_spammers_near_zero():
    df, _, _ = simulate(n_spammers=4)
    model = DawidSkene().fit(df)
    spammers, careful = model.skill_.sort_index().iloc[:4], model.skill_.sort_index().iloc[4:]
    assert spammers.abs().max() < 0.1
    assert careful.min() > 0.4
    assert model.spammer_score_.sort_index().iloc[:4].max() < 0.05
    assert model.competence_.between(0, 1).all()


def test_em_never_lowers_the_likelihood_without_smoothing():
    df, _, _ = simulate(n_items=1500, seed=3)
    model = DawidSkene(smoothing=0.0, tol=0, max_iter=30).fit(df)
    steps = np.diff(model.log_likelihood_)
    assert (steps >= -1e-6 * abs(model.log_likelihood_[-1])).all()
    assert model.n_iter_ == 30


def test_dawid_skene_three_rows_of_agreement():
    model = DawidSkene().fit(frame([("t1", "w1", "x"), ("t1", "w2", "x"), ("t2", "w1", "y")]))
    assert model.labels_.to_dict() == {"t1": "x", "t2": "y"}
    assert model.probas_.loc["t1", "x"] > 0.9


def test_spammer_score_extremes():
    perfect = np.eye(4)[None]
    constant = np.tile(np.array([0.1, 0.2, 0.3, 0.4]), (4, 1))[None]
    assert spammer_scores(perfect)[0] == pytest.approx(1.0)
    assert spammer_scores(constant)[0] == pytest.approx(0.0)


def test_dawid_skene_agrees_with_crowd_kit():
    crowdkit = pytest.importorskip("crowdkit.aggregation")
    df, _, _ = simulate(n_items=3000, seed=5)
    ours = DawidSkene(smoothing=0.0, max_iter=100, tol=1e-7).fit(df).labels_.sort_index()
    theirs = crowdkit.DawidSkene(n_iter=100).fit_predict(df.rename(columns={"item": "task", "annotator": "worker", "value": "label"})).sort_index()
    assert np.mean(ours.to_numpy() == theirs.to_numpy()) > 0.995
