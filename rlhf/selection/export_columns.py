"""The export's selection columns: why each annotation's task was chosen, so a trainer can re-weight or drop actively chosen items.

- raw rows (one per annotation): `selection_strategy`, `selection_score`, `selection_random`;
- TRL pairs (one per task): the same three of the task's first vote (what put it in front of
  an annotator first); pairs built from ratings span several tasks and get nulls.
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
