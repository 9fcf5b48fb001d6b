"""Per-annotator statistics of demonstrations: how many, how fast, how much they change the original, how they fare in review.

One row per writer (`writer_stats`), from `rlhf.sft_export.demonstration_frame`:
- `demonstrations`, `median_time_s`;
- `edits` (demonstrations that started from a model reply), `median_edit_ratio` and
  `mean_edit_ratio` (share of the original's words changed, `rlhf.demonstrations.edit_ratio`);
- `reviewed` (demonstrations rated in review) and `kept_share`: the share of those whose mean
  review score reaches `keep_score` (default: the middle of the project's rubric scale);
- `flags`: `sloppy_edits` when a writer with at least `min_edits` edits changes, at the median,
  less than `sloppy_fraction` of what the project's writers change at the median (or less than
  a substantive edit): their "edits" leave the model's reply as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from rlhf.demonstrations import SUBSTANTIVE_EDIT_RATIO
from rlhf.frames import _fetch, project_id_of
from rlhf.projects import get_project
from rlhf.roles import Actor, check_admin
from rlhf.schema import User

WRITER_COLUMNS = [
    "annotator_id", "username", "demonstrations", "median_time_s", "edits", "median_edit_ratio", "mean_edit_ratio",
    "reviewed", "kept_share", "flags",
]  # fmt: skip


@dataclass(frozen=True)
class WriterThresholds:
    """When a writer is flagged `sloppy_edits`."""

    min_edits: int = 3
    """Edits a writer needs before being judged."""
    sloppy_fraction: float = 0.25
    """Flag a median edit ratio below this share of the project's median edit ratio."""


def writer_table(demos: pd.DataFrame, usernames: dict[int, str], keep_score: float, thresholds: WriterThresholds = WriterThresholds()) -> pd.DataFrame:
    """The per-writer table from `demonstration_frame` rows (pure: tested on hand-made frames)."""
    if demos.empty:
        return pd.DataFrame(columns=WRITER_COLUMNS)
    edits = demos[demos["edit_ratio"].notna()]
    project_median = float(edits["edit_ratio"].median()) if not edits.empty else np.nan
    floor = max(SUBSTANTIVE_EDIT_RATIO, thresholds.sloppy_fraction * project_median) if not np.isnan(project_median) else SUBSTANTIVE_EDIT_RATIO
    rows = []
    for annotator_id, group in demos.groupby("annotator_id", sort=True):
        ratios = group["edit_ratio"].dropna().astype(float)
        reviewed = group["review_score"].dropna().astype(float)
        median_ratio = float(ratios.median()) if len(ratios) else np.nan
        flags = ["sloppy_edits"] if len(ratios) >= thresholds.min_edits and median_ratio < floor else []
        rows.append(
            {
                "annotator_id": int(annotator_id),
                "username": usernames.get(int(annotator_id), str(annotator_id)),
                "demonstrations": int(len(group)),
                "median_time_s": float(group["time_spent_s"].dropna().median()) if group["time_spent_s"].notna().any() else np.nan,
                "edits": int(len(ratios)),
                "median_edit_ratio": median_ratio,
                "mean_edit_ratio": float(ratios.mean()) if len(ratios) else np.nan,
                "reviewed": int(len(reviewed)),
                "kept_share": float((reviewed >= keep_score).mean()) if len(reviewed) else np.nan,
                "flags": ",".join(flags),
            }
        )
    return pd.DataFrame(rows, columns=WRITER_COLUMNS)


def default_keep_score(rubric: list[dict]) -> float:
    """The middle of the rubric's scale, averaged over dimensions (4 on the default 1–7 rubric)."""
    return float(np.mean([(d["min"] + d["max"]) / 2 for d in rubric])) if rubric else 0.0


def writer_stats(
    engine: Engine, actor: Actor, project: str | int, *, keep_score: float | None = None, thresholds: WriterThresholds = WriterThresholds()
) -> pd.DataFrame:
    """Per-writer statistics of `project`'s demonstrations (admin only); see the module docstring."""
    from rlhf.sft_export import demonstration_frame

    check_admin(engine, actor, "read annotator statistics")
    project_id = project_id_of(engine, project)
    demos = demonstration_frame(engine, project_id)
    user = User.__table__
    ids = [int(i) for i in demos["annotator_id"].unique()]
    usernames = dict(_fetch(engine, sa.select(user.c.id, user.c.username).where(user.c.id.in_(ids)))) if ids else {}
    keep = default_keep_score(get_project(engine, project_id).rubric) if keep_score is None else keep_score
    return writer_table(demos, usernames, keep, thresholds)
