"""Write tasks: the 0004 upgrade in place, prompts-only imports, demonstrations through the engine (leases, overlap,
edits with revisions, skip/flag), drafts, bad input, review tasks, edit ratios."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text

from engine_fixtures import add_annotators
from rlhf.annotate import TaskFull, ValidationError, flag_task, next_task, recent_annotations, skip_task, submit_rating, task_view_for_edit
from rlhf.db import current_revision, init_database, make_engine, session_scope
from rlhf.demonstrations import (
    MAX_DRAFT_CHARS,
    OWN_REVIEW_SKIP,
    edit_ratio,
    is_substantive,
    load_draft,
    save_draft,
    submit_demonstration,
)
from rlhf.importer import ImportFormatError, import_file
from rlhf.projects import ProjectValidationError, create_project, update_project
from rlhf.roles import SYSTEM
from rlhf.schema import DEFAULT_RUBRIC, AnnotationRevision, Demonstration, Draft, Skip, Task, utcnow

CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2 + 2?"}]


def write_file(tmp_path, records, name="prompts.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def write_project(engine, tmp_path, *, kinds=("write",), records=None, **settings):
    create_project(engine, SYSTEM, "demo", task_kinds=list(kinds), **settings)
    records = records or [{"prompt": "Say hi"}, {"prompt": CHAT}, {"prompt": "Name a colour", "category": "easy"}]
    summary = import_file(engine, write_file(tmp_path, records), "demo")
    return summary


def all_rows(engine, model):
    with session_scope(engine) as s:
        return s.execute(select(model)).scalars().all()


# ------------------------------------------------------------------------------------ pure


def test_edit_ratio_counts_words_changed_and_is_none_from_scratch():
    assert edit_ratio(None, "anything") is None
    assert edit_ratio("a b c d", "a b c d") == 0.0
    assert edit_ratio("a  b\nc d", "a b c d") == 0.0  # re-wrapping is not an edit
    assert edit_ratio("a b c d", "w x y z") == 1.0
    # one word of four replaced: matches 3 of (4 + 4) / 2 → ratio 0.75 → 0.25 changed
    assert edit_ratio("a b c d", "a b c z") == pytest.approx(0.25)
    assert not is_substantive(edit_ratio("one two three four five six seven eight nine ten " * 3, "one two three four five six seven eight nine ten " * 3))
    assert is_substantive(0.25) and not is_substantive(None)


# ------------------------------------------------------------------------------- migration


def test_a_0003_database_upgrades_in_place_keeping_its_tasks(db_url):
    from alembic import command

    from rlhf.db import _alembic_config

    engine = make_engine(db_url)
    config = _alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO project (name, description, guidelines, rubric, tags, overlap, max_overlap, gold_rate, visibility, "
                "lease_minutes, seed, active, created_at) VALUES ('old', '', '', :rubric, '[]', 3, 3, 0, 'blind', 10, 0, true, CURRENT_TIMESTAMP)"
            ),
            {"rubric": json.dumps(DEFAULT_RUBRIC)},
        )
        pid = connection.execute(text("SELECT id FROM project")).scalar_one()
        connection.execute(text(f"INSERT INTO prompt (project_id, content_hash, text, created_at) VALUES ({pid}, 'p', 'hi', CURRENT_TIMESTAMP)"))
        connection.execute(text("INSERT INTO response (prompt_id, content_hash, text, model_name, round, created_at) VALUES (1, 'r', 'yo', 'm', 0, CURRENT_TIMESTAMP)"))
        connection.execute(
            text(
                f"INSERT INTO task (project_id, kind, prompt_id, response_a_id, content_hash, shuffle_key, annotation_count, is_gold, created_at) "
                f"VALUES ({pid}, 'rating', 1, 1, 't', 0, 0, false, CURRENT_TIMESTAMP)"
            )
        )
        connection.execute(text("INSERT INTO \"user\" (username, role, active, must_change_password, created_at) VALUES ('u', 'annotator', true, false, CURRENT_TIMESTAMP)"))
        connection.execute(text("INSERT INTO lease (task_id, user_id, expires_at, created_at) VALUES (1, 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
    head = init_database(engine)
    assert current_revision(engine) == head and head >= "0004"
    with engine.connect() as connection:
        assert connection.execute(text("SELECT task_kinds, write_overlap, max_reply_chars FROM project")).one()[1:] == (1, 20000)
        assert connection.execute(text("SELECT count(*) FROM task")).scalar_one() == 1
        # The task table was rebuilt on SQLite: the rows referencing it survived.
        assert connection.execute(text("SELECT count(*) FROM lease")).scalar_one() == 1
    project = update_project(engine, SYSTEM, "old", task_kinds=["rate", "write"])
    assert project.task_kinds == ["rate", "write"] and project.write_overlap == 1
    engine.dispose()


# --------------------------------------------------------------------------------- settings


def test_project_settings_for_write_are_validated_with_the_field_named(engine):
    with pytest.raises(ProjectValidationError, match="task_kinds"):
        create_project(engine, SYSTEM, "x", task_kinds=["rank"])
    with pytest.raises(ProjectValidationError, match="task_kinds"):
        create_project(engine, SYSTEM, "x", task_kinds=[])
    with pytest.raises(ProjectValidationError, match="write_overlap"):
        create_project(engine, SYSTEM, "x", write_overlap=0)
    with pytest.raises(ProjectValidationError, match="max_reply_chars"):
        create_project(engine, SYSTEM, "x", max_reply_chars=0)
    project = create_project(engine, SYSTEM, "x")
    assert (project.task_kinds, project.write_overlap) == (["rate", "compare"], 1)
    assert update_project(engine, SYSTEM, "x", task_kinds="write, rate", write_overlap=2).task_kinds == ["write", "rate"]


# ----------------------------------------------------------------------------------- import


def test_a_prompts_only_file_imports_as_write_tasks_once(engine, tmp_path):
    create_project(engine, SYSTEM, "demo")  # collects rate + compare only: prompts alone still make write tasks
    path = write_file(tmp_path, [{"prompt": "Say hi"}, {"prompt": CHAT, "meta": {"source": "x"}}])
    summary = import_file(engine, path, "demo")
    assert (summary.write_tasks_added, summary.rating_tasks_added, summary.responses_added) == (2, 0, 0)
    assert "2 write tasks" in summary.line()
    again = import_file(engine, path, "demo")
    assert again.write_tasks_added == 0 and again.tasks_skipped == 2
    tasks = all_rows(engine, Task)
    assert {t.kind for t in tasks} == {"write"} and all(t.response_a_id is None for t in tasks)


def test_a_project_collecting_write_prefills_from_the_first_reply_and_skips_other_kinds(engine, tmp_path):
    create_project(engine, SYSTEM, "demo", task_kinds=["write"])
    records = [{"prompt": "Tell a joke", "responses": [{"text": "Why did the", "model": "m1"}, {"text": "Knock knock", "model": "m2"}]}]
    summary = import_file(engine, write_file(tmp_path, records), "demo")
    assert (summary.write_tasks_added, summary.rating_tasks_added, summary.pairwise_tasks_added) == (1, 0, 0)
    [user] = add_annotators(engine, 1)
    view = next_task(engine, user, summary.project_id, "write")
    assert view.kind == "write" and view.response.text == "Why did the" and view.response.model_name is None


def test_a_chat_prompt_without_a_user_turn_is_refused_at_import_naming_the_line(engine, tmp_path):
    create_project(engine, SYSTEM, "demo")
    path = write_file(tmp_path, [{"prompt": "fine"}, {"prompt": [{"role": "system", "content": "Be brief."}]}])
    with pytest.raises(ImportFormatError, match=r"prompts.jsonl:2: field .prompt.: has no user turn"):
        import_file(engine, path, "demo")
    assert all_rows(engine, Task) == []


# ------------------------------------------------------------------------------- submitting


def test_write_task_shows_every_turn_and_submit_twice_edits_keeping_revisions(engine, tmp_path):
    summary = write_project(engine, tmp_path)
    [user] = add_annotators(engine, 1)
    seen = {}
    view = next_task(engine, user, summary.project_id, "write")
    while view is not None:
        seen[view.task_id] = view
        if view.prompt_messages:
            assert [(m.role, m.content) for m in view.prompt_messages] == [(m["role"], m["content"]) for m in CHAT]
        result = submit_demonstration(engine, user, view.task_id, text=f"Reply to {view.task_id}", time_spent_s=3.0)
        assert result.created and result.revision == 1
        view = result.next_task
    assert len(seen) == 3  # overlap 1: each task once, then the queue is empty
    first = min(seen)
    again = submit_demonstration(engine, user, first, text="A better reply", next_kind=None)
    assert (again.created, again.revision) == (False, 2)
    same = submit_demonstration(engine, user, first, text="A better reply", next_kind=None)
    assert (same.created, same.revision) == (False, 2)  # identical content changes nothing
    demos = all_rows(engine, Demonstration)
    assert len(demos) == 3 and {d.text for d in demos if d.task_id == first} == {"A better reply"}
    [old] = all_rows(engine, AnnotationRevision)
    assert (old.kind, old.revision, old.payload["text"]) == ("demonstration", 1, f"Reply to {first}")
    with session_scope(engine) as s:
        assert s.execute(select(Task.annotation_count).where(Task.id == first)).scalar_one() == 1
    edit = task_view_for_edit(engine, user, first)
    assert edit.is_revisit and edit.own.text == "A better reply" and edit.own.kind == "write"
    assert [a.kind for a in recent_annotations(engine, user, summary.project_id)] == ["write"] * 3


@pytest.mark.parametrize(
    "reply, field",
    [("", "text"), ("   \n\t ", "text"), ("x" * 101, "text"), (7, "text")],
)
def test_bad_replies_are_refused_naming_the_field_and_store_nothing(engine, tmp_path, reply, field):
    summary = write_project(engine, tmp_path, max_reply_chars=100)
    [user] = add_annotators(engine, 1)
    view = next_task(engine, user, summary.project_id, "write")
    save_draft(engine, user, view.task_id, "kept")
    with pytest.raises(ValidationError) as caught:
        submit_demonstration(engine, user, view.task_id, text=reply)
    assert caught.value.field == field
    assert "100" in str(caught.value) or "empty" in str(caught.value) or "text" in str(caught.value)
    assert all_rows(engine, Demonstration) == []
    assert load_draft(engine, user, view.task_id).text == "kept"  # nothing half-written: the draft stays


def test_a_prompt_without_a_user_turn_is_refused_at_submit(engine, tmp_path):
    summary = write_project(engine, tmp_path)
    [user] = add_annotators(engine, 1)
    with session_scope(engine, write=True) as s:  # a prompt stored before the import checked for a user turn
        s.execute(text("UPDATE prompt SET messages = :m"), {"m": json.dumps([{"role": "system", "content": "Be brief."}])})
    view = next_task(engine, user, summary.project_id, "write")
    with pytest.raises(ValidationError, match="no user turn") as caught:
        submit_demonstration(engine, user, view.task_id, text="Four.")
    assert caught.value.field == "prompt"
    assert all_rows(engine, Demonstration) == []
    with session_scope(engine) as s:
        assert s.execute(select(func.sum(Task.annotation_count))).scalar_one() == 0


def test_write_overlap_is_exact_under_concurrency(engine, tmp_path):
    summary = write_project(engine, tmp_path, write_overlap=2)
    users = add_annotators(engine, 6)
    errors: list[BaseException] = []

    def work(user):
        try:
            view = next_task(engine, user, summary.project_id, "write")
            while view is not None:
                view = submit_demonstration(engine, user, view.task_id, text=f"by {user.username}").next_task
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(u,)) for u in users]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # A pick passes over tasks another transaction holds locked (SKIP LOCKED), so a racing
    # annotator may stop early: a second, calm pass fills what is left.
    for user in users:
        work(user)
    assert errors == []
    with session_scope(engine) as s:
        per_task = dict(s.execute(select(Demonstration.task_id, func.count()).group_by(Demonstration.task_id)).all())
        counts = dict(s.execute(select(Task.id, Task.annotation_count).where(Task.kind == "write")).all())
    assert sorted(per_task.values()) == [2, 2, 2] and per_task == counts


def test_a_full_write_task_refuses_a_late_submit_without_a_lease(engine, tmp_path):
    summary = write_project(engine, tmp_path, records=[{"prompt": "Only one"}])
    a, b = add_annotators(engine, 2)
    view = next_task(engine, a, summary.project_id, "write")
    later = utcnow() + timedelta(minutes=30)  # a's lease has run out; the task is free for b
    submit_demonstration(engine, b, view.task_id, text="b was first", now=later)
    with pytest.raises(TaskFull):
        submit_demonstration(engine, a, view.task_id, text="too late", now=later)


def test_skip_and_flag_work_on_write_tasks(engine, tmp_path):
    summary = write_project(engine, tmp_path)
    [user] = add_annotators(engine, 1)
    view = next_task(engine, user, summary.project_id, "write")
    flag_id = flag_task(engine, user, view.task_id, "harmful", "nasty")
    nxt = skip_task(engine, user, view.task_id, "unclear")
    assert flag_id and nxt is not None and nxt.kind == "write" and nxt.task_id != view.task_id
    assert [s.task_id for s in all_rows(engine, Skip)] == [view.task_id]


# ----------------------------------------------------------------------------------- drafts


def test_drafts_are_saved_as_typed_read_back_from_any_tab_and_removed_by_submit(engine, tmp_path):
    summary = write_project(engine, tmp_path)
    a, b = add_annotators(engine, 2)
    view = next_task(engine, a, summary.project_id, "write")
    assert load_draft(engine, a, view.task_id) is None
    save_draft(engine, a, view.task_id, "Hel")
    save_draft(engine, a, view.task_id, "Hello wor")
    assert load_draft(engine, a, view.task_id).text == "Hello wor"  # the last save wins, one row
    assert load_draft(engine, b, view.task_id) is None  # drafts are private
    assert next_task(engine, a, summary.project_id, "write").task_id == view.task_id  # a second tab: same task, same draft
    long = "word " * 3000  # far over the project's reply limit is still kept as a draft
    save_draft(engine, a, view.task_id, long)
    assert load_draft(engine, a, view.task_id).text == long
    with pytest.raises(ValidationError, match="drafts keep at most"):
        save_draft(engine, a, view.task_id, "x" * (MAX_DRAFT_CHARS + 1))
    submit_demonstration(engine, a, view.task_id, text="Hello world")
    assert load_draft(engine, a, view.task_id) is None and all_rows(engine, Draft) == []


def test_drafts_are_for_write_tasks_only(engine, tmp_path):
    create_project(engine, SYSTEM, "demo")
    records = [{"prompt": "Hi", "responses": [{"text": "Hello", "model": "m"}]}]
    summary = import_file(engine, write_file(tmp_path, records), "demo")
    [user] = add_annotators(engine, 1)
    rating = next_task(engine, user, summary.project_id, "rating")
    with pytest.raises(ValidationError, match="drafts are for write tasks"):
        save_draft(engine, user, rating.task_id, "x")


# ----------------------------------------------------------------------------------- review


def test_a_demonstration_becomes_a_review_rating_task_for_the_others_only(engine, tmp_path):
    records = [{"prompt": "Tell a joke", "responses": [{"text": "Why did the chicken cross the road", "model": "m1"}]}]
    summary = write_project(engine, tmp_path, kinds=("write", "rate"), records=records)
    writer, reviewer = add_annotators(engine, 2)
    view = next_task(engine, writer, summary.project_id, "write")
    submit_demonstration(engine, writer, view.task_id, text="Why did the chicken cross the road? To get to the other side.")
    [demo] = all_rows(engine, Demonstration)
    assert demo.review_task_id is not None and demo.edit_ratio == pytest.approx(edit_ratio("Why did the chicken cross the road", demo.text))
    assert [(s.task_id, s.reason) for s in all_rows(engine, Skip)] == [(demo.review_task_id, OWN_REVIEW_SKIP)]
    # The writer is offered the imported reply to rate, never their own demonstration.
    mine = []
    task = next_task(engine, writer, summary.project_id, "rating")
    while task is not None:
        mine.append(task.task_id)
        task = submit_rating(engine, writer, task.task_id, scores={"helpfulness": 4, "honesty": 4, "harmlessness": 4}).next_task
    assert demo.review_task_id not in mine
    seen = []
    task = next_task(engine, reviewer, summary.project_id, "rating")
    while task is not None:
        seen.append((task.task_id, task.response.text))
        task = submit_rating(engine, reviewer, task.task_id, scores={"helpfulness": 7, "honesty": 7, "harmlessness": 7}).next_task
    assert (demo.review_task_id, demo.text) in seen
    # An edit moves the demonstration to a new review task; the old one keeps its rating.
    submit_demonstration(engine, writer, view.task_id, text="A different joke entirely.", next_kind=None)
    [edited] = all_rows(engine, Demonstration)
    assert edited.review_task_id != demo.review_task_id
