"""Export a project's judgments as training data: TRL preference pairs, per-response ratings, raw rows.

Formats (`format=`):
- `trl`: one row per pair, `prompt` / `chosen` / `rejected` (plain strings; or, when any prompt
  of the project is a chat, TRL's conversational form: `prompt` = the messages, `chosen` /
  `rejected` = `[{"role": "assistant", "content": ...}]`), `margin` (see below), and
  `prompt_id`, `task_id`, `votes`, `agreement`, `chosen_model`, `rejected_model`. Pairs come from
  pairwise judgments aggregated per task (majority vote or Dawid–Skene), or with
  `from_ratings=True` from rubric ratings (within a prompt, the response with the higher mean
  wins). Loads in TRL's RewardTrainer and DPOTrainer untouched.
- `ratings`: one row per rated response: `mean_<dimension>`, `std_<dimension>`, `n`, `agreement`.
- `raw`: every annotation (ratings and judgments), annotators pseudonymised with a salted hash
  that is stable within one export and unlinkable across exports (no usernames leave).
- `sft`: one row per demonstration (write tasks), TRL's conversational `messages` or, with
  `sft_shape="prompt-completion"`, `prompt` / `completion` (see `rlhf.sft_export`); with
  `include_edits`, `trl` exports also hold edited ≻ original pairs (`source` column).

Margin (trl): TRL subtracts it inside the Bradley–Terry loss, `-log σ(r_c − r_r − margin)`,
so a larger margin asks for a larger reward gap. From judgments, strength 1 ("better") maps to
0 and strength 2 ("much better") to `margin_per_strength` (default 1.0), averaged over the
votes that agree with the aggregated label. From ratings, the margin is the difference of the
two responses' mean scores (rubric points).

Agreement (trl): the share of the pair's votes that agree with its label. From ratings: the
share of cross-annotator comparisons (one rating of each response) that order the two
responses the same way as their means, ties counting one half.

Output by path: `.jsonl` or `.parquet` (a `split` column says train / test), or any other path
→ a directory holding a `datasets.DatasetDict` (`save_to_disk`). The split is grouped by prompt
(no prompt on both sides) and deterministic in (`seed`, the prompts' content hashes). A
manifest (counts, options, content hash of the rows, project, time, software version) is
written beside a file as `<stem>.manifest.json`, or inside the directory as `manifest.json`.
Everything is written under a temporary name and renamed into place; a failed export leaves
nothing behind. Each export is recorded as an `Artifact(kind="export")`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from json.encoder import encode_basestring
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from rlhf import __version__
from rlhf.frames import HUMAN_ROLES, preference_frame, project_id_of, rating_frame, response_frame
from rlhf.hashing import canonical_json
from rlhf.progress import Reporter, check_stop
from rlhf.projects import get_project
from rlhf.roles import Actor, check_admin

ExportFormat = Literal["trl", "ratings", "raw", "sft"]
EXPORT_FORMATS: tuple[str, ...] = ("trl", "ratings", "raw", "sft")
AGGREGATIONS: tuple[str, ...] = ("majority", "dawid-skene")
MANIFEST_NAME = "manifest.json"
TIE_LABELS = ("tie", "both_bad")


class ExportError(ValueError):
    """The export cannot be made as asked (nothing usable, unknown option value, target exists)."""


@dataclass
class ExportOptions:
    """How judgments become rows. Defaults: majority vote, humans only, ties dropped, 10% test prompts."""

    aggregate: str = "majority"
    """How a pair's votes become one label: `majority` or `dawid-skene` (weighs annotators by estimated competence)."""
    min_votes: int = 1
    """Pairs (or, from ratings, responses) with fewer votes than this are dropped."""
    min_agreement: float = 0.0
    """Pairs whose share of votes agreeing with the label is below this are dropped (0–1)."""
    keep_ties: bool = False
    """Keep pairs labelled tie / both bad (as chosen = A, rejected = B, `tie` = True, margin 0); TRL has no tie loss, so off by default."""
    include_external: bool = False
    """Include labels from external sources (role `external`: imported datasets, model judges); humans only by default."""
    include_gold: bool = True
    """Include judgments on gold tasks (known answer): they are real judgments of real pairs."""
    sources: list[str] | None = None
    """Label sources to use, by name: `human` (people) and external users such as `judge:gpt-4o`; None: people,
    plus every external source with `include_external`. Replaces `include_external` when given."""
    humans_win: bool = True
    """With `sources`: on a task that people labelled, external sources' labels are left out."""
    source_ids: list[int] | None = None
    """The external users named in `sources`, resolved by `export_project` (not set by hand)."""
    from_ratings: bool = False
    """trl only: build pairs from rubric ratings instead of pairwise judgments."""
    rating_dimension: str | None = None
    """With `from_ratings`: rank by this rubric dimension; None ranks by the mean over all dimensions."""
    margin: bool = True
    """trl only: write a `margin` column (TRL uses it in the reward loss when present)."""
    margin_per_strength: float = 1.0
    """Margin of a "much better" (strength 2) vote; a "better" (strength 1) vote adds 0."""
    rank_margin: bool = False
    """trl, rankings: margin from rank distance ((distance − 1) × margin_per_strength) instead of 0."""
    test_size: float = 0.1
    """Share of prompts (not rows) held out as the test split; 0 for no test split."""
    seed: int = 0
    """Seeds the grouped split (which prompts are held out)."""
    salt: str | None = None
    """raw only: the salt of the annotator pseudonyms; None draws a fresh one (unlinkable across exports)."""
    sft_shape: str = "messages"
    """sft only: `messages` (the prompt's turns + the demonstration) or `prompt-completion`."""
    min_review_score: float | None = None
    """sft only: keep demonstrations whose mean review score (rubric points) is at least this; None keeps all, reviewed or not."""
    include_edits: bool = False
    """trl only: add edited ≻ original pairs from substantive edits of model replies (`source` = "edit")."""

    def validate(self) -> None:
        if self.aggregate not in AGGREGATIONS:
            raise ExportError(f"aggregate {self.aggregate!r}: expected one of {', '.join(AGGREGATIONS)}")
        if self.min_votes < 1:
            raise ExportError(f"min_votes {self.min_votes}: must be at least 1")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ExportError(f"min_agreement {self.min_agreement}: must be between 0 and 1")
        if not 0.0 <= self.test_size < 1.0:
            raise ExportError(f"test_size {self.test_size}: must be in [0, 1)")
        from rlhf.sft_export import SFT_SHAPES

        if self.sft_shape not in SFT_SHAPES:
            raise ExportError(f"sft_shape {self.sft_shape!r}: expected one of {', '.join(SFT_SHAPES)}")

    def recorded(self) -> dict[str, Any]:
        """The options as written to the manifest (the salt is a secret and never written)."""
        values = dataclasses.asdict(self)
        values["salt"] = "given" if self.salt is not None else "random"
        return values


@dataclass
class ExportManifest:
    """What an export holds and how it was made; written as JSON beside (or inside) the export."""

    format: str
    project: str
    project_id: int
    path: str
    files: list[str]
    rows: int
    split_counts: dict[str, int]
    counts: dict[str, int]
    """What was read and why rows were dropped (e.g. `annotations`, `dropped_ties`, `dropped_min_votes`)."""
    options: dict[str, Any]
    content_hash: str
    """SHA-256 of the exported rows (columns and values, split included): same data and options, same hash."""
    conversational: bool
    created_at: str
    software_version: str
    artifact_id: int | None = None
    columns: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ExportManifest":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


# --------------------------------------------------------------------------- pure helpers


def grouped_split(group_keys: pd.Series | list[str], test_size: float, seed: int) -> np.ndarray:
    """Boolean mask (True = test) holding out whole groups: no group is on both sides.

    Groups are ranked by SHA-256 of `f"{seed}:{key}"` and the first `round(test_size * n_groups)`
    are held out (at least one when `test_size > 0` and there are two or more groups, never
    all). The rank of a group depends only on its own key and the seed, so the split is the same
    on every run and a prompt keeps its side when others are added.
    """
    # Factorise the raw keys first: text conversion and hashing then run once per group, not per row.
    codes, raw_unique = pd.factorize(pd.Series(list(group_keys), dtype="object"), use_na_sentinel=False)
    names = [str(key) for key in raw_unique]
    unique = list(dict.fromkeys(names))  # distinct as text, as the groups are compared
    if test_size <= 0 or len(unique) < 2:
        return np.zeros(len(codes), dtype=bool)
    ranks = sorted(unique, key=lambda key: hashlib.sha256(f"{seed}:{key}".encode()).hexdigest())
    n_test = min(len(unique) - 1, max(1, int(round(test_size * len(unique)))))
    held_out = set(ranks[:n_test])
    return np.fromiter((name in held_out for name in names), dtype=bool, count=len(names))[codes]


def vote_labels(votes: pd.DataFrame, method: str) -> pd.DataFrame:
    """One label per item from long-format votes (columns `item`, `annotator`, `value`).

    `method` is `majority` (rlhf.aggregation.MajorityVote) or `dawid-skene`
    (rlhf.aggregation.DawidSkene, which weighs annotators by their estimated confusion).
    Returns one row per item (index `item`): `label`; `votes` (number of votes); `agreement`
    (share of the votes equal to the label: what people said, whatever the method);
    `split_vote` (majority only: several values share the top count, so there is no majority).
    """
    from rlhf.aggregation import DawidSkene, MajorityVote

    majority = MajorityVote().fit(votes[["item", "annotator", "value"]])
    shares = majority.probas_
    if method == "majority":
        labels = majority.labels_
        top = shares.max(axis=1)
        # Shares are count / votes with one denominator per item: equal counts are equal floats.
        split_vote = shares.eq(top, axis=0).sum(axis=1) > 1
    else:
        labels = DawidSkene().fit(votes[["item", "annotator", "value"]]).labels_.reindex(shares.index)
        split_vote = pd.Series(False, index=shares.index)
    columns = shares.columns.get_indexer(labels.to_numpy())
    agreement = shares.to_numpy()[np.arange(len(shares)), columns]
    return pd.DataFrame(
        {"label": labels, "votes": majority.n_votes_, "agreement": agreement, "split_vote": split_vote}, index=shares.index
    )


def strength_margin(prefs: pd.DataFrame, labels: pd.Series, per_strength: float) -> pd.Series:
    """Per task: `per_strength` × mean over the votes agreeing with the label of (strength − 1), clipped at 0."""
    agreeing = prefs[prefs["choice"].to_numpy() == prefs["task_id"].map(labels).to_numpy()]
    steps = (agreeing["strength"].astype(float) - 1.0).clip(lower=0.0)
    return (steps.groupby(agreeing["task_id"]).mean() * per_strength).reindex(labels.index, fill_value=0.0)


def as_messages(prompt_text: str, prompt_messages: list[dict[str, str]] | None) -> list[dict[str, str]]:
    """A prompt in conversational form: its messages, or one user message holding the plain text."""
    if prompt_messages:
        return [{"role": str(m["role"]), "content": str(m["content"])} for m in prompt_messages]
    return [{"role": "user", "content": prompt_text}]


INCLUDE_EXTERNAL_HINT = "pass --include-external (on the Export page: \"Include external labels\") to use them"


def _external_left_out(frame: pd.DataFrame, options: ExportOptions, keys: list[str] | None = None) -> int:
    """How many annotations from external sources `_prefer_humans` leaves out (rows, or distinct `keys`)."""
    if options.include_external or options.sources is not None:
        return 0
    external = frame[~frame["annotator_role"].isin(HUMAN_ROLES)]
    return int(len(external) if keys is None else external[keys].drop_duplicates().shape[0])


def nothing_usable(project: str | int, what: str, counts: dict[str, int]) -> str:
    """The ExportError text for an export with no rows: the counts, and the external labels left out by default.

    A project whose only labels are external (an imported dataset, a model judge) otherwise read
    as "annotations 36" with no hint that a flag would use them (issue 16, item 14).
    """
    external = counts.get("left_out_external", 0)
    reasons = ", ".join(f"{k} {v}" for k, v in counts.items() if v and k != "left_out_external")
    message = f"project {project!r}: {what} ({reasons or 'no annotations'})"
    if external:
        message += f"; {external} label(s) from external sources (imported datasets, model judges) are left out by default: {INCLUDE_EXTERNAL_HINT}"
    return message


def _prefer_humans(frame: pd.DataFrame, options: ExportOptions) -> pd.DataFrame:
    if options.sources is not None:
        frame = _chosen_sources(frame, options)
    elif not options.include_external:
        frame = frame[frame["annotator_role"].isin(HUMAN_ROLES)]
    if not options.include_gold:
        frame = frame[~frame["is_gold"]]
    return frame


def _chosen_sources(frame: pd.DataFrame, options: ExportOptions) -> pd.DataFrame:
    """Rows from the sources named in `options.sources`; where people labelled a task, theirs alone (`humans_win`)."""
    human = frame["annotator_role"].isin(HUMAN_ROLES)
    wanted = "human" in options.sources
    frame = frame[(human & wanted) | (~human & frame["annotator_id"].isin(options.source_ids or []))]
    if wanted and options.humans_win:
        human = frame["annotator_role"].isin(HUMAN_ROLES)
        frame = frame[human | ~frame["task_id"].isin(set(frame.loc[human, "task_id"]))]
    return frame


def _check_judge_sources_allowed(engine: Engine, project_id: int, options: ExportOptions) -> None:
    """ExportError unless the project has switched on exports with judge sources (when `sources` names a judge)."""
    from rlhf.judge.run import JUDGE_PREFIX
    from sqlmodel import Session

    from rlhf.projects import JudgeUseDisabled, require_judge_use
    from rlhf.schema import Project

    judges = [s for s in options.sources or [] if s.startswith(JUDGE_PREFIX)]
    if not judges:
        return
    with Session(engine) as session:
        try:
            require_judge_use(session.get(Project, project_id), "export", f"export with judge sources ({', '.join(judges)})")
        except JudgeUseDisabled as exc:
            raise ExportError(str(exc)) from None


def resolve_sources(engine: Engine, sources: list[str]) -> list[int]:
    """The ids of the external users named in `sources` (all but `human`); ExportError names an unknown one."""
    from sqlmodel import Session, select

    from rlhf.schema import User

    names = [s for s in sources if s != "human"]
    with Session(engine) as session:
        found = {u.username: u for u in session.exec(select(User).where(User.username.in_(names)))}
    missing = [n for n in names if n not in found or found[n].role != "external"]
    if missing:
        raise ExportError(f"sources: {', '.join(repr(m) for m in missing)} is not an external label source (use human, or e.g. judge:<name>)")
    return [int(found[n].id) for n in names]


# --------------------------------------------------------------------------- trl pairs

PAIR_VOTE_COLUMNS = ["task_id", "prompt_id", "response_a_id", "response_b_id", "annotator_id", "annotator_role", "choice", "strength", "is_gold"]
"""The preference_frame columns pairs are built from (the export reads nothing else)."""
RATING_PAIR_COLUMNS = ["task_id", "prompt_id", "response_id", "annotator_id", "annotator_role", "dimension", "value", "is_gold"]
"""The rating_frame columns rating-derived pairs are built from."""


@dataclass
class PairTable:
    """Aggregated pairs before texts are attached: one row per pair, and why others were dropped."""

    pairs: pd.DataFrame
    """Columns: prompt_id, task_id, chosen_id, rejected_id, votes, agreement, margin, tie."""
    counts: dict[str, int]


def pairs_from_preferences(prefs: pd.DataFrame, options: ExportOptions) -> PairTable:
    """Aggregate pairwise judgments per task into labelled pairs (pure; `prefs` is a preference_frame)."""
    counts: dict[str, int] = {"annotations": int(len(prefs)), "left_out_external": _external_left_out(prefs, options)}
    prefs = _prefer_humans(prefs, options)
    counts["annotations_used"] = int(len(prefs))
    empty = pd.DataFrame(columns=["prompt_id", "task_id", "chosen_id", "rejected_id", "votes", "agreement", "margin", "tie"])
    if prefs.empty:
        return PairTable(empty, counts | {"tasks": 0})
    votes = pd.DataFrame({"item": prefs["task_id"], "annotator": prefs["annotator_id"], "value": prefs["choice"]})
    labelled = vote_labels(votes, options.aggregate)
    labelled["margin"] = strength_margin(prefs, labelled["label"], options.margin_per_strength)
    counts["tasks"] = int(len(labelled))

    keep = pd.Series(True, index=labelled.index)
    for reason, dropped in (
        ("dropped_min_votes", labelled["votes"] < options.min_votes),
        ("dropped_no_majority", labelled["split_vote"].astype(bool)),
        ("dropped_ties", labelled["label"].isin(TIE_LABELS) & (not options.keep_ties)),
        ("dropped_min_agreement", labelled["agreement"] < options.min_agreement),
    ):
        counts[reason] = int((keep & dropped).sum())
        keep &= ~dropped
    labelled = labelled[keep]

    tasks = prefs.drop_duplicates("task_id").set_index("task_id").loc[labelled.index]
    b_wins = (labelled["label"] == "b").to_numpy()
    pairs = pd.DataFrame(
        {
            "prompt_id": tasks["prompt_id"].to_numpy(),
            "task_id": labelled.index.to_numpy(),
            "chosen_id": np.where(b_wins, tasks["response_b_id"], tasks["response_a_id"]),
            "rejected_id": np.where(b_wins, tasks["response_a_id"], tasks["response_b_id"]),
            "votes": labelled["votes"].astype(int).to_numpy(),
            "agreement": labelled["agreement"].astype(float).to_numpy(),
            "margin": np.where(labelled["label"].isin(TIE_LABELS), 0.0, labelled["margin"].astype(float)),
            "tie": labelled["label"].isin(TIE_LABELS).to_numpy(),
        }
    )
    return PairTable(pairs, counts)


def pairs_from_ratings(ratings: pd.DataFrame, options: ExportOptions) -> PairTable:
    """Pairs from rubric ratings: within each prompt, every two rated responses; the higher mean wins.

    The score of one rating is the chosen dimension's value, or the mean over its dimensions.
    margin = difference of the two means; votes = the smaller of the two rating counts;
    agreement = share of cross-annotator comparisons ordering the pair like the means (ties ½).
    """
    counts: dict[str, int] = {
        "annotations": int(ratings[["task_id", "annotator_id"]].drop_duplicates().shape[0]),
        "left_out_external": _external_left_out(ratings, options, ["task_id", "annotator_id"]),
    }
    ratings = _prefer_humans(ratings, options)
    if options.rating_dimension is not None:
        known = set(ratings["dimension"].unique())
        if options.rating_dimension not in known:
            raise ExportError(
                f"rating dimension {options.rating_dimension!r}: not in the project's ratings "
                f"(found: {', '.join(sorted(known)) or 'none'})"
            )
        ratings = ratings[ratings["dimension"] == options.rating_dimension]
    per_rating = (
        ratings.dropna(subset=["value"])
        .groupby(["prompt_id", "response_id", "annotator_id"], sort=True)["value"]
        .mean()
        .reset_index()
    )
    counts["annotations_used"] = int(len(per_rating))
    per_response = per_rating.groupby(["prompt_id", "response_id"], sort=True)["value"].agg(["mean", "size"]).reset_index()
    enough = per_response["size"] >= options.min_votes
    counts["dropped_min_votes"] = int((~enough).sum())
    per_response = per_response[enough]
    values_of = {rid: group.to_numpy() for rid, group in per_rating.groupby("response_id")["value"]}

    rows: list[dict[str, Any]] = []
    ties = low_agreement = 0
    for prompt_id, group in per_response.groupby("prompt_id", sort=True):
        items = list(group.itertuples(index=False))
        for i in range(len(items)):
            for j in range(i + 1, len(items)):
                first, second = items[i], items[j]
                if first.mean == second.mean:
                    if not options.keep_ties:
                        ties += 1
                        continue
                    winner, loser = first, second
                else:
                    winner, loser = (first, second) if first.mean > second.mean else (second, first)
                agreement = _ordering_agreement(values_of[winner.response_id], values_of[loser.response_id])
                if agreement < options.min_agreement:
                    low_agreement += 1
                    continue
                rows.append(
                    {
                        "prompt_id": int(prompt_id),
                        "task_id": None,
                        "chosen_id": int(winner.response_id),
                        "rejected_id": int(loser.response_id),
                        "votes": int(min(winner.size, loser.size)),
                        "agreement": float(agreement),
                        "margin": float(winner.mean - loser.mean),
                        "tie": bool(first.mean == second.mean),
                    }
                )
    counts |= {"responses": int(len(per_response)), "dropped_ties": ties, "dropped_min_agreement": low_agreement}
    columns = ["prompt_id", "task_id", "chosen_id", "rejected_id", "votes", "agreement", "margin", "tie"]
    return PairTable(pd.DataFrame(rows, columns=columns), counts)


def _ordering_agreement(winner_values: np.ndarray, loser_values: np.ndarray) -> float:
    """P(a rating of the winner > a rating of the loser) over all cross pairs, ties counting ½."""
    difference = winner_values[:, None] - loser_values[None, :]
    return float(((difference > 0).sum() + 0.5 * (difference == 0).sum()) / difference.size)


def trl_rows(pairs: pd.DataFrame, responses: pd.DataFrame, options: ExportOptions) -> tuple[pd.DataFrame, bool]:
    """Attach texts to aggregated pairs: TRL's prompt/chosen/rejected rows, and whether they are conversational.

    Conversational when any prompt of the project is a chat: then every row is (TRL needs one
    form per dataset), plain prompts becoming one user message.
    """
    texts = responses.set_index("response_id")
    conversational = bool(texts["prompt_messages"].notna().any())
    chosen = texts.loc[pairs["chosen_id"].to_numpy()]
    rejected = texts.loc[pairs["rejected_id"].to_numpy()]
    if conversational:
        prompt = [as_messages(t, m) for t, m in zip(chosen["prompt_text"], chosen["prompt_messages"])]
        chosen_col = [[{"role": "assistant", "content": text}] for text in chosen["response_text"]]
        rejected_col = [[{"role": "assistant", "content": text}] for text in rejected["response_text"]]
    else:
        prompt = chosen["prompt_text"].tolist()
        chosen_col = chosen["response_text"].tolist()
        rejected_col = rejected["response_text"].tolist()
    rows = pd.DataFrame(
        {
            "prompt": prompt,
            "chosen": chosen_col,
            "rejected": rejected_col,
            "prompt_id": pairs["prompt_id"].astype(int).to_numpy(),
            "task_id": pairs["task_id"].astype("Int64").to_numpy(),
            "votes": pairs["votes"].astype(int).to_numpy(),
            "agreement": pairs["agreement"].astype(float).to_numpy(),
            "chosen_model": chosen["model_name"].to_numpy(),
            "rejected_model": rejected["model_name"].to_numpy(),
            "prompt_hash": chosen["prompt_hash"].to_numpy(),
        }
    )
    if options.margin:
        rows.insert(3, "margin", pairs["margin"].astype(float).to_numpy())
    if options.keep_ties:
        rows["tie"] = pairs["tie"].astype(bool).to_numpy()
    return rows, conversational


# --------------------------------------------------------------------------- ratings / raw


def rating_rows(ratings: pd.DataFrame, responses: pd.DataFrame, options: ExportOptions) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per rated response: mean and std per dimension, number of ratings `n`, `agreement`.

    agreement = mean over dimensions of the pairwise exact agreement among the response's
    raters, Σ_k c_k(c_k − 1) / (n(n − 1)) with c_k the raters giving value k (NaN when n = 1).
    """
    counts = {
        "annotations": int(ratings[["task_id", "annotator_id"]].drop_duplicates().shape[0]),
        "left_out_external": _external_left_out(ratings, options, ["task_id", "annotator_id"]),
    }
    ratings = _prefer_humans(ratings, options).dropna(subset=["value"])
    counts["annotations_used"] = int(ratings[["task_id", "annotator_id"]].drop_duplicates().shape[0])
    if ratings.empty:
        return pd.DataFrame(), counts | {"responses": 0, "dropped_min_votes": 0}
    n = ratings.groupby("response_id")["annotator_id"].nunique().rename("n")
    stats = ratings.groupby(["response_id", "dimension"])["value"].agg(["mean", "std"]).unstack("dimension")
    stats.columns = [f"{stat}_{dimension}" for stat, dimension in stats.columns]
    value_counts = ratings.groupby(["response_id", "dimension", "value"]).size()
    same_pairs = (value_counts * (value_counts - 1)).groupby(["response_id", "dimension"]).sum()
    raters = ratings.groupby(["response_id", "dimension"]).size()
    pairwise = (same_pairs / (raters * (raters - 1)).where(raters > 1)).groupby("response_id").mean()

    table = pd.concat([n, stats, pairwise.rename("agreement")], axis=1)
    counts["dropped_min_votes"] = int((table["n"] < options.min_votes).sum())
    table = table[table["n"] >= options.min_votes]
    counts["responses"] = int(len(table))
    texts = responses.set_index("response_id").loc[table.index]
    rows = pd.DataFrame(
        {
            "prompt": texts["prompt_text"].to_numpy(),
            "response": texts["response_text"].to_numpy(),
            "model_name": texts["model_name"].to_numpy(),
            "prompt_id": texts["prompt_id"].to_numpy(),
            "response_id": table.index.to_numpy(),
            "prompt_hash": texts["prompt_hash"].to_numpy(),
        }
    )
    for column in table.columns:
        rows[column] = table[column].to_numpy()
    rows["n"] = rows["n"].astype(int)
    return rows, counts


def pseudonyms(annotator_ids: pd.Series, salt: str) -> pd.Series:
    """`ann-` + 12 hex digits of SHA-256(salt:id) per annotator: stable within one salt, unlinkable without it."""
    mapping = {
        annotator: "ann-" + hashlib.sha256(f"{salt}:{annotator}".encode()).hexdigest()[:12]
        for annotator in pd.unique(annotator_ids)
    }
    return annotator_ids.map(mapping)


def raw_rows(
    ratings: pd.DataFrame, prefs: pd.DataFrame, responses: pd.DataFrame, options: ExportOptions, salt: str, reasons: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every annotation, one row each: judgments (`choice`, `strength`, `shown_left`) and ratings (`score_<dimension>`)."""
    left_out = _external_left_out(ratings, options, ["task_id", "annotator_id"]) + _external_left_out(prefs, options)
    ratings, prefs = _prefer_humans(ratings, options), _prefer_humans(prefs, options)
    texts = responses.set_index("response_id")
    judged = pd.DataFrame(
        {
            "kind": "preference",
            "task_id": prefs["task_id"].to_numpy(),
            "prompt_id": prefs["prompt_id"].to_numpy(),
            "response_a_id": prefs["response_a_id"].to_numpy(),
            "response_b_id": prefs["response_b_id"].astype("Int64").to_numpy(),
            "annotator_id": prefs["annotator_id"].to_numpy(),
            "annotator_role": prefs["annotator_role"].to_numpy(),
            "choice": prefs["choice"].to_numpy(),
            "strength": prefs["strength"].astype("Int64").to_numpy(),
            "shown_left": prefs["shown_left"].to_numpy(),
            "time_spent_s": prefs["time_spent_s"].to_numpy(),
            "created_at": prefs["created_at"].to_numpy(),
            "is_gold": prefs["is_gold"].to_numpy(),
        }
    )
    keys = ["task_id", "annotator_id"]
    if ratings.empty:
        rated = pd.DataFrame(columns=judged.columns)
    else:
        scores = ratings.pivot_table(index=keys, columns="dimension", values="value", aggfunc="first")
        scores.columns = [f"score_{d}" for d in scores.columns]
        first = ratings.drop_duplicates(keys).set_index(keys)
        rated = pd.DataFrame(
            {
                "kind": "rating",
                "prompt_id": first["prompt_id"],
                "response_a_id": first["response_id"],
                "response_b_id": pd.array([pd.NA] * len(first), dtype="Int64"),
                "annotator_role": first["annotator_role"],
                "choice": None,
                "strength": pd.array([pd.NA] * len(first), dtype="Int64"),
                "shown_left": None,
                "time_spent_s": first["time_spent_s"],
                "created_at": first["created_at"],
                "is_gold": first["is_gold"],
            }
        ).join(scores).reset_index()
    rows = pd.concat([judged, rated], ignore_index=True) if not rated.empty else judged
    rows = rows.sort_values(["created_at", "task_id", "annotator_id"], kind="stable").reset_index(drop=True)
    if reasons is not None:  # why each task was chosen (rlhf.selection)
        from rlhf.selection.export_columns import add_vote_reasons

        rows = add_vote_reasons(rows, reasons)
    rows["annotator"] = pseudonyms(rows["annotator_id"], salt)
    rows = rows.drop(columns=["annotator_id"])
    rows["created_at"] = pd.to_datetime(rows["created_at"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    rows["prompt"] = rows["response_a_id"].map(texts["prompt_text"])
    rows["prompt_hash"] = rows["response_a_id"].map(texts["prompt_hash"])
    rows["response_a"] = rows["response_a_id"].map(texts["response_text"])
    rows["response_b"] = rows["response_b_id"].astype("Int64").map(texts["response_text"])
    counts = {"annotations": int(len(rows)), "ratings": int(len(rated)), "preferences": int(len(judged)), "left_out_external": left_out}
    return rows, counts


# --------------------------------------------------------------------------- writing


def manifest_path_for(out: Path) -> Path:
    """Where an export's manifest lives: inside a directory export, or `<stem>.manifest.json` beside a file."""
    out = Path(out)
    if out.suffix in (".jsonl", ".parquet"):
        return out.with_name(f"{out.stem}.manifest.json")
    return out / MANIFEST_NAME


def output_kind(out: Path) -> str:
    """`jsonl`, `parquet`, or `dataset` (a directory for `DatasetDict.save_to_disk`), from the path."""
    suffix = Path(out).suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    if suffix:
        raise ExportError(f"output {str(out)!r}: use a .jsonl or .parquet file, or a directory path without a suffix")
    return "dataset"


def _json_text(value: Any) -> str:
    """One value as canonical JSON text (missing values → null)."""
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, str):
        return encode_basestring(value)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, np.generic):
        value = value.item()
    return canonical_json(value)


def _column_json(column: pd.Series) -> list[str]:
    """Every value of a column as canonical JSON text, vectorised per dtype where it can be."""
    numpy_dtype = isinstance(column.dtype, np.dtype)  # not a pandas extension type (Int64 with NA, ...)
    if numpy_dtype and column.dtype == bool:
        return ["true" if v else "false" for v in column.tolist()]
    if numpy_dtype and column.dtype.kind in "iu":
        return list(map(str, column.tolist()))
    if numpy_dtype and column.dtype.kind == "f":
        if np.isfinite(column.to_numpy()).all():  # the common case: repr is json.dumps' text
            return list(map(float.__repr__, column.tolist()))
        return [_float_json(v) for v in column.tolist()]
    values = column.tolist()
    try:
        return list(map(encode_basestring, values))  # the common case: a column of text
    except TypeError:  # not all text: value by value
        return [_json_text(v) for v in values]


def _float_json(value: float) -> str:
    """A float as `json.dumps` writes it (repr; Infinity), NaN meaning missing → null."""
    if value != value:
        return "null"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def canonical_json_lines(rows: pd.DataFrame) -> list[str]:
    """Each row as the canonical JSON of its record (`rlhf.hashing.canonical_json`: sorted keys,
    compact, UTF-8), missing values as null — built column by column, far faster than
    serialising a million dicts one by one. JSONL exports are these lines."""
    keys = sorted(rows.columns)
    # A %-template per row: each key's JSON name, then its value's text.
    template = "{" + ",".join(encode_basestring(str(k)).replace("%", "%%") + ":%s" for k in keys) + "}"
    columns = [_column_json(rows[k]) for k in keys]
    return [template % values for values in zip(*columns)]


def lines_hash(lines: list[str]) -> str:
    """SHA-256 of the JSON array of these lines: equals `content_hash(records)` for the records they encode."""
    digest = hashlib.sha256(b"[")
    for index, line in enumerate(lines):
        digest.update((line if index == 0 else "," + line).encode("utf-8"))
    digest.update(b"]")
    return digest.hexdigest()


def rows_hash(rows: pd.DataFrame) -> str:
    """Content hash of the rows: `content_hash` of the list of row records (same rows, same order → same hash)."""
    return lines_hash(canonical_json_lines(rows))


def _write_rows(rows: pd.DataFrame, target: Path, kind: str, lines: list[str]) -> list[str]:
    """Write `rows` (with a `split` column) to `target` in `kind`; returns the file names written.

    JSONL is written from `lines` (the rows' canonical JSON, computed once for the hash too).
    """
    if kind == "jsonl":
        with open(target, "w", encoding="utf-8") as handle:
            for start in range(0, len(lines), 10_000):
                handle.write("\n".join(lines[start : start + 10_000]) + "\n")
        return [target.name]
    if kind == "parquet":
        rows.to_parquet(target, index=False)
        return [target.name]
    from datasets import Dataset, DatasetDict

    splits = {}
    for split in ("train", "test"):
        part = rows[rows["split"] == split].drop(columns=["split"]).reset_index(drop=True)
        if len(part):
            splits[split] = Dataset.from_pandas(part, preserve_index=False)
    DatasetDict(splits).save_to_disk(str(target))
    return sorted(p.name for p in target.iterdir())


def _place(tmp: Path, final: Path, overwrite: bool) -> None:
    """Rename `tmp` onto `final`; an existing `final` is replaced only when `overwrite`."""
    if final.exists():
        if not overwrite:
            raise ExportError(f"output {str(final)!r} exists (pass overwrite to replace it)")
        if final.is_dir():
            trash = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
            final.rename(trash)
            tmp.rename(final)
            shutil.rmtree(trash, ignore_errors=True)
            return
    os.replace(tmp, final)


def write_export(
    rows: pd.DataFrame, out: Path, manifest: ExportManifest, *, overwrite: bool = False, lines: list[str] | None = None
) -> ExportManifest:
    """Write rows and manifest under temporary names, then rename them into place."""
    out = Path(out)
    kind = output_kind(out)
    if out.exists() and not overwrite:
        raise ExportError(f"output {str(out)!r} exists (pass overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        staged = work / out.name
        written = _write_rows(rows, staged, kind, lines if lines is not None else canonical_json_lines(rows))
        if kind == "dataset":
            manifest.files = sorted(written + [MANIFEST_NAME])
            (staged / MANIFEST_NAME).write_text(manifest.to_json())
            _place(staged, out, overwrite)
        else:
            manifest.files = [out.name, manifest_path_for(out).name]
            staged_manifest = work / manifest_path_for(out).name
            staged_manifest.write_text(manifest.to_json())
            _place(staged, out, overwrite)
            os.replace(staged_manifest, manifest_path_for(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


def read_manifest(path: str | os.PathLike) -> ExportManifest | None:
    """The manifest of the export at `path` (file or directory), or None when it has none."""
    candidate = manifest_path_for(Path(path)) if Path(path).suffix in (".jsonl", ".parquet") else Path(path) / MANIFEST_NAME
    if not candidate.is_file():
        return None
    return ExportManifest.from_dict(json.loads(candidate.read_text()))


def read_export_rows(path: str | os.PathLike) -> pd.DataFrame:
    """An export's rows as one frame with a `split` column, whatever its format (jsonl, parquet, dataset dir).

    Raises ExportError naming the file (and line, for JSONL) when it cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise ExportError(f"export {str(path)!r}: no such file or directory")
    if path.is_dir():
        from datasets import load_from_disk

        try:
            loaded = load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as exc:
            raise ExportError(f"export {str(path)!r}: not a saved dataset ({exc})") from exc
        if hasattr(loaded, "keys"):
            parts = [loaded[name].to_pandas().assign(split=name) for name in loaded.keys()]
            return pd.concat(parts, ignore_index=True)
        return loaded.to_pandas().assign(split="train")
    if path.suffix == ".parquet":
        try:
            frame = pd.read_parquet(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many types for a bad file
            raise ExportError(f"export {str(path)!r}: not a readable Parquet file ({exc})") from exc
    else:
        frame = _read_jsonl(path)
    if "split" not in frame.columns:
        frame["split"] = "train"
    return frame


def _read_jsonl(path: Path) -> pd.DataFrame:
    records = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ExportError(f"{path}: line {line_number}: not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ExportError(f"{path}: line {line_number}: expected a JSON object")
            records.append(record)
    return pd.DataFrame.from_records(records)


# --------------------------------------------------------------------------- the export


def build_export_rows(
    engine: Engine, project: str | int, format: str, options: ExportOptions, *, salt: str | None = None
) -> tuple[pd.DataFrame, dict[str, int], bool]:
    """Read `project` and build the rows of `format` (without `split`); returns rows, counts, conversational."""
    if format == "trl":
        responses = response_frame(engine, project)
        if options.from_ratings:
            table = pairs_from_ratings(rating_frame(engine, project, RATING_PAIR_COLUMNS), options)
        else:
            table = pairs_from_preferences(preference_frame(engine, project, PAIR_VOTE_COLUMNS), options)
            table = _with_ranking_pairs(engine, project, table, options)
        edits = _edit_pairs(engine, project, options) if options.include_edits else None
        if table.pairs.empty and (edits is None or edits.empty):
            source = "ratings" if options.from_ratings else "pairwise judgments"
            source += " or substantive edits" if options.include_edits else ""
            raise ExportError(nothing_usable(project, f"no usable preference pairs from {source}", table.counts))
        rows, conversational = trl_rows(table.pairs, responses, options)
        if "group_id" in table.pairs:  # rankings: a group per ranking, a comparison its own group
            rows["group_id"] = table.pairs["group_id"].fillna("pair-" + table.pairs["task_id"].astype(str)).to_numpy()
        if edits is not None:
            rows = _with_edit_pairs(rows, edits, conversational)
            table.counts["edit_pairs"] = int((rows["source"] == "edit").sum())
        from rlhf.selection.export_columns import add_pair_reasons
        from rlhf.selection.scores import reasons_frame

        rows = add_pair_reasons(rows, reasons_frame(engine, project_id_of(engine, project)))
        return rows, table.counts | {"pairs": int(len(rows))}, conversational
    if format == "sft":
        return _sft_rows(engine, project, options)
    if format == "ratings":
        ratings = rating_frame(engine, project)
        rows, counts = rating_rows(ratings, response_frame(engine, project), options)
        if rows.empty:
            raise ExportError(nothing_usable(project, "no ratings to export", counts))
        from rlhf.selection.export_columns import add_response_reasons
        from rlhf.selection.scores import reasons_frame

        return add_response_reasons(rows, ratings, reasons_frame(engine, project_id_of(engine, project))), counts, False
    if format == "raw":
        from rlhf.selection.scores import reasons_frame

        rows, counts = raw_rows(
            rating_frame(engine, project), preference_frame(engine, project), response_frame(engine, project), options, salt or "",
            reasons_frame(engine, project_id_of(engine, project)),
        )
        if rows.empty:
            raise ExportError(nothing_usable(project, "no annotations to export", counts))
        return rows, counts, False
    raise ExportError(f"format {format!r}: expected one of {', '.join(EXPORT_FORMATS)}")


def _demonstrations(engine: Engine, project: str | int, options: ExportOptions) -> pd.DataFrame:
    """The project's demonstrations (people's only unless `include_external`)."""
    from rlhf.sft_export import demonstration_frame

    frame = demonstration_frame(engine, project)
    return frame if options.include_external else frame[frame["annotator_role"].isin(HUMAN_ROLES)]


def _sft_rows(engine: Engine, project: str | int, options: ExportOptions) -> tuple[pd.DataFrame, dict[str, int], bool]:
    from rlhf.sft_export import filter_reviewed, sft_rows

    frame = _demonstrations(engine, project, options)
    kept, dropped = filter_reviewed(frame, options.min_review_score)
    counts = {"demonstrations": int(len(frame)), "dropped_review_score": dropped}
    if kept.empty:
        raise ExportError(nothing_usable(project, "no demonstrations to export (write tasks)", counts))
    return sft_rows(kept, options.sft_shape), counts | {"examples": int(len(kept))}, True


def _edit_pairs(engine: Engine, project: str | int, options: ExportOptions) -> pd.DataFrame:
    """The demonstrations that edited a model reply substantively (their rows are built once the columns are known)."""
    from rlhf.sft_export import substantive_edits

    return substantive_edits(_demonstrations(engine, project, options))


def _with_edit_pairs(rows: pd.DataFrame, demonstrations: pd.DataFrame, conversational: bool) -> pd.DataFrame:
    from rlhf.sft_export import edit_pair_rows

    edits = edit_pair_rows(demonstrations, conversational, list(rows.columns))
    rows = rows.assign(source="comparison")
    return pd.concat([rows, edits.assign(source="edit")], ignore_index=True) if not edits.empty else rows
def _with_ranking_pairs(engine: Engine, project: str | int, table: PairTable, options: ExportOptions) -> PairTable:
    """The comparisons' pairs plus the C(K, 2) pairs of every ranking (`rlhf.ranking_export`)."""
    from rlhf.ranking_export import ranking_pairs
    from rlhf.ranking_stats import ranking_frame

    pairs, counts = ranking_pairs(ranking_frame(engine, project), options)
    if pairs.empty:
        return table
    combined = pd.concat([table.pairs.assign(group_id=None), pairs], ignore_index=True) if len(table.pairs) else pairs
    return PairTable(combined, table.counts | counts)


def export_project(
    engine: Engine,
    actor: Actor,
    project: str | int,
    *,
    format: str,
    out: str | os.PathLike,
    options: ExportOptions | None = None,
    overwrite: bool = False,
    job_id: int | None = None,
    reporter: Reporter | None = None,
    record_artifact: bool = True,
) -> ExportManifest:
    """Export `project` as `format` to `out` (admin only); returns the manifest written beside it.

    Raises ExportError (nothing written) when there is nothing usable or the options are wrong,
    PermissionDenied for non-admins, ProjectNotFound for an unknown project.
    """
    check_admin(engine, actor, "export project data")
    options = options or ExportOptions()
    options.validate()
    if options.sources is not None:
        options = dataclasses.replace(options, source_ids=resolve_sources(engine, options.sources))
    out = Path(out)
    kind = output_kind(out)
    if out.exists() and not overwrite:
        raise ExportError(f"output {str(out)!r} exists (pass overwrite to replace it)")
    project_id = project_id_of(engine, project)
    _check_judge_sources_allowed(engine, project_id, options)
    say = reporter.progress if reporter is not None else (lambda *a, **k: None)
    say(0, 3, "reading annotations")
    salt = options.salt if options.salt is not None else secrets.token_hex(16)
    rows, counts, conversational = build_export_rows(engine, project_id, format, options, salt=salt)
    check_stop(reporter)
    say(1, 3, "splitting by prompt")
    rows["split"] = np.where(grouped_split(rows["prompt_hash"], options.test_size, options.seed), "test", "train")
    rows = rows.drop(columns=["prompt_hash"])
    lines = canonical_json_lines(rows)
    manifest = ExportManifest(
        format=format,
        project=get_project(engine, project_id).name,
        project_id=project_id,
        path=str(out.resolve()),
        files=[],
        rows=int(len(rows)),
        split_counts={s: int((rows["split"] == s).sum()) for s in ("train", "test")},
        counts=counts,
        options=options.recorded() | {"output": kind},
        content_hash=lines_hash(lines),
        conversational=conversational,
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        software_version=__version__,
        columns=[c for c in rows.columns if c != "split" or kind != "dataset"],
    )
    check_stop(reporter)
    say(2, 3, "writing")
    write_export(rows, out, manifest, overwrite=overwrite, lines=lines)
    if record_artifact:
        try:
            manifest.artifact_id = _record_artifact(engine, actor, manifest, job_id)
        except BaseException:
            _remove_export(out)
            raise
    say(3, 3, f"{manifest.rows} rows")
    return manifest


def _record_artifact(engine: Engine, actor: Actor, manifest: ExportManifest, job_id: int | None) -> int:
    from rlhf.db import run_transaction
    from rlhf.redact import redact
    from rlhf.schema import Artifact

    def work(session) -> int:
        artifact = Artifact(
            kind="export",
            name=f"{manifest.project}:{manifest.format}:{manifest.content_hash[:12]}",
            path=manifest.path,
            content_hash=manifest.content_hash,
            project_id=manifest.project_id,
            job_id=job_id,
            parent_ids=[],
            lineage=redact({"format": manifest.format, "options": manifest.options, "software_version": manifest.software_version}),
            metrics={"rows": manifest.rows, **manifest.split_counts, **manifest.counts},
            created_by=getattr(actor, "id", None),
        )
        session.add(artifact)
        session.flush()
        return int(artifact.id)

    return run_transaction(engine, work)


def _remove_export(out: Path) -> None:
    manifest = manifest_path_for(out)
    if out.is_dir():
        shutil.rmtree(out, ignore_errors=True)
    else:
        out.unlink(missing_ok=True)
        manifest.unlink(missing_ok=True)

