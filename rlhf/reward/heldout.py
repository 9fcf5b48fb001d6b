"""Held-out evaluation beyond pair accuracy: accuracy by pair strength, correlation with held-out ratings, their ceilings.

- By strength (Llama 2 reports 80.7% on "significantly better" vs 54.7% on "negligibly better"):
  an export's `margin` is the share of agreeing votes that said "much better" times
  `margin_per_strength`, so a pair is `much_better` when its margin is at least half of that
  (most agreeing votes said "much better"), else `better`. Each bucket's human agreement is the
  ceiling beside its accuracy.
- Ratings: Pearson and Spearman correlation of each head's prediction with the held-out
  responses' mean normalised score per dimension, and of the scalar reward with their weighted
  mean (`overall`; a pairwise model has only this one). The ceiling beside it is how well one
  annotator's normalised score correlates with the mean of the response's other annotators
  (leave-one-out; raw exports only, NaN otherwise).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd


def strength_buckets(margins: np.ndarray, margin_per_strength: float = 1.0) -> np.ndarray:
    """`much_better` / `better` per pair from its margin (NaN margin: `better`)."""
    margins = np.nan_to_num(np.asarray(margins, float), nan=0.0)
    return np.where(margins >= 0.5 * margin_per_strength, "much_better", "better")


def accuracy_by_strength(
    chosen_scores: np.ndarray, rejected_scores: np.ndarray, margins: np.ndarray, agreement: np.ndarray | None = None, *, margin_per_strength: float = 1.0
) -> dict[str, dict[str, Any]]:
    """{bucket: {pairs, accuracy, human_agreement}} for `much_better` and `better` (ties of scores count ½)."""
    difference = np.asarray(chosen_scores, float) - np.asarray(rejected_scores, float)
    correct = (difference > 0) + 0.5 * (difference == 0)
    buckets = strength_buckets(margins, margin_per_strength)
    agreement = np.full(len(difference), np.nan) if agreement is None else np.asarray(agreement, float)
    out = {}
    for bucket in ("much_better", "better"):
        members = buckets == bucket
        known = agreement[members & ~np.isnan(agreement)]
        out[bucket] = {
            "pairs": int(members.sum()),
            "accuracy": float(correct[members].mean()) if members.any() else math.nan,
            "human_agreement": float(known.mean()) if known.size else math.nan,
        }
    return out


def correlations(predicted: np.ndarray, target: np.ndarray) -> dict[str, Any]:
    """Pearson and Spearman of two (N,) arrays over the rows where both are finite; NaN below 3 rows or no spread."""
    from scipy import stats

    predicted, target = np.asarray(predicted, float), np.asarray(target, float)
    keep = np.isfinite(predicted) & np.isfinite(target)
    n = int(keep.sum())
    if n < 3 or np.ptp(predicted[keep]) == 0 or np.ptp(target[keep]) == 0:
        return {"n": n, "pearson": math.nan, "spearman": math.nan}
    return {"n": n, "pearson": float(stats.pearsonr(predicted[keep], target[keep])[0]), "spearman": float(stats.spearmanr(predicted[keep], target[keep])[0])}


def weighted_target(targets: np.ndarray, weights: Sequence[float]) -> np.ndarray:
    """Σ_d w_d t_d / Σ_d w_d over the rated dimensions of each row, (N, D) → (N,); NaN when none is rated."""
    weights = np.asarray(weights, float)
    rated = ~np.isnan(targets)
    total = (np.nan_to_num(targets) * weights).sum(axis=1)
    mass = (rated * weights).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mass > 0, total / np.where(mass > 0, mass, 1.0), np.nan)


def rating_metrics(
    scalar: np.ndarray, heads: np.ndarray | None, targets: np.ndarray, dimensions: Sequence[str], weights: Sequence[float], ceiling: dict[str, float] | None = None
) -> dict[str, Any]:
    """Correlation with held-out ratings: per dimension (when the model has heads) and `overall` (the scalar).

    `scalar` (N,), `heads` (N, D) or None, `targets` (N, D) normalised held-out scores.
    """
    ceiling = ceiling or {}
    out: dict[str, Any] = {"responses": int(len(scalar)), "dimensions": {}}
    if heads is not None:
        for d, name in enumerate(dimensions):
            out["dimensions"][name] = {**correlations(heads[:, d], targets[:, d]), "ceiling": ceiling.get(name, math.nan)}
    out["overall"] = {**correlations(scalar, weighted_target(targets, weights)), "ceiling": ceiling.get("overall", math.nan)}
    return out


def leave_one_out_ceiling(ratings: pd.DataFrame, dimensions: Sequence[str], weights: Sequence[float], response_key: str = "response_key") -> dict[str, float]:
    """Pearson correlation of each rating (normalised, per dimension) with the mean of the same response's other ratings.

    `ratings`: one row per rating with `response_key` and `target_<dimension>`; responses rated
    once are left out. Adds `overall` on the weighted mean of the dimensions.
    """
    columns = [f"target_{d}" for d in dimensions]
    frame = ratings[[response_key] + columns].copy()
    frame["target_overall"] = weighted_target(frame[columns].to_numpy(float), weights)
    out = {}
    for name in list(dimensions) + ["overall"]:
        column = f"target_{name}"
        values = frame[[response_key, column]].dropna()
        grouped = values.groupby(response_key)[column]
        n, total = grouped.transform("count"), grouped.transform("sum")
        keep = n > 1
        others = (total[keep] - values.loc[keep, column]) / (n[keep] - 1)
        out[name] = correlations(values.loc[keep, column].to_numpy(), others.to_numpy())["pearson"]
    return out
