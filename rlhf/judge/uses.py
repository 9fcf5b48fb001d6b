"""Using a judge's verdicts with people's (each use is off until the project switches it on: `rlhf.projects.JUDGE_USES`).

- `request_votes_where_judge_disagrees`: one more human vote on each complete pairwise task whose
  human consensus the judge contradicts (a consistent verdict other than the consensus), up to the
  project's `max_overlap`, through the same `target_overlap` that low-agreement extra votes use.
- Export with chosen sources is `rlhf export --sources human,judge:NAME` (`rlhf.export`).
"""

from __future__ import annotations

from typing import Optional

from sqlalchemy import case, select, update
from sqlalchemy.engine import Engine

from rlhf.judge.metrics import consensus
from rlhf.judge.run import JudgeError, judge_username


def request_votes_where_judge_disagrees(engine: Engine, actor, project, judge: str, *, max_overlap: Optional[int] = None,
                                        min_votes: int = 2) -> list[int]:
    """Raise the target overlap by one on complete pairwise tasks where judge `judge` contradicts the human consensus; the ids raised. Admin only."""
    from rlhf.assign import IS_REGULAR, PROJECT, TASK, ValidationError, load_project
    from rlhf.db import run_transaction
    from rlhf.frames import HUMAN_ROLES
    from rlhf.projects import JudgeUseDisabled, find_project, require_judge_use
    from rlhf.roles import check_admin
    from rlhf.schema import Judgment, Preference, User

    username = judge_username(judge)

    def work(session) -> list[int]:
        check_admin(session, actor, "request extra votes")
        row = find_project(session, project)
        if row is None:
            raise JudgeError(f"no project {project!r}")
        try:
            require_judge_use(row, "votes", f"extra votes where judge {username} disagrees with the people")
        except JudgeUseDisabled as exc:
            raise JudgeError(str(exc)) from None
        settings = load_project(session.connection(), int(row.id))
        cap = settings.max_overlap if max_overlap is None else max_overlap
        if cap < settings.overlap:
            raise ValidationError("max_overlap", f"must be at least the project's overlap ({settings.overlap})")
        if cap > settings.max_overlap:
            session.execute(update(PROJECT).where(PROJECT.c.id == settings.id).values(max_overlap=cap))
        target = case((TASK.c.target_overlap > settings.overlap, TASK.c.target_overlap), else_=settings.overlap)
        verdicts = dict(session.execute(
            select(Judgment.task_id, Judgment.verdict).join(User, User.id == Judgment.user_id)
            .where(User.username == username, Judgment.project_id == settings.id, Judgment.status == "parsed", Judgment.kind == "pairwise")
        ).all())
        if not verdicts:
            return []
        complete = set(session.execute(select(TASK.c.id).where(
            TASK.c.project_id == settings.id, IS_REGULAR, TASK.c.kind == "pairwise", TASK.c.annotation_count >= target, target < cap,
            TASK.c.id.in_(list(verdicts)),
        )).scalars())
        votes: dict[int, list[str]] = {}
        for task_id, choice in session.execute(select(Preference.task_id, Preference.choice).join(User, User.id == Preference.user_id)
                                               .where(Preference.task_id.in_(list(complete)), User.role.in_(HUMAN_ROLES))):
            votes.setdefault(task_id, []).append(choice)
        raised = sorted(t for t in complete if (agreed := consensus(votes.get(t, []), min_votes)) is not None and agreed != verdicts[t]["choice"])
        for start in range(0, len(raised), 500):
            session.execute(update(TASK).where(TASK.c.id.in_(raised[start:start + 500])).values(target_overlap=target + 1))
        return raised

    return run_transaction(engine, work)
