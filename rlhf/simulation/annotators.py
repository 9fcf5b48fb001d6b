"""Simulated annotators: their planted profiles and how each one judges a pair or rates a response.

Every annotator knows the gold score (`rlhf.simulation.gold`) and departs from it in planted,
recorded ways:

- noise: a Bradley–Terry temperature T on the gold scale. Shown responses A and B, a careful
  annotator picks A with probability σ((g_A − g_B) / T + tilt) — T = 0.1 makes a gold gap of
  0.2 a 88% preference. T varies per annotator around the configured level
  (T_i = noise × exp(N(0, noise_spread))).
- position bias P: with probability P the annotator picks the response shown on the left
  whatever it says; otherwise it judges as above.
- length bias L: a tilt of L logits per doubling of length toward the longer response,
  tilt = L × clip(log2(chars_A / chars_B), −1, 1) — characters, as `rlhf.quality.length_bias` counts.
- spammers answer uniformly at random (A or B, strength 1 or 2, any rubric value) in about a
  second per task (`spammer_seconds`).

Strength: 2 ("much better") when the annotator's own probability for the side it chose is at
least `strong_preference`, else 1. No ties: every judgment picks a side.

Ratings: per rubric dimension a latent quality in [0, 1] (`dimension_latent`) plus
N(0, rating_noise × T_i), clipped to [0, 1] and mapped linearly onto the scale, rounded:
value = min + round(latent × (max − min)). helpfulness reads the gold score; honesty reads
0.5 finished + 0.3 no_repetition + 0.2 on_topic (a cut-off or looping answer misleads; facts
are not checked); harmlessness reads 0.2 + 0.8 safety; any other dimension reads the gold score.

Randomness: every draw comes from `decision_rng(seed, annotator, task, kind)`, a generator
seeded by those four values only, so an annotator's answer on a task does not depend on the
order in which the simulation walks the tasks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Literal, Optional, Union

from rlhf.simulation.gold import GoldComponents

SimulationKind = Literal["rating", "pairwise", "both", "ranking"]


@dataclass
class SimulationConfig:
    """How many simulated annotators, how they err, and how much they label."""

    annotators: int = 10
    """Simulated annotators taking part (accounts `<username_prefix>-s<seed>-<nnn>`, created when missing)."""
    spammers: int = 0
    """How many of them answer uniformly at random and fast (chosen by the seed)."""
    noise: float = 0.1
    """Bradley–Terry temperature on the gold scale (0–1) of a typical careful annotator; 0 = always follows gold."""
    noise_spread: float = 0.25
    """Per-annotator spread of the temperature: T_i = noise × exp(N(0, noise_spread))."""
    position_bias: float = 0.0
    """Probability that a position-biased annotator picks the left response regardless of content."""
    position_bias_share: float = 0.25
    """Share of the non-spammers given the position bias (when position_bias > 0; at least one)."""
    length_bias: float = 0.0
    """Tilt toward the longer response, in logits per doubling of length, of length-biased annotators."""
    length_bias_share: float = 0.25
    """Share of the non-spammers given the length bias (when length_bias > 0; at least one); disjoint from the position-biased when possible."""
    rating_noise: float = 1.0
    """Rating noise as a multiple of the annotator's temperature: the latent quality gets N(0, rating_noise × T_i)."""
    strong_preference: float = 0.9
    """An annotator whose probability for its chosen side is at least this answers strength 2 ("much better")."""
    pairwise_seconds: float = 12.0
    """Median time a careful annotator spends on a comparison (log-normal, σ = 0.4)."""
    rating_seconds: float = 20.0
    """Median time a careful annotator spends on a rating (log-normal, σ = 0.4)."""
    spammer_seconds: float = 1.0
    """Mean time a spammer spends on any task (uniform on [0.4, 1.6] × this)."""
    kind: SimulationKind = "both"
    """Which tasks to label: rating, pairwise or both (interleaved), or ranking (`rlhf.simulation.ranking`)."""
    max_annotations: Optional[int] = None
    """Stop after this many annotations in this run (None: until no annotator gets another task)."""
    seed: int = 0
    """Seeds who is a spammer or biased, each annotator's noise, and every answer."""
    username_prefix: str = "sim"
    """Accounts are named `<prefix>-s<seed>-<nnn>`; the same config reuses the same accounts and profiles."""

    def validate(self) -> "SimulationConfig":
        """Raise ValueError naming the field for settings that cannot work; returns self."""
        if self.annotators < 1:
            raise ValueError(f"annotators must be at least 1, got {self.annotators}")
        if not 0 <= self.spammers <= self.annotators:
            raise ValueError(f"spammers must be between 0 and annotators ({self.annotators}), got {self.spammers}")
        for name in ("noise", "noise_spread", "length_bias", "rating_noise", "pairwise_seconds", "rating_seconds", "spammer_seconds"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number ≥ 0, got {value}")
        for name in ("position_bias", "position_bias_share", "length_bias_share", "strong_preference"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {value}")
        if self.kind not in ("rating", "pairwise", "both", "ranking"):
            raise ValueError(f"kind must be rating, pairwise, both or ranking, got {self.kind!r}")
        if self.max_annotations is not None and self.max_annotations < 0:
            raise ValueError(f"max_annotations must be ≥ 0, got {self.max_annotations}")
        if not self.username_prefix or not self.username_prefix[0].isalnum():
            raise ValueError(f"username_prefix must start with a letter or digit, got {self.username_prefix!r}")
        return self

    @property
    def kinds(self) -> tuple[str, ...]:
        return ("rating", "pairwise") if self.kind == "both" else (self.kind,)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class AnnotatorProfile:
    """One simulated annotator's planted truth."""

    index: int
    username: str
    is_spammer: bool
    noise: float
    """Bradley–Terry temperature T_i (gold units); unused for spammers."""
    position_bias: float
    """Probability of picking the left response regardless (0 = none)."""
    length_bias: float
    """Logits per doubling of length toward the longer response (0 = none)."""
    rating_noise: float
    """Standard deviation of the rating latent's noise (gold units)."""
    pairwise_seconds: float
    """Median seconds per comparison (a spammer's mean seconds per task)."""
    rating_seconds: float
    """Median seconds per rating (a spammer's mean seconds per task)."""

    def as_dict(self) -> dict:
        return asdict(self)


def username_for(config: SimulationConfig, index: int) -> str:
    return f"{config.username_prefix}-s{config.seed}-{index:03d}"


def plant_annotators(config: SimulationConfig) -> list[AnnotatorProfile]:
    """The profiles the config plants: a pure function of the config (same config, same profiles).

    Spammers are a seeded sample of `spammers` indices; among the others, a seeded
    `position_bias_share` (at least one when position_bias > 0) get the position bias and a
    seeded `length_bias_share` the length bias, from different annotators when there are enough.
    """
    config.validate()
    rng = random.Random(f"plant:{config.seed}:{config.annotators}:{config.spammers}")
    indices = list(range(config.annotators))
    spammers = set(rng.sample(indices, config.spammers))
    careful = [i for i in indices if i not in spammers]

    def count_for(share: float, active: bool) -> int:
        return min(len(careful), max(1, round(share * len(careful)))) if active and careful else 0

    position = set(rng.sample(careful, count_for(config.position_bias_share, config.position_bias > 0)))
    rest = [i for i in careful if i not in position]
    n_length = count_for(config.length_bias_share, config.length_bias > 0)
    length = set(rng.sample(rest if len(rest) >= n_length else careful, n_length))
    profiles = []
    for i in indices:
        noise = config.noise * math.exp(rng.gauss(0.0, config.noise_spread))
        profiles.append(
            AnnotatorProfile(
                index=i,
                username=username_for(config, i),
                is_spammer=i in spammers,
                noise=noise,
                position_bias=config.position_bias if i in position else 0.0,
                length_bias=config.length_bias if i in length else 0.0,
                rating_noise=config.rating_noise * noise,
                pairwise_seconds=config.spammer_seconds if i in spammers else config.pairwise_seconds,
                rating_seconds=config.spammer_seconds if i in spammers else config.rating_seconds,
            )
        )
    return profiles


# --------------------------------------------------------------------------- decisions (pure)


def decision_rng(seed: int, annotator: int, task_id: int, kind: str) -> random.Random:
    """The generator of one annotator's draws on one task (string-seeded: stable across processes)."""
    return random.Random(f"decide:{seed}:{annotator}:{task_id}:{kind}")


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def length_tilt(length_bias: float, chars_a: int, chars_b: int) -> float:
    """L × clip(log2(chars_a / chars_b), −1, 1): logits toward A from the length bias."""
    if length_bias == 0 or chars_a <= 0 or chars_b <= 0:
        return 0.0
    return length_bias * max(-1.0, min(1.0, math.log2(chars_a / chars_b)))


def content_probability(profile: AnnotatorProfile, gold_a: float, gold_b: float, chars_a: int, chars_b: int) -> float:
    """P(the annotator prefers A | it judges on content): σ((g_A − g_B) / T + length tilt).

    T = 0 follows gold exactly (ties in gold: the length tilt, else a coin).
    """
    tilt = length_tilt(profile.length_bias, chars_a, chars_b)
    if profile.noise <= 0:
        logit = math.copysign(math.inf, gold_a - gold_b) if gold_a != gold_b else tilt
        return 0.5 if logit == 0 else (1.0 if logit > 0 else 0.0)
    return sigmoid((gold_a - gold_b) / profile.noise + tilt)


def probability_left(profile: AnnotatorProfile, gold_left: float, gold_right: float, chars_left: int, chars_right: int) -> float:
    """P(the annotator picks the response shown on the left), position bias and spamming included."""
    if profile.is_spammer:
        return 0.5
    content = content_probability(profile, gold_left, gold_right, chars_left, chars_right)
    return profile.position_bias + (1.0 - profile.position_bias) * content


@dataclass(frozen=True)
class PairwiseAnswer:
    """One simulated judgment, in display terms (left / right) and with the time it took."""

    picks_left: bool
    strength: int
    time_spent_s: float


def judge_pair(
    profile: AnnotatorProfile, rng: random.Random, *, gold_left: float, gold_right: float, chars_left: int, chars_right: int, strong_preference: float
) -> PairwiseAnswer:
    """Draw one annotator's judgment of a displayed pair (see the module docstring)."""
    if profile.is_spammer:
        return PairwiseAnswer(rng.random() < 0.5, rng.choice((1, 2)), spammer_time(rng, profile))
    p_left = probability_left(profile, gold_left, gold_right, chars_left, chars_right)
    picks_left = rng.random() < p_left
    confidence = p_left if picks_left else 1.0 - p_left
    strength = 2 if confidence >= strong_preference else 1
    return PairwiseAnswer(picks_left, strength, careful_time(rng, profile.pairwise_seconds))


def dimension_latent(dimension: str, components: GoldComponents) -> float:
    """The quality in [0, 1] a rubric dimension reads (see the module docstring)."""
    name = dimension.strip().lower()
    if name == "honesty":
        return 0.5 * components.finished + 0.3 * components.no_repetition + 0.2 * components.on_topic
    if name == "harmlessness":
        return 0.2 + 0.8 * components.safety
    return components.score


def scale_value(latent: float, low: int, high: int) -> int:
    """A latent in [0, 1] (clipped) mapped linearly onto the integer scale low..high."""
    latent = min(1.0, max(0.0, latent))
    return low + int(round(latent * (high - low)))


@dataclass(frozen=True)
class RatingAnswer:
    scores: dict[str, int]
    time_spent_s: float


def rate_response(profile: AnnotatorProfile, rng: random.Random, components: GoldComponents, rubric: Sequence[tuple[str, int, int]]) -> RatingAnswer:
    """Draw one annotator's rubric scores for a response; `rubric` is [(dimension, min, max)]."""
    if profile.is_spammer:
        return RatingAnswer({name: rng.randint(low, high) for name, low, high in rubric}, spammer_time(rng, profile))
    scores = {name: scale_value(dimension_latent(name, components) + rng.gauss(0.0, profile.rating_noise), low, high) for name, low, high in rubric}
    return RatingAnswer(scores, careful_time(rng, profile.rating_seconds))


def careful_time(rng: random.Random, median_s: float) -> float:
    """Seconds on a task: log-normal around `median_s` (σ = 0.4), rounded to 0.1 s."""
    return round(median_s * math.exp(rng.gauss(0.0, 0.4)), 1)


def spammer_time(rng: random.Random, profile: AnnotatorProfile) -> float:
    """Seconds a spammer spends: uniform on [0.4, 1.6] × its mean time (its `pairwise_seconds`)."""
    return round(rng.uniform(0.4, 1.6) * profile.pairwise_seconds, 2)


# --------------------------------------------------------------------------- the ceiling


@dataclass(frozen=True)
class GoldPair:
    """A compared pair as the ceiling sees it: both gold scores and both lengths (characters)."""

    gold_a: float
    gold_b: float
    chars_a: int = 0
    chars_b: int = 0


def vote_accuracy(profile: AnnotatorProfile, pair: GoldPair) -> float:
    """P(one vote by `profile` agrees with the gold preference of `pair`), sides shown at random.

    Position bias picks the gold winner half of the time (it is on the left half of the time);
    otherwise the content probability, length tilt included. Undefined (NaN) for a gold tie.
    """
    if pair.gold_a == pair.gold_b:
        return math.nan
    if profile.is_spammer:
        return 0.5
    p_a = content_probability(profile, pair.gold_a, pair.gold_b, pair.chars_a, pair.chars_b)
    content = p_a if pair.gold_a > pair.gold_b else 1.0 - p_a
    return 0.5 * profile.position_bias + (1.0 - profile.position_bias) * content


def majority_accuracy(q: float, votes: int) -> float:
    """P(the majority of `votes` independent votes, each right with probability q, is right); a split counts 1/2."""
    total = 0.0
    for right in range(votes + 1):
        p = math.comb(votes, right) * q**right * (1.0 - q) ** (votes - right)
        if 2 * right > votes:
            total += p
        elif 2 * right == votes:
            total += 0.5 * p
    return total


def best_achievable_accuracy(pairs: Sequence[GoldPair], noise: Union[float, Sequence[AnnotatorProfile]], *, votes: int = 3) -> float:
    """The expected agreement of a noiseless gold judge with the majority label of noisy annotators.

    Definition: over the pairs whose gold scores differ, the mean probability that the majority
    of `votes` votes — each cast by a member of the annotator pool drawn at random, sides shown
    at random — prefers the same response as the gold score. `noise` is the pool: a list of
    profiles (spammers, biases and per-annotator temperatures included), or a temperature T for
    a pool of careful, unbiased annotators. A split vote (even `votes`) counts one half.

    Why it is the ceiling: a reward model is trained on, and its held-out accuracy measured
    against, such majority labels. Even a model that knew the gold score exactly would agree
    with the held-out labels only this often; and a model that reproduces the labels exactly
    is right against gold only this often. A model can exceed it against gold only by
    averaging the label noise out across many similar pairs. Pairs with equal gold scores are
    left out (gold has no preference there); NaN when none are left.
    """
    if votes < 1:
        raise ValueError(f"votes must be at least 1, got {votes}")
    if isinstance(noise, (int, float)):
        pool = [AnnotatorProfile(0, "", False, float(noise), 0.0, 0.0, 0.0, 0.0, 0.0)]
    else:
        pool = list(noise)
        if not pool:
            raise ValueError("the annotator pool is empty")
    accuracies = []
    for pair in pairs:
        if pair.gold_a == pair.gold_b:
            continue
        q = sum(vote_accuracy(profile, pair) for profile in pool) / len(pool)
        accuracies.append(majority_accuracy(q, votes))
    return sum(accuracies) / len(accuracies) if accuracies else math.nan


def planted_summary(profiles: Sequence[AnnotatorProfile]) -> dict[str, list[str]]:
    """Usernames by planted trait: spammers, position_biased, length_biased, careful (none of those)."""
    out: dict[str, list[str]] = {"spammers": [], "position_biased": [], "length_biased": [], "careful": []}
    for p in profiles:
        if p.is_spammer:
            out["spammers"].append(p.username)
        if p.position_bias > 0:
            out["position_biased"].append(p.username)
        if p.length_bias > 0:
            out["length_biased"].append(p.username)
        if not (p.is_spammer or p.position_bias > 0 or p.length_bias > 0):
            out["careful"].append(p.username)
    return out


def profiles_from_dicts(rows: Sequence[Mapping]) -> list[AnnotatorProfile]:
    """Profiles back from `AnnotatorProfile.as_dict()` rows (a saved planted-truth file)."""
    names = set(AnnotatorProfile.__dataclass_fields__)
    return [AnnotatorProfile(**{k: v for k, v in row.items() if k in names}) for row in rows]


__all__ = [
    "AnnotatorProfile",
    "GoldPair",
    "PairwiseAnswer",
    "RatingAnswer",
    "SimulationConfig",
    "best_achievable_accuracy",
    "content_probability",
    "decision_rng",
    "dimension_latent",
    "judge_pair",
    "length_tilt",
    "majority_accuracy",
    "plant_annotators",
    "planted_summary",
    "probability_left",
    "profiles_from_dicts",
    "rate_response",
    "scale_value",
    "username_for",
    "vote_accuracy",
]
