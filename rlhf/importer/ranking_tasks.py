"""Ranking tasks from an import: one task per prompt whose replies number within the project's K range.

The task's identity is its prompt and the set of its replies (sorted hashes), so a re-import adds
nothing; the card order (which reply is card A) is a seeded shuffle of the same hashes, as the
side of a pair is (`rlhf.importer.pairing.task_draw`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from rlhf.importer.pairing import _digest, task_draw
from rlhf.schema import Task, utcnow

TASK_T = Task.__table__  # type: ignore[attr-defined]


def ranking_task_hash(prompt_hash: str, response_hashes: Sequence[str]) -> str:
    """Identity of the task "rank these replies": the same whatever order they come in."""
    return _digest("ranking", prompt_hash, *sorted(response_hashes))


def card_hashes(seed: int, task_hash: str, response_hashes: Sequence[str]) -> list[str]:
    """The replies in card order (A first): the sorted hashes shuffled by the project seed and the task."""
    cards = sorted(response_hashes)
    random.Random(f"{seed}:{task_hash}:cards").shuffle(cards)
    return cards


def write_ranking_tasks(writer, groups, states, rank_range: tuple[int, int]) -> dict[str, int]:
    """Step 3b of `ChunkWriter.write`: a ranking task per prompt with K replies of this round, K in range.

    Prompts with two or more replies but K outside the range get none (counted in the summary's
    `ranking_prompts_out_of_range`). Returns {task hash: task id} of the chunk's ranking tasks.
    """
    low, high = rank_range
    prompt_ids = [states[g.content_hash].prompt_id for g in groups]
    present = dict(writer._select_in((TASK_T.c.content_hash, TASK_T.c.id), TASK_T.c.prompt_id, prompt_ids, TASK_T.c.kind == "ranking"))
    rows, now = [], utcnow()
    for group in groups:
        state = states[group.content_hash]
        hashes = sorted(h for h, (_, round_) in state.responses.items() if round_ == writer.options.round)
        if not low <= len(hashes) <= high:
            writer.summary.ranking_prompts_out_of_range += len(hashes) >= 2
            continue
        digest = ranking_task_hash(group.content_hash, hashes)
        if digest in present:
            writer.summary.tasks_skipped += 1
            continue
        present[digest] = None
        shuffle_key, _ = task_draw(writer.seed, digest)
        ids = [state.responses[h][0] for h in card_hashes(writer.seed, digest, hashes)]
        rows.append(
            dict(project_id=writer.project_id, kind="ranking", prompt_id=state.prompt_id, response_a_id=ids[0], response_b_id=None,
                 content_hash=digest, shuffle_key=shuffle_key, annotation_count=0, target_overlap=None, is_gold=False,
                 gold_answer=None, response_ids=ids, created_at=now)
        )  # fmt: skip
    if rows:
        writer.connection.execute(TASK_T.insert(), rows)
        present.update(writer._select_in((TASK_T.c.content_hash, TASK_T.c.id), TASK_T.c.content_hash, [r["content_hash"] for r in rows], TASK_T.c.project_id == writer.project_id))
    writer.summary.ranking_tasks_added += len(rows)
    return present
