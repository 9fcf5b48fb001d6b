"""Simulated writers: demonstrations that improve a sampled reply in the ways the gold score rewards, and planted sloppy ones.

A careful writer (`careful_reply`) turns the reply it is shown (or nothing) into one the gold
function (`rlhf.simulation.gold`) scores higher, fixing what each component penalises:
- safety: an unsafe request gets a short refusal; a refusal of a benign request is dropped;
- no_repetition: sentences that go in circles or repeat an earlier one (a word trigram of it) are cut;
- length: kept within LENGTH_BAND, cut at a sentence end (never mid-sentence);
- on_topic: when the prompt's key terms are missing, a sentence naming them is added;
- finished: the reply ends on a full stop (a trailing fragment is cut, or closed when it is all there is).
A sloppy writer (`sloppy_reply`) leaves the shown reply as it was but for one touched word:
the edits do little, which `rlhf.writer_stats` flags.

`simulate_writers` runs them through the engine (`next_task(kind="write")`,
`submit_demonstration`) like the Write page; every draw is seeded by (seed, writer, task), so a
writer's reply does not depend on the order tasks come in.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from sqlalchemy.engine import Engine

from rlhf.assign import next_task
from rlhf.demonstrations import submit_demonstration
from rlhf.projects import get_project
from rlhf.simulation.annotators import AnnotatorProfile, careful_time
from rlhf.simulation.gold import LENGTH_BAND, finished_component, gold_score, is_unsafe_request, key_terms, refuses, words
from rlhf.simulation.runner import _prompt_of, ensure_accounts, prompt_categories

REFUSAL = "I'm sorry, but I can't help with that. If you are worried about something, a trusted person or a professional can help."
_SENTENCE = re.compile(r"[^.!?]+[.!?]+[\"')\]]*\s*|[^.!?]+$")


def sentences(text: str) -> list[str]:
    """The text split after each . ! ? (a trailing fragment without one is the last item)."""
    return [s.strip() for s in _SENTENCE.findall(text.strip()) if s.strip()]


def careful_reply(prompt: Any, original: Optional[str], category: Optional[str]) -> str:
    """A reply the gold score rates well, built from `original` (or from the prompt alone)."""
    if is_unsafe_request(prompt, category):
        return REFUSAL
    kept: list[str] = []
    seen: set[tuple[str, ...]] = set()
    for sentence in sentences(original or ""):
        tokens = words(sentence)
        grams = list(zip(tokens, tokens[1:], tokens[2:]))
        looping = len(grams) != len(set(grams))
        if refuses(sentence) or looping or set(grams) & seen or sentence in kept:
            continue  # a refusal of a benign request, a sentence going in circles, or a repeat
        seen |= set(grams)
        kept.append(sentence)
    if kept and not finished_component(kept[-1]):
        if len(kept) > 1:
            kept.pop()  # a sentence cut off by the token limit: drop it
        else:
            kept[-1] = kept[-1].rstrip(" ,;:-") + "."
    terms = key_terms(prompt)
    stems = {w[:6] for w in words(" ".join(kept)) if len(w) >= 4}
    missing = [t for t in terms[:3] if t[:6] not in stems]
    if missing:
        kept.insert(0, f"Here is what matters about {', '.join(missing)}.")
    low, high = LENGTH_BAND
    reply: list[str] = []
    for sentence in kept:
        if reply and len(" ".join(reply + [sentence]).split()) > high:
            break
        reply.append(sentence)
    text = " ".join(reply)
    if len(text.split()) > high:  # one very long sentence: cut it to the band and close it
        text = " ".join(text.split()[: high - 1]).rstrip(" ,;:-") + "."
    if len(text.split()) < low:
        text = (text + " " if text else "") + "I hope this short answer helps you."
    return text


def sloppy_reply(original: Optional[str], rng: random.Random) -> str:
    """The shown reply with one word's case flipped (or a stock line when there is none): a cut-off
    reply stays cut off, a loop stays a loop."""
    if not original or not original.strip():
        return "Okay."
    tokens = original.split()
    i = rng.randrange(len(tokens))
    tokens[i] = tokens[i].capitalize() if not tokens[i][:1].isupper() else tokens[i].lower()
    return " ".join(tokens)


@dataclass
class PlantedWriter:
    """One simulated writer and what it wrote in this run."""

    username: str
    sloppy: bool
    seconds: float
    demonstrations: int = 0
    gold_before: list[float] = field(default_factory=list)
    gold_after: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
        return {"username": self.username, "sloppy": self.sloppy, "demonstrations": self.demonstrations,
                "mean_gold_before": mean(self.gold_before), "mean_gold_after": mean(self.gold_after)}  # fmt: skip


@dataclass
class WriterSimulationResult:
    project: str
    writers: list[PlantedWriter]
    seconds: float

    @property
    def demonstrations(self) -> int:
        return sum(w.demonstrations for w in self.writers)

    def line(self) -> str:
        sloppy = sum(w.sloppy for w in self.writers)
        return f"simulated {len(self.writers)} writers ({sloppy} sloppy) on project {self.project!r}: {self.demonstrations} demonstrations in {self.seconds:.1f}s"


def simulate_writers(
    engine: Engine,
    project: str | int,
    *,
    writers: int = 5,
    sloppy: int = 1,
    seed: int = 0,
    max_demonstrations: Optional[int] = None,
    seconds: float = 60.0,
    username_prefix: str = "writer",
) -> WriterSimulationResult:
    """Simulated writers answer the project's write tasks through the engine until none is left (or the cap).

    Writers are accounts `<prefix>-s<seed>-<nnn>` (created when missing); a seeded `sloppy` of
    them are sloppy. Round-robin: each takes its next task in turn, as people working side by side.
    """
    if not 0 <= sloppy <= writers or writers < 1:
        raise ValueError(f"writers must be ≥ 1 and sloppy within [0, writers], got {writers} and {sloppy}")
    started = time.perf_counter()
    proj = get_project(engine, project)
    categories = prompt_categories(engine, proj.id)
    picked = set(random.Random(f"sloppy:{seed}:{writers}").sample(range(writers), sloppy))
    profiles = [
        AnnotatorProfile(i, f"{username_prefix}-s{seed}-{i:03d}", i in picked, 0.0, 0.0, 0.0, 0.0, seconds, seconds) for i in range(writers)
    ]
    accounts = ensure_accounts(engine, profiles)
    planted = [PlantedWriter(p.username, p.is_spammer, seconds) for p, _, _ in accounts]
    views = {i: next_task(engine, user, proj.id, "write") for i, (_, user, _) in enumerate(accounts)}
    done = 0
    while any(v is not None for v in views.values()) and (max_demonstrations is None or done < max_demonstrations):
        for i, (profile, user, _) in enumerate(accounts):
            view = views[i]
            if view is None or (max_demonstrations is not None and done >= max_demonstrations):
                continue
            rng = random.Random(f"write:{seed}:{i}:{view.task_id}")
            prompt, category = _prompt_of(view), categories.get(view.prompt_text)
            original = view.response.text if view.response is not None else None
            text = sloppy_reply(original, rng) if profile.is_spammer else careful_reply(prompt, original, category)
            spent = careful_time(rng, seconds / (4.0 if profile.is_spammer else 1.0))
            result = submit_demonstration(engine, user, view.task_id, text=text, time_spent_s=spent)
            writer = planted[i]
            writer.demonstrations += int(result.created)
            writer.gold_before.append(gold_score(prompt, original or "", category))
            writer.gold_after.append(gold_score(prompt, text, category))
            done += int(result.created)
            views[i] = result.next_task
    return WriterSimulationResult(proj.name, planted, time.perf_counter() - started)
