"""Admin pages: projects, users (one-time passwords shown once), import (all or nothing, errors with lines), flags, export."""

from __future__ import annotations

import json

import pytest

from apphelpers import PASSWORD, go, no_exception, rows, signed_in_app, texts
from labeling_app.admin_forms import FormError, format_labels, import_error_text, parse_labels, parse_tags, rows_to_rubric, rubric_rows

from rlhf.schema import DEFAULT_RUBRIC, Flag, Project, Task, User


def admin_on(app_env, page):
    return go(signed_in_app(app_env.admin, app_env.project_id), page)


# ----------------------------------------------------------------------------- pure helpers


def test_rubric_rows_round_trip_the_default_rubric():
    assert rows_to_rubric(rubric_rows(DEFAULT_RUBRIC)) == DEFAULT_RUBRIC


def test_rubric_rows_from_the_editor():
    edited = [
        {"name": " clarity ", "question": "", "min": 1.0, "max": 5.0, "labels": "1=Muddled; 5=Crystal"},
        {"name": None, "question": None, "min": float("nan"), "max": None, "labels": None},  # a half-added row
    ]
    assert rows_to_rubric(edited) == [{"name": "clarity", "min": 1, "max": 5, "labels": {"1": "Muddled", "5": "Crystal"}}]
    with pytest.raises(FormError, match=r"rubric row 1\.max"):
        rows_to_rubric([{"name": "x", "min": 1, "max": 2.5}])
    with pytest.raises(FormError, match=r"rubric row 2\.name"):
        rows_to_rubric([{"name": "x", "min": 1, "max": 2}, {"name": "", "min": 1, "max": 2}])
    with pytest.raises(FormError, match=r"rubric row 1\.labels"):
        rows_to_rubric([{"name": "x", "min": 1, "max": 2, "labels": "one=bad"}])


def test_labels_and_tags_cells():
    assert parse_labels("7=Top; 1 = Bottom ;") == {"7": "Top", "1": "Bottom"}
    assert format_labels({"7": "Top", "1": "Bottom"}) == "1=Bottom; 7=Top"
    assert parse_tags(" unsafe, , factual error ") == ["unsafe", "factual error"]
    with pytest.raises(FormError):
        parse_labels("no equals sign")


def test_import_errors_name_the_uploaded_file():
    assert import_error_text("/tmp/rlhf-upload-x.jsonl:3: field 'prompt': missing", "/tmp/rlhf-upload-x.jsonl", "mine.jsonl") == "mine.jsonl:3: field 'prompt': missing"


# ---------------------------------------------------------------------------------- projects


def test_create_a_project(app_env):
    at = admin_on(app_env, "projects.py")
    no_exception(at)
    assert at.dataframe
    at.selectbox(key="projects.selected").set_value(0).run()  # "New project"
    at.text_input(key="projects.new.name").input("second round")
    at.text_area(key="projects.new.guidelines").input("# Be kind\nPrefer **honest** answers.")
    at.number_input(key="projects.new.overlap").set_value(2)
    at.number_input(key="projects.new.max_overlap").set_value(4)
    at.radio(key="projects.new.visibility").set_value("reveal_after_submit")
    at = at.button(key="projects.new.save").click().run()
    no_exception(at)
    stored = {p.name: p for p in rows(app_env.engine, Project.__table__)}
    created = stored["second round"]
    assert (created.overlap, created.max_overlap, created.visibility) == (2, 4, "reveal_after_submit")
    assert created.guidelines.startswith("# Be kind") and created.rubric == DEFAULT_RUBRIC
    assert "Created project 'second round'." in texts(at)


def test_invalid_settings_name_the_field_and_save_nothing(app_env):
    at = admin_on(app_env, "projects.py")
    at.selectbox(key="projects.selected").set_value(0).run()
    at.text_input(key="projects.new.name").input("bad")
    at.number_input(key="projects.new.overlap").set_value(3)
    at.number_input(key="projects.new.max_overlap").set_value(2)
    at = at.button(key="projects.new.save").click().run()
    assert "max_overlap" in texts(at)
    assert "bad" not in {p.name for p in rows(app_env.engine, Project.__table__)}


def test_edit_a_project(app_env):
    at = admin_on(app_env, "projects.py")
    at.selectbox(key="projects.selected").set_value(app_env.project_id).run()
    key = f"projects.{app_env.project_id}"
    at.text_input(key=f"{key}.tags").input("unsafe, lovely")
    at.checkbox(key=f"{key}.active").uncheck()
    at = at.button(key=f"{key}.save").click().run()
    no_exception(at)
    project = {p.id: p for p in rows(app_env.engine, Project.__table__)}[app_env.project_id]
    assert project.tags == ["unsafe", "lovely"] and project.active is False


# ------------------------------------------------------------------------------------- users


def test_add_a_user_shows_the_one_time_password_once(app_env):
    from rlhf.auth import authenticate

    at = admin_on(app_env, "users.py")
    at.text_input(key="users.new_name").input("bea")
    at = at.button(key="FormSubmitter:users.add-Add user").click().run()
    no_exception(at)
    codes = [code.value for code in at.code]
    assert len(codes) == 1 and "One-time password for **bea**" in texts(at)
    user = authenticate(app_env.engine, "bea", codes[0])
    assert user.role == "annotator" and user.must_change_password
    at.run()
    assert not at.code  # gone after one render


def test_deactivate_reset_and_change_role(app_env):
    at = admin_on(app_env, "users.py")
    at.selectbox(key="users.selected").set_value("alice").run()
    at = at.button(key="users.deactivate").click().run()
    assert {u.username: u.active for u in rows(app_env.engine, User.__table__)}["alice"] is False
    at = at.button(key="users.reactivate").click().run()
    at = at.button(key="users.reset").click().run()
    one_time = at.code[0].value
    assert one_time and one_time != PASSWORD
    at.selectbox(key="users.role.alice").set_value("admin")
    at = at.button(key="users.set_role").click().run()
    stored = {u.username: u for u in rows(app_env.engine, User.__table__)}["alice"]
    assert stored.role == "admin" and stored.must_change_password and stored.active


def test_the_last_admin_cannot_be_deactivated(app_env):
    at = admin_on(app_env, "users.py")
    at.selectbox(key="users.selected").set_value("root").run()
    at = at.button(key="users.deactivate").click().run()
    assert "last active admin" in texts(at)


# ------------------------------------------------------------------------------------ import


def _upload(at, name, content: bytes, project="demo"):
    at.text_input(key="import.project").input(project)
    at.get("file_uploader")[0].upload(name, content, "application/jsonl")
    return at.button(key="FormSubmitter:import.form-Import").click().run()


def _task_count(app_env) -> int:
    return len(rows(app_env.engine, Task.__table__))


def test_import_an_upload(app_env):
    at = admin_on(app_env, "import_data.py")
    record = {"prompt": "Name a fruit.", "responses": [{"text": "Apple.", "model": "x"}, {"text": "Pear.", "model": "y"}]}
    at = _upload(at, "fruit.jsonl", (json.dumps(record) + "\n").encode(), project="fruit")
    no_exception(at)
    assert "fruit.jsonl" in texts(at) and "added 1 prompts" in texts(at)
    assert "fruit" in {p.name for p in rows(app_env.engine, Project.__table__)}


def test_a_bad_line_imports_nothing_and_names_file_and_line(app_env):
    before = _task_count(app_env)
    good = {"prompt": "Fine.", "responses": [{"text": "Yes.", "model": "x"}]}
    content = (json.dumps(good) + "\n" + "{not json\n").encode()
    at = _upload(admin_on(app_env, "import_data.py"), "broken.jsonl", content)
    shown = texts(at)
    assert "Nothing was imported." in shown and "broken.jsonl:2" in shown
    assert "rlhf-upload-" not in shown  # the temp file's name never shows
    assert _task_count(app_env) == before


def test_an_oversized_upload_is_refused(app_env, monkeypatch):
    monkeypatch.setenv("RLHF_UPLOAD_MAX_MB", "1")
    record = {"prompt": "x" * 1000, "responses": [{"text": "y", "model": "m"}]}
    content = "".join(json.dumps({**record, "prompt": f"{i} " + record["prompt"]}) + "\n" for i in range(1100)).encode()
    at = _upload(admin_on(app_env, "import_data.py"), "big.jsonl", content)
    assert "over the import limit" in texts(at)
    assert _task_count(app_env) == 19


# ------------------------------------------------------------------------------------- flags


def test_flag_queue_resolve_and_dismiss(app_env):
    from rlhf.annotate import flag_task
    from rlhf.assign import next_task

    view = next_task(app_env.engine, app_env.annotator, app_env.project_id, "rating")
    first = flag_task(app_env.engine, app_env.annotator, view.task_id, "harmful", "mean words")
    second = flag_task(app_env.engine, app_env.annotator, view.task_id, "broken")
    at = admin_on(app_env, "flagged.py")
    no_exception(at)
    shown = texts(at)
    assert "Harmful" in shown and "mean words" in shown and "Broken" in shown
    assert view.response.text not in shown
    at = at.toggle(key=f"flagged.show.{first}").set_value(True).run()
    assert view.response.text in texts(at)  # the task's content, on request
    at = at.button(key=f"flagged.resolve.{first}").click().run()
    at = at.button(key=f"flagged.dismiss.{second}").click().run()
    no_exception(at)
    assert {f.id: f.status for f in rows(app_env.engine, Flag.__table__)} == {first: "resolved", second: "dismissed"}
    assert "No open flags" in texts(at)


# ------------------------------------------------------------------------------------ export


def test_export_writes_trl_pairs(app_env):
    from rlhf.annotate import submit_preference
    from rlhf.assign import next_task

    view = next_task(app_env.engine, app_env.annotator, app_env.project_id, "pairwise")
    submit_preference(app_env.engine, app_env.annotator, view.task_id, choice="a", strength=1, shown_left=view.shown_left)
    at = admin_on(app_env, "export.py")
    at.number_input(key="export.test_size").set_value(0.0)
    at = at.button(key="FormSubmitter:export.form-Export").click().run()
    no_exception(at)
    assert "Exported 1 rows" in texts(at)
    exported = list((app_env.tmp_path / "data" / "artifacts" / "exports").glob("demo-trl-*.jsonl"))
    assert len(exported) == 1 and json.loads(exported[0].read_text().splitlines()[0])["chosen"]


def test_export_of_only_external_labels_names_them_and_the_checkbox_uses_them(app_env):
    """Issue 16, item 14: the page shows the backend's message, and its "Include external labels" box works."""
    from rlhf.importer import import_file

    from apphelpers import RESPONSES_FIXTURE

    import_file(app_env.engine, RESPONSES_FIXTURE.with_name("preferences.jsonl"), "demo", as_labels="gpt-judge")
    at = admin_on(app_env, "export.py")
    at.number_input(key="export.test_size").set_value(0.0)
    at = at.button(key="FormSubmitter:export.form-Export").click().run()
    no_exception(at)
    shown = texts(at)
    assert "3 label(s) from external sources" in shown and "--include-external" in shown and "Include external labels" in shown

    at.checkbox(key="export.include_external").check()
    at = at.button(key="FormSubmitter:export.form-Export").click().run()
    no_exception(at)
    assert "Exported 3 rows" in texts(at)
