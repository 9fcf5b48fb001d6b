"""Demonstrations as training rows: TRL's SFT formats, and substantive edits as preference pairs.

`sft` rows (rlhf export --format sft), always in TRL's conversational form so the chat template
of the model being trained is applied (plain-text prompts become one user turn):
- `messages` shape (default): `messages` = the prompt's turns + `{"role": "assistant", "content":
  demonstration}` (the last turn is the demonstration);
- `prompt-completion` shape: `prompt` = the prompt's turns, `completion` = `[{"role":
  "assistant", "content": demonstration}]` (TRL then computes the loss on the completion only).
Both carry `prompt_id`, `task_id`, `demonstration_id`, `edit_ratio` (share of the original's
words changed; None when written from scratch), `review_score` / `review_votes` (mean rubric
score the other annotators gave the demonstration in its review rating task; None when not
reviewed) and, from the export, `split` (grouped by prompt). `min_review_score` keeps only
demonstrations reviewed at least that well.

Edit pairs (`edit_pair_rows`, with `--include-edits` on `trl` exports): a demonstration that
changed at least `SUBSTANTIVE_EDIT_RATIO` of the model reply it started from says edited ≻
original, a row in the preference format with `source` = "edit" (the comparisons' rows then
carry `source` = "comparison").
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from rlhf.demonstrations import DEMONSTRATION_MODEL, is_substantive
from rlhf.frames import HUMAN_ROLES, _fetch, _frame, _parse_messages, project_id_of
from rlhf.schema import Demonstration, Prompt, Rating, Response, Task, User

SFT_SHAPES = ("messages", "prompt-completion")

DEMONSTRATION_COLUMNS = [
    "demonstration_id", "task_id", "prompt_id", "annotator_id", "annotator_role", "text", "edit_ratio", "time_spent_s",
    "review_task_id", "created_at", "prompt_hash", "prompt_text", "prompt_messages", "original_text", "original_model",
]  # fmt: skip


def demonstration_frame(engine: Engine, project: str | int) -> pd.DataFrame:
    """One row per demonstration of `project` (ordered by id), with its prompt, original reply and review.

    Columns: DEMONSTRATION_COLUMNS plus `review_score` (mean over the review task's ratings of
    the mean over rubric dimensions; NaN when unreviewed) and `review_votes`.
    """
    project_id = project_id_of(engine, project)
    demo, task, prompt, response, user = (t.__table__ for t in (Demonstration, Task, Prompt, Response, User))
    query = (
        sa.select(
            demo.c.id, demo.c.task_id, task.c.prompt_id, demo.c.user_id, user.c.role, demo.c.text, demo.c.edit_ratio, demo.c.time_spent_s,
            demo.c.review_task_id, demo.c.created_at, prompt.c.content_hash, prompt.c.text, prompt.c.messages, response.c.text, response.c.model_name,
        )  # fmt: skip
        .select_from(
            demo.join(task, task.c.id == demo.c.task_id)
            .join(prompt, prompt.c.id == task.c.prompt_id)
            .join(user, user.c.id == demo.c.user_id)
            .outerjoin(response, response.c.id == task.c.response_a_id)
        )
        .where(task.c.project_id == project_id)
        .order_by(demo.c.id)
    )
    frame = _frame(_fetch(engine, query), DEMONSTRATION_COLUMNS)
    frame["prompt_messages"] = [_parse_messages(value) for value in frame["prompt_messages"]]
    reviews = _review_scores(engine, [int(t) for t in frame["review_task_id"].dropna().unique()])
    review_ids = frame["review_task_id"]
    frame["review_score"] = [reviews.get(int(t), (np.nan, 0))[0] if pd.notna(t) else np.nan for t in review_ids]
    frame["review_votes"] = [reviews.get(int(t), (np.nan, 0))[1] if pd.notna(t) else 0 for t in review_ids]
    return frame


def _review_scores(engine: Engine, review_task_ids: list[int]) -> dict[int, tuple[float, int]]:
    """Per review task: (mean over ratings of the mean rubric score, number of ratings), people's ratings only."""
    rating, user = Rating.__table__, User.__table__
    scores: dict[int, list[float]] = {}
    for start in range(0, len(review_task_ids), 500):
        chunk = review_task_ids[start : start + 500]
        query = sa.select(rating.c.task_id, rating.c.scores).join(user, user.c.id == rating.c.user_id).where(
            rating.c.task_id.in_(chunk), user.c.role.in_(HUMAN_ROLES)
        )
        for task_id, raw in _fetch(engine, query):
            values = json.loads(raw) if isinstance(raw, str) else raw
            if values:
                scores.setdefault(int(task_id), []).append(float(np.mean([float(v) for v in values.values()])))
    return {task_id: (float(np.mean(values)), len(values)) for task_id, values in scores.items()}


def _prompt_turns(prompt_text: str, prompt_messages: list[dict[str, str]] | None) -> list[dict[str, str]]:
    from rlhf.export import as_messages

    return as_messages(prompt_text, prompt_messages)


def filter_reviewed(frame: pd.DataFrame, min_review_score: float | None) -> tuple[pd.DataFrame, int]:
    """Keep demonstrations whose review score is at least `min_review_score` (None keeps all); the rows dropped."""
    if min_review_score is None:
        return frame, 0
    kept = frame[frame["review_score"].notna() & (frame["review_score"] >= min_review_score)]
    return kept, int(len(frame) - len(kept))


def sft_rows(frame: pd.DataFrame, shape: str) -> pd.DataFrame:
    """TRL SFT rows (conversational) from `demonstration_frame` rows, with `prompt_hash` for the split."""
    if shape not in SFT_SHAPES:
        raise ValueError(f"sft shape {shape!r}: expected one of {', '.join(SFT_SHAPES)}")
    prompts = [_prompt_turns(t, m) for t, m in zip(frame["prompt_text"], frame["prompt_messages"])]
    replies = [{"role": "assistant", "content": text} for text in frame["text"]]
    if shape == "messages":
        texts: dict[str, Any] = {"messages": [p + [r] for p, r in zip(prompts, replies)]}
    else:
        texts = {"prompt": prompts, "completion": [[r] for r in replies]}
    return pd.DataFrame(
        {
            **texts,
            "prompt_id": frame["prompt_id"].astype(int).to_numpy(),
            "task_id": frame["task_id"].astype(int).to_numpy(),
            "demonstration_id": frame["demonstration_id"].astype(int).to_numpy(),
            "edit_ratio": frame["edit_ratio"].astype(float).to_numpy(),
            "review_score": frame["review_score"].astype(float).to_numpy(),
            "review_votes": frame["review_votes"].astype(int).to_numpy(),
            "prompt_hash": frame["prompt_hash"].to_numpy(),
        }
    )


def substantive_edits(frame: pd.DataFrame) -> pd.DataFrame:
    """The `demonstration_frame` rows that changed a model reply substantively (edit ratio ≥ SUBSTANTIVE_EDIT_RATIO)."""
    substantive = np.array([pd.notna(r) and is_substantive(float(r)) for r in frame["edit_ratio"]], dtype=bool)
    return frame[substantive & frame["original_text"].notna().to_numpy()]


def edit_pair_rows(frame: pd.DataFrame, conversational: bool, columns: list[str]) -> pd.DataFrame:
    """Preference rows edited ≻ original for every substantive edit, in the `trl` export's `columns`."""
    edits = substantive_edits(frame)
    if conversational:
        prompt = [_prompt_turns(t, m) for t, m in zip(edits["prompt_text"], edits["prompt_messages"])]
        chosen = [[{"role": "assistant", "content": text}] for text in edits["text"]]
        rejected = [[{"role": "assistant", "content": text}] for text in edits["original_text"]]
    else:
        prompt, chosen, rejected = edits["prompt_text"].tolist(), edits["text"].tolist(), edits["original_text"].tolist()
    values = {
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "margin": np.zeros(len(edits)),
        "prompt_id": edits["prompt_id"].astype(int).to_numpy(),
        "task_id": edits["task_id"].astype("Int64").to_numpy(),
        "votes": np.ones(len(edits), dtype=int),
        "agreement": np.ones(len(edits)),
        "chosen_model": [DEMONSTRATION_MODEL] * len(edits),
        "rejected_model": edits["original_model"].to_numpy(),
        "prompt_hash": edits["prompt_hash"].to_numpy(),
        "tie": np.zeros(len(edits), dtype=bool),
    }
    return pd.DataFrame({name: values[name] for name in columns})
