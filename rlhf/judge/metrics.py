"""How a model judge compares with the people: agreement, position consistency, length tilt, confusion.

For each judge (external user `judge:<name>` with Judgment rows) on a project's pairwise tasks:

- `agreement_with_consensus`: share of tasks where the judge's verdict equals the human consensus
  (the unique most common human choice among at least `min_votes` human votes); `..._decisive`
  the same on tasks where both are a or b (MT-Bench's "without ties"). Beside it the human ceiling:
  each human vote against the consensus of the *other* humans on the task (leave-one-out), so
  judge and humans are measured against a consensus that excludes them;
- `agreement_with_annotators`: per annotator, the share of shared tasks with the same choice,
  and `mean_agreement_with_humans` beside `human_human_agreement` (mean over pairs of human votes
  on the same task): the ceiling a judge is compared with;
- `position_consistency`: share of pairs whose two orders agree (parsed / (parsed + inconsistent));
  `first_share`: share of decisive per-order verdicts that picked the response shown first, with
  a two-sided binomial p-value; flag `position_bias` below `QualityThresholds.position_p_value`;
- `length_tilt`: the length model used for annotators (`rlhf.length_model.length_bias`): each order's
  verdict is one judgment (shown first = shown left), measured against a crowd fitted on the humans
  only; one-sided p-value, flag `length_bias` below `QualityThresholds.length_p_value`;
- `confusion`: judge outcome (a, b, tie, inconsistent, unparsed) × human consensus (a, b, tie, both_bad).
No flag is raised on fewer than `QualityThresholds.min_annotations` relevant judgments.
Ratings: per dimension, the judge's mean absolute difference from the human median beside the
humans' own (leave-one-out) difference.
Rankings (`rankings`): the status counts; `position_consistency` as for pairs (the two card orders,
shown and reversed, gave the same order: parsed / (parsed + inconsistent)) and `mean_tau_between_orders`
(Kendall tau-b between the two orders, where both parsed); `tau_with_consensus`: mean Kendall tau-b
of the judge's order with the human consensus order (cards by their mean human rank, at least
`min_votes` people) beside `human_loo_tau`, each person's tau with the other people's consensus.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

import numpy as np
import pandas as pd
from sqlalchemy import select
from sqlalchemy.engine import Engine

from rlhf.judge.run import JUDGE_PREFIX
from rlhf.quality import QualityThresholds, binomial_two_sided
from rlhf.schema import Judgment, Ranking, Rating, Task, User

OUTCOMES = ("a", "b", "tie", "inconsistent", "unparsed")
CONSENSUS = ("a", "b", "tie", "both_bad")


def consensus(choices: list[str], min_votes: int = 2) -> Optional[str]:
    """The unique most common choice among at least `min_votes` votes, else None."""
    if len(choices) < min_votes:
        return None
    counts = Counter(choices).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return None
    return counts[0][0]


def _share(hits: int, n: int) -> Optional[float]:
    return hits / n if n else None


def human_ceiling(votes: dict[int, list[tuple[str, str]]], min_votes: int = 2) -> dict[str, Any]:
    """Leave-one-out agreement of human votes with the others' consensus, and mean pairwise human–human agreement.

    `votes`: task → [(annotator, choice)] of people.
    """
    loo_hits = loo_n = pair_hits = pair_n = 0
    for task_votes in votes.values():
        for index, (_, choice) in enumerate(task_votes):
            others = consensus([c for j, (_, c) in enumerate(task_votes) if j != index], min_votes)
            if others is not None:
                loo_n += 1
                loo_hits += choice == others
        for i in range(len(task_votes)):
            for j in range(i + 1, len(task_votes)):
                pair_n += 1
                pair_hits += task_votes[i][1] == task_votes[j][1]
    return {"loo_consensus_agreement": _share(loo_hits, loo_n), "loo_n": loo_n, "human_human_agreement": _share(pair_hits, pair_n), "pairs_n": pair_n}


def judge_pair_metrics(
    judgments: pd.DataFrame, votes: dict[int, list[tuple[str, str]]], lengths: dict[int, tuple[int, int, int, int]],
    human_prefs: pd.DataFrame, *, min_votes: int = 2, thresholds: QualityThresholds = QualityThresholds(),
) -> dict[str, Any]:
    """One judge's pair metrics (see the module docstring).

    `judgments`: task_id, status, choice, order_ab, order_ba (task terms) of this judge's pairwise Judgments;
    `votes`: task → [(annotator, choice)] of people; `lengths`: task → (len_a, len_b, response_a, response_b);
    `human_prefs`: item, annotator, value, len_a, len_b, response_a, response_b, shown_left of people (the length crowd).
    """
    status_counts = judgments["status"].value_counts().to_dict()
    parsed, inconsistent = int(status_counts.get("parsed", 0)), int(status_counts.get("inconsistent", 0))
    out: dict[str, Any] = {"pairs": int(len(judgments)), "status": {s: int(status_counts.get(s, 0)) for s in ("parsed", "inconsistent", "unparsed")}}
    out["position_consistency"] = _share(parsed, parsed + inconsistent)

    # Consensus agreement and confusion.
    confusion = {o: {c: 0 for c in CONSENSUS} for o in OUTCOMES}
    hits = n = hits_decisive = n_decisive = 0
    per_annotator: dict[str, list[int]] = {}
    for row in judgments.itertuples(index=False):
        outcome = row.choice if row.status == "parsed" else row.status
        task_votes = votes.get(int(row.task_id), [])
        agreed = consensus([c for _, c in task_votes], min_votes)
        if agreed is not None:
            confusion[outcome][agreed] += 1
        if row.status != "parsed":
            continue
        if agreed is not None:
            n += 1
            hits += row.choice == agreed
            if row.choice in ("a", "b") and agreed in ("a", "b"):
                n_decisive += 1
                hits_decisive += row.choice == agreed
        for annotator, choice in task_votes:
            tally = per_annotator.setdefault(annotator, [0, 0])
            tally[0] += choice == row.choice
            tally[1] += 1
    out["agreement_with_consensus"], out["consensus_n"] = _share(hits, n), n
    out["agreement_with_consensus_decisive"], out["consensus_decisive_n"] = _share(hits_decisive, n_decisive), n_decisive
    out["agreement_with_annotators"] = {a: {"agreement": h / k, "n": k} for a, (h, k) in sorted(per_annotator.items())}
    total_h, total_k = sum(h for h, _ in per_annotator.values()), sum(k for _, k in per_annotator.values())
    out["mean_agreement_with_humans"] = _share(total_h, total_k)
    out["confusion"] = confusion

    # Position: per-order decisive verdicts in display terms.
    firsts = []
    for row in judgments.itertuples(index=False):
        for order, verdict in (("ab", row.order_ab), ("ba", row.order_ba)):
            if verdict in ("a", "b"):
                firsts.append(verdict == ("a" if order == "ab" else "b"))
    k, m = int(sum(firsts)), len(firsts)
    out["first_share"], out["position_n"] = _share(k, m), m
    out["position_p_value"] = float(binomial_two_sided(np.array([k]), np.array([m]))[0]) if m else None

    # Length: the judge's per-order verdicts measured against the humans' crowd.
    out.update(_length(judgments, lengths, human_prefs))
    flags = []
    if m >= thresholds.min_annotations and out["position_p_value"] is not None and out["position_p_value"] < thresholds.position_p_value:
        flags.append("position_bias")
    if (out.get("length_n") or 0) >= thresholds.min_annotations and out.get("length_p_value") is not None and out["length_p_value"] < thresholds.length_p_value:
        flags.append("length_bias")
    out["flags"] = flags
    return out


JUDGE_KEY = "__judge__"


def _length(judgments: pd.DataFrame, lengths: dict, human_prefs: pd.DataFrame) -> dict[str, Any]:
    from rlhf.length_model import length_bias

    rows = []
    for row in judgments.itertuples(index=False):
        if int(row.task_id) not in lengths:
            continue
        len_a, len_b, response_a, response_b = lengths[int(row.task_id)]
        for order, verdict in (("ab", row.order_ab), ("ba", row.order_ba)):
            if verdict in ("a", "b"):
                rows.append({"item": f"{row.task_id}:{order}", "annotator": JUDGE_KEY, "value": verdict, "len_a": len_a, "len_b": len_b,
                             "response_a": response_a, "response_b": response_b, "shown_left": "a" if order == "ab" else "b"})
    if not rows or human_prefs.empty:
        return {"length_n": 0, "longer_share": None, "length_tilt": None, "length_p_value": None}
    frame = pd.concat([human_prefs, pd.DataFrame(rows)], ignore_index=True)
    table = length_bias(frame, reference_excludes=[JUDGE_KEY])
    if JUDGE_KEY not in table.index:
        return {"length_n": 0, "longer_share": None, "length_tilt": None, "length_p_value": None}
    mine = table.loc[JUDGE_KEY]
    plain = lambda v: None if v is None or (isinstance(v, float) and not np.isfinite(v)) else float(v)  # noqa: E731
    return {"length_n": int(mine["length_n"]), "longer_share": plain(mine["longer_share"]), "length_tilt": plain(mine["length_tilt"]),
            "length_p_value": plain(mine["length_p_value"])}


def _rating_metrics(judge_scores: dict[int, dict], human_scores: dict[int, list[dict]], rubric: list[dict]) -> dict[str, Any]:
    out = {}
    for dimension in (d["name"] for d in rubric):
        judge_diffs, human_diffs = [], []
        for task_id, people in human_scores.items():
            values = [p[dimension] for p in people if dimension in p]
            if len(values) >= 2:
                for i, v in enumerate(values):
                    human_diffs.append(abs(v - float(np.median(values[:i] + values[i + 1:]))))
            if values and task_id in judge_scores and dimension in judge_scores[task_id]:
                judge_diffs.append(abs(judge_scores[task_id][dimension] - float(np.median(values))))
        out[dimension] = {"judge_mean_abs_diff": float(np.mean(judge_diffs)) if judge_diffs else None, "n": len(judge_diffs),
                          "human_loo_mean_abs_diff": float(np.mean(human_diffs)) if human_diffs else None}
    return out


def consensus_order(rankings: list[list[list[int]]], k: int) -> list[list[int]]:
    """Cards grouped by their mean mid-rank over `rankings` (groups of card indices, best first; equal means tie)."""
    from rlhf.ranking import ranks

    mean = np.mean([ranks(groups, k) for groups in rankings], axis=0)
    out: dict[float, list[int]] = {}
    for card, value in enumerate(mean):
        out.setdefault(round(float(value), 9), []).append(card)
    return [cards for _, cards in sorted(out.items())]


def _mean(values: list[float]) -> Optional[float]:
    return float(np.mean(values)) if values else None


def ranking_human_ceiling(human: dict[int, list[list[list[int]]]], min_votes: int = 2) -> dict[str, Any]:
    """Each person's Kendall tau-b with the consensus of the *other* people on the task (at least `min_votes` others)."""
    from rlhf.ranking import kendall_tau

    taus = []
    for rankings in human.values():
        k = sum(len(g) for g in rankings[0])
        for index, own in enumerate(rankings):
            others = rankings[:index] + rankings[index + 1:]
            if len(others) >= min_votes:
                tau = kendall_tau(own, consensus_order(others, k))
                if tau is not None:
                    taus.append(tau)
    return {"human_loo_tau": _mean(taus), "human_loo_n": len(taus)}


def judge_ranking_metrics(judgments: list[dict[str, Any]], human: dict[int, list[list[list[int]]]], min_votes: int = 2) -> dict[str, Any]:
    """One judge's ranking metrics (see the module docstring); `judgments`: {task_id, status, verdict} of its ranking Judgments."""
    from rlhf.ranking import kendall_tau

    status = Counter(j["status"] for j in judgments)
    between = [j["verdict"].get("tau_between_orders") for j in judgments if j["status"] in ("parsed", "inconsistent")]
    with_consensus = []
    for j in judgments:
        order = (j["verdict"] or {}).get("order")
        people = human.get(int(j["task_id"]), [])
        if j["status"] != "parsed" or not order or len(people) < min_votes:
            continue
        tau = kendall_tau(order, consensus_order(people, sum(len(g) for g in order)))
        if tau is not None:
            with_consensus.append(tau)
    decided = status["parsed"] + status["inconsistent"]
    return {
        "judged": len(judgments), "status": {s: status.get(s, 0) for s in ("parsed", "inconsistent", "unparsed")},
        "position_consistency": _share(status["parsed"], decided),
        "mean_tau_between_orders": _mean([t for t in between if t is not None]),
        "tau_with_consensus": _mean(with_consensus), "consensus_n": len(with_consensus),
        **ranking_human_ceiling(human, min_votes),
    }


def judge_report(engine: Engine, project: str | int, *, min_votes: int = 2, thresholds: QualityThresholds = QualityThresholds()) -> dict[str, Any]:
    """Every judge of `project` measured against the people: {"human": ceiling, "judges": {username: metrics}}."""
    from rlhf.db import session_scope
    from rlhf.frames import HUMAN_ROLES, preference_frame
    from rlhf.projects import get_project

    project_row = get_project(engine, project)
    with session_scope(engine) as session:
        if session.execute(select(Judgment.id).where(Judgment.project_id == project_row.id).limit(1)).first() is None:
            return {"human": {}, "judges": {}}  # no judge: `rlhf stats` pays nothing more
    prefs = preference_frame(engine, project_row.id, ["task_id", "response_a_id", "response_b_id", "len_a", "len_b", "annotator_id", "choice",
                                                      "shown_left", "annotator_role"])
    with session_scope(engine) as session:
        users = dict(session.execute(select(User.id, User.username)).all())
        judge_rows = session.execute(
            select(Judgment.task_id, Judgment.user_id, Judgment.kind, Judgment.status, Judgment.verdict).where(Judgment.project_id == project_row.id)
        ).all()
        human_rankings: dict[int, list[list[list[int]]]] = {}
        for task_id, groups in session.execute(
            select(Ranking.task_id, Ranking.groups).join(Task, Task.id == Ranking.task_id).join(User, User.id == Ranking.user_id)
            .where(Task.project_id == project_row.id, User.role.in_(list(HUMAN_ROLES))).order_by(Ranking.task_id, Ranking.user_id)
        ):
            human_rankings.setdefault(int(task_id), []).append([list(g) for g in groups])
        rating_rows = session.execute(
            select(Rating.task_id, Rating.user_id, Rating.scores, User.role).join(Task, Task.id == Rating.task_id).join(User, User.id == Rating.user_id)
            .where(Task.project_id == project_row.id)
        ).all()
    humans = prefs[prefs["annotator_role"].isin(HUMAN_ROLES)]
    votes: dict[int, list[tuple[str, str]]] = {}
    for row in humans.itertuples(index=False):
        votes.setdefault(int(row.task_id), []).append((users.get(int(row.annotator_id), str(row.annotator_id)), row.choice))
    lengths = {int(r.task_id): (int(r.len_a), int(r.len_b), int(r.response_a_id), int(r.response_b_id)) for r in prefs.drop_duplicates("task_id").itertuples(index=False)}
    if judge_rows:
        lengths.update(_task_lengths(engine, project_row.id, {int(r.task_id) for r in judge_rows if r.kind == "pairwise"} - set(lengths)))
    human_prefs = pd.DataFrame({
        "item": humans["task_id"].astype(str), "annotator": humans["annotator_id"].astype(str), "value": humans["choice"],
        "len_a": humans["len_a"], "len_b": humans["len_b"], "response_a": humans["response_a_id"], "response_b": humans["response_b_id"],
        "shown_left": humans["shown_left"],
    })
    human_scores: dict[int, list[dict]] = {}
    judge_scores: dict[int, dict[int, dict]] = {}
    for row in rating_rows:
        if row.role in HUMAN_ROLES:
            human_scores.setdefault(int(row.task_id), []).append(row.scores)
        else:
            judge_scores.setdefault(int(row.user_id), {})[int(row.task_id)] = row.scores

    report: dict[str, Any] = {"human": human_ceiling(votes, min_votes), "judges": {}}
    by_judge: dict[int, list] = {}
    for row in judge_rows:
        by_judge.setdefault(int(row.user_id), []).append(row)
    for user_id, rows in sorted(by_judge.items()):
        name = users.get(user_id, str(user_id))
        pairs = pd.DataFrame(
            [{"task_id": r.task_id, "status": r.status, "choice": (r.verdict or {}).get("choice"),
              "order_ab": ((r.verdict or {}).get("orders") or {}).get("ab"), "order_ba": ((r.verdict or {}).get("orders") or {}).get("ba")}
             for r in rows if r.kind == "pairwise"],
            columns=["task_id", "status", "choice", "order_ab", "order_ba"],
        )
        entry: dict[str, Any] = {"judge": name, "ratings": {
            "judged": sum(r.kind == "rating" for r in rows), "unparsed": sum(r.kind == "rating" and r.status == "unparsed" for r in rows),
            "dimensions": _rating_metrics(judge_scores.get(user_id, {}), human_scores, list(project_row.rubric)),
        }}
        entry.update(judge_pair_metrics(pairs, votes, lengths, human_prefs, min_votes=min_votes, thresholds=thresholds))
        entry["rankings"] = judge_ranking_metrics(
            [{"task_id": r.task_id, "status": r.status, "verdict": r.verdict or {}} for r in rows if r.kind == "ranking"], human_rankings, min_votes)
        report["judges"][name] = entry
    from rlhf.judge.suggestions import anchoring

    report["anchoring"] = anchoring(engine, project_row.id)
    return report


def _task_lengths(engine: Engine, project_id: int, task_ids: set[int]) -> dict[int, tuple[int, int, int, int]]:
    """(len_a, len_b, response_a, response_b) of pairwise tasks no human judged (the judge's lengths still count)."""
    from rlhf.db import session_scope
    from rlhf.schema import Response

    if not task_ids:
        return {}
    out = {}
    with session_scope(engine) as session:
        ids = sorted(task_ids)
        for start in range(0, len(ids), 5000):
            rows = session.execute(select(Task.id, Task.response_a_id, Task.response_b_id).where(Task.id.in_(ids[start:start + 5000]))).all()
            texts = dict(session.execute(select(Response.id, Response.text).where(Response.id.in_(
                [r.response_a_id for r in rows] + [r.response_b_id for r in rows]))).all())
            for r in rows:
                out[int(r.id)] = (len(texts[r.response_a_id]), len(texts[r.response_b_id]), int(r.response_a_id), int(r.response_b_id))
    return out




SUMMARY_COLUMNS = [
    "judge", "pairs", "parsed", "inconsistent", "unparsed", "agreement_with_consensus", "human_loo_consensus_agreement",
    "agreement_with_consensus_decisive", "mean_agreement_with_humans", "human_human_agreement", "position_consistency", "first_share",
    "position_p_value", "longer_share", "length_tilt", "length_p_value", "ratings_judged", "ratings_unparsed",
    "rankings_judged", "ranking_position_consistency", "ranking_tau_with_consensus", "human_loo_ranking_tau", "flags",
]


def judge_tables(engine: Engine, actor, project: str | int) -> dict[str, pd.DataFrame]:
    """`judge_report` as tables for the dashboard (admin only): see `report_tables`."""
    from rlhf.roles import check_admin

    check_admin(engine, actor, "view project statistics")
    return report_tables(judge_report(engine, project))


def report_tables(report: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """summary (one row per judge, SUMMARY_COLUMNS), annotators (judge, annotator, agreement, n), confusion (judge, judge_verdict, consensus, count),
    anchoring (annotations shown / not shown a suggestion, n, people's agreement with the judge)."""
    human = report["human"]
    summary, annotators, confusion = [], [], []
    for name, entry in report["judges"].items():
        summary.append({
            "judge": name, "pairs": entry["pairs"], **entry["status"], "agreement_with_consensus": entry["agreement_with_consensus"],
            "human_loo_consensus_agreement": human["loo_consensus_agreement"],
            "agreement_with_consensus_decisive": entry["agreement_with_consensus_decisive"],
            "mean_agreement_with_humans": entry["mean_agreement_with_humans"], "human_human_agreement": human["human_human_agreement"],
            "position_consistency": entry["position_consistency"], "first_share": entry["first_share"], "position_p_value": entry["position_p_value"],
            "longer_share": entry["longer_share"], "length_tilt": entry["length_tilt"], "length_p_value": entry["length_p_value"],
            "ratings_judged": entry["ratings"]["judged"], "ratings_unparsed": entry["ratings"]["unparsed"],
            "rankings_judged": entry["rankings"]["judged"], "ranking_position_consistency": entry["rankings"]["position_consistency"],
            "ranking_tau_with_consensus": entry["rankings"]["tau_with_consensus"], "human_loo_ranking_tau": entry["rankings"]["human_loo_tau"],
            "flags": ", ".join(entry["flags"]),
        })
        annotators += [{"judge": name, "annotator": a, **v} for a, v in entry["agreement_with_annotators"].items()]
        confusion += [{"judge": name, "judge_verdict": o, "consensus": c, "count": n} for o, row in entry["confusion"].items() for c, n in row.items()]
    return {
        "summary": pd.DataFrame(summary, columns=SUMMARY_COLUMNS),
        "annotators": pd.DataFrame(annotators, columns=["judge", "annotator", "agreement", "n"]),
        "confusion": pd.DataFrame(confusion, columns=["judge", "judge_verdict", "consensus", "count"]),
        "anchoring": pd.DataFrame(
            [{"annotations": group.replace("_", " "), **report["anchoring"][group]} for group in ("shown", "not_shown")] if report.get("anchoring") else [],
            columns=["annotations", "n", "agree_with_judge"],
        ),
    }
