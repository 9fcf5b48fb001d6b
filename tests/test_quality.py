"""Annotator quality measures: hand-computed small cases, scipy's binomial test, planted spammers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rlhf.agreement import encode_ratings
from rlhf.quality import (
    TABLE_COLUMNS,
    QualityInputs,
    QualityThresholds,
    annotator_table,
    binomial_two_sided,
    consensus_agreement,
    consensus_confusion,
    gold_accuracy,
    length_bias,
    median_time,
    position_bias,
    retest_agreement,
)


def frame(rows, columns=("item", "annotator", "value")) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns))


# Item 1: a=1, b=1, c=2. Item 2: a=3, b=3. Item 3: a=5 alone.
SMALL = frame([(1, "a", 1), (1, "b", 1), (1, "c", 2), (2, "a", 3), (2, "b", 3), (3, "a", 5)])


def test_agreement_with_others_by_hand():
    table = consensus_agreement(encode_ratings(SMALL, "interval"))
    a, b, c = table.loc["a"], table.loc["b"], table.loc["c"]
    assert (a["n_annotations"], a["n_shared"]) == (3, 2)
    # a on item 1 agrees with 1 of 2 others, on item 2 with 1 of 1.
    assert a["agreement_with_others"] == pytest.approx((0.5 + 1.0) / 2)
    assert c["agreement_with_others"] == pytest.approx(0.0)
    # Leave-one-out majority: for a on item 1 the others are {1, 2}: a tie, a is one of 2 modes -> 1/2.
    assert a["loo_consensus_agreement"] == pytest.approx((0.5 + 1.0) / 2)
    assert c["loo_consensus_agreement"] == pytest.approx(0.0)
    # Leave-one-out mean: a item 1 -> mean(1, 2) = 1.5, |1 - 1.5|; item 2 -> |3 - 3|.
    assert a["loo_mean_abs_error"] == pytest.approx(0.25)
    assert c["loo_mean_abs_error"] == pytest.approx(1.0)
    assert b["loo_correlation"] == pytest.approx(1.0)


def test_nominal_ratings_have_no_numeric_columns():
    table = consensus_agreement(encode_ratings(SMALL.assign(value=SMALL["value"].astype(str)), "nominal"))
    assert table["loo_mean_abs_error"].isna().all()


def test_confusion_against_the_leave_one_out_majority():
    data = frame([(1, "a", 1), (1, "b", 1), (1, "c", 2), (2, "a", 2), (2, "b", 2), (2, "c", 2)])
    confusion = consensus_confusion(encode_ratings(data, "ordinal"))
    as_dict = {(r.annotator, r.consensus, r.value): r.count for r in confusion.itertuples()}
    # c: item 1 others say 1 (c said 2), item 2 others say 2.
    assert as_dict[("c", 1, 2)] == 1 and as_dict[("c", 2, 2)] == 1
    # a on item 1: others are {1 (b), 2 (c)}: a tie, so no consensus row for it.
    assert ("a", 1, 1) not in as_dict and as_dict[("a", 2, 2)] == 1


@pytest.mark.parametrize("k, n", [(0, 10), (3, 10), (5, 10), (9, 10), (20, 20), (48, 100), (70, 100), (1, 1)])
def test_binomial_p_values_equal_scipy(k, n):
    from scipy.stats import binomtest

    assert binomial_two_sided(np.array([k]), np.array([n]))[0] == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-9)
    assert binomial_two_sided(np.array([k]), np.array([n]), 0.3)[0] == pytest.approx(binomtest(k, n, 0.3).pvalue, rel=1e-9)


def test_position_bias_counts_only_decisive_choices():
    rows = [(i, "lefty", "a", "a") for i in range(18)] + [(i, "lefty", "b", "a") for i in range(18, 20)]
    rows += [(i, "fair", "a" if i % 2 else "b", "a") for i in range(20)] + [(99, "fair", "tie", "a")]
    table = position_bias(frame(rows, ("item", "annotator", "value", "shown_left")))
    assert table.loc["lefty", "left_share"] == pytest.approx(0.9)
    assert table.loc["lefty", "position_n"] == 20 and table.loc["fair", "position_n"] == 20
    assert table.loc["lefty", "position_p_value"] < 0.001
    assert table.loc["fair", "position_p_value"] == pytest.approx(1.0)


def test_length_bias_uses_only_unequal_lengths():
    rows = [
        (1, "w", "a", 100, 20),  # longer chosen
        (2, "w", "b", 10, 50),  # longer chosen
        (3, "w", "a", 10, 50),  # shorter chosen
        (4, "w", "a", 30, 30),  # equal: left out
        (5, "w", "tie", 10, 50),  # not decisive: left out
    ]
    table = length_bias(frame(rows, ("item", "annotator", "value", "len_a", "len_b")))
    assert table.loc["w", "length_n"] == 3
    assert table.loc["w", "longer_share"] == pytest.approx(2 / 3)


def crowd_with_a_verbose_annotator(seed: int = 0, with_ids: bool = True) -> pd.DataFrame:
    """Six responses per prompt, every pair judged by 3 of 12 annotators. The better responses
    are mostly the shorter ones. Careful annotators c0-c7 judge by quality with sharpness 1-6;
    `long` adds 3 logits per doubling toward the longer response; `left` picks the left side
    half of the time; `spam` answers at random."""
    rng = np.random.default_rng(seed)
    sharpness = {f"c{i}": 1.0 + 5.0 * i / 7 for i in range(8)} | {"long": 4.0, "left": 4.0, "spam": 0.0}
    names = list(sharpness) + ["c8"]
    sharpness["c8"] = 3.0
    rows, item, response = [], 0, 0
    for _prompt in range(100):
        lengths = rng.integers(40, 400, size=6)
        quality = -0.8 * np.log2(lengths / 150) + rng.normal(0, 0.7, size=6)  # shorter is better, mostly
        ids = np.arange(response, response + 6)
        response += 6
        for i in range(6):
            for j in range(i + 1, 6):
                item += 1
                for who in rng.choice(names, 3, replace=False):
                    shown_left = "a" if rng.random() < 0.5 else "b"
                    tilt = np.clip(np.log2(lengths[i] / lengths[j]), -1, 1)
                    logit = sharpness[who] * (quality[i] - quality[j]) + (3.0 * tilt if who == "long" else 0.0)
                    choice = "a" if rng.random() < 1 / (1 + np.exp(-logit)) else "b"
                    if who == "spam":
                        choice = "a" if rng.random() < 0.5 else "b"
                    if who == "left" and rng.random() < 0.5:
                        choice = shown_left
                    rows.append((item, who, choice, shown_left, lengths[i], lengths[j], ids[i], ids[j]))
    columns = ("item", "annotator", "value", "shown_left", "len_a", "len_b", "response_a", "response_b")
    prefs = frame(rows, columns)
    return prefs if with_ids else prefs.drop(columns=["response_a", "response_b"])


@pytest.mark.parametrize("with_ids", [True, False])
def test_length_bias_flags_the_verbose_annotator_and_no_careful_one(with_ids):
    prefs = crowd_with_a_verbose_annotator(with_ids=with_ids)
    table = length_bias(prefs, reference_excludes={"spam"})
    # item sides instead of response ids: one free difference per item, less to go on
    assert table.loc["long", "length_p_value"] < (1e-3 if with_ids else 1e-2)
    assert table.loc["long", "length_tilt"] > table.drop(index=["long", "spam"])["length_tilt"].max() + 0.5
    others = table.drop(index="long")
    assert (others["length_p_value"] > 0.01).all(), others
    if with_ids:  # the share alone does not single it out: the noisiest careful annotator picks longer as often
        assert table.loc["long", "longer_share"] < table.loc["c0", "longer_share"]


def test_length_bias_is_not_confounded_with_skill():
    """The sharpest careful annotators pick the longer response least often, and the noisiest
    most: against the crowd's pooled share a binomial test flags them; the model does not."""
    prefs = crowd_with_a_verbose_annotator(seed=3)
    table = length_bias(prefs, reference_excludes={"spam"})
    careful = table.loc[[f"c{i}" for i in range(8)]]
    crowd = prefs[prefs["value"].isin(["a", "b"]) & (prefs["len_a"] != prefs["len_b"]) & (prefs["annotator"] != "spam")]
    chose_longer = (crowd["value"] == "a") == (crowd["len_a"] > crowd["len_b"])
    pooled = binomial_two_sided((careful["longer_share"] * careful["length_n"]).round().to_numpy(), careful["length_n"].to_numpy(), chose_longer.mean())
    assert careful.loc["c7", "longer_share"] < chose_longer.mean() < careful.loc["c0", "longer_share"]
    assert (pooled < 0.01).any()  # the naive view: someone careful looks biased
    assert (careful["length_p_value"] > 0.01).all()


def test_length_bias_without_unequal_lengths_or_with_one_sided_choices():
    equal = frame([(1, "w", "a", 50, 50), (2, "w", "b", 80, 80)], ("item", "annotator", "value", "len_a", "len_b"))
    table = length_bias(equal)
    assert table.loc["w", "length_n"] == 0 and np.isnan(table.loc["w", "length_p_value"])
    always_a = frame([(i, "w", "a", 10 * (i + 1), 30) for i in range(8)], ("item", "annotator", "value", "len_a", "len_b"))
    table = length_bias(always_a)  # perfectly separated: finite or NaN, never an error
    assert table.loc["w", "length_n"] == 7
    assert np.isnan(table.loc["w", "length_p_value"]) or 0.0 <= table.loc["w", "length_p_value"] <= 1.0


def test_length_bias_on_any_small_frame_gives_probabilities_or_nan():
    """Whatever the judgments (one annotator, all ties, equal lengths, perfect separation, zero
    lengths): no error, no warning, a row per annotator with a decisive judgment, p in [0, 1] or NaN."""
    import warnings

    from hypothesis import given, settings
    from hypothesis import strategies as st

    row = st.tuples(
        st.integers(0, 8), st.sampled_from(["u", "v", "w"]), st.sampled_from(["a", "b", "tie", "both_bad"]), st.sampled_from(["a", "b"]),
        st.integers(0, 500), st.integers(0, 500), st.integers(0, 5), st.integers(0, 5),
    )

    @settings(max_examples=120, deadline=None)
    @given(st.lists(row, min_size=1, max_size=40), st.booleans())
    def check(rows, with_ids):
        prefs = frame(rows, ("item", "annotator", "value", "shown_left", "len_a", "len_b", "response_a", "response_b"))
        if not with_ids:
            prefs = prefs.drop(columns=["response_a", "response_b"])
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            table = length_bias(prefs, reference_excludes={"w"})
        assert set(table.index) == set(prefs.loc[prefs["value"].isin(["a", "b"]), "annotator"])
        p = table["length_p_value"].to_numpy(dtype=float)
        assert np.all(np.isnan(p) | ((p >= 0) & (p <= 1)))
        no_unequal_pair = table["length_n"].to_numpy() == 0
        assert np.isnan(p[no_unequal_pair]).all() and table["length_tilt"][no_unequal_pair].isna().all()

    check()


def test_gold_accuracy_compares_numbers_as_numbers():
    labels = frame([(1, "a", 7), (2, "a", 3.0), (1, "b", 6), (9, "b", 1)])
    gold = frame([(1, 7.0), (2, 3)], ("item", "value"))
    table = gold_accuracy(labels, gold)
    assert table.loc["a"].tolist() == [2, 1.0]
    assert table.loc["b"].tolist() == [1, 0.0]


def test_median_time_and_retest():
    times = frame([("a", 3.0), ("a", 5.0), ("a", None), ("b", 1.0)], ("annotator", "time_spent_s"))
    assert median_time(times).to_dict() == {"a": 4.0, "b": 1.0}
    repeats = frame(
        [(1, "a", 3, 1), (1, "a", 3, 2), (1, "a", 4, 3), (2, "a", "x", 1), (2, "a", "x", 2), (1, "b", 5, 1)],
        ("item", "annotator", "value", "occasion"),
    )
    table = retest_agreement(repeats)
    # a: item 1 pairs (3,3) equal, (3,4) not; item 2 (x,x) equal. b has no repeat.
    assert table.loc["a", "retest_n"] == 3 and table.loc["a", "retest_agreement"] == pytest.approx(2 / 3)
    assert "b" not in table.index


def simulated_inputs(seed=0) -> QualityInputs:
    """8 careful annotators, 1 spammer, 1 left-clicker; a 5-point scale and pairwise choices."""
    rng = np.random.default_rng(seed)
    n_items, annotators = 400, [f"w{i}" for i in range(10)]
    truth = rng.integers(1, 6, n_items)
    rows = []
    for item in range(n_items):
        for who in rng.choice(annotators, 5, replace=False):
            if who == "w0":
                value = int(rng.integers(1, 6))  # spammer: ignores the item
            else:
                value = int(np.clip(truth[item] + rng.choice([-1, 0, 0, 0, 0, 0, 0, 1]), 1, 5))
            rows.append((item, who, value))
    ratings = frame(rows)
    better = rng.choice(["a", "b"], 300)
    prefs = []
    for item in range(300):
        for who in rng.choice(annotators, 4, replace=False):
            left = rng.choice(["a", "b"])
            if who == "w1":
                choice = left  # always clicks the left response
            else:
                choice = better[item] if rng.random() < 0.85 else ("b" if better[item] == "a" else "a")
            prefs.append((10_000 + item, who, choice, left, 100, 120))
    preferences = frame(prefs, ("item", "annotator", "value", "shown_left", "len_a", "len_b"))
    gold = frame([(i, int(truth[i])) for i in range(60)], ("item", "value"))
    times = frame([(w, 1.0 if w == "w0" else 12.0) for w in annotators for _ in range(30)], ("annotator", "time_spent_s"))
    return QualityInputs(ratings=ratings, level="ordinal", preferences=preferences, gold=gold, times=times)


def test_annotator_table_flags_the_planted_spammer_and_the_left_clicker():
    table = annotator_table(simulated_inputs()).set_index("annotator")
    assert list(annotator_table(simulated_inputs()).columns) == TABLE_COLUMNS
    assert len(table) == 10
    assert table.loc["w0", "is_spammer"]
    assert "spammer" in table.loc["w0", "flags"] and "too_fast" in table.loc["w0", "flags"]
    assert "position_bias" in table.loc["w1", "flags"]
    assert table.loc["w1", "left_share"] == pytest.approx(1.0)
    careful = table.drop(index=["w0", "w1"])
    assert (careful["flags"] == "").all()
    assert not careful["is_spammer"].any()
    assert table.loc["w0", "ds_skill"] < careful["ds_skill"].min()
    assert table.loc["w0", "agreement_with_others"] < careful["agreement_with_others"].min()
    assert table["gold_n"].sum() == 300  # 60 gold items x 5 ratings
    assert table.loc["w2", "median_time_s"] == 12.0


def test_a_spammer_neither_gets_a_length_flag_nor_sets_the_crowds_length_share():
    """w0 (spam evidence from its ratings) always picks the longer response; the careful ones the better, mostly shorter, one."""
    rng = np.random.default_rng(1)
    annotators = [f"w{i}" for i in range(10)]
    prefs = []
    better = np.where(rng.random(600) < 0.8, "a", "b")  # the shorter one is usually better
    for item in range(600):
        for who in rng.choice(annotators, 4, replace=False):
            left = rng.choice(["a", "b"])
            careful = better[item] if rng.random() < 0.9 else ("b" if better[item] == "a" else "a")
            choice = "b" if who == "w0" else left if who == "w1" else careful
            prefs.append((10_000 + item, who, choice, left, 100, 120))  # b is the longer one
    inputs = simulated_inputs()
    table = annotator_table(QualityInputs(**{**inputs.__dict__, "preferences": frame(prefs, ("item", "annotator", "value", "shown_left", "len_a", "len_b"))}))
    table = table.set_index("annotator")
    assert table.loc["w0", "is_spammer"] and table.loc["w0", "longer_share"] == 1.0
    assert "length_bias" not in table.loc["w0", "flags"]
    careful = table.drop(index=["w0", "w1"])
    assert (careful["longer_share"] < 0.35).all()
    assert not careful["flags"].str.contains("length_bias").any()  # against a share with w0 in it (~0.36) they would be


def test_thresholds_are_respected():
    relaxed = QualityThresholds(spammer_skill=-1.0, position_p_value=0.0, min_median_time_s=0.0, min_gold_accuracy=0.0)
    inputs = simulated_inputs()
    table = annotator_table(QualityInputs(**{**inputs.__dict__, "thresholds": relaxed}))
    assert (table["flags"] == "").all()


def test_table_from_ratings_only():
    table = annotator_table(QualityInputs(ratings=SMALL, level="interval", thresholds=QualityThresholds(min_annotations=1)))
    assert list(table["annotator"]) == ["a", "b", "c"]
    assert table["position_n"].eq(0).all() and table["left_share"].isna().all()


def test_leave_one_out_modes_equal_a_brute_force_reference():
    from collections import Counter

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from rlhf.quality import _loo_consensus, _loo_mode_credit

    @settings(max_examples=150, deadline=None)
    @given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6), st.integers(1, 4)), min_size=1, max_size=40))
    def check(rows):
        data = frame(rows).drop_duplicates(["item", "annotator"])
        enc = encode_ratings(data, "ordinal")
        cells = enc.cells()
        n_own = cells.count[cells.row_cell]
        shared = cells.per_item[enc.item] >= 2
        credit = _loo_mode_credit(enc, n_own, shared)
        consensus = _loo_consensus(enc, n_own)
        for row in range(enc.n_annotations):
            others = Counter(enc.value[(enc.item == enc.item[row]) & (np.arange(enc.n_annotations) != row)].tolist())
            if not others:
                assert credit[row] == 0 and consensus[row] == -1
                continue
            best = max(others.values())
            modes = sorted(v for v, c in others.items() if c == best)
            assert credit[row] == pytest.approx(1 / len(modes) if enc.value[row] in modes else 0.0)
            assert consensus[row] == (modes[0] if len(modes) == 1 else -1)

    check()
