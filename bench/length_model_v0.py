"""Length bias measured against the crowd's judgments of the same responses.

Comparing an annotator's share of "chose the longer response" with the crowd's share is
confounded with skill: when the better responses tend to be the shorter ones, the most
careful annotators pick the longer one least often, and look biased against length, while
noisy annotators drift toward 1/2 and look biased toward it (in the end-to-end simulation
the plain binomial test raised five length flags, two of them on careful annotators).

Here each annotator's decisive judgments (annotator i picks a over b) are modelled as

    logit P(a) = s_i · d_ab + δ_i · ℓ + γ_i · left,    d_ab = θ_a − θ_b + β·ℓ

with ℓ = clip(log2(len_a / len_b), −1, 1) (characters), left = +1 when a was shown on the
left and −1 otherwise, d_ab the crowd's view of the pair (θ a latent quality per response, β
the crowd's own length tilt), s_i the annotator's sharpness (skill), γ_i their pull to the
left side and δ_i their length tilt beyond the crowd's, in logits per doubling of length.
Because the crowd's view is scaled by each annotator's own s_i, a careful and a noisy
annotator who judge alike get δ ≈ 0; one who adds a pull toward the longer response gets
δ > 0.

The crowd's view is a Bradley–Terry fit (θ, β, and a left pull per annotator; convex, L-BFGS)
on everyone but `reference_excludes` and the annotators being measured: cross-fitting over
FOLDS folds of annotators, so nobody's own votes are in the θ they are measured against.
Then each annotator's (s_i, δ_i, γ_i) is fitted alone with d fixed (Newton, all annotators
at once), and δ_i's Wald z gives a one-sided p-value for a tilt toward the longer response.
One-sided because the crowd's β is itself pulled up by its length-biased members, so the
most careful annotators sit below it (z down to −5 in the simulation) without any bias of
their own; a verbosity bias is the failure that skews preference data.

Responses are identified by `response_a` / `response_b` ids when the frame has them
(each response is then judged against several others, which pins θ down); otherwise each
item's two sides are their own responses (then θ_a − θ_b is one free difference per item,
still identified by its several annotators).
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import pandas as pd

RIDGE = 1e-2
"""Ridge on each annotator's own (s, δ, γ): keeps the Newton step finite when an annotator's
choices are perfectly separated (always the same side, say); small against ~20+ judgments."""

NEWTON_STEPS = 30

THETA_PRECISION = 0.1
"""Prior precision of θ (θ ~ N(0, 10)). A tight prior (precision 1) shrinks the quality
differences, β then soaks up the part of quality that goes with length, and careful
annotators came out tilted toward length (a false flag at p = 0.002 in the tests);
0.01 lost power without response ids (the planted tilt at p = 0.03)."""

FOLDS = 4
"""Cross-fitting folds of annotators: each annotator is measured against a crowd fitted on the
other folds. Against a crowd fitted with their own votes, a noisy annotator's sharpness is
inflated (θ agrees with them) and the length-quality correlation leaks into their δ: with
three votes per item, a careful annotator was flagged (p = 0.004). Fewer folds leave less data
for θ and less power; each fold costs one crowd fit (the later ones start from the last)."""


def _response_codes(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer codes of the two responses of each row (ids when present, else item sides)."""
    if {"response_a", "response_b"} <= set(frame.columns):
        a, b = frame["response_a"].to_numpy(), frame["response_b"].to_numpy()
        codes, uniques = pd.factorize(np.concatenate([a, b]))
        return codes[: len(a)], codes[len(a) :], len(uniques)
    items, uniques = pd.factorize(frame["item"])
    return 2 * items, 2 * items + 1, 2 * len(uniques)


def _crowd_fit(a, b, who, y, ell, left, n_responses: int, n_annotators: int, use: np.ndarray, start=None) -> tuple[np.ndarray, float, np.ndarray]:
    """θ (per response) and the crowd's β from the rows in `use`: a Bradley–Terry fit with the
    length covariate and each annotator's left-side pull (convex; θ ~ N(0, 1/THETA_PRECISION),
    γ ~ N(0, 1)). Returns θ, β and the solution vector (a warm start for the next fold).

    L-BFGS runs on variables scaled by each parameter's curvature at z = 0 (a response judged
    in many pairs moves the likelihood more than one judged once): 3-4x fewer iterations."""
    from scipy import optimize

    a, b, who, y, ell, left = a[use], b[use], who[use], y[use], ell[use], left[use]
    R, A = n_responses, n_annotators
    curvature = np.concatenate(
        [
            0.25 * (np.bincount(a, minlength=R) + np.bincount(b, minlength=R)) + THETA_PRECISION,
            0.25 * np.bincount(who, minlength=A) + 1.0,
            [0.25 * (ell @ ell) + 1e-6],
        ]
    )
    scale = 1.0 / np.sqrt(curvature)

    def objective(u: np.ndarray) -> tuple[float, np.ndarray]:
        x = u * scale
        theta, gamma, beta = x[:R], x[R : R + A], x[-1]
        z = theta[a] - theta[b] + beta * ell + gamma[who] * left
        residual = 0.5 * (1.0 + np.tanh(0.5 * z)) - y  # σ(z) − y without overflow
        value = np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * (THETA_PRECISION * theta @ theta + gamma @ gamma)
        grad = np.concatenate(
            [
                np.bincount(a, residual, R) - np.bincount(b, residual, R) + THETA_PRECISION * theta,
                np.bincount(who, residual * left, A) + gamma,
                [residual @ ell],
            ]
        )
        return float(value), grad * scale

    u0 = np.zeros(R + A + 1) if start is None else start / scale
    result = optimize.minimize(objective, u0, jac=True, method="L-BFGS-B", options={"maxiter": 500, "ftol": 1e-8, "gtol": 1e-5})
    x = result.x * scale
    return x[:R], float(x[-1]), x


def _annotator_fits(features: np.ndarray, y: np.ndarray, who: np.ndarray, n_annotators: int) -> tuple[np.ndarray, np.ndarray]:
    """Each annotator's logistic regression of y on `features` (N, K), all at once by Newton.

    Returns the coefficients (A, K) and their standard errors (A, K). The ridge keeps every
    annotator's information matrix positive definite, so each step is solvable."""
    k = features.shape[1]
    weights = np.zeros((n_annotators, k))
    pairs = [(p, q) for p in range(k) for q in range(p, k)]
    ridge = RIDGE * np.eye(k)
    for _ in range(NEWTON_STEPS):
        z = np.einsum("nk,nk->n", features, weights[who])
        prob = 0.5 * (1.0 + np.tanh(0.5 * z))
        w = prob * (1.0 - prob)
        hessian = np.empty((n_annotators, k, k))
        for p, q in pairs:
            hessian[:, p, q] = hessian[:, q, p] = np.bincount(who, w * features[:, p] * features[:, q], n_annotators)
        hessian += ridge
        gradient = np.stack([np.bincount(who, (y - prob) * features[:, p], n_annotators) for p in range(k)], axis=1) - weights @ ridge
        step = np.linalg.solve(hessian, gradient[..., None])[..., 0]
        weights += step
        if np.nanmax(np.abs(step), initial=0.0) < 1e-8:
            break
    errors = np.sqrt(np.diagonal(np.linalg.inv(hessian), axis1=1, axis2=2))
    return weights, errors


def length_bias(preferences: pd.DataFrame, reference_excludes: Collection = ()) -> pd.DataFrame:
    """Each annotator's length tilt beyond the crowd's judgments of the same responses.

    `preferences`: item, annotator, value (a / b / tie / both_bad), len_a, len_b; optional
    response_a, response_b (response ids) and shown_left ('a' / 'b'). `reference_excludes`:
    annotators left out of the crowd's fit (spammers), still measured themselves.

    Index: annotator; columns length_n (decisive judgments between responses of different
    length), longer_share (their share that picked the longer one, descriptive), length_tilt
    (δ, logits per doubling of length beyond the crowd's), length_p_value (one-sided Wald
    test of δ > 0). Annotators with no decisive judgment are absent.
    """
    from scipy import stats

    decisive = preferences[preferences["value"].isin(["a", "b"])]
    annotators, who = np.unique(decisive["annotator"].to_numpy(), return_inverse=True)
    n_annotators = len(annotators)
    len_a = np.maximum(decisive["len_a"].to_numpy(dtype=np.float64), 1.0)
    len_b = np.maximum(decisive["len_b"].to_numpy(dtype=np.float64), 1.0)
    unequal = len_a != len_b
    chose_a = (decisive["value"].to_numpy() == "a").astype(np.float64)
    chose_longer = np.where(len_a > len_b, chose_a, 1.0 - chose_a)[unequal]
    length_n = np.bincount(who[unequal], minlength=n_annotators)
    with np.errstate(invalid="ignore", divide="ignore"):
        longer_share = np.bincount(who[unequal], chose_longer, n_annotators) / length_n
    out = pd.DataFrame(
        {"length_n": length_n.astype(np.int64), "longer_share": longer_share, "length_tilt": np.nan, "length_p_value": np.nan},
        index=pd.Index(annotators, name="annotator"),
    )
    if not unequal.any():
        return out

    ell = np.clip(np.log2(len_a / len_b), -1.0, 1.0)
    has_side = "shown_left" in decisive.columns
    left = np.where(decisive["shown_left"].to_numpy() == "a", 1.0, -1.0) if has_side else np.zeros(len(decisive))
    a, b, n_responses = _response_codes(decisive)
    crowd = ~np.isin(annotators, list(reference_excludes))
    if not crowd.any():
        crowd[:] = True
    # Cross-fitting: each annotator is measured against a crowd fitted without them (their own
    # votes in θ would make θ agree with them and inflate their sharpness).
    folds = min(FOLDS, n_annotators)
    fold = np.arange(n_annotators) % folds
    crowd_view, solution = np.zeros(len(who)), None
    for k in range(folds):
        measured_here = fold[who] == k
        use = crowd[who] & (~measured_here if folds > 1 else True)
        theta, beta, solution = _crowd_fit(a, b, who, chose_a, ell, left, n_responses, n_annotators, use, start=solution)
        crowd_view[measured_here] = (theta[a] - theta[b] + beta * ell)[measured_here]

    columns = [crowd_view, ell] + ([left] if has_side else [])
    weights, errors = _annotator_fits(np.stack(columns, axis=1), chose_a, who, n_annotators)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = weights[:, 1] / errors[:, 1]
    measured = length_n > 0
    out["length_tilt"] = np.where(measured, weights[:, 1], np.nan)
    out["length_p_value"] = np.where(measured & np.isfinite(z), stats.norm.sf(z), np.nan)
    return out
