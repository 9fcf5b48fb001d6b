"""Annotator quality: one table with a row per annotator and named columns, and the flags it raises.

Each measure is a small function over long-format frames (one row per annotation) that
returns a frame indexed by annotator; `annotator_table` joins them and adds the flags whose
thresholds `QualityThresholds` documents. Everything is vectorised over annotations (bincount
and group sums), so a million ratings by a thousand annotators take well under a second.
The length-bias model (rlhf.length_model) is the exception: it fits the crowd's view of every
response, about 23 s for a million preferences.

Frames used here:
- ratings / labels: columns item, annotator, value (see rlhf.agreement.encode_ratings).
- preferences: item, annotator, value (a / b / tie / both_bad, in the task's terms),
  shown_left ('a' or 'b'), and for length bias len_a, len_b (characters) and, when known,
  response_a, response_b (response ids: rlhf.length_model compares judgments of the same responses).
- gold: item, value — the known answer of gold items.
- repeats: item, annotator, value, occasion — several judgments of the same item by the
  same annotator (earlier revisions of an edited annotation, or duplicated gold items);
  `occasion` orders them.
- times: annotator, time_spent_s — one row per task.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from rlhf.agreement import EncodedRatings, encode_ratings
from rlhf.length_model import length_bias

TABLE_COLUMNS = [
    "annotator",
    "n_annotations",
    "n_shared",
    "agreement_with_others",
    "loo_consensus_agreement",
    "loo_mean_abs_error",
    "loo_correlation",
    "gold_n",
    "gold_accuracy",
    "position_n",
    "left_share",
    "position_p_value",
    "length_n",
    "longer_share",
    "length_tilt",
    "length_p_value",
    "median_time_s",
    "retest_n",
    "retest_agreement",
    "ds_competence",
    "ds_skill",
    "spammer_score",
    "is_spammer",
    "flags",
]


@dataclass(frozen=True)
class QualityThresholds:
    """When the annotator table raises a flag. No flag is raised on fewer than `min_annotations`
    relevant annotations (too little evidence).

    min_annotations: annotations (of the kind the flag is about) an annotator needs before a flag.
    spammer_skill: flag "spammer" when the Dawid–Skene chance-corrected competence on ratings
        or on preferences
        (DawidSkene.skill_: 0 = answers independent of the item, 1 = always the latent truth)
        is below this. 0.1 sits well above the ~0 of random or constant answering and well
        below careful annotators (0.5+ on a 7-point scale in our simulations).
    position_p_value: flag "position_bias" when the two-sided binomial test of choosing the
        left response in decisive (a/b) judgments against 1/2 has a p-value below this.
    length_p_value: flag "length_bias" when the one-sided test of a tilt toward the longer
        response, beyond the crowd's judgments of the same responses and scaled to the
        annotator's own skill (rlhf.length_model), has a p-value below this. Comparing the
        share of longer picks with the crowd's share instead flagged careful annotators (they
        follow a preference for shorter answers more closely than the crowd): 5 flags, 3
        right, in the end-to-end run. Annotators with spam evidence are left out of the
        crowd's fit and never flagged for it (their choices ignore the responses).
    min_gold_accuracy: flag "low_gold_accuracy" below this share of correct gold answers.
    min_retest_agreement: flag "inconsistent" when repeated judgments of the same item agree
        less often than this.
    min_median_time_s: flag "too_fast" when the median time per task is below this (seconds).
    """

    min_annotations: int = 20
    spammer_skill: float = 0.1
    position_p_value: float = 0.01
    length_p_value: float = 0.01
    min_gold_accuracy: float = 0.5
    min_retest_agreement: float = 0.5
    min_median_time_s: float = 2.0


@dataclass(frozen=True)
class QualityInputs:
    """What the annotator table is computed from; every part is optional (see module docstring).

    ratings: item, annotator, value — all rubric dimensions may be stacked, with item keys
        that tell them apart (e.g. "task:dimension"); or ratings already encoded
        (rlhf.agreement.EncodedRatings), to share one encoding with agreement_report.
    level / value_domain: how rating values are encoded (rlhf.agreement.encode_ratings).
    preferences: item, annotator, value, shown_left[, len_a, len_b].
    gold: item, value — known answers for items of either frame.
    repeats: item, annotator, value, occasion.
    times: annotator, time_spent_s.
    """

    ratings: pd.DataFrame | EncodedRatings | None = None
    level: str = "ordinal"
    value_domain: Sequence[Any] | None = None
    preferences: pd.DataFrame | None = None
    gold: pd.DataFrame | None = None
    repeats: pd.DataFrame | None = None
    times: pd.DataFrame | None = None
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)


# --------------------------------------------------------------------------- agreement with the others


def consensus_agreement(enc: EncodedRatings) -> pd.DataFrame:
    """Per annotator, agreement with the other annotators of the same items (index: annotator).

    n_annotations: ratings given. n_shared: those on items someone else also rated.
    agreement_with_others: mean over shared ratings of the share of the item's other ratings
        equal to this one, (n_uc - 1) / (m_u - 1).
    loo_consensus_agreement: mean over shared ratings of agreement with the leave-one-out
        majority (the mode of the other ratings); when the others tie between k modes and this
        rating is one of them it earns 1/k, the expected agreement of a random tie-break.
    loo_mean_abs_error: mean |value - mean of the others| (numeric scales only).
    loo_correlation: Pearson correlation between the annotator's values and the leave-one-out
        means over their shared ratings (numeric scales only; NaN when either is constant).
    """
    cells = enc.cells()
    annotators = enc.n_annotators
    n_own = cells.count[cells.row_cell]
    m = cells.per_item[enc.item]
    shared = m >= 2
    who = enc.annotator
    n_annotations = np.bincount(who, minlength=annotators)
    n_shared = np.bincount(who, weights=shared, minlength=annotators)
    with np.errstate(invalid="ignore", divide="ignore"):
        pair_share = np.where(shared, (n_own - 1) / np.maximum(m - 1, 1), 0.0)
        agreement = np.bincount(who, weights=pair_share, minlength=annotators) / n_shared
        loo_credit = _loo_mode_credit(enc, n_own, shared)
        loo_agreement = np.bincount(who, weights=loo_credit, minlength=annotators) / n_shared
    table = pd.DataFrame(
        {
            "n_annotations": n_annotations.astype(np.int64),
            "n_shared": n_shared.astype(np.int64),
            "agreement_with_others": agreement,
            "loo_consensus_agreement": loo_agreement,
            "loo_mean_abs_error": np.nan,
            "loo_correlation": np.nan,
        },
        index=pd.Index(enc.annotator_labels, name="annotator"),
    )
    if enc.positions is not None and enc.level != "nominal":
        mae, correlation = _loo_numeric(enc, m, shared)
        table["loo_mean_abs_error"] = mae
        table["loo_correlation"] = correlation
    return table


@dataclass(frozen=True)
class _ItemModes:
    """Per item (arrays of length I), from its value counts: the largest count c1, how many
    values reach it (k1), the first two such values (v1, v1b; -1 when absent), and the
    runner-up count c2 < c1 with how many values reach it (k2)."""

    c1: np.ndarray
    k1: np.ndarray
    v1: np.ndarray
    v1b: np.ndarray
    c2: np.ndarray
    k2: np.ndarray


def _item_modes(enc: EncodedRatings) -> _ItemModes:
    cells = enc.cells()
    n_items = enc.n_items
    item, value, count = cells.item, cells.value, cells.count
    c1 = np.zeros(n_items)
    c2 = np.zeros(n_items)
    v1 = np.full(n_items, -1, dtype=np.int64)
    v1b = np.full(n_items, -1, dtype=np.int64)
    if item.size == 0:
        return _ItemModes(c1, np.zeros(n_items), v1, v1b, c2, np.zeros(n_items))
    # Cells are sorted by item, then value: per-item maxima are reduceat over group starts.
    starts = np.flatnonzero(np.r_[True, item[1:] != item[:-1]])
    c1[item[starts]] = np.maximum.reduceat(count, starts)
    top = count == c1[item]
    k1 = np.bincount(item, weights=top, minlength=n_items)
    top_cells = np.flatnonzero(top)
    top_items = item[top_cells]
    first = np.r_[True, top_items[1:] != top_items[:-1]]
    group_start = np.maximum.accumulate(np.where(first, np.arange(top_cells.size), 0))
    rank = np.arange(top_cells.size) - group_start
    v1[top_items[rank == 0]] = value[top_cells[rank == 0]]
    v1b[top_items[rank == 1]] = value[top_cells[rank == 1]]
    below = np.where(top, 0.0, count)
    c2[item[starts]] = np.maximum.reduceat(below, starts)
    k2 = np.bincount(item, weights=(~top) & (count == c2[item]), minlength=n_items)
    return _ItemModes(c1, k1, v1, v1b, c2, k2)


def _loo_mode_credit(enc: EncodedRatings, n_own: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """(n,) credit for agreeing with the leave-one-out majority (see consensus_agreement).

    Removing one's own rating lowers only one's own value's count, so the others' modes
    follow from the item's top two counts: no (ratings x V) array is formed.
    """
    modes = _item_modes(enc)
    u = enc.item
    own_others = n_own - 1
    unique_top = (n_own == modes.c1[u]) & (modes.k1[u] == 1)
    c2 = modes.c2[u]
    with np.errstate(invalid="ignore", divide="ignore"):
        credit = np.where(unique_top & (own_others > c2), 1.0, np.where(unique_top & (own_others == c2) & (c2 > 0), 1.0 / (1.0 + modes.k2[u]), 0.0))
    return np.where(shared, credit, 0.0)


def _loo_consensus(enc: EncodedRatings, n_own: np.ndarray) -> np.ndarray:
    """(n,) value code of the others' unique mode for each rating, -1 when they tie or there are no others."""
    modes = _item_modes(enc)
    u, own = enc.item, enc.value
    c1, k1, c2 = modes.c1[u], modes.k1[u], modes.c2[u]
    is_top = n_own == c1
    own_others = n_own - 1
    consensus = np.full(enc.n_annotations, -1, dtype=np.int64)
    # Own value alone at the top and still ahead without this rating.
    mine = is_top & (k1 == 1) & (own_others > c2) & (own_others > 0)
    consensus[mine] = own[mine]
    # Own value tied at the top with exactly one other value: that one wins without it.
    other_top = is_top & (k1 == 2)
    consensus[other_top] = np.where(modes.v1[u] == own, modes.v1b[u], modes.v1[u])[other_top]
    # Own value below a unique top.
    below = ~is_top & (k1 == 1)
    consensus[below] = modes.v1[u][below]
    return consensus


def _loo_numeric(enc: EncodedRatings, m: np.ndarray, shared: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out mean absolute error and correlation per annotator (see consensus_agreement)."""
    x = enc.positions[enc.value]
    item_sum = np.bincount(enc.item, weights=x, minlength=enc.n_items)
    with np.errstate(invalid="ignore", divide="ignore"):
        loo_mean = np.where(shared, (item_sum[enc.item] - x) / np.maximum(m - 1, 1), np.nan)
    who = enc.annotator[shared]
    xs, ys = x[shared], loo_mean[shared]
    size = enc.n_annotators
    n = np.bincount(who, minlength=size).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = np.bincount(who, weights=np.abs(xs - ys), minlength=size) / n
        mean_x = np.bincount(who, weights=xs, minlength=size) / n
        mean_y = np.bincount(who, weights=ys, minlength=size) / n
        dx, dy = xs - mean_x[who], ys - mean_y[who]
        sxy = np.bincount(who, weights=dx * dy, minlength=size)
        sxx = np.bincount(who, weights=dx * dx, minlength=size)
        syy = np.bincount(who, weights=dy * dy, minlength=size)
        correlation = np.where((sxx > 1e-12) & (syy > 1e-12), sxy / np.sqrt(sxx * syy), np.nan)
    return mae, correlation


def consensus_confusion(enc: EncodedRatings) -> pd.DataFrame:
    """Long-form confusion of each annotator against the leave-one-out majority of the others.

    Columns: annotator, consensus, value, count — one row per observed combination. Ratings
    whose item has no other rating, or whose others tie between modes, are left out (no
    consensus to compare with).
    """
    columns = ["annotator", "consensus", "value", "count"]
    if enc.n_annotations == 0:
        return pd.DataFrame(columns=columns)
    cells = enc.cells()
    consensus = _loo_consensus(enc, cells.count[cells.row_cell])
    known = consensus >= 0
    n_values = enc.n_values
    key = (enc.annotator[known] * n_values + consensus[known]) * n_values + enc.value[known]
    unique, count = np.unique(key, return_counts=True)
    annotator, rest = np.divmod(unique, n_values * n_values)
    consensus_code, value = np.divmod(rest, n_values)
    return pd.DataFrame(
        {
            "annotator": enc.annotator_labels.take(annotator),
            "consensus": enc.domain[consensus_code],
            "value": enc.domain[value],
            "count": count.astype(np.int64),
        },
        columns=columns,
    )


# --------------------------------------------------------------------------- gold, bias, time, retest


def gold_accuracy(labels: pd.DataFrame, gold: pd.DataFrame) -> pd.DataFrame:
    """Share of each annotator's answers on gold items equal to the known answer.

    `labels`: item, annotator, value; `gold`: item, value. Index: annotator; columns gold_n,
    gold_accuracy. Values are compared as given (numbers equal as numbers: 4 == 4.0).
    """
    answer = gold.drop_duplicates("item", keep="last").set_index("item")["value"]
    known = labels["item"].isin(answer.index)
    rows = labels.loc[known, ["annotator", "item", "value"]]
    expected = answer.reindex(rows["item"]).to_numpy()
    correct = _equal_values(rows["value"].to_numpy(), expected)
    grouped = pd.DataFrame({"annotator": rows["annotator"].to_numpy(), "correct": correct}).groupby("annotator")["correct"]
    return pd.DataFrame({"gold_n": grouped.size().astype(np.int64), "gold_accuracy": grouped.mean()}).rename_axis("annotator")


def _equal_values(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    try:
        return np.asarray(left, dtype=np.float64) == np.asarray(right, dtype=np.float64)
    except (TypeError, ValueError):
        return np.asarray([a == b for a, b in zip(left, right)], dtype=bool)


def binomial_two_sided(successes: np.ndarray, trials: np.ndarray, p: float = 0.5) -> np.ndarray:
    """Two-sided exact binomial p-values, element-wise; equal to scipy.stats.binomtest(k, n, p).pvalue.

    For p = 1/2 the distribution is symmetric and the p-value is min(1, 2 min(P(X<=k), P(X>=k)))
    for all annotators at once; otherwise scipy's binomtest is called per element. NaN when n = 0.
    """
    from scipy import stats

    successes = np.asarray(successes, dtype=np.int64)
    trials = np.asarray(trials, dtype=np.int64)
    out = np.full(successes.shape, np.nan)
    valid = trials > 0
    if p == 0.5:
        k, n = successes[valid], trials[valid]
        tail = np.minimum(stats.binom.cdf(k, n, 0.5), stats.binom.sf(k - 1, n, 0.5))
        out[valid] = np.minimum(1.0, 2 * tail)
        return out
    for index in np.flatnonzero(valid):
        out[index] = stats.binomtest(int(successes[index]), int(trials[index]), p).pvalue
    return out


def position_bias(preferences: pd.DataFrame) -> pd.DataFrame:
    """Share of decisive (a / b) choices that picked the response shown on the left.

    Index: annotator; columns position_n (decisive judgments), left_share, position_p_value
    (two-sided binomial test against 1/2). Sides are randomised per annotator, so an unbiased
    annotator picks left half the time whatever the responses.
    """
    decisive = preferences[preferences["value"].isin(["a", "b"])]
    left = (decisive["value"].to_numpy() == decisive["shown_left"].to_numpy()).astype(np.int64)
    grouped = pd.DataFrame({"annotator": decisive["annotator"].to_numpy(), "left": left}).groupby("annotator")["left"]
    n, k = grouped.size(), grouped.sum()
    return pd.DataFrame(
        {"position_n": n.astype(np.int64), "left_share": k / n, "position_p_value": binomial_two_sided(k.to_numpy(), n.to_numpy())},
        index=n.index,
    ).rename_axis("annotator")


def median_time(times: pd.DataFrame) -> pd.Series:
    """Median seconds per task for each annotator (rows with no time left out)."""
    known = times.dropna(subset=["time_spent_s"])
    return known.groupby("annotator")["time_spent_s"].median().rename("median_time_s").rename_axis("annotator")


def retest_agreement(repeats: pd.DataFrame) -> pd.DataFrame:
    """Agreement of an annotator with themselves on an item judged more than once.

    Consecutive judgments (ordered by `occasion`) of the same (item, annotator) form a pair;
    index: annotator; columns retest_n (pairs) and retest_agreement (share of equal pairs).
    """
    if repeats is None or repeats.empty:
        return pd.DataFrame(columns=["retest_n", "retest_agreement"]).rename_axis("annotator")
    ordered = repeats.sort_values(["annotator", "item", "occasion"], kind="stable")
    same_key = (ordered["annotator"].to_numpy()[1:] == ordered["annotator"].to_numpy()[:-1]) & (
        ordered["item"].to_numpy()[1:] == ordered["item"].to_numpy()[:-1]
    )
    values = ordered["value"].to_numpy()
    equal = _equal_values(values[1:], values[:-1])
    pairs = pd.DataFrame({"annotator": ordered["annotator"].to_numpy()[1:][same_key], "equal": equal[same_key]})
    grouped = pairs.groupby("annotator")["equal"]
    return pd.DataFrame({"retest_n": grouped.size().astype(np.int64), "retest_agreement": grouped.mean()}).rename_axis("annotator")


DS_MAX_ITER = 10
"""EM rounds for the table's Dawid–Skene fit. On our simulations (bench/bench_stats.py,
tests/test_quality.py) skills move by about 0.01 between round 10 and convergence: the slow
tail of EM refines posteriors, not who is a spammer, and the threshold is far from both."""


def dawid_skene_quality(labels: pd.DataFrame | EncodedRatings) -> pd.DataFrame:
    """Dawid–Skene competence, chance-corrected skill and Raykar–Yu spammer score per annotator."""
    from rlhf.aggregation.dawid_skene import DawidSkene

    model = DawidSkene(max_iter=DS_MAX_ITER, tol=1e-5).fit(labels)
    return pd.DataFrame(
        {
            "ds_n": model.n_annotations_,
            "ds_competence": model.competence_,
            "ds_skill": model.skill_,
            "spammer_score": model.spammer_score_,
        }
    ).rename_axis("annotator")


# --------------------------------------------------------------------------- the table


def annotator_table(inputs: QualityInputs) -> pd.DataFrame:
    """One row per annotator with every quality measure the inputs allow, and its flags.

    Columns: TABLE_COLUMNS (measures that do not apply are NaN / 0). `flags` is a
    comma-separated string of raised flags (see QualityThresholds), '' when none.
    Dawid–Skene runs separately on ratings and on preferences; the ds_* and spammer_score
    columns hold the annotation-weighted mean of the two, and the spammer flag is raised
    when either part alone (with enough annotations) falls below the skill threshold.
    """
    parts: list[pd.DataFrame] = []
    ds_parts: list[pd.DataFrame] = []
    agreement_frames: list[pd.DataFrame] = []
    if _has_rows(inputs.ratings):
        enc = encode_ratings(inputs.ratings, inputs.level, value_domain=inputs.value_domain)
        agreement_frames.append(consensus_agreement(enc))
        ds_parts.append(dawid_skene_quality(enc))
    if inputs.preferences is not None and len(inputs.preferences):
        prefs = inputs.preferences
        enc_prefs = encode_ratings(prefs[["item", "annotator", "value"]], "nominal")
        agreement_frames.append(consensus_agreement(enc_prefs))
        ds_parts.append(dawid_skene_quality(enc_prefs))
        if "shown_left" in prefs.columns:
            parts.append(position_bias(prefs))
    spammers = _spam_evidence(ds_parts, inputs.thresholds)
    if inputs.preferences is not None and len(inputs.preferences) and {"len_a", "len_b"} <= set(inputs.preferences.columns):
        parts.append(length_bias(inputs.preferences, reference_excludes=spammers))
    if agreement_frames:
        parts.append(_combine_agreement(agreement_frames))
    if ds_parts:
        combined = _combine_weighted(ds_parts, "ds_n", ["ds_competence", "ds_skill", "spammer_score"])
        combined["spam_evidence"] = combined.index.isin(list(spammers))
        parts.append(combined)
    if inputs.gold is not None and len(inputs.gold):
        labelled = [_long_frame(frame) for frame in (inputs.ratings, inputs.preferences) if _has_rows(frame)]
        if labelled:
            parts.append(gold_accuracy(pd.concat(labelled, ignore_index=True), inputs.gold))
    if inputs.times is not None and len(inputs.times):
        parts.append(median_time(inputs.times).to_frame())
    if inputs.repeats is not None and len(inputs.repeats):
        parts.append(retest_agreement(inputs.repeats))
    table = pd.concat(parts, axis=1) if parts else pd.DataFrame()
    table = table.reindex(columns=[c for c in TABLE_COLUMNS if c not in ("annotator", "is_spammer", "flags")] + ["ds_n", "spam_evidence"])
    for column in ("n_annotations", "n_shared", "gold_n", "position_n", "length_n", "retest_n", "ds_n"):
        table[column] = table[column].fillna(0).astype(np.int64)
    table = _flag(table, inputs.thresholds)
    table = table.rename_axis("annotator").reset_index()
    return table.sort_values("annotator", kind="stable").reset_index(drop=True)[TABLE_COLUMNS]


def _has_rows(data: pd.DataFrame | EncodedRatings | None) -> bool:
    if data is None:
        return False
    return (data.n_annotations if isinstance(data, EncodedRatings) else len(data)) > 0


def _long_frame(data: pd.DataFrame | EncodedRatings) -> pd.DataFrame:
    """item, annotator, value columns (decoded when given encoded ratings)."""
    if isinstance(data, EncodedRatings):
        return pd.DataFrame(
            {"item": data.item_labels.take(data.item), "annotator": data.annotator_labels.take(data.annotator), "value": data.domain[data.value]}
        )
    return data[["item", "annotator", "value"]]


def _combine_agreement(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Sum counts and take shared-rating-weighted means of the agreement columns across frames."""
    if len(frames) == 1:
        return frames[0]
    index = frames[0].index
    for frame in frames[1:]:
        index = index.union(frame.index)
    out = pd.DataFrame(index=index)
    out["n_annotations"] = sum(f["n_annotations"].reindex(index).fillna(0) for f in frames)
    out["n_shared"] = sum(f["n_shared"].reindex(index).fillna(0) for f in frames)
    for column in ("agreement_with_others", "loo_consensus_agreement"):
        out[column] = _weighted_mean([f.reindex(index) for f in frames], column, "n_shared")
    for column in ("loo_mean_abs_error", "loo_correlation"):
        # Numeric measures come from the ratings only (preferences are nominal).
        out[column] = frames[0][column].reindex(index)
    return out


def _weighted_mean(frames: list[pd.DataFrame], column: str, weight: str) -> pd.Series:
    total = 0.0
    weights = 0.0
    for frame in frames:
        w = frame[weight].fillna(0)
        v = frame[column]
        total = total + (v.fillna(0) * w.where(v.notna(), 0))
        weights = weights + w.where(v.notna(), 0)
    return (total / weights).where(weights > 0)


def _spam_evidence(ds_parts: list[pd.DataFrame], thresholds: QualityThresholds) -> set:
    """Annotators whose Dawid–Skene skill on ratings or on preferences is below the spammer threshold
    (with enough annotations of that kind): a spammer in either kind of task is a spammer."""
    out: set = set()
    for part in ds_parts:
        out |= set(part.index[(part["ds_n"] >= thresholds.min_annotations) & (part["ds_skill"] < thresholds.spammer_skill)])
    return out


def _combine_weighted(frames: list[pd.DataFrame], weight: str, columns: list[str]) -> pd.DataFrame:
    if len(frames) == 1:
        return frames[0]
    index = frames[0].index
    for frame in frames[1:]:
        index = index.union(frame.index)
    aligned = [f.reindex(index) for f in frames]
    out = pd.DataFrame(index=index)
    out[weight] = sum(f[weight].fillna(0) for f in aligned)
    for column in columns:
        out[column] = _weighted_mean(aligned, column, weight)
    return out


def _flag(table: pd.DataFrame, thresholds: QualityThresholds) -> pd.DataFrame:
    """Add is_spammer and the comma-separated flags column (see QualityThresholds)."""
    enough = thresholds.min_annotations
    rules = {
        "spammer": table["spam_evidence"].eq(True),
        "position_bias": (table["position_n"] >= enough) & (table["position_p_value"] < thresholds.position_p_value),
        "length_bias": (table["length_n"] >= enough) & (table["length_p_value"] < thresholds.length_p_value) & ~table["spam_evidence"].eq(True),
        "low_gold_accuracy": (table["gold_n"] >= min(enough, 5)) & (table["gold_accuracy"] < thresholds.min_gold_accuracy),
        "inconsistent": (table["retest_n"] >= min(enough, 5)) & (table["retest_agreement"] < thresholds.min_retest_agreement),
        "too_fast": (table["n_annotations"] >= enough) & (table["median_time_s"] < thresholds.min_median_time_s),
    }
    table = table.copy()
    table["is_spammer"] = rules["spammer"].eq(True)
    raised = pd.DataFrame({name: rule.eq(True) for name, rule in rules.items()}, index=table.index)
    names = np.array(list(rules))
    table["flags"] = [",".join(names[row]) for row in raised.to_numpy()]
    return table
