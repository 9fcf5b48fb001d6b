"""How a simulated annotator ranks K replies: the same planted noise, position and length biases, spamming.

A careful annotator orders the cards by a Plackett–Luce draw (Gumbel-max, the ranking analogue
of the Bradley–Terry choice in `judge_pair`): utility u_i = g_i / T + L × clip(log2(chars_i /
median chars), −1, 1) + Gumbel noise, best first. Two neighbours whose utilities differ by less
than `tie_logits` are tied. With probability P (position bias) the annotator keeps the order the
cards were shown in. A spammer shuffles the cards at random. Draws come from `decision_rng`, as
for pairs, so an answer does not depend on the order tasks are walked.

Time: reading each reply plus one decision, `pairwise_seconds / 2` per reply read and as much
again to decide (log-normal, σ = 0.4) — a K = 2 ranking costs what a comparison does.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from rlhf.simulation.annotators import AnnotatorProfile, careful_time, spammer_time

TIE_LOGITS = 0.1
"""Neighbouring cards whose drawn utilities differ by less than this are tied."""


@dataclass(frozen=True)
class RankingAnswer:
    """One simulated ranking in display positions (0 = the first card shown), best first, and its time."""

    groups: tuple[tuple[int, ...], ...]
    time_spent_s: float


def rank_cards(profile: AnnotatorProfile, rng: random.Random, golds: Sequence[float], chars: Sequence[int], *, tie_logits: float = TIE_LOGITS) -> RankingAnswer:
    """Rank the cards shown in display order (`golds[p]`, `chars[p]` of the card at position p)."""
    k = len(golds)
    if profile.is_spammer:
        order = list(range(k))
        rng.shuffle(order)
        return RankingAnswer(tuple((p,) for p in order), spammer_time(rng, profile))
    seconds = careful_time(rng, profile.pairwise_seconds / 2 * (k + 1))
    if profile.position_bias > 0 and rng.random() < profile.position_bias:
        return RankingAnswer(tuple((p,) for p in range(k)), seconds)
    typical = statistics.median(max(c, 1) for c in chars)
    utilities = []
    for gold, length in zip(golds, chars):
        tilt = profile.length_bias * max(-1.0, min(1.0, math.log2(max(length, 1) / typical))) if profile.length_bias else 0.0
        scale = profile.noise if profile.noise > 0 else 1e-9
        gumbel = -math.log(-math.log(max(rng.random(), 1e-300))) if profile.noise > 0 else 0.0
        utilities.append(gold / scale + tilt + gumbel)
    order = sorted(range(k), key=lambda p: -utilities[p])
    groups: list[list[int]] = [[order[0]]]
    for previous, card in zip(order, order[1:]):
        if utilities[previous] - utilities[card] < tie_logits:
            groups[-1].append(card)
        else:
            groups.append([card])
    return RankingAnswer(tuple(tuple(sorted(g)) for g in groups), seconds)
