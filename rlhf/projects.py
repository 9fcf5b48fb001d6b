"""Projects: create, read, update and validate labelling projects (guidelines, rubric, assignment settings).

Writes are admin-only (`check_admin`, on the caller's role as stored now); reads are open. Every validation error names
the field it is about (`ProjectValidationError.field`), so the CLI and the admin page can
point at it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from rlhf.db import run_transaction
from rlhf.roles import Actor, check_admin
from rlhf.schema import COLLECTED_KINDS, DEFAULT_MAX_REPLY_CHARS, DEFAULT_RUBRIC, DEFAULT_TAGS, RANK_K_MAX, RANK_K_MIN, SELECTION_STRATEGIES, VISIBILITIES, Project

NAME_MAX_LENGTH = 200
DESCRIPTION_MAX_LENGTH = 2000
UPDATABLE_FIELDS = (
    "name",
    "description",
    "guidelines",
    "rubric",
    "tags",
    "overlap",
    "max_overlap",
    "gold_rate",
    "visibility",
    "lease_minutes",
    "seed",
    "active",
    "task_kinds",
    "write_overlap",
    "max_reply_chars",
    "rank_k_min",
    "rank_k_max",
    "selection",
    "judge_uses",
)

JUDGE_USES = ("export", "votes", "suggestions")
"""Uses of a judge's verdicts, each off until an admin switches it on for the project:
export with judge sources (`rlhf export --sources human,judge:NAME`), extra human votes where the
judge disagrees with the human consensus (`rlhf judge-votes`), and the judge's verdict shown to
annotators as a suggestion on the Compare and Rate pages."""

JUDGE_USE_FLAGS = {"export": "--judge-export", "votes": "--judge-votes", "suggestions": "--judge-suggestions"}
"""The `rlhf project update` flag that switches each use on (quoted by the refusal)."""


class ProjectValidationError(ValueError):
    """A project setting is invalid; `field` names it (e.g. `rubric[1].max`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ProjectNotFound(LookupError):
    """No project has the given name or id."""


# ---------------------------------------------------------------- validation (pure)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_name(name: Any) -> str:
    """A stripped, non-empty name of at most NAME_MAX_LENGTH characters."""
    if not isinstance(name, str) or not name.strip():
        raise ProjectValidationError("name", "must be a non-empty string")
    name = name.strip()
    if len(name) > NAME_MAX_LENGTH:
        raise ProjectValidationError("name", f"at most {NAME_MAX_LENGTH} characters")
    return name


def validate_rubric(rubric: Any) -> list[dict[str, Any]]:
    """A non-empty list of dimensions `{name, question?, min, max, labels?}`, returned normalised.

    Names are unique non-empty strings; `min < max` are integers; `labels` maps values within
    [min, max] (keys stored as strings, as JSON requires) to non-empty label strings.
    """
    if not isinstance(rubric, Sequence) or isinstance(rubric, (str, bytes)) or len(rubric) == 0:
        raise ProjectValidationError("rubric", "must be a non-empty list of dimensions")
    seen: set[str] = set()
    normalised = []
    for index, dimension in enumerate(rubric):
        where = f"rubric[{index}]"
        if not isinstance(dimension, Mapping):
            raise ProjectValidationError(where, "must be an object with name, min and max")
        unknown = set(dimension) - {"name", "question", "min", "max", "labels", "weight"}
        if unknown:
            raise ProjectValidationError(where, f"unknown keys {sorted(unknown)}")
        name = dimension.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ProjectValidationError(f"{where}.name", "must be a non-empty string")
        name = name.strip()
        if name in seen:
            raise ProjectValidationError(f"{where}.name", f"duplicate dimension name {name!r}")
        seen.add(name)
        low, high = dimension.get("min"), dimension.get("max")
        if not _is_int(low):
            raise ProjectValidationError(f"{where}.min", "must be an integer")
        if not _is_int(high):
            raise ProjectValidationError(f"{where}.max", "must be an integer")
        if low >= high:
            raise ProjectValidationError(f"{where}.max", f"must be greater than min ({low})")
        item: dict[str, Any] = {"name": name, "min": low, "max": high}
        question = dimension.get("question")
        if question is not None:
            if not isinstance(question, str):
                raise ProjectValidationError(f"{where}.question", "must be a string")
            item["question"] = question
        labels = dimension.get("labels")
        if labels is not None:
            item["labels"] = _validate_labels(labels, low, high, f"{where}.labels")
        if "weight" in dimension:
            item["weight"] = _validate_weight(dimension["weight"], f"{where}.weight")
        normalised.append(item)
    if sum(rubric_weights(normalised).values()) <= 0:
        raise ProjectValidationError("rubric", "dimension weights must sum to a positive number")
    return normalised


def _validate_weight(weight: Any, where: str) -> float:
    """A dimension's weight in a regression reward model's scalar (rlhf.reward.objectives): a finite number."""
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
        raise ProjectValidationError(where, "must be a finite number")
    return float(weight)


def rubric_weights(rubric: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """{dimension: weight} of a rubric, 1 where a dimension sets none: the project's weights of a regression reward model."""
    return {d["name"]: float(d.get("weight", 1.0)) for d in rubric}


def _validate_labels(labels: Any, low: int, high: int, where: str) -> dict[str, str]:
    if not isinstance(labels, Mapping):
        raise ProjectValidationError(where, "must map scale values to labels")
    out: dict[str, str] = {}
    for key, label in labels.items():
        try:
            value = int(str(key).strip())
        except ValueError:
            raise ProjectValidationError(f"{where}.{key}", "key must be an integer scale value") from None
        if not low <= value <= high:
            raise ProjectValidationError(f"{where}.{key}", f"value outside the scale [{low}, {high}]")
        if not isinstance(label, str) or not label.strip():
            raise ProjectValidationError(f"{where}.{key}", "label must be a non-empty string")
        out[str(value)] = label
    return out


def validate_tags(tags: Any) -> list[str]:
    """A list of unique, non-empty tag strings (order kept)."""
    if not isinstance(tags, Sequence) or isinstance(tags, (str, bytes)):
        raise ProjectValidationError("tags", "must be a list of strings")
    out: list[str] = []
    for index, tag in enumerate(tags):
        if not isinstance(tag, str) or not tag.strip():
            raise ProjectValidationError(f"tags[{index}]", "must be a non-empty string")
        if tag.strip() in out:
            raise ProjectValidationError(f"tags[{index}]", f"duplicate tag {tag.strip()!r}")
        out.append(tag.strip())
    return out


def validate_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Check a full set of project settings (as stored) and return them normalised.

    Rules: overlap ≥ 1; max_overlap ≥ overlap; 0 ≤ gold_rate < 1; visibility in VISIBILITIES;
    lease_minutes ≥ 1; seed an integer; rubric and tags as in `validate_rubric` / `validate_tags`.
    """
    out = dict(settings)
    out["name"] = validate_name(settings["name"])
    for field, limit in (("description", DESCRIPTION_MAX_LENGTH), ("guidelines", None)):
        value = settings.get(field, "")
        if not isinstance(value, str):
            raise ProjectValidationError(field, "must be a string")
        if limit is not None and len(value) > limit:
            raise ProjectValidationError(field, f"at most {limit} characters")
    out["rubric"] = validate_rubric(settings["rubric"])
    out["tags"] = validate_tags(settings["tags"])
    overlap, max_overlap = settings["overlap"], settings["max_overlap"]
    if not _is_int(overlap) or overlap < 1:
        raise ProjectValidationError("overlap", "must be an integer ≥ 1")
    if not _is_int(max_overlap) or max_overlap < overlap:
        raise ProjectValidationError("max_overlap", f"must be an integer ≥ overlap ({overlap})")
    gold_rate = settings["gold_rate"]
    if isinstance(gold_rate, bool) or not isinstance(gold_rate, (int, float)) or not math.isfinite(gold_rate) or not 0 <= gold_rate < 1:
        raise ProjectValidationError("gold_rate", "must be a number with 0 ≤ gold_rate < 1")
    out["gold_rate"] = float(gold_rate)
    if settings["visibility"] not in VISIBILITIES:
        raise ProjectValidationError("visibility", f"must be one of {', '.join(VISIBILITIES)}")
    if not _is_int(settings["lease_minutes"]) or settings["lease_minutes"] < 1:
        raise ProjectValidationError("lease_minutes", "must be an integer ≥ 1")
    if not _is_int(settings["seed"]):
        raise ProjectValidationError("seed", "must be an integer")
    if "active" in settings and not isinstance(settings["active"], bool):
        raise ProjectValidationError("active", "must be true or false")
    out.update(validate_write_settings(settings))
    _validate_rank_range(settings.get("rank_k_min"), settings.get("rank_k_max"))
    if settings.get("selection", "least-annotated") not in SELECTION_STRATEGIES:
        raise ProjectValidationError("selection", f"must be one of {', '.join(SELECTION_STRATEGIES)}")
    if "judge_uses" in settings:
        out["judge_uses"] = validate_judge_uses(settings["judge_uses"])
    return out


def validate_judge_uses(uses: Any) -> dict[str, bool]:
    """{use: bool} for every use in JUDGE_USES (missing ones off); None means all off."""
    if uses is None:
        uses = {}
    if not isinstance(uses, Mapping):
        raise ProjectValidationError("judge_uses", f"must be an object of {', '.join(JUDGE_USES)} → true/false")
    for use, on in uses.items():
        if use not in JUDGE_USES:
            raise ProjectValidationError(f"judge_uses.{use}", f"not a judge use (one of {', '.join(JUDGE_USES)})")
        if not isinstance(on, bool):
            raise ProjectValidationError(f"judge_uses.{use}", "must be true or false")
    return {use: bool(uses.get(use, False)) for use in JUDGE_USES}


def judge_use_enabled(project: Project, use: str) -> bool:
    """Whether the project has switched judge use `use` on (all are off by default)."""
    if use not in JUDGE_USES:
        raise ValueError(f"not a judge use: {use!r} (one of {', '.join(JUDGE_USES)})")
    return bool((project.judge_uses or {}).get(use, False))


class JudgeUseDisabled(ValueError):
    """A use of a judge's verdicts that the project has not switched on."""


def require_judge_use(project: Project, use: str, what: str) -> None:
    """JudgeUseDisabled naming the project and the flag that switches `use` on, unless it is on."""
    if not judge_use_enabled(project, use):
        raise JudgeUseDisabled(
            f"project {project.name!r}: {what} is off for this project (judge uses are off by default); "
            f"switch it on with `rlhf project update {project.name} {JUDGE_USE_FLAGS[use]}` or on the Projects page"
        )


def validate_task_kinds(kinds: Any) -> list[str]:
    """A non-empty list of what the project collects, from rate / compare / write (order kept)."""
    if isinstance(kinds, str):
        kinds = [k.strip() for k in kinds.split(",") if k.strip()]
    if not isinstance(kinds, Sequence) or not kinds:
        raise ProjectValidationError("task_kinds", f"must name at least one of {', '.join(COLLECTED_KINDS)}")
    out: list[str] = []
    for kind in kinds:
        if kind not in COLLECTED_KINDS:
            raise ProjectValidationError("task_kinds", f"{kind!r} is not one of {', '.join(COLLECTED_KINDS)}")
        if kind not in out:
            out.append(kind)
    return out


def validate_write_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The write-task settings present in `settings`, checked: task_kinds, write_overlap ≥ 1, max_reply_chars ≥ 1."""
    out: dict[str, Any] = {}
    if "task_kinds" in settings:
        out["task_kinds"] = validate_task_kinds(settings["task_kinds"])
    for field in ("write_overlap", "max_reply_chars"):
        if field in settings and (not _is_int(settings[field]) or settings[field] < 1):
            raise ProjectValidationError(field, "must be an integer ≥ 1")
    return out


def _validate_rank_range(low: Any, high: Any) -> None:
    """Ranking tasks: both None (no rankings) or RANK_K_MIN ≤ rank_k_min ≤ rank_k_max ≤ RANK_K_MAX."""
    if low is None and high is None:
        return
    for field, value in (("rank_k_min", low), ("rank_k_max", high)):
        if not _is_int(value) or not RANK_K_MIN <= value <= RANK_K_MAX:
            raise ProjectValidationError(field, f"must be an integer from {RANK_K_MIN} to {RANK_K_MAX} (set both, or neither)")
    if low > high:
        raise ProjectValidationError("rank_k_max", f"must be ≥ rank_k_min ({low})")


# ---------------------------------------------------------------- session-level helpers


def find_project(session: Session, name_or_id: str | int) -> Project | None:
    """The project with this id (int) or name (str; a string of digits falls back to an id)."""
    if isinstance(name_or_id, int) and not isinstance(name_or_id, bool):
        return session.get(Project, name_or_id)
    project = session.exec(select(Project).where(Project.name == str(name_or_id))).first()
    if project is None and str(name_or_id).isdigit():
        project = session.get(Project, int(name_or_id))
    return project


def get_or_create_project_in(session: Session, name: str) -> tuple[Project, bool]:
    """Inside an open write transaction: the project named `name`, created with defaults if missing.

    Returns (project, created). The caller has already checked permissions; used by the
    importer so a failed import does not leave a new empty project behind.
    """
    name = validate_name(name)
    project = session.exec(select(Project).where(Project.name == name)).first()
    if project is not None:
        return project, False
    project = Project(**_default_settings(name))
    session.add(project)
    session.flush()
    return project, True


def _default_settings(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": "",
        "guidelines": "",
        "rubric": [dict(d) for d in DEFAULT_RUBRIC],
        "tags": list(DEFAULT_TAGS),
        "overlap": 3,
        "max_overlap": 3,
        "gold_rate": 0.0,
        "visibility": "blind",
        "lease_minutes": 10,
        "seed": 0,
        "task_kinds": ["rate", "compare"],
        "write_overlap": 1,
        "max_reply_chars": DEFAULT_MAX_REPLY_CHARS,
    }


# ---------------------------------------------------------------- public API


def create_project(
    engine: Engine,
    actor: Actor,
    name: str,
    *,
    description: str = "",
    guidelines: str = "",
    rubric: list[dict[str, Any]] | None = None,
    tags: list[str] | None = None,
    overlap: int = 3,
    max_overlap: int | None = None,
    gold_rate: float = 0.0,
    visibility: str = "blind",
    lease_minutes: int = 10,
    seed: int = 0,
    task_kinds: list[str] | None = None,
    write_overlap: int = 1,
    max_reply_chars: int = DEFAULT_MAX_REPLY_CHARS,
    rank_k_min: int | None = None,
    rank_k_max: int | None = None,
) -> Project:
    """Create a project (admin only). `rubric`/`tags` default to the schema's defaults;
    `max_overlap` defaults to `overlap`. Raises ProjectValidationError (field named) or
    PermissionDenied."""
    settings = validate_settings(
        {
            "name": name,
            "description": description,
            "guidelines": guidelines,
            "rubric": [dict(d) for d in DEFAULT_RUBRIC] if rubric is None else rubric,
            "tags": list(DEFAULT_TAGS) if tags is None else tags,
            "overlap": overlap,
            "max_overlap": overlap if max_overlap is None else max_overlap,
            "gold_rate": gold_rate,
            "visibility": visibility,
            "lease_minutes": lease_minutes,
            "seed": seed,
            "task_kinds": ["rate", "compare"] if task_kinds is None else task_kinds,
            "write_overlap": write_overlap,
            "max_reply_chars": max_reply_chars,
            "rank_k_min": rank_k_min,
            "rank_k_max": rank_k_max,
        }
    )

    def work(session: Session) -> Project:
        check_admin(session, actor, "create projects")
        if session.exec(select(Project).where(Project.name == settings["name"])).first() is not None:
            raise ProjectValidationError("name", f"a project named {settings['name']!r} already exists")
        project = Project(**settings)
        session.add(project)
        session.flush()
        return project

    try:
        return run_transaction(engine, work)
    except IntegrityError:  # a concurrent create of the same name won the race
        raise ProjectValidationError("name", f"a project named {settings['name']!r} already exists") from None


def update_project(engine: Engine, actor: Actor, project_id_or_name: str | int, **changes: Any) -> Project:
    """Change some settings of a project (admin only); the merged settings are validated as a whole.

    Unknown keys raise ProjectValidationError. Changing `seed` affects the shuffle keys of tasks
    created afterwards only.
    """
    unknown = set(changes) - set(UPDATABLE_FIELDS)
    if unknown:
        raise ProjectValidationError(sorted(unknown)[0], f"not a project setting (settable: {', '.join(UPDATABLE_FIELDS)})")

    def work(session: Session) -> Project:
        check_admin(session, actor, "update projects")
        project = find_project(session, project_id_or_name)
        if project is None:
            raise ProjectNotFound(f"no project {project_id_or_name!r}")
        current = {field: getattr(project, field) for field in UPDATABLE_FIELDS}
        merged = validate_settings({**current, **changes})
        if merged["name"] != project.name:
            clash = session.exec(select(Project).where(Project.name == merged["name"])).first()
            if clash is not None:
                raise ProjectValidationError("name", f"a project named {merged['name']!r} already exists")
        if "judge_uses" in changes:  # a partial {use: bool} changes those uses only
            merged["judge_uses"] = validate_judge_uses({**validate_judge_uses(project.judge_uses), **(changes["judge_uses"] or {})})
        selection_changed = "selection" in changes and merged["selection"] != project.selection
        for field in changes:
            setattr(project, field, merged[field])
        session.add(project)
        session.flush()
        if selection_changed:  # score the new strategy in the background (rlhf.selection)
            from rlhf.selection.scores import queue_scoring_in

            queue_scoring_in(session, project.id, created_by=getattr(actor, "id", None))
        return project

    try:
        return run_transaction(engine, work)
    except IntegrityError:
        raise ProjectValidationError("name", "a project with that name already exists") from None


def get_project(engine: Engine, name_or_id: str | int) -> Project:
    """The project by name or id; raises ProjectNotFound with the name when there is none."""

    def work(session: Session) -> Project:
        project = find_project(session, name_or_id)
        if project is None:
            raise ProjectNotFound(f"no project {name_or_id!r}")
        return project

    return run_transaction(engine, work, write=False)


def list_projects(engine: Engine) -> list[Project]:
    """All projects, oldest first."""
    return run_transaction(engine, lambda session: list(session.exec(select(Project).order_by(Project.id))), write=False)


def get_or_create_project(engine: Engine, actor: Actor, name: str) -> Project:
    """The project named `name`, created with default settings if missing (creating is admin only)."""

    def work(session: Session) -> Project:
        project = session.exec(select(Project).where(Project.name == validate_name(name))).first()
        if project is not None:
            return project
        check_admin(session, actor, "create projects")
        project, _ = get_or_create_project_in(session, name)
        return project

    try:
        return run_transaction(engine, work)
    except IntegrityError:  # created concurrently: read it back
        return get_project(engine, validate_name(name))


def project_counts(engine: Engine, project_id: int) -> dict[str, int]:
    """Rows under a project: prompts, responses, rating and pairwise tasks, imports."""
    from sqlalchemy import func

    from rlhf.schema import ImportRecord, Prompt, Response, Task

    def work(session: Session) -> dict[str, int]:
        def count(statement) -> int:
            return int(session.exec(statement).one())

        return {
            "prompts": count(select(func.count()).select_from(Prompt).where(Prompt.project_id == project_id)),
            "responses": count(
                select(func.count()).select_from(Response).join(Prompt, Response.prompt_id == Prompt.id).where(Prompt.project_id == project_id)
            ),
            "rating_tasks": count(select(func.count()).select_from(Task).where(Task.project_id == project_id, Task.kind == "rating")),
            "pairwise_tasks": count(select(func.count()).select_from(Task).where(Task.project_id == project_id, Task.kind == "pairwise")),
            "write_tasks": count(select(func.count()).select_from(Task).where(Task.project_id == project_id, Task.kind == "write")),
            "imports": count(select(func.count()).select_from(ImportRecord).where(ImportRecord.project_id == project_id)),
        }

    return run_transaction(engine, work, write=False)
