"""Agreement statistics against published worked examples and hand computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rlhf.agreement import (
    AgreementConfig,
    AgreementUndefined,
    DuplicateRating,
    agreement_report,
    alpha_bootstrap,
    cohen_kappa,
    counts_to_cells,
    alpha_from_cells,
    encode_ratings,
    fleiss_kappa,
    gwet_ac,
    krippendorff_alpha,
    pairwise_cohen,
    percent_agreement,
)

NAN = np.nan

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 coders x 12
# units with missing values (also Gwet's Handbook, 4th ed., p. 120, used by irrCAC's tests).
KRIPPENDORFF_2011 = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories; kappa = 0.210.
FLEISS_WIKIPEDIA = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]

def wide_to_long(matrix) -> pd.DataFrame:
    """Rows = coders, columns = units (the reliability-data layout), NaN = missing."""
    rows = [(unit, coder, value) for coder, row in enumerate(matrix) for unit, value in enumerate(row) if value == value and value is not None]
    return pd.DataFrame(rows, columns=["item", "annotator", "value"])


def subjects_to_long(table) -> pd.DataFrame:
    """A subjects x categories count table as long rows (raters numbered within each subject)."""
    rows = []
    for subject, counts in enumerate(table):
        rater = 0
        for category, count in enumerate(counts):
            for _ in range(count):
                rows.append((subject, rater, category))
                rater += 1
    return pd.DataFrame(rows, columns=["item", "annotator", "value"])


def contingency_to_long(table) -> pd.DataFrame:
    """A two-rater contingency table (rows = rater A's category 1..q, columns = rater B's) as long rows."""
    rows, item = [], 0
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            for _ in range(count):
                rows += [(item, "A", i + 1), (item, "B", j + 1)]
                item += 1
    return pd.DataFrame(rows, columns=["item", "annotator", "value"])


@pytest.mark.parametrize(
    "level, expected", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849), ("ratio", 0.797)]
)
def test_krippendorff_2011_worked_example(level, expected):
    assert round(krippendorff_alpha(wide_to_long(KRIPPENDORFF_2011), level), 3) == expected


def test_krippendorff_three_coders_example():
    # The krippendorff package's documented example (3 coders x 15 units, missing values).
    data = [
        [NAN, NAN, NAN, NAN, NAN, 3, 4, 1, 2, 1, 1, 3, 3, NAN, 3],
        [1, NAN, 2, 1, 3, 3, 4, 3, NAN, NAN, NAN, NAN, NAN, NAN, NAN],
        [NAN, NAN, 2, 1, 3, 4, 4, NAN, 2, 1, 1, 3, 3, NAN, 4],
    ]
    long = wide_to_long(data)
    assert krippendorff_alpha(long, "nominal") == pytest.approx(0.691358, abs=1e-6)
    assert krippendorff_alpha(long, "interval") == pytest.approx(0.810845, abs=1e-6)


def test_alpha_from_value_counts_matches_long_format():
    long = wide_to_long(KRIPPENDORFF_2011)
    enc = encode_ratings(long, "interval")
    table = np.zeros((enc.n_items, enc.n_values))
    np.add.at(table, (enc.item, enc.value), 1)
    for level in ("nominal", "ordinal", "interval", "ratio"):
        assert alpha_from_cells(counts_to_cells(table), level, enc.positions) == pytest.approx(krippendorff_alpha(long, level), abs=1e-12)


def test_ordinal_labels_need_an_order_and_use_it():
    long = wide_to_long(KRIPPENDORFF_2011)
    names = {1: "very low", 2: "low", 3: "mid", 4: "high", 5: "very high"}
    labelled = long.assign(value=long["value"].map(names))
    with pytest.raises(ValueError, match="value_domain"):
        krippendorff_alpha(labelled, "ordinal")
    order = ["very low", "low", "mid", "high", "very high"]
    assert round(krippendorff_alpha(labelled, "ordinal", value_domain=order), 3) == 0.815
    assert round(krippendorff_alpha(labelled, "nominal"), 3) == 0.743


def test_alpha_undefined_cases():
    with pytest.raises(AgreementUndefined, match="two or more"):
        krippendorff_alpha(pd.DataFrame({"item": [1, 2], "annotator": ["a", "a"], "value": [1, 2]}))
    with pytest.raises(AgreementUndefined, match="same value"):
        krippendorff_alpha(pd.DataFrame({"item": [1, 1], "annotator": ["a", "b"], "value": [3, 3]}), "interval")


def test_fleiss_wikipedia_example():
    result = fleiss_kappa(subjects_to_long(FLEISS_WIKIPEDIA))
    assert round(result.value, 3) == 0.210
    assert result.raters_per_item == 14
    assert result.p_observed == pytest.approx(0.378, abs=1e-3)
    assert result.p_expected == pytest.approx(0.213, abs=1e-3)


def test_fleiss_gwet_gender_example():
    # irrCAC raw_gender (Gwet's Handbook): 4 raters x 15 subjects, complete: kappa 0.129, AC1 0.208.
    raters = [
        "a a a a a b b b c a a a a a b".split(),
        "a a a a b a b c c a a a a b a".split(),
        "a b b c a a b b c a b b c a a".split(),
        "c c c c a a b b c c c c c a a".split(),
    ]
    long = wide_to_long(raters)
    fleiss = fleiss_kappa(long)
    assert round(fleiss.value, 3) == 0.129
    assert round(fleiss.p_observed, 3) == 0.456 and round(fleiss.p_expected, 3) == 0.375
    ac1 = gwet_ac(long)
    assert round(ac1.value, 3) == 0.208 and round(ac1.p_expected, 3) == 0.312


def test_fleiss_is_none_with_a_reason_when_raters_differ():
    result = fleiss_kappa(wide_to_long(KRIPPENDORFF_2011))
    assert result.value is None
    assert "same number of raters" in result.reason


@pytest.mark.parametrize(
    "weights, expected, pa, pe",
    [
        ("identity", 0.775, 0.818, 0.190),
        ("quadratic", 0.914, 0.975, 0.714),
        ("linear", 0.859, 0.939, 0.571),
        ("ordinal", 0.899, 0.968, 0.685),
        ("ratio", 0.857, 0.954, 0.678),
    ],
)
def test_gwet_handbook_four_raters(weights, expected, pa, pe):
    # Gwet (2014) Handbook p. 120 data; values as in irrCAC's test suite (test_gwet.py, raw_4raters).
    result = gwet_ac(wide_to_long(KRIPPENDORFF_2011), weights)
    assert round(result.value, 3) == expected
    assert round(result.p_observed, 3) == pa
    assert round(result.p_expected, 3) == pe


@pytest.mark.parametrize(
    "raters, expected",
    [
        # irrCAC raw_5observers: 5 observers, 15 units, 0..3 scale, missing ratings.
        (
            [
                [1, 1, 2, NAN, 0, 0, 1, 1, 2, 2, NAN, 0, 1, 3, 1],
                [1, 1, 3, 0, 0, 0, 0, NAN, 2, 1, 1, 0, 2, 3, 1],
                [2, 0, 3, 0, 0, 0, 2, 2, 2, 1, 0, 0, 2, 2, 1],
                [NAN, 1, 3, NAN, NAN, NAN, NAN, 0, NAN, 1, 0, 0, 2, 2, NAN],
                [2, NAN, NAN, 0, 0, 0, 1, NAN, 2, NAN, NAN, NAN, NAN, 3, 1],
            ],
            0.497,
        ),
        # irrCAC raw_g1g2: 4 raters, 14 units, letters a..e, missing ratings.
        (
            [
                ["a", "b", "c", "c", "b", "a", "d", "a", "b", None, None, None, "b", "b"],
                ["a", "b", "c", "c", "b", "b", "d", "a", "b", "e", None, None, "b", "a"],
                [None, "c", "c", "c", "b", "c", "d", "b", "b", "e", "a", "c", "c", "c"],
                ["a", "b", "c", "c", "b", "d", "d", "a", "b", "e", "a", None, "b", "b"],
            ],
            0.685,
        ),
        # irrCAC raw_ben_gerry: two raters, 12 units.
        (
            [
                ["a", "a", "b", "b", "d", "c", "c", "c", "e", "d", "d", "a"],
                ["b", "a", "b", "b", "b", "c", "c", "c", "e", None, "d", "d"],
            ],
            0.661,
        ),
    ],
)
def test_gwet_ac1_irrcac_examples(raters, expected):
    assert round(gwet_ac(wide_to_long(raters)).value, 3) == expected


def test_gwet_counts_unused_scale_points_as_categories():
    long = wide_to_long(KRIPPENDORFF_2011)
    seen = gwet_ac(long)
    widened = gwet_ac(long, value_domain=[1, 2, 3, 4, 5, 6, 7])
    assert widened.n_categories == 7 and seen.n_categories == 5
    # Chance agreement T_w/(q(q-1)) sum pi(1-pi) shrinks with q, so AC1 rises.
    assert widened.p_expected < seen.p_expected
    assert widened.value > seen.value


# Irrcac table tests (Gwet's Handbook): Cohen's kappa of two-rater contingency tables.
ABSTRACTORS = [[13, 0, 0], [0, 20, 7], [0, 4, 56]]
DIAGNOSIS = [[40, 4, 4, 17], [6, 25, 2, 13], [4, 1, 21, 12], [15, 5, 9, 45]]


@pytest.mark.parametrize(
    "table, kappa, linear, quadratic",
    [(ABSTRACTORS, 0.796, 0.843, 0.892), (DIAGNOSIS, 0.432, 0.407, 0.383)],
)
def test_cohen_kappa_contingency_examples(table, kappa, linear, quadratic):
    result = cohen_kappa(contingency_to_long(table), "ordinal")
    assert round(result.kappa, 3) == kappa
    assert round(result.kappa_linear, 3) == linear
    assert round(result.kappa_quadratic, 3) == quadratic


def test_cohen_kappa_wikipedia_example():
    # Wikipedia, "Cohen's kappa": 50 proposals, both yes 20, A yes B no 5, A no B yes 10, both no 15 -> 0.4.
    long = contingency_to_long([[20, 5], [10, 15]])
    result = cohen_kappa(long)
    assert result.kappa == pytest.approx(0.4)
    assert result.kappa_linear is None and result.percent_agreement == pytest.approx(0.7)


def test_weighted_kappa_uses_value_distance_not_label_index():
    # Values 1, 2 and 7 on a 1..7 scale: 2 -> 7 is five scale steps, not one label step.
    a = [1, 2, 7, 7, 2, 1, 7, 2]
    b = [1, 7, 7, 2, 2, 2, 7, 1]
    long = pd.DataFrame({"item": list(range(8)) * 2, "annotator": ["a"] * 8 + ["b"] * 8, "value": a + b})
    result = cohen_kappa(long, "interval")
    x, y = np.array(a, float), np.array(b, float)
    observed = np.abs(x - y).mean()
    expected = np.abs(x[:, None] - y[None, :]).mean()
    assert result.kappa_linear == pytest.approx(1 - observed / expected)
    expected_sq = ((x[:, None] - y[None, :]) ** 2).mean()
    assert result.kappa_quadratic == pytest.approx(1 - ((x - y) ** 2).mean() / expected_sq)
    from sklearn.metrics import cohen_kappa_score

    # scikit-learn weights by index into the labels seen ([1, 2, 7]): a different number.
    assert abs(cohen_kappa_score(a, b, weights="linear") - result.kappa_linear) > 0.01


def test_pairwise_cohen_respects_min_overlap_and_orients_pairs():
    long = wide_to_long(KRIPPENDORFF_2011)
    every = pairwise_cohen(encode_ratings(long, "ordinal"), min_overlap=1)
    assert len(every) == 6
    assert (every["n_items"] >= 8).all()
    assert list(every.columns) == ["annotator_a", "annotator_b", "n_items", "percent_agreement", "kappa", "kappa_linear", "kappa_quadratic"]
    assert (every["annotator_a"] < every["annotator_b"]).all()
    assert len(pairwise_cohen(encode_ratings(long, "ordinal"), min_overlap=10)) == 2
    # Each row equals cohen_kappa on that pair alone.
    row = every.iloc[3]
    single = cohen_kappa(long, "ordinal", annotators=(row["annotator_a"], row["annotator_b"]))
    assert single.kappa == pytest.approx(row["kappa"]) and single.kappa_quadratic == pytest.approx(row["kappa_quadratic"])


def test_percent_agreement_by_hand():
    long = pd.DataFrame({"item": [1, 1, 1, 2, 2, 3], "annotator": ["a", "b", "c", "a", "b", "a"], "value": ["x", "x", "y", "y", "y", "x"]})
    # item 1: pairs (x,x) agree, two (x,y) do not -> 1/3; item 2: 1; item 3 has one rating.
    assert percent_agreement(long) == pytest.approx((1 / 3 + 1) / 2)


@pytest.mark.parametrize("level", ["nominal", "ordinal", "interval", "ratio"])
def test_alpha_bootstrap_interval_is_reproducible_and_matches_a_naive_loop(level):
    import krippendorff

    long = wide_to_long(KRIPPENDORFF_2011)
    first = alpha_bootstrap(long, level, n_bootstrap=2000, seed=3)
    second = alpha_bootstrap(long, level, n_bootstrap=2000, seed=3)
    assert first == second
    assert first.low < krippendorff_alpha(long, level) <= first.high
    # Reference: resample the 11 pairable units with replacement, alpha from the krippendorff package.
    data = np.array(KRIPPENDORFF_2011, dtype=float)
    pairable = np.flatnonzero((~np.isnan(data)).sum(axis=0) >= 2)
    rng = np.random.default_rng(0)
    values = []
    for _ in range(2000):
        sample = data[:, rng.choice(pairable, pairable.size)]
        try:
            values.append(krippendorff.alpha(sample, level_of_measurement=level, value_domain=[1, 2, 3, 4, 5]))
        except ValueError:
            continue
    with np.errstate(invalid="ignore"):
        values = np.array(values)
    values = values[np.isfinite(values)]
    low, high = np.percentile(values, [2.5, 97.5])
    assert first.low == pytest.approx(low, abs=0.05)
    assert first.high == pytest.approx(high, abs=0.05)


def test_report_collects_everything_and_two_annotators_get_cohen():
    long = wide_to_long(KRIPPENDORFF_2011[:2])
    report = agreement_report(long, "ordinal", config=AgreementConfig(n_bootstrap=200))
    summary = report.summary()
    assert summary["n_annotators"] == 2 and summary["n_items"] == 11 and summary["n_annotations"] == 20
    assert summary["cohen_kappa"] == pytest.approx(cohen_kappa(long).kappa)
    assert {"cohen_kappa_linear", "cohen_kappa_quadratic", "gwet_ac2", "krippendorff_alpha_ci"} <= set(summary)
    assert summary["fleiss_kappa"] is None and "fleiss_kappa" in summary["notes"]
    nominal = agreement_report(long, "nominal", config=AgreementConfig(n_bootstrap=0)).summary()
    assert "cohen_kappa_linear" not in nominal and nominal["krippendorff_alpha_ci"] is None


def test_encoding_errors_name_the_row():
    with pytest.raises(DuplicateRating, match="rows 0 and 2"):
        encode_ratings(pd.DataFrame({"item": [1, 2, 1], "annotator": ["a", "a", "a"], "value": [1, 2, 3]}))
    with pytest.raises(ValueError, match="missing column 'value'"):
        encode_ratings(pd.DataFrame({"item": [1], "annotator": ["a"]}))
    with pytest.raises(ValueError, match="needs numeric values"):
        encode_ratings(pd.DataFrame({"item": [1], "annotator": ["a"], "value": ["x"]}), "interval")
    with pytest.raises(ValueError, match=">= 0"):
        encode_ratings(pd.DataFrame({"item": [1], "annotator": ["a"], "value": [-1.0]}), "ratio")
    with pytest.raises(ValueError, match="row 1: value 9"):
        encode_ratings(pd.DataFrame({"item": [1, 2], "annotator": ["a", "a"], "value": [1, 9]}), "ordinal", value_domain=[1, 2, 3])
    with pytest.raises(ValueError, match="row 0: missing annotator"):
        encode_ratings(pd.DataFrame({"item": [1], "annotator": [None], "value": [1]}))


def test_missing_values_are_dropped_not_errors():
    long = pd.DataFrame({"item": [1, 1, 2, 2], "annotator": ["a", "b", "a", "b"], "value": [1.0, 1.0, NAN, 2.0]})
    assert encode_ratings(long, "interval").n_annotations == 3


def test_many_annotators_and_items_stay_sparse():
    # 60,000 items x 60,000 annotators: a dense item x annotator matrix would take 28 GB.
    rng = np.random.default_rng(0)
    n_items = 60_000
    items = np.repeat(np.arange(n_items), 3)
    annotators = rng.permutation(np.tile(np.arange(n_items), 3))
    values = rng.integers(1, 6, items.size)
    long = pd.DataFrame({"item": items, "annotator": annotators, "value": values})
    long = long.drop_duplicates(["item", "annotator"])
    report = agreement_report(long, "interval", config=AgreementConfig(n_bootstrap=50, min_overlap=1))
    assert abs(report.krippendorff_alpha) < 0.05
    assert report.pairwise_summary.n_pairs > 100_000
