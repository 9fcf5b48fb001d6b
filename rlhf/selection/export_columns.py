"""The export's selection columns: why each annotation's task was chosen, so a trainer can re-weight or drop actively chosen items.

- raw rows (one per annotation): `selection_strategy`, `selection_score`, `selection_random`;
- TRL pairs (one per task): the same three of the task's first vote (what put it in front of
  an annotator first); pairs built from ratings span several tasks and get nulls;
- ratings rows (one per rated response): the same three of the response's first rating vote
  (over its rating tasks, oldest annotation first).
`selection_strategy` is least-annotated, uncertainty, disagreement, mixed or gold; null for
annotations made before selection was recorded.
"""

from __future__ import annotations

import pandas as pd

from rlhf.selection.reasons import REASON_FIELDS


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame["selection_strategy"] = frame["selection_strategy"].astype(object).where(frame["selection_strategy"].notna(), None)
    frame["selection_score"] = pd.to_numeric(frame["selection_score"], errors="coerce").astype("float64")
    frame["selection_random"] = frame["selection_random"].astype("boolean")
    return frame


def add_vote_reasons(rows: pd.DataFrame, reasons: pd.DataFrame) -> pd.DataFrame:
    """`rows` (with task_id, annotator_id, kind 'preference'/'rating') plus the reason columns of each annotation."""
    kinds = {"pairwise": "preference", "rating": "rating"}
    keyed = reasons.assign(kind=reasons["kind"].map(kinds))[["task_id", "annotator_id", "kind", *REASON_FIELDS]]
    keyed = keyed.astype({"task_id": "int64", "annotator_id": "int64"})
    out = rows.astype({"task_id": "int64", "annotator_id": "int64"}).merge(keyed, on=["task_id", "annotator_id", "kind"], how="left")
    return _typed(out)


def add_pair_reasons(rows: pd.DataFrame, reasons: pd.DataFrame) -> pd.DataFrame:
    """TRL rows (task_id, nullable) plus the reason columns of each task's first pairwise vote."""
    first = reasons[reasons["kind"] == "pairwise"].drop_duplicates("task_id")[["task_id", *REASON_FIELDS]].set_index("task_id")
    out = rows.copy()
    for column in REASON_FIELDS:
        out[column] = out["task_id"].map(first[column]) if len(first) else None
    return _typed(out)


def add_response_reasons(rows: pd.DataFrame, ratings: pd.DataFrame, reasons: pd.DataFrame) -> pd.DataFrame:
    """Ratings-export rows (response_id) plus the reason columns of each response's first rating vote.

    ratings: the rating frame (task_id, response_id, ...) the rows were built from; reasons:
    `rlhf.selection.scores.reasons_frame` (oldest annotation first), whose rating rows are mapped
    to their response through the task.
    """
    task_response = ratings[["task_id", "response_id"]].drop_duplicates("task_id").astype("int64").set_index("task_id")["response_id"]
    votes = reasons[reasons["kind"] == "rating"]
    votes = votes.assign(response_id=votes["task_id"].astype("int64").map(task_response)).dropna(subset=["response_id"])
    first = votes.drop_duplicates("response_id").astype({"response_id": "int64"}).set_index("response_id")
    out = rows.copy()
    for column in REASON_FIELDS:
        out[column] = out["response_id"].astype("int64").map(first[column]) if len(first) else None
    return _typed(out)
