"""The dashboard's Judges tab: a judged project shows each judge beside the people; a project without judges says how to run one."""

from __future__ import annotations

from apphelpers import no_exception, texts
from test_dashboard import dashboard_for, seed_project, table_with


def test_the_judges_tab_shows_each_judge_beside_the_people(app_env):
    from rlhf.judge.run import JudgeOptions, judge_project
    from rlhf.roles import SYSTEM
    from rlhf.simulation.judge import SimulatedJudge

    seeded = seed_project(app_env.engine)
    judge_project(app_env.engine, SYSTEM, seeded.project_id, SimulatedJudge(position_bias=1.0), JudgeOptions(name="always-first", kinds=("pairwise",)))
    at = dashboard_for(app_env.admin, seeded.project_id)
    no_exception(at)
    assert "Judges" in [s.value for s in at.subheader]
    summary = table_with(at, "position_consistency")
    row = summary[summary["judge"] == "judge:always-first"].iloc[0]
    assert row["inconsistent"] == row["pairs"] and row["position_consistency"] == 0.0  # picks the first shown in both orders
    assert row["first_share"] == 1.0
    confusion = next(f.value for f in at.dataframe if f.value.index.name == "judge_verdict")
    # Every pair with a consensus lands in the inconsistent row (the first shown, in both orders).
    assert confusion.loc["inconsistent"].sum() > 0 and confusion.drop(index="inconsistent").to_numpy().sum() == 0


def test_without_judges_the_tab_says_how_to_run_one(app_env):
    seeded = seed_project(app_env.engine)
    at = dashboard_for(app_env.admin, seeded.project_id)
    no_exception(at)
    assert "rlhf judge" in texts(at)
