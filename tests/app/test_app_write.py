"""The Write page: the prompt with every turn and role, the editor opened with the right text, submit once per token,
drafts (fallback path) kept across a reload, skip / flag / guidelines / reopen keys, empty queue."""

from __future__ import annotations

import json

from apphelpers import go, no_exception, rows, signed_in_app, write_jsonl
from keyhelpers import deliver, numbered, shown
from labeling_app import flow

from rlhf.schema import Demonstration, Draft, Skip

CHAT = [{"role": "system", "content": "Answer like a pirate."}, {"role": "user", "content": "Where is the treasure?"}]
ORIGINAL = "The treasure is buried under the old oak."


def write_env(app_env):
    """Project `writing` (collects write only): a chat prompt and a prompt with a model reply to edit."""
    from rlhf.importer import import_file
    from rlhf.projects import create_project
    from rlhf.roles import SYSTEM

    create_project(app_env.engine, SYSTEM, "writing", task_kinds=["write"], guidelines="Write like a **careful** human.", max_reply_chars=200)
    path = write_jsonl(
        app_env.tmp_path / "prompts.jsonl",
        [{"prompt": CHAT}, {"prompt": "Where is the map?", "responses": [{"text": ORIGINAL, "model": "m1"}]}],
    )
    return import_file(app_env.engine, path, "writing").project_id


def write_page(app_env):
    project_id = write_env(app_env)
    return go(signed_in_app(app_env.annotator, project_id), "write.py")


def slot(at) -> flow.Slot:
    return at.session_state[flow.slot_key("write")]


def editor_element(at):
    [element] = [e for e in at.get("bidi_component") if e.proto.component_name == "rlhf_studio.write_editor"]
    return element


def editor_data(at) -> dict:
    return json.loads(editor_element(at).proto.json)


def send_editor(at, **state):
    """One delivery of the editor's state (as the browser sends it), then the run it causes."""
    states = at._tree.get_widget_states()
    widget = states.widgets.add()
    widget.id = editor_element(at).proto.id
    widget.json_value = json.dumps({"draft": None, "submit": None, **state})
    at._tree._runner._run(states, timeout=60)
    return at


def submit_text(at, text):
    data = editor_data(at)
    return send_editor(at, submit={"task_id": data["task_id"], "token": data["token"], "text": text})


def demonstrations(app_env):
    return [(d.task_id, d.text, d.revision) for d in rows(app_env.engine, Demonstration.__table__)]


def test_write_page_shows_every_turn_and_opens_the_editor_with_the_right_text(app_env):
    at = write_page(app_env)
    no_exception(at)
    page = shown(at)
    assert "Session state" not in page and "newline" not in page  # no module string drawn by Streamlit's magic
    seen = []
    for _ in range(2):
        view = slot(at).task
        data = editor_data(at)
        assert data["task_id"] == view.task_id and data["max_chars"] == 200 and data["token"] == slot(at).token
        if view.prompt_messages:  # the chat prompt: every turn under its role
            assert "Answer like a pirate." in page and "Where is the treasure?" in page
            assert data["original"] is None and data["initial"] == ""
        else:
            assert data["original"] == ORIGINAL and data["initial"] == ORIGINAL  # pre-filled for editing
        seen.append(view.task_id)
        at = submit_text(at, f"Arr, reply {len(seen)}")
        no_exception(at)
        page = shown(at)
    assert sorted(t for t, _, _ in demonstrations(app_env)) == sorted(seen)
    assert "Nothing left to write" in shown(at)


def test_a_second_submit_with_the_same_token_stores_nothing_more_and_reopen_edits(app_env):
    at = write_page(app_env)
    data = editor_data(at)
    at = submit_text(at, "First reply")
    # The same delivery again (a double Ctrl+Enter, a resent state): the token was spent.
    at = send_editor(at, submit={"task_id": data["task_id"], "token": data["token"], "text": "First reply, again"})
    no_exception(at)
    assert demonstrations(app_env) == [(data["task_id"], "First reply", 1)]
    # Backspace reopens it; the editor opens with the submitted text; saving edits the same row.
    at = deliver(at, numbered(["Backspace"]))
    assert slot(at).editing and editor_data(at)["initial"] == "First reply" and editor_data(at)["editing"] is True
    at = submit_text(at, "First reply, improved")
    assert demonstrations(app_env) == [(data["task_id"], "First reply, improved", 2)]
    assert "was updated" in shown(at)


def test_bad_replies_are_refused_with_a_message_and_the_form_can_be_sent_again(app_env):
    at = write_page(app_env)
    task_id = editor_data(at)["task_id"]
    at = submit_text(at, "   ")
    assert "Not saved" in shown(at) and "empty" in shown(at)
    at = submit_text(at, "x" * 201)
    assert "at most 200" in shown(at)
    assert demonstrations(app_env) == []
    at = submit_text(at, "Fine now")
    assert demonstrations(app_env) == [(task_id, "Fine now", 1)]


def test_a_draft_sent_by_the_editor_is_kept_and_reopens_after_a_reload(app_env):
    at = write_page(app_env)
    task_id = editor_data(at)["task_id"]
    at = send_editor(at, draft={"task_id": task_id, "text": "half a thought", "seq": 1})
    no_exception(at)
    assert [(d.task_id, d.text) for d in rows(app_env.engine, Draft.__table__)] == [(task_id, "half a thought")]
    # A reload is a new browser session: the same leased task, the editor opens with the draft.
    again = go(signed_in_app(app_env.annotator, slot(at).project_id), "write.py")
    data = editor_data(again)
    assert data["task_id"] == task_id and data["initial"] == "half a thought" and data["saved_at"] > 0
    again = submit_text(again, "a whole thought")
    assert rows(app_env.engine, Draft.__table__) == []


def test_keys_skip_flag_and_guidelines_reach_the_write_page(app_env):
    at = write_page(app_env)
    first = slot(at).task.task_id
    at = deliver(at, numbered(["G"]))
    assert "careful" in shown(at)
    at = deliver(at, numbered(["S"], start=2))
    at.selectbox(key="write.skip_reason").select("The prompt is unclear")
    at = at.button(key="write.skip").click().run()
    no_exception(at)
    assert [s.task_id for s in rows(app_env.engine, Skip.__table__)] == [first]
    assert slot(at).task.task_id != first
    at = deliver(at, numbered(["F"], start=3))
    assert at.button(key="write.flag") is not None


# --------------------------------------------------------------------------- admin pages: import and export


def test_the_import_page_turns_a_prompts_only_upload_into_write_tasks(app_env):
    from rlhf.schema import Task

    at = go(signed_in_app(app_env.admin, app_env.project_id), "import_data.py")
    at.text_input(key="import.project").input("prompts")
    content = "".join(json.dumps(r) + "\n" for r in [{"prompt": "Name a fruit."}, {"prompt": CHAT}]).encode()
    at.get("file_uploader")[0].upload("prompts.jsonl", content, "application/jsonl")
    at = at.button(key="FormSubmitter:import.form-Import").click().run()
    no_exception(at)
    assert "2 write tasks" in shown(at)
    assert sorted(t.kind for t in rows(app_env.engine, Task.__table__) if t.kind == "write") == ["write", "write"]


def test_the_export_page_writes_sft_rows(app_env):
    at = write_page(app_env)
    at = submit_text(at, "Arr, a reply")
    admin = go(signed_in_app(app_env.admin, slot(at).project_id), "export.py")
    admin.radio(key="export.format").set_value("sft")
    admin.number_input(key="export.test_size").set_value(0.0)
    admin = admin.button(key="FormSubmitter:export.form-Export").click().run()
    no_exception(admin)
    assert "Exported 1 rows" in shown(admin)
    [out] = list((app_env.tmp_path / "data" / "artifacts" / "exports").glob("writing-sft-*.jsonl"))
    row = json.loads(out.read_text().splitlines()[0])
    assert row["messages"][-1] == {"role": "assistant", "content": "Arr, a reply"}


def test_the_dashboard_lists_writers_and_flags_the_sloppy_one(app_env):
    import itertools
    from pathlib import Path

    from rlhf.importer import import_file
    from rlhf.projects import create_project
    from rlhf.roles import SYSTEM
    from rlhf.simulation.writers import simulate_writers

    create_project(app_env.engine, SYSTEM, "demos", task_kinds=["write"])
    sample = Path(__file__).resolve().parents[2] / "data" / "sample_project.jsonl"
    path = app_env.tmp_path / "sample.jsonl"
    path.write_text("".join(itertools.islice(sample.open(encoding="utf-8"), 12)))
    project_id = import_file(app_env.engine, path, "demos").project_id
    result = simulate_writers(app_env.engine, project_id, writers=3, sloppy=1, seed=1)
    [sloppy] = [w.username for w in result.writers if w.sloppy]
    at = go(signed_in_app(app_env.admin, project_id), "dashboard.py")
    no_exception(at)
    page = shown(at)
    assert "Writers (demonstrations)" in page and f"1 of 3 writers flagged for sloppy edits: **{sloppy}**" in page.replace("\\-", "-")
    [table] = [d for d in at.dataframe if "username" in d.value.columns and "median_edit_ratio" in d.value.columns]
    assert set(table.value["username"]) == {w.username for w in result.writers}
