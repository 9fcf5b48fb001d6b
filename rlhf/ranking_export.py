"""Rankings as TRL preference pairs: each ranking expands into its C(K, 2) pairs, one group per ranking.

Unlike comparisons, rankings are not aggregated across annotators: a ranking is a listwise
judgment, and the listwise reward loss (`rlhf.reward.listwise`) wants each one whole. Every
pair row carries `group_id` (prompt × annotator ranking: "rank-<task id>-<n>", n numbering the
task's rankings in annotator order, so no account id leaves the database). Tied pairs follow
`ExportOptions.keep_ties` (kept as `tie` = True, margin 0). With `rank_margin`, a pair's
margin is its rank distance less one, times `margin_per_strength` (adjacent places: 0, as a
"better" vote; two places apart: one "much better").
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PAIR_COLUMNS = ["prompt_id", "task_id", "chosen_id", "rejected_id", "votes", "agreement", "margin", "tie", "group_id"]


def ranking_pairs(rankings: pd.DataFrame, options) -> tuple[pd.DataFrame, dict[str, int]]:
    """The pairs of every ranking in `rankings` (an `rlhf.ranking_stats.ranking_frame`), filtered per `options`.

    Returns (pairs with PAIR_COLUMNS, counts: rankings, ranking_pairs, dropped_ranking_ties).
    """
    counts = {"rankings": 0, "ranking_pairs": 0, "dropped_ranking_ties": 0, "left_out_external_rankings": 0}
    if rankings.empty:
        return pd.DataFrame(columns=PAIR_COLUMNS), counts
    if not options.include_external:
        human = rankings["annotator_role"] != "external"
        counts["left_out_external_rankings"] = int(rankings.loc[~human].drop_duplicates(["task_id", "annotator_id"]).shape[0])
        rankings = rankings[human]
    if not options.include_gold:
        rankings = rankings[~rankings["is_gold"]]
    if rankings.empty:
        return pd.DataFrame(columns=PAIR_COLUMNS), counts
    rankings = rankings.sort_values(["task_id", "annotator_id", "card"], kind="stable")
    keys = rankings.drop_duplicates(["task_id", "annotator_id"])[["task_id", "annotator_id"]]
    keys = keys.assign(n=keys.groupby("task_id").cumcount())
    counts["rankings"] = int(len(keys))
    left = rankings.merge(rankings, on=["task_id", "annotator_id"], suffixes=("_x", "_y"))
    left = left[left["card_x"] < left["card_y"]]
    tie = (left["level_x"] == left["level_y"]).to_numpy()
    counts["dropped_ranking_ties"] = 0 if options.keep_ties else int(tie.sum())
    if not options.keep_ties:
        left, tie = left[~tie], tie[~tie]
    x_better = (left["level_x"] <= left["level_y"]).to_numpy()
    distance = np.abs(left["rank_x"].to_numpy() - left["rank_y"].to_numpy())
    margin = np.maximum(distance - 1.0, 0.0) * options.margin_per_strength if getattr(options, "rank_margin", False) else np.zeros(len(left))
    group = left.merge(keys, on=["task_id", "annotator_id"], how="left")["n"].to_numpy()
    pairs = pd.DataFrame(
        {
            "prompt_id": left["prompt_id_x"].to_numpy(),
            "task_id": left["task_id"].to_numpy(),
            "chosen_id": np.where(x_better, left["response_id_x"], left["response_id_y"]),
            "rejected_id": np.where(x_better, left["response_id_y"], left["response_id_x"]),
            "votes": 1,
            "agreement": 1.0,
            "margin": np.where(tie, 0.0, margin),
            "tie": tie,
            "group_id": [f"rank-{t}-{n}" for t, n in zip(left["task_id"].to_numpy(), group)],
        }
    )
    counts["ranking_pairs"] = int(len(pairs))
    return pairs.reset_index(drop=True), counts
