"""Annotations as long-format pandas DataFrames, read with one or two SQL queries each.

Statistics, aggregation and export all start from these frames: one row per rating per rubric
dimension (`rating_frame`), one row per pairwise judgment (`preference_frame`), and the texts
behind them (`response_frame`). Every frame carries `annotator_role`, so labels from external
sources (an imported dataset, a model judge: users with role `external`) are included but
marked; `humans_only(frame)` is the one filter that drops them.

Reading is bulk: Core selects executed once, rows fetched in one go, columns typed by pandas.
No ORM objects are built and no query runs per row, so a million annotations read in seconds.
`project` may be given by name or by id everywhere.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from rlhf.projects import ProjectNotFound, get_project  # noqa: F401 - ProjectNotFound is what project_id_of raises
from rlhf.schema import Preference, Prompt, Rating, Response, Task, User

HUMAN_ROLES = ("annotator", "admin")
"""Roles whose labels come from people; `external` labels come from datasets or model judges."""

RATING_COLUMNS = [
    "task_id",
    "prompt_id",
    "response_id",
    "model_name",
    "annotator_id",
    "annotator_role",
    "dimension",
    "value",
    "time_spent_s",
    "created_at",
    "is_gold",
]
PREFERENCE_COLUMNS = [
    "task_id",
    "prompt_id",
    "response_a_id",
    "response_b_id",
    "model_a",
    "model_b",
    "len_a",
    "len_b",
    "round_a",
    "round_b",
    "annotator_id",
    "choice",
    "strength",
    "shown_left",
    "time_spent_s",
    "created_at",
    "is_gold",
    "annotator_role",
]
RESPONSE_COLUMNS = [
    "response_id",
    "prompt_id",
    "prompt_hash",
    "prompt_text",
    "prompt_messages",
    "prompt_category",
    "response_text",
    "model_name",
    "round",
]


def project_id_of(engine: Engine, project: str | int) -> int:
    """The id of `project` (a name or an id); raises `rlhf.projects.ProjectNotFound` when there is none."""
    return int(get_project(engine, project).id)


def humans_only(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows whose annotator is a person (role annotator or admin), not an external label source."""
    return frame[frame["annotator_role"].isin(HUMAN_ROLES)]


# --------------------------------------------------------------------------- queries


def _fetch(engine: Engine, statement: sa.Select, columns: Sequence[str]) -> pd.DataFrame:
    """Run one select and build a frame from the raw rows (no per-row ORM work)."""
    with engine.connect() as connection:
        rows = connection.execute(statement).fetchall()
    return pd.DataFrame.from_records(rows, columns=list(columns), coerce_float=True)


def _raw(column: sa.ColumnElement, type_: sa.types.TypeEngine) -> sa.ColumnElement:
    """`column` without its Python-side result processing (parsed in bulk by pandas instead)."""
    return sa.type_coerce(column, type_)


def _utc(values: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC; SQLite returns naive ISO strings (stored as UTC), PostgreSQL aware datetimes."""
    if values.empty:
        return pd.Series(pd.DatetimeIndex([], tz="UTC"), index=values.index)
    return pd.to_datetime(values, utc=True, format="ISO8601")


def _json_each(engine: Engine, column: sa.ColumnElement):
    """A table-valued (key, value) expansion of a JSON object column, per dialect."""
    name = "json_each" if engine.dialect.name == "sqlite" else "json_each_text"
    return getattr(sa.func, name)(column).table_valued("key", "value")


def rating_frame(engine: Engine, project: str | int) -> pd.DataFrame:
    """One row per rating per rubric dimension of `project`.

    Columns: task_id, prompt_id, response_id, model_name, annotator_id, annotator_role,
    dimension, value (float; NaN when not a number), time_spent_s, created_at (UTC), is_gold.
    The JSON `scores` object is expanded in SQL (one query), not in Python.
    """
    project_id = project_id_of(engine, project)
    rating, task, response, user = (t.__table__ for t in (Rating, Task, Response, User))
    scores = _json_each(engine, rating.c.scores).alias("scores")
    statement = (
        sa.select(
            task.c.id,
            task.c.prompt_id,
            task.c.response_a_id,
            response.c.model_name,
            rating.c.user_id,
            user.c.role,
            scores.c.key,
            scores.c.value,
            rating.c.time_spent_s,
            _raw(rating.c.created_at, sa.String() if engine.dialect.name == "sqlite" else sa.DateTime()),
            task.c.is_gold,
        )
        .select_from(rating)
        .join(task, task.c.id == rating.c.task_id)
        .join(response, response.c.id == task.c.response_a_id)
        .join(user, user.c.id == rating.c.user_id)
        .join(scores, sa.true())
        .where(task.c.project_id == project_id, task.c.kind == "rating")
        .order_by(rating.c.id, scores.c.key)
    )
    frame = _fetch(engine, statement, RATING_COLUMNS)
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype("float64")
    frame["time_spent_s"] = frame["time_spent_s"].astype("float64")
    frame["created_at"] = _utc(frame["created_at"])
    frame["is_gold"] = frame["is_gold"].astype(bool)
    return _typed_ids(frame, ["task_id", "prompt_id", "response_id", "annotator_id"])


def preference_frame(engine: Engine, project: str | int) -> pd.DataFrame:
    """One row per pairwise judgment of `project`.

    Columns: task_id, prompt_id, response_a_id, response_b_id, model_a, model_b, len_a, len_b
    (characters), round_a, round_b, annotator_id, choice (a/b/tie/both_bad, in the task's
    terms), strength (0/1/2), shown_left ('a' or 'b'), time_spent_s, created_at (UTC), is_gold,
    annotator_role.
    """
    project_id = project_id_of(engine, project)
    preference, task, user = (t.__table__ for t in (Preference, Task, User))
    response_a = Response.__table__.alias("ra")
    response_b = Response.__table__.alias("rb")
    statement = (
        sa.select(
            task.c.id,
            task.c.prompt_id,
            task.c.response_a_id,
            task.c.response_b_id,
            response_a.c.model_name,
            response_b.c.model_name,
            sa.func.length(response_a.c.text),
            sa.func.length(response_b.c.text),
            response_a.c.round,
            response_b.c.round,
            preference.c.user_id,
            preference.c.choice,
            preference.c.strength,
            preference.c.shown_left,
            preference.c.time_spent_s,
            _raw(preference.c.created_at, sa.String() if engine.dialect.name == "sqlite" else sa.DateTime()),
            task.c.is_gold,
            user.c.role,
        )
        .select_from(preference)
        .join(task, task.c.id == preference.c.task_id)
        .join(response_a, response_a.c.id == task.c.response_a_id)
        .join(response_b, response_b.c.id == task.c.response_b_id)
        .join(user, user.c.id == preference.c.user_id)
        .where(task.c.project_id == project_id, task.c.kind == "pairwise")
        .order_by(preference.c.id)
    )
    frame = _fetch(engine, statement, PREFERENCE_COLUMNS)
    frame["time_spent_s"] = frame["time_spent_s"].astype("float64")
    frame["created_at"] = _utc(frame["created_at"])
    frame["is_gold"] = frame["is_gold"].astype(bool)
    return _typed_ids(
        frame,
        ["task_id", "prompt_id", "response_a_id", "response_b_id", "len_a", "len_b", "round_a", "round_b", "annotator_id", "strength"],
    )


def response_frame(engine: Engine, project: str | int) -> pd.DataFrame:
    """The texts: one row per response of `project`, with its prompt.

    Columns: response_id, prompt_id, prompt_hash (the prompt's content hash, stable across
    databases), prompt_text, prompt_messages (a list of {role, content} for chat prompts, else
    None), prompt_category, response_text, model_name, round.
    """
    project_id = project_id_of(engine, project)
    prompt, response = Prompt.__table__, Response.__table__
    statement = (
        sa.select(
            response.c.id,
            prompt.c.id,
            prompt.c.content_hash,
            prompt.c.text,
            _raw(prompt.c.messages, sa.Text()),
            prompt.c.category,
            response.c.text,
            response.c.model_name,
            response.c.round,
        )
        .select_from(response)
        .join(prompt, prompt.c.id == response.c.prompt_id)
        .where(prompt.c.project_id == project_id)
        .order_by(response.c.id)
    )
    frame = _fetch(engine, statement, RESPONSE_COLUMNS)
    frame["prompt_messages"] = [_parse_messages(value) for value in frame["prompt_messages"]]
    return _typed_ids(frame, ["response_id", "prompt_id", "round"])


def _parse_messages(value: Any) -> list[dict[str, str]] | None:
    """A chat prompt's messages from the raw JSON column (text on SQLite, text or list on PostgreSQL)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = json.loads(value)
    return value or None


def _typed_ids(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Integer columns as int64 (nullable Int64 where a value is missing)."""
    for column in columns:
        series = frame[column]
        frame[column] = series.astype("Int64") if series.isna().any() else series.astype("int64")
    return frame
