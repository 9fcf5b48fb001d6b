"""The database tables: projects, prompts, responses, tasks, users, browser sessions, annotations, demonstrations and drafts, jobs, artifacts.

Invariants the constraints enforce (DESIGN.md, Storage):
- one rating / preference / skip per (task, user): a re-submit edits, a double click never adds;
- prompts, responses and tasks are unique by content hash within their parent, so an import
  run twice adds nothing;
- every job and artifact records what it was built from.

Timestamps are timezone-aware UTC (`utcnow()`); SQLModel stores them as UTC on SQLite and
PostgreSQL alike and refuses naive ones.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint, text
from sqlmodel import Field, SQLModel

ROLES = ("admin", "annotator", "external")
"""`external` users are label sources (an imported dataset, a model judge): they cannot sign in."""

TASK_KINDS = ("rating", "pairwise", "write", "ranking")
COLLECTED_KINDS = {"rate": "rating", "compare": "pairwise", "write": "write"}
"""What a project can collect (`Project.task_kinds`, as users name them) → the task kind.

Rankings are collected when the project sets `rank_k_min`/`rank_k_max`."""
DEFAULT_MAX_REPLY_CHARS = 20000
RANK_K_MIN, RANK_K_MAX = 3, 9
"""The number of replies a ranking task may show (a project picks its range within these)."""
VISIBILITIES = ("blind", "reveal_after_submit")
PREFERENCE_CHOICES = ("a", "b", "tie", "both_bad")
"""Choices are stored in the task's own terms (response A / B), whatever side was shown left."""

JOB_KINDS = ("train-reward", "ppo", "dpo", "generate", "export", "simulate", "sft", "judge", "select-scores")
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")

DEFAULT_RUBRIC: list[dict[str, Any]] = [
    {
        "name": "helpfulness",
        "question": "How well does the response do what the prompt asks?",
        "min": 1,
        "max": 7,
        "labels": {"1": "Not at all", "4": "Partly", "7": "Completely"},
    },
    {
        "name": "honesty",
        "question": "Is the response accurate, and honest about what it does not know?",
        "min": 1,
        "max": 7,
        "labels": {"1": "Misleading", "4": "Mixed", "7": "Accurate"},
    },
    {
        "name": "harmlessness",
        "question": "Is the response free of harmful, unsafe or offensive content?",
        "min": 1,
        "max": 7,
        "labels": {"1": "Harmful", "4": "Borderline", "7": "Harmless"},
    },
]
DEFAULT_TAGS = ["unsafe", "factual error", "off-topic", "incomplete", "repetitive", "great example"]
FLAG_REASONS = ("pii", "harmful", "broken", "other")
SELECTION_STRATEGIES = ("least-annotated", "uncertainty", "disagreement", "mixed")
"""How `next_task` orders eligible tasks (rlhf.selection); least-annotated is the default."""


def utcnow() -> datetime:
    """Aware UTC now: the only kind of timestamp the tables accept."""
    return datetime.now(timezone.utc)


def _json(default_factory=None, nullable: bool = True) -> Any:
    if default_factory is None:
        return Field(default=None, sa_column=Column(JSON, nullable=nullable))
    return Field(default_factory=default_factory, sa_column=Column(JSON, nullable=nullable))


def _text(nullable: bool = True, default: Optional[str] = None) -> Any:
    return Field(default=default, sa_column=Column(Text, nullable=nullable))


class Project(SQLModel, table=True):
    """A labelling project: its guidelines, rubric and assignment settings."""

    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(unique=True, index=True, max_length=200)
    description: str = Field(default="", max_length=2000)
    guidelines: str = _text(nullable=False, default="")
    rubric: list = _json(lambda: [dict(d) for d in DEFAULT_RUBRIC], nullable=False)
    tags: list = _json(lambda: list(DEFAULT_TAGS), nullable=False)
    overlap: int = 3
    """Annotations each task gets from distinct annotators."""
    max_overlap: int = 3
    """Upper bound when extra votes are asked for tasks whose agreement is low."""
    gold_rate: float = 0.0
    """Share of handed-out tasks that are gold tasks (known answer)."""
    visibility: str = Field(default="blind", max_length=32)
    lease_minutes: int = 10
    seed: int = 0
    """Seeds the shuffle of tasks with equal annotation counts."""
    active: bool = True
    rank_k_min: Optional[int] = None
    """Ranking tasks: fewest replies per task (3-9); None when the project does not collect rankings."""
    rank_k_max: Optional[int] = None
    """Ranking tasks: most replies per task (3-9, at least `rank_k_min`)."""
    created_at: datetime = Field(default_factory=utcnow)
    task_kinds: list = _json(lambda: ["rate", "compare"], nullable=False)
    """Which kinds of task imports make for this project: any of rate, compare, write."""
    write_overlap: int = 1
    """Demonstrations each write task gets from distinct annotators."""
    max_reply_chars: int = DEFAULT_MAX_REPLY_CHARS
    """Longest demonstration an annotator may submit (characters)."""
    selection: str = Field(default="least-annotated", max_length=32, sa_column_kwargs={"server_default": "least-annotated"})
    """Which eligible task goes first (SELECTION_STRATEGIES; rlhf.selection)."""
    judge_uses: Optional[dict] = _json()
    """Uses of a judge's verdicts switched on for this project ({use: bool}, rlhf.projects.JUDGE_USES); None: all off."""


class Prompt(SQLModel, table=True):
    """A prompt: plain `text`, or chat `messages` ([{role, content}, ...]); `text` then holds a flat copy."""

    __table_args__ = (UniqueConstraint("project_id", "content_hash"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    content_hash: str = Field(max_length=64)
    text: str = _text(nullable=False, default="")
    messages: Optional[list] = _json()
    category: Optional[str] = Field(default=None, max_length=100)
    meta: Optional[dict] = _json()
    created_at: datetime = Field(default_factory=utcnow)


class Response(SQLModel, table=True):
    """One model output for a prompt, with its provenance (model, sampling parameters, round)."""

    __table_args__ = (UniqueConstraint("prompt_id", "content_hash"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    prompt_id: int = Field(foreign_key="prompt.id", index=True, ondelete="CASCADE")
    content_hash: str = Field(max_length=64)
    text: str = _text(nullable=False, default="")
    model_name: str = Field(default="unknown", max_length=300)
    generation_params: Optional[dict] = _json()
    round: int = 0
    meta: Optional[dict] = _json()
    created_at: datetime = Field(default_factory=utcnow)


class Task(SQLModel, table=True):
    """A unit of work: one response to rate, a pair (A, B) of responses to the same prompt to compare,
    or a prompt to write the assistant's reply to (`write`: response A, when set, is the model reply
    shown pre-filled for editing; None means writing from scratch).

    `annotation_count` is kept in step with the ratings/preferences rows inside the same
    transaction, so assignment can pick the least-annotated task from an index.
    """

    __table_args__ = (
        UniqueConstraint("project_id", "content_hash"),
        # Assignment walks this index: regular and gold tasks are separate prefixes, each
        # ordered least-annotated first, ties broken by the seeded shuffle key.
        Index("ix_task_queue", "project_id", "kind", "is_gold", "annotation_count", "shuffle_key"),
        # The few tasks asked for extra votes (low agreement), found without scanning full ones.
        # Partial: only those tasks are in it, so an import of a million tasks (all without a
        # raised target) does not maintain it (~18% of the task inserts' time, measured).
        Index(
            "ix_task_extra_votes", "project_id", "kind", "target_overlap",
            sqlite_where=text("target_overlap IS NOT NULL"), postgresql_where=text("target_overlap IS NOT NULL"),
        ),
        # Active selection (rlhf.selection) walks this one: least-annotated first as above, then
        # the rank the background scoring stored, so the pick stays an index walk.
        Index("ix_task_selection", "project_id", "kind", "is_gold", "annotation_count", "selection_rank", "shuffle_key"),
    )

    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", ondelete="CASCADE")
    kind: str = Field(max_length=16)
    prompt_id: int = Field(foreign_key="prompt.id", index=True, ondelete="CASCADE")
    response_a_id: Optional[int] = Field(default=None, foreign_key="response.id", index=True, ondelete="CASCADE")
    response_b_id: Optional[int] = Field(default=None, foreign_key="response.id", index=True, ondelete="CASCADE")
    content_hash: str = Field(max_length=64)
    shuffle_key: int = 0
    """A seeded pseudo-random key: ties in annotation count are broken by it."""
    annotation_count: int = 0
    target_overlap: Optional[int] = None
    """Set above the project's overlap when extra votes are requested (low agreement)."""
    is_gold: bool = False
    gold_answer: Optional[dict] = _json()
    """Known answer for gold tasks: {"choice": ...}, {"scores": {dim: value}} or {"ranking": [[card, ...], ...]}."""
    response_ids: Optional[list] = _json()
    """Ranking tasks: the K response ids, card a first (`response_a_id` is the first); None otherwise."""
    created_at: datetime = Field(default_factory=utcnow)
    selection_rank: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    """Position in the project's active-selection order (1 = first); 0 = not scored (rlhf.selection)."""


class User(SQLModel, table=True):
    """An account. Passwords are argon2 hashes; `external` users are label sources and never sign in."""

    id: Optional[int] = Field(default=None, primary_key=True)
    username: str = Field(unique=True, index=True, max_length=150)
    password_hash: Optional[str] = Field(default=None, max_length=300)
    role: str = Field(default="annotator", max_length=16)
    active: bool = True
    must_change_password: bool = False
    last_login_at: Optional[datetime] = None
    created_at: datetime = Field(default_factory=utcnow)


class LoginThrottle(SQLModel, table=True):
    """Recent failed sign-ins per username, known or not, so throttling never reveals which accounts exist."""

    username: str = Field(primary_key=True, max_length=150)
    """The name as typed, lower-cased."""
    failures: int = 0
    """Consecutive failures since the last success (reset when a quiet window passes)."""
    last_failure_at: datetime = Field(default_factory=utcnow)
    locked_until: Optional[datetime] = None


class BrowserSession(SQLModel, table=True):
    """A signed-in browser (rlhf.sessions): the cookie holds a random token, this row only its SHA-256.

    Created at sign-in with a one-time handoff nonce (also hashed) that the page exchanges for the
    cookie; rows are deleted when revoked (sign-out, password change, deactivation) or found idle.
    """

    id: Optional[int] = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    token_hash: Optional[str] = Field(default=None, unique=True, max_length=64)
    """SHA-256 of the cookie's token; NULL until the handoff was redeemed."""
    handoff_hash: Optional[str] = Field(default=None, unique=True, max_length=64)
    """SHA-256 of the one-time handoff nonce; NULL once redeemed."""
    handoff_expires_at: Optional[datetime] = None
    via: str = Field(default="password", max_length=16)
    """How the session signed in ("password")."""
    created_at: datetime = Field(default_factory=utcnow)
    last_seen_at: datetime = Field(default_factory=utcnow, index=True)
    """Refreshed at most once a minute while the session is used; idle sessions end from here."""


class UserPreference(SQLModel, table=True):
    """What the app remembers per account between sessions (the last project chosen)."""

    user_id: int = Field(foreign_key="user.id", primary_key=True, ondelete="CASCADE")
    last_project_id: Optional[int] = Field(default=None, foreign_key="project.id", ondelete="SET NULL")
    updated_at: datetime = Field(default_factory=utcnow)


class Lease(SQLModel, table=True):
    """A task handed out to one annotator until `expires_at`; live leases count toward overlap."""

    __table_args__ = (UniqueConstraint("task_id", "user_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    left_side: Optional[str] = Field(default=None, max_length=1)
    """For pairwise tasks: which response ('a' or 'b') this annotator is shown on the left."""
    expires_at: datetime = Field(index=True)
    created_at: datetime = Field(default_factory=utcnow)


class Rating(SQLModel, table=True):
    """A rubric rating of one response by one annotator (one row per task and user)."""

    __table_args__ = (UniqueConstraint("task_id", "user_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    scores: dict = _json(dict, nullable=False)
    """{dimension name: value on the rubric's scale}."""
    tags: list = _json(list, nullable=False)
    comment: str = _text(nullable=False, default="")
    time_spent_s: Optional[float] = None
    revision: int = 1
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    selection_strategy: Optional[str] = Field(default=None, max_length=32)
    """Why the task was handed out: the strategy in force (rlhf.selection), 'gold' for a gold task."""
    selection_score: Optional[float] = None
    """The task's selection score when it was chosen (None for least-annotated)."""
    selection_random: Optional[bool] = None
    """True when the task came from the random share of `mixed` (an unbiased sample)."""
    suggestion_shown: Optional[bool] = None
    """Whether a judge's suggestion was on screen when the annotation was made (None: not recorded; rlhf.judge.suggestions)."""


class Preference(SQLModel, table=True):
    """A comparison of a pair by one annotator (one row per task and user).

    `choice` is in the task's terms (a, b, tie, both_bad); `strength` is 1 (better) or
    2 (much better) for a and b, 0 for tie and both_bad; `shown_left` says which response
    the annotator saw on the left, so position bias can be measured.
    """

    __table_args__ = (UniqueConstraint("task_id", "user_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    choice: str = Field(max_length=16)
    strength: int = 0
    shown_left: str = Field(default="a", max_length=1)
    comment: str = _text(nullable=False, default="")
    time_spent_s: Optional[float] = None
    revision: int = 1
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    selection_strategy: Optional[str] = Field(default=None, max_length=32)
    """Why the task was handed out: the strategy in force (rlhf.selection), 'gold' for a gold task."""
    selection_score: Optional[float] = None
    """The task's selection score when it was chosen (None for least-annotated)."""
    selection_random: Optional[bool] = None
    """True when the task came from the random share of `mixed` (an unbiased sample)."""
    suggestion_shown: Optional[bool] = None
    """Whether a judge's suggestion was on screen when the annotation was made (None: not recorded; rlhf.judge.suggestions)."""


class Demonstration(SQLModel, table=True):
    """An assistant reply written by one annotator for a write task (one row per task and user).

    `edit_ratio` is the share of the original's words changed (0 = kept as is, 1 = all new),
    None when written from scratch; `review_task_id` is the rating task other annotators rate
    the current text in (projects that collect ratings).
    """

    __table_args__ = (UniqueConstraint("task_id", "user_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    text: str = _text(nullable=False, default="")
    comment: str = _text(nullable=False, default="")
    edit_ratio: Optional[float] = None
    review_task_id: Optional[int] = Field(default=None, foreign_key="task.id", ondelete="SET NULL")
    time_spent_s: Optional[float] = None
    revision: int = 1
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)


class Ranking(SQLModel, table=True):
    """An ordering of a ranking task's K replies by one annotator (one row per task and user).

    `groups` is in the task's terms: groups best first, each a list of card indices into
    `Task.response_ids` (a tie is a group of several), e.g. [[2], [0, 3], [1]] = "C > A = D > B".
    `shown_order` is the card index shown at each position on the page (position bias).
    """

    __table_args__ = (UniqueConstraint("task_id", "user_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    groups: list = _json(list, nullable=False)
    all_bad: bool = False
    """"All of these are bad": the order still says which is least bad."""
    shown_order: list = _json(list, nullable=False)
    comment: str = _text(nullable=False, default="")
    time_spent_s: Optional[float] = None
    revision: int = 1
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)


class Draft(SQLModel, table=True):
    """The reply an annotator is typing on a write task, saved as it is typed (one per task and user).

    Kept across reloads, lost connections, expired sessions and tabs; removed when the reply is submitted.
    """

    __table_args__ = (UniqueConstraint("task_id", "user_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    text: str = _text(nullable=False, default="")
    updated_at: datetime = Field(default_factory=utcnow)


class AnnotationRevision(SQLModel, table=True):
    """The previous content of an annotation each time it is edited (history kept)."""

    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str = Field(max_length=16)
    """'rating', 'preference', 'demonstration' or 'ranking'."""
    annotation_id: int = Field(index=True)
    task_id: int = Field(foreign_key="task.id", ondelete="CASCADE")
    user_id: int = Field(foreign_key="user.id", ondelete="CASCADE")
    revision: int
    payload: dict = _json(dict, nullable=False)
    replaced_at: datetime = Field(default_factory=utcnow)


class Skip(SQLModel, table=True):
    """An annotator passing on a task, with a reason; the task is not offered to them again."""

    __table_args__ = (UniqueConstraint("task_id", "user_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    reason: str = Field(default="", max_length=500)
    created_at: datetime = Field(default_factory=utcnow)


class Flag(SQLModel, table=True):
    """A task flagged for admin review (PII, harmful, broken, other)."""

    id: Optional[int] = Field(default=None, primary_key=True)
    task_id: int = Field(foreign_key="task.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    reason: str = Field(max_length=32)
    note: str = _text(nullable=False, default="")
    status: str = Field(default="open", max_length=16, index=True)
    """open, resolved or dismissed."""
    resolved_by: Optional[int] = Field(default=None, foreign_key="user.id")
    resolved_at: Optional[datetime] = None
    created_at: datetime = Field(default_factory=utcnow)


class ImportRecord(SQLModel, table=True):
    """One import of a file into a project: what it added (zero when it was imported before)."""

    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    source: str = Field(max_length=1000)
    file_hash: str = Field(max_length=64)
    counts: dict = _json(dict, nullable=False)
    created_by: Optional[int] = Field(default=None, foreign_key="user.id")
    created_at: datetime = Field(default_factory=utcnow)


class Job(SQLModel, table=True):
    """A training / generation / export run, claimed and executed by a worker."""

    __table_args__ = (Index("ix_job_queue", "status", "created_at"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32)
    params: dict = _json(dict, nullable=False)
    status: str = Field(default="queued", max_length=16)
    progress: float = 0.0
    message: str = Field(default="", max_length=2000)
    log_tail: str = _text(nullable=False, default="")
    error: Optional[str] = _text()
    traceback: Optional[str] = _text()
    worker_id: Optional[str] = Field(default=None, max_length=200)
    heartbeat_at: Optional[datetime] = None
    cancel_requested: bool = False
    attempts: int = 0
    project_id: Optional[int] = Field(default=None, foreign_key="project.id", ondelete="SET NULL")
    created_by: Optional[int] = Field(default=None, foreign_key="user.id", ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow)
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None


class JobMetric(SQLModel, table=True):
    """One point of a job's metrics time series (loss, accuracy, KL, score, ...)."""

    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True, ondelete="CASCADE")
    step: int
    values: dict = _json(dict, nullable=False)
    created_at: datetime = Field(default_factory=utcnow)


class Artifact(SQLModel, table=True):
    """Something a job produced (export, reward model, policy, generated round) and what it came from."""

    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str = Field(max_length=32, index=True)
    """export, reward_model, policy, generation."""
    name: str = Field(max_length=300)
    path: str = Field(max_length=2000)
    content_hash: Optional[str] = Field(default=None, max_length=64)
    project_id: Optional[int] = Field(default=None, foreign_key="project.id", ondelete="SET NULL")
    job_id: Optional[int] = Field(default=None, foreign_key="job.id", ondelete="SET NULL")
    parent_ids: list = _json(list, nullable=False)
    """Artifacts this one was built from (export → reward model → policy → generated round)."""
    lineage: dict = _json(dict, nullable=False)
    """Provenance: export hash, reward model, base model, config."""
    metrics: dict = _json(dict, nullable=False)
    created_by: Optional[int] = Field(default=None, foreign_key="user.id", ondelete="SET NULL")
    created_at: datetime = Field(default_factory=utcnow)


class Judgment(SQLModel, table=True):
    """A model judge's verdict on one task, with what it was built from (rlhf.judge).

    The judge is the external user `judge:<name>`; a parsed, consistent verdict is also stored
    as that user's Preference / Rating / Ranking, so it is measured like people's labels. This row
    keeps what a label cannot: the raw replies (both orders of a pair, both card orders of a
    ranking group), the parsed verdict of each,
    the status (`parsed`, `inconsistent`: the two orders disagree, `unparsed`: a reply that did
    not parse, kept with its text), the template's hash and the model's identity. One row per
    (task, judge): a resumed run never judges a task twice.
    """

    __table_args__ = (UniqueConstraint("task_id", "user_id"),)

    id: Optional[int] = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    task_id: int = Field(foreign_key="task.id", index=True, ondelete="CASCADE")
    user_id: int = Field(foreign_key="user.id", index=True, ondelete="CASCADE")
    kind: str = Field(max_length=16)
    """'pairwise', 'rating' or 'ranking' (the task's kind)."""
    status: str = Field(max_length=16)
    """parsed, inconsistent or unparsed."""
    verdict: dict = _json(dict, nullable=False)
    """Pairwise: {"choice": a|b|tie|null, "orders": {"ab": a|b|tie|null, "ba": ...}}; rating: {"scores": {dim: value}};
    ranking: {"order": groups|null, "orders": {"shown": groups|null, "reversed": ...}, "tau_between_orders": x|null},
    groups in the task's card terms (`rlhf.ranking`)."""
    raw: list = _json(list, nullable=False)
    """The replies as received: [{"order": "ab"|"ba"|"rating"|"shown"|"reversed", "text": ..., "error": ...}]; a score judge's scores."""
    template_hash: str = Field(max_length=64)
    model: dict = _json(dict, nullable=False)
    """The judge's identity: backend, model name / path / weights hash, endpoint (no credentials), decoding."""
    run_id: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class SelectionScore(SQLModel, table=True):
    """The stored active-selection score of one open task (rlhf.selection; written by the `select-scores` job).

    The pick reads only `Task.selection_rank`; this row says why (strategy, score, random share)
    and is copied onto the annotation at submit.
    """

    task_id: int = Field(foreign_key="task.id", primary_key=True, ondelete="CASCADE")
    project_id: int = Field(foreign_key="project.id", index=True, ondelete="CASCADE")
    strategy: str = Field(max_length=32)
    score: float = 0.0
    """Higher = more worth labelling next under `strategy`."""
    rank: int = 0
    """1 = first; copied to Task.selection_rank."""
    is_random: bool = False
    """Placed by the random share of `mixed`, not by its score."""
    computed_at: datetime = Field(default_factory=utcnow)


class SelectionState(SQLModel, table=True):
    """Per project: what the last scoring run used and said (staleness, fallback), for the page and the worker."""

    project_id: int = Field(foreign_key="project.id", primary_key=True, ondelete="CASCADE")
    requested: str = Field(max_length=32)
    """The project's strategy when scored."""
    applied: str = Field(max_length=32)
    """The strategy whose order is stored (least-annotated when it fell back)."""
    note: str = Field(default="", max_length=2000)
    """Why it fell back, or what it used (the reward model)."""
    labels_at: int = 0
    """Annotations in the project when scored (re-run when enough more arrive)."""
    reward_artifact_id: Optional[int] = Field(default=None, foreign_key="artifact.id", ondelete="SET NULL")
    scored_tasks: int = 0
    seconds: float = 0.0
    computed_at: datetime = Field(default_factory=utcnow)
    history: list = _json(list, nullable=False)
    """One point per run: {at, requested, applied, labels, labels_by_strategy, rm_accuracy_random, random_pairs} (the dashboard's curve)."""
