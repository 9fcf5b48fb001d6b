"""A simulated model judge with planted position and length bias, so the judge metrics can be checked against known truth.

It answers the same requests a model judge gets (`rlhf.judge.run.JudgeRequest`), in text
("Verdict: A"), through the same parser and storage as a real judge. For each order of a pair it
picks the first-shown response with probability

    P(first) = position_bias + (1 − position_bias) · σ((g_first − g_second) / noise + length_bias · clip(log2(len_first / len_second), −1, 1))

(the simulated annotators' model, `rlhf.simulation.annotators.probability_left`, with "left" read
as "shown first"), gold g from `rlhf.simulation.gold`. Its ratings are the simulated annotators'
(`rate_response`). `unparsable_rate` of its replies are prose that no parser reads, to exercise the
`unparsed` path. A ranking group is ordered by gold plus Gumbel noise of scale `noise` (a
Plackett–Luce draw), the card shown first moved to the top with probability `position_bias`; it
never writes a tie. Every draw is seeded by (seed, task, order): the same judge gives the same replies.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from typing import Any, Sequence

from rlhf.judge.client import ChatReply
from rlhf.simulation.annotators import AnnotatorProfile, probability_left, rate_response
from rlhf.simulation.gold import gold_components, gold_score

UNPARSABLE_REPLY = "Both responses have merits and I would rather not pick one."


@dataclass(frozen=True)
class SimulatedJudge:
    """The planted truth of one simulated judge (see the module docstring)."""

    position_bias: float = 0.0
    """Probability of picking the response shown first regardless of content."""
    length_bias: float = 0.0
    """Logits per doubling of length toward the longer response."""
    noise: float = 0.1
    """Bradley–Terry temperature on the gold scale (like the simulated annotators')."""
    rating_noise: float = 0.5
    """Rating latent noise, as a multiple of `noise`."""
    unparsable_rate: float = 0.0
    """Share of replies that do not parse."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("position_bias", "unparsable_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise}")

    @property
    def profile(self) -> AnnotatorProfile:
        return AnnotatorProfile(
            index=0, username="simulated-judge", is_spammer=False, noise=self.noise, position_bias=self.position_bias,
            length_bias=self.length_bias, rating_noise=self.rating_noise * self.noise, pairwise_seconds=0.0, rating_seconds=0.0,
        )

    def identity(self) -> dict[str, Any]:
        return {"backend": "simulated", "model": "simulated-judge", **asdict(self)}

    def complete_many(self, requests: Sequence[Any], *, max_tokens: int = 0, reporter=None) -> list[ChatReply]:
        return [ChatReply(text=self.reply(r)) for r in requests]

    def rank(self, request: Any, rng: random.Random) -> str:
        """'Ranking: C > A > B' over the letters shown: a Plackett–Luce draw on gold (Gumbel noise), the first shown put on top with probability position_bias."""
        import math

        from rlhf.ranking import LETTERS

        keys = []
        for text in request.replies:
            gumbel = -math.log(-math.log(rng.random() or 1e-12) or 1e-12)
            keys.append(gold_score(request.prompt, text, request.category) / max(self.noise, 1e-9) + gumbel)
        order = sorted(range(len(keys)), key=lambda i: -keys[i])
        if rng.random() < self.position_bias:
            order = [0] + [i for i in order if i != 0]
        return "Ranking: " + " > ".join(LETTERS[i] for i in order)

    def reply(self, request: Any) -> str:
        rng = random.Random(f"simulated-judge:{self.seed}:{request.task_id}:{request.order}")
        if rng.random() < self.unparsable_rate:
            return UNPARSABLE_REPLY
        if request.replies:
            return self.rank(request, rng)
        if request.order == "rating":
            rubric = [(d["name"], int(d["min"]), int(d["max"])) for d in request.rubric]
            scores = rate_response(self.profile, rng, gold_components(request.prompt, request.first, request.category), rubric).scores
            return json.dumps(scores)
        p_first = probability_left(
            self.profile, gold_score(request.prompt, request.first, request.category), gold_score(request.prompt, request.second, request.category),
            len(request.first), len(request.second),
        )
        return "Verdict: A" if rng.random() < p_first else "Verdict: B"
