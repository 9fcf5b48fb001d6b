"""Running simulated annotators against a project, through the same engine calls as the app.

Each simulated annotator is a real `annotator` account (created by SYSTEM with
`rlhf.auth.create_user` when missing) that takes tasks with `rlhf.annotate.next_task` and
answers with `submit_rating` / `submit_preference`, whose `next_task` it takes next — the
page's loop, minus the browser. Annotators take turns (round robin over annotator × kind), so
the assignment engine spreads tasks among them as it would among people working at once.

Deterministic: the same config on the same project content gives the same annotations (the
planted profiles are a pure function of the config, every answer is drawn from a generator
seeded by (seed, annotator, task, kind), and the engine's assignment is itself seeded).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from rlhf.annotate import TaskFull, TaskView, next_task, submit_preference, submit_ranking, submit_rating
from rlhf.auth import create_user, load_user, one_time_password
from rlhf.db import session_scope
from rlhf.progress import Reporter, check_stop
from rlhf.projects import get_project
from rlhf.roles import SYSTEM
from rlhf.schema import Prompt, Task, User
from rlhf.simulation.annotators import (
    AnnotatorProfile,
    SimulationConfig,
    decision_rng,
    judge_pair,
    plant_annotators,
    planted_summary,
    rate_response,
)
from rlhf.simulation.gold import GOLD_WEIGHTS, LENGTH_BAND, gold_components, gold_score


class SimulationError(ValueError):
    """The simulation cannot run as asked (an account name taken by a non-annotator, an empty rubric, ...)."""


@dataclass
class PlantedAnnotator:
    """A simulated annotator's planted truth, its account and what it did in this run."""

    profile: AnnotatorProfile
    user_id: int
    created: bool
    """True when this run created the account."""
    ratings: int = 0
    preferences: int = 0
    rankings: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {**self.profile.as_dict(), "user_id": self.user_id, "created": self.created, "ratings": self.ratings, "preferences": self.preferences}


@dataclass
class SimulationResult:
    """What `simulate` did, and the planted truth to check the statistics against."""

    project: str
    project_id: int
    config: SimulationConfig
    annotators: list[PlantedAnnotator]
    ratings: int
    preferences: int
    seconds: float
    stopped: str
    """Why the run ended: `exhausted` (no annotator got another task) or `max_annotations`."""
    planted_truth_path: Optional[str] = None
    notes: list[str] = field(default_factory=list)
    rankings: int = 0

    @property
    def annotations(self) -> int:
        return self.ratings + self.preferences + self.rankings

    @property
    def profiles(self) -> list[AnnotatorProfile]:
        return [a.profile for a in self.annotators]

    def by_username(self) -> dict[str, PlantedAnnotator]:
        return {a.profile.username: a for a in self.annotators}

    def planted_truth(self) -> dict[str, Any]:
        """JSON-ready: config, the gold function's settings, each annotator's profile and counts, and who is what."""
        return {
            "project": self.project,
            "project_id": self.project_id,
            "config": self.config.as_dict(),
            "gold": {"weights": dict(GOLD_WEIGHTS), "length_band_words": list(LENGTH_BAND), "function": "rlhf.simulation.gold.gold_score"},
            "annotators": [a.as_dict() for a in self.annotators],
            "planted": planted_summary(self.profiles),
            "counts": {"ratings": self.ratings, "preferences": self.preferences, "seconds": round(self.seconds, 3), "stopped": self.stopped},
        }

    def line(self) -> str:
        spammers = sum(p.is_spammer for p in self.profiles)
        rate = self.annotations / self.seconds if self.seconds > 0 else 0.0
        return (
            f"simulated {len(self.annotators)} annotators ({spammers} spammers) on project {self.project!r}: "
            f"{self.ratings} ratings, {self.preferences} preferences" + (f", {self.rankings} rankings" if self.rankings else "")
            + f" in {self.seconds:.1f}s ({rate:.0f}/s); stopped: {self.stopped}"
        )


# --------------------------------------------------------------------------- accounts and project facts


def ensure_accounts(engine: Engine, profiles: Iterable[AnnotatorProfile]) -> list[tuple[AnnotatorProfile, User, bool]]:
    """Each profile's account: found by username, or created by SYSTEM as an annotator with a random password.

    Raises SimulationError when the name belongs to an account that cannot annotate (external,
    inactive): the simulation would otherwise act as someone it is not.
    """
    out = []
    for profile in profiles:
        with session_scope(engine) as session:
            user_id = session.execute(select(User.id).where(User.username == profile.username)).scalar()
        created = user_id is None
        if created:
            user_id = create_user(engine, SYSTEM, profile.username, one_time_password(), "annotator").id
        user = load_user(engine, user_id)
        if user is None or not user.active or user.role not in ("annotator", "admin"):
            raise SimulationError(f"account {profile.username!r} exists but cannot annotate (role {getattr(user, 'role', None)!r}, active {getattr(user, 'active', None)!r})")
        out.append((profile, user, created))
    return out


def prompt_categories(engine: Engine, project_id: int) -> dict[str, Optional[str]]:
    """Prompt text → category for the project's prompts (the annotators' privileged knowledge of unsafe requests)."""
    with session_scope(engine) as session:
        rows = session.execute(select(Prompt.text, Prompt.category).where(Prompt.project_id == project_id)).all()
    return {text: category for text, category in rows}


def open_slots(engine: Engine, project_id: int, kinds: Iterable[str], overlap: int) -> int:
    """Annotations the project's regular tasks of `kinds` still need at the base overlap (a progress total)."""
    with session_scope(engine) as session:
        needed = session.execute(
            select(func.coalesce(func.sum(overlap - Task.annotation_count), 0)).where(
                Task.project_id == project_id, Task.kind.in_(list(kinds)), Task.is_gold.is_(False), Task.annotation_count < overlap
            )
        ).scalar()
    return int(needed or 0)


def _rubric(project) -> list[tuple[str, int, int]]:
    rubric = [(str(d["name"]), int(d["min"]), int(d["max"])) for d in (project.rubric or [])]
    if not rubric:
        raise SimulationError(f"project {project.name!r} has no rubric dimensions to rate")
    return rubric


def _prompt_of(view: TaskView) -> Any:
    if view.prompt_messages:
        return [{"role": m.role, "content": m.content} for m in view.prompt_messages]
    return view.prompt_text


# --------------------------------------------------------------------------- one answer


@dataclass
class _Slot:
    """One annotator working through one kind of task: the task on its screen."""

    planted: PlantedAnnotator
    user: User
    kind: str
    view: Optional[TaskView]


def _answer(engine: Engine, slot: _Slot, config: SimulationConfig, categories: dict, rubric, gold_rng: random.Random) -> Optional[TaskView]:
    """Judge or rate the slot's task through the engine; the next task the engine hands back."""
    view = slot.view
    profile = slot.planted.profile
    rng = decision_rng(config.seed, profile.index, view.task_id, slot.kind)
    prompt = _prompt_of(view)
    category = categories.get(view.prompt_text)
    if slot.kind == "ranking":
        from rlhf.ranking import from_shown
        from rlhf.simulation.ranking import rank_cards

        ranked = rank_cards(profile, rng, [gold_score(prompt, c.text, category) for c in view.cards], [len(c.text) for c in view.cards])
        result = submit_ranking(
            engine, slot.user, view.task_id, ranking=[list(g) for g in from_shown(ranked.groups, view.shown_order)],
            time_spent_s=ranked.time_spent_s, next_kind="ranking", rng=gold_rng,
        )
        slot.planted.rankings += int(result.created)
    elif slot.kind == "pairwise":
        answer = judge_pair(
            profile, rng,
            gold_left=gold_score(prompt, view.left.text, category), gold_right=gold_score(prompt, view.right.text, category),
            chars_left=len(view.left.text), chars_right=len(view.right.text), strong_preference=config.strong_preference,
        )
        right_side = "b" if view.shown_left == "a" else "a"
        result = submit_preference(
            engine, slot.user, view.task_id, choice=view.shown_left if answer.picks_left else right_side, strength=answer.strength,
            shown_left=view.shown_left, time_spent_s=answer.time_spent_s, next_kind="pairwise", rng=gold_rng,
        )
        slot.planted.preferences += int(result.created)
    else:
        rating = rate_response(profile, rng, gold_components(prompt, view.response.text, category), rubric)
        result = submit_rating(
            engine, slot.user, view.task_id, scores=rating.scores, time_spent_s=rating.time_spent_s, next_kind="rating", rng=gold_rng,
        )
        slot.planted.ratings += int(result.created)
    return result.next_task


# --------------------------------------------------------------------------- the run


def simulate(
    engine: Engine,
    project: str | int,
    config: SimulationConfig,
    *,
    reporter: Reporter | None = None,
    planted_truth_path: str | os.PathLike | None = None,
) -> SimulationResult:
    """Let simulated annotators label `project` through the annotation engine; their planted truth comes back.

    Creates the accounts it needs (SYSTEM acting), then walks round robin over annotator × kind:
    take the task on screen, answer it from the gold score and the annotator's planted
    profile, submit, take the next task the engine returns. Stops when no annotator gets
    another task, or after `config.max_annotations`. With `planted_truth_path`, the planted
    truth is written there as JSON (atomically). `reporter` gets progress and may cancel
    (Cancelled; annotations made so far stay, each one was its own transaction).
    Raises ProjectNotFound, SimulationError, ValueError (config).
    """
    config.validate()
    started = time.perf_counter()
    project_row = get_project(engine, project)
    rubric = _rubric(project_row) if "rating" in config.kinds else []
    categories = prompt_categories(engine, project_row.id)
    accounts = ensure_accounts(engine, plant_annotators(config))
    planted = [PlantedAnnotator(profile, int(user.id), created) for profile, user, created in accounts]
    users = {p.user_id: user for p, (_, user, _) in zip(planted, accounts)}
    cap = config.max_annotations
    total = open_slots(engine, project_row.id, config.kinds, project_row.overlap)
    total = min(total, cap) if cap is not None else total
    gold_rngs = {(p.profile.index, kind): random.Random(f"gold:{config.seed}:{p.profile.index}:{kind}") for p in planted for kind in config.kinds}

    # 1. every annotator opens each kind of task (the engine leases one to each)
    slots = [
        _Slot(p, users[p.user_id], kind, next_task(engine, users[p.user_id], project_row.id, kind, rng=gold_rngs[(p.profile.index, kind)]))
        for p in planted
        for kind in config.kinds
    ] if cap != 0 else []
    done, stopped = 0, ("max_annotations" if cap == 0 else "exhausted")
    if reporter is not None:
        reporter.progress(0, total, "annotating")

    # 2. round robin: each slot answers its task and takes the next, until none gets one
    active = [s for s in slots if s.view is not None]
    while active:
        for slot in active:
            if cap is not None and done >= cap:
                break
            check_stop(reporter)
            try:
                slot.view = _answer(engine, slot, config, categories, rubric, gold_rngs[(slot.planted.profile.index, slot.kind)])
            except TaskFull:
                # The lease lapsed and others filled the task meanwhile: move on, as a person would.
                slot.view = next_task(engine, slot.user, project_row.id, slot.kind, rng=gold_rngs[(slot.planted.profile.index, slot.kind)])
                continue
            done += 1
            if reporter is not None and done % 50 == 0:
                reporter.progress(done, total, f"{done} annotations")
        if cap is not None and done >= cap:
            stopped = "max_annotations"
            break
        active = [s for s in active if s.view is not None]

    result = SimulationResult(
        project=project_row.name,
        project_id=int(project_row.id),
        config=config,
        annotators=planted,
        ratings=sum(p.ratings for p in planted),
        preferences=sum(p.preferences for p in planted),
        rankings=sum(p.rankings for p in planted),
        seconds=time.perf_counter() - started,
        stopped=stopped,
    )
    if reporter is not None:
        reporter.progress(done, total, result.line())
    if planted_truth_path is not None:
        result.planted_truth_path = str(write_json_atomic(planted_truth_path, result.planted_truth()))
    return result


def write_json_atomic(path: str | os.PathLike, payload: Any) -> Path:
    """Write JSON to a temp file beside `path`, then rename over it (readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
