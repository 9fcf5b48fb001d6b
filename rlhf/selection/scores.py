"""The `select-scores` job: score a project's open tasks under its strategy, store them, keep them fresh.

Steps of `compute_scores` (the job's body):
1. read the project's strategy and its open tasks (regular, below their target);
2. score them (rlhf.selection.strategies): uncertainty from the project's newest reward model
   and a bootstrap ensemble of last-layer heads; disagreement from the Dawid–Skene posterior;
   mixed blends both and keeps a random share. A strategy that needs a reward model when the
   project has none falls back to least-annotated, and says so (log, state, page);
3. store: a `SelectionScore` row per ranked task, its rank copied to `Task.selection_rank`
   (what `next_task` walks), in short transactions so annotators never wait on the job;
4. record the run in `SelectionState` (what it used, labels at the time, the reward model's
   accuracy on the random share) for the page, the dashboard and the staleness check.

Freshness: the worker calls `queue_stale_scoring` between jobs; a project is re-scored when its
strategy changed, a newer reward model was recorded, or enough labels arrived since the last run
(`REFRESH_MIN_LABELS`, `REFRESH_SHARE`). Nothing here blocks annotation: a missing or stale
table only leaves the order as it was (rank 0 = not scored = least-annotated order).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from rlhf.assign import dialect_insert, load_project
from rlhf.db import run_transaction
from rlhf.progress import NullReporter, Reporter, check_stop
from rlhf.schema import Artifact, Job, Preference, Rating, SelectionScore, SelectionState, Task, utcnow
from rlhf.selection import strategies as st

log = logging.getLogger(__name__)

TASK, SCORE, STATE, JOB, ARTIFACT = Task.__table__, SelectionScore.__table__, SelectionState.__table__, Job.__table__, Artifact.__table__
REFRESH_MIN_LABELS = 50
"""Re-score when at least this many labels arrived since the last run ..."""
REFRESH_SHARE = 0.10
"""... and they are at least this share of the labels the last run saw."""
MIN_LABELLED_PAIRS = 8
"""Fewer labelled pairs than this: no ensemble fit; the spread is taken as 1 logit (the model's own confidence decides)."""
CONFIDENT = 0.9
"""Disagreement asks an extra vote (up to max_overlap) on a complete task whose top posterior is below this."""
WRITE_CHUNK = 2000
HISTORY_POINTS = 500


@dataclass(frozen=True)
class SelectionConfig:
    """Params of a `select-scores` job."""

    n_heads: int = 8
    """Bootstrap heads in the uncertainty ensemble."""
    l2: float = 1.0
    """L2 penalty of each head's logistic fit."""
    random_share: float = st.RANDOM_SHARE
    """Share of `mixed` positions given to tasks drawn at random (flagged; kept for evaluation)."""
    max_tasks: int = 50_000
    """Most open tasks scored by the reward model in one run (the rest keep rank 0: least-annotated order)."""
    seed: int = 0
    """Seeds the bootstrap, the tie-break and the random share."""

    def validate(self) -> "SelectionConfig":
        if self.n_heads < 2:
            raise ValueError("n_heads: at least 2")
        if self.l2 <= 0:
            raise ValueError("l2: must be > 0")
        if not 0 <= self.random_share < 1:
            raise ValueError("random_share: must be within [0, 1)")
        if self.max_tasks < 1:
            raise ValueError("max_tasks: at least 1")
        return self


@dataclass(frozen=True)
class ScoringRun:
    """What one run did."""

    project_id: int
    requested: str
    applied: str
    note: str
    scored_tasks: int
    labels: int
    reward_artifact_id: Optional[int]
    rm_accuracy_random: Optional[float]
    random_pairs: int
    seconds: float

    def line(self) -> str:
        head = f"{self.scored_tasks} task(s) ranked by {self.applied}"
        if self.applied != self.requested:
            head += f" (asked: {self.requested})"
        return f"{head}; {self.note}" if self.note else head


# --------------------------------------------------------------------------- reading


def label_count(connection, project_id: int) -> int:
    """Annotations on the project's regular tasks (the sum of their counts: one indexed scan of the project)."""
    return int(connection.execute(select(func.coalesce(func.sum(TASK.c.annotation_count), 0)).where(TASK.c.project_id == project_id, TASK.c.is_gold.is_(False))).scalar())


def latest_reward_model(connection, project_id: int) -> Optional[Any]:
    """The project's newest reward-model artifact whose directory still exists, or None."""
    rows = connection.execute(
        select(ARTIFACT.c.id, ARTIFACT.c.path).where(ARTIFACT.c.project_id == project_id, ARTIFACT.c.kind == "reward_model").order_by(ARTIFACT.c.id.desc())
    ).all()
    return next((row for row in rows if row.path and Path(row.path).is_dir()), None)


def open_tasks(engine: Engine, project_id: int) -> pd.DataFrame:
    """Regular tasks below their target: task_id, kind, prompt_id, response_a_id, response_b_id, annotation_count."""

    def work(session: Session) -> pd.DataFrame:
        connection = session.connection()
        settings = load_project(connection, project_id)
        from rlhf.assign import target_expression

        rows = connection.execute(
            select(TASK.c.id, TASK.c.kind, TASK.c.prompt_id, TASK.c.response_a_id, TASK.c.response_b_id, TASK.c.annotation_count).where(
                TASK.c.project_id == project_id, TASK.c.is_gold.is_(False), TASK.c.annotation_count < target_expression()
            ).order_by(TASK.c.id),
            {"overlap": settings.overlap, "cap": settings.overlap_cap},
        ).all()
        return pd.DataFrame(rows, columns=["task_id", "kind", "prompt_id", "response_a_id", "response_b_id", "annotation_count"])

    return run_transaction(engine, work, write=False)


def reasons_frame(engine: Engine, project_id: int) -> pd.DataFrame:
    """Why each annotation's task was chosen: task_id, annotator_id, kind, selection_strategy, selection_score, selection_random (oldest annotation first per kind)."""
    frames = []
    for model, kind in ((Preference, "pairwise"), (Rating, "rating")):
        table = model.__table__
        statement = (
            select(table.c.task_id, table.c.user_id, table.c.selection_strategy, table.c.selection_score, table.c.selection_random)
            .join(TASK, TASK.c.id == table.c.task_id)
            .where(TASK.c.project_id == project_id)
            .order_by(table.c.id)
        )
        with engine.connect() as connection:
            rows = connection.execute(statement).all()
        frame = pd.DataFrame(rows, columns=["task_id", "annotator_id", "selection_strategy", "selection_score", "selection_random"])
        frame.insert(2, "kind", kind)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# --------------------------------------------------------------------------- scoring


def _entropies(votes: pd.DataFrame) -> tuple[pd.Series, pd.Series, float]:
    """Dawid–Skene over long-format votes (item, annotator, value): per item normalised entropy and top posterior, and the prior's entropy."""
    from rlhf.aggregation.dawid_skene import DawidSkene

    if votes.empty:
        return pd.Series(dtype=float), pd.Series(dtype=float), 1.0
    model = DawidSkene().fit(votes)
    probas = model.probas_.to_numpy()
    entropy = pd.Series(st.posterior_entropy(probas), index=model.probas_.index)
    top = pd.Series(probas.max(axis=1), index=model.probas_.index)
    prior = float(st.posterior_entropy(model.priors_.to_numpy()[None, :])[0])
    return entropy, top, prior


def disagreement_scores(engine: Engine, project_id: int, tasks: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Per task (index task_id): the Dawid–Skene posterior entropy (open tasks), and the top posterior of every voted task.

    Pairwise tasks: one fit over the choices. Rating tasks: one fit per rubric dimension (scores
    as classes), entropies averaged over the dimensions.
    """
    from rlhf.frames import preference_frame, rating_frame

    prefs = preference_frame(engine, project_id, ["task_id", "annotator_id", "choice", "is_gold"])
    prefs = prefs[~prefs["is_gold"]]
    entropy, top, prior = _entropies(prefs.rename(columns={"task_id": "item", "annotator_id": "annotator", "choice": "value"})[["item", "annotator", "value"]])
    pair_ids = tasks.loc[tasks["kind"] == "pairwise", "task_id"]
    scores = {int(t): float(entropy.get(t, prior)) for t in pair_ids}
    tops = top.to_dict()

    ratings = rating_frame(engine, project_id, ["task_id", "annotator_id", "dimension", "value", "is_gold"])
    ratings = ratings[~ratings["is_gold"]].dropna(subset=["value"])
    rating_ids = tasks.loc[tasks["kind"] == "rating", "task_id"]
    per_dimension, priors, rating_tops = [], [], []
    for _, group in ratings.groupby("dimension"):
        votes = group.rename(columns={"task_id": "item", "annotator_id": "annotator"})[["item", "annotator", "value"]]
        e, t, p = _entropies(votes.assign(value=votes["value"].round().astype(int)))
        per_dimension.append(e)
        rating_tops.append(t)
        priors.append(p)
    for t in rating_ids:
        values = [float(e.get(t, p)) for e, p in zip(per_dimension, priors)]
        scores[int(t)] = float(np.mean(values)) if values else 1.0
    if rating_tops:
        tops.update(pd.concat(rating_tops, axis=1).min(axis=1).to_dict())
    return pd.Series(scores, dtype=float), pd.Series(tops, dtype=float)


@dataclass(frozen=True)
class ModelView:
    """The reward model's view of some pairwise tasks: raw difference and ensemble spread (logits)."""

    delta: pd.Series
    spread: pd.Series
    labelled_pairs: int
    rm_accuracy_random: Optional[float]
    random_pairs: int


def pair_labels(engine: Engine, project_id: int) -> pd.DataFrame:
    """Labelled pairwise tasks: task_id, win (1 when A is the majority choice among a/b votes), random (a vote of the random share)."""
    from rlhf.frames import preference_frame

    prefs = preference_frame(engine, project_id, ["task_id", "annotator_id", "choice", "is_gold"])
    prefs = prefs[~prefs["is_gold"] & prefs["choice"].isin(["a", "b"])]
    if prefs.empty:
        return pd.DataFrame(columns=["task_id", "win", "random"])
    reasons = reasons_frame(engine, project_id)
    unbiased = reasons[(reasons["selection_random"] == True) | (reasons["selection_strategy"] == "least-annotated")]  # noqa: E712 - pandas
    share = prefs.groupby("task_id")["choice"].agg(lambda c: (c == "a").mean())
    share = share[share != 0.5]
    out = pd.DataFrame({"task_id": share.index.astype(int), "win": (share.to_numpy() > 0.5).astype(float)})
    out["random"] = out["task_id"].isin(set(unbiased.loc[unbiased["kind"] == "pairwise", "task_id"]))
    return out


def model_view(engine: Engine, project_id: int, reward_path: str, open_pairs: pd.DataFrame, config: SelectionConfig, reporter: Reporter) -> ModelView:
    """Score the responses of the open and the labelled pairs with the reward model; fit the ensemble on the labelled ones."""
    from rlhf.frames import response_frame
    from rlhf.reward.scorer import RewardModel
    from rlhf.schema import Task as TaskRow
    from rlhf.selection.ensemble import HeadEnsemble
    from rlhf.selection.reward_features import reward_scores_and_features

    labels = pair_labels(engine, project_id)
    with engine.connect() as connection:
        pairs = pd.DataFrame(
            connection.execute(select(TaskRow.id, TaskRow.response_a_id, TaskRow.response_b_id).where(TaskRow.project_id == project_id, TaskRow.kind == "pairwise")).all(),
            columns=["task_id", "response_a_id", "response_b_id"],
        ).set_index("task_id")
    wanted = pd.Index(open_pairs["task_id"].astype(int)).union(pd.Index(labels["task_id"].astype(int)))
    pairs = pairs.loc[pairs.index.intersection(wanted)]
    responses = response_frame(engine, project_id).set_index("response_id")
    ids = pd.unique(np.concatenate([pairs["response_a_id"].to_numpy(), pairs["response_b_id"].to_numpy()]))
    rows = responses.loc[ids]
    prompts = [m if isinstance(m, list) and m else t for m, t in zip(rows["prompt_messages"], rows["prompt_text"])]
    reporter.log(f"scoring {len(ids)} responses with the reward model at {reward_path}")
    model = RewardModel.load(reward_path, device="cpu")
    raw, features = reward_scores_and_features(model, prompts, list(rows["response_text"]))
    check_stop(reporter)
    position = pd.Series(np.arange(len(ids)), index=ids)
    a, b = position.loc[pairs["response_a_id"]].to_numpy(), position.loc[pairs["response_b_id"]].to_numpy()
    delta = pd.Series(raw[a] - raw[b], index=pairs.index)
    diffs = pd.DataFrame(features[a] - features[b], index=pairs.index)

    labelled = labels[labels["task_id"].isin(pairs.index)]
    if len(labelled) >= MIN_LABELLED_PAIRS:
        ensemble = HeadEnsemble(n_heads=config.n_heads, l2=config.l2, seed=config.seed).fit(diffs.loc[labelled["task_id"]].to_numpy(), labelled["win"].to_numpy())
        _, spread = ensemble.predict(diffs.to_numpy())
        spread = pd.Series(spread, index=pairs.index)
    else:
        spread = pd.Series(1.0, index=pairs.index)
    held = labelled[labelled["random"]]
    accuracy = float(((delta.loc[held["task_id"]].to_numpy() > 0) == (held["win"].to_numpy() > 0.5)).mean()) if len(held) else None
    return ModelView(delta=delta, spread=spread, labelled_pairs=len(labelled), rm_accuracy_random=accuracy, random_pairs=len(held))


def rank_tasks(requested: str, tasks: pd.DataFrame, disagreement: Optional[pd.Series], view: Optional[ModelView], config: SelectionConfig) -> tuple[str, st.Ranked]:
    """The applied strategy and the order of `tasks` under `requested` (pure once the inputs are read)."""
    ids = tasks["task_id"].astype(int).to_numpy()
    if requested == st.UNCERTAINTY:
        if view is None:
            return st.LEAST_ANNOTATED, st.order([], np.zeros(0))
        pair_ids = tasks.loc[tasks["kind"] == "pairwise", "task_id"].astype(int).to_numpy()
        scores = st.uncertainty_scores(view.delta.reindex(pair_ids).to_numpy(), view.spread.reindex(pair_ids).to_numpy())
        return st.UNCERTAINTY, st.order(pair_ids, scores, seed=config.seed)
    if requested == st.DISAGREEMENT:
        return st.DISAGREEMENT, st.order(ids, disagreement.reindex(ids).fillna(1.0).to_numpy(), seed=config.seed)
    if requested == st.MIXED:
        parts = [disagreement.reindex(ids).fillna(1.0).to_numpy()]
        if view is not None:
            model_score = pd.Series(st.uncertainty_scores(view.delta.to_numpy(), view.spread.to_numpy()), index=view.delta.index)
            parts.append(model_score.reindex(ids).fillna(0.5).to_numpy())
        return st.MIXED, st.order(ids, st.blend(*parts), random_share=config.random_share, seed=config.seed)
    return st.LEAST_ANNOTATED, st.order([], np.zeros(0))


# --------------------------------------------------------------------------- writing


def store_order(engine: Engine, project_id: int, strategy: str, ranked: st.Ranked, now) -> None:
    """Replace the project's score rows and task ranks with `ranked`, in short transactions.

    Tasks no longer ranked go back to rank 0 (least-annotated order) and lose their score row.
    Every intermediate state is a valid order, so annotators never wait for the whole rewrite.
    """
    ranks = {int(t): i + 1 for i, t in enumerate(ranked.task_ids)}

    def reset(session: Session) -> None:
        connection = session.connection()
        current = connection.execute(select(TASK.c.id, TASK.c.selection_rank).where(TASK.c.project_id == project_id, TASK.c.selection_rank != 0)).all()
        stale = [row.id for row in current if row.id not in ranks]
        for start in range(0, len(stale), 500):
            connection.execute(update(TASK).where(TASK.c.id.in_(stale[start : start + 500])).values(selection_rank=0))
        if ranks:
            connection.execute(delete(SCORE).where(SCORE.c.project_id == project_id, SCORE.c.strategy != strategy))
        else:
            connection.execute(delete(SCORE).where(SCORE.c.project_id == project_id))

    run_transaction(engine, reset)
    rows = [
        {"task_id": int(t), "project_id": project_id, "strategy": strategy, "score": float(s), "rank": i + 1, "is_random": bool(r), "computed_at": now}
        for i, (t, s, r) in enumerate(zip(ranked.task_ids, ranked.scores, ranked.is_random))
    ]
    for start in range(0, len(rows), WRITE_CHUNK):
        chunk = rows[start : start + WRITE_CHUNK]

        def write(session: Session, chunk=chunk) -> None:
            connection = session.connection()
            insert = dialect_insert(connection.dialect.name)(SCORE)
            upsert = insert.on_conflict_do_update(
                index_elements=[SCORE.c.task_id],
                set_={name: insert.excluded[name] for name in ("strategy", "score", "rank", "is_random", "computed_at")},
            )
            connection.execute(upsert, chunk)
            connection.execute(
                update(TASK).where(TASK.c.id == bindparam("tid")).values(selection_rank=bindparam("new_rank")),
                [{"tid": row["task_id"], "new_rank": row["rank"]} for row in chunk],
            )

        run_transaction(engine, write)
    # Score rows of tasks that left the open set (filled since the last run).
    def prune(session: Session) -> None:
        connection = session.connection()
        kept = connection.execute(select(SCORE.c.task_id).where(SCORE.c.project_id == project_id)).scalars().all()
        gone = [t for t in kept if t not in ranks]
        for start in range(0, len(gone), 500):
            connection.execute(delete(SCORE).where(SCORE.c.task_id.in_(gone[start : start + 500])))

    run_transaction(engine, prune)


def labels_by_strategy(engine: Engine, project_id: int) -> dict[str, int]:
    """Annotations per recorded selection strategy (None → 'unrecorded': made before selection was recorded)."""
    reasons = reasons_frame(engine, project_id)
    counts = reasons["selection_strategy"].fillna("unrecorded").value_counts()
    return {str(k): int(v) for k, v in counts.items()}


def _record_state(engine: Engine, run: ScoringRun, labels_split: dict[str, int], now) -> None:
    def work(session: Session) -> None:
        state = session.get(SelectionState, run.project_id) or SelectionState(project_id=run.project_id, requested=run.requested, applied=run.applied)
        point = {
            "at": now.isoformat(), "requested": run.requested, "applied": run.applied, "labels": run.labels,
            "labels_by_strategy": labels_split, "rm_accuracy_random": run.rm_accuracy_random, "random_pairs": run.random_pairs,
        }
        state.requested, state.applied, state.note = run.requested, run.applied, run.note[:2000]
        state.labels_at, state.reward_artifact_id, state.scored_tasks = run.labels, run.reward_artifact_id, run.scored_tasks
        state.seconds, state.computed_at = run.seconds, now
        state.history = ([*(state.history or []), point])[-HISTORY_POINTS:]
        session.add(state)

    run_transaction(engine, work)


def compute_scores(engine: Engine, project_id: int, config: SelectionConfig | None = None, *, reporter: Reporter | None = None) -> ScoringRun:
    """Score and store the open tasks of `project_id` under its strategy (the `select-scores` job). See the module docstring."""
    config = (config or SelectionConfig()).validate()
    reporter = reporter or NullReporter()
    started = time.perf_counter()
    # 1. the strategy, the open tasks, the reward model
    with engine.connect() as connection:
        settings = load_project(connection, project_id)
        labels = label_count(connection, project_id)
        reward = latest_reward_model(connection, project_id)
    requested = settings.selection
    tasks = open_tasks(engine, project_id) if requested != st.LEAST_ANNOTATED else pd.DataFrame(columns=["task_id", "kind"])
    reporter.progress(1, 4, f"{len(tasks)} open task(s), strategy {requested}")

    # 2. scores
    notes: list[str] = []
    view = None
    disagreement = tops = None
    if requested in (st.DISAGREEMENT, st.MIXED):
        disagreement, tops = disagreement_scores(engine, project_id, tasks)
    if requested in (st.UNCERTAINTY, st.MIXED) or reward is not None:
        if reward is None:
            notes.append("no reward model for this project: " + ("blended without it" if requested == st.MIXED else "falling back to least-annotated"))
        else:
            open_pairs = tasks[tasks["kind"] == "pairwise"].head(config.max_tasks) if len(tasks) else tasks
            view = model_view(engine, project_id, reward.path, open_pairs, config, reporter)
            notes.append(f"reward model artifact {reward.id} ({view.labelled_pairs} labelled pair(s) for the ensemble)")
    check_stop(reporter)
    reporter.progress(2, 4, "scored")
    applied, ranked = rank_tasks(requested, tasks, disagreement, view if requested != st.DISAGREEMENT else None, config)
    if applied != requested:
        log.warning("project %s: selection %s needs a reward model; none recorded, least-annotated order kept", settings.name, requested)
        reporter.log(f"selection {requested}: no reward model for project {settings.name!r}; falling back to least-annotated")
    if requested == st.DISAGREEMENT and tops is not None and settings.overlap_cap > settings.overlap:
        raised = _raise_targets(engine, project_id, tops, settings)
        if raised:
            notes.append(f"{raised} complete task(s) asked one more vote (top posterior < {CONFIDENT})")

    # 3. store
    now = utcnow()
    store_order(engine, project_id, applied, ranked, now)
    reporter.progress(3, 4, "stored")
    run = ScoringRun(
        project_id=project_id, requested=requested, applied=applied, note="; ".join(notes), scored_tasks=len(ranked.task_ids), labels=labels,
        reward_artifact_id=reward.id if reward is not None else None, rm_accuracy_random=view.rm_accuracy_random if view else None,
        random_pairs=view.random_pairs if view else 0, seconds=round(time.perf_counter() - started, 3),
    )
    # 4. record
    _record_state(engine, run, labels_by_strategy(engine, project_id), now)
    values = {"labels": float(labels), "scored_tasks": float(run.scored_tasks)}
    if run.rm_accuracy_random is not None:
        values["rm_accuracy_random"] = run.rm_accuracy_random
    reporter.metrics(labels, values)
    reporter.progress(4, 4, run.line())
    return run


def _raise_targets(engine: Engine, project_id: int, tops: pd.Series, settings) -> int:
    """One more vote on complete tasks whose top posterior is below CONFIDENT, within max_overlap (extra votes where they pay)."""
    from rlhf.assign import target_expression

    unsure = [int(t) for t, p in tops.items() if p < CONFIDENT]
    if not unsure:
        return 0

    def work(session: Session) -> int:
        connection = session.connection()
        target = target_expression()
        binds = {"overlap": settings.overlap, "cap": settings.overlap_cap}
        raised = 0
        for start in range(0, len(unsure), 500):
            chunk = unsure[start : start + 500]
            result = connection.execute(
                update(TASK)
                .where(TASK.c.id.in_(chunk), TASK.c.project_id == project_id, TASK.c.annotation_count >= target, target < bindparam("cap"))
                .values(target_overlap=target + 1),
                binds,
            )
            raised += result.rowcount or 0
        return raised

    return run_transaction(engine, work)


# --------------------------------------------------------------------------- freshness


def _pending_job(connection, project_id: int) -> bool:
    return connection.execute(
        select(JOB.c.id).where(JOB.c.kind == "select-scores", JOB.c.project_id == project_id, JOB.c.status.in_(["queued", "running"])).limit(1)
    ).first() is not None


def queue_scoring_in(session: Session, project_id: int, *, created_by: Optional[int] = None) -> Optional[int]:
    """Queue a `select-scores` job for the project inside the caller's transaction, unless one is queued or running; its id."""
    connection = session.connection()
    if _pending_job(connection, project_id):
        return None
    job = Job(kind="select-scores", params=dataclasses.asdict(SelectionConfig()), project_id=project_id, created_by=created_by)
    session.add(job)
    session.flush()
    return job.id


def stale_reason(state: Optional[Any], selection: str, labels: int, reward_id: Optional[int]) -> Optional[str]:
    """Why the stored order is out of date (None: fresh). `state`: the SelectionState row or None."""
    if state is None:
        return None if selection == st.LEAST_ANNOTATED else "never scored"
    if state.requested != selection:
        return f"strategy changed ({state.requested} → {selection})"
    if selection == st.LEAST_ANNOTATED:
        return None
    if reward_id is not None and reward_id != state.reward_artifact_id:
        return "a newer reward model"
    new = labels - state.labels_at
    if new >= REFRESH_MIN_LABELS and new >= REFRESH_SHARE * max(state.labels_at, 1):
        return f"{new} new label(s)"
    return None


def queue_stale_scoring(engine: Engine) -> list[int]:
    """Queue a `select-scores` job for every project whose stored order is stale (the worker calls this); the job ids."""

    def work(session: Session) -> list[int]:
        from rlhf.schema import Project

        connection = session.connection()
        states = {row.project_id: row for row in connection.execute(select(STATE)).all()}
        queued = []
        for project_id, selection in connection.execute(select(Project.__table__.c.id, Project.__table__.c.selection)).all():
            state = states.get(project_id)
            if selection == st.LEAST_ANNOTATED and (state is None or state.requested == st.LEAST_ANNOTATED):
                continue
            reward = latest_reward_model(connection, project_id)
            reason = stale_reason(state, selection, label_count(connection, project_id), reward.id if reward is not None else None)
            if reason is not None:
                job_id = queue_scoring_in(session, project_id)
                if job_id is not None:
                    log.info("project %s: selection scores stale (%s); queued job %s", project_id, reason, job_id)
                    queued.append(job_id)
        return queued

    return run_transaction(engine, work)


@dataclass(frozen=True)
class SelectionStatus:
    """What the project page shows about its selection."""

    selection: str
    applied: Optional[str]
    """The order in force (None: never scored)."""
    note: str
    computed_at: Optional[Any]
    stale: Optional[str]
    """Why it is out of date, or None."""
    scored_tasks: int
    history: list

    @property
    def fallback(self) -> bool:
        return self.applied is not None and self.applied != self.selection


def selection_status(engine: Engine, project_id: int) -> SelectionStatus:
    """The project's strategy, the order in force, why it fell back, whether it is stale."""

    def work(session: Session) -> SelectionStatus:
        connection = session.connection()
        settings = load_project(connection, project_id)
        state = session.get(SelectionState, project_id)
        reward = latest_reward_model(connection, project_id)
        stale = stale_reason(state, settings.selection, label_count(connection, project_id), reward.id if reward is not None else None)
        if state is None:
            return SelectionStatus(settings.selection, None, "", None, stale, 0, [])
        return SelectionStatus(settings.selection, state.applied, state.note, state.computed_at, stale, state.scored_tasks, list(state.history or []))

    return run_transaction(engine, work, write=False)


@dataclass(frozen=True)
class SelectionOverview:
    """The dashboard's selection section: labels per strategy now, and per scoring run over time."""

    status: SelectionStatus
    labels: pd.DataFrame
    """strategy, labels (annotations recorded with that reason)."""
    history: pd.DataFrame
    """One row per (run, strategy): at (UTC), strategy, labels (cumulative), rm_accuracy_random, random_pairs."""


def selection_overview(engine: Engine, actor: Any, project_id: int) -> SelectionOverview:
    """Labels used per strategy and the reward model's accuracy on the random share over time (admin only)."""
    from rlhf.roles import check_admin

    run_transaction(engine, lambda session: check_admin(session, actor, "view selection statistics"), write=False)
    status = selection_status(engine, project_id)
    counts = labels_by_strategy(engine, project_id)
    labels = pd.DataFrame(sorted(counts.items()), columns=["strategy", "labels"])
    rows = [
        {"at": point["at"], "strategy": strategy, "labels": n, "rm_accuracy_random": point.get("rm_accuracy_random"), "random_pairs": point.get("random_pairs", 0)}
        for point in status.history
        for strategy, n in (point.get("labels_by_strategy") or {}).items()
    ]
    history = pd.DataFrame(rows, columns=["at", "strategy", "labels", "rm_accuracy_random", "random_pairs"])
    history["at"] = pd.to_datetime(history["at"], utc=True)
    return SelectionOverview(status=status, labels=labels, history=history)
