"""Ranking tasks as schema rows (K replies per prompt), for engine tests and benchmarks."""

from __future__ import annotations

import random
from typing import Optional

from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from rlhf.db import session_scope
from rlhf.schema import Prompt, Response, Task

PROMPT, RESPONSE, TASK = Prompt.__table__, Response.__table__, Task.__table__


def add_ranking_tasks(
    engine: Engine,
    project_id: int,
    n: int,
    k: int = 4,
    *,
    gold: bool = False,
    gold_answer: Optional[dict] = None,
    seed: int = 0,
    tag: str = "",
    annotation_counts: Optional[list[int]] = None,
) -> list[int]:
    """`n` ranking tasks, each on its own prompt with `k` replies (card i from model-i, i-th reply
    `i + 1` sentences long); their ids in creation order."""
    tag = tag or f"rank-{'gold' if gold else 'reg'}-{seed}-{k}"
    rng = random.Random(f"{seed}-{tag}")
    with session_scope(engine, write=True) as session:
        session.execute(insert(PROMPT), [{"project_id": project_id, "content_hash": f"{tag}-p{i}", "text": f"Prompt {i}: rank the answers.", "messages": None} for i in range(n)])
        prompts = [r for r in session.execute(select(PROMPT.c.id).where(PROMPT.c.project_id == project_id, PROMPT.c.content_hash.like(f"{tag}-p%")).order_by(PROMPT.c.id)).scalars()]
        session.execute(
            insert(RESPONSE),
            [
                {"prompt_id": pid, "content_hash": f"r{j}", "text": " ".join([f"Answer {j} to {i}."] * (j + 1)), "model_name": f"model-{j}"}
                for i, pid in enumerate(prompts)
                for j in range(k)
            ],
        )
        responses: dict[int, dict[str, int]] = {}
        mine = select(RESPONSE.c.id, RESPONSE.c.prompt_id, RESPONSE.c.content_hash).join(PROMPT, PROMPT.c.id == RESPONSE.c.prompt_id)
        for rid, pid, digest in session.execute(mine.where(PROMPT.c.project_id == project_id, PROMPT.c.content_hash.like(f"{tag}-p%"))):
            responses.setdefault(pid, {})[digest] = rid
        rows = []
        for i, pid in enumerate(prompts):
            ids = [responses[pid][f"r{j}"] for j in range(k)]
            rows.append(
                {
                    "project_id": project_id, "kind": "ranking", "prompt_id": pid, "response_a_id": ids[0], "response_b_id": None,
                    "response_ids": ids, "content_hash": f"{tag}-t{i}", "shuffle_key": rng.getrandbits(31),
                    "annotation_count": annotation_counts[i] if annotation_counts else 0, "is_gold": gold, "gold_answer": gold_answer,
                }
            )  # fmt: skip
        session.execute(insert(TASK), rows)
        return list(session.execute(select(TASK.c.id).where(TASK.c.project_id == project_id, TASK.c.content_hash.like(f"{tag}-t%")).order_by(TASK.c.id)).scalars())


def seed_rankings_in_sql(engine: Engine, project_id: int, annotator_ids: list[int], k: int = 4) -> int:
    """Fill every ranking task's preset `annotation_count` with rankings in one INSERT ... SELECT
    (benchmarks with a million rows); task t's j-th ranking comes from annotator
    `annotator_ids[(t + j) % len]` (consecutive ids). Returns the rankings of the project."""
    from sqlalchemy import JSON, Integer, and_, func, literal, union_all

    from rlhf.schema import Ranking, utcnow

    ranking = Ranking.__table__
    first, n = annotator_ids[0], len(annotator_ids)
    if annotator_ids != list(range(first, first + n)):
        raise ValueError("annotator ids must be consecutive")
    with session_scope(engine) as session:
        most = session.execute(select(func.max(TASK.c.annotation_count)).where(TASK.c.project_id == project_id)).scalar() or 0
    slots = union_all(*[select(literal(j, Integer).label("j")) for j in range(most)]).subquery("slots")
    now = utcnow()
    source = select(
        TASK.c.id,
        (first + (TASK.c.id + slots.c.j) % n).label("user_id"),
        literal([[c] for c in range(k)], JSON),
        literal(False),
        literal(list(range(k)), JSON),
        literal(""),
        literal(1),
        literal(now, ranking.c.created_at.type),
        literal(now, ranking.c.updated_at.type),
    ).select_from(TASK.join(slots, and_(slots.c.j < TASK.c.annotation_count, TASK.c.project_id == project_id)))
    columns = ["task_id", "user_id", "groups", "all_bad", "shown_order", "comment", "revision", "created_at", "updated_at"]
    with session_scope(engine, write=True) as session:
        session.execute(insert(ranking).from_select(columns, source))
        return session.execute(
            select(func.count()).select_from(ranking.join(TASK, TASK.c.id == ranking.c.task_id)).where(TASK.c.project_id == project_id)
        ).scalar_one()
