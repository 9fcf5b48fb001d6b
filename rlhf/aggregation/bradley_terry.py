"""Bradley–Terry with ties (Davidson 1970): model strengths from pairwise outcomes, an Elo-scale
leaderboard, and bootstrap intervals from a batched Newton solver.

R. A. Bradley and M. E. Terry (1952). Rank analysis of incomplete block designs I. Biometrika 39.
R. R. Davidson (1970). On extending the Bradley-Terry model to accommodate ties in paired
comparison experiments. JASA 65(329), 317-328.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

WINNERS = ("a", "b", "tie", "both_bad")
COMPARISON_COLUMNS = ("model_a", "model_b", "winner")
LEADERBOARD_COLUMNS = [
    "rank",
    "model",
    "elo",
    "elo_low",
    "elo_high",
    "score",
    "wins",
    "losses",
    "ties",
    "n_comparisons",
    "component",
]


@dataclass(frozen=True)
class PairCounts:
    """Comparisons aggregated per unordered model pair (lo < hi by code).

    lo, hi: (P,) model codes. counts: (P, 3) columns = lo won, hi won, tie.
    """

    lo: np.ndarray
    hi: np.ndarray
    counts: np.ndarray
    n_models: int


@dataclass(frozen=True)
class OutcomeProbabilities:
    """Model-implied probabilities of one comparison: a wins, b wins, tie (sum to 1)."""

    win_a: float
    win_b: float
    tie: float


class BradleyTerry:
    """Davidson's Bradley–Terry model with ties, fitted by penalised maximum likelihood.

    With strengths pi_i = exp(theta_i) and tie parameter nu = exp(gamma):

        P(i beats j) = pi_i / D,  P(j beats i) = pi_j / D,  P(tie) = nu sqrt(pi_i pi_j) / D,
        D = pi_i + pi_j + nu sqrt(pi_i pi_j)

    so per pair, with s = theta_i - theta_j and counts w_ij, w_ji, t_ij (n_ij in all),

        log L_ij = (w_ij - w_ji) s / 2 + t_ij gamma - n_ij log(2 cosh(s / 2) + e^gamma),

    which is concave in (theta, gamma). Without ties in the data (or `ties="drop"`) nu = 0 and
    this is the plain Bradley–Terry model. We maximise sum log L - prior/2 (|theta|^2 + gamma^2):
    the small Gaussian prior (`prior`, default 0.01 = variance 100 in natural-log units) keeps
    strengths finite for a model that never lost and fixes each connected component's
    location, so a disconnected comparison graph fits without error. Newton's method with
    step halving converges in a handful of iterations; bootstrap replicates are fitted all at
    once by the same Newton iterations over a batch axis.

    Winner codes: "a" (model_a better), "b", "tie", "both_bad". `both_bad="tie"` (default)
    counts "both bad" as a tie — neither response was preferred, which is exactly what the tie
    outcome models; `both_bad="drop"` discards those comparisons as carrying no preference.
    Strength ("better" / "much better") is not used.

    Elo scale: elo_i = anchor + scale / ln(10) * (theta_i - mean theta over i's component), so
    a 400-point gap is 10:1 odds of winning a decisive comparison (base 10, scale 400) and each
    connected component has mean `anchor` (1000). Scores from different components are not
    comparable: `components_` and the leaderboard's `component` column say which models are
    in which (component 0 is the largest).

    Bootstrap: comparisons are resampled with replacement, which for aggregated data is a
    multinomial draw over the (pair, outcome) cells with the observed shares; `n_bootstrap`
    replicates give percentile intervals at `confidence`.

    Input: `df` with columns model_a, model_b, winner (see `comparisons_from_preferences`).

    Fitted attributes:
        models_: pd.Index of model names (sorted).
        scores_: pd.Series theta (natural-log strength), centred per component.
        tie_parameter_: nu (0.0 without ties).
        elo_: pd.Series on the Elo scale.
        components_: pd.Series (model -> component id).
        bootstrap_elo_: np.ndarray (n_bootstrap, n_models) of replicate Elo scores.
        leaderboard_: pd.DataFrame, one row per model, columns LEADERBOARD_COLUMNS, sorted by
            component then Elo (rank is within the component).
        pair_counts_: PairCounts the model was fitted on.
        log_likelihood_: the penalised log-likelihood at the optimum.
        n_iter_: Newton iterations of the main fit.
    """

    def __init__(
        self,
        *,
        ties: Literal["davidson", "drop"] = "davidson",
        both_bad: Literal["tie", "drop"] = "tie",
        prior: float = 0.01,
        n_bootstrap: int = 200,
        confidence: float = 0.95,
        seed: int = 0,
        anchor: float = 1000.0,
        scale: float = 400.0,
        max_iter: int = 100,
        tol: float = 1e-9,
    ):
        if ties not in ("davidson", "drop"):
            raise ValueError("ties must be 'davidson' or 'drop'")
        if both_bad not in ("tie", "drop"):
            raise ValueError("both_bad must be 'tie' or 'drop'")
        if prior <= 0:
            raise ValueError("prior must be > 0 (it identifies the scale of each component)")
        self.ties = ties
        self.both_bad = both_bad
        self.prior = prior
        self.n_bootstrap = n_bootstrap
        self.confidence = confidence
        self.seed = seed
        self.anchor = anchor
        self.scale = scale
        self.max_iter = max_iter
        self.tol = tol

    # ------------------------------------------------------------------ fitting

    def fit(self, df: pd.DataFrame) -> BradleyTerry:
        models, pairs = aggregate_comparisons(df, both_bad=self.both_bad, ties=self.ties)
        self.models_ = models
        self.pair_counts_ = pairs
        n_models = models.size
        with_ties = bool(pairs.counts[:, 2].sum() > 0)
        counts = pairs.counts[None, :, :].astype(np.float64)
        theta, gamma, log_likelihood, iterations = _newton(
            pairs.lo, pairs.hi, counts, n_models, with_ties, self.prior, self.max_iter, self.tol
        )
        self.n_iter_ = iterations
        self.log_likelihood_ = float(log_likelihood[0])
        component = connected_components(pairs, n_models)
        self.components_ = pd.Series(component, index=models, name="component")
        theta0 = _centre_per_component(theta[0], component)
        self.scores_ = pd.Series(theta0, index=models, name="score")
        self.tie_parameter_ = float(np.exp(gamma[0])) if with_ties else 0.0
        self.elo_ = pd.Series(self._elo(theta0[None, :], component)[0], index=models, name="elo")
        self.bootstrap_elo_ = self._bootstrap(pairs, theta, gamma, with_ties, component)
        self.leaderboard_ = self._leaderboard(pairs, component)
        return self

    def _elo(self, theta: np.ndarray, component: np.ndarray) -> np.ndarray:
        """Elo scores (B, M) from strengths (B, M), each component centred at the anchor."""
        return self.anchor + self.scale / np.log(10.0) * _centre_batch(theta, component)

    def _bootstrap(self, pairs: PairCounts, theta, gamma, with_ties, component) -> np.ndarray:
        n_models = pairs.n_models
        if self.n_bootstrap <= 0 or pairs.counts.sum() == 0:
            return np.zeros((0, n_models))
        rng = np.random.default_rng(self.seed)
        flat = pairs.counts.reshape(-1).astype(np.float64)
        total = int(flat.sum())
        draws = rng.multinomial(total, flat / total, size=self.n_bootstrap).astype(np.float64)
        counts = draws.reshape(self.n_bootstrap, -1, 3)
        start_theta = np.repeat(theta, self.n_bootstrap, axis=0)
        start_gamma = np.repeat(gamma, self.n_bootstrap, axis=0)
        replicate_theta, _, _, _ = _newton(
            pairs.lo, pairs.hi, counts, n_models, with_ties, self.prior, self.max_iter, self.tol, start_theta, start_gamma
        )
        return self._elo(replicate_theta, component)

    def _leaderboard(self, pairs: PairCounts, component: np.ndarray) -> pd.DataFrame:
        n_models = pairs.n_models
        wins = np.bincount(pairs.lo, pairs.counts[:, 0], n_models) + np.bincount(pairs.hi, pairs.counts[:, 1], n_models)
        losses = np.bincount(pairs.lo, pairs.counts[:, 1], n_models) + np.bincount(pairs.hi, pairs.counts[:, 0], n_models)
        ties = np.bincount(pairs.lo, pairs.counts[:, 2], n_models) + np.bincount(pairs.hi, pairs.counts[:, 2], n_models)
        if self.bootstrap_elo_.shape[0]:
            tail = (1 - self.confidence) / 2 * 100
            low, high = np.percentile(self.bootstrap_elo_, [tail, 100 - tail], axis=0)
        else:
            low = high = np.full(n_models, np.nan)
        table = pd.DataFrame(
            {
                "model": self.models_,
                "elo": self.elo_.to_numpy(),
                "elo_low": low,
                "elo_high": high,
                "score": self.scores_.to_numpy(),
                "wins": wins.astype(np.int64),
                "losses": losses.astype(np.int64),
                "ties": ties.astype(np.int64),
                "n_comparisons": (wins + losses + ties).astype(np.int64),
                "component": component,
            }
        )
        table = table.sort_values(["component", "elo"], ascending=[True, False], kind="stable").reset_index(drop=True)
        table.insert(0, "rank", table.groupby("component").cumcount() + 1)
        return table[LEADERBOARD_COLUMNS]

    # ------------------------------------------------------------------ using the fit

    def predict_proba(self, model_a: str, model_b: str) -> OutcomeProbabilities:
        """P(a wins), P(b wins), P(tie) for one comparison under the fitted model."""
        s = float(self.scores_[model_a] - self.scores_[model_b])
        nu = self.tie_parameter_
        denominator = np.exp(s / 2) + np.exp(-s / 2) + nu
        return OutcomeProbabilities(
            float(np.exp(s / 2) / denominator), float(np.exp(-s / 2) / denominator), float(nu / denominator)
        )

    def component_members(self) -> dict[int, list[str]]:
        """Component id -> its models, for saying which scores may be compared."""
        return {int(c): sorted(map(str, group.index)) for c, group in self.components_.groupby(self.components_)}


# ---------------------------------------------------------------------- input


def aggregate_comparisons(df: pd.DataFrame, *, both_bad: str = "tie", ties: str = "davidson") -> tuple[pd.Index, PairCounts]:
    """Validate comparison rows and count outcomes per unordered model pair.

    Raises ValueError naming the first bad row (0-based): a missing column, an empty model
    name, a model compared with itself, a winner outside a / b / tie / both_bad.
    """
    for column in COMPARISON_COLUMNS:
        if column not in df.columns:
            raise ValueError(f"missing column {column!r}: comparisons need columns {', '.join(COMPARISON_COLUMNS)}")
    model_a = df["model_a"].to_numpy()
    model_b = df["model_b"].to_numpy()
    winner = df["winner"].to_numpy()
    # factorize marks missing values with code -1, so no separate (slow, object-array) NA pass.
    codes, models = pd.factorize(np.concatenate([model_a, model_b]), sort=True)
    n = model_a.size
    i, j = codes[:n].astype(np.int64), codes[n:].astype(np.int64)
    for name, column_codes in (("model_a", i), ("model_b", j)):
        if (column_codes < 0).any():
            raise ValueError(f"row {int(np.flatnonzero(column_codes < 0)[0])}: missing {name}")
    winner_code = pd.Index(WINNERS).get_indexer(winner)
    if (winner_code < 0).any():
        row = int(np.flatnonzero(winner_code < 0)[0])
        if pd.isna(winner[row]):
            raise ValueError(f"row {row}: missing winner")
        raise ValueError(f"row {row}: winner {winner[row]!r} is not one of {', '.join(WINNERS)}")
    same = i == j
    if same.any():
        row = int(np.flatnonzero(same)[0])
        raise ValueError(f"row {row}: model {model_a[row]!r} is compared with itself")
    # Outcome from the lower code's side: 0 lo won, 1 hi won, 2 tie, -1 dropped.
    a_is_lo = i < j
    outcome = np.full(n, -1, dtype=np.int64)
    outcome[winner_code == 0] = np.where(a_is_lo, 0, 1)[winner_code == 0]
    outcome[winner_code == 1] = np.where(a_is_lo, 1, 0)[winner_code == 1]
    if ties == "davidson":
        outcome[winner_code == 2] = 2
        if both_bad == "tie":
            outcome[winner_code == 3] = 2
    keep = outcome >= 0
    lo = np.minimum(i, j)[keep]
    hi = np.maximum(i, j)[keep]
    outcome = outcome[keep]
    n_models = models.size
    key = lo * n_models + hi
    if n_models * n_models <= max(4 * key.size, 1 << 20):
        # Few models: count per (pair, outcome) directly over all n^2 pairs, keep those seen.
        table = np.bincount(key * 3 + outcome, minlength=n_models * n_models * 3).reshape(-1, 3)
        keys = np.flatnonzero(table.sum(axis=1))
        counts = table[keys]
    else:
        keys, pair_index = np.unique(key, return_inverse=True)
        counts = np.bincount(pair_index * 3 + outcome, minlength=keys.size * 3).reshape(keys.size, 3)
    return pd.Index(models, name="model"), PairCounts(keys // n_models, keys % n_models, counts, n_models)


def comparisons_from_preferences(preferences: pd.DataFrame) -> pd.DataFrame:
    """Comparison rows (model_a, model_b, winner) from a preference frame (rlhf.frames.preference_frame).

    Pairs of responses from the same model carry no information about models and are dropped.
    """
    frame = preferences[["model_a", "model_b", "choice"]].rename(columns={"choice": "winner"})
    return frame[frame["model_a"] != frame["model_b"]].reset_index(drop=True)


def connected_components(pairs: PairCounts, n_models: int) -> np.ndarray:
    """Component id per model (0 = the largest component, then by first model), over pairs compared at least once."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as scipy_components

    observed = pairs.counts.sum(axis=1) > 0
    graph = coo_matrix((np.ones(int(observed.sum())), (pairs.lo[observed], pairs.hi[observed])), shape=(n_models, n_models))
    _, labels = scipy_components(graph, directed=False)
    sizes = np.bincount(labels)
    first_model = np.full(sizes.size, n_models)
    np.minimum.at(first_model, labels, np.arange(n_models))
    order = np.lexsort((first_model, -sizes))
    relabel = np.empty_like(order)
    relabel[order] = np.arange(order.size)
    return relabel[labels]


def _centre_per_component(theta: np.ndarray, component: np.ndarray) -> np.ndarray:
    means = np.bincount(component, weights=theta) / np.bincount(component)
    return theta - means[component]


def _centre_batch(theta: np.ndarray, component: np.ndarray) -> np.ndarray:
    """Per-row, per-component centring of (B, M) strengths."""
    sizes = np.bincount(component).astype(np.float64)
    one_hot = np.zeros((component.size, sizes.size))
    one_hot[np.arange(component.size), component] = 1.0
    means = (theta @ one_hot) / sizes  # (B, C)
    return theta - means[:, component]


# ---------------------------------------------------------------------- Newton


def _objective(s, gamma, counts, theta, prior, with_ties):
    """Penalised log-likelihood per batch row. s: (B, P); counts: (B, P, 3); theta: (B, M)."""
    w_lo, w_hi, t = counts[..., 0], counts[..., 1], counts[..., 2]
    n = w_lo + w_hi + t
    half = s / 2
    if with_ties:
        # log(2 cosh(s/2) + e^gamma) computed stably as a log-sum-exp of three terms.
        log_d = np.logaddexp(np.logaddexp(half, -half), gamma[:, None])
        ll = (w_lo - w_hi) * half + t * gamma[:, None] - n * log_d
        penalty = prior / 2 * ((theta**2).sum(axis=1) + gamma**2)
    else:
        ll = (w_lo - w_hi) * half - n * np.logaddexp(half, -half)
        penalty = prior / 2 * (theta**2).sum(axis=1)
    return ll.sum(axis=1) - penalty


def _newton(lo, hi, counts, n_models, with_ties, prior, max_iter, tol, theta=None, gamma=None):
    """Maximise the penalised Davidson log-likelihood for every batch row of `counts` (B, P, 3).

    Returns theta (B, M), gamma (B,), the objective (B,), and the iterations run. The Hessian
    is assembled with bincount scatters (no Python loop over pairs or rows) and each
    replicate's Newton system solved in one batched `np.linalg.solve`.
    """
    batch = counts.shape[0]
    size = n_models + (1 if with_ties else 0)
    theta = np.zeros((batch, n_models)) if theta is None else theta.copy()
    if gamma is None:
        gamma = np.zeros(batch)
    gamma = gamma.copy()
    w_lo, w_hi, t = counts[..., 0], counts[..., 1], counts[..., 2]
    n = w_lo + w_hi + t
    rows = np.arange(batch)[:, None]
    diag_lo, diag_hi = lo * size + lo, hi * size + hi
    off_lh, off_hl = lo * size + hi, hi * size + lo
    step = np.ones(batch)
    current = _objective(theta[:, lo] - theta[:, hi], gamma, counts, theta, prior, with_ties)
    iteration = 0
    for iteration in range(1, max_iter + 1):
        s = theta[:, lo] - theta[:, hi]
        half = s / 2
        sinh, cosh = np.sinh(np.clip(half, -350, 350)), np.cosh(np.clip(half, -350, 350))
        nu = np.exp(gamma)[:, None] if with_ties else np.zeros((batch, 1))
        c = 2 * cosh + nu
        grad_s = (w_lo - w_hi) / 2 - n * sinh / c
        h_ss = -n * (cosh * c / 2 - sinh**2) / c**2  # (B, P), <= 0
        gradient = np.zeros((batch, size))
        gradient[:, :n_models] = _scatter(grad_s, lo, n_models) - _scatter(grad_s, hi, n_models) - prior * theta
        flat = rows * size * size
        entries = np.concatenate([diag_lo + flat, diag_hi + flat, off_lh + flat, off_hl + flat], axis=1).ravel()
        values = np.concatenate([h_ss, h_ss, -h_ss, -h_ss], axis=1).ravel()
        hessian = np.bincount(entries, weights=values, minlength=batch * size * size).reshape(batch, size, size)
        hessian[:, np.arange(n_models), np.arange(n_models)] -= prior
        if with_ties:
            grad_g = t - n * nu / c
            h_gg = -n * nu * (c - nu) / c**2
            h_sg = n * sinh * nu / c**2
            gradient[:, n_models] = grad_g.sum(axis=1) - prior * gamma
            cross = _scatter(h_sg, lo, n_models) - _scatter(h_sg, hi, n_models)
            hessian[:, :n_models, n_models] = cross
            hessian[:, n_models, :n_models] = cross
            hessian[:, n_models, n_models] = h_gg.sum(axis=1) - prior
        delta = np.linalg.solve(-hessian, gradient[..., None])[..., 0]
        # Step halving per row: accept the largest step (1, 1/2, ...) that does not lower the objective.
        step[:] = 1.0
        accepted = np.zeros(batch, dtype=bool)
        new_theta, new_gamma = theta, gamma
        for _ in range(40):
            trial_theta = theta + step[:, None] * delta[:, :n_models]
            trial_gamma = gamma + step * delta[:, n_models] if with_ties else gamma
            trial = _objective(trial_theta[:, lo] - trial_theta[:, hi], trial_gamma, counts, trial_theta, prior, with_ties)
            ok = trial >= current - 1e-12 * np.abs(current)
            newly = ok & ~accepted
            new_theta = np.where(newly[:, None], trial_theta, new_theta)
            new_gamma = np.where(newly, trial_gamma, new_gamma)
            current = np.where(newly, trial, current)
            accepted |= ok
            if accepted.all():
                break
            step = np.where(accepted, step, step / 2)
        theta, gamma = new_theta, new_gamma
        if np.max(np.abs(step[:, None] * delta)) < tol:
            break
    return theta, gamma, current, iteration


def _scatter(values: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """Row-wise bincount: out[b, m] = sum_p values[b, p] over p with index[p] == m. values: (B, P)."""
    batch = values.shape[0]
    flat = (np.arange(batch)[:, None] * size + index[None, :]).ravel()
    return np.bincount(flat, weights=values.ravel(), minlength=batch * size).reshape(batch, size)
