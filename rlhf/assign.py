"""Task assignment: which task an annotator sees next, the leases that stop over-filling, gold mixing.

Contract of `next_task` (DESIGN.md, Annotation):
- each task gets `target` annotations from distinct annotators, where `target` is the project's
  `overlap`, raised per task by `Task.target_overlap` (extra votes) but never above the
  project's `max_overlap`;
- nobody gets a task twice (annotated or skipped);
- a handed-out task is leased to its annotator until `expires_at`; a task is available when
  `annotation_count + live leases held by others < target`, so concurrent annotators never
  over-fill it; asking again while holding a live lease returns the same task (a second tab
  sees the same task);
- least-annotated first, ties broken by the seeded `Task.shuffle_key` (index `ix_task_queue`);
  a project with an active selection strategy breaks ties by the stored `Task.selection_rank`
  first (index `ix_task_selection`, written in the background by rlhf.selection);
- gold tasks (`Task.is_gold`) are mixed in at `project.gold_rate`, each at most once per
  annotator, outside the overlap accounting; a `TaskView` never says whether a task is gold;
- pairwise sides are randomised per (task, user), deterministically, and recorded on the lease.

Concurrency: every write that can add to a task's fill (a lease, a new annotation) happens while
holding that task's row lock (`SELECT ... FOR NO KEY UPDATE`, with SKIP LOCKED when picking) on
PostgreSQL, and under SQLite's single writer (`BEGIN IMMEDIATE`) on SQLite. All writes go through
`rlhf.db.run_transaction`, which retries lock contention.

Errors shared with `rlhf.annotate` live here (it builds on this module); import them from either.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from functools import lru_cache
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Optional, Union

from sqlalchemy import Integer, and_, bindparam, case, exists, false, func, literal_column, select, true, update
from sqlalchemy.engine import Connection, Engine, Row
from sqlmodel import Session

from rlhf.db import run_transaction
from rlhf.ranking import card_order_for, ranking_agreement
from rlhf.roles import ANNOTATOR_ROLES, Actor, PermissionDenied, check_admin, require_stored_role
from rlhf.schema import (
    DEFAULT_MAX_REPLY_CHARS,
    Demonstration,
    Lease,
    Preference,
    Project,
    Prompt,
    Ranking,
    Rating,
    Response,
    Skip,
    Task,
    TASK_KINDS,
    User,
    utcnow,
)

# Core tables: the hot path builds Core statements (no ORM identity map, no per-row objects).
TASK = Task.__table__
LEASE = Lease.__table__
RATING = Rating.__table__
PREFERENCE = Preference.__table__
DEMONSTRATION = Demonstration.__table__
RANKING = Ranking.__table__
SKIP = Skip.__table__
PROJECT = Project.__table__
PROMPT = Prompt.__table__
RESPONSE = Response.__table__
USER = User.__table__

# "= false" rather than "IS false": only equality can walk ix_task_queue on PostgreSQL.
IS_REGULAR = TASK.c.is_gold == false()
IS_GOLD = TASK.c.is_gold == true()

ProjectRef = Union[Project, int]
"""A project row or its id."""


# ------------------------------------------------------------------------------------ errors


class AnnotationError(Exception):
    """Base class of the annotation engine's errors (pages show `str(error)`)."""


class ValidationError(AnnotationError, ValueError):
    """Bad input; `field` names it (`scores.helpfulness`, `tags`, `choice`, ...)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class TaskNotFound(AnnotationError, LookupError):
    """No such task (or, for edits, no annotation of yours on it)."""


class ProjectNotFound(AnnotationError, LookupError):
    """No such project."""


class TaskFull(AnnotationError):
    """The task received all its annotations while you held no live lease on it."""


class ProjectInactive(AnnotationError):
    """The project is closed to new annotations (edits of your own are still accepted)."""


# ------------------------------------------------------------------------------------- views


@dataclass(frozen=True)
class Message:
    """One chat turn of a prompt."""

    role: str
    content: str


@dataclass(frozen=True)
class RubricDimension:
    """One Likert question of the project's rubric: integer answers in [min, max]."""

    name: str
    question: str
    min: int
    max: int
    labels: Mapping[str, str] = field(default_factory=dict)
    """Anchor labels by value as a string, e.g. {"1": "Not at all", "7": "Completely"}."""


@dataclass(frozen=True)
class ResponseView:
    """A response as the annotator sees it."""

    text: str
    model_name: Optional[str] = None
    """None unless the project reveals after submit and this is a revisit of a submitted task."""
    response_id: Optional[int] = None
    """Write tasks: the model reply shown pre-filled (None elsewhere)."""


@dataclass(frozen=True)
class AnnotationView:
    """One annotation of the calling user, as stored (choice in the task's terms: a/b/tie/both_bad)."""

    annotation_id: int
    task_id: int
    kind: str
    """'rating' or 'pairwise' (the task's kind)."""
    revision: int
    created_at: datetime
    updated_at: datetime
    scores: Mapping[str, int] = field(default_factory=dict)
    """Rating only: {dimension: value}."""
    tags: tuple[str, ...] = ()
    comment: str = ""
    choice: Optional[str] = None
    """Pairwise only: a, b, tie or both_bad."""
    strength: Optional[int] = None
    """Pairwise only: 1 or 2 for a/b, 0 for tie/both_bad."""
    shown_left: Optional[str] = None
    """Pairwise only: which response ('a' or 'b') was on the left."""
    ranking: tuple[tuple[int, ...], ...] = ()
    """Ranking only: card indices (task terms, 0 = card A of the task) grouped best first."""
    all_bad: Optional[bool] = None
    """Ranking only: the annotator marked every reply as bad."""
    time_spent_s: Optional[float] = None
    prompt_excerpt: str = ""
    """The start of the prompt, for lists of recent work."""
    text: Optional[str] = None
    """Write only: the demonstration (the assistant reply written)."""


@dataclass(frozen=True)
class TaskView:
    """Everything a page needs to show one task, and nothing that tells a gold task apart.

    Pairwise: `left` and `right` are the responses in display order and `shown_left` says which
    of the task's responses ('a' or 'b') is on the left; pass it back to `submit_preference`.
    Rating: `response` is the response to rate. Choices are always submitted in the task's terms.
    Write: `response` is the model reply to start from (None: write from scratch).
    """

    task_id: int
    project_id: int
    kind: str
    """'rating' or 'pairwise'."""
    prompt_text: str
    prompt_messages: Optional[tuple[Message, ...]]
    """The chat turns when the prompt is a conversation, else None (use `prompt_text`)."""
    response: Optional[ResponseView]
    """Rating tasks: the response to rate; None for pairwise."""
    left: Optional[ResponseView]
    """Pairwise tasks: the response shown on the left; None for rating."""
    right: Optional[ResponseView]
    shown_left: Optional[str]
    """Pairwise: 'a' or 'b'; None for rating."""
    rubric: tuple[RubricDimension, ...]
    tags: tuple[str, ...]
    """The project's tag vocabulary."""
    guidelines: str
    lease_expires_at: Optional[datetime]
    """Until when the task is reserved for you; None on a revisit (nothing to reserve)."""
    is_revisit: bool
    """True when you are editing your own submitted annotation."""
    own: Optional[AnnotationView] = None
    """Your current annotation on a revisit, to prefill the form."""
    project_name: str = ""
    max_reply_chars: int = DEFAULT_MAX_REPLY_CHARS
    """Write tasks: the longest reply the project accepts."""
    cards: tuple[ResponseView, ...] = ()
    """Ranking: the K replies in display order (shown as cards A, B, C, ...); empty otherwise."""
    shown_order: tuple[int, ...] = ()
    """Ranking: the task's card index shown at each display position (`rlhf.ranking.from_shown`)."""


# --------------------------------------------------------------------------- project settings


@dataclass(frozen=True)
class ProjectSettings:
    """The project columns assignment and validation read, loaded once per transaction."""

    id: int
    name: str
    guidelines: str
    rubric: tuple[RubricDimension, ...]
    tags: tuple[str, ...]
    overlap: int
    max_overlap: int
    gold_rate: float
    visibility: str
    lease_minutes: int
    active: bool
    task_kinds: tuple[str, ...] = ("rate", "compare")
    write_overlap: int = 1
    max_reply_chars: int = DEFAULT_MAX_REPLY_CHARS
    rank_k_min: Optional[int] = None
    """Ranking tasks: the project's range of K (None: it does not collect rankings)."""
    rank_k_max: Optional[int] = None
    selection: str = "least-annotated"
    """The project's selection strategy: anything else orders by the stored rank (rlhf.selection)."""

    def for_kind(self, kind: str) -> "ProjectSettings":
        """The settings assignment uses for tasks of `kind`: write tasks have their own overlap
        (`write_overlap`, no extra votes); the other kinds use the project's."""
        if kind != "write":
            return self
        return replace(self, overlap=self.write_overlap, max_overlap=self.write_overlap)

    @property
    def overlap_cap(self) -> int:
        """The most annotations a (non-gold) task can ever be given."""
        return max(self.overlap, self.max_overlap)


PROJECT_COLUMNS = (
    PROJECT.c.id,
    PROJECT.c.name,
    PROJECT.c.guidelines,
    PROJECT.c.rubric,
    PROJECT.c.tags,
    PROJECT.c.overlap,
    PROJECT.c.max_overlap,
    PROJECT.c.gold_rate,
    PROJECT.c.visibility,
    PROJECT.c.lease_minutes,
    PROJECT.c.active,
    PROJECT.c.task_kinds,
    PROJECT.c.write_overlap,
    PROJECT.c.max_reply_chars,
    PROJECT.c.rank_k_min,
    PROJECT.c.rank_k_max,
    PROJECT.c.selection,
)


def rubric_dimensions(rubric: Iterable[Mapping[str, Any]]) -> tuple[RubricDimension, ...]:
    """The project's rubric JSON as typed dimensions."""
    return tuple(
        RubricDimension(
            name=str(d["name"]),
            question=str(d.get("question", "")),
            min=int(d["min"]),
            max=int(d["max"]),
            labels=dict(d.get("labels") or {}),
        )
        for d in rubric
    )


def settings_from_row(row: Any, prefix: str = "") -> ProjectSettings:
    """Build settings from a row holding PROJECT_COLUMNS (labelled `prefix + name` when joined)."""
    m = row._mapping

    def get(name: str) -> Any:
        return m[prefix + name]

    return ProjectSettings(
        id=get("id"),
        name=get("name"),
        guidelines=get("guidelines") or "",
        rubric=rubric_dimensions(get("rubric") or []),
        tags=tuple(get("tags") or ()),
        overlap=get("overlap"),
        max_overlap=get("max_overlap"),
        gold_rate=float(get("gold_rate") or 0.0),
        visibility=get("visibility"),
        lease_minutes=get("lease_minutes"),
        active=bool(get("active")),
        task_kinds=tuple(get("task_kinds") or ()),
        write_overlap=get("write_overlap"),
        max_reply_chars=get("max_reply_chars"),
        rank_k_min=m.get(prefix + "rank_k_min"),
        rank_k_max=m.get(prefix + "rank_k_max"),
        selection=m.get(prefix + "selection") or "least-annotated",
    )


def load_project(connection: Connection, project: ProjectRef) -> ProjectSettings:
    """The project's settings, read inside the caller's transaction. Raises ProjectNotFound."""
    project_id = project if isinstance(project, int) else project.id
    row = connection.execute(_project_statement(), {"pid": project_id}).first()
    if row is None:
        raise ProjectNotFound(f"no project with id {project_id}")
    return settings_from_row(row)


# ------------------------------------------------------------------------------ pure helpers


def check_kind(kind: str) -> str:
    if kind not in TASK_KINDS:
        raise ValidationError("kind", f"must be one of {', '.join(TASK_KINDS)}, got {kind!r}")
    return kind


def annotation_table(kind: str):
    """The table holding annotations of tasks of `kind`."""
    if kind == "write":
        return DEMONSTRATION
    return RATING if kind == "rating" else RANKING if kind == "ranking" else PREFERENCE


def left_side_for(task_id: int, user_id: int) -> str:
    """Which response ('a' or 'b') this user sees on the left of this pairwise task.

    Seeded by (task, user): stable across tabs and sessions, independent across annotators, so
    position bias averages out over a task's annotators and can be measured.
    """
    digest = hashlib.blake2b(f"{task_id}:{user_id}".encode(), digest_size=1).digest()
    return "a" if digest[0] % 2 == 0 else "b"


def effective_target(overlap: int, max_overlap: int, target_overlap: Optional[int]) -> int:
    """Annotations a task needs: `overlap`, raised by `target_overlap`, never above `max_overlap`."""
    cap = max(overlap, max_overlap)
    if target_overlap is None or target_overlap <= overlap:
        return overlap
    return min(target_overlap, cap)


def target_expression():
    """`effective_target` as SQL over the task row, from binds `overlap` and `cap` (= overlap_cap).

    Portable: CASE rather than least()/min(), which differ between SQLite and PostgreSQL.
    """
    overlap, cap = bindparam("overlap", type_=Integer), bindparam("cap", type_=Integer)
    return case((TASK.c.target_overlap > cap, cap), (TASK.c.target_overlap > overlap, TASK.c.target_overlap), else_=overlap)


def target_binds(settings: ProjectSettings) -> dict[str, int]:
    return {"overlap": settings.overlap, "cap": settings.overlap_cap}


def _aware(now: Optional[datetime]) -> datetime:
    if now is None:
        return utcnow()
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware (UTC)")
    return now


def pairwise_agreement(choices: Sequence[str]) -> Optional[float]:
    """Share of annotator pairs that made the same choice; None with fewer than two labels.

    choices: one label per annotator, e.g. ["a", "a", "tie"] → 1 agreeing pair of 3 → 1/3.
    """
    n = len(choices)
    if n < 2:
        return None
    pairs = n * (n - 1) / 2
    agreeing = sum(1 for x, y in itertools.combinations(choices, 2) if x == y)
    return agreeing / pairs


def rating_agreement(scores: Sequence[Mapping[str, int]], rubric: Sequence[RubricDimension]) -> Optional[float]:
    """Mean over dimensions and annotator pairs of 1 − |x − y| / (max − min), in [0, 1].

    An interval-style closeness: identical scores give 1, opposite ends of the scale give 0.
    Dimensions fewer than two annotators answered are left out; None if none remain.
    """
    per_dimension = []
    for dim in rubric:
        values = [s[dim.name] for s in scores if dim.name in s]
        if len(values) < 2:
            continue
        span = max(dim.max - dim.min, 1)
        closeness = [1 - abs(x - y) / span for x, y in itertools.combinations(values, 2)]
        per_dimension.append(sum(closeness) / len(closeness))
    if not per_dimension:
        return None
    return sum(per_dimension) / len(per_dimension)


# ----------------------------------------------------------------------------- statements
#
# The hot path (submit + next task) runs ~10 statements per request. Building a SQLAlchemy
# statement costs ~10x more than executing a cached one, so each is built once, with bind
# parameters, and executed on the session's connection (measured: 0.9 ms vs 0.1 ms per query).
# Bind names used throughout: uid (caller), tid (task), pid (project), now, overlap, cap.

UID, TID, PID = bindparam("uid", type_=Integer), bindparam("tid", type_=Integer), bindparam("pid", type_=Integer)
NOW = bindparam("now", type_=LEASE.c.expires_at.type)

LIMIT_ONE = literal_column("1")
"""`LIMIT 1` written into the SQL rather than bound. psycopg prepares a statement after a few
executions and PostgreSQL then weighs a generic plan against custom ones; with the limit a
parameter the generic plan must assume many rows are wanted, costs far more than the custom
plan, and so every call was planned afresh. With the literal the generic plan is the cheap index
walk and is reused (tests/test_assign.py checks the rendered SQL)."""


def not_done_by_caller(kind: str):
    """The outer task is neither annotated nor skipped by `uid` (unique (task, user) indexes)."""
    table = annotation_table(kind)
    return and_(
        ~exists().where(table.c.task_id == TASK.c.id, table.c.user_id == UID),
        ~exists().where(SKIP.c.task_id == TASK.c.id, SKIP.c.user_id == UID),
    )


def live_leases_of_others():
    """Scalar subquery: live leases on the outer task held by anyone but `uid`."""
    return (
        select(func.count())
        .select_from(LEASE)
        .where(LEASE.c.task_id == TASK.c.id, LEASE.c.user_id != UID, LEASE.c.expires_at > NOW)
        .scalar_subquery()
    )


@lru_cache(maxsize=None)
def _caller_statement(lock: bool):
    statement = select(USER.c.id, USER.c.username, USER.c.role, USER.c.active).where(USER.c.id == UID)
    return statement.with_for_update(key_share=True) if lock else statement


@lru_cache(maxsize=None)
def _project_statement():
    return select(*PROJECT_COLUMNS).where(PROJECT.c.id == PID)


_RESPONSE_A, _RESPONSE_B = RESPONSE.alias("response_a"), RESPONSE.alias("response_b")


def _select_content():
    """SELECT of what a TaskView shows (task, prompt, responses), joined by primary keys.

    The pick statements select this directly, so choosing a task and loading it is one query.
    """
    return select(
        TASK.c.id,
        TASK.c.project_id,
        TASK.c.kind,
        TASK.c.response_ids,
        PROMPT.c.text.label("prompt_text"),
        PROMPT.c.messages.label("prompt_messages"),
        _RESPONSE_A.c.text.label("a_text"),
        _RESPONSE_A.c.model_name.label("a_model"),
        TASK.c.response_a_id.label("a_id"),
        _RESPONSE_B.c.text.label("b_text"),
        _RESPONSE_B.c.model_name.label("b_model"),
    ).select_from(
        TASK.join(PROMPT, PROMPT.c.id == TASK.c.prompt_id)
        .outerjoin(_RESPONSE_A, _RESPONSE_A.c.id == TASK.c.response_a_id)
        .outerjoin(_RESPONSE_B, _RESPONSE_B.c.id == TASK.c.response_b_id)
    )


@lru_cache(maxsize=None)
def _content_statement():
    return _select_content().where(TASK.c.id == TID)


@lru_cache(maxsize=None)
def _held_lease_statement():
    """The caller's oldest live lease on a task of project `pid` and kind `kind`."""
    return (
        select(LEASE.c.task_id)
        .select_from(LEASE.join(TASK, TASK.c.id == LEASE.c.task_id))
        .where(LEASE.c.user_id == UID, LEASE.c.expires_at > NOW, TASK.c.project_id == PID, TASK.c.kind == bindparam("kind"))
        .order_by(LEASE.c.created_at, LEASE.c.id)
        .limit(LIMIT_ONE)
    )


@lru_cache(maxsize=None)
def _pick_statement(kind: str, extra_votes: bool, postgres: bool, excluding: bool, ranked: bool = False):
    """The next regular task `uid` may take, with its content, least-annotated first (see `_pick_regular`).

    extra_votes=False walks ix_task_queue over tasks below the base overlap;
    extra_votes=True walks ix_task_extra_votes over full tasks whose target was raised.
    ranked: within an annotation count, the stored selection rank goes before the shuffle key
    (ix_task_selection; rank 0 = not scored yet, rlhf.selection); eligibility is unchanged.
    """
    target = target_expression()
    where = [TASK.c.project_id == PID, TASK.c.kind == kind, IS_REGULAR]
    if extra_votes:
        where += [TASK.c.target_overlap > bindparam("overlap"), TASK.c.annotation_count >= bindparam("overlap")]
    else:
        where += [TASK.c.annotation_count < bindparam("overlap")]
    where += [not_done_by_caller(kind), TASK.c.annotation_count + live_leases_of_others() < target]
    if excluding:
        where.append(TASK.c.id.not_in(bindparam("excluded", expanding=True)))
    order = (TASK.c.annotation_count, TASK.c.selection_rank, TASK.c.shuffle_key) if ranked else (TASK.c.annotation_count, TASK.c.shuffle_key)
    statement = _select_content().where(*where).order_by(*order).limit(LIMIT_ONE)
    if postgres:
        # Skip rows another transaction is leasing or submitting right now: no waiting, no deadlock.
        statement = statement.with_for_update(skip_locked=True, key_share=True, of=TASK)
    return statement


@lru_cache(maxsize=None)
def _lease_if_fits_statement(kind: str):
    """PostgreSQL: take the lease on locked task `tid` only if it still fits, RETURNING task_id.

    One round trip for "re-check, then lease": the INSERT's SELECT runs on a fresh READ COMMITTED
    snapshot, taken after our row lock was granted, so it sees every lease committed before.
    """
    from sqlalchemy.dialects.postgresql import insert

    fits = select(TASK.c.id).where(
        TASK.c.id == TID, not_done_by_caller(kind), TASK.c.annotation_count + live_leases_of_others() < target_expression()
    )
    row = select(TID, UID, bindparam("left", type_=LEASE.c.left_side.type), bindparam("expires", type_=LEASE.c.expires_at.type), NOW).where(fits.exists())
    statement = insert(LEASE).from_select(["task_id", "user_id", "left_side", "expires_at", "created_at"], row)
    return statement.on_conflict_do_update(index_elements=[LEASE.c.task_id, LEASE.c.user_id], set_=_lease_conflict_set(statement)).returning(
        LEASE.c.task_id
    )


@lru_cache(maxsize=None)
def _gold_statement(kind: str):
    return (
        _select_content()
        .where(TASK.c.project_id == PID, TASK.c.kind == kind, IS_GOLD, not_done_by_caller(kind))
        .order_by(TASK.c.annotation_count, TASK.c.shuffle_key)
        .limit(LIMIT_ONE)
    )


@lru_cache(maxsize=None)
def _lease_upsert_statement(dialect: str):
    """Take or renew the (task, user) lease; an old expired row for the pair is reused."""
    insert = dialect_insert(dialect)
    statement = insert(LEASE).values(task_id=TID, user_id=UID, left_side=bindparam("left"), expires_at=bindparam("expires", type_=LEASE.c.expires_at.type), created_at=NOW)
    return statement.on_conflict_do_update(index_elements=[LEASE.c.task_id, LEASE.c.user_id], set_=_lease_conflict_set(statement))


def _lease_conflict_set(statement) -> dict[str, Any]:
    """On an existing (task, user) lease: new expiry; `created_at` kept while the lease is live.

    Keeping it makes "the oldest live lease" stable, so two tabs keep agreeing on one task
    instead of alternating as each renewal would make the other lease the oldest.
    """
    excluded = statement.excluded
    return {
        "expires_at": excluded.expires_at,
        "left_side": excluded.left_side,
        "created_at": case((LEASE.c.expires_at > excluded.created_at, LEASE.c.created_at), else_=excluded.created_at),
    }


@lru_cache(maxsize=None)
def _renew_statement():
    return (
        update(LEASE)
        .where(LEASE.c.task_id == TID, LEASE.c.user_id == UID, LEASE.c.expires_at > NOW)
        .values(expires_at=bindparam("expires", type_=LEASE.c.expires_at.type))
    )


def dialect_insert(dialect: str):
    """The INSERT construct with ON CONFLICT support for this dialect."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # pragma: no cover - only the two supported databases
        raise NotImplementedError(f"unsupported database {dialect!r}")
    return insert


# ---------------------------------------------------------------------------------- the caller


@dataclass(frozen=True)
class Caller:
    """The calling account as stored now (re-read in each transaction)."""

    id: int
    username: str
    role: str
    active: bool


def check_caller(user_id: int, row: Any, prefix: str = "") -> Caller:
    """A Caller from `row` (columns `prefix` + id/username/role/active), or PermissionDenied."""
    m = row._mapping if row is not None else None
    if m is None or m[prefix + "id"] is None:
        raise PermissionDenied(f"user id {user_id} does not exist")
    caller = Caller(id=m[prefix + "id"], username=m[prefix + "username"], role=m[prefix + "role"], active=bool(m[prefix + "active"]))
    require_stored_role(caller, ANNOTATOR_ROLES, "annotate")
    return caller


def lock_annotator(connection: Connection, user: Any, *, lock: bool = True) -> Caller:
    """Re-read the caller's row inside the transaction and check they may annotate.

    Reading it fresh means a deactivated or demoted account stops at once, whatever the page
    still holds. With `lock` on PostgreSQL the row lock also serialises one user's concurrent
    requests (two tabs), so they cannot both take a fresh lease; NO KEY UPDATE does not block
    the foreign key checks of rows referencing the user.
    """
    user_id = getattr(user, "id", None)
    if user_id is None:
        raise PermissionDenied(f"{getattr(user, 'username', 'anonymous')} has no account and cannot annotate")
    return check_caller(user_id, connection.execute(_caller_statement(lock), {"uid": user_id}).first())


# ------------------------------------------------------------------------------ task content


def load_task_content(connection: Connection, task_id: int) -> Optional[Row]:
    """Prompt and response(s) of a task in one query (primary keys only)."""
    return connection.execute(_content_statement(), {"tid": task_id}).first()


def _messages(raw: Any) -> Optional[tuple[Message, ...]]:
    if not raw:
        return None
    return tuple(Message(role=str(m.get("role", "")), content=str(m.get("content", ""))) for m in raw)


def load_cards(connection: Connection, content: Row) -> Optional[list[Row]]:
    """A ranking task's replies (text, model_name) in the task's card order; None for other kinds."""
    if content.kind != "ranking":
        return None
    ids = list(content.response_ids or ())
    rows = {r.id: r for r in connection.execute(select(RESPONSE.c.id, RESPONSE.c.text, RESPONSE.c.model_name).where(RESPONSE.c.id.in_(ids)))}
    return [rows[i] for i in ids]


def build_view(
    settings: ProjectSettings,
    content: Row,
    *,
    shown_left: Optional[str],
    lease_expires_at: Optional[datetime],
    own: Optional[AnnotationView] = None,
    show_models: bool = False,
    cards: Optional[Sequence[Row]] = None,
    shown_order: Optional[Sequence[int]] = None,
) -> TaskView:
    """Assemble a TaskView. Model names appear only on a revisit in a reveal-after-submit project
    (or with `show_models`, for admins)."""
    reveal_models = show_models or (own is not None and settings.visibility == "reveal_after_submit")
    a = ResponseView(content.a_text, content.a_model if reveal_models else None)
    response = left = right = None
    card_views: tuple[ResponseView, ...] = ()
    if content.kind == "write":
        # The reply to start from, when the task has one; its id lets the page tell it apart.
        response = None if content.a_text is None else replace(a, response_id=content.a_id)
        shown_left = None
    elif content.kind == "ranking":
        shown_order = tuple(shown_order if shown_order is not None else range(len(cards or ())))
        card_views = tuple(ResponseView(cards[i].text, cards[i].model_name if reveal_models else None) for i in shown_order)  # type: ignore[index]
        shown_left = None
    elif content.kind == "pairwise":
        b = ResponseView(content.b_text or "", content.b_model if reveal_models else None)
        left, right = (a, b) if shown_left == "a" else (b, a)
    else:
        response = a
        shown_left = None
    return TaskView(
        task_id=content.id,
        project_id=content.project_id,
        kind=content.kind,
        prompt_text=content.prompt_text,
        prompt_messages=_messages(content.prompt_messages),
        response=response,
        left=left,
        right=right,
        shown_left=shown_left,
        rubric=settings.rubric,
        tags=settings.tags,
        guidelines=settings.guidelines,
        lease_expires_at=lease_expires_at,
        is_revisit=own is not None,
        own=own,
        project_name=settings.name,
        max_reply_chars=settings.max_reply_chars,
        cards=card_views,
        shown_order=tuple(shown_order or ()) if content.kind == "ranking" else (),
    )


# ---------------------------------------------------------------------------------- picking


def _lease_binds(task_id: int, user_id: int, kind: str, expires_at: datetime, now: datetime) -> dict[str, Any]:
    # Sides are deterministic per (task, user), so a renewed lease shows the same sides as before.
    left_side = left_side_for(task_id, user_id) if kind == "pairwise" else None
    return {"tid": task_id, "uid": user_id, "left": left_side, "expires": expires_at, "now": now}


def _lease_regular(connection: Connection, settings: ProjectSettings, user_id: int, kind: str, now: datetime, expires_at: datetime) -> Optional[Row]:
    """Pick the next non-gold task this user may take and lease it; its content row, or None.

    Phase 1 walks `ix_task_queue` over tasks below the base overlap, least-annotated first.
    Phase 2, only when phase 1 is empty and the project allows extra votes, walks
    `ix_task_extra_votes` (the few tasks whose target was raised). On PostgreSQL the pick locks
    the row (SKIP LOCKED) and the lease is taken only if the task still fits on a fresh
    snapshot: the pick's snapshot may predate a lease committed just before our lock was
    granted, and none can slip in while we hold it. A candidate that no longer fits is passed over.
    """
    postgres = connection.dialect.name == "postgresql"
    binds = {"pid": settings.id, "uid": user_id, "now": now, **target_binds(settings)}
    phases = [False] + ([True] if settings.overlap_cap > settings.overlap else [])
    ranked = settings.selection != "least-annotated"
    for extra_votes in phases:
        excluded: list[int] = []
        while True:
            statement = _pick_statement(kind, extra_votes, postgres, bool(excluded), ranked)
            content = connection.execute(statement, {**binds, "excluded": excluded} if excluded else binds).first()
            if content is None:
                break
            lease = _lease_binds(content.id, user_id, kind, expires_at, now)
            if not postgres:
                connection.execute(_lease_upsert_statement(connection.dialect.name), lease)
                return content
            if connection.execute(_lease_if_fits_statement(kind), {**binds, **lease}).first() is not None:
                return content
            excluded.append(content.id)
    return None


UNKNOWN: Any = object()
"""`held_task_id` not looked up yet (next_task_in queries it)."""


def next_task_in(
    connection: Connection,
    caller: Caller,
    settings: ProjectSettings,
    kind: str,
    now: datetime,
    rng: Optional[random.Random] = None,
    *,
    held_task_id: Optional[int] = UNKNOWN,
) -> Optional[TaskView]:
    """`next_task` on the connection of an open write transaction (submit/skip use it: one round trip).

    Steps: 1. a live lease of the caller's in this project and kind → renew it, show that task;
    2. draw gold with probability `gold_rate` and pick one the caller has not seen; 3. else pick
    and lease a regular task. `held_task_id`, when the caller already looked it up (None: no
    live lease), saves step 1's query.
    """
    check_kind(kind)
    if not settings.active:
        return None
    settings = settings.for_kind(kind)
    user_id = caller.id
    expires_at = now + timedelta(minutes=settings.lease_minutes)

    if held_task_id is UNKNOWN:
        held_task_id = connection.execute(_held_lease_statement(), {"uid": user_id, "now": now, "pid": settings.id, "kind": kind}).scalar()
    content = None
    if held_task_id is not None:
        content = load_task_content(connection, held_task_id)
    elif settings.gold_rate > 0:
        draw = rng.random() if rng is not None else random.random()
        if draw < settings.gold_rate:
            content = connection.execute(_gold_statement(kind), {"pid": settings.id, "uid": user_id}).first()
    if content is not None:  # a held or gold task: lease (or renew) it unconditionally
        connection.execute(_lease_upsert_statement(connection.dialect.name), _lease_binds(content.id, user_id, kind, expires_at, now))
    else:
        content = _lease_regular(connection, settings, user_id, kind, now, expires_at)
        if content is None:
            return None
    shown_left = left_side_for(content.id, user_id) if kind == "pairwise" else None
    return build_view(settings, content, shown_left=shown_left, lease_expires_at=expires_at, **ranking_view_args(connection, content, user_id))


def ranking_view_args(connection: Connection, content: Row, user_id: Optional[int]) -> dict[str, Any]:
    """`build_view`'s card arguments for a ranking task (the user's seeded card order; none: task order)."""
    cards = load_cards(connection, content)
    if cards is None:
        return {}
    order = card_order_for(content.id, user_id, len(cards)) if user_id is not None else tuple(range(len(cards)))
    return {"cards": cards, "shown_order": order}


def next_task(
    engine: Engine,
    user: User,
    project: ProjectRef,
    kind: str,
    *,
    now: Optional[datetime] = None,
    rng: Optional[random.Random] = None,
) -> Optional[TaskView]:
    """The task `user` should do next in `project` (`kind` 'rating', 'pairwise' or 'ranking'), leased to them.

    Returns None when nothing is left for this user (or the project is inactive). Calling it
    again while the lease is live returns the same task and renews the lease. `now` (aware UTC)
    and `rng` (gold draws) are injectable for tests and simulations. Raises PermissionDenied
    for accounts that may not annotate, ProjectNotFound, ValidationError for a bad kind.
    """
    check_kind(kind)
    now = _aware(now)

    def work(session: Session) -> Optional[TaskView]:
        connection = session.connection()
        caller = lock_annotator(connection, user)
        settings = load_project(connection, project)
        return next_task_in(connection, caller, settings, kind, now, rng)

    return run_transaction(engine, work)


def renew_lease(engine: Engine, user: User, task_id: int, *, now: Optional[datetime] = None) -> Optional[datetime]:
    """Extend the caller's live lease on `task_id` (page heartbeat); the new expiry, or None if none is live.

    An expired lease is not revived here: the task may have gone to someone else meanwhile;
    call `next_task` instead.
    """
    now = _aware(now)

    def work(session: Session) -> Optional[datetime]:
        connection = session.connection()
        caller = lock_annotator(connection, user)
        project_id = connection.execute(select(TASK.c.project_id).where(TASK.c.id == task_id)).scalar()
        if project_id is None:
            raise TaskNotFound(f"no task with id {task_id}")
        expires_at = now + timedelta(minutes=load_project(connection, project_id).lease_minutes)
        result = connection.execute(_renew_statement(), {"tid": task_id, "uid": caller.id, "now": now, "expires": expires_at})
        return expires_at if result.rowcount else None

    return run_transaction(engine, work)


# ------------------------------------------------------------------------------- extra votes


def request_extra_votes(
    engine: Engine,
    actor: Actor,
    project: ProjectRef,
    *,
    min_agreement: float,
    max_overlap: Optional[int] = None,
) -> list[int]:
    """Ask one more vote for every complete, non-gold task whose agreement is below `min_agreement`.

    Agreement per task: `pairwise_agreement` of the choices, or `rating_agreement` of the scores.
    A task qualifies when it has all the annotations its current target asks for and that target
    is below the cap; its `target_overlap` becomes target + 1. The cap is `max_overlap`, default
    the project's; a larger value given here raises the project's `max_overlap` to it (assignment
    never exceeds the project's setting). Returns the ids of the tasks raised. Admin only.
    """
    if not 0.0 <= min_agreement <= 1.0:
        raise ValidationError("min_agreement", "must be within [0, 1]")

    def work(session: Session) -> list[int]:
        check_admin(session, actor, "request extra votes")
        settings = load_project(session.connection(), project)
        cap = settings.max_overlap if max_overlap is None else max_overlap
        if cap < settings.overlap:
            raise ValidationError("max_overlap", f"must be at least the project's overlap ({settings.overlap})")
        if cap > settings.max_overlap:
            session.execute(update(PROJECT).where(PROJECT.c.id == settings.id).values(max_overlap=cap))
        current_target = case(
            (TASK.c.target_overlap > settings.overlap, TASK.c.target_overlap),
            else_=settings.overlap,
        )
        complete = session.execute(
            select(TASK.c.id, TASK.c.kind, current_target.label("target")).where(
                TASK.c.project_id == settings.id,
                IS_REGULAR,
                TASK.c.kind != "write",  # demonstrations have no agreement to measure
                TASK.c.annotation_count >= current_target,
                current_target < cap,
            )
        ).all()
        raised = sorted(task_id for task_id, score in _task_agreements(session, settings, complete).items() if score is not None and score < min_agreement)
        for start in range(0, len(raised), 500):
            chunk = raised[start : start + 500]
            session.execute(update(TASK).where(TASK.c.id.in_(chunk)).values(target_overlap=current_target + 1))
        return raised

    return run_transaction(engine, work)


def _task_agreements(session: Session, settings: ProjectSettings, tasks: Sequence[Row]) -> dict[int, Optional[float]]:
    """Agreement of each listed task from its annotations (long format, read in chunks)."""
    out: dict[int, Optional[float]] = {}
    by_kind: dict[str, list[int]] = {}
    for row in tasks:
        by_kind.setdefault(row.kind, []).append(row.id)
    for kind, ids in by_kind.items():
        table = annotation_table(kind)
        value = table.c.scores if kind == "rating" else table.c.groups if kind == "ranking" else table.c.choice
        labels: dict[int, list[Any]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for task_id, label in session.execute(select(table.c.task_id, value).where(table.c.task_id.in_(chunk))):
                labels.setdefault(task_id, []).append(label)
        for task_id in ids:
            values = labels.get(task_id, [])
            if kind == "ranking":
                out[task_id] = ranking_agreement(values)
            else:
                out[task_id] = rating_agreement(values, settings.rubric) if kind == "rating" else pairwise_agreement(values)
    return out
