"""A project's statistics from its database, and the CSV inputs of `rlhf agreement` / `rlhf leaderboard`.

`project_stats` builds what `rlhf stats` prints: agreement per rubric dimension and for the
pairwise preferences, the annotator table, and the model leaderboard. `dashboard_data`
returns the same as tables and series ready to draw (agreement with intervals and its trend
over time, annotator table with flags, pairwise kappa in long form, per-annotator confusion
against the consensus, leaderboard with intervals). Both are admin functions.

Annotations are read with `rlhf.frames` (one bulk query per frame); gold answers, edit
history (`AnnotationRevision`) and usernames with small queries here.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from rlhf.agreement import AgreementConfig, AgreementReport, AgreementUndefined, agreement_report, alpha_from_cells, encode_ratings
from rlhf.quality import QualityInputs, QualityThresholds, annotator_table, consensus_confusion
from rlhf.roles import Actor, check_admin

PREFERENCE_VARIABLE = "preference"
"""The name the preference choices go by in tables that also list rubric dimensions."""


# --------------------------------------------------------------------------- CSV inputs


class CsvInputError(ValueError):
    """A CSV input is malformed; the message names the file, line and column."""


def _open_csv(path: Path | str) -> tuple[str, list[str], list[tuple[int, list[str]]]]:
    """(name, header, [(line number, fields)]) of a CSV file; blank lines are skipped."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise CsvInputError(f"{name}: no such file") from None
    except UnicodeDecodeError as exc:
        raise CsvInputError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise CsvInputError(f"{name}: cannot read ({exc.strerror})") from None
    return _parse_csv_text(name, text)


def _parse_csv_text(name: str, text: str) -> tuple[str, list[str], list[tuple[int, list[str]]]]:
    if "\x00" in text:
        raise CsvInputError(f"{name}: contains NUL bytes (not a CSV text file)")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    records: list[tuple[int, list[str]]] = []
    header: list[str] | None = None
    try:
        for fields in reader:
            if not fields or all(not f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip() for f in fields]
                header_line = reader.line_num
                continue
            records.append((reader.line_num, fields))
    except csv.Error as exc:
        raise CsvInputError(f"{name} line {reader.line_num}: {exc}") from None
    if header is None:
        raise CsvInputError(f"{name}: empty file (expected a header line)")
    seen: set[str] = set()
    for column in header:
        if column in seen:
            raise CsvInputError(f"{name} line {header_line}: column {column!r} appears twice in the header")
        seen.add(column)
    return name, header, records


def _columns(name: str, header: list[str], records: list[tuple[int, list[str]]], required: Sequence[str]) -> dict[str, list[str]]:
    """The required columns as lists of stripped strings; errors name the line and column."""
    missing = [c for c in required if c not in header]
    if missing:
        raise CsvInputError(f"{name} line 1: missing column {missing[0]!r} (the header needs {', '.join(required)})")
    index = {c: header.index(c) for c in required}
    out: dict[str, list[str]] = {c: [] for c in required}
    for line, fields in records:
        if len(fields) != len(header):
            raise CsvInputError(f"{name} line {line}: expected {len(header)} fields, got {len(fields)}")
        for column, position in index.items():
            out[column].append(fields[position].strip())
    return out


def read_ratings_csv(path: Path | str, level: str = "nominal") -> pd.DataFrame:
    """Long-format ratings (item, annotator, value) from a CSV with at least those columns.

    An empty value cell means "not rated" and the row is dropped. Values must be finite
    numbers for ordinal / interval / ratio (and >= 0 for ratio); for nominal they stay text
    unless every one is a number. Item and annotator ids stay text. Raises CsvInputError
    naming the line and column of the first problem, including a second rating of the same
    item by the same annotator.
    """
    name, header, records = _open_csv(path)
    return ratings_from_records(name, header, records, level)


def ratings_from_records(name: str, header: list[str], records: list[tuple[int, list[str]]], level: str) -> pd.DataFrame:
    """See read_ratings_csv; split out so parsing can be tested on text."""
    from rlhf.agreement import LEVELS

    if level not in LEVELS:
        raise CsvInputError(f"level must be one of {', '.join(LEVELS)}, not {level!r}")
    columns = _columns(name, header, records, ("item", "annotator", "value"))
    lines = [line for line, _ in records]
    kept_items, kept_annotators, kept_values, kept_lines = [], [], [], []
    first_line: dict[tuple[str, str], int] = {}
    numbers: list[float | None] = []
    for row, line in enumerate(lines):
        item, annotator, value = columns["item"][row], columns["annotator"][row], columns["value"][row]
        if not item:
            raise CsvInputError(f"{name} line {line}, column 'item': empty")
        if not annotator:
            raise CsvInputError(f"{name} line {line}, column 'annotator': empty")
        if not value:
            continue
        number = _number(value)
        if level != "nominal":
            if number is None:
                raise CsvInputError(f"{name} line {line}, column 'value': {value!r} is not a number (level {level})")
            if level == "ratio" and number < 0:
                raise CsvInputError(f"{name} line {line}, column 'value': {value!r} is negative (ratio level needs values >= 0)")
        key = (item, annotator)
        if key in first_line:
            raise CsvInputError(
                f"{name} line {line}: annotator {annotator!r} already rated item {item!r} on line {first_line[key]}"
            )
        first_line[key] = line
        kept_items.append(item)
        kept_annotators.append(annotator)
        kept_values.append(value)
        numbers.append(number)
        kept_lines.append(line)
    all_numbers = all(n is not None for n in numbers)
    values: Any = np.asarray(numbers, dtype=np.float64) if (level != "nominal" or (all_numbers and numbers)) else np.asarray(kept_values, dtype=object)
    return pd.DataFrame({"item": kept_items, "annotator": kept_annotators, "value": values, "line": kept_lines})


def _number(text: str) -> float | None:
    """A finite float from `text`, else None (NaN and infinities are not numbers here)."""
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def read_comparisons_csv(path: Path | str) -> pd.DataFrame:
    """Pairwise comparisons (model_a, model_b, winner) from a CSV; winner in a, b, tie, both_bad.

    Raises CsvInputError naming the line and column of the first problem (empty model name, a
    model compared with itself, an unknown winner).
    """
    from rlhf.aggregation.bradley_terry import WINNERS

    name, header, records = _open_csv(path)
    columns = _columns(name, header, records, ("model_a", "model_b", "winner"))
    for row, (line, _) in enumerate(records):
        a, b, winner = columns["model_a"][row], columns["model_b"][row], columns["winner"][row]
        if not a:
            raise CsvInputError(f"{name} line {line}, column 'model_a': empty")
        if not b:
            raise CsvInputError(f"{name} line {line}, column 'model_b': empty")
        if a == b:
            raise CsvInputError(f"{name} line {line}: model {a!r} is compared with itself")
        if winner not in WINNERS:
            raise CsvInputError(f"{name} line {line}, column 'winner': {winner!r} is not one of {', '.join(WINNERS)}")
    if not records:
        raise CsvInputError(f"{name}: no comparisons after the header")
    return pd.DataFrame({"model_a": columns["model_a"], "model_b": columns["model_b"], "winner": columns["winner"]})


# --------------------------------------------------------------------------- project data


@dataclass(frozen=True)
class StatsConfig:
    """How project statistics are computed.

    level: level of measurement of the rubric dimensions (Likert scales are ordinal).
    agreement: bootstrap size, pairwise overlap, ... (rlhf.agreement.AgreementConfig).
    thresholds: when the annotator table raises flags (rlhf.quality.QualityThresholds).
    include_external: also count labels from `external` users (imported datasets, model judges).
    include_gold: count gold tasks in agreement (they always count for gold accuracy).
    trend_points: points of the agreement-over-time series.
    leaderboard_bootstrap: bootstrap rounds of the Bradley–Terry intervals.
    both_bad: "tie" or "drop" — how the leaderboard treats "both bad" (see BradleyTerry).
    """

    level: str = "ordinal"
    agreement: AgreementConfig = field(default_factory=AgreementConfig)
    thresholds: QualityThresholds = field(default_factory=QualityThresholds)
    include_external: bool = False
    include_gold: bool = True
    trend_points: int = 12
    leaderboard_bootstrap: int = 200
    both_bad: str = "tie"


@dataclass(frozen=True)
class ProjectFrames:
    """Everything the statistics read from the database, as frames.

    ratings: rlhf.frames.rating_frame rows (one per rating per dimension), filtered per config.
    preferences: rlhf.frames.preference_frame rows.
    rubric: [(dimension, min, max)] from the project, plus dimensions seen only in ratings.
    gold: task_id, dimension (None for preferences), value — known answers of gold tasks.
    revisions: kind ('rating' / 'preference'), task_id, annotator_id, payload, replaced_at.
    usernames: annotator id -> username.
    """

    project_id: int
    name: str
    ratings: pd.DataFrame
    preferences: pd.DataFrame
    rubric: list[tuple[str, float | None, float | None]]
    gold: pd.DataFrame
    revisions: pd.DataFrame
    usernames: dict[int, str]
    rankings: pd.DataFrame = field(default_factory=pd.DataFrame)
    """rlhf.ranking_stats.ranking_frame rows (one per ranking and card), filtered per config."""
    gold_rankings: dict[int, list[list[int]]] = field(default_factory=dict)
    """Gold ranking tasks: task id -> the known order (groups of cards, best first)."""


def load_project_frames(engine: Engine, project: str | int, config: StatsConfig = StatsConfig()) -> ProjectFrames:
    """Read a project's annotations, gold answers, edit history and usernames."""
    from rlhf.frames import HUMAN_ROLES, preference_frame, project_id_of, rating_frame
    from rlhf.schema import AnnotationRevision, Project, Task, User

    project_id = project_id_of(engine, project)
    ratings = rating_frame(engine, project_id)
    preferences = preference_frame(engine, project_id)
    if not config.include_external:
        ratings = ratings[ratings["annotator_role"].isin(HUMAN_ROLES)]
        preferences = preferences[preferences["annotator_role"].isin(HUMAN_ROLES)]
    from rlhf.ranking_stats import ranking_frame

    rankings = ranking_frame(engine, project_id)
    if not config.include_external:
        rankings = rankings[rankings["annotator_role"].isin(HUMAN_ROLES)]
    ratings = ratings[ratings["value"].notna()]
    project_table, task, revision, user = (t.__table__ for t in (Project, Task, AnnotationRevision, User))
    with engine.connect() as connection:
        name, rubric = connection.execute(
            sa.select(project_table.c.name, project_table.c.rubric).where(project_table.c.id == project_id)
        ).one()
        gold_rows = connection.execute(
            sa.select(task.c.id, task.c.gold_answer).where(task.c.project_id == project_id, task.c.is_gold.is_(True))
        ).all()
        revision_rows = connection.execute(
            sa.select(revision.c.kind, revision.c.task_id, revision.c.user_id, revision.c.payload, revision.c.replaced_at)
            .join(task, task.c.id == revision.c.task_id)
            .where(task.c.project_id == project_id)
        ).all()
        user_rows = connection.execute(sa.select(user.c.id, user.c.username)).all()
    dimensions: list[tuple[str, float | None, float | None]] = []
    for entry in rubric or []:
        if isinstance(entry, dict) and entry.get("name"):
            dimensions.append((str(entry["name"]), _float_or_none(entry.get("min")), _float_or_none(entry.get("max"))))
    known = {d[0] for d in dimensions}
    for dimension in sorted(set(ratings["dimension"].unique()) - known):
        dimensions.append((str(dimension), None, None))
    return ProjectFrames(
        project_id=project_id,
        name=str(name),
        ratings=ratings.reset_index(drop=True),
        preferences=preferences.reset_index(drop=True),
        rubric=dimensions,
        gold=_gold_frame(gold_rows),
        revisions=pd.DataFrame(
            [(r.kind, r.task_id, r.user_id, r.payload, r.replaced_at) for r in revision_rows],
            columns=["kind", "task_id", "annotator_id", "payload", "replaced_at"],
        ),
        usernames={int(r.id): str(r.username) for r in user_rows},
        rankings=rankings.reset_index(drop=True),
        gold_rankings={int(r.id): r.gold_answer["ranking"] for r in gold_rows if isinstance(r.gold_answer, dict) and "ranking" in r.gold_answer},
    )


def _float_or_none(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _gold_frame(rows) -> pd.DataFrame:
    """task_id, dimension (None for a preference), value from gold tasks' `gold_answer`."""
    records = []
    for task_id, answer in rows:
        if not isinstance(answer, dict):
            continue
        if answer.get("choice") is not None:
            records.append((int(task_id), None, answer["choice"]))
        for dimension, value in (answer.get("scores") or {}).items():
            number = _float_or_none(value)
            if number is not None:
                records.append((int(task_id), str(dimension), number))
    return pd.DataFrame(records, columns=["task_id", "dimension", "value"])


def _scale(frames: ProjectFrames, dimension: str) -> list[float] | None:
    """The rubric's full scale for a dimension (integers min..max), when the rubric gives one."""
    for name, low, high in frames.rubric:
        if name == dimension and low is not None and high is not None and high > low and float(low).is_integer() and float(high).is_integer():
            if high - low <= 1000:
                return [float(v) for v in range(int(low), int(high) + 1)]
    return None


def _dimension_rows(frames: ProjectFrames, dimension: str, config: StatsConfig) -> pd.DataFrame:
    rows = frames.ratings[frames.ratings["dimension"] == dimension]
    if not config.include_gold:
        rows = rows[~rows["is_gold"]]
    return rows


def _long(rows: pd.DataFrame, value_column: str = "value") -> pd.DataFrame:
    return pd.DataFrame({"item": rows["task_id"].to_numpy(), "annotator": rows["annotator_id"].to_numpy(), "value": rows[value_column].to_numpy()})


def _domain_for(scale: list[float] | None, values: pd.Series) -> list[float] | None:
    """The rubric scale, widened to any value outside it (old rubrics), or None to use the values seen."""
    if scale is None:
        return None
    seen = set(values.astype(float).unique().tolist())
    return sorted(set(scale) | seen)


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class VariableStats:
    """Agreement for one variable: a rubric dimension (with its scale) or the preference choice."""

    name: str
    kind: str
    """'rating' or 'preference'."""
    scale: list[float] | None
    report: AgreementReport


@dataclass(frozen=True)
class ProjectStats:
    """What `rlhf stats --project` prints.

    variables: one VariableStats per rubric dimension with ratings, then the preferences.
    annotators: rlhf.quality.annotator_table columns plus `username`.
    leaderboard: BradleyTerry.leaderboard_ columns (empty without model comparisons).
    components: leaderboard component id -> models (scores compare only within one).
    tie_parameter: Davidson's nu of the leaderboard fit.
    """

    project: str
    variables: list[VariableStats]
    annotators: pd.DataFrame
    leaderboard: pd.DataFrame
    components: dict[int, list[str]]
    tie_parameter: float | None
    rankings: Any = None
    """rlhf.ranking_stats.RankingStats (None when the project has no rankings)."""

    def summary(self) -> dict[str, Any]:
        """JSON-ready: {project, dimensions: {name: agreement summary}, preferences, annotators, leaderboard, components}."""
        return {
            "project": self.project,
            "dimensions": {v.name: v.report.summary() for v in self.variables if v.kind == "rating"},
            "preferences": next((v.report.summary() for v in self.variables if v.kind == "preference"), None),
            "annotators": records(self.annotators),
            "leaderboard": records(self.leaderboard),
            "components": {str(k): v for k, v in self.components.items()},
            "tie_parameter": self.tie_parameter,
            "rankings": self.rankings.summary() if self.rankings is not None else None,
        }


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-ready dicts (NaN -> None, numpy scalars -> Python)."""
    out = []
    for row in frame.to_dict(orient="records"):
        out.append({str(k): _plain(v) for k, v in row.items()})
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not np.isfinite(value) else float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def project_stats(engine: Engine, actor: Actor, project: str | int, config: StatsConfig = StatsConfig()) -> ProjectStats:
    """Agreement per rubric dimension and for preferences, the annotator table and the leaderboard (admin only)."""
    check_admin(engine, actor, "view project statistics")
    frames = load_project_frames(engine, project, config)
    return _project_stats(frames, config)


def _project_stats(frames: ProjectFrames, config: StatsConfig) -> ProjectStats:
    variables = _variable_stats(frames, config)
    board, components, nu = _leaderboard(frames.preferences, config, frames.rankings)
    return ProjectStats(frames.name, variables, _annotators(frames, config), board, components, nu, _ranking_stats(frames, config))


def _ranking_stats(frames: ProjectFrames, config: StatsConfig):
    """Agreement, annotators and the Plackett–Luce leaderboard of the project's rankings (None without any)."""
    from rlhf.ranking_stats import ranking_stats

    rankings = frames.rankings
    if rankings.empty:
        return None
    return ranking_stats(rankings.reset_index(drop=True), frames.gold_rankings or None, include_gold=config.include_gold)


def _variable_stats(frames: ProjectFrames, config: StatsConfig) -> list[VariableStats]:
    out = []
    for dimension, _, _ in frames.rubric:
        rows = _dimension_rows(frames, dimension, config)
        if rows.empty:
            continue
        scale = _scale(frames, dimension)
        report = agreement_report(_long(rows), config.level, value_domain=_domain_for(scale, rows["value"]), config=config.agreement)
        out.append(VariableStats(dimension, "rating", scale, report))
    prefs = frames.preferences if config.include_gold else frames.preferences[~frames.preferences["is_gold"]]
    if not prefs.empty:
        from rlhf.schema import PREFERENCE_CHOICES

        report = agreement_report(_long(prefs, "choice"), "nominal", value_domain=list(PREFERENCE_CHOICES), config=config.agreement)
        out.append(VariableStats(PREFERENCE_VARIABLE, "preference", None, report))
    return out


def _leaderboard(preferences: pd.DataFrame, config: StatsConfig, rankings: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[int, list[str]], float | None]:
    """Bradley–Terry over the comparisons and the pairs the rankings imply (one leaderboard for both)."""
    from rlhf.aggregation.bradley_terry import LEADERBOARD_COLUMNS, BradleyTerry, comparisons_from_preferences
    from rlhf.ranking_stats import comparisons_from_rankings

    parts = [comparisons_from_preferences(preferences)] if not preferences.empty else []
    if rankings is not None and not rankings.empty:
        parts.append(comparisons_from_rankings(rankings))
    parts = [p for p in parts if len(p)]
    comparisons = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if comparisons.empty:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS), {}, None
    model = BradleyTerry(n_bootstrap=config.leaderboard_bootstrap, both_bad=config.both_bad).fit(comparisons)  # type: ignore[arg-type]
    return model.leaderboard_, model.component_members(), model.tie_parameter_


def _annotators(frames: ProjectFrames, config: StatsConfig) -> pd.DataFrame:
    """The annotator table over all dimensions and preferences, with usernames."""
    inputs = quality_inputs(frames, config)
    table = annotator_table(inputs)
    table.insert(1, "username", [frames.usernames.get(int(a), str(a)) for a in table["annotator"]])
    # n_annotations counts long-format rows (one per rubric score, one per comparison), so 15
    # ratings on 3 dimensions and 15 comparisons read "60": give each kind its own count.
    ratings, prefs = frames.ratings, frames.preferences
    per_annotator = {
        "n_ratings": ratings.drop_duplicates(["task_id", "annotator_id"]).groupby("annotator_id").size(),
        "n_rating_scores": ratings.groupby("annotator_id").size(),
        "n_comparisons": prefs.groupby("annotator_id").size(),
    }
    for position, (column, counts) in enumerate(per_annotator.items(), start=2):
        table.insert(position, column, table["annotator"].map(counts).fillna(0).astype("int64").to_numpy())
    return table


def quality_inputs(frames: ProjectFrames, config: StatsConfig) -> QualityInputs:
    """Frames for rlhf.quality.annotator_table.

    Rating items are (task, dimension) pairs coded task_id * D + dimension index (>= 0);
    preference items are coded -task_id, so the two kinds never share an item key (gold
    answers of both are looked up in one frame).
    """
    dimensions = [d for d, _, _ in frames.rubric]
    code = {d: i for i, d in enumerate(dimensions)}
    n_dims = max(len(dimensions), 1)
    ratings = frames.ratings
    rating_item = ratings["task_id"].to_numpy() * n_dims + ratings["dimension"].map(code).to_numpy()
    rating_long = pd.DataFrame({"item": rating_item, "annotator": ratings["annotator_id"].to_numpy(), "value": ratings["value"].to_numpy()})
    prefs = frames.preferences
    pref_long = pd.DataFrame(
        {
            "item": -prefs["task_id"].to_numpy(),
            "annotator": prefs["annotator_id"].to_numpy(),
            "value": prefs["choice"].to_numpy(),
            "shown_left": prefs["shown_left"].to_numpy(),
            "len_a": prefs["len_a"].to_numpy(),
            "len_b": prefs["len_b"].to_numpy(),
            "response_a": prefs["response_a_id"].to_numpy(),
            "response_b": prefs["response_b_id"].to_numpy(),
        }
    )
    gold = frames.gold
    gold_items = []
    for task_id, dimension, value in gold.itertuples(index=False):
        if dimension is None or (isinstance(dimension, float) and math.isnan(dimension)):
            gold_items.append((-task_id, value))
        elif dimension in code:
            gold_items.append((task_id * n_dims + code[dimension], value))
    times = pd.concat(
        [
            ratings.drop_duplicates(["task_id", "annotator_id"])[["annotator_id", "time_spent_s"]],
            prefs[["annotator_id", "time_spent_s"]],
        ],
        ignore_index=True,
    ).rename(columns={"annotator_id": "annotator"})
    levels = {"nominal", "ordinal", "interval", "ratio"}
    return QualityInputs(
        ratings=rating_long if len(rating_long) else None,
        level=config.level if config.level in levels else "ordinal",
        preferences=pref_long if len(pref_long) else None,
        gold=pd.DataFrame(gold_items, columns=["item", "value"]) if gold_items else None,
        repeats=_repeats(frames, code, n_dims),
        times=times,
        thresholds=config.thresholds,
    )


def _repeats(frames: ProjectFrames, code: dict[str, int], n_dims: int) -> pd.DataFrame | None:
    """Repeated judgments of the same item by the same annotator: earlier revisions of edited
    annotations (from AnnotationRevision) next to the current one, and the same response (or
    response pair) judged again in another task (e.g. a duplicated gold item).

    Items are keyed by content, not task: response_id * D + dimension (>= 0) for ratings, and
    -(1 + lower * R + higher) for a pair of responses (R = 1 + the largest response id), with
    choices turned into the lower id's terms so a pair shown as (B, A) in another task
    compares correctly. `occasion` orders the judgments: an old version's own `updated_at`,
    and for the current version its last edit time (or its creation when never edited).
    """
    ratings, prefs = frames.ratings, frames.preferences
    ids = [ratings["response_id"].max() if len(ratings) else 0, prefs["response_a_id"].max() if len(prefs) else 0,
           prefs["response_b_id"].max() if len(prefs) else 0]
    span = int(max(int(i) for i in ids if pd.notna(i))) + 1

    def pair_key(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return -(1 + np.minimum(a, b) * span + np.maximum(a, b))

    def oriented(choice: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        swapped = a > b
        out = choice.astype(object).copy()
        out[swapped & (choice == "a")] = "b"
        out[swapped & (choice == "b")] = "a"
        return out

    revisions = frames.revisions
    last_edit = pd.DataFrame({
        "kind": revisions["kind"].to_numpy(),
        "task_id": revisions["task_id"].to_numpy(dtype=np.int64),
        "annotator_id": revisions["annotator_id"].to_numpy(dtype=np.int64),
        "edited": pd.to_datetime(pd.Series([_utc_timestamp(v) for v in revisions["replaced_at"]], dtype=object), utc=True),
    }).groupby(["kind", "task_id", "annotator_id"], as_index=False)["edited"].max()

    def current_times(kind: str, frame: pd.DataFrame) -> np.ndarray:
        """Each current annotation's time: its last edit, or its creation when never edited."""
        created = pd.to_datetime(frame["created_at"], utc=True)
        edits = last_edit[last_edit["kind"] == kind]
        if edits.empty:
            return created.to_numpy()
        keys = pd.DataFrame({"task_id": frame["task_id"].to_numpy(dtype=np.int64), "annotator_id": frame["annotator_id"].to_numpy(dtype=np.int64)})
        edited = keys.merge(edits, on=["task_id", "annotator_id"], how="left")["edited"]
        return edited.fillna(pd.Series(created.to_numpy(), index=edited.index)).to_numpy()

    parts = []
    if len(ratings):
        parts.append(pd.DataFrame({
            "item": ratings["response_id"].to_numpy() * n_dims + ratings["dimension"].map(code).to_numpy(),
            "annotator": ratings["annotator_id"].to_numpy(),
            "value": ratings["value"].to_numpy(dtype=object),
            "occasion": current_times("rating", ratings),
        }))
    if len(prefs):
        a, b = prefs["response_a_id"].to_numpy(), prefs["response_b_id"].to_numpy()
        parts.append(pd.DataFrame({
            "item": pair_key(a, b),
            "annotator": prefs["annotator_id"].to_numpy(),
            "value": oriented(prefs["choice"].to_numpy(), a, b),
            "occasion": current_times("preference", prefs),
        }))
    response_of_task = dict(zip(ratings["task_id"], ratings["response_id"]))
    pair_of_task = {t: (x, y) for t, x, y in zip(prefs["task_id"], prefs["response_a_id"], prefs["response_b_id"])}
    old_rows = []
    for rev in revisions.itertuples(index=False):
        payload = rev.payload if isinstance(rev.payload, dict) else {}
        when = _utc_timestamp(payload.get("updated_at") or rev.replaced_at)
        if rev.kind == "rating" and rev.task_id in response_of_task:
            for dimension, value in (payload.get("scores") or {}).items():
                number = _float_or_none(value)
                if number is not None and dimension in code:
                    old_rows.append((response_of_task[rev.task_id] * n_dims + code[dimension], rev.annotator_id, number, when))
        elif rev.kind == "preference" and rev.task_id in pair_of_task and payload.get("choice") is not None:
            x, y = pair_of_task[rev.task_id]
            choice = oriented(np.array([payload["choice"]], dtype=object), np.array([x]), np.array([y]))[0]
            old_rows.append((int(pair_key(np.array([x]), np.array([y]))[0]), rev.annotator_id, choice, when))
    if old_rows:
        parts.append(pd.DataFrame(old_rows, columns=["item", "annotator", "value", "occasion"]))
    if not parts:
        return None
    frame = pd.concat(parts, ignore_index=True)
    frame["occasion"] = pd.to_datetime(frame["occasion"], utc=True)
    repeated = frame.duplicated(["item", "annotator"], keep=False)
    return frame[repeated].reset_index(drop=True) if repeated.any() else None


def _utc_timestamp(value: Any) -> pd.Timestamp:
    """A tz-aware UTC Timestamp from a datetime or ISO string (naive values are UTC, as stored)."""
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


# --------------------------------------------------------------------------- dashboard


@dataclass(frozen=True)
class DashboardData:
    """The tables and series the statistics page draws (all long-form DataFrames).

    agreement: one row per variable — variable, kind, level, n_items, n_annotators,
        n_annotations, alpha, alpha_low, alpha_high, fleiss_kappa, gwet_ac1, gwet_ac2,
        percent_agreement, mean_pairwise_kappa, note.
    agreement_trend: variable, as_of (UTC timestamp), n_annotations, alpha — Krippendorff's
        alpha of all annotations made up to `as_of` (cumulative), at `trend_points` times.
    annotators: annotator table (rlhf.quality.TABLE_COLUMNS) with `username`.
    pairwise_kappa: variable, annotator_a, annotator_b, username_a, username_b, n_items,
        percent_agreement, kappa, kappa_linear, kappa_quadratic.
    confusion: variable, annotator, username, consensus, value, count — each annotator's
        answers against the leave-one-out majority of the others.
    leaderboard: BradleyTerry.leaderboard_ (rank, model, elo, elo_low, elo_high, ...).
    components: leaderboard component id -> models.
    """

    project: str
    agreement: pd.DataFrame
    agreement_trend: pd.DataFrame
    annotators: pd.DataFrame
    pairwise_kappa: pd.DataFrame
    confusion: pd.DataFrame
    leaderboard: pd.DataFrame
    components: dict[int, list[str]]
    rankings: Any = None
    """rlhf.ranking_stats.RankingStats, or None when the project has no rankings."""


def dashboard_data(engine: Engine, actor: Actor, project: str | int, config: StatsConfig = StatsConfig()) -> DashboardData:
    """Everything the statistics dashboard shows for `project` (admin only)."""
    check_admin(engine, actor, "view project statistics")
    frames = load_project_frames(engine, project, config)
    stats = _project_stats(frames, config)
    names = frames.usernames
    agreement_rows, pair_frames, confusion_frames, trend_frames = [], [], [], []
    for variable in stats.variables:
        report = variable.report
        reasons = dict(report.notes)
        if report.pairwise_summary.mean_kappa is None:
            reasons["mean_pairwise_kappa"] = _no_pairwise_kappa_reason(report.pairwise, config.agreement.min_overlap)
        agreement_rows.append(
            {
                "variable": variable.name,
                "kind": variable.kind,
                "level": report.level,
                "n_items": report.n_items,
                "n_annotators": report.n_annotators,
                "n_annotations": report.n_annotations,
                "alpha": report.krippendorff_alpha,
                "alpha_low": report.alpha_interval.low if report.alpha_interval else None,
                "alpha_high": report.alpha_interval.high if report.alpha_interval else None,
                "fleiss_kappa": report.fleiss.value,
                "gwet_ac1": report.gwet_ac1,
                "gwet_ac2": report.gwet_ac2,
                "percent_agreement": report.percent_agreement,
                "mean_pairwise_kappa": report.pairwise_summary.mean_kappa,
                "note": "; ".join(f"{k}: {v}" for k, v in reasons.items()),
                "reasons": reasons,
            }
        )
        pairs = report.pairwise.copy()
        pairs.insert(0, "variable", variable.name)
        pairs.insert(3, "username_a", [names.get(int(a), str(a)) for a in pairs["annotator_a"]])
        pairs.insert(4, "username_b", [names.get(int(b), str(b)) for b in pairs["annotator_b"]])
        pair_frames.append(pairs)
        rows = _variable_rows(frames, variable, config)
        level = report.level
        domain = _domain_for(variable.scale, rows["value"]) if variable.kind == "rating" else None
        enc = encode_ratings(rows, level, value_domain=domain)
        confusion = consensus_confusion(enc)
        confusion.insert(0, "variable", variable.name)
        confusion.insert(2, "username", [names.get(int(a), str(a)) for a in confusion["annotator"]])
        confusion_frames.append(confusion)
        trend_frames.append(_trend(rows, level, domain, variable.name, config.trend_points))
    return DashboardData(
        project=stats.project,
        agreement=pd.DataFrame(agreement_rows, columns=AGREEMENT_TABLE_COLUMNS),
        agreement_trend=_concat(trend_frames, TREND_COLUMNS),
        annotators=stats.annotators,
        pairwise_kappa=_concat(pair_frames, PAIRWISE_TABLE_COLUMNS),
        confusion=_concat(confusion_frames, CONFUSION_COLUMNS),
        leaderboard=stats.leaderboard,
        components=stats.components,
        rankings=stats.rankings,
    )


AGREEMENT_TABLE_COLUMNS = [
    "variable", "kind", "level", "n_items", "n_annotators", "n_annotations", "alpha", "alpha_low", "alpha_high",
    "fleiss_kappa", "gwet_ac1", "gwet_ac2", "percent_agreement", "mean_pairwise_kappa", "note", "reasons",
]
"""`reasons`: statistic column -> why it is None (the same text as `note`, keyed for a page's tooltip)."""


def _no_pairwise_kappa_reason(pairwise: pd.DataFrame, min_overlap: int) -> str:
    """Why the mean pairwise kappa is undefined: too few shared items, or no pair's kappa defined."""
    if pairwise.empty:
        return f"no two annotators share {min_overlap} or more items (too few shared items)"
    return "no pair's kappa is defined: each pair used a single value on the items it shares"
TREND_COLUMNS = ["variable", "as_of", "n_annotations", "alpha"]
PAIRWISE_TABLE_COLUMNS = [
    "variable", "annotator_a", "annotator_b", "username_a", "username_b", "n_items", "percent_agreement",
    "kappa", "kappa_linear", "kappa_quadratic",
]
CONFUSION_COLUMNS = ["variable", "annotator", "username", "consensus", "value", "count"]


def _concat(frames: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)[columns]


def _variable_rows(frames: ProjectFrames, variable: VariableStats, config: StatsConfig) -> pd.DataFrame:
    """Long-format rows (item, annotator, value, created_at) of one variable."""
    if variable.kind == "rating":
        rows = _dimension_rows(frames, variable.name, config)
        out = _long(rows)
    else:
        rows = frames.preferences if config.include_gold else frames.preferences[~frames.preferences["is_gold"]]
        out = _long(rows, "choice")
    out["created_at"] = rows["created_at"].to_numpy()
    return out


def _trend(rows: pd.DataFrame, level: str, domain, name: str, points: int) -> pd.DataFrame:
    """Cumulative alpha at `points` evenly spaced times from the first to the last annotation."""
    if rows.empty or points < 1:
        return pd.DataFrame(columns=TREND_COLUMNS)
    enc = encode_ratings(rows, level, value_domain=domain)
    created = pd.to_datetime(rows["created_at"], utc=True)
    times = created.to_numpy(dtype="datetime64[ns]").astype(np.int64)
    start, stop = times.min(), times.max()
    # Offsets from the first time, not linspace over raw nanoseconds: float64 cannot hold
    # those exactly and the first cut could fall before the first annotation.
    offsets = np.linspace(0, stop - start, points).astype(np.int64) if stop > start else np.zeros(1, dtype=np.int64)
    cuts = np.unique(np.minimum(start + offsets, stop))
    cuts[-1] = stop
    out = []
    from rlhf.agreement import value_cells

    for cut in cuts:
        keep = times <= cut
        cells = value_cells(enc.item[keep], enc.value[keep], enc.n_items, enc.n_values)
        try:
            alpha = alpha_from_cells(cells, level, enc.positions)
        except AgreementUndefined:
            alpha = None
        out.append({"variable": name, "as_of": pd.Timestamp(int(cut), tz="UTC"), "n_annotations": int(keep.sum()), "alpha": alpha})
    return pd.DataFrame(out, columns=TREND_COLUMNS)
