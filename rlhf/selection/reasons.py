"""Why a task was handed out: the strategy, score and random-share flag copied onto each new annotation.

Read in the submit's own context query (three scalar subqueries on `selectionscore` by primary
key), so recording the reason adds no round trip. The stored score row counts only when it was
computed for the strategy the project uses now; otherwise the task was ordered least-annotated
(no score yet, or the strategy fell back), and that is what is recorded. Gold tasks say `gold`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from rlhf.schema import SelectionScore

SCORE = SelectionScore.__table__
REASON_FIELDS = ("selection_strategy", "selection_score", "selection_random")
"""The annotation columns that say why its task was chosen."""


def selection_reason_columns(task_id_column) -> list:
    """Labelled scalar subqueries `sel_strategy`, `sel_score`, `sel_random` of the task's stored score row."""

    def scalar(column, label: str):
        return select(column).where(SCORE.c.task_id == task_id_column).scalar_subquery().label(label)

    return [scalar(SCORE.c.strategy, "sel_strategy"), scalar(SCORE.c.score, "sel_score"), scalar(SCORE.c.is_random, "sel_random")]


def selection_reason(ctx: Any, project_selection: str) -> dict[str, Any]:
    """The REASON_FIELDS values for a new annotation on the task of `ctx` (a row with the columns above and is_gold)."""
    if ctx.is_gold:
        return {"selection_strategy": "gold", "selection_score": None, "selection_random": None}
    if project_selection != "least-annotated" and ctx.sel_strategy == project_selection:
        return {"selection_strategy": ctx.sel_strategy, "selection_score": ctx.sel_score, "selection_random": bool(ctx.sel_random)}
    return {"selection_strategy": "least-annotated", "selection_score": None, "selection_random": None}
