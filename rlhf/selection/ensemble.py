"""A bootstrap ensemble of linear Bradley–Terry heads: the spread of a reward difference on frozen features.

Why this estimate: a reward model's uncertainty about a pair is mostly about its last layer
given the few labels it saw; refitting only the last (linear) layer on bootstrap resamples of
the labelled pairs is the cheap, last-layer form of a deep ensemble (Lakshminarayanan et al.
2017, "Simple and scalable predictive uncertainty estimation using deep ensembles"), with the
bootstrap supplying the diversity a shared frozen backbone would otherwise remove.
It needs one forward pass of the backbone per response (the features), then K small convex
fits — seconds on a CPU, where K full reward models or MC-dropout passes would cost K forward
passes per response (and decoders like SmolLM2 have no dropout to sample).

Each head k fits P(a ≻ b) = σ(w_k · (x_a − x_b)) on a bootstrap resample of the labelled pairs
with an L2 penalty `l2`·|w|²/2 (L-BFGS). `predict` returns the heads' mean difference and their
standard deviation, both in logits.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def fit_head(diffs: np.ndarray, wins: np.ndarray, *, l2: float, weights: np.ndarray | None = None) -> np.ndarray:
    """Logistic regression without intercept: diffs (N, D), wins (N,) in {0, 1} → w (D,).

    Minimises Σ_i c_i·[log(1 + e^{z_i}) − y_i z_i] + l2·|w|²/2 with z = diffs @ w, c = `weights`
    (bootstrap counts; default 1).
    """
    from scipy.optimize import minimize

    diffs = np.asarray(diffs, dtype=np.float64)
    wins = np.asarray(wins, dtype=np.float64)
    counts = np.ones(len(wins)) if weights is None else np.asarray(weights, dtype=np.float64)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = diffs @ w  # (N,)
        value = float(counts @ (np.logaddexp(0.0, z) - wins * z) + 0.5 * l2 * w @ w)
        grad = diffs.T @ (counts * (1.0 / (1.0 + np.exp(-z)) - wins)) + l2 * w
        return value, grad

    result = minimize(loss, np.zeros(diffs.shape[1]), jac=True, method="L-BFGS-B", options={"maxiter": 200})
    return result.x


@dataclass
class HeadEnsemble:
    """K linear Bradley–Terry heads on bootstrap resamples; `fit(diffs, wins) -> self`, `predict(diffs)`."""

    n_heads: int = 8
    """Heads in the ensemble (bootstrap resamples)."""
    l2: float = 1.0
    """L2 penalty of each head's fit (keeps a head on few labels finite)."""
    seed: int = 0
    weights_: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    """(K, D) fitted heads."""

    def fit(self, diffs: np.ndarray, wins: np.ndarray) -> "HeadEnsemble":
        """diffs (N, D) = x_a − x_b of labelled pairs; wins (N,) = 1 when a was preferred."""
        diffs = np.asarray(diffs, dtype=np.float64)
        n = diffs.shape[0]
        rng = np.random.default_rng(self.seed)
        heads = []
        for _ in range(self.n_heads):
            counts = np.bincount(rng.integers(0, n, size=n), minlength=n) if n else np.zeros(0)
            heads.append(fit_head(diffs, wins, l2=self.l2, weights=counts))
        self.weights_ = np.stack(heads) if heads else np.zeros((0, diffs.shape[1]))
        return self

    def predict(self, diffs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """diffs (M, D) → (mean (M,), std (M,)) of w_k · diff over the heads, in logits."""
        values = np.asarray(diffs, dtype=np.float64) @ self.weights_.T  # (M, K)
        return values.mean(axis=1), values.std(axis=1, ddof=1 if values.shape[1] > 1 else 0)
