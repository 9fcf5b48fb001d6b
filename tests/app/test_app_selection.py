"""Active selection in the app: the Projects form sets the strategy and shows a fallback; the Dashboard's Selection tab."""

from __future__ import annotations

from apphelpers import go, no_exception, rows, signed_in_app, texts

from rlhf.schema import Job, Project


def test_projects_form_sets_selection_and_shows_the_fallback(app_env):
    from rlhf.selection.scores import compute_scores

    at = go(signed_in_app(app_env.admin, app_env.project_id), "projects.py")
    at.selectbox(key="projects.selected").set_value(app_env.project_id).run()
    key = f"projects.{app_env.project_id}"
    at.selectbox(key=f"{key}.selection").set_value("uncertainty").run()
    at = at.button(key=f"{key}.save").click().run()
    no_exception(at)
    project = {p.id: p for p in rows(app_env.engine, Project.__table__)}[app_env.project_id]
    assert project.selection == "uncertainty"
    assert [(j.kind, j.project_id) for j in rows(app_env.engine, Job.__table__)] == [("select-scores", app_env.project_id)]
    compute_scores(app_env.engine, app_env.project_id)  # what the queued job runs: no reward model yet
    at = go(signed_in_app(app_env.admin, app_env.project_id), "projects.py")
    at.selectbox(key="projects.selected").set_value(app_env.project_id).run()
    no_exception(at)
    assert "Selection uncertainty is not in force: no reward model for this project" in texts(at)


def test_dashboard_selection_tab_counts_labels_per_strategy(app_env):
    from rlhf.annotate import submit_rating
    from rlhf.assign import next_task
    from rlhf.projects import update_project
    from rlhf.roles import SYSTEM
    from rlhf.selection.scores import compute_scores

    update_project(app_env.engine, SYSTEM, app_env.project_id, selection="disagreement")
    compute_scores(app_env.engine, app_env.project_id)
    view = next_task(app_env.engine, app_env.annotator, app_env.project_id, "rating")
    submit_rating(app_env.engine, app_env.annotator, view.task_id, scores={d.name: d.min for d in view.rubric})
    compute_scores(app_env.engine, app_env.project_id)
    at = go(signed_in_app(app_env.admin, app_env.project_id), "dashboard.py")
    no_exception(at)
    assert "Strategy: **disagreement** · order in force: **disagreement**" in [m.value for m in at.markdown]
    tables = [d.value for d in at.dataframe if list(d.value.columns) == ["strategy", "labels"]]
    assert [t.to_dict("records") for t in tables] == [[{"strategy": "disagreement", "labels": 1}]]


def test_dashboard_selection_tab_says_when_it_fell_back(app_env):
    from rlhf.projects import update_project
    from rlhf.roles import SYSTEM
    from rlhf.selection.scores import compute_scores

    from rlhf.annotate import submit_rating
    from rlhf.assign import next_task

    update_project(app_env.engine, SYSTEM, app_env.project_id, selection="uncertainty")
    compute_scores(app_env.engine, app_env.project_id)  # no reward model: least-annotated order kept
    view = next_task(app_env.engine, app_env.annotator, app_env.project_id, "rating")  # the tabs show once there is a label
    submit_rating(app_env.engine, app_env.annotator, view.task_id, scores={d.name: d.min for d in view.rubric})
    at = go(signed_in_app(app_env.admin, app_env.project_id), "dashboard.py")
    no_exception(at)
    assert "Strategy: **uncertainty** · order in force: **least-annotated**" in [m.value for m in at.markdown]
    assert any("no reward model" in w.value for w in at.warning)
