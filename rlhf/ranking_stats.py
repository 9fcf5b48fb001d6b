"""Statistics of K-way rankings: agreement (Kendall's W, Krippendorff's alpha, implied pairs), annotators, Plackett–Luce.

Input is long format, one row per (ranking, card) — the `ranking_frame` columns:
task_id, annotator_id, card (0 = card A of the task), rank (mid-rank, 1 = best), level (group
index, 0 = best group), position (where the card was shown, 0 = first), response_id, model,
length (characters), is_gold, all_bad. Nothing builds a dense task × annotator matrix:
everything is a bincount over integer codes, so a million rankings take well under a second.

- Kendall's W per task with the tie correction (Kendall & Babington Smith 1939; Siegel &
  Castellan 1988, §9.4): W = 12 S / (m² (n³ − n) − m ΣT), S = Σ_j (R_j − m(n+1)/2)², T = Σ (t³ − t)
  over the tie groups of each ranking. Equivalent to Friedman's tie-corrected χ² / (m (n − 1)).
- Krippendorff's alpha, ordinal, with units (task, card) and values the ranks (rlhf.agreement).
- Agreement on implied pairs: over every two annotators of a task and every two cards, the
  share where both say the same (>, <, =).
- Per annotator: Kendall's tau-b with the leave-one-out consensus (mean rank of the others),
  position bias (tau-b between the shown order and the ranking: 0 = none, 1 = ranks in the
  order shown), length bias (`rlhf.length_model.length_bias` on the pairs the rankings imply).
- Plackett–Luce with ties (Breslow's approximation: a tied group of d cards is d choices from
  the same remaining set), fitted by Hunter's (2004) MM algorithm, per prompt (items = the
  task's cards) and per model (the leaderboard).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import pandas as pd

from rlhf.ranking import kendall_tau

RANKING_COLUMNS = ("task_id", "prompt_id", "annotator_id", "card", "rank", "level", "position", "response_id", "model", "length", "is_gold", "all_bad", "annotator_role")


# ------------------------------------------------------------------------------------- loading


def ranking_frame(engine, project) -> pd.DataFrame:
    """One row per (ranking, card) of `project`'s ranking tasks (see the module docstring), task then annotator order."""
    import sqlalchemy as sa

    from rlhf.frames import project_id_of
    from rlhf.ranking import ranks
    from rlhf.schema import Ranking, Response, Task, User

    ranking, task, response, user = (t.__table__ for t in (Ranking, Task, Response, User))
    project_id = project_id_of(engine, project)
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(ranking.c.task_id, ranking.c.user_id, ranking.c.groups, ranking.c.shown_order, ranking.c.all_bad,
                      task.c.prompt_id, task.c.response_ids, task.c.is_gold, user.c.role)
            .join(task, task.c.id == ranking.c.task_id)
            .join(user, user.c.id == ranking.c.user_id)
            .where(task.c.project_id == project_id, task.c.kind == "ranking")
            .order_by(ranking.c.task_id, ranking.c.user_id)
        ).all()  # fmt: skip
        response_ids = sorted({i for r in rows for i in r.response_ids})
        replies = {}
        for start in range(0, len(response_ids), 5000):
            chunk = response_ids[start : start + 5000]
            # The length in SQL: the texts themselves never leave the database.
            length = sa.func.coalesce(sa.func.length(response.c.text), 0)
            for rid, model, chars in connection.execute(sa.select(response.c.id, response.c.model_name, length).where(response.c.id.in_(chunk))):
                replies[rid] = (model, int(chars))
    out: dict[str, list] = {c: [] for c in RANKING_COLUMNS}
    for r in rows:
        k = len(r.response_ids)
        mid = ranks(r.groups, k)
        level = {card: g for g, group in enumerate(r.groups) for card in group}
        position = {card: p for p, card in enumerate(r.shown_order)}
        for card in range(k):
            rid = r.response_ids[card]
            model, length = replies[rid]
            values = (r.task_id, r.prompt_id, r.user_id, card, mid[card], level[card], position.get(card, card), rid, model, length, bool(r.is_gold), bool(r.all_bad), r.role)
            for column, value in zip(RANKING_COLUMNS, values):
                out[column].append(value)
    frame = pd.DataFrame(out, columns=list(RANKING_COLUMNS))
    for column in ("task_id", "prompt_id", "annotator_id", "card", "level", "position", "response_id", "length"):
        frame[column] = frame[column].astype("int64")
    frame["rank"] = frame["rank"].astype("float64")
    return frame


# ------------------------------------------------------------------------------------- arrays


@dataclass(frozen=True)
class RankArrays:
    """Rankings as arrays: `task` (N,) codes, `annotator` (N,) codes, `k` (N,), and per card (N, K_max)
    `rank` (mid-ranks, NaN past k), `level` (−1 past k), `position`. Row i is one ranking."""

    task: np.ndarray
    annotator: np.ndarray
    k: np.ndarray
    rank: np.ndarray
    level: np.ndarray
    position: np.ndarray
    tasks: np.ndarray
    """Task ids by code."""
    annotators: np.ndarray
    """Annotator ids by code."""


def ranking_rows(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(row of each long row's ranking, task id and annotator id per ranking), rankings in order of first appearance.

    One int64 key per (task, annotator) and a 1-D factorize: a MultiIndex took 8 s on 4,000,000 rows."""
    task_id = frame["task_id"].to_numpy(np.int64)
    annotator_id = frame["annotator_id"].to_numpy(np.int64)
    offset = int(annotator_id.min()) if len(annotator_id) else 0
    span = int(annotator_id.max()) - offset + 1 if len(annotator_id) else 1
    row, uniques = pd.factorize(task_id * span + (annotator_id - offset))
    uniques = np.asarray(uniques, dtype=np.int64)
    return row, uniques // span, uniques % span + offset


def rank_arrays(frame: pd.DataFrame) -> RankArrays:
    """Pack the long frame into one row per ranking (vectorised: factorize, scatter)."""
    row, task_ids, annotator_ids = ranking_rows(frame)
    n = len(task_ids)
    card = frame["card"].to_numpy(np.int64)
    k_max = int(card.max()) + 1 if len(card) else 0
    rank = np.full((n, k_max), np.nan)
    level = np.full((n, k_max), -1, dtype=np.int64)
    position = np.full((n, k_max), -1, dtype=np.int64)
    rank[row, card] = frame["rank"].to_numpy(np.float64)
    level[row, card] = frame["level"].to_numpy(np.int64)
    position[row, card] = frame["position"].to_numpy(np.int64) if "position" in frame else card
    task, tasks = pd.factorize(task_ids, sort=True)
    annotator, annotators = pd.factorize(annotator_ids, sort=True)
    k = np.bincount(row, minlength=n)
    return RankArrays(task.astype(np.int64), annotator.astype(np.int64), k, rank, level, position, np.asarray(tasks), np.asarray(annotators))


def ranks_from_levels(level: np.ndarray) -> np.ndarray:
    """Mid-ranks (1 = best) from group levels (N, K) (−1 = no card): each card's rank is the number of
    cards in better groups plus (size of its group + 1) / 2."""
    valid = level >= 0
    lv = np.where(valid, level, np.iinfo(np.int64).max)
    better = (lv[:, None, :] < lv[:, :, None]) & valid[:, None, :]
    same = (lv[:, None, :] == lv[:, :, None]) & valid[:, None, :]
    return np.where(valid, better.sum(axis=2) + (same.sum(axis=2) + 1) / 2, np.nan)


# ------------------------------------------------------------------------------------- Kendall's W


def kendalls_w(ranks: np.ndarray) -> float:
    """Kendall's W of one matrix `ranks` (m raters × n objects, mid-ranks for ties), tie-corrected."""
    ranks = np.asarray(ranks, dtype=np.float64)
    m, n = ranks.shape
    task = np.zeros(m, dtype=np.int64)
    return float(kendalls_w_by_task(task, ranks, 1)[0])


def kendalls_w_by_task(task: np.ndarray, rank: np.ndarray, n_tasks: int) -> np.ndarray:
    """W per task code from rankings (N, K) of mid-ranks (NaN past a task's K); NaN for tasks with
    fewer than two rankings or no variation at all.

    All rankings of one task must rank the same K cards (they do: the task fixes its cards).
    """
    valid = ~np.isnan(rank)
    n = valid.sum(axis=1).astype(np.float64)  # K per ranking
    m = np.bincount(task, minlength=n_tasks).astype(np.float64)
    k = np.zeros(n_tasks)
    k[task] = n
    # R_j per (task, card): rank sums
    k_max = rank.shape[1]
    sums = np.zeros((n_tasks, k_max))
    _scatter_rows(sums, task, np.where(valid, rank, 0.0))
    mean = m * (k + 1) / 2
    has = np.arange(k_max)[None, :] < k[:, None]
    s = np.where(has, (sums - mean[:, None]) ** 2, 0.0).sum(axis=1)
    ties = _tie_sums(rank, valid)
    t = np.bincount(task, weights=ties, minlength=n_tasks)
    denominator = m**2 * (k**3 - k) - m * t
    with np.errstate(invalid="ignore", divide="ignore"):
        w = 12 * s / denominator
    return np.where((m >= 2) & (denominator > 0), w, np.nan)


def _scatter_rows(out: np.ndarray, row: np.ndarray, values: np.ndarray) -> None:
    """out[row[i]] += values[i] for 2-D values, by one bincount per column (np.add.at is slow)."""
    for column in range(values.shape[1]):
        out[:, column] += np.bincount(row, weights=values[:, column], minlength=out.shape[0])


def _tie_sums(rank: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Σ (t³ − t) over the tie groups of each ranking, as Σ over cards of (t² − 1), t the size of the
    card's group (a group of t cards then adds t (t² − 1) = t³ − t)."""
    same = (rank[:, :, None] == rank[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    t = same.sum(axis=2).astype(np.float64)
    return np.where(valid, t**2 - 1, 0.0).sum(axis=1)


# ------------------------------------------------------------------------------------- agreement


def implied_pair_agreement(arrays: RankArrays) -> Optional[float]:
    """Share of (annotator pair, card pair) cells of the same task on which two rankings agree (>, <, =)."""
    order = np.argsort(arrays.task, kind="stable")
    task = arrays.task[order]
    level = arrays.level[order]
    k_max = level.shape[1]
    i_idx, j_idx = np.triu_indices(k_max, 1)
    present = (level[:, i_idx] >= 0) & (level[:, j_idx] >= 0)
    outcome = np.sign(level[:, j_idx] - level[:, i_idx])  # +1: i better
    if not len(task):
        return None
    agree = 0.0
    starts = np.flatnonzero(np.r_[True, task[1:] != task[:-1]])
    # count, per task and card pair, how many annotators said >, <, =; agreeing annotator pairs = Σ C(c, 2)
    for value in (-1, 0, 1):
        hits = ((outcome == value) & present).astype(np.float64)
        per_task = np.add.reduceat(hits, starts, axis=0)
        agree += (per_task * (per_task - 1) / 2).sum()
    present_task = np.add.reduceat(present.astype(np.float64), starts, axis=0)
    total = (present_task * (present_task - 1) / 2).sum()
    return float(agree / total) if total > 0 else None


def alpha_on_ranks(frame: pd.DataFrame) -> Optional[float]:
    """Krippendorff's alpha (ordinal): units are (task, card), values the annotators' mid-ranks."""
    from rlhf.agreement import AgreementUndefined, krippendorff_alpha

    if frame.empty:
        return None
    data = pd.DataFrame(
        {"item": frame["task_id"].astype(str) + ":" + frame["card"].astype(str), "annotator": frame["annotator_id"], "value": frame["rank"]}
    )
    try:
        value = krippendorff_alpha(data, "ordinal")
    except AgreementUndefined:
        return None
    return None if value is None or not np.isfinite(value) else float(value)


# ------------------------------------------------------------------------------------- annotators


def _groups_of(levels: np.ndarray) -> tuple[tuple[int, ...], ...]:
    present = [(int(lv), card) for card, lv in enumerate(levels) if lv >= 0]
    out: dict[int, list[int]] = {}
    for lv, card in sorted(present):
        out.setdefault(lv, []).append(card)
    return tuple(tuple(v) for _, v in sorted(out.items()))


def _groups_from_scores(scores: np.ndarray) -> tuple[tuple[int, ...], ...]:
    """Lower is better (mean ranks): cards grouped by equal score."""
    out: dict[float, list[int]] = {}
    for card, value in enumerate(scores):
        if np.isfinite(value):
            out.setdefault(round(float(value), 9), []).append(card)
    return tuple(tuple(v) for _, v in sorted(out.items()))


def annotator_table(frame: pd.DataFrame, gold: Optional[dict[int, list[list[int]]]] = None) -> pd.DataFrame:
    """Per annotator: n_rankings, loo_tau (mean tau-b with the others' mean ranks on the same task),
    position_tau (mean tau-b of the ranking with the shown order; 0 = no position bias), all_bad_share,
    gold_tau (mean tau-b with gold rankings, where gold tasks were ranked), and the length columns
    of `rlhf.length_model.length_bias` on the implied pairs."""
    if frame.empty:
        return pd.DataFrame(columns=["annotator", "n_rankings", "loo_tau", "position_tau", "all_bad_share", "gold_tau"])
    arrays = rank_arrays(frame)
    n_tasks = len(arrays.tasks)
    k_max = arrays.rank.shape[1]
    rank = np.nan_to_num(arrays.rank, nan=0.0)
    sums = np.zeros((n_tasks, k_max))
    _scatter_rows(sums, arrays.task, rank)
    m = np.bincount(arrays.task, minlength=n_tasks)
    valid = arrays.level >= 0
    others = (m[arrays.task] - 1).astype(np.float64)  # (N,)
    with np.errstate(invalid="ignore", divide="ignore"):
        consensus = (sums[arrays.task] - rank) / others[:, None]  # the others' mean rank per card (N, K); lower is better
    own = np.where(valid, arrays.level.astype(np.float64), np.nan)
    loo = np.where(others > 0, tau_b_rows(own, np.where(valid, consensus, np.nan)), np.nan)
    position = tau_b_rows(own, np.where(valid, arrays.position.astype(np.float64), np.nan))
    per = pd.DataFrame({"annotator": arrays.annotators[arrays.annotator], "loo_tau": loo, "position_tau": position})
    table = per.groupby("annotator").agg(n_rankings=("loo_tau", "size"), loo_tau=("loo_tau", "mean"), position_tau=("position_tau", "mean"))
    all_bad = frame.drop_duplicates(["task_id", "annotator_id"]).groupby("annotator_id")["all_bad"].mean()
    table["all_bad_share"] = all_bad.reindex(table.index).to_numpy()
    table["gold_tau"] = np.nan
    if gold:
        scores: dict[Any, list[float]] = {}
        for (task_id, annotator_id), part in frame[frame["task_id"].isin(list(gold))].groupby(["task_id", "annotator_id"]):
            levels = np.full(int(part["card"].max()) + 1, -1)
            levels[part["card"].to_numpy()] = part["level"].to_numpy()
            value = kendall_tau(_groups_of(levels), tuple(tuple(g) for g in gold[int(task_id)]))
            if value is not None:
                scores.setdefault(annotator_id, []).append(value)
        table["gold_tau"] = [float(np.mean(scores[a])) if a in scores else np.nan for a in table.index]
    try:
        from rlhf.length_model import length_bias

        lengths = length_bias(implied_preferences(frame))
        table = table.join(lengths, how="left")
    except Exception:  # noqa: BLE001 - too little data for the length model: the columns stay absent
        pass
    return table.reset_index()


def tau_b_rows(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair, x and y (N, K) with lower = better and NaN for no card; NaN where undefined.

    Vectorised over rows through the C(K, 2) card pairs: Σ sign(Δx)·sign(Δy) / sqrt((n0 − ties_x)(n0 − ties_y)).
    Scores closer than 1e-9 count as tied (the leave-one-out mean ranks are sums of halves)."""
    i, j = np.triu_indices(x.shape[1], 1)
    present = ~(np.isnan(x[:, i]) | np.isnan(x[:, j]) | np.isnan(y[:, i]) | np.isnan(y[:, j]))
    dx, dy = x[:, j] - x[:, i], y[:, j] - y[:, i]
    sx = np.where(present & (np.abs(dx) > 1e-9), np.sign(dx), 0.0)
    sy = np.where(present & (np.abs(dy) > 1e-9), np.sign(dy), 0.0)
    n0 = present.sum(axis=1)
    denominator = np.sqrt((n0 - (present & (sx == 0)).sum(axis=1)) * (n0 - (present & (sy == 0)).sum(axis=1)).astype(np.float64))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (sx * sy).sum(axis=1) / denominator, np.nan)


def implied_preferences(frame: pd.DataFrame) -> pd.DataFrame:
    """The pairs each ranking implies, as `rlhf.length_model.length_bias` preference rows:
    item, annotator, value (a / b / tie), len_a, len_b, response_a, response_b, shown_left (the card shown first is 'left')."""
    left = frame.rename(columns=lambda c: f"{c}_a")
    right = frame.rename(columns=lambda c: f"{c}_b")
    pairs = left.merge(right, left_on=["task_id_a", "annotator_id_a"], right_on=["task_id_b", "annotator_id_b"])
    pairs = pairs[pairs["card_a"] < pairs["card_b"]]
    value = np.where(pairs["level_a"] < pairs["level_b"], "a", np.where(pairs["level_a"] > pairs["level_b"], "b", "tie"))
    return pd.DataFrame(
        {
            "item": pairs["task_id_a"].astype(str) + ":" + pairs["card_a"].astype(str) + ":" + pairs["card_b"].astype(str),
            "annotator": pairs["annotator_id_a"].to_numpy(),
            "value": value,
            "len_a": pairs["length_a"].to_numpy(),
            "len_b": pairs["length_b"].to_numpy(),
            "response_a": pairs["response_id_a"].to_numpy(),
            "response_b": pairs["response_id_b"].to_numpy(),
            "shown_left": np.where(pairs["position_a"] < pairs["position_b"], "a", "b"),
            "model_a": pairs["model_a"].to_numpy(),
            "model_b": pairs["model_b"].to_numpy(),
        }
    ).reset_index(drop=True)


def comparisons_from_rankings(frame: pd.DataFrame) -> pd.DataFrame:
    """Comparison rows (model_a, model_b, winner) from the pairs rankings imply (same-model pairs dropped),
    for the Bradley–Terry leaderboard that comparisons feed (`rlhf.aggregation.bradley_terry`)."""
    if frame.empty:
        return pd.DataFrame(columns=["model_a", "model_b", "winner"])
    pairs = implied_preferences(frame)
    out = pd.DataFrame({"model_a": pairs["model_a"], "model_b": pairs["model_b"], "winner": pairs["value"]})
    return out[out["model_a"] != out["model_b"]].reset_index(drop=True)


# ------------------------------------------------------------------------------------- Plackett–Luce


@dataclass
class PlackettLuce:
    """Plackett–Luce worths from rankings with ties (Breslow), by MM (Hunter 2004, Ann. Statist. 32(1)).

    P(ranking) = Π_stages Π_{i in D_s} w_i / (Σ_{j in R_s} w_j)^{|D_s|}, D_s the stage's tied group,
    R_s the cards not ranked above it. MM update: w_i ← (wins_i + α) / (Σ_s [i ∈ R_s] |D_s| / Σ_{R_s} w + α),
    with a weak Gamma(1 + α, α) prior (α = `prior`) that keeps never-winning items finite. Worths
    are normalised to mean 1 per `group` (a task's cards, or all models), where they are comparable.
    """

    max_iter: int = 200
    tol: float = 1e-6
    prior: float = 0.1
    worth_: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    n_iter_: int = 0

    def fit(self, items: np.ndarray, level: np.ndarray, n_items: int, weight: Optional[np.ndarray] = None, group: Optional[np.ndarray] = None) -> "PlackettLuce":
        """`items` (N, K) item codes per card (−1 past k), `level` (N, K) group levels (0 best);
        `weight` (N,) multiplicities (identical rankings counted once); `group` (n_items,) codes."""
        items = np.asarray(items, dtype=np.int64)
        level = np.asarray(level, dtype=np.int64)
        n, k_max = items.shape
        weight = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64)
        group = np.zeros(n_items, dtype=np.int64) if group is None else np.asarray(group, dtype=np.int64)
        valid = level >= 0
        big = np.iinfo(np.int64).max
        lv = np.where(valid, level, big)
        # stage s of a ranking = each distinct level; card c is "at risk" at every stage whose level <= its own.
        stages = np.sort(np.where(valid, level, big), axis=1)
        first = np.ones_like(stages, dtype=bool)
        first[:, 1:] = stages[:, 1:] != stages[:, :-1]
        stage_ok = first & (stages != big)  # (N, K) distinct stage levels
        stage_level = np.where(stage_ok, stages, big)
        size = ((lv[:, None, :] == stage_level[:, :, None]) & valid[:, None, :]).sum(axis=2)  # |D_s| (N, S)
        # float once, so each iteration is two einsums without (N, S, K) temporaries
        at_risk = ((lv[:, None, :] >= stage_level[:, :, None]) & valid[:, None, :] & stage_ok[:, :, None]).astype(np.float64)  # (N, S, K)
        size_weight = np.where(stage_ok, size, 0.0) * weight[:, None]  # |D_s| per stage, times the row's multiplicity (N, S)
        safe_items = np.where(valid, items, 0)
        wins = np.bincount(safe_items[valid], weights=np.broadcast_to(weight[:, None], items.shape)[valid], minlength=n_items)
        w = np.ones(n_items)
        counts = np.bincount(group, minlength=group.max() + 1 if len(group) else 1)
        for iteration in range(1, self.max_iter + 1):
            worth = np.where(valid, w[safe_items], 0.0)  # (N, K)
            denominator = np.einsum("nsk,nk->ns", at_risk, worth)  # Σ_{R_s} w (N, S)
            term = size_weight / np.where(stage_ok, denominator, 1.0)  # (N, S)
            exposure = np.einsum("nsk,ns->nk", at_risk, term)  # per card (N, K)
            total = np.bincount(safe_items[valid], weights=exposure[valid], minlength=n_items)
            new = (wins + self.prior) / (total + self.prior)
            means = np.bincount(group, weights=new, minlength=len(counts)) / np.maximum(counts, 1)
            new = new / means[group]
            change = np.max(np.abs(np.log(new) - np.log(w))) if n_items else 0.0
            w = new
            if change < self.tol:
                break
        self.worth_, self.n_iter_ = w, iteration
        return self


def plackett_luce_leaderboard(frame: pd.DataFrame, *, max_iter: int = 200) -> pd.DataFrame:
    """Models by Plackett–Luce worth from all rankings (identical rankings of the same models counted once, weighted).

    Columns: model, worth (mean 1), log_worth, n_cards (cards of the model ranked), rank.
    """
    columns = ["model", "worth", "log_worth", "n_cards", "rank"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    arrays = rank_arrays(frame)
    codes, models = pd.factorize(frame["model"], sort=True)
    model_of = np.full(arrays.level.shape, -1, dtype=np.int64)
    row, _, _ = ranking_rows(frame)
    model_of[row, frame["card"].to_numpy()] = codes
    fit = plackett_luce_models(model_of, arrays.level, len(models), max_iter=max_iter)
    n_cards = np.bincount(codes, minlength=len(models))
    board = pd.DataFrame({"model": np.asarray(models), "worth": fit.worth_, "log_worth": np.log(fit.worth_), "n_cards": n_cards})
    board = board.sort_values("worth", ascending=False).reset_index(drop=True)
    board["rank"] = np.arange(1, len(board) + 1)
    return board[columns]


def plackett_luce_models(model_of: np.ndarray, level: np.ndarray, n_models: int, *, max_iter: int = 200) -> PlackettLuce:
    """Plackett–Luce over models from rankings (N, K) of model codes and levels: identical rankings
    (same models, same order) collapse into one weighted row first, so a million rankings of a
    dozen models cost a few thousand rows per iteration."""
    # canonical card order (by level, then model), so the same ranking is the same row whatever the cards' order
    big = np.iinfo(np.int64).max // 4
    key_level = np.where(level >= 0, level, big)
    key_model = np.where(level >= 0, model_of, big)
    order = np.argsort(key_level * (n_models + 1) + key_model, axis=1, kind="stable")
    model_of = np.take_along_axis(model_of, order, axis=1)
    level = np.take_along_axis(level, order, axis=1)
    k = model_of.shape[1]
    radix_model, radix_level = n_models + 1, k + 1
    if (radix_model * radix_level) ** k < 2**62:  # one int64 key per row: a 1-D unique (much faster than axis=0)
        key = np.zeros(len(level), dtype=np.int64)
        for c in range(k):
            key = (key * radix_model + (model_of[:, c] + 1)) * radix_level + (level[:, c] + 1)
        _, first, weight = np.unique(key, return_index=True, return_counts=True)
        unique_models, unique_levels = model_of[first], level[first]
    else:
        packed, weight = np.unique(np.concatenate([model_of, level], axis=1), axis=0, return_counts=True)
        unique_models, unique_levels = packed[:, :k], packed[:, k:]
    return PlackettLuce(max_iter=max_iter).fit(unique_models, unique_levels, n_models, weight=weight)


def plackett_luce_per_prompt(frame: pd.DataFrame, *, max_iter: int = 200) -> pd.DataFrame:
    """Per task: each card's Plackett–Luce worth (mean 1 within the task) from its annotators' rankings.

    Columns: task_id, card, response_id, worth. One fit over all tasks at once (items = (task, card));
    the tasks' likelihoods are independent, so it equals a fit per task."""
    if frame.empty:
        return pd.DataFrame(columns=["task_id", "card", "response_id", "worth"])
    arrays = rank_arrays(frame)
    k_max = arrays.level.shape[1]
    items = np.where(arrays.level >= 0, arrays.task[:, None] * k_max + np.arange(k_max)[None, :], -1)
    n_items = len(arrays.tasks) * k_max
    fit = PlackettLuce(max_iter=max_iter).fit(items, arrays.level, n_items, group=np.repeat(np.arange(len(arrays.tasks)), k_max))
    cards = frame.drop_duplicates(["task_id", "card"])[["task_id", "card", "response_id"]].sort_values(["task_id", "card"])
    task_code = np.searchsorted(arrays.tasks, cards["task_id"].to_numpy())
    cards = cards.assign(worth=fit.worth_[task_code * k_max + cards["card"].to_numpy()])
    return cards.reset_index(drop=True)


# ------------------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class RankingStats:
    """What `rlhf stats` and the dashboard show for a project's rankings."""

    n_rankings: int
    n_tasks: int
    kendalls_w: Optional[float]
    """Mean per-task W over tasks with two or more rankings."""
    krippendorff_alpha: Optional[float]
    pair_agreement: Optional[float]
    annotators: pd.DataFrame
    leaderboard: pd.DataFrame
    """Plackett–Luce over models."""

    def summary(self) -> dict[str, Any]:
        from rlhf.stats import records

        return {
            "n_rankings": self.n_rankings,
            "n_tasks": self.n_tasks,
            "kendalls_w": self.kendalls_w,
            "krippendorff_alpha_ordinal": self.krippendorff_alpha,
            "implied_pair_agreement": self.pair_agreement,
            "annotators": records(self.annotators),
            "plackett_luce_leaderboard": records(self.leaderboard),
        }


def ranking_stats(frame: pd.DataFrame, gold: Optional[dict[int, list[list[int]]]] = None, *, include_gold: bool = True) -> RankingStats:
    """Every ranking statistic of one project's `ranking_frame` (humans only, say). Without
    `include_gold`, gold tasks are left out of agreement and the leaderboard but still score
    the annotators against `gold` (task id -> groups)."""
    annotators = annotator_table(frame, gold)
    if not include_gold:
        frame = frame[~frame["is_gold"]].reset_index(drop=True)
    if frame.empty:
        return RankingStats(0, 0, None, None, None, annotators, plackett_luce_leaderboard(frame))
    arrays = rank_arrays(frame)
    w = kendalls_w_by_task(arrays.task, arrays.rank, len(arrays.tasks))
    mean_w = float(np.nanmean(w)) if np.isfinite(w).any() else None
    return RankingStats(
        n_rankings=len(arrays.task),
        n_tasks=len(arrays.tasks),
        kendalls_w=mean_w,
        krippendorff_alpha=alpha_on_ranks(frame),
        pair_agreement=implied_pair_agreement(arrays),
        annotators=annotators,
        leaderboard=plackett_luce_leaderboard(frame),
    )
