"""Task identity and seeded choices: task hashes, shuffle keys, which side is A, which pairs to compare.

Everything here is a pure function of content hashes and the project seed, so importing the
same data twice makes the same choices (and the unique task hash then makes the second import
add nothing).
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass


SHUFFLE_KEY_MASK = 0x7FFFFFFF
"""Shuffle keys are 31-bit: `task.shuffle_key` is a 32-bit signed INTEGER on PostgreSQL."""


def _digest(*parts: str) -> str:
    # Task identities are built from content hashes (hex) and a kind word, all ASCII: a plain
    # sha256 over the newline-joined parts is canonical and ~5x cheaper than canonical JSON,
    # which matters at a million tasks per import.
    return hashlib.sha256("\n".join(parts).encode("ascii")).hexdigest()


def rating_task_hash(prompt_hash: str, response_hash: str) -> str:
    """Identity of the task "rate this response" (unique within a project)."""
    return _digest("rating", prompt_hash, response_hash)


def write_task_hash(prompt_hash: str) -> str:
    """Identity of the task "write the assistant's reply to this prompt" (one per prompt)."""
    return _digest("write", prompt_hash)


def pairwise_task_hash(prompt_hash: str, response_hash_1: str, response_hash_2: str) -> str:
    """Identity of the task "compare these two responses": the same whichever order they come in."""
    low, high = (response_hash_1, response_hash_2) if response_hash_1 < response_hash_2 else (response_hash_2, response_hash_1)
    return _digest("pairwise", prompt_hash, low, high)


def task_draw(seed: int, task_hash: str) -> tuple[int, bool]:
    """(shuffle_key, swap) for a task: a 31-bit pseudo-random key and a coin, both from sha256(seed, hash).

    The key orders tasks with equal annotation counts; the coin decides, for a pair in
    canonical (sorted-hash) order, whether the second response becomes A.
    """
    digest = hashlib.sha256(b"%d:%s" % (seed, task_hash.encode("ascii"))).digest()
    return int.from_bytes(digest[:4], "big") & SHUFFLE_KEY_MASK, bool(digest[4] & 1)


def orient_pair(swap: bool, response_hash_1: str, response_hash_2: str) -> tuple[str, str]:
    """(A, B) for a pair: the canonical (sorted) order, swapped when the task's seeded coin says so."""
    low, high = sorted((response_hash_1, response_hash_2))
    return (high, low) if swap else (low, high)


def within_pairs(response_hashes: Sequence[str]) -> list[tuple[str, str]]:
    """Every unordered pair of distinct responses, each pair in sorted order, the list sorted."""
    unique = sorted(set(response_hashes))
    return list(itertools.combinations(unique, 2))


def cross_pairs(new_hashes: Sequence[str], old_hashes: Sequence[str]) -> list[tuple[str, str]]:
    """Every pair (new, old) of distinct responses, each pair in sorted order, the list sorted."""
    pairs = {tuple(sorted((n, o))) for n in set(new_hashes) for o in set(old_hashes) if n != o}
    return sorted(pairs)  # type: ignore[arg-type]


def pair_rng_key(seed: int, prompt_hash: str, round: int, pair_against_round: int | None) -> str:
    """The seed of `select_pairs` for one prompt's pairs in one import's pairing scheme."""
    return f"{seed}:{prompt_hash}:{round}:{pair_against_round}"


def select_pairs(
    candidates: Sequence[tuple[str, str]],
    budget: int,
    rng_key: str,
    *,
    preferred: Collection[tuple[str, str]] = (),
    usage: Counter | None = None,
) -> list[tuple[str, str]]:
    """Choose up to `budget` pairs from `candidates`, deterministically for a given `rng_key`.

    Pairs in `preferred` (compared in the source, e.g. chosen/rejected) come first; then the
    choice is greedy on balance: each step takes the pair whose responses appear least so far
    (sum, then max, of `usage`), breaking ties by a seeded shuffle. So with 4 responses and
    a budget of 2, every response is compared once. Pairs must be in sorted order.
    """
    if budget <= 0 or not candidates:
        return []
    order = list(candidates)
    random.Random(rng_key).shuffle(order)
    rank = {pair: index for index, pair in enumerate(order)}
    preferred_set = {tuple(sorted(p)) for p in preferred}
    counts: Counter = Counter(usage or {})
    remaining = set(order)
    chosen: list[tuple[str, str]] = []
    while remaining and len(chosen) < budget:
        best = min(
            remaining,
            key=lambda p: (p not in preferred_set, counts[p[0]] + counts[p[1]], max(counts[p[0]], counts[p[1]]), rank[p]),
        )
        remaining.discard(best)
        chosen.append(best)
        counts[best[0]] += 1
        counts[best[1]] += 1
    return chosen


@dataclass(frozen=True)
class TaskPlanning:
    """What planning a new prompt's tasks depends on: the project seed and the import's options."""

    seed: int
    round: int
    max_pairs_per_prompt: int
    make_rating_tasks: bool

    def plan(self, prompt_hash: str, response_hashes: Sequence[str]) -> tuple[list["PlannedTask"], int]:
        """`plan_new_prompt_tasks` with these settings."""
        return plan_new_prompt_tasks(
            prompt_hash, response_hashes, seed=self.seed, round=self.round,
            max_pairs_per_prompt=self.max_pairs_per_prompt, make_rating_tasks=self.make_rating_tasks,
        )  # fmt: skip


PlannedTask = tuple[str, str, int, str, "str | None"]
"""(kind, task hash, shuffle key, response A hash, response B hash or None for a rating task)."""


def plan_new_prompt_tasks(
    prompt_hash: str,
    response_hashes: Sequence[str],
    *,
    seed: int,
    round: int,
    max_pairs_per_prompt: int,
    make_rating_tasks: bool,
) -> tuple[list[PlannedTask], int]:
    """The tasks of a prompt new to the project whose responses are `response_hashes` (in
    source order, repeats allowed), all of round `round`, without labelled pairs; and how many
    rating tasks were repeats (skipped).

    One rating task per distinct response, then pairs within the round: every pair when they fit
    `max_pairs_per_prompt`, else a balanced seeded choice (`select_pairs`); each pair oriented by
    its seeded coin. The writer uses this for every new prompt, whether the plan was made in
    process or ahead by a reader process, so both make the same tasks.
    """
    plan: list[PlannedTask] = []
    repeats = 0
    if make_rating_tasks:
        seen: set[str] = set()
        for response_hash in response_hashes:
            if response_hash in seen:
                repeats += 1
                continue
            seen.add(response_hash)
            digest = rating_task_hash(prompt_hash, response_hash)
            plan.append(("rating", digest, task_draw(seed, digest)[0], response_hash, None))
    candidates = within_pairs(response_hashes)
    if max_pairs_per_prompt >= len(candidates):
        chosen = candidates
    else:
        chosen = select_pairs(candidates, max_pairs_per_prompt, pair_rng_key(seed, prompt_hash, round, None), usage=Counter())
    for pair in chosen:
        digest = pairwise_task_hash(prompt_hash, *pair)
        shuffle_key, swap = task_draw(seed, digest)
        plan.append(("pairwise", digest, shuffle_key, *orient_pair(swap, *pair)))
    return plan, repeats
