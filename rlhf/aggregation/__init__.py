"""Aggregation of crowd labels: one algorithm per module, scikit-learn style.

Each class takes long-format rows with fixed column names in `fit(df) -> self` and exposes
its results as attributes ending in `_` (crowd-kit's convention):

- `MajorityVote` (item, annotator, value): labels_, confidence_, probas_.
- `DawidSkene` (item, annotator, value): labels_, probas_, priors_, errors_, competence_.
- `BradleyTerry` (model_a, model_b, winner): scores_, elo_, leaderboard_ with bootstrap intervals.
"""

from rlhf.aggregation.bradley_terry import BradleyTerry, comparisons_from_preferences
from rlhf.aggregation.dawid_skene import DawidSkene
from rlhf.aggregation.majority_vote import MajorityVote

__all__ = ["BradleyTerry", "DawidSkene", "MajorityVote", "comparisons_from_preferences"]
