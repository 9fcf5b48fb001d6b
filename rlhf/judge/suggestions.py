"""Judge suggestions shown to annotators, and how much they anchor people (the project's `suggestions` use, off by default).

When a project switches the use on (`rlhf project update P --judge-suggestions`), the Compare and
Rate pages show the latest parsed verdict of a judge for the task, and each new annotation records
`suggestion_shown`. Anchoring is then measured directly: people's agreement with the judge on the
annotations made with the suggestion on screen against those made without it (same judge verdicts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from sqlalchemy import select
from sqlalchemy.engine import Engine

from rlhf.schema import Judgment, Preference, Project, Task, User


@dataclass(frozen=True)
class JudgeSuggestion:
    """A judge's verdict for one task, as the page shows it."""

    judge: str
    """The judge's user name (judge:<name>)."""
    kind: str
    """'pairwise' or 'rating'."""
    choice: Optional[str] = None
    """Pairwise: a, b or tie, in the task's terms (a = response A)."""
    scores: Optional[dict] = None
    """Rating: {dimension: score}."""


def _latest_verdicts(session, task_ids: list[int]) -> dict[int, tuple[str, str, dict]]:
    """{task_id: (judge username, kind, verdict)} from the newest parsed Judgment of each task (any judge)."""
    out: dict[int, tuple[str, str, dict]] = {}
    rows = session.execute(
        select(Judgment.task_id, User.username, Judgment.kind, Judgment.verdict).join(User, User.id == Judgment.user_id)
        .where(Judgment.task_id.in_(task_ids), Judgment.status == "parsed").order_by(Judgment.created_at, Judgment.id)
    ).all()
    for row in rows:  # oldest first: the newest wins
        out[int(row.task_id)] = (row.username, row.kind, row.verdict or {})
    return out


def task_suggestion(engine: Engine, project_id: int, task_id: int) -> Optional[JudgeSuggestion]:
    """The suggestion to show for `task_id`, or None (the project has not switched suggestions on, or no judge verdict yet)."""
    from rlhf.db import session_scope
    from rlhf.projects import judge_use_enabled

    with session_scope(engine) as session:
        project = session.get(Project, project_id)
        if project is None or not judge_use_enabled(project, "suggestions"):
            return None
        found = _latest_verdicts(session, [task_id]).get(task_id)
    if found is None:
        return None
    judge, kind, verdict = found
    if kind == "pairwise":
        return JudgeSuggestion(judge, kind, choice=verdict.get("choice"))
    return JudgeSuggestion(judge, kind, scores=dict(verdict.get("scores") or {}))


def suggestion_text(suggestion: JudgeSuggestion, shown_left: str = "a") -> str:
    """What the page says, in the annotator's display terms (`shown_left`: the task's response shown as A)."""
    if suggestion.kind == "pairwise":
        if suggestion.choice == "tie":
            verdict = "a tie"
        else:
            shown_as_a = suggestion.choice == shown_left
            verdict = f"response {'A' if shown_as_a else 'B'} is better"
        return f"Judge suggestion ({suggestion.judge}): {verdict}."
    scores = ", ".join(f"{name} {value}" for name, value in (suggestion.scores or {}).items())
    return f"Judge suggestion ({suggestion.judge}): {scores}."


def _share(hits: int, n: int) -> Optional[float]:
    return round(hits / n, 4) if n else None


def anchoring(engine: Engine, project_id: int) -> dict[str, Any]:
    """People's agreement with the judge's verdict on pairs, split by whether the suggestion was shown.

    {"shown": {"n", "agree_with_judge"}, "not_shown": {...}, "difference"}: `difference` is shown
    minus not shown (positive: people follow the suggestion more than they agree with the judge
    unaided). Not shown counts annotations recorded as not shown and those made without the app's
    record (None). Only human annotators' preferences on tasks with a parsed, decisive-or-tie verdict.
    """
    from rlhf.db import session_scope
    from rlhf.frames import HUMAN_ROLES

    with session_scope(engine) as session:
        prefs = session.execute(
            select(Preference.task_id, Preference.choice, Preference.suggestion_shown).join(Task, Task.id == Preference.task_id)
            .join(User, User.id == Preference.user_id).where(Task.project_id == project_id, User.role.in_(HUMAN_ROLES))
        ).all()
        verdicts = _latest_verdicts(session, sorted({int(p.task_id) for p in prefs})) if prefs else {}
    counts = {"shown": [0, 0], "not_shown": [0, 0]}
    for pref in prefs:
        found = verdicts.get(int(pref.task_id))
        if found is None or found[1] != "pairwise" or found[2].get("choice") not in ("a", "b", "tie"):
            continue
        group = counts["shown" if pref.suggestion_shown else "not_shown"]
        group[0] += 1
        group[1] += pref.choice == found[2]["choice"]
    out: dict[str, Any] = {name: {"n": n, "agree_with_judge": _share(hits, n)} for name, (n, hits) in counts.items()}
    shown, not_shown = out["shown"]["agree_with_judge"], out["not_shown"]["agree_with_judge"]
    out["difference"] = round(shown - not_shown, 4) if shown is not None and not_shown is not None else None
    return out
