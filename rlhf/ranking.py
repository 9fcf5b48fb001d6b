"""Rankings of K cards with ties: parsing, validation, display order, implied pairs, Kendall's tau.

A ranking is stored as groups best first, each a list of card indices (0 = card A of the task),
a tie being a group of several: [[2], [0, 3], [1]] is "C > A = D > B". Every function here is
pure; the engine (`rlhf.annotate.submit_ranking`), the page, the importer and the statistics
share them so that a ranking means the same thing everywhere.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterable, Sequence
from typing import Any, Optional

from rlhf.schema import RANK_K_MAX, RANK_K_MIN

Groups = tuple[tuple[int, ...], ...]
"""Card indices grouped best first; a group of several is a tie."""

LETTERS = "ABCDEFGHI"
assert len(LETTERS) == RANK_K_MAX


class RankingError(ValueError):
    """A ranking that does not order exactly the task's cards; `field` names the input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def letter(index: int) -> str:
    """Card label: 0 → "A"."""
    return LETTERS[index]


def check_k(k: Any, k_min: int = RANK_K_MIN, k_max: int = RANK_K_MAX, field: str = "k") -> int:
    """K as an integer within [k_min, k_max], else RankingError."""
    if not isinstance(k, int) or isinstance(k, bool) or not k_min <= k <= k_max:
        raise RankingError(field, f"a ranking task shows {k_min} to {k_max} replies, got {k!r}")
    return k


def _card_index(token: Any, k: int, field: str) -> int:
    if isinstance(token, str) and len(token.strip()) == 1 and token.strip().upper() in LETTERS:
        index = LETTERS.index(token.strip().upper())
    elif isinstance(token, int) and not isinstance(token, bool):
        index = token
    else:
        raise RankingError(field, f"{token!r} is not a card (use letters {LETTERS[0]}-{LETTERS[k - 1]})")
    if not 0 <= index < k:
        raise RankingError(field, f"card {token!r} is not on this task (cards {LETTERS[0]}-{LETTERS[k - 1]})")
    return index


def parse_ranking(value: Any, k: int, field: str = "ranking") -> Groups:
    """Groups from text ("C > A = D > B", "C A D B", "CADB", "C A=D B") or a list of groups / cards.

    Every card of the task exactly once: a missing card, a repeated one or a letter beyond the
    K cards raises RankingError naming `field`.
    """
    if isinstance(value, str):
        text = value.strip().upper()
        if not text:
            raise RankingError(field, "is empty: name every card, best first")
        if re.search(r"[^A-Z=>\s,]", text):
            bad = re.search(r"[^A-Z=>\s,]", text).group(0)  # type: ignore[union-attr]
            raise RankingError(field, f"{bad!r} is not a card letter, '=', '>' or a space")
        # Tokens: letters, with "=" gluing a letter to the one before it.
        tokens = re.findall(r"[A-Z]|=", text)
        raw: list[list[Any]] = []
        tie_next = False
        for token in tokens:
            if token == "=":
                if not raw:
                    raise RankingError(field, "'=' ties a card with the one before it; nothing comes before")
                tie_next = True
                continue
            if tie_next:
                raw[-1].append(token)
            else:
                raw.append([token])
            tie_next = False
        if tie_next:
            raise RankingError(field, "ends with '=': name the card tied with the last one")
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, dict)):
        raw = [list(g) if isinstance(g, (list, tuple)) else [g] for g in value]
    else:
        raise RankingError(field, "must be text like 'C > A = D > B' or a list of groups of cards")
    seen: dict[int, int] = {}
    groups: list[tuple[int, ...]] = []
    for group in raw:
        if not group:
            raise RankingError(field, "has an empty group")
        indices = []
        for token in group:
            index = _card_index(token, k, field)
            if index in seen:
                raise RankingError(field, f"names card {letter(index)} twice")
            seen[index] = len(groups)
            indices.append(index)
        groups.append(tuple(sorted(indices)))
    missing = [letter(i) for i in range(k) if i not in seen]
    if missing:
        raise RankingError(field, f"leaves out card{'s' if len(missing) > 1 else ''} {', '.join(missing)}: order all {k} cards")
    return tuple(groups)


def format_ranking(groups: Sequence[Sequence[int]], labels: Optional[Sequence[str]] = None) -> str:
    """The sentence form: [[2], [0, 3], [1]] → "C > A = D > B" (labels default to letters)."""
    name = (lambda i: labels[i]) if labels is not None else letter
    return " > ".join(" = ".join(name(i) for i in group) for group in groups)


def ranks(groups: Sequence[Sequence[int]], k: int) -> list[float]:
    """Mid-ranks per card (1 = best; tied cards share the mean of the places they cover)."""
    out = [0.0] * k
    place = 1
    for group in groups:
        mid = place + (len(group) - 1) / 2
        for card in group:
            out[card] = mid
        place += len(group)
    return out


def implied_pairs(groups: Sequence[Sequence[int]]) -> list[tuple[int, int, int]]:
    """Every unordered pair (i < j) with its outcome: 1 when i is better, -1 when j is, 0 for a tie."""
    level = {card: g for g, group in enumerate(groups) for card in group}
    cards = sorted(level)
    out = []
    for x in range(len(cards)):
        for y in range(x + 1, len(cards)):
            i, j = cards[x], cards[y]
            out.append((i, j, (level[i] < level[j]) - (level[i] > level[j])))
    return out


def kendall_tau(groups_x: Sequence[Sequence[int]], groups_y: Sequence[Sequence[int]]) -> Optional[float]:
    """Kendall's tau-b between two rankings of the same cards (ties allowed); None if either is all one tie.

    tau_b = (concordant - discordant) / sqrt((n0 - n1) (n0 - n2)), n0 = C(K, 2), n1 / n2 the
    pairs tied in x / y (Kendall 1945). Used to score a gold ranking task.
    """
    px = {(i, j): s for i, j, s in implied_pairs(groups_x)}
    py = {(i, j): s for i, j, s in implied_pairs(groups_y)}
    if set(px) != set(py):
        raise RankingError("ranking", "the two rankings do not order the same cards")
    n0 = len(px)
    tied_x = sum(1 for s in px.values() if s == 0)
    tied_y = sum(1 for s in py.values() if s == 0)
    denominator = ((n0 - tied_x) * (n0 - tied_y)) ** 0.5
    if denominator == 0:
        return None
    score = sum(px[p] * py[p] for p in px)
    return score / denominator


def card_order_for(task_id: int, user_id: int, k: int) -> tuple[int, ...]:
    """The card shown at each position for this (task, user): seeded, stable across tabs, independent across annotators.

    Shuffling per annotator spreads position bias over a task's cards, so it averages out and
    can be measured (as `left_side_for` does for pairs).
    """
    seed = int.from_bytes(hashlib.blake2b(f"rank:{task_id}:{user_id}".encode(), digest_size=8).digest(), "big")
    order = list(range(k))
    random.Random(seed).shuffle(order)
    return tuple(order)


def to_shown(groups: Groups, shown_order: Sequence[int]) -> Groups:
    """Task-terms groups → groups of display positions (card at position p is shown_order[p])."""
    position = {card: p for p, card in enumerate(shown_order)}
    return tuple(tuple(sorted(position[c] for c in group)) for group in groups)


def from_shown(groups: Groups, shown_order: Sequence[int]) -> Groups:
    """Groups of display positions → task-terms groups."""
    return tuple(tuple(sorted(shown_order[p] for p in group)) for group in groups)


def ranking_agreement(rankings: Sequence[Sequence[Sequence[int]]]) -> Optional[float]:
    """Share of (annotator pair, card pair) cells on which two rankings imply the same outcome (>, <, =).

    The rankings' analogue of `rlhf.assign.pairwise_agreement`: None with fewer than two.
    """
    outcomes = [[s for _, _, s in implied_pairs(groups)] for groups in rankings]
    if len(outcomes) < 2:
        return None
    same = total = 0
    for x in range(len(outcomes)):
        for y in range(x + 1, len(outcomes)):
            same += sum(a == b for a, b in zip(outcomes[x], outcomes[y]))
            total += len(outcomes[x])
    return same / total if total else None
