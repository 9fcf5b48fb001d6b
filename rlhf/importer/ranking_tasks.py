"""Ranking tasks from an import: one task per prompt whose replies number within the project's K range.

The task's identity is its prompt and the set of its replies (sorted hashes), so a re-import adds
nothing; the card order (which reply is card A) is a seeded shuffle of the same hashes, as the
side of a pair is (`rlhf.importer.pairing.task_draw`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from rlhf.importer.errors import ImportFormatError
from rlhf.importer.pairing import _digest, task_draw
from rlhf.schema import Ranking, Task, utcnow

TASK_T = Task.__table__  # type: ignore[attr-defined]
RANKING_T = Ranking.__table__  # type: ignore[attr-defined]


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
    if rank_range is None:
        _refuse_unwanted_rankings(writer, groups)
        return {}
    low, high = rank_range
    labels: list[tuple[str, list[str], object]] = []  # (task hash, card hashes, RankedIn)
    prompt_ids = [states[g.content_hash].prompt_id for g in groups]
    present = dict(writer._select_in((TASK_T.c.content_hash, TASK_T.c.id), TASK_T.c.prompt_id, prompt_ids, TASK_T.c.kind == "ranking"))
    rows, now = [], utcnow()
    for group in groups:
        state = states[group.content_hash]
        hashes = sorted(h for h, (_, round_) in state.responses.items() if round_ == writer.options.round)
        ranked = group.rankings if writer.label_user_id is not None else []
        for item in ranked:
            _check_ranked(item, hashes, low, high)
        if not low <= len(hashes) <= high:
            writer.summary.ranking_prompts_out_of_range += len(hashes) >= 2
            continue
        digest = ranking_task_hash(group.content_hash, hashes)
        labels.extend((digest, card_hashes(writer.seed, digest, hashes), item) for item in ranked)
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
    if labels:
        _write_ranking_labels(writer, labels, present, now)
    return present


def _refuse_unwanted_rankings(writer, groups) -> None:
    """Ranked records imported as labels into a project that does not collect rankings: nothing to store them on."""
    if writer.label_user_id is None:
        return
    for group in groups:
        for item in group.rankings:
            raise ImportFormatError(
                "this project does not collect rankings (set its rank_k_min and rank_k_max first)", path=item.path, line=item.line, field="ranking"
            )


def _check_ranked(item, hashes: list[str], low: int, high: int) -> None:
    """The ranking must order exactly the prompt's replies of this round, K within the project's range."""
    ranked = sorted(h for group in item.groups for h in group)
    if ranked != hashes:
        raise ImportFormatError(
            f"the ranking orders {len(ranked)} replies but the prompt has {len(hashes)} of this round and they differ "
            "(a reply named twice, or replies imported earlier for the same prompt): its replies must be the ranking task's",
            path=item.path, line=item.line, field="ranking",
        )  # fmt: skip
    if not low <= len(hashes) <= high:
        raise ImportFormatError(f"{len(hashes)} replies; this project ranks {low} to {high}", path=item.path, line=item.line, field="ranking")


def _write_ranking_labels(writer, labels, present: dict, now) -> None:
    """One Ranking per ranked record from the external source user (the first for a task wins)."""
    task_ids = {digest: present[digest] for digest, _, _ in labels}
    done = {
        row[0]
        for row in writer._select_in((RANKING_T.c.task_id,), RANKING_T.c.task_id, list(task_ids.values()), RANKING_T.c.user_id == writer.label_user_id)
    }
    rows = []
    for digest, cards, item in labels:
        task_id = task_ids[digest]
        if task_id in done:
            writer.summary.labels_skipped += 1
            continue
        done.add(task_id)
        card_of = {h: i for i, h in enumerate(cards)}
        groups = [sorted(card_of[h] for h in group) for group in item.groups]
        rows.append(dict(task_id=task_id, user_id=writer.label_user_id, groups=groups, all_bad=False, shown_order=list(range(len(cards))),
                         comment="", time_spent_s=None, revision=1, created_at=now, updated_at=now))  # fmt: skip
    if rows:
        writer.connection.execute(RANKING_T.insert(), rows)
    writer.summary.labels_added += len(rows)
