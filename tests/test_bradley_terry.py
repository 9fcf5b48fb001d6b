"""Bradley–Terry with Davidson ties: planted strengths, ties, both_bad, disconnected graphs, references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rlhf.aggregation import BradleyTerry, comparisons_from_preferences
from rlhf.aggregation.bradley_terry import _newton, aggregate_comparisons


def simulate(strengths, n, nu=0.6, seed=0) -> pd.DataFrame:
    """Davidson-model outcomes between random pairs of models named m0, m1, ..."""
    rng = np.random.default_rng(seed)
    m = len(strengths)
    a = rng.integers(0, m, n)
    b = (a + rng.integers(1, m, n)) % m
    s = np.asarray(strengths)[a] - np.asarray(strengths)[b]
    win_a, win_b = np.exp(s / 2), np.exp(-s / 2)
    total = win_a + win_b + nu
    u = rng.random(n)
    winner = np.where(u < win_a / total, "a", np.where(u < (win_a + win_b) / total, "b", "tie"))
    names = np.array([f"m{i}" for i in range(m)])
    return pd.DataFrame({"model_a": names[a], "model_b": names[b], "winner": winner})


def test_recovers_planted_strengths_and_tie_parameter():
    strengths = np.array([-1.5, -0.5, 0.0, 0.4, 1.2, 2.0])
    model = BradleyTerry(n_bootstrap=100).fit(simulate(strengths, 60_000))
    estimate = model.scores_.reindex([f"m{i}" for i in range(6)]).to_numpy()
    np.testing.assert_allclose(estimate, strengths - strengths.mean(), atol=0.05)
    assert model.tie_parameter_ == pytest.approx(0.6, abs=0.03)
    board = model.leaderboard_
    assert board["model"].tolist() == [f"m{i}" for i in (5, 4, 3, 2, 1, 0)]
    assert board["rank"].tolist() == [1, 2, 3, 4, 5, 6]
    assert (board["elo_low"] <= board["elo"]).all() and (board["elo"] <= board["elo_high"]).all()
    assert board["elo"].mean() == pytest.approx(1000.0)
    truth_elo = pd.Series(1000 + 400 / np.log(10) * (strengths - strengths.mean()), index=[f"m{i}" for i in range(6)])
    bounds = board.set_index("model").reindex(truth_elo.index)
    covered = (bounds["elo_low"] <= truth_elo) & (truth_elo <= bounds["elo_high"])
    assert covered.sum() >= 4


def test_elo_scale_is_400_points_for_ten_to_one_odds():
    rows = [("x", "y", "a")] * 1000 + [("x", "y", "b")] * 100
    model = BradleyTerry(n_bootstrap=0, prior=1e-6).fit(pd.DataFrame(rows, columns=["model_a", "model_b", "winner"]))
    assert model.elo_["x"] - model.elo_["y"] == pytest.approx(400.0, abs=0.5)
    assert model.tie_parameter_ == 0.0
    odds = model.predict_proba("x", "y")
    assert odds.win_a / odds.win_b == pytest.approx(10.0, rel=1e-3)
    assert odds.win_a + odds.win_b + odds.tie == pytest.approx(1.0)


def test_ties_pull_strengths_together_and_both_bad_is_a_tie_or_dropped():
    rows = [("x", "y", "a")] * 30 + [("x", "y", "b")] * 10 + [("x", "y", "tie")] * 20 + [("x", "y", "both_bad")] * 40
    df = pd.DataFrame(rows, columns=["model_a", "model_b", "winner"])
    as_tie = BradleyTerry(n_bootstrap=0).fit(df)
    dropped = BradleyTerry(n_bootstrap=0, both_bad="drop").fit(df)
    assert as_tie.leaderboard_.set_index("model").loc["x", "ties"] == 60
    assert dropped.leaderboard_.set_index("model").loc["x", "ties"] == 20
    assert as_tie.tie_parameter_ > dropped.tie_parameter_
    # Davidson: the win ratio fixes the gap; ties do not move it (only nu).
    gap = as_tie.scores_["x"] - as_tie.scores_["y"]
    assert gap == pytest.approx(np.log(3.0), abs=0.01)
    ignoring = BradleyTerry(n_bootstrap=0, ties="drop").fit(df)
    assert ignoring.tie_parameter_ == 0.0 and ignoring.leaderboard_["ties"].sum() == 0


def test_davidson_fit_matches_a_direct_likelihood_maximisation():
    from scipy.optimize import minimize

    df = simulate([0.3, -0.2, 0.8, -1.0], 3000, nu=1.0, seed=2)
    prior = 0.01
    model = BradleyTerry(n_bootstrap=0, prior=prior).fit(df)
    models, pairs = aggregate_comparisons(df)

    def negative(params):
        theta, gamma = params[:-1], params[-1]
        s = theta[pairs.lo] - theta[pairs.hi]
        w_lo, w_hi, t = pairs.counts.T
        # P(lo) = e^{s/2} / D, P(hi) = e^{-s/2} / D, P(tie) = e^gamma / D.
        log_d = np.log(np.exp(s / 2) + np.exp(-s / 2) + np.exp(gamma))
        ll = w_lo * (s / 2 - log_d) + w_hi * (-s / 2 - log_d) + t * (gamma - log_d)
        return -(ll.sum() - prior / 2 * (theta @ theta + gamma**2))

    best = minimize(negative, np.zeros(len(models) + 1), method="BFGS", options={"gtol": 1e-10})
    theta = best.x[:-1] - best.x[:-1].mean()
    np.testing.assert_allclose(model.scores_.reindex(models).to_numpy(), theta, atol=1e-5)
    assert model.tie_parameter_ == pytest.approx(np.exp(best.x[-1]), rel=1e-5)


def test_matches_choix_without_ties():
    choix = pytest.importorskip("choix")
    df = simulate([0.5, -0.3, 1.1, 0.0, -1.2], 4000, nu=0.0, seed=4)
    model = BradleyTerry(n_bootstrap=0, prior=0.05).fit(df)
    index = {name: i for i, name in enumerate(model.models_)}
    a, b = df["model_a"].map(index).to_numpy(), df["model_b"].map(index).to_numpy()
    pairs = [(x, y) if w == "a" else (y, x) for x, y, w in zip(a, b, df["winner"])]
    # choix penalises alpha * |theta|^2 (no 1/2), so its alpha is half our prior.
    reference = choix.opt_pairwise(len(index), pairs, alpha=0.025, tol=1e-10)
    np.testing.assert_allclose(model.scores_.to_numpy(), reference - reference.mean(), atol=1e-4)


def test_disconnected_graph_fits_each_component_and_says_which_is_which():
    rows = [("a", "b", "a")] * 8 + [("a", "b", "b")] * 2 + [("c", "d", "a")] * 3 + [("c", "d", "tie")] * 3 + [("d", "e", "b")] * 4 + [("d", "e", "a")] * 2
    model = BradleyTerry(n_bootstrap=50).fit(pd.DataFrame(rows, columns=["model_a", "model_b", "winner"]))
    members = model.component_members()
    assert members == {0: ["c", "d", "e"], 1: ["a", "b"]}
    board = model.leaderboard_
    assert board.groupby("component")["elo"].mean().to_numpy() == pytest.approx([1000.0, 1000.0])
    assert board[board["component"] == 1]["rank"].tolist() == [1, 2]
    assert np.isfinite(board[["elo_low", "elo_high"]].to_numpy()).all()


def test_an_unbeaten_model_gets_a_finite_score():
    rows = [("champ", "x", "a")] * 50 + [("x", "y", "a")] * 5 + [("x", "y", "b")] * 5
    model = BradleyTerry(n_bootstrap=20).fit(pd.DataFrame(rows, columns=["model_a", "model_b", "winner"]))
    assert np.isfinite(model.elo_["champ"]) and model.elo_["champ"] > model.elo_["x"] + 400


def test_batched_bootstrap_newton_equals_one_fit_per_replicate():
    df = simulate([0.2, -0.4, 0.9, 0.1], 2000, seed=6)
    _, pairs = aggregate_comparisons(df)
    rng = np.random.default_rng(0)
    flat = pairs.counts.reshape(-1)
    draws = rng.multinomial(int(flat.sum()), flat / flat.sum(), size=7).reshape(7, -1, 3).astype(float)
    batched, gamma, _, _ = _newton(pairs.lo, pairs.hi, draws, pairs.n_models, True, 0.01, 100, 1e-12)
    for row in range(7):
        single, single_gamma, _, _ = _newton(pairs.lo, pairs.hi, draws[row : row + 1], pairs.n_models, True, 0.01, 100, 1e-12)
        np.testing.assert_allclose(batched[row], single[0], atol=1e-9)
        assert gamma[row] == pytest.approx(single_gamma[0], abs=1e-9)


def test_bootstrap_is_reproducible_and_matches_resampling_comparisons():
    df = simulate([0.0, 0.5, 1.0], 1500, seed=8)
    first = BradleyTerry(n_bootstrap=300, seed=1).fit(df)
    second = BradleyTerry(n_bootstrap=300, seed=1).fit(df)
    pd.testing.assert_frame_equal(first.leaderboard_, second.leaderboard_)
    # Reference: the naive loop (resample comparison rows, refit) gives intervals of the same width.
    rng = np.random.default_rng(2)
    naive = []
    for _ in range(150):
        sample = df.iloc[rng.integers(0, len(df), len(df))]
        naive.append(BradleyTerry(n_bootstrap=0).fit(sample).elo_.reindex(first.models_).to_numpy())
    naive_width = np.subtract(*np.percentile(naive, [97.5, 2.5], axis=0))
    ours = first.leaderboard_.set_index("model").reindex(first.models_)
    np.testing.assert_allclose(ours["elo_high"] - ours["elo_low"], naive_width, rtol=0.3)


def test_bad_comparisons_name_the_row():
    with pytest.raises(ValueError, match="missing column 'winner'"):
        BradleyTerry().fit(pd.DataFrame({"model_a": ["x"], "model_b": ["y"]}))
    with pytest.raises(ValueError, match="row 1: winner 'draw'"):
        BradleyTerry().fit(pd.DataFrame({"model_a": ["x", "x"], "model_b": ["y", "y"], "winner": ["a", "draw"]}))
    with pytest.raises(ValueError, match="row 0: model 'x' is compared with itself"):
        BradleyTerry().fit(pd.DataFrame({"model_a": ["x"], "model_b": ["x"], "winner": ["a"]}))


def test_comparisons_from_preferences_drops_same_model_pairs():
    prefs = pd.DataFrame({"model_a": ["x", "x"], "model_b": ["y", "x"], "choice": ["a", "tie"]})
    out = comparisons_from_preferences(prefs)
    assert out.to_dict(orient="list") == {"model_a": ["x"], "model_b": ["y"], "winner": ["a"]}
