"""Demonstrations: write tasks submitted through the annotation engine, drafts saved as typed, review, edits as preferences.

A write task shows a prompt (and, when the task has one, a model reply pre-filled); the
annotator submits the assistant's reply. Submitting goes through `rlhf.annotate._submit`, so
leases, exact overlap, edits with revisions kept, skip and flag are the engine's, as for
ratings and comparisons.

Around it:
- drafts (`save_draft` / `load_draft`): the text being typed, saved server-side per (task, user)
  and removed in the transaction that submits it, so a reload, a lost connection, a session
  timeout or a second tab never lose it;
- review: in projects that collect ratings, each demonstration's current text becomes a rating
  task for the other annotators (the writer is never offered it), so it is rated on the
  project's rubric like any reply;
- edits as preferences: a substantive edit of a model reply says edited ≻ original
  (`edit_preferences`, exported with `--include-edits`).
"""

from __future__ import annotations

import difflib
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Optional

from sqlalchemy import bindparam, func, select
from sqlalchemy.engine import Connection, Engine, Row
from sqlmodel import Session

from rlhf.annotate import (
    PROMPT,
    RATING,
    SKIP,
    TASK,
    USER,
    ProjectSettings,
    SubmitResult,
    TaskNotFound,
    ValidationError,
    _aware,
    _is_int,
    _submit,
    dialect_insert,
    lock_annotator,
    validate_comment,
)
from rlhf.assign import DEMONSTRATION, RESPONSE, load_project
from rlhf.db import run_transaction
from rlhf.importer.pairing import rating_task_hash, task_draw
from rlhf.importer.shapes import response_hash
from rlhf.schema import Draft, Project, User, utcnow

DRAFT = Draft.__table__
PROJECT_SEED, PROJECT_ID = Project.__table__.c.seed, Project.__table__.c.id

MAX_DRAFT_CHARS = 200_000
"""Drafts are kept up to this length whatever the project's limit, so an over-long text being
trimmed is never lost; the project's `max_reply_chars` applies at submit."""
SUBSTANTIVE_EDIT_RATIO = 0.05
"""An edit changing at least this share of the original's words is a preference (edited ≻ original)."""
DEMONSTRATION_MODEL = "human-demonstration"
"""The model name of the responses that carry demonstrations into review rating tasks."""
OWN_REVIEW_SKIP = "own demonstration"


# ---------------------------------------------------------------------------- pure helpers


def edit_ratio(original: Optional[str], edited: str) -> Optional[float]:
    """Share of the original changed, on words: 1 − difflib's similarity ratio of the word lists.

    0.0 = kept as is, 1.0 = nothing kept; None without an original (written from scratch).
    Words, not characters: a 5,000-character reply compares in well under a millisecond per
    hundred words, and re-wrapping whitespace is not counted as an edit.
    """
    if original is None:
        return None
    a, b = original.split(), edited.split()
    if not a and not b:
        return 0.0
    return round(1.0 - difflib.SequenceMatcher(None, a, b, autojunk=False).ratio(), 6)


def is_substantive(ratio: Optional[float]) -> bool:
    """Whether an edit with this `edit_ratio` says the edited reply is preferred to the original."""
    return ratio is not None and ratio >= SUBSTANTIVE_EDIT_RATIO


def word_count(text: str) -> int:
    return len(text.split())


def validate_reply(text: Any, max_chars: int) -> str:
    """A demonstration: text with something besides whitespace, at most `max_chars` characters."""
    if not isinstance(text, str):
        raise ValidationError("text", "must be text")
    if not text.strip():
        raise ValidationError("text", "is empty: write the assistant's reply")
    if len(text) > max_chars:
        raise ValidationError("text", f"is {len(text):,} characters; this project accepts at most {max_chars:,}")
    return text


def check_user_turn(messages: Optional[Sequence[Mapping[str, Any]]]) -> None:
    """A chat prompt to write a reply to must have a user turn (plain-text prompts are one)."""
    if messages is not None and not any(m.get("role") == "user" for m in messages):
        raise ValidationError("prompt", "has no user turn: there is nothing for the assistant to reply to")


# ------------------------------------------------------------------------------- submitting


def submit_demonstration(
    engine: Engine,
    user: User,
    task_id: int,
    *,
    text: str,
    comment: str = "",
    time_spent_s: Optional[float] = None,
    next_kind: Optional[str] = "write",
    now: Optional[datetime] = None,
    rng: Optional[random.Random] = None,
) -> SubmitResult:
    """Submit (or edit) your reply to a write task; the next write task comes back with it.

    The draft is removed in the same transaction. Raises ValidationError (`text` empty or over
    the project's `max_reply_chars`, `prompt` without a user turn, `comment`, `task_id` for a
    task of another kind), TaskNotFound, TaskFull, ProjectInactive, PermissionDenied; nothing is
    stored then.
    """
    now = _aware(now)

    def make_content(settings: ProjectSettings, ctx: Row, _side: Optional[str]) -> dict[str, Any]:
        return {"text": validate_reply(text, settings.max_reply_chars), "comment": validate_comment(comment)}

    def after(connection: Connection, settings: ProjectSettings, ctx: Row, annotation_id: int, user_id: int) -> None:
        # Still inside the submit's transaction: an error here stores nothing.
        source = connection.execute(_source_statement(), {"tid": ctx.id}).one()
        check_user_turn(source.messages)
        connection.execute(
            DEMONSTRATION.update().where(DEMONSTRATION.c.id == annotation_id).values(edit_ratio=edit_ratio(source.original, text))
        )
        connection.execute(DRAFT.delete().where(DRAFT.c.task_id == ctx.id, DRAFT.c.user_id == user_id))
        if "rate" in settings.task_kinds:
            _sync_review_task(connection, settings, ctx.id, source.prompt_id, annotation_id, user_id, text, now)

    return _submit(engine, user, task_id, "write", make_content, time_spent_s, next_kind, now, rng, after)


def _source_statement():
    """The write task's prompt (id, chat turns) and the model reply it started from (binds tid)."""
    return (
        select(TASK.c.prompt_id, PROMPT.c.messages, RESPONSE.c.text.label("original"))
        .select_from(TASK.join(PROMPT, PROMPT.c.id == TASK.c.prompt_id).outerjoin(RESPONSE, RESPONSE.c.id == TASK.c.response_a_id))
        .where(TASK.c.id == bindparam("tid"))
    )


def _sync_review_task(
    connection: Connection, settings: ProjectSettings, task_id: int, prompt_id: int, demonstration_id: int, writer_id: int, text: str, now: datetime
) -> None:
    """Make the demonstration's current text a rating task (once per distinct text) and point it there.

    The text is stored as a response of the prompt (model `DEMONSTRATION_MODEL`); the rating task
    is made like an imported one (same hash and shuffle key), and a skip for the writer keeps it
    from them. An edit makes a new review task: ratings of the old text stay with the old one.
    """
    insert = dialect_insert(connection.dialect.name)
    digest = response_hash(text, DEMONSTRATION_MODEL)
    connection.execute(
        insert(RESPONSE)
        .values(prompt_id=prompt_id, content_hash=digest, text=text, model_name=DEMONSTRATION_MODEL, round=0,
                meta={"demonstration_id": demonstration_id, "write_task_id": task_id}, created_at=now)
        .on_conflict_do_nothing()
    )  # fmt: skip
    response_id = connection.execute(select(RESPONSE.c.id).where(RESPONSE.c.prompt_id == prompt_id, RESPONSE.c.content_hash == digest)).scalar_one()
    prompt_digest = connection.execute(select(PROMPT.c.content_hash).where(PROMPT.c.id == prompt_id)).scalar_one()
    task_digest = rating_task_hash(prompt_digest, digest)
    seed = connection.execute(select(PROJECT_SEED).where(PROJECT_ID == settings.id)).scalar_one()
    connection.execute(
        insert(TASK)
        .values(project_id=settings.id, kind="rating", prompt_id=prompt_id, response_a_id=response_id, content_hash=task_digest,
                shuffle_key=task_draw(seed, task_digest)[0], annotation_count=0, is_gold=False, created_at=now)
        .on_conflict_do_nothing()
    )  # fmt: skip
    review_id = connection.execute(select(TASK.c.id).where(TASK.c.project_id == settings.id, TASK.c.content_hash == task_digest)).scalar_one()
    connection.execute(insert(SKIP).values(task_id=review_id, user_id=writer_id, reason=OWN_REVIEW_SKIP, created_at=now).on_conflict_do_nothing())
    connection.execute(DEMONSTRATION.update().where(DEMONSTRATION.c.id == demonstration_id).values(review_task_id=review_id))


# ----------------------------------------------------------------------------------- drafts


@dataclass(frozen=True)
class DraftView:
    """The text saved for a write task, and when."""

    task_id: int
    text: str
    updated_at: datetime


def _write_task_kind(connection: Connection, task_id: Any) -> None:
    if not _is_int(task_id):
        raise ValidationError("task_id", f"must be an integer, got {task_id!r}")
    kind = connection.execute(select(TASK.c.kind).where(TASK.c.id == task_id)).scalar()
    if kind is None:
        raise TaskNotFound(f"no task with id {task_id}")
    if kind != "write":
        raise ValidationError("task_id", f"task {task_id} is a {kind} task; drafts are for write tasks")


def save_draft(engine: Engine, user: User, task_id: int, text: str, *, now: Optional[datetime] = None) -> DraftView:
    """Save what is typed on a write task (one draft per task and user; the last save wins).

    Any length up to MAX_DRAFT_CHARS is kept (the project's limit applies at submit). Raises
    ValidationError (`text`, `task_id`), TaskNotFound, PermissionDenied.
    """
    now = _aware(now)
    if not isinstance(text, str):
        raise ValidationError("text", "must be text")
    if len(text) > MAX_DRAFT_CHARS:
        raise ValidationError("text", f"is {len(text):,} characters; drafts keep at most {MAX_DRAFT_CHARS:,}")

    def work(session: Session) -> DraftView:
        connection = session.connection()
        caller = lock_annotator(connection, user, lock=False)
        _write_task_kind(connection, task_id)
        insert = dialect_insert(connection.dialect.name)
        statement = insert(DRAFT).values(task_id=task_id, user_id=caller.id, text=text, updated_at=now)
        connection.execute(
            statement.on_conflict_do_update(index_elements=["task_id", "user_id"], set_={"text": statement.excluded.text, "updated_at": now})
        )
        return DraftView(task_id=task_id, text=text, updated_at=now)

    return run_transaction(engine, work)


def load_draft(engine: Engine, user: User, task_id: int) -> Optional[DraftView]:
    """Your saved draft on the task, or None."""

    def work(session: Session) -> Optional[DraftView]:
        connection = session.connection()
        caller = lock_annotator(connection, user, lock=False)
        row = connection.execute(select(DRAFT).where(DRAFT.c.task_id == task_id, DRAFT.c.user_id == caller.id)).first()
        return None if row is None else DraftView(task_id=row.task_id, text=row.text, updated_at=row.updated_at)

    return run_transaction(engine, work, write=False)


def discard_draft(engine: Engine, user: User, task_id: int) -> bool:
    """Drop your draft on the task (start again from the original); whether there was one."""

    def work(session: Session) -> bool:
        connection = session.connection()
        caller = lock_annotator(connection, user, lock=False)
        return connection.execute(DRAFT.delete().where(DRAFT.c.task_id == task_id, DRAFT.c.user_id == caller.id)).rowcount > 0

    return run_transaction(engine, work)
