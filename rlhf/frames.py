"""Annotations as long-format pandas DataFrames, read with a few bulk SQL queries each.

Statistics, aggregation and export all start from these frames: one row per rating per rubric
dimension (`rating_frame`), one row per pairwise judgment (`preference_frame`), and the texts
behind them (`response_frame`). Every frame carries `annotator_role`, so labels from external
sources (an imported dataset, a model judge: users with role `external`) are included but
marked; `humans_only(frame)` is the one filter that drops them.

Reading is bulk: one query over the annotations (only the columns asked for), plus one each
for the task, response and user fields, which are read once and spread over the annotations
by id in pandas rather than joined per row. Selects run on the raw DBAPI cursor (no ORM
objects, no per-row result processing), so a million annotations read in seconds. Rows come
in a deterministic order. `project` may be given by name or by id everywhere.
"""

from __future__ import annotations

import json
from operator import itemgetter
from typing import Any, Sequence

import numpy as np
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

VOTE_FIELDS = {"annotator_id": "user_id", "choice": "choice", "strength": "strength", "shown_left": "shown_left", "time_spent_s": "time_spent_s", "created_at": "created_at"}
"""preference_frame columns read from the preference row itself (one value per annotation)."""
TASK_FIELDS = ("prompt_id", "response_a_id", "response_b_id", "is_gold")
"""Columns read once per task and spread over its annotations."""
RESPONSE_FIELDS = {"model_a": ("response_a_id", "model_name"), "model_b": ("response_b_id", "model_name"), "len_a": ("response_a_id", "length"),
                   "len_b": ("response_b_id", "length"), "round_a": ("response_a_id", "round"), "round_b": ("response_b_id", "round")}
"""Columns read once per response: (which response of the task, which attribute)."""


def _fetch(engine: Engine, statement: sa.Select) -> list[tuple]:
    """Run one select on the raw DBAPI cursor: plain tuples, none of SQLAlchemy's per-row processing."""
    compiled = statement.compile(dialect=engine.dialect, compile_kwargs={"render_postcompile": True})
    params = compiled.construct_params()
    args = tuple(params[name] for name in compiled.positiontup) if compiled.positional else params
    with engine.connect() as connection:
        cursor = connection.connection.cursor()
        try:
            cursor.execute(str(compiled), args)
            return cursor.fetchall()
        finally:
            cursor.close()


INT_COLUMNS = frozenset(
    {"task_id", "prompt_id", "response_id", "response_a_id", "response_b_id", "annotator_id", "user_id", "strength", "length", "round"}
)
FLOAT_COLUMNS = frozenset({"time_spent_s"})
BOOL_COLUMNS = frozenset({"is_gold"})


def _frame(rows: list[tuple], columns: Sequence[str]) -> pd.DataFrame:
    """Raw rows → a frame, one column at a time: numbers straight into numpy arrays (`np.fromiter`),
    which is several times faster than letting pandas infer types from a million tuples."""
    data = {}
    for index, name in enumerate(columns):
        values = map(itemgetter(index), rows)
        kind = np.int64 if name in INT_COLUMNS else np.float64 if name in FLOAT_COLUMNS else bool if name in BOOL_COLUMNS else None
        if kind is not None:
            try:
                data[name] = np.fromiter(values, dtype=kind, count=len(rows))
                continue
            except TypeError:  # a NULL in the column: let pandas pick a nullable type
                values = map(itemgetter(index), rows)
        # Kept as object columns: pandas 3 would otherwise copy every string into an Arrow string
        # array (1.1 s of a million-annotation export, profiled), and every reader here goes back
        # to Python strings anyway (JSON lines, dict lookups).
        data[name] = pd.Series(np.fromiter(values, dtype=object, count=len(rows)), dtype=object, copy=False)
    return pd.DataFrame(data, columns=list(columns))


def _utc(values: pd.Series) -> pd.Series:
    """Timestamps as tz-aware UTC; SQLite returns naive ISO strings (stored as UTC), PostgreSQL aware datetimes."""
    if values.empty:
        return pd.Series(pd.DatetimeIndex([], tz="UTC"), index=values.index)
    return pd.to_datetime(values, utc=True, format="ISO8601")


def _wanted(columns: Sequence[str] | None, known: Sequence[str], frame_name: str) -> list[str]:
    if columns is None:
        return list(known)
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise ValueError(f"{frame_name}: unknown column(s) {', '.join(unknown)} (known: {', '.join(known)})")
    return list(columns)


def _lookup(table: pd.DataFrame, keys: pd.Series, column: str) -> np.ndarray:
    """`table[column]` at the index labels `keys` (vectorised; missing keys give NaN / None)."""
    positions = table.index.get_indexer(keys.to_numpy())
    values = table[column].to_numpy()
    if (positions < 0).any():
        values = np.append(values.astype(object), None)
    return values[positions]


def _task_table(engine: Engine, project_id: int, kind: str) -> pd.DataFrame:
    """The project's tasks of `kind`, indexed by task id: prompt_id, response_a_id, response_b_id, is_gold."""
    task = Task.__table__
    statement = sa.select(task.c.id, task.c.prompt_id, task.c.response_a_id, task.c.response_b_id, task.c.is_gold).where(
        task.c.project_id == project_id, task.c.kind == kind
    )
    frame = _frame(_fetch(engine, statement), ["task_id", *TASK_FIELDS])
    frame["is_gold"] = frame["is_gold"].astype(bool)
    return frame.set_index("task_id")


def _response_table(engine: Engine, project_id: int) -> pd.DataFrame:
    """The project's responses, indexed by response id: model_name, length (characters), round."""
    prompt, response = Prompt.__table__, Response.__table__
    statement = (
        sa.select(response.c.id, response.c.model_name, sa.func.length(response.c.text), response.c.round)
        .select_from(response)
        .join(prompt, prompt.c.id == response.c.prompt_id)
        .where(prompt.c.project_id == project_id)
    )
    return _frame(_fetch(engine, statement), ["response_id", "model_name", "length", "round"]).set_index("response_id")


def _user_roles(engine: Engine) -> pd.Series:
    """Every user's role, indexed by user id (a small table, read whole)."""
    user = User.__table__
    frame = _frame(_fetch(engine, sa.select(user.c.id, user.c.role)), ["user_id", "role"])
    return frame.set_index("user_id")["role"]


def _ordered(frame: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Rows in a deterministic order (by `keys`), whatever order the database returned them in."""
    if frame.empty:
        return frame.reset_index(drop=True)
    order = np.lexsort([frame[k].to_numpy() for k in reversed(keys)])
    return frame.iloc[order].reset_index(drop=True)


def preference_frame(engine: Engine, project: str | int, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per pairwise judgment of `project`, ordered by task then annotator.

    Columns (all, or the subset `columns` asks for, read and nothing else): task_id, prompt_id,
    response_a_id, response_b_id, model_a, model_b, len_a, len_b (characters), round_a,
    round_b, annotator_id, choice (a/b/tie/both_bad, in the task's terms), strength (0/1/2),
    shown_left ('a' or 'b'), time_spent_s, created_at (UTC), is_gold, annotator_role.
    Per-annotation fields come from one query over the judgments; task, response and user
    fields are read once each (bulk) and spread by id, not joined per row.
    """
    wanted = _wanted(columns, PREFERENCE_COLUMNS, "preference_frame")
    project_id = project_id_of(engine, project)
    preference, task = Preference.__table__, Task.__table__
    vote_names = ["task_id", "annotator_id"] + [c for c in wanted if c in VOTE_FIELDS and c != "annotator_id"]
    statement = (
        sa.select(preference.c.task_id, *(preference.c[VOTE_FIELDS[c]] for c in vote_names[1:]))
        .select_from(preference)
        .join(task, task.c.id == preference.c.task_id)
        .where(task.c.project_id == project_id, task.c.kind == "pairwise")
    )
    frame = _ordered(_frame(_fetch(engine, statement), vote_names), ["task_id", "annotator_id"])
    need_tasks = [c for c in TASK_FIELDS if c in wanted] + sorted({RESPONSE_FIELDS[c][0] for c in wanted if c in RESPONSE_FIELDS})
    if need_tasks:
        tasks = _task_table(engine, project_id, "pairwise")
        for column in dict.fromkeys(need_tasks):
            frame[column] = _lookup(tasks, frame["task_id"], column)
    if any(c in RESPONSE_FIELDS for c in wanted):
        responses = _response_table(engine, project_id)
        for column in (c for c in wanted if c in RESPONSE_FIELDS):
            which, attribute = RESPONSE_FIELDS[column]
            frame[column] = _lookup(responses, frame[which], attribute)
    _common_vote_columns(engine, frame, wanted)
    typed = ["task_id", "prompt_id", "response_a_id", "response_b_id", "len_a", "len_b", "round_a", "round_b", "annotator_id", "strength"]
    return _typed_ids(frame, [c for c in typed if c in frame.columns])[wanted]


def _common_vote_columns(engine: Engine, frame: pd.DataFrame, wanted: Sequence[str]) -> None:
    """Fill or type the columns preference and rating frames share, in place."""
    if "annotator_role" in wanted:
        frame["annotator_role"] = _lookup(_user_roles(engine).to_frame(), frame["annotator_id"], "role")
    if "time_spent_s" in wanted:
        frame["time_spent_s"] = frame["time_spent_s"].astype("float64")
    if "created_at" in wanted:
        frame["created_at"] = _utc(frame["created_at"])
    if "is_gold" in wanted:
        frame["is_gold"] = frame["is_gold"].astype(bool)


RATING_VOTE_FIELDS = ("annotator_id", "dimension", "value", "time_spent_s", "created_at")


def rating_frame(engine: Engine, project: str | int, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per rating per rubric dimension of `project`, ordered by task, annotator, dimension.

    Columns (all, or the subset `columns` asks for): task_id, prompt_id, response_id,
    model_name, annotator_id, annotator_role, dimension, value (float; NaN when not a number),
    time_spent_s, created_at (UTC), is_gold. The JSON `scores` object is expanded in SQL
    (json_each / json_each_text); task, response and user fields are read once and spread by id.
    """
    wanted = _wanted(columns, RATING_COLUMNS, "rating_frame")
    project_id = project_id_of(engine, project)
    rating, task = Rating.__table__, Task.__table__
    function = "json_each" if engine.dialect.name == "sqlite" else "json_each_text"
    scores = getattr(sa.func, function)(rating.c.scores).table_valued("key", "value").alias("scores")
    extra = [c for c in ("time_spent_s", "created_at") if c in wanted]
    statement = (
        sa.select(rating.c.task_id, rating.c.user_id, scores.c.key, scores.c.value, *(rating.c[c] for c in extra))
        .select_from(rating)
        .join(task, task.c.id == rating.c.task_id)
        .join(scores, sa.true())
        .where(task.c.project_id == project_id, task.c.kind == "rating")
    )
    frame = _ordered(_frame(_fetch(engine, statement), ["task_id", "annotator_id", "dimension", "value", *extra]), ["task_id", "annotator_id", "dimension"])
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce").astype("float64")
    task_columns = {"prompt_id": "prompt_id", "response_id": "response_a_id", "is_gold": "is_gold"}
    if any(c in wanted for c in (*task_columns, "model_name")):
        tasks = _task_table(engine, project_id, "rating")
        for column, source in task_columns.items():
            if column in wanted or (column == "response_id" and "model_name" in wanted):
                frame[column] = _lookup(tasks, frame["task_id"], source)
    if "model_name" in wanted:
        frame["model_name"] = _lookup(_response_table(engine, project_id), frame["response_id"], "model_name")
    _common_vote_columns(engine, frame, wanted)
    return _typed_ids(frame, [c for c in ("task_id", "prompt_id", "response_id", "annotator_id") if c in frame.columns])[wanted]


def response_frame(engine: Engine, project: str | int) -> pd.DataFrame:
    """The texts: one row per response of `project`, with its prompt, ordered by response id.

    Columns: response_id, prompt_id, prompt_hash (the prompt's content hash, stable across
    databases), prompt_text, prompt_messages (a list of {role, content} for chat prompts, else
    None), prompt_category, response_text, model_name, round. Prompts are read once each, not
    once per response.
    """
    project_id = project_id_of(engine, project)
    prompt, response = Prompt.__table__, Response.__table__
    prompts_query = sa.select(prompt.c.id, prompt.c.content_hash, prompt.c.text, prompt.c.messages, prompt.c.category).where(
        prompt.c.project_id == project_id
    )
    prompts = _frame(_fetch(engine, prompts_query), ["prompt_id", "prompt_hash", "prompt_text", "prompt_messages", "prompt_category"])
    prompts["prompt_messages"] = [_parse_messages(value) for value in prompts["prompt_messages"]]
    prompts = prompts.set_index("prompt_id")
    responses_query = (
        sa.select(response.c.id, response.c.prompt_id, response.c.text, response.c.model_name, response.c.round)
        .select_from(response)
        .join(prompt, prompt.c.id == response.c.prompt_id)
        .where(prompt.c.project_id == project_id)
        .order_by(response.c.id)
    )
    frame = _frame(_fetch(engine, responses_query), ["response_id", "prompt_id", "response_text", "model_name", "round"])
    for column in ("prompt_hash", "prompt_text", "prompt_messages", "prompt_category"):
        frame[column] = _lookup(prompts, frame["prompt_id"], column)
    return frame[RESPONSE_COLUMNS]


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
