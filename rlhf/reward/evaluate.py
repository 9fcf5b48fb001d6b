"""Held-out evaluation of a reward model: accuracy, calibration of σ(r_chosen − r_rejected), and the human ceiling.

Calibration follows Guo et al. 2017 ("On Calibration of Modern Neural Networks"): the model
predicts "chosen wins" with probability p = σ(r_c − r_r); its confidence is max(p, 1 − p) and
it is right when p > 0.5. Confidences are binned on [0.5, 1]; ECE = Σ_b (n_b / N) |acc_b − conf_b|.
The human ceiling is the mean share of annotators agreeing with each pair's label: how often
one person picks the aggregated answer, which a reward model learning from them rarely beats.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> list[dict[str, float]]:
    """Equal-width bins on [0.5, 1] of confidence: each with lower, upper, count, confidence, accuracy (NaN when empty)."""
    edges = np.linspace(0.5, 1.0, n_bins + 1)
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, n_bins - 1)
    bins = []
    for b in range(n_bins):
        members = index == b
        count = int(members.sum())
        bins.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "count": count,
                "confidence": float(confidence[members].mean()) if count else math.nan,
                "accuracy": float(correct[members].mean()) if count else math.nan,
            }
        )
    return bins


def expected_calibration_error(bins: list[dict[str, float]]) -> float:
    """ECE from reliability bins: Σ_b (n_b / N) |accuracy_b − confidence_b|."""
    total = sum(b["count"] for b in bins)
    if total == 0:
        return math.nan
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"]))


def preference_metrics(
    chosen_scores: np.ndarray, rejected_scores: np.ndarray, *, human_agreement: np.ndarray | None = None, n_bins: int = 10
) -> dict[str, Any]:
    """Metrics of raw rewards on held-out pairs (arrays of shape (N,)).

    Returns: pairs, accuracy (r_c > r_r; ties count ½), mean_margin (r_c − r_r), ece, bins
    (reliability diagram), human_agreement (mean of the given per-pair agreement, NaN when
    unknown) — the ceiling to read accuracy against.
    """
    chosen_scores, rejected_scores = np.asarray(chosen_scores, float), np.asarray(rejected_scores, float)
    n = len(chosen_scores)
    if n == 0:
        return {"pairs": 0, "accuracy": math.nan, "mean_margin": math.nan, "ece": math.nan, "bins": [], "human_agreement": math.nan}
    difference = chosen_scores - rejected_scores
    p_chosen = sigmoid(difference)
    confidence = np.maximum(p_chosen, 1.0 - p_chosen)
    correct = (difference > 0).astype(float) + 0.5 * (difference == 0)
    bins = reliability_bins(confidence, correct, n_bins)
    known = np.asarray(human_agreement, float) if human_agreement is not None else np.array([])
    known = known[~np.isnan(known)] if known.size else known
    return {
        "pairs": n,
        "accuracy": float(correct.mean()),
        "mean_margin": float(difference.mean()),
        "ece": expected_calibration_error(bins),
        "bins": bins,
        "human_agreement": float(known.mean()) if known.size else math.nan,
    }
