"""Every agreement statistic against its reference on hypothesis-generated data.

References: `krippendorff.alpha` (reliability-data path), `sklearn.metrics.cohen_kappa_score`
(unweighted always; weighted only where label-index weighting equals value weighting, i.e. the
pair's labels are consecutive integers), and slow dense implementations of Fleiss' kappa,
Gwet's AC1/AC2 (Handbook, 4th ed., ch. 4; irrCAC's `gwet` formulas) and percent agreement
written here from the textbook formulas.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from rlhf.agreement import (
    AgreementUndefined,
    cohen_kappa,
    encode_ratings,
    fleiss_kappa,
    gwet_ac,
    krippendorff_alpha,
    pairwise_cohen,
    percent_agreement,
)

SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW_REFERENCE = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def reliability_matrices(draw, min_coders=1, max_coders=6, max_units=12, values=(1, 2, 3, 4, 5, 6, 7), fill=None):
    """A coders x units matrix of values with NaN for missing ratings."""
    coders = draw(st.integers(min_coders, max_coders))
    units = draw(st.integers(1, max_units))
    domain = draw(st.lists(st.sampled_from(values), min_size=1, max_size=len(values), unique=True))
    present = fill if fill is not None else draw(st.floats(0.3, 1.0))
    matrix = np.full((coders, units), np.nan)
    for c in range(coders):
        for u in range(units):
            if fill == 1.0 or draw(st.floats(0, 1)) < present:
                matrix[c, u] = draw(st.sampled_from(domain))
    return matrix


def to_long(matrix: np.ndarray) -> pd.DataFrame:
    coder, unit = np.nonzero(~np.isnan(matrix))
    return pd.DataFrame({"item": unit, "annotator": coder, "value": matrix[coder, unit]})


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@SETTINGS
@given(reliability_matrices(min_coders=2), st.sampled_from(["nominal", "ordinal", "interval", "ratio"]))
def test_alpha_equals_krippendorff_package(matrix, level):
    import krippendorff

    long = to_long(matrix)
    assume(len(long) > 0)
    try:
        expected = krippendorff.alpha(reliability_data=matrix, level_of_measurement=level)
    except ValueError:
        expected = math.nan  # no unit with two coders, or a single value overall
    try:
        ours = krippendorff_alpha(long, level)
    except AgreementUndefined:
        ours = math.nan
    if math.isnan(expected) or math.isnan(ours):
        assert math.isnan(expected) and math.isnan(ours)
    else:
        assert ours == pytest.approx(expected, abs=1e-9)


@SLOW_REFERENCE
@given(reliability_matrices(min_coders=2, max_coders=2, max_units=15))
def test_unweighted_cohen_equals_sklearn(matrix):
    from sklearn.metrics import cohen_kappa_score

    shared = ~np.isnan(matrix).any(axis=0)
    assume(shared.sum() >= 1)
    a, b = matrix[0, shared].astype(int), matrix[1, shared].astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = cohen_kappa_score(a, b)
    result = cohen_kappa(to_long(matrix), "ordinal")
    assert result.n_items == shared.sum()
    assert result.percent_agreement == pytest.approx(np.mean(a == b))
    if math.isnan(expected):
        assert result.kappa is None
    else:
        assert result.kappa == pytest.approx(expected, abs=1e-9)


@st.composite
def consecutive_label_pairs(draw, scale=(1, 5), max_units=15):
    """Two coders' full ratings whose labels together cover a run of consecutive integers.

    Built so by construction (every point of the run is placed, then shuffled) instead of
    filtering random matrices: the filter rejected most draws and tripped hypothesis'
    filter_too_much health check.
    """
    low = draw(st.integers(scale[0], scale[1] - 1))
    high = draw(st.integers(low + 1, scale[1]))
    run = list(range(low, high + 1))
    units = draw(st.integers((len(run) + 1) // 2, max_units))
    filler = draw(st.lists(st.sampled_from(run), min_size=2 * units - len(run), max_size=2 * units - len(run)))
    pooled = draw(st.permutations(run + filler))
    return np.array([pooled[:units], pooled[units:]], dtype=float)


@SLOW_REFERENCE
@given(consecutive_label_pairs())
def test_weighted_cohen_equals_sklearn_when_every_scale_point_is_used(matrix):
    from sklearn.metrics import cohen_kappa_score

    a, b = matrix[0].astype(int), matrix[1].astype(int)
    labels = np.union1d(a, b)
    # Only here do label indices and values differ by a constant: consecutive integers.
    assert labels.size >= 2 and labels[-1] - labels[0] == labels.size - 1
    result = cohen_kappa(to_long(matrix), "interval")
    assert result.n_items == a.size
    for weights, ours in (("linear", result.kappa_linear), ("quadratic", result.kappa_quadratic)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = cohen_kappa_score(a, b, weights=weights)
        if math.isnan(expected):
            assert ours is None
        else:
            assert ours == pytest.approx(expected, abs=1e-9)


@SETTINGS
@given(reliability_matrices(min_coders=2, max_coders=5, max_units=10))
def test_pairwise_table_equals_cohen_per_pair(matrix):
    long = to_long(matrix)
    assume(len(long) > 0)
    table = pairwise_cohen(encode_ratings(long, "interval"), min_overlap=1)
    expected_pairs = 0
    for i in range(matrix.shape[0]):
        for j in range(i + 1, matrix.shape[0]):
            shared = ~np.isnan(matrix[[i, j]]).any(axis=0)
            if shared.any() and i in set(long["annotator"]) and j in set(long["annotator"]):
                expected_pairs += 1
    assert len(table) == expected_pairs
    for row in table.itertuples(index=False):
        single = cohen_kappa(long, "interval", annotators=(row.annotator_a, row.annotator_b))
        assert single.n_items == row.n_items
        for field in ("kappa", "kappa_linear", "kappa_quadratic"):
            value = getattr(row, field)
            mine = getattr(single, field)
            assert (mine is None and math.isnan(value)) or mine == pytest.approx(value, abs=1e-12)


def dense_gwet(matrix: np.ndarray, weights: str) -> tuple[float, float, float]:
    """Gwet's AC1/AC2 with missing ratings, straight from the Handbook's formulas (ch. 4)."""
    categories = np.unique(matrix[~np.isnan(matrix)])
    q = categories.size
    x = categories.astype(float)
    w = np.zeros((q, q))
    for k in range(q):
        for l in range(q):
            if weights == "identity":
                w[k, l] = float(k == l)
            elif weights == "linear":
                w[k, l] = 1 - abs(x[k] - x[l]) / (x.max() - x.min())
            elif weights == "quadratic":
                w[k, l] = 1 - (x[k] - x[l]) ** 2 / (x.max() - x.min()) ** 2
            elif weights == "ordinal":
                m = abs(k - l) + 1
                w[k, l] = m * (m - 1) / 2
            elif weights == "ratio":
                w[k, l] = 1 - ((x[k] - x[l]) / (x[k] + x[l])) ** 2 / ((x.max() - x.min()) / (x.max() + x.min())) ** 2
    if weights == "ordinal":
        w = 1 - w / w.max()
    units = matrix.shape[1]
    r = np.zeros((units, q))
    for u in range(units):
        for c in range(matrix.shape[0]):
            if not np.isnan(matrix[c, u]):
                r[u, np.searchsorted(categories, matrix[c, u])] += 1
    r = r[r.sum(axis=1) > 0]
    ri = r.sum(axis=1)
    rstar = r @ w.T
    two = ri >= 2
    pa = np.mean([(r[u] * (rstar[u] - 1)).sum() / (ri[u] * (ri[u] - 1)) for u in np.flatnonzero(two)])
    pi = (r / ri[:, None]).mean(axis=0)
    pe = w.sum() / (q * (q - 1)) * np.sum(pi * (1 - pi))
    return (pa - pe) / (1 - pe), pa, pe


@SETTINGS
@given(reliability_matrices(min_coders=2), st.sampled_from(["identity", "linear", "quadratic", "ordinal", "ratio"]))
def test_gwet_equals_dense_handbook_reference(matrix, weights):
    values = matrix[~np.isnan(matrix)]
    assume(np.unique(values).size >= 2)
    assume(((~np.isnan(matrix)).sum(axis=0) >= 2).any())
    value, pa, pe = dense_gwet(matrix, weights)
    assume(pe < 1 - 1e-9)
    result = gwet_ac(to_long(matrix), weights)
    assert result.p_observed == pytest.approx(pa, abs=1e-9)
    assert result.p_expected == pytest.approx(pe, abs=1e-9)
    assert result.value == pytest.approx(value, abs=1e-9)


def dense_fleiss(matrix: np.ndarray) -> float:
    """Fleiss (1971) from a complete coders x units matrix."""
    categories = np.unique(matrix)
    n_raters, units = matrix.shape
    counts = np.array([[np.sum(matrix[:, u] == c) for c in categories] for u in range(units)], dtype=float)
    p_units = (np.sum(counts**2, axis=1) - n_raters) / (n_raters * (n_raters - 1))
    p_bar = p_units.mean()
    shares = counts.sum(axis=0) / (units * n_raters)
    p_e = np.sum(shares**2)
    return (p_bar - p_e) / (1 - p_e)


@SETTINGS
@given(reliability_matrices(min_coders=2, fill=1.0))
def test_fleiss_equals_dense_reference_on_complete_data(matrix):
    assume(np.unique(matrix).size >= 2)
    assert fleiss_kappa(to_long(matrix)).value == pytest.approx(dense_fleiss(matrix), abs=1e-9)


@SETTINGS
@given(reliability_matrices(min_coders=2, max_coders=5, fill=0.6))
def test_fleiss_applies_exactly_when_every_item_has_the_same_count(matrix):
    long = to_long(matrix)
    assume(len(long) > 0)
    per_item = long.groupby("item").size()
    result = fleiss_kappa(long)
    if per_item.nunique() > 1:
        assert result.value is None and "same number of raters" in result.reason
    elif per_item.iloc[0] < 2:
        assert result.value is None


@SETTINGS
@given(reliability_matrices(min_coders=2))
def test_percent_agreement_equals_dense_reference(matrix):
    shares = []
    for u in range(matrix.shape[1]):
        column = matrix[:, u][~np.isnan(matrix[:, u])]
        if column.size >= 2:
            pairs = [(i, j) for i in range(column.size) for j in range(i + 1, column.size)]
            shares.append(np.mean([column[i] == column[j] for i, j in pairs]))
    assume(shares)
    assert percent_agreement(to_long(matrix)) == pytest.approx(np.mean(shares), abs=1e-12)
