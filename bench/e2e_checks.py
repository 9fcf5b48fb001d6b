"""The end-to-end run's measurements against the planted truth: pure functions over frames and lists.

Each takes what the pipeline produced (the annotator table, the export's held-out rows, the
preference frame) and the planted truth, and returns plain numbers, so `bench/e2e.py` stays a
sequence of steps and these can be tested on hand-made inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Optional

import pandas as pd

from rlhf.simulation import AnnotatorProfile, GoldPair, best_achievable_accuracy, gold_score
from rlhf.simulation.gold import GOLD_WEIGHTS, gold_components

FLAG_TRAITS = {"spammer": "is_spammer", "position_bias": "position_bias", "length_bias": "length_bias", "too_fast": "is_spammer"}
"""Each annotator-table flag and the planted trait it should recover (spammers are also the fast ones)."""


@dataclass(frozen=True)
class Recovery:
    """How well a flag recovers a planted trait: precision = tp / flagged, recall = tp / planted (None when undefined)."""

    flag: str
    planted: int
    flagged: int
    true_positives: int
    precision: Optional[float]
    recall: Optional[float]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def recovery(flag: str, flagged: Iterable[str], planted: Iterable[str]) -> Recovery:
    """Precision and recall of a set of flagged usernames against the planted ones."""
    flagged, planted = set(flagged), set(planted)
    hits = len(flagged & planted)
    return Recovery(
        flag=flag,
        planted=len(planted),
        flagged=len(flagged),
        true_positives=hits,
        precision=hits / len(flagged) if flagged else None,
        recall=hits / len(planted) if planted else None,
    )


def _has_trait(profile: AnnotatorProfile, trait: str) -> bool:
    value = getattr(profile, trait)
    return bool(value) if isinstance(value, bool) else value > 0


def flag_recoveries(table: pd.DataFrame, profiles: Sequence[AnnotatorProfile]) -> dict[str, Recovery]:
    """Recovery of each flag in FLAG_TRAITS over the simulated annotators in `table` (rlhf.stats annotator table).

    `table` needs columns username and flags (comma-separated); annotators not in `profiles` are ignored.
    """
    simulated = {p.username: p for p in profiles}
    rows = table[table["username"].isin(simulated)]
    flags = {name: set(str(f).split(",")) - {""} for name, f in zip(rows["username"], rows["flags"])}
    out = {}
    for flag, trait in FLAG_TRAITS.items():
        flagged = [name for name, raised in flags.items() if flag in raised]
        planted = [name for name, p in simulated.items() if _has_trait(p, trait) and name in flags]
        out[flag] = recovery(flag, flagged, planted)
    return out


def annotator_rows(table: pd.DataFrame, profiles: Sequence[AnnotatorProfile]) -> pd.DataFrame:
    """The annotator table of the simulated annotators joined with their planted profiles (for plots and the report)."""
    planted = pd.DataFrame(
        [
            {"username": p.username, "planted_spammer": p.is_spammer, "planted_noise": p.noise, "planted_position_bias": p.position_bias, "planted_length_bias": p.length_bias}
            for p in profiles
        ]
    )
    columns = ["username", "n_annotations", "ds_skill", "left_share", "position_p_value", "longer_share", "length_tilt", "length_p_value", "median_time_s", "flags"]
    return planted.merge(table[[c for c in columns if c in table.columns]], on="username", how="left")


# --------------------------------------------------------------------------- reward model against gold


def response_text(value: Any) -> str:
    """A TRL response cell as text: a string, or `[{"role": "assistant", "content": ...}]`."""
    if isinstance(value, str):
        return value
    return next(str(m["content"]) for m in list(value) if m["role"] == "assistant")


def prompt_input(value: Any) -> Any:
    """A TRL prompt cell as `gold_score` takes it: a string, or a list of {role, content} dicts."""
    if isinstance(value, str):
        return value
    return [{"role": str(m["role"]), "content": str(m["content"])} for m in list(value)]


def gold_pairs(rows: pd.DataFrame, categories: Mapping[int, Optional[str]]) -> list[dict[str, Any]]:
    """Per export row: prompt, chosen, rejected texts, their gold scores and lengths, and the row's votes.

    `rows`: a TRL export's rows (prompt, chosen, rejected, prompt_id, votes); `categories`: prompt id → category.
    """
    out = []
    for row in rows.itertuples(index=False):
        prompt, chosen, rejected = prompt_input(row.prompt), response_text(row.chosen), response_text(row.rejected)
        category = categories.get(int(row.prompt_id))
        out.append(
            {
                "prompt": prompt,
                "chosen": chosen,
                "rejected": rejected,
                "gold_chosen": gold_score(prompt, chosen, category),
                "gold_rejected": gold_score(prompt, rejected, category),
                "category": category,
                "votes": int(getattr(row, "votes", 1) or 1),
            }
        )
    return out


def agreement_with_gold(score_chosen: Sequence[float], score_rejected: Sequence[float], gold_chosen: Sequence[float], gold_rejected: Sequence[float]) -> Optional[float]:
    """Share of pairs whose score difference has the sign of the gold difference.

    Pairs without a gold preference (equal gold) are left out; equal scores count one half.
    None when no pair is left.
    """
    right = total = 0.0
    for sc, sr, gc, gr in zip(score_chosen, score_rejected, gold_chosen, gold_rejected, strict=True):
        if gc == gr:
            continue
        total += 1
        if sc == sr:
            right += 0.5
        elif (sc > sr) == (gc > gr):
            right += 1
    return right / total if total else None


def deciding_component(prompt: Any, chosen: str, rejected: str, category: Optional[str]) -> Optional[str]:
    """The gold component whose weighted difference between the two replies is largest; None when gold ties.

    A pair "decided by length" is one whose gold preference comes mostly from the length band, and so on.
    """
    a, b = gold_components(prompt, chosen, category), gold_components(prompt, rejected, category)
    if a.score == b.score:
        return None
    contributions = {name: weight * (getattr(a, name) - getattr(b, name)) for name, weight in GOLD_WEIGHTS.items()}
    return max(contributions, key=lambda name: abs(contributions[name]))


def accuracy_by_component(pairs: Sequence[Mapping[str, Any]], score_chosen: Sequence[float], score_rejected: Sequence[float]) -> dict[str, dict[str, Any]]:
    """Per deciding gold component (`deciding_component`): pairs, the model's accuracy against gold, and the labels'.

    Shows which part of the gold a reward model fails to carry to new prompts (a model right on
    `finished` pairs and at chance on `on_topic` ones has learnt the surface, not the prompt).
    """
    groups: dict[str, dict[str, list]] = {}
    for pair, sc, sr in zip(pairs, score_chosen, score_rejected, strict=True):
        name = deciding_component(pair["prompt"], pair["chosen"], pair["rejected"], pair.get("category"))
        if name is None:
            continue
        group = groups.setdefault(name, {"c": [], "r": [], "gc": [], "gr": []})
        group["c"].append(sc)
        group["r"].append(sr)
        group["gc"].append(pair["gold_chosen"])
        group["gr"].append(pair["gold_rejected"])
    out = {}
    for name in sorted(groups, key=lambda n: -len(groups[n]["c"])):
        g = groups[name]
        out[name] = {
            "pairs": len(g["c"]),
            "model": agreement_with_gold(g["c"], g["r"], g["gc"], g["gr"]),
            "labels": agreement_with_gold([1.0] * len(g["c"]), [0.0] * len(g["c"]), g["gc"], g["gr"]),
        }
    return out


def label_accuracy_vs_gold(pairs: Sequence[Mapping[str, Any]]) -> Optional[float]:
    """How often the exported majority label (chosen over rejected) agrees with gold."""
    return agreement_with_gold([1.0] * len(pairs), [0.0] * len(pairs), [p["gold_chosen"] for p in pairs], [p["gold_rejected"] for p in pairs])


def ceiling(pairs: Sequence[Mapping[str, Any]], profiles: Sequence[AnnotatorProfile]) -> Optional[float]:
    """`best_achievable_accuracy` over these pairs, each with its own number of votes, the whole pool voting."""
    values = []
    for p in pairs:
        pair = GoldPair(p["gold_chosen"], p["gold_rejected"], len(p["chosen"]), len(p["rejected"]))
        value = best_achievable_accuracy([pair], list(profiles), votes=p["votes"])
        if not math.isnan(value):
            values.append(value)
    return sum(values) / len(values) if values else None


# --------------------------------------------------------------------------- the new round


def new_round_preference(preferences: pd.DataFrame, new_round: int, *, exclude_annotators: Iterable[int] = ()) -> dict[str, Any]:
    """How the judgments of pairs (round `new_round` vs an earlier round) went.

    `preferences`: rlhf.frames.preference_frame rows (round_a, round_b, choice, annotator_id, task_id).
    Returns n_votes (decisive a/b votes), vote_share (share of them for the new round),
    n_tasks and task_share (tasks whose decisive votes favour the new round; a split counts 1/2).
    """
    return _side_votes(preferences, "round_a", "round_b", new_round, exclude_annotators)


def model_preference(preferences: pd.DataFrame, model: str, *, exclude_annotators: Iterable[int] = ()) -> dict[str, Any]:
    """How the judgments of pairs (a reply of `model` against another model's) went: decisive votes and tasks won.

    `preferences`: rlhf.frames.preference_frame rows (task_id, model_a, model_b, choice, annotator_id).
    """
    return _side_votes(preferences, "model_a", "model_b", model, exclude_annotators)


def _side_votes(preferences: pd.DataFrame, column_a: str, column_b: str, side, exclude_annotators: Iterable[int]) -> dict[str, Any]:
    """Decisive votes of the pairs with `side` on exactly one side (by `column_a` / `column_b`): share for it, tasks won (a split task 1/2)."""
    excluded = set(exclude_annotators)
    rows = preferences[(preferences[column_a] != preferences[column_b]) & ((preferences[column_a] == side) | (preferences[column_b] == side))]
    rows = rows[rows["choice"].isin(["a", "b"]) & ~rows["annotator_id"].isin(excluded)]
    if rows.empty:
        return {"n_votes": 0, "vote_share": None, "n_tasks": 0, "task_share": None}
    side_is_a = rows[column_a].to_numpy() == side
    for_side = (rows["choice"].to_numpy() == "a") == side_is_a
    per_task = pd.DataFrame({"task": rows["task_id"].to_numpy(), "for_side": for_side}).groupby("task")["for_side"].mean()
    task_wins = (per_task > 0.5).astype(float) + 0.5 * (per_task == 0.5)
    return {"n_votes": int(len(rows)), "vote_share": float(for_side.mean()), "n_tasks": int(len(per_task)), "task_share": float(task_wins.mean())}


def gold_win_rate(new: Mapping[int, Sequence[float]], old: Mapping[int, Sequence[float]]) -> Optional[float]:
    """Share of (new response, old response) pairs of the same prompt where gold prefers the new one; ties 1/2.

    `new` / `old`: prompt id → gold scores of that prompt's responses.
    """
    wins = total = 0.0
    for prompt_id, new_scores in new.items():
        for n in new_scores:
            for o in old.get(prompt_id, ()):
                total += 1
                wins += 1.0 if n > o else 0.5 if n == o else 0.0
    return wins / total if total else None
