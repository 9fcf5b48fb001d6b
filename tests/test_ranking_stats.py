"""Ranking statistics: Kendall's W (hand-computed, with and without ties, against scipy's Friedman test),
implied-pair agreement, alpha on ranks, annotator biases, Plackett–Luce (against a direct likelihood maximisation)."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from rlhf.ranking import ranks
from rlhf.ranking_stats import (
    PlackettLuce,
    annotator_table,
    comparisons_from_rankings,
    implied_pair_agreement,
    kendalls_w,
    kendalls_w_by_task,
    plackett_luce_leaderboard,
    plackett_luce_per_prompt,
    rank_arrays,
    ranking_stats,
    ranks_from_levels,
)


def frame_of(rankings, models=None, lengths=None, positions=None):
    """Long frame from {(task, annotator): groups}; card c of every task is model models[c] with length lengths[c]."""
    rows = []
    for (task, annotator), groups in rankings.items():
        k = sum(len(g) for g in groups)
        mid = ranks(groups, k)
        level = {c: g for g, group in enumerate(groups) for c in group}
        shown = positions[(task, annotator)] if positions else list(range(k))
        for card in range(k):
            rows.append({
                "task_id": task, "prompt_id": task, "annotator_id": annotator, "card": card, "rank": mid[card], "level": level[card],
                "position": shown.index(card), "response_id": task * 10 + card, "model": (models or [f"m{c}" for c in range(k)])[card],
                "length": (lengths or [100] * k)[card], "is_gold": False, "all_bad": False, "annotator_role": "annotator",
            })  # fmt: skip
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ Kendall's W


def test_w_hand_computed_without_ties():
    # 3 raters, 4 objects. Rank sums R = (4, 6, 8, 12); mean m(n+1)/2 = 7.5;
    # S = 12.25 + 2.25 + 0.25 + 20.25 = 35; W = 12 S / (m² (n³ − n)) = 420 / 540 = 7/9
    r = np.array([[1, 2, 3, 4], [1, 3, 2, 4], [2, 1, 3, 4]], dtype=float)
    assert kendalls_w(r) == pytest.approx(7 / 9)
    assert kendalls_w(np.array([[1, 2, 3], [1, 2, 3]], dtype=float)) == pytest.approx(1.0)
    assert kendalls_w(np.array([[1, 2, 3], [3, 2, 1]], dtype=float)) == pytest.approx(0.0)


def test_w_hand_computed_with_ties():
    # 2 raters, 3 objects: (1, 2.5, 2.5) and (1, 2, 3). R = (2, 4.5, 5.5), mean 4, S = 4 + .25 + 2.25 = 6.5.
    # T = 2³ − 2 = 6 (one pair tied by rater 1). W = 12 · 6.5 / (4 · 24 − 2 · 6) = 78 / 84.
    r = np.array([[1, 2.5, 2.5], [1, 2, 3]])
    assert kendalls_w(r) == pytest.approx(78 / 84)
    # without the correction it would be 78 / 96: the correction matters
    assert kendalls_w(r) != pytest.approx(78 / 96)


def test_w_on_the_anxiety_example_of_irr_and_desctools():
    """The `anxiety` data of R's irr / DescTools (3 raters, 20 subjects, many ties): Wt = 0.5396569
    (`KendallW(anxiety, TRUE)`); uncorrected W = 0.5019 (irr's formula 12 var(R)(n−1) / (m²(n³−n)))."""
    r1 = [3, 3, 3, 4, 5, 5, 2, 3, 5, 2, 2, 6, 1, 5, 2, 2, 1, 2, 4, 3]
    r2 = [3, 6, 4, 6, 2, 4, 2, 4, 3, 3, 2, 3, 3, 3, 2, 2, 1, 3, 3, 4]
    r3 = [2, 1, 4, 4, 3, 2, 1, 6, 1, 1, 1, 2, 3, 3, 1, 1, 3, 3, 2, 2]
    r = np.vstack([stats.rankdata(x) for x in (r1, r2, r3)])
    assert kendalls_w(r) == pytest.approx(0.5396569, abs=1e-7)
    sums = r.sum(axis=0)
    assert 12 * np.var(sums, ddof=1) * 19 / (9 * (20**3 - 20)) == pytest.approx(0.5019, abs=1e-4)  # without the tie correction


@pytest.mark.parametrize("seed", range(5))
def test_w_matches_friedman_tie_corrected_chi_square(seed):
    """Independent implementation: Friedman's chi-square (scipy, tie-corrected) = m (n − 1) W."""
    rng = np.random.default_rng(seed)
    m, n = 6, 5
    scores = rng.integers(0, 3 + seed, size=(m, n))  # small ranges: plenty of ties
    r = np.vstack([stats.rankdata(row) for row in scores])
    chi2 = stats.friedmanchisquare(*r.T).statistic
    assert kendalls_w(r) == pytest.approx(chi2 / (m * (n - 1)))


def test_w_per_task_vectorised_equals_one_at_a_time():
    rng = np.random.default_rng(3)
    blocks, task_codes = [], []
    for t, (m, k) in enumerate([(3, 4), (2, 4), (5, 3), (1, 4)]):
        for _ in range(m):
            row = np.full(4, np.nan)
            row[:k] = stats.rankdata(rng.integers(0, 3, size=k))
            blocks.append(row)
            task_codes.append(t)
    rank = np.vstack(blocks)
    task = np.array(task_codes)
    w = kendalls_w_by_task(task, rank, 4)
    for t, k in enumerate([4, 4, 3, 4]):
        sub = rank[task == t][:, :k]
        expected = kendalls_w(sub) if len(sub) > 1 else np.nan
        assert w[t] == pytest.approx(expected, nan_ok=True)


def test_mid_ranks_from_levels():
    assert ranks_from_levels(np.array([[1, 2, 0, 1], [0, 0, 1, -1]])).tolist()[0] == [2.5, 4.0, 1.0, 2.5]
    second = ranks_from_levels(np.array([[0, 0, 1, -1]]))[0]
    assert second[:3].tolist() == [1.5, 1.5, 3.0] and np.isnan(second[3])


# ------------------------------------------------------------------------------------ agreement


def test_implied_pair_agreement_by_hand():
    # task 1: A>B>C and A>C>B agree on (A,B), (A,C), disagree on (B,C): 2/3; task 2: identical: 3/3 → 5/6
    frame = frame_of({(1, 1): ((0,), (1,), (2,)), (1, 2): ((0,), (2,), (1,)), (2, 1): ((1,), (0, 2)), (2, 2): ((1,), (0, 2))})
    assert implied_pair_agreement(rank_arrays(frame)) == pytest.approx(5 / 6)


def test_report_on_perfect_and_opposed_rankings():
    same = frame_of({(t, a): ((0,), (1,), (2,), (3,)) for t in range(3) for a in range(3)})
    report = ranking_stats(same)
    assert report.kendalls_w == pytest.approx(1.0) and report.pair_agreement == pytest.approx(1.0)
    assert report.krippendorff_alpha == pytest.approx(1.0)
    assert report.n_rankings == 9 and report.n_tasks == 3
    assert set(report.summary()) >= {"kendalls_w", "krippendorff_alpha_ordinal", "implied_pair_agreement", "plackett_luce_leaderboard"}


# ------------------------------------------------------------------------------------ annotators


def test_position_bias_and_loo_consensus():
    rankings, positions = {}, {}
    rng = np.random.default_rng(0)
    for t in range(12):
        for a in (1, 2, 3):
            shown = list(rng.permutation(4))
            positions[(t, a)] = shown
            if a == 3:  # ranks in the order shown: pure position bias
                rankings[(t, a)] = tuple((c,) for c in shown)
            else:  # agrees with the truth 0 > 1 > 2 > 3
                rankings[(t, a)] = ((0,), (1,), (2,), (3,))
    table = annotator_table(frame_of(rankings, positions=positions)).set_index("annotator")
    assert table.loc[3, "position_tau"] == pytest.approx(1.0)
    assert abs(table.loc[1, "position_tau"]) < 0.4
    assert table.loc[1, "loo_tau"] > 0.5 > table.loc[3, "loo_tau"]


def test_comparisons_from_rankings_feed_bradley_terry():
    frame = frame_of({(1, 1): ((0,), (1, 2))}, models=["x", "y", "z"])
    rows = comparisons_from_rankings(frame).sort_values(["model_a", "model_b"]).to_dict("records")
    assert rows == [{"model_a": "x", "model_b": "y", "winner": "a"}, {"model_a": "x", "model_b": "z", "winner": "a"}, {"model_a": "y", "model_b": "z", "winner": "tie"}]


# ------------------------------------------------------------------------------------ Plackett–Luce


def _breslow_loglik(log_w, items, level):
    w = np.exp(log_w)
    total = 0.0
    for row_items, row_level in zip(items, level):
        present = row_level >= 0
        for s in sorted(set(row_level[present])):
            chosen = row_items[(row_level == s)]
            at_risk = row_items[present & (row_level >= s)]
            total += np.log(w[chosen]).sum() - len(chosen) * np.log(w[at_risk].sum())
    return total


@pytest.mark.parametrize("with_ties", [False, True])
def test_plackett_luce_mm_reaches_the_maximum_likelihood(with_ties):
    rng = np.random.default_rng(1)
    n_items, truth = 5, np.log([4.0, 2.0, 1.0, 0.5, 0.25])
    items, level = [], []
    for _ in range(300):
        chosen = rng.choice(n_items, 4, replace=False)
        gumbel = truth[chosen] + rng.gumbel(size=4)
        order = np.argsort(-gumbel)
        lv = np.empty(4, dtype=int)
        lv[order] = np.arange(4)
        if with_ties and rng.random() < 0.4:
            lv[lv == 2] = 1  # the 2nd and 3rd tied
            lv[lv == 3] = 2
        items.append(chosen)
        level.append(lv)
    items, level = np.array(items), np.array(level)
    fit = PlackettLuce(prior=0.0, tol=1e-10, max_iter=5000).fit(items, level, n_items)
    # direct maximisation of the same likelihood (log w_0 fixed at 0 for identifiability)
    negative = lambda x: -_breslow_loglik(np.r_[0.0, x], items, level)  # noqa: E731
    best = optimize.minimize(negative, np.zeros(n_items - 1), method="BFGS").x
    direct = np.exp(np.r_[0.0, best])
    assert fit.worth_ / fit.worth_[0] == pytest.approx(direct / direct[0], rel=1e-3)
    assert list(np.argsort(-fit.worth_)) == [0, 1, 2, 3, 4]


def test_leaderboard_and_per_prompt_recover_the_planted_order():
    rng = np.random.default_rng(2)
    quality = {"best": 3.0, "good": 1.0, "fair": 0.0, "poor": -1.5}
    models = list(quality)
    rankings = {}
    for t in range(60):
        for a in range(3):
            noisy = np.array([quality[m] for m in models]) + rng.gumbel(size=4)
            rankings[(t, a)] = tuple((int(c),) for c in np.argsort(-noisy))
    frame = frame_of(rankings, models=models)
    board = plackett_luce_leaderboard(frame)
    assert list(board["model"]) == ["best", "good", "fair", "poor"]
    per = plackett_luce_per_prompt(frame)
    assert len(per) == 60 * 4
    assert per.groupby("task_id")["worth"].mean().to_numpy() == pytest.approx(1.0)
    # card 0 ("best") has the highest worth in most tasks
    top = per.loc[per.groupby("task_id")["worth"].idxmax(), "card"]
    assert (top == 0).mean() > 0.6


def test_collapsing_identical_rankings_gives_the_same_fit():
    from rlhf.ranking_stats import plackett_luce_models

    rng = np.random.default_rng(5)
    model_of = np.array([rng.permutation(6)[:3] for _ in range(400)])
    level = np.array([rng.permutation(3) for _ in range(400)])
    level[::7, 2] = level[::7, 1]  # some ties
    level = np.array([np.unique(row, return_inverse=True)[1] for row in level])
    collapsed = plackett_luce_models(model_of, level, 6, max_iter=2000)
    direct = PlackettLuce(max_iter=2000).fit(model_of, level, 6)
    assert collapsed.worth_ == pytest.approx(direct.worth_, rel=1e-5)


def test_vectorised_tau_b_equals_the_pure_function():
    from rlhf.ranking import kendall_tau
    from rlhf.ranking_stats import _groups_from_scores, tau_b_rows

    rng = np.random.default_rng(9)
    x = rng.integers(0, 3, size=(200, 5)).astype(float)
    y = rng.integers(0, 4, size=(200, 5)).astype(float)
    x[::5, 4] = np.nan
    y[::5, 4] = np.nan
    got = tau_b_rows(x, y)
    for row in range(200):
        want = kendall_tau(_groups_from_scores(x[row]), _groups_from_scores(y[row]))
        assert got[row] == pytest.approx(np.nan if want is None else want, nan_ok=True)
