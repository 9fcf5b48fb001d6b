"""Storage: migrations to head, schema round-trip, the uniqueness invariants, engine settings."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import SQLModel, select

from rlhf.db import current_revision, database_url, init_database, make_engine, run_transaction, session_scope
from rlhf.schema import Preference, Project, Prompt, Rating, Response, Task, User


def _seed_task(session) -> tuple[Task, User]:
    project = Project(name="p")
    session.add(project)
    session.flush()
    prompt = Prompt(project_id=project.id, content_hash="h1", text="Say hi", messages=[{"role": "user", "content": "Say hi"}])
    session.add(prompt)
    session.flush()
    a = Response(prompt_id=prompt.id, content_hash="ra", text="Hi!", model_name="m1", generation_params={"temperature": 0.7})
    b = Response(prompt_id=prompt.id, content_hash="rb", text="Hello.", model_name="m2")
    session.add_all([a, b])
    session.flush()
    task = Task(project_id=project.id, kind="pairwise", prompt_id=prompt.id, response_a_id=a.id, response_b_id=b.id, content_hash="t1")
    user = User(username="ann", password_hash="x")
    session.add_all([task, user])
    session.flush()
    return task, user


def _seed_task_at_0001(engine) -> int:
    """A task written with the 0001 columns only (the models have grown columns since); its id."""
    when = "'2026-01-01 00:00:00'"
    statements = [
        "INSERT INTO project (name, description, guidelines, rubric, tags, overlap, max_overlap, gold_rate, visibility, lease_minutes, seed, active, created_at)"
        f" VALUES ('p', '', '', '[]', '[]', 3, 3, 0, 'blind', 10, 0, true, {when})",
        f"INSERT INTO prompt (project_id, content_hash, text, created_at) SELECT id, 'h1', 'Say hi', {when} FROM project",
        f"INSERT INTO response (prompt_id, content_hash, text, model_name, round, created_at) SELECT id, 'ra', 'Hi!', 'm1', 0, {when} FROM prompt",
        f"INSERT INTO response (prompt_id, content_hash, text, model_name, round, created_at) SELECT id, 'rb', 'Hello.', 'm2', 0, {when} FROM prompt",
        "INSERT INTO task (project_id, kind, prompt_id, response_a_id, response_b_id, content_hash, shuffle_key, annotation_count, is_gold, created_at)"
        f" SELECT p.project_id, 'pairwise', p.id, a.id, b.id, 't1', 0, 0, false, {when} FROM prompt p"
        " JOIN response a ON a.prompt_id = p.id AND a.content_hash = 'ra' JOIN response b ON b.prompt_id = p.id AND b.content_hash = 'rb'",
    ]
    with engine.begin() as connection:
        for statement in statements:
            connection.execute(text(statement))
        return connection.execute(text("SELECT id FROM task")).scalar_one()


def test_migration_from_empty_reaches_head_and_matches_models(engine):
    assert current_revision(engine) == init_database(engine)  # idempotent second run
    tables = set(inspect(engine).get_table_names())
    assert set(SQLModel.metadata.tables) <= tables

    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert diff == [], f"models and migrations disagree: {diff}"


def test_an_older_database_is_brought_to_head_keeping_its_rows(db_url):
    from alembic import command

    from rlhf.db import _alembic_config

    engine = make_engine(db_url)
    command.upgrade(_alembic_config(engine), "0001")
    task_id = _seed_task_at_0001(engine)
    assert current_revision(engine) == "0001"
    init_database(engine)
    assert current_revision(engine) != "0001"
    with session_scope(engine) as session:
        assert session.get(Task, task_id).content_hash == "t1"
    # 0002: the extra-votes index holds only tasks whose target was raised.
    indexes = {i["name"]: i for i in inspect(engine).get_indexes("task")}
    assert "ix_task_extra_votes" in indexes
    if engine.dialect.name == "sqlite":
        with engine.connect() as connection:
            sql = connection.execute(text("SELECT sql FROM sqlite_master WHERE name = 'ix_task_extra_votes'")).scalar()
    else:
        with engine.connect() as connection:
            sql = connection.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_task_extra_votes'")).scalar()
    assert "target_overlap IS NOT NULL" in sql
    engine.dispose()


def test_schema_round_trip(engine):
    with session_scope(engine, write=True) as session:
        task, user = _seed_task(session)
        session.add(Preference(task_id=task.id, user_id=user.id, choice="a", strength=2, shown_left="b", time_spent_s=3.5))
    with session_scope(engine) as session:
        pref = session.exec(select(Preference)).one()
        prompt = session.exec(select(Prompt)).one()
        project = session.exec(select(Project)).one()
    assert (pref.choice, pref.strength, pref.shown_left, pref.time_spent_s) == ("a", 2, "b", 3.5)
    assert prompt.messages == [{"role": "user", "content": "Say hi"}]
    assert [d["name"] for d in project.rubric] == ["helpfulness", "honesty", "harmlessness"]
    assert pref.created_at.tzinfo is not None


def test_one_annotation_per_user_and_task(engine):
    with session_scope(engine, write=True) as session:
        task, user = _seed_task(session)
        session.add(Rating(task_id=task.id, user_id=user.id, scores={"helpfulness": 5}))
    with pytest.raises(IntegrityError):
        with session_scope(engine, write=True) as session:
            session.add(Rating(task_id=task.id, user_id=user.id, scores={"helpfulness": 6}))
    with session_scope(engine) as session:
        assert len(session.exec(select(Rating)).all()) == 1


def test_foreign_keys_are_enforced(engine):
    with pytest.raises(IntegrityError):
        with session_scope(engine, write=True) as session:
            session.add(Prompt(project_id=999, content_hash="x", text="orphan"))


def test_sqlite_pragmas(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() >= 1000


def test_default_url_is_a_sqlite_file_under_data(tmp_path):
    assert database_url({}) == "sqlite:///data/rlhf.db"
    assert database_url({"RLHF_DATA_DIR": str(tmp_path)}) == f"sqlite:///{tmp_path / 'rlhf.db'}"
    assert database_url({"RLHF_DATABASE_URL": "postgresql+psycopg://u@h/db"}) == "postgresql+psycopg://u@h/db"


def test_run_transaction_retries_transient_lock_errors(sqlite_engine):
    from sqlalchemy.exc import OperationalError

    calls = []

    def work(session):
        calls.append(1)
        if len(calls) < 3:
            raise OperationalError("INSERT", {}, Exception("database is locked"))
        session.add(Project(name="after-retries"))
        return "ok"

    assert run_transaction(sqlite_engine, work) == "ok"
    assert len(calls) == 3
    with session_scope(sqlite_engine) as session:
        assert session.exec(select(Project.name)).all() == ["after-retries"]


def test_run_transaction_does_not_retry_real_errors(sqlite_engine):
    calls = []

    def work(session):
        calls.append(1)
        raise ValueError("bad input")

    with pytest.raises(ValueError):
        run_transaction(sqlite_engine, work)
    assert len(calls) == 1


def _foreign_key_checks_on(session) -> bool:
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        return connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    return connection.exec_driver_sql("SELECT current_setting('session_replication_role')").scalar() == "origin"


def _insert_orphan_prompt(session) -> None:
    session.add(Prompt(project_id=12345, content_hash="orphan", text="no such project"))
    session.flush()


def test_foreign_key_checks_are_skipped_for_that_transaction_only(db_url):
    engine = make_engine(db_url, pool_size=1)  # one pooled connection: the next transaction reuses it
    init_database(engine)
    assert run_transaction(engine, _foreign_key_checks_on, foreign_key_checks=False) is False
    assert run_transaction(engine, _foreign_key_checks_on) is True
    with pytest.raises(IntegrityError):
        run_transaction(engine, _insert_orphan_prompt)
    engine.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgres_role_that_may_not_skip_foreign_key_checks_keeps_them(db_url):
    """A role without the privilege (not a superuser) imports with the checks on instead of failing."""
    import uuid

    from sqlalchemy.engine import make_url

    role = f"r_{uuid.uuid4().hex[:12]}"
    schema = make_url(db_url).query["options"].split("search_path=")[1]
    admin = make_engine(db_url, pool_size=1)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        connection.execute(text(f'GRANT ALL ON SCHEMA "{schema}" TO "{role}"'))
    engine = make_engine(make_url(db_url).set(username=role).render_as_string(hide_password=False), pool_size=1)
    try:
        init_database(engine)
        assert run_transaction(engine, _foreign_key_checks_on, foreign_key_checks=False) is True
        with pytest.raises(IntegrityError):
            run_transaction(engine, _insert_orphan_prompt, foreign_key_checks=False)
        # The importer's rows pass every foreign-key check it skips where it may.
        from rlhf.importer import import_records
        from rlhf.projects import create_project
        from rlhf.roles import SYSTEM

        create_project(engine, SYSTEM, "p")
        records = [{"prompt": f"Question {i}?", "responses": [{"text": f"Answer {i}.{j}", "model": "m"} for j in range(3)]} for i in range(5)]
        summary = import_records(engine, records, "p")
        assert (summary.rating_tasks_added, summary.pairwise_tasks_added) == (15, 15)
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP OWNED BY "{role}" CASCADE'))
            connection.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()
