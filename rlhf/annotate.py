"""Submitting and editing annotations; skips and flags; own history, progress; gold answers; reveal.

Submit contract (DESIGN.md, Storage invariants):
- one annotation per (user, task): a re-submit with new content edits it (`revision` + 1, the
  previous content kept in `AnnotationRevision`); the same content again changes nothing;
- `Task.annotation_count` grows only when a row is created, in the same transaction, so two
  racing requests never double-count (the (task, user) unique constraint backs this up:
  INSERT ... ON CONFLICT DO NOTHING);
- a new annotation is accepted with a live lease, on a gold task, or while the task still has
  room (`annotation_count + live leases of others < target`); otherwise `TaskFull`;
- the result carries the next task, taken in the same transaction (one round trip per page).

Blind mode: no annotator-facing function returns other annotators' labels;
`reveal_distribution` does, only in reveal-after-submit projects and after your own submit.
"""

from __future__ import annotations

import math
import random
from functools import lru_cache
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Optional

from sqlalchemy import and_, bindparam, delete, func, select, update
from sqlalchemy.engine import Connection, Engine, Row
from sqlmodel import Session

from rlhf.assign import (
    DEMONSTRATION,
    IS_REGULAR,
    Caller,
    check_caller,
    LEASE,
    PREFERENCE,
    PROJECT,
    PROJECT_COLUMNS,
    PROMPT,
    RANKING,
    RATING,
    SKIP,
    TASK,
    USER,
    AnnotationError,
    AnnotationView,
    ProjectInactive,
    ProjectNotFound,
    ProjectRef,
    ProjectSettings,
    TaskFull,
    TaskNotFound,
    TaskView,
    ValidationError,
    _aware,
    annotation_table,
    build_view,
    effective_target,
    left_side_for,
    load_project,
    load_task_content,
    lock_annotator,
    next_task,
    next_task_in,
    ranking_view_args,
    renew_lease,
    request_extra_votes,
    settings_from_row,
    NOW,
    TID,
    UID,
    dialect_insert,
    live_leases_of_others,
    not_done_by_caller,
    target_binds,
    target_expression,
)
from rlhf.db import run_transaction
from rlhf.ranking import RankingError, card_order_for, parse_ranking, ranks
from rlhf.roles import Actor, PermissionDenied, check_admin
from rlhf.schema import FLAG_REASONS, PREFERENCE_CHOICES, RANK_K_MAX, RANK_K_MIN, TASK_KINDS, AnnotationRevision, Flag, User, utcnow
from rlhf.selection.reasons import REASON_FIELDS, selection_reason, selection_reason_columns

__all__ = [
    "AnnotationError",
    "AnnotationView",
    "FlagView",
    "LabelDistribution",
    "PermissionDenied",
    "Progress",
    "ProjectInactive",
    "ProjectNotFound",
    "SubmitResult",
    "TaskFull",
    "TaskNotFound",
    "TaskView",
    "ValidationError",
    "flag_task",
    "get_own_annotation",
    "list_flags",
    "next_task",
    "progress",
    "recent_annotations",
    "renew_lease",
    "request_extra_votes",
    "resolve_flag",
    "reveal_distribution",
    "set_gold",
    "skip_task",
    "submit_preference",
    "submit_ranking",
    "submit_rating",
    "task_view_for_admin",
    "task_view_for_edit",
]

REVISION = AnnotationRevision.__table__
FLAG = Flag.__table__

MAX_COMMENT_CHARS = 5000
MAX_SKIP_REASON_CHARS = 500
MAX_FLAG_NOTE_CHARS = 2000
MAX_TIME_SPENT_S = 7 * 24 * 3600.0
FLAG_STATUSES = ("open", "resolved", "dismissed")
PROMPT_EXCERPT_CHARS = 120
ANNOTATION_KIND = {"rating": "rating", "pairwise": "preference", "write": "demonstration", "ranking": "ranking"}
"""Task kind → the `AnnotationRevision.kind` of its annotations."""


# ------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class SubmitResult:
    """What a submit did, and the task to show next."""

    annotation_id: int
    created: bool
    """True when a new annotation row was created; False for an edit or an identical re-submit."""
    revision: int
    """The annotation's revision after this submit (1 for a new one)."""
    next_task: Optional[TaskView]
    """The next task of `next_kind` (None when nothing is left or `next_kind` was None)."""


@dataclass(frozen=True)
class Progress:
    """An annotator's counts in one project."""

    today: int
    """Annotations created since 00:00 UTC."""
    total: int
    left_in_queue: int
    """Non-gold tasks that still need annotations and that you have neither done nor skipped."""


@dataclass(frozen=True)
class FlagView:
    """A flag as admins review it."""

    id: int
    task_id: int
    project_id: int
    username: str
    reason: str
    note: str
    status: str
    created_at: datetime
    resolved_by: Optional[str] = None
    resolved_at: Optional[datetime] = None


@dataclass(frozen=True)
class LabelDistribution:
    """How annotators labelled one task (reveal-after-submit projects only)."""

    task_id: int
    kind: str
    n: int
    """Annotations counted (yours and the first others, up to the task's target)."""
    choices: Mapping[str, int] = field(default_factory=dict)
    """Pairwise: count per choice in the task's terms (a, b, tie, both_bad)."""
    scores: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    """Rating: {dimension: {value: count}}."""
    tags: Mapping[str, int] = field(default_factory=dict)
    """Rating: count per tag."""
    mean_ranks: tuple[float, ...] = ()
    """Ranking: mean rank (1 = best, ties at mid-rank) of each card in your display order."""


# ---------------------------------------------------------------------- validation (pure)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_comment(comment: Any, field_name: str = "comment", limit: int = MAX_COMMENT_CHARS) -> str:
    if comment is None:
        return ""
    if not isinstance(comment, str):
        raise ValidationError(field_name, "must be text")
    if len(comment) > limit:
        raise ValidationError(field_name, f"is {len(comment)} characters; at most {limit} allowed")
    return comment


def validate_time_spent(time_spent_s: Any) -> Optional[float]:
    if time_spent_s is None:
        return None
    if isinstance(time_spent_s, bool) or not isinstance(time_spent_s, (int, float)):
        raise ValidationError("time_spent_s", "must be a number of seconds")
    if not math.isfinite(time_spent_s) or not 0 <= time_spent_s <= MAX_TIME_SPENT_S:
        raise ValidationError("time_spent_s", f"must be within [0, {MAX_TIME_SPENT_S:g}] seconds")
    return float(time_spent_s)


def validate_scores(settings: ProjectSettings, scores: Any, *, partial: bool = False) -> dict[str, int]:
    """Every rubric dimension present (unless `partial`), no others, integers within [min, max]."""
    if not isinstance(scores, Mapping):
        raise ValidationError("scores", "must map each rubric dimension to an integer")
    dims = {d.name: d for d in settings.rubric}
    for name in scores:
        if name not in dims:
            raise ValidationError(f"scores.{name}", f"not a rubric dimension (expected {', '.join(dims)})")
    out: dict[str, int] = {}
    for name, dim in dims.items():
        if name not in scores:
            if partial:
                continue
            raise ValidationError(f"scores.{name}", "missing")
        value = scores[name]
        if not _is_int(value) or not dim.min <= value <= dim.max:
            raise ValidationError(f"scores.{name}", f"must be an integer from {dim.min} to {dim.max}, got {value!r}")
        out[name] = value
    if not out:
        raise ValidationError("scores", "needs at least one dimension")
    return out


def validate_tags(settings: ProjectSettings, tags: Any) -> list[str]:
    """Tags from the project's list, duplicates dropped, order kept."""
    if tags is None:
        return []
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise ValidationError("tags", "must be a list of tags")
    out: list[str] = []
    for tag in tags:
        if tag not in settings.tags:
            raise ValidationError("tags", f"{tag!r} is not one of the project's tags ({', '.join(settings.tags)})")
        if tag not in out:
            out.append(tag)
    return out


def validate_choice(choice: Any, strength: Any) -> tuple[str, int]:
    """Choice in PREFERENCE_CHOICES; strength 1 or 2 for a/b, 0 for tie/both_bad."""
    if choice not in PREFERENCE_CHOICES:
        raise ValidationError("choice", f"must be one of {', '.join(PREFERENCE_CHOICES)}, got {choice!r}")
    allowed = (1, 2) if choice in ("a", "b") else (0,)
    if not _is_int(strength) or strength not in allowed:
        raise ValidationError("strength", f"must be {' or '.join(map(str, allowed))} for choice {choice!r}, got {strength!r}")
    return choice, strength


def validate_side(shown_left: Any) -> str:
    if shown_left not in ("a", "b"):
        raise ValidationError("shown_left", f"must be 'a' or 'b', got {shown_left!r}")
    return shown_left


# ---------------------------------------------------------------------------- task context


@lru_cache(maxsize=None)
def _context_statement(lock: bool, with_caller: bool):
    """The task, its project and the caller's standing on it, in one query (binds tid, uid, now).

    Columns: task fields; project fields prefixed `p_`; own_rating_id / own_preference_id;
    lease_expires_at (the caller's lease, live or not); others_live (live leases held by others).
    `with_caller` adds the caller's account (`u_` columns; no row when the account is missing)
    and `held_task_id`: the caller's oldest other live lease in the project on a task of kind
    `next_kind` (bind), so the next-task step need not look it up. With `lock`, the task row (and
    the caller's row) are locked on PostgreSQL, serialising everything that can add to the
    task's fill; SQLite's write transaction already does.
    """

    def own(table):
        return select(table.c.id).where(table.c.task_id == TASK.c.id, table.c.user_id == UID).scalar_subquery()

    columns = [
        TASK.c.id,
        TASK.c.kind,
        TASK.c.is_gold,
        TASK.c.annotation_count,
        TASK.c.target_overlap,
        TASK.c.response_ids,
        *[column.label(f"p_{column.name}") for column in PROJECT_COLUMNS],
        own(RATING).label("own_rating_id"),
        own(PREFERENCE).label("own_preference_id"),
        own(DEMONSTRATION).label("own_demonstration_id"),
        own(RANKING).label("own_ranking_id"),
        select(LEASE.c.expires_at).where(LEASE.c.task_id == TASK.c.id, LEASE.c.user_id == UID).scalar_subquery().label("lease_expires_at"),
        live_leases_of_others().label("others_live"),
        *selection_reason_columns(TASK.c.id),
    ]
    joined = TASK.join(PROJECT, PROJECT.c.id == TASK.c.project_id)
    locked = [TASK]
    if with_caller:
        held, held_task = LEASE.alias("held"), TASK.alias("held_task")
        columns += [
            USER.c.id.label("u_id"),
            USER.c.username.label("u_username"),
            USER.c.role.label("u_role"),
            USER.c.active.label("u_active"),
            select(held.c.task_id)
            .select_from(held.join(held_task, held_task.c.id == held.c.task_id))
            .where(
                held.c.user_id == UID,
                held.c.expires_at > NOW,
                held.c.task_id != TASK.c.id,
                held_task.c.project_id == TASK.c.project_id,
                held_task.c.kind == bindparam("next_kind"),
            )
            .order_by(held.c.created_at, held.c.id)
            .limit(1)
            .scalar_subquery()
            .label("held_task_id"),
        ]
        joined = joined.join(USER, USER.c.id == UID)
        locked.append(USER)
    statement = select(*columns).select_from(joined).where(TASK.c.id == TID)
    return statement.with_for_update(key_share=True, of=locked) if lock else statement


@lru_cache(maxsize=None)
def _insert_statement(dialect: str, kind: str):
    """INSERT ... ON CONFLICT (task_id, user_id) DO NOTHING RETURNING id (columns from the params)."""
    table = annotation_table(kind)
    return dialect_insert(dialect)(table).on_conflict_do_nothing(index_elements=["task_id", "user_id"]).returning(table.c.id)


ANNOTATION_COLUMNS = {
    "rating": ("task_id", "user_id", "scores", "tags", "comment", "time_spent_s", "revision", "created_at", "updated_at", *REASON_FIELDS, "suggestion_shown"),
    "pairwise": ("task_id", "user_id", "choice", "strength", "shown_left", "comment", "time_spent_s", "revision", "created_at", "updated_at", *REASON_FIELDS,
                 "suggestion_shown"),
    "write": ("task_id", "user_id", "text", "comment", "time_spent_s", "revision", "created_at", "updated_at"),
    "ranking": ("task_id", "user_id", "groups", "all_bad", "shown_order", "comment", "time_spent_s", "revision", "created_at", "updated_at"),
}


@lru_cache(maxsize=None)
def _create_counted_statement(kind: str):
    """PostgreSQL: insert the annotation, count it, release the lease — one round trip.

    WITH ins AS (INSERT ... ON CONFLICT DO NOTHING RETURNING id),
         counted AS (UPDATE task SET annotation_count + 1 WHERE id = tid AND a row was inserted),
         released AS (DELETE FROM lease WHERE (task, user))
    SELECT id FROM ins. Binds: `v_<column>` for the annotation's columns, plus tid and uid.
    """
    from sqlalchemy.dialects.postgresql import insert

    table = annotation_table(kind)
    # Binds are prefixed: an UPDATE would take binds named like task columns as SET values.
    values = {name: bindparam(f"v_{name}", type_=table.c[name].type) for name in ANNOTATION_COLUMNS[kind]}
    inserted = insert(table).values(values).on_conflict_do_nothing(index_elements=["task_id", "user_id"]).returning(table.c.id).cte("ins")
    counted = (
        update(TASK).where(TASK.c.id == TID, select(inserted.c.id).exists()).values(annotation_count=TASK.c.annotation_count + 1).cte("counted")
    )
    released = delete(LEASE).where(LEASE.c.task_id == TID, LEASE.c.user_id == UID).cte("released")
    return select(inserted.c.id).add_cte(counted, released)


@lru_cache(maxsize=None)
def _count_statement():
    return update(TASK).where(TASK.c.id == TID).values(annotation_count=TASK.c.annotation_count + 1)


@lru_cache(maxsize=None)
def _release_statement():
    return delete(LEASE).where(LEASE.c.task_id == TID, LEASE.c.user_id == UID)


def _require_context(connection: Connection, task_id: int, user_id: int, now: datetime, *, lock: bool = True) -> Row:
    """The task context (see `_context_statement`) without the caller; TaskNotFound if no such task."""
    if not _is_int(task_id):
        raise ValidationError("task_id", f"must be an integer, got {task_id!r}")
    ctx = connection.execute(_context_statement(lock, False), {"tid": task_id, "uid": user_id, "now": now}).first()
    if ctx is None:
        raise TaskNotFound(f"no task with id {task_id}")
    return ctx


def _caller_and_context(connection: Connection, user: User, task_id: int, now: datetime, next_kind: Optional[str]) -> tuple[Caller, Row]:
    """The caller (checked: may annotate) and the task context, both locked, in one query."""
    if not _is_int(task_id):
        raise ValidationError("task_id", f"must be an integer, got {task_id!r}")
    user_id = getattr(user, "id", None)
    if user_id is None:
        lock_annotator(connection, user)  # raises PermissionDenied: no account
    ctx = connection.execute(_context_statement(True, True), {"tid": task_id, "uid": user_id, "now": now, "next_kind": next_kind or ""}).first()
    if ctx is None:
        lock_annotator(connection, user)  # PermissionDenied when the account is the missing part
        raise TaskNotFound(f"no task with id {task_id}")
    return check_caller(user_id, ctx, "u_"), ctx


def _own_id(ctx: Row, kind: str) -> Optional[int]:
    if kind == "write":
        return ctx.own_demonstration_id
    return {"rating": ctx.own_rating_id, "ranking": ctx.own_ranking_id}.get(kind, ctx.own_preference_id)


def _check_room(ctx: Row, settings: ProjectSettings, now: datetime) -> None:
    """A new annotation needs a live lease, a gold task, or room left in the task's target."""
    if ctx.is_gold or (ctx.lease_expires_at is not None and ctx.lease_expires_at > now):
        return
    target = effective_target(settings.overlap, settings.max_overlap, ctx.target_overlap)
    if ctx.annotation_count + ctx.others_live >= target:
        raise TaskFull(f"task {ctx.id} already has its {target} annotations; take the next task")


CONTENT_FIELDS = {
    "rating": ("scores", "tags", "comment"),
    "pairwise": ("choice", "strength", "shown_left", "comment"),
    "write": ("text", "comment"),
    "ranking": ("groups", "all_bad", "shown_order", "comment"),
}
"""The fields that make an annotation's content (an identical re-submit changes none of them)."""


def _load_own(connection: Connection, kind: str, annotation_id: int) -> Row:
    table = annotation_table(kind)
    return connection.execute(select(table).where(table.c.id == annotation_id)).one()


def _edit(connection: Connection, kind: str, row: Row, content: dict[str, Any], time_spent_s: Optional[float], now: datetime) -> int:
    """Apply new content to the existing annotation `row`, keeping the old in AnnotationRevision; the revision after."""
    table = annotation_table(kind)
    annotation_id = row.id
    old = {name: getattr(row, name) for name in CONTENT_FIELDS[kind]}
    if old == content:
        return row.revision
    payload = {**old, "time_spent_s": row.time_spent_s, "updated_at": row.updated_at.isoformat()}
    connection.execute(
        REVISION.insert().values(
            kind=ANNOTATION_KIND[kind],
            annotation_id=annotation_id,
            task_id=row.task_id,
            user_id=row.user_id,
            revision=row.revision,
            payload=payload,
            replaced_at=now,
        )
    )
    values = {**content, "revision": row.revision + 1, "updated_at": now}
    if time_spent_s is not None:
        values["time_spent_s"] = time_spent_s
    connection.execute(update(table).where(table.c.id == annotation_id).values(**values))
    return row.revision + 1


def _submit(
    engine: Engine,
    user: User,
    task_id: int,
    kind: str,
    make_content: Callable[[ProjectSettings, Row, Optional[str]], dict[str, Any]],
    time_spent_s: Optional[float],
    next_kind: Optional[str],
    now: Optional[datetime],
    rng: Optional[random.Random],
    after: Optional[Callable[[Connection, ProjectSettings, Row, int, int], None]] = None,
    on_create: Optional[Mapping[str, Any]] = None,
) -> SubmitResult:
    """The shared submit transaction; `make_content(settings, ctx, existing_shown_left)` validates.

    `on_create`: columns recorded when the annotation is created and kept on edits (what the
    annotator saw the first time, e.g. `suggestion_shown`).

    `after(connection, settings, ctx, annotation_id, caller_id)` runs in the same transaction
    once the annotation is stored (write tasks: drop the draft, keep the review task in step).
    """
    now = _aware(now)
    time_spent_s = validate_time_spent(time_spent_s)
    table = annotation_table(kind)

    def work(session: Session) -> SubmitResult:
        connection = session.connection()
        # 1. who is asking, and where they stand on the task (the task row locked)
        caller, ctx = _caller_and_context(connection, user, task_id, now, next_kind)
        if ctx.kind != kind:
            other = {"pairwise": "submit_preference", "rating": "submit_rating", "write": "submit_demonstration", "ranking": "submit_ranking"}[ctx.kind]
            raise ValidationError("task_id", f"task {task_id} is a {ctx.kind} task; use {other}")
        settings = settings_from_row(ctx, "p_").for_kind(kind)
        own_id = _own_id(ctx, kind)

        # 2. edit in place, or create (room permitting) and count it
        if own_id is not None:
            existing = _load_own(connection, kind, own_id)
            content = make_content(settings, ctx, existing.shown_left if kind == "pairwise" else None)
            revision = _edit(connection, kind, existing, content, time_spent_s, now)
            annotation_id, created = own_id, False
        else:
            if not settings.active:
                raise ProjectInactive(f"project {settings.name!r} is closed to new annotations")
            content = make_content(settings, ctx, None)
            _check_room(ctx, settings, now)
            values = {**content, **(on_create or {}), "task_id": task_id, "user_id": caller.id, "time_spent_s": time_spent_s, "revision": 1,
                      "created_at": now, "updated_at": now}
            if kind in ("rating", "pairwise"):  # the kinds active selection orders (their tables hold the reason)
                values.update(selection_reason(ctx, settings.selection))
            annotation_id = _create_counted(connection, kind, values, has_lease=ctx.lease_expires_at is not None)
            if annotation_id is None:  # unreachable under the task lock; kept as the constraint's backstop
                annotation_id = connection.execute(select(table.c.id).where(table.c.task_id == task_id, table.c.user_id == caller.id)).scalar_one()
                revision = _edit(connection, kind, _load_own(connection, kind, annotation_id), content, time_spent_s, now)
                created = False
            else:
                revision, created = 1, True
        if own_id is not None and ctx.lease_expires_at is not None:
            connection.execute(_release_statement(), {"tid": task_id, "uid": caller.id})
        if after is not None:
            after(connection, settings, ctx, annotation_id, caller.id)

        # 3. the next task, in the same transaction
        upcoming = next_task_in(connection, caller, settings, next_kind, now, rng, held_task_id=ctx.held_task_id) if next_kind else None
        return SubmitResult(annotation_id=annotation_id, created=created, revision=revision, next_task=upcoming)

    return run_transaction(engine, work)


def _create_counted(connection: Connection, kind: str, values: dict[str, Any], *, has_lease: bool) -> Optional[int]:
    """Insert a new annotation, add it to the task's count, release the caller's lease.

    Returns the new id, or None if the (task, user) row already existed (then nothing is counted).
    PostgreSQL does it in one statement (round trips dominate there); SQLite, in process, in three.
    """
    binds = {"tid": values["task_id"], "uid": values["user_id"]}
    if connection.dialect.name == "postgresql":
        prefixed = {f"v_{name}": value for name, value in values.items()}
        return connection.execute(_create_counted_statement(kind), {**prefixed, **binds}).scalar()
    annotation_id = connection.execute(_insert_statement(connection.dialect.name, kind), values).scalar()
    if annotation_id is not None:
        connection.execute(_count_statement(), binds)
    if has_lease:
        connection.execute(_release_statement(), binds)
    return annotation_id


# ------------------------------------------------------------------------------ submitting


def submit_rating(
    engine: Engine,
    user: User,
    task_id: int,
    *,
    scores: Mapping[str, int],
    tags: Iterable[str] = (),
    comment: str = "",
    time_spent_s: Optional[float] = None,
    next_kind: Optional[str] = "rating",
    now: Optional[datetime] = None,
    rng: Optional[random.Random] = None,
    suggestion_shown: Optional[bool] = None,
) -> SubmitResult:
    """Rate a response on the project's rubric (create, or edit your existing rating).

    `suggestion_shown`: whether a judge's suggestion was on screen (recorded on creation; None: not recorded).

    Raises ValidationError naming the field (`scores.<dim>`, `tags`, `comment`, `time_spent_s`,
    `task_id` for a pairwise task), TaskNotFound, TaskFull, ProjectInactive, PermissionDenied.
    """

    def make_content(settings: ProjectSettings, ctx: Row, _side: Optional[str]) -> dict[str, Any]:
        return {
            "scores": validate_scores(settings, scores),
            "tags": validate_tags(settings, tags),
            "comment": validate_comment(comment),
        }

    return _submit(engine, user, task_id, "rating", make_content, time_spent_s, next_kind, now, rng,
                   on_create=_suggestion_record(suggestion_shown))


def submit_preference(
    engine: Engine,
    user: User,
    task_id: int,
    *,
    choice: str,
    strength: int,
    shown_left: str,
    comment: str = "",
    time_spent_s: Optional[float] = None,
    next_kind: Optional[str] = "pairwise",
    now: Optional[datetime] = None,
    rng: Optional[random.Random] = None,
    suggestion_shown: Optional[bool] = None,
) -> SubmitResult:
    """Record which response of the pair is better, in the task's terms (a, b, tie, both_bad).

    `suggestion_shown`: whether a judge's suggestion was on screen (recorded on creation; None: not recorded).

    `shown_left` must be the side the engine showed (`TaskView.shown_left`; on an edit, the side
    recorded with the annotation). Raises ValidationError (`choice`, `strength`, `shown_left`,
    `comment`, `time_spent_s`, `task_id`), TaskNotFound, TaskFull, ProjectInactive, PermissionDenied.
    """

    def make_content(settings: ProjectSettings, ctx: Row, existing_side: Optional[str]) -> dict[str, Any]:
        checked_choice, checked_strength = validate_choice(choice, strength)
        side = validate_side(shown_left)
        expected = existing_side or left_side_for(ctx.id, user.id)
        if side != expected:
            raise ValidationError("shown_left", f"response {expected!r} was shown on the left, not {side!r}")
        return {"choice": checked_choice, "strength": checked_strength, "shown_left": side, "comment": validate_comment(comment)}

    return _submit(engine, user, task_id, "pairwise", make_content, time_spent_s, next_kind, now, rng,
                   on_create=_suggestion_record(suggestion_shown))


def _suggestion_record(suggestion_shown: Any) -> dict[str, Any]:
    """{"suggestion_shown": bool or None} for the new annotation's row; ValidationError for anything else."""
    if suggestion_shown is not None and not isinstance(suggestion_shown, bool):
        raise ValidationError("suggestion_shown", "must be true, false or absent")
    return {"suggestion_shown": suggestion_shown}


def _checked_ranking(value: Any, k: int, field_name: str = "ranking"):
    """`parse_ranking` with the engine's ValidationError (the page and CLI show one kind of error)."""
    try:
        return parse_ranking(value, k, field_name)
    except RankingError as error:
        raise ValidationError(error.field, error.message) from None


def submit_ranking(
    engine: Engine,
    user: User,
    task_id: int,
    *,
    ranking: Any,
    all_bad: bool = False,
    comment: str = "",
    time_spent_s: Optional[float] = None,
    next_kind: Optional[str] = "ranking",
    now: Optional[datetime] = None,
    rng: Optional[random.Random] = None,
) -> SubmitResult:
    """Order a ranking task's K replies, best first, in the task's terms (card 0 = A of the task).

    `ranking`: text ("C > A = D > B", "C A=D B") or groups of card indices / letters, ties as
    groups; every card exactly once. Convert the page's display letters with
    `rlhf.ranking.from_shown(groups, view.shown_order)`. `all_bad` marks every reply as bad (the
    order still says which is least bad). Raises ValidationError (`ranking` for a card left out,
    named twice or not on the task; `k` when the task's K is outside the project's range;
    `all_bad`, `comment`, `time_spent_s`, `task_id`), TaskNotFound, TaskFull, ProjectInactive,
    PermissionDenied. Nothing is stored on any error.
    """
    if not isinstance(all_bad, bool):
        raise ValidationError("all_bad", f"must be true or false, got {all_bad!r}")

    def make_content(settings: ProjectSettings, ctx: Row, _side: Optional[str]) -> dict[str, Any]:
        k = len(ctx.response_ids or ())
        low, high = settings.rank_k_min or RANK_K_MIN, settings.rank_k_max or RANK_K_MAX
        if not low <= k <= high:
            raise ValidationError("k", f"task {ctx.id} shows {k} replies; this project ranks {low} to {high}")
        groups = _checked_ranking(ranking, k)
        return {
            "groups": [list(g) for g in groups],
            "all_bad": all_bad,
            "shown_order": list(card_order_for(ctx.id, user.id, k)),
            "comment": validate_comment(comment),
        }

    return _submit(engine, user, task_id, "ranking", make_content, time_spent_s, next_kind, now, rng)


def skip_task(
    engine: Engine,
    user: User,
    task_id: int,
    reason: str = "",
    *,
    now: Optional[datetime] = None,
    rng: Optional[random.Random] = None,
) -> Optional[TaskView]:
    """Pass on a task (never offered to you again) and get the next one of the same kind.

    A task you already annotated cannot be skipped (edit it instead): ValidationError(`task_id`).
    Skipping twice is harmless.
    """
    now = _aware(now)
    reason = validate_comment(reason, "reason", MAX_SKIP_REASON_CHARS)

    def work(session: Session) -> Optional[TaskView]:
        connection = session.connection()
        caller, ctx = _caller_and_context(connection, user, task_id, now, None)
        if _own_id(ctx, ctx.kind) is not None:
            raise ValidationError("task_id", f"you already annotated task {task_id}; edit it instead of skipping")
        insert = dialect_insert(connection.dialect.name)
        connection.execute(
            insert(SKIP).values(task_id=task_id, user_id=caller.id, reason=reason, created_at=now).on_conflict_do_nothing()
        )
        connection.execute(_release_statement(), {"tid": task_id, "uid": caller.id})
        return next_task_in(connection, caller, settings_from_row(ctx, "p_"), ctx.kind, now, rng)

    return run_transaction(engine, work)


# ------------------------------------------------------------------------------------ flags


def flag_task(engine: Engine, user: User, task_id: int, reason: str, note: str = "", *, now: Optional[datetime] = None) -> int:
    """Report a task for admin review (reason in FLAG_REASONS); the flag id.

    A second identical open flag by the same user returns the first. Flagging does not skip:
    call `skip_task` too if the annotator wants to move on.
    """
    now = _aware(now)
    if reason not in FLAG_REASONS:
        raise ValidationError("reason", f"must be one of {', '.join(FLAG_REASONS)}, got {reason!r}")
    note = validate_comment(note, "note", MAX_FLAG_NOTE_CHARS)

    def work(session: Session) -> int:
        connection = session.connection()
        caller = lock_annotator(connection, user)
        if not _is_int(task_id) or connection.execute(select(TASK.c.id).where(TASK.c.id == task_id)).first() is None:
            raise TaskNotFound(f"no task with id {task_id}")
        existing = connection.execute(
            select(FLAG.c.id).where(FLAG.c.task_id == task_id, FLAG.c.user_id == caller.id, FLAG.c.reason == reason, FLAG.c.status == "open")
        ).scalar()
        if existing is not None:
            return existing
        return connection.execute(
            FLAG.insert().values(task_id=task_id, user_id=caller.id, reason=reason, note=note, status="open", created_at=now).returning(FLAG.c.id)
        ).scalar_one()

    return run_transaction(engine, work)


def _flag_views(connection: Connection, where) -> list[FlagView]:
    resolver = USER.alias("resolver")
    rows = connection.execute(
        select(FLAG, TASK.c.project_id, USER.c.username, resolver.c.username.label("resolver_name"))
        .select_from(
            FLAG.join(TASK, TASK.c.id == FLAG.c.task_id)
            .join(USER, USER.c.id == FLAG.c.user_id)
            .outerjoin(resolver, resolver.c.id == FLAG.c.resolved_by)
        )
        .where(where)
        .order_by(FLAG.c.created_at, FLAG.c.id)
    ).all()
    return [
        FlagView(
            id=r.id,
            task_id=r.task_id,
            project_id=r.project_id,
            username=r.username,
            reason=r.reason,
            note=r.note,
            status=r.status,
            created_at=r.created_at,
            resolved_by=r.resolver_name,
            resolved_at=r.resolved_at,
        )
        for r in rows
    ]


def list_flags(engine: Engine, actor: Actor, project: ProjectRef, status: Optional[str] = "open") -> list[FlagView]:
    """Flags on the project's tasks, oldest first; `status=None` for all. Admin only."""
    if status is not None and status not in FLAG_STATUSES:
        raise ValidationError("status", f"must be one of {', '.join(FLAG_STATUSES)} or None")

    def work(session: Session) -> list[FlagView]:
        connection = session.connection()
        check_admin(connection, actor, "list flags")
        settings = load_project(connection, project)
        where = TASK.c.project_id == settings.id
        if status is not None:
            where = and_(where, FLAG.c.status == status)
        return _flag_views(connection, where)

    return run_transaction(engine, work, write=False)


def resolve_flag(engine: Engine, actor: Actor, flag_id: int, status: str = "resolved", *, now: Optional[datetime] = None) -> FlagView:
    """Close a flag as `resolved` or `dismissed` (or reopen it with `open`). Admin only."""
    now = _aware(now)
    if status not in FLAG_STATUSES:
        raise ValidationError("status", f"must be one of {', '.join(FLAG_STATUSES)}")

    def work(session: Session) -> FlagView:
        connection = session.connection()
        check_admin(connection, actor, "resolve flags")
        closing = status != "open"
        result = connection.execute(
            update(FLAG)
            .where(FLAG.c.id == flag_id)
            .values(status=status, resolved_by=getattr(actor, "id", None) if closing else None, resolved_at=now if closing else None)
        )
        if result.rowcount == 0:
            raise AnnotationError(f"no flag with id {flag_id}")
        return _flag_views(connection, FLAG.c.id == flag_id)[0]

    return run_transaction(engine, work)


# ------------------------------------------------------------------------------ own history


def _annotation_view(kind: str, row: Any, prompt_excerpt: str = "") -> AnnotationView:
    common = dict(
        annotation_id=row.id,
        task_id=row.task_id,
        kind=kind,
        revision=row.revision,
        created_at=row.created_at,
        updated_at=row.updated_at,
        comment=row.comment,
        time_spent_s=row.time_spent_s,
        prompt_excerpt=prompt_excerpt,
    )
    if kind == "rating":
        return AnnotationView(**common, scores=dict(row.scores), tags=tuple(row.tags))
    if kind == "write":
        return AnnotationView(**common, text=row.text)
    if kind == "ranking":
        return AnnotationView(**common, ranking=tuple(tuple(g) for g in row.groups), all_bad=bool(row.all_bad))
    return AnnotationView(**common, choice=row.choice, strength=row.strength, shown_left=row.shown_left)


def _excerpt(text: str) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= PROMPT_EXCERPT_CHARS else text[: PROMPT_EXCERPT_CHARS - 1] + "…"


def _own_annotation(connection: Connection, user_id: int, task_id: int, kind: str) -> Optional[AnnotationView]:
    table = annotation_table(kind)
    row = connection.execute(select(table).where(table.c.task_id == task_id, table.c.user_id == user_id)).first()
    return None if row is None else _annotation_view(kind, row)


def recent_annotations(engine: Engine, user: User, project: ProjectRef, limit: int = 10) -> list[AnnotationView]:
    """Your latest annotations in the project (both kinds), most recently changed first."""
    if not _is_int(limit) or limit < 1:
        raise ValidationError("limit", "must be a positive integer")

    def work(session: Session) -> list[AnnotationView]:
        connection = session.connection()
        caller = lock_annotator(connection, user, lock=False)
        settings = load_project(connection, project)
        views = []
        for kind in TASK_KINDS:
            table = annotation_table(kind)
            rows = connection.execute(
                select(table, PROMPT.c.text.label("prompt_text"))
                .select_from(table.join(TASK, TASK.c.id == table.c.task_id).join(PROMPT, PROMPT.c.id == TASK.c.prompt_id))
                .where(table.c.user_id == caller.id, TASK.c.project_id == settings.id)
                .order_by(table.c.updated_at.desc(), table.c.id.desc())
                .limit(limit)
            ).all()
            views.extend(_annotation_view(kind, r, _excerpt(r.prompt_text)) for r in rows)
        views.sort(key=lambda v: (v.updated_at, v.annotation_id), reverse=True)
        return views[:limit]

    return run_transaction(engine, work, write=False)


def get_own_annotation(engine: Engine, user: User, task_id: int) -> Optional[AnnotationView]:
    """Your annotation on the task, or None. Raises TaskNotFound for an unknown task."""

    def work(session: Session) -> Optional[AnnotationView]:
        connection = session.connection()
        caller = lock_annotator(connection, user, lock=False)
        kind = connection.execute(select(TASK.c.kind).where(TASK.c.id == task_id)).scalar()
        if kind is None:
            raise TaskNotFound(f"no task with id {task_id}")
        return _own_annotation(connection, caller.id, task_id, kind)

    return run_transaction(engine, work, write=False)


def task_view_for_edit(engine: Engine, user: User, task_id: int) -> TaskView:
    """The task as you annotated it (same sides), with your annotation to prefill; `is_revisit` True.

    Raises TaskNotFound when the task does not exist or you have not annotated it.
    """

    def work(session: Session) -> TaskView:
        connection = session.connection()
        caller = lock_annotator(connection, user, lock=False)
        content = load_task_content(connection, task_id)
        if content is None:
            raise TaskNotFound(f"no task with id {task_id}")
        own = _own_annotation(connection, caller.id, task_id, content.kind)
        if own is None:
            raise TaskNotFound(f"you have no annotation on task {task_id} to edit")
        settings = load_project(connection, content.project_id)
        cards = ranking_view_args(connection, content, caller.id)
        return build_view(settings, content, shown_left=own.shown_left, lease_expires_at=None, own=own, **cards)

    return run_transaction(engine, work, write=False)


def task_view_for_admin(engine: Engine, actor: Actor, task_id: int) -> TaskView:
    """A task's content for review (flags, gold): response A on the left, model names shown. Admin only.

    No lease is taken and nothing about other annotators' labels is included.
    """

    def work(session: Session) -> TaskView:
        connection = session.connection()
        check_admin(connection, actor, "review tasks")
        content = load_task_content(connection, task_id) if _is_int(task_id) else None
        if content is None:
            raise TaskNotFound(f"no task with id {task_id}")
        settings = load_project(connection, content.project_id)
        cards = ranking_view_args(connection, content, None)
        return build_view(settings, content, shown_left="a", lease_expires_at=None, show_models=True, **cards)

    return run_transaction(engine, work, write=False)


def progress(engine: Engine, user: User, project: ProjectRef, *, kind: Optional[str] = None, now: Optional[datetime] = None) -> Progress:
    """Your counts in the project (both kinds unless `kind` is given)."""
    now = _aware(now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    kinds = TASK_KINDS if kind is None else (kind,)

    def work(session: Session) -> Progress:
        connection = session.connection()
        caller = lock_annotator(connection, user, lock=False)
        settings = load_project(connection, project)
        today = total = left = 0
        for k in kinds:
            table = annotation_table(k)
            mine = table.join(TASK, TASK.c.id == table.c.task_id)
            base = and_(table.c.user_id == caller.id, TASK.c.project_id == settings.id)
            total += connection.execute(select(func.count()).select_from(mine).where(base)).scalar_one()
            today += connection.execute(select(func.count()).select_from(mine).where(base, table.c.created_at >= midnight)).scalar_one()
            left += connection.execute(
                select(func.count())
                .select_from(TASK)
                .where(
                    TASK.c.project_id == settings.id,
                    TASK.c.kind == k,
                    IS_REGULAR,
                    TASK.c.annotation_count < target_expression(),
                    not_done_by_caller(k),
                ),
                {"uid": caller.id, **target_binds(settings.for_kind(k))},
            ).scalar_one()
        return Progress(today=today, total=total, left_in_queue=left)

    return run_transaction(engine, work, write=False)


# ------------------------------------------------------------------------------------- gold


def validate_gold_answer(kind: str, settings: ProjectSettings, answer: Any, k: Optional[int] = None) -> dict[str, Any]:
    """Pairwise: {"choice": c[, "strength": s]}; rating: {"scores": {dim: value, ...}} (a subset of the rubric);
    ranking: {"ranking": "C > A = D > B"} or groups of card indices (task terms), over the task's `k` cards."""
    if not isinstance(answer, Mapping):
        raise ValidationError("answer", "must be a mapping")
    if kind == "ranking":
        if set(answer) != {"ranking"}:
            raise ValidationError("answer", "ranking gold takes only 'ranking'")
        return {"ranking": [list(g) for g in _checked_ranking(answer["ranking"], k or 0, "answer.ranking")]}
    if kind == "pairwise":
        if set(answer) - {"choice", "strength"}:
            raise ValidationError("answer", "pairwise gold takes only 'choice' and 'strength'")
        choice = answer.get("choice")
        if "strength" in answer:
            choice, strength = validate_choice(choice, answer["strength"])
            return {"choice": choice, "strength": strength}
        if choice not in PREFERENCE_CHOICES:
            raise ValidationError("choice", f"must be one of {', '.join(PREFERENCE_CHOICES)}, got {choice!r}")
        return {"choice": choice}
    if set(answer) != {"scores"}:
        raise ValidationError("answer", "rating gold takes only 'scores'")
    return {"scores": validate_scores(settings, answer["scores"], partial=True)}


def set_gold(engine: Engine, actor: Actor, task_id: int, answer: Optional[Mapping[str, Any]]) -> None:
    """Make a task gold with its known answer (None: no longer gold). Admin only."""

    def work(session: Session) -> None:
        connection = session.connection()
        check_admin(connection, actor, "set gold answers")
        row = connection.execute(select(TASK.c.kind, TASK.c.project_id, TASK.c.response_ids).where(TASK.c.id == task_id)).first()
        if row is None:
            raise TaskNotFound(f"no task with id {task_id}")
        if row.kind == "write" and answer is not None:
            raise ValidationError("task_id", f"task {task_id} is a write task: demonstrations have no gold answer")
        if answer is None:
            values: dict[str, Any] = {"is_gold": False, "gold_answer": None}
        else:
            settings = load_project(connection, row.project_id)
            k = len(row.response_ids) if row.response_ids else None
            values = {"is_gold": True, "gold_answer": validate_gold_answer(row.kind, settings, answer, k)}
        connection.execute(update(TASK).where(TASK.c.id == task_id).values(**values))

    run_transaction(engine, work)


# ----------------------------------------------------------------------------------- reveal


def reveal_distribution(engine: Engine, user: User, task_id: int) -> LabelDistribution:
    """Other annotators' labels on a task you have submitted, in reveal-after-submit projects.

    Counts your annotation and the earliest others, up to the task's target, so a task's
    count never exceeds what a regular task would show. Raises PermissionDenied in blind
    projects or before your own submit, TaskNotFound for an unknown task.
    """

    def work(session: Session) -> LabelDistribution:
        connection = session.connection()
        caller = lock_annotator(connection, user, lock=False)
        ctx = _require_context(connection, task_id, caller.id, utcnow(), lock=False)
        settings = settings_from_row(ctx, "p_")
        if ctx.kind == "write":
            raise ValidationError("task_id", f"task {task_id} is a write task: demonstrations have no label distribution")
        if settings.visibility != "reveal_after_submit":
            raise PermissionDenied("this project is blind: other annotators' labels are not shown")
        if _own_id(ctx, ctx.kind) is None:
            raise PermissionDenied("submit your own annotation before seeing the others'")
        table = annotation_table(ctx.kind)
        rows = connection.execute(select(table).where(table.c.task_id == task_id).order_by(table.c.created_at, table.c.id)).all()
        target = effective_target(settings.overlap, settings.max_overlap, ctx.target_overlap)
        mine = [r for r in rows if r.user_id == caller.id]
        counted = mine + [r for r in rows if r.user_id != caller.id][: max(target - 1, 0)]
        if ctx.kind == "ranking":
            shown = card_order_for(task_id, caller.id, len(counted[0].shown_order))
            totals = [0.0] * len(shown)
            for r in counted:
                for card, rank in enumerate(ranks(r.groups, len(shown))):
                    totals[card] += rank
            mean = tuple(totals[card] / len(counted) for card in shown)
            return LabelDistribution(task_id=task_id, kind=ctx.kind, n=len(counted), mean_ranks=mean)
        if ctx.kind == "pairwise":
            choices = {c: 0 for c in PREFERENCE_CHOICES}
            for r in counted:
                choices[r.choice] = choices.get(r.choice, 0) + 1
            return LabelDistribution(task_id=task_id, kind=ctx.kind, n=len(counted), choices=choices)
        scores: dict[str, dict[int, int]] = {d.name: {} for d in settings.rubric}
        tags: dict[str, int] = {}
        for r in counted:
            for name, value in r.scores.items():
                scores.setdefault(name, {})[value] = scores.setdefault(name, {}).get(value, 0) + 1
            for tag in r.tags:
                tags[tag] = tags.get(tag, 0) + 1
        return LabelDistribution(task_id=task_id, kind=ctx.kind, n=len(counted), scores=scores, tags=tags)

    return run_transaction(engine, work, write=False)
