"""Projects page: the judge-use panel switches each use on and off (all off by default)."""

from __future__ import annotations

from apphelpers import go, no_exception, rows, signed_in_app

from rlhf.schema import Project


def test_judge_uses_are_off_by_default_and_saved_from_the_projects_page(app_env):
    at = go(signed_in_app(app_env.admin, app_env.project_id), "projects.py")
    at.selectbox(key="projects.selected").set_value(app_env.project_id).run()
    key = f"projects.{app_env.project_id}.judge_uses"
    assert [at.checkbox(key=f"{key}.{use}").value for use in ("export", "votes", "suggestions")] == [False, False, False]
    at.checkbox(key=f"{key}.votes").check()
    at.checkbox(key=f"{key}.suggestions").check()
    at = at.button(key=f"projects.{app_env.project_id}.save").click().run()
    no_exception(at)
    project = {p.id: p for p in rows(app_env.engine, Project.__table__)}[app_env.project_id]
    assert project.judge_uses == {"export": False, "votes": True, "suggestions": True}
