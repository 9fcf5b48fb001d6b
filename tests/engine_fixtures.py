"""Builders for annotation-engine tests and benchmarks: projects, tasks and annotators as schema rows.

Independent of the importer: rows go straight in through `rlhf.schema` tables with bulk Core
inserts, so a project of 500 tasks (or 500,000) is built in well under a second per 10,000 rows.
Also the annotator loops the concurrency tests run in threads and in spawned processes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Optional

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from rlhf.db import session_scope
from rlhf.schema import Project, Prompt, Response, Task, User

PROMPT = Prompt.__table__
RESPONSE = Response.__table__
TASK = Task.__table__
USER = User.__table__


@dataclass
class BuiltProject:
    """A project and the ids of what was made in it."""

    project: Project
    rating_ids: list[int] = field(default_factory=list)
    pairwise_ids: list[int] = field(default_factory=list)
    gold_ids: list[int] = field(default_factory=list)


def create_project(engine: Engine, name: str = "test-project", **settings: Any) -> Project:
    """A Project row with the given settings (overlap, max_overlap, gold_rate, visibility, ...)."""
    with session_scope(engine, write=True) as session:
        project = Project(name=name, guidelines="Be fair.", **settings)
        session.add(project)
        session.flush()
        session.refresh(project)
        return project


def add_tasks(
    engine: Engine,
    project_id: int,
    n: int,
    kind: str = "rating",
    *,
    gold: bool = False,
    gold_answer: Optional[dict] = None,
    seed: int = 0,
    tag: str = "",
    distinct_prompts: Optional[int] = None,
    annotation_counts: Optional[list[int]] = None,
    chunk: int = 20_000,
) -> list[int]:
    """Add `n` tasks of `kind` (with prompts and responses); returns their ids in creation order.

    `distinct_prompts` (default n) prompts are made and tasks cycle over them, so huge benches
    need not make a prompt per task. Shuffle keys come from `random.Random(seed)`.
    `annotation_counts[i]` presets task i's count, for `seed_ratings_in_sql` to fill.
    """
    tag = tag or f"{kind}-{'gold' if gold else 'reg'}-{seed}"
    n_prompts = min(n, distinct_prompts or n)
    rng = random.Random(f"{seed}-{tag}")
    with session_scope(engine, write=True) as session:
        session.execute(
            insert(PROMPT),
            [{"project_id": project_id, "content_hash": f"{tag}-p{i}", "text": f"Prompt {i}: explain thing {i}.", "messages": None} for i in range(n_prompts)],
        )
        prompt_ids = dict(
            session.execute(select(PROMPT.c.content_hash, PROMPT.c.id).where(PROMPT.c.project_id == project_id, PROMPT.c.content_hash.like(f"{tag}-p%"))).all()
        )
        prompt_list = [prompt_ids[f"{tag}-p{i}"] for i in range(n_prompts)]
        rows = []
        for i, pid in enumerate(prompt_list):
            rows.append({"prompt_id": pid, "content_hash": "a", "text": f"Answer A to {i}.", "model_name": "model-a"})
            rows.append({"prompt_id": pid, "content_hash": "b", "text": f"Answer B to {i}.", "model_name": "model-b"})
        session.execute(insert(RESPONSE), rows)
        responses = {
            (r.prompt_id, r.content_hash): r.id
            for r in session.execute(select(RESPONSE.c.id, RESPONSE.c.prompt_id, RESPONSE.c.content_hash).where(RESPONSE.c.prompt_id.in_(prompt_list))).all()
        }
        ids: list[int] = []
        for start in range(0, n, chunk):
            batch = []
            for i in range(start, min(n, start + chunk)):
                pid = prompt_list[i % n_prompts]
                batch.append(
                    {
                        "project_id": project_id,
                        "kind": kind,
                        "prompt_id": pid,
                        "response_a_id": responses[(pid, "a")],
                        "response_b_id": responses[(pid, "b")] if kind == "pairwise" else None,
                        "content_hash": f"{tag}-t{i}",
                        "shuffle_key": rng.getrandbits(31),
                        "annotation_count": annotation_counts[i] if annotation_counts else 0,
                        "is_gold": gold,
                        "gold_answer": gold_answer,
                    }
                )
            session.execute(insert(TASK), batch)
        ids = list(
            session.execute(select(TASK.c.id).where(TASK.c.project_id == project_id, TASK.c.content_hash.like(f"{tag}-t%")).order_by(TASK.c.id)).scalars()
        )
    return ids


def add_annotators(engine: Engine, n: int, prefix: str = "ann", role: str = "annotator") -> list[User]:
    """`n` accounts without passwords (they are passed to the engine directly, never signed in)."""
    with session_scope(engine, write=True) as session:
        session.execute(insert(USER), [{"username": f"{prefix}{i}", "role": role, "active": True, "must_change_password": False} for i in range(n)])
        users = session.execute(select(User).where(USER.c.username.like(f"{prefix}%")).order_by(USER.c.id)).scalars().all()
    return list(users)


def seed_ratings_in_sql(engine: Engine, project_id: int, annotator_ids: list[int]) -> int:
    """Fill every task's preset `annotation_count` with ratings in one INSERT ... SELECT.

    For benchmarks with a million rows: no Python per row. Task t's j-th rating comes from
    annotator `annotator_ids[(t + j) % len]`, so no (task, user) pair repeats. The annotator
    ids must be consecutive (as `add_annotators` makes them). Returns the rows added.
    """
    from sqlalchemy import JSON, Integer, and_, func, literal, union_all

    from rlhf.schema import Rating, utcnow

    rating = Rating.__table__
    first, n = annotator_ids[0], len(annotator_ids)
    if annotator_ids != list(range(first, first + n)):
        raise ValueError("annotator ids must be consecutive")
    with session_scope(engine) as session:
        most = session.execute(select(func.max(TASK.c.annotation_count)).where(TASK.c.project_id == project_id)).scalar() or 0
    if most > n:
        raise ValueError("more ratings per task than annotators")
    # 0..most-1 as a derived table (SQLite has no column aliases on VALUES).
    slots = union_all(*[select(literal(j, Integer).label("j")) for j in range(most)]).subquery("slots")
    now = utcnow()
    source = select(
        TASK.c.id,
        (first + (TASK.c.id + slots.c.j) % n).label("user_id"),
        literal({"helpfulness": 5, "honesty": 5, "harmlessness": 6}, JSON),
        literal([], JSON),
        literal(""),
        literal(1),
        literal(now, rating.c.created_at.type),
        literal(now, rating.c.updated_at.type),
    ).select_from(TASK.join(slots, and_(slots.c.j < TASK.c.annotation_count, TASK.c.project_id == project_id)))
    columns = ["task_id", "user_id", "scores", "tags", "comment", "revision", "created_at", "updated_at"]
    sqlite = engine.dialect.name == "sqlite"
    with session_scope(engine, write=True) as session:
        if sqlite:
            # Five indexes take the rows in scattered order: a 256 MB page cache keeps them in memory.
            session.connection().exec_driver_sql("PRAGMA cache_size=-262144")
        session.execute(insert(rating).from_select(columns, source))
        if sqlite:  # back to the default before the connection returns to the pool
            session.connection().exec_driver_sql("PRAGMA cache_size=-2000")
        # Counted, not taken from rowcount: psycopg reports -1 for INSERT ... SELECT here.
        return session.execute(
            select(func.count()).select_from(rating.join(TASK, TASK.c.id == rating.c.task_id)).where(TASK.c.project_id == project_id)
        ).scalar_one()


def build_project(
    engine: Engine,
    *,
    n_rating: int = 0,
    n_pairwise: int = 0,
    n_gold_rating: int = 0,
    n_gold_pairwise: int = 0,
    name: str = "test-project",
    seed: int = 0,
    **settings: Any,
) -> BuiltProject:
    """A project with regular and gold tasks of both kinds."""
    project = create_project(engine, name=name, seed=seed, **settings)
    built = BuiltProject(project=project)
    if n_rating:
        built.rating_ids = add_tasks(engine, project.id, n_rating, "rating", seed=seed)
    if n_pairwise:
        built.pairwise_ids = add_tasks(engine, project.id, n_pairwise, "pairwise", seed=seed)
    if n_gold_rating:
        built.gold_ids += add_tasks(engine, project.id, n_gold_rating, "rating", gold=True, gold_answer={"scores": {"helpfulness": 7}}, seed=seed)
    if n_gold_pairwise:
        built.gold_ids += add_tasks(engine, project.id, n_gold_pairwise, "pairwise", gold=True, gold_answer={"choice": "a"}, seed=seed)
    return built


# --------------------------------------------------------------------------- annotator loops


def random_submit(engine: Engine, user: User, view, rng: random.Random, **kwargs: Any):
    """Submit a random (valid) answer to `view`; returns the SubmitResult."""
    from rlhf.annotate import submit_preference, submit_rating

    if view.kind == "rating":
        scores = {d.name: rng.randint(d.min, d.max) for d in view.rubric}
        return submit_rating(engine, user, view.task_id, scores=scores, time_spent_s=rng.uniform(2, 30), next_kind="rating", **kwargs)
    if view.kind == "ranking":
        from rlhf.annotate import submit_ranking

        cards = list(range(len(view.cards)))
        rng.shuffle(cards)
        return submit_ranking(engine, user, view.task_id, ranking=[[c] for c in cards], time_spent_s=rng.uniform(2, 30), next_kind="ranking", **kwargs)
    choice = rng.choice(["a", "b", "tie", "both_bad"])
    strength = rng.choice([1, 2]) if choice in ("a", "b") else 0
    return submit_preference(
        engine, user, view.task_id, choice=choice, strength=strength, shown_left=view.shown_left, time_spent_s=rng.uniform(2, 30), next_kind="pairwise", **kwargs
    )


def annotate_until_done(engine: Engine, user: User, project_id: int, kind: str, seed: int = 0, max_items: Optional[int] = None) -> list[tuple[int, int, int]]:
    """One annotator working through the queue; (task_id, user_id, annotation_id) per acknowledged submit."""
    from rlhf.assign import next_task

    rng = random.Random(seed)
    done: list[tuple[int, int, int]] = []
    view = next_task(engine, user, project_id, kind)
    while view is not None and (max_items is None or len(done) < max_items):
        result = random_submit(engine, user, view, rng)
        if not result.created:
            raise AssertionError(f"user {user.id} was handed task {view.task_id} they had already annotated")
        done.append((view.task_id, user.id, result.annotation_id))
        view = result.next_task
    return done


def annotate_in_threads(engine: Engine, users: list[User], project_id: int, kind: str, seed: int = 0) -> list[tuple[int, int, int]]:
    """Every user works through the queue in its own thread at once; all acknowledged submits.

    An exception in any thread is re-raised here (errors must not surface to callers).
    """
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(users)) as pool:
        futures = [pool.submit(annotate_until_done, engine, u, project_id, kind, seed + i) for i, u in enumerate(users)]
        results = [f.result() for f in futures]
    return [item for result in results for item in result]


def process_annotators(url: str, user_ids: list[int], project_id: int, kind: str, seed: int) -> list[tuple[int, int, int]]:
    """Entry point of a spawned process: its own engine from the URL, its users in threads."""
    from rlhf.db import make_engine

    engine = make_engine(url, pool_size=len(user_ids))
    try:
        with session_scope(engine) as session:
            users = [session.get(User, uid) for uid in user_ids]
        return annotate_in_threads(engine, users, project_id, kind, seed)
    finally:
        engine.dispose()


def rows_where(engine: Engine, table, **where) -> list:
    """Every row of `table` whose columns equal the given values (ORM objects, detached)."""
    from sqlmodel import Session, select as sql_select

    with Session(engine) as session:
        query = sql_select(table)
        for key, value in where.items():
            query = query.where(getattr(table, key) == value)
        return list(session.exec(query))
