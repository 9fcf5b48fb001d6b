"""The selection strategies as pure maths: scores per task from model or vote posteriors, then one order.

Every strategy maps open tasks to a score, higher = more worth a label next; `order` turns the
scores into ranks (1 = first). `next_task` still hands out least-annotated first: within each
annotation count the rank decides (rlhf.assign, `ix_task_selection`).

- uncertainty: the probability that the reward model orders the pair the wrong way,
  Φ(−|Δ| / σ), where Δ is the model's reward difference r(a) − r(b) in Bradley–Terry logits and
  σ the spread of that difference over an ensemble of bootstrap heads (rlhf.selection.ensemble).
  0.5 when the model cannot tell the two apart (Δ small against σ), → 0 when it is sure.
- disagreement: the normalised entropy of the Dawid–Skene posterior of the task's label
  (rlhf.aggregation.dawid_skene), in [0, 1]; a task without votes has the prior's entropy.
  Votes that disagree, or agree but come from annotators Dawid–Skene finds unreliable, keep
  the entropy high: the next vote there changes the label most.
- mixed: the mean of the two ranks' quantiles (uncertainty where a reward model exists), with a
  fixed share of positions handed to tasks drawn uniformly at random and flagged
  (`is_random`), so the labels of that share stay an unbiased sample for evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEAST_ANNOTATED, UNCERTAINTY, DISAGREEMENT, MIXED = "least-annotated", "uncertainty", "disagreement", "mixed"
NEEDS_REWARD_MODEL = (UNCERTAINTY,)
"""Strategies that fall back to least-annotated without a reward model (mixed then blends disagreement alone)."""
RANDOM_SHARE = 0.25
"""Share of `mixed` positions that go to tasks drawn at random (flagged `is_random`)."""


@dataclass(frozen=True)
class Ranked:
    """The order of open tasks: `task_ids[i]` gets rank i + 1; `scores` and `is_random` aligned with it."""

    task_ids: np.ndarray
    scores: np.ndarray
    is_random: np.ndarray


def uncertainty_scores(delta: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """P(the model orders the pair wrongly) = Φ(−|Δ| / σ), (N,) → (N,) in [0, 0.5].

    delta: reward difference r(a) − r(b); spread: its standard deviation over the ensemble
    (same units). σ = 0 gives 0 unless Δ = 0 too (then 0.5: nothing to tell them apart).
    """
    delta = np.abs(np.asarray(delta, dtype=float))
    spread = np.asarray(spread, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(spread > 0, delta / np.where(spread > 0, spread, 1.0), np.where(delta > 0, np.inf, 0.0))
    return 0.5 * np.vectorize(math.erfc)(z / math.sqrt(2)) if z.size else z


def posterior_entropy(probas: np.ndarray) -> np.ndarray:
    """Entropy of each row of a posterior (N, K), divided by log K: (N,) in [0, 1]."""
    probas = np.clip(np.asarray(probas, dtype=float), 1e-12, 1.0)
    k = probas.shape[1]
    if k < 2:
        return np.zeros(probas.shape[0])
    return -(probas * np.log(probas)).sum(axis=1) / math.log(k)


def quantiles(scores: np.ndarray) -> np.ndarray:
    """Each score's rank quantile in (0, 1] (ties share their mean rank): makes scales comparable."""
    scores = np.asarray(scores, dtype=float)
    if scores.size == 0:
        return scores
    from scipy.stats import rankdata

    return rankdata(scores, method="average") / scores.size


def blend(*scores: np.ndarray) -> np.ndarray:
    """The mean rank quantile of several score vectors over the same tasks (mixed's score)."""
    return np.mean([quantiles(s) for s in scores], axis=0)


def order(task_ids: Sequence[int], scores: np.ndarray, *, random_share: float = 0.0, seed: int = 0) -> Ranked:
    """Ranks: highest score first (ties by a seeded shuffle); with `random_share`, evenly spaced
    positions (slot i is random when ⌊(i+1)·share⌋ > ⌊i·share⌋) go to tasks drawn uniformly at random.

    >>> order([10, 11, 12], np.array([0.1, 0.9, 0.5])).task_ids.tolist()
    [11, 12, 10]
    """
    if not 0.0 <= random_share < 1.0:
        raise ValueError(f"random_share must be within [0, 1), got {random_share}")
    ids = np.asarray(task_ids, dtype=np.int64)
    scores = np.asarray(scores, dtype=float)
    n = ids.size
    rng = np.random.default_rng(seed)
    tiebreak = rng.permutation(n)
    by_score = np.lexsort((tiebreak, -scores))  # score descending, then the shuffle
    is_random = np.zeros(n, dtype=bool)
    if random_share == 0.0 or n == 0:
        return Ranked(ids[by_score], scores[by_score], is_random)
    slots = np.arange(n)
    random_slot = np.floor((slots + 1) * random_share) > np.floor(slots * random_share)
    drawn = rng.choice(n, size=int(random_slot.sum()), replace=False)
    taken = np.zeros(n, dtype=bool)
    taken[drawn] = True
    rest = by_score[~taken[by_score]]
    placed = np.empty(n, dtype=np.int64)
    placed[random_slot] = drawn
    placed[~random_slot] = rest
    is_random[random_slot] = True
    return Ranked(ids[placed], scores[placed], is_random)
