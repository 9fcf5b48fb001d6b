"""Fixtures for the app's AppTests: a temp SQLite database per test, chosen through `RLHF_DATABASE_URL`.

How the app finds its database (labeling_app/common.py, convention 2): `get_engine()` reads
`rlhf.db.database_url()`, so a test sets `RLHF_DATABASE_URL` before `AppTest.from_file`.
Helpers shared by the test modules are in `apphelpers.py`.
"""

from __future__ import annotations

import shutil

import pytest

from apphelpers import PASSWORD, RESPONSES_FIXTURE, AppEnv, load


@pytest.fixture(autouse=True)
def _navigation_ignores_pages_dir(monkeypatch):
    """AppTest re-detects `labeling_app/pages/` before every run and then runs the page file alone
    (multipage v1), skipping the router; a live server stops doing that once `st.navigation` has
    been called. Make AppTest behave like the server."""
    from streamlit.runtime.pages_manager import PagesManager

    original = PagesManager.__init__

    def init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", init)


@pytest.fixture(scope="session", autouse=True)
def _cheap_password_hashing():
    """argon2 at its production cost (64 MiB per hash) dominates these tests on a shared CPU; the
    sign-in logic under test does not depend on the cost, so the app tests hash cheaply."""
    from argon2 import PasswordHasher

    import rlhf.auth

    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    dummy = cheap.hash("never a password")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rlhf.auth, "_hasher", lambda: cheap)
        patch.setattr(rlhf.auth, "_dummy_hash", lambda: dummy)
        yield


@pytest.fixture(scope="session")
def _template_db(tmp_path_factory, _cheap_password_hashing):
    """A migrated database with the two accounts and project `demo`, built once and copied per test."""
    from rlhf.auth import create_user
    from rlhf.db import init_database, make_engine
    from rlhf.importer import import_file
    from rlhf.roles import SYSTEM

    path = tmp_path_factory.mktemp("app-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    init_database(engine)
    admin = create_user(engine, SYSTEM, "root", PASSWORD, "admin")
    annotator = create_user(engine, SYSTEM, "alice", PASSWORD, "annotator")
    summary = import_file(engine, RESPONSES_FIXTURE, "demo", actor=SYSTEM)
    engine.dispose()  # closes the last connection: SQLite folds the WAL back into the file
    return path, summary.project_id, admin.id, annotator.id


@pytest.fixture
def app_env(tmp_path, monkeypatch, _template_db) -> AppEnv:
    """A private copy of the template database, selected through RLHF_DATABASE_URL."""
    from rlhf.db import make_engine

    template, project_id, admin_id, annotator_id = _template_db
    path = tmp_path / "app.db"
    shutil.copyfile(template, path)
    url = f"sqlite:///{path}"
    monkeypatch.setenv("RLHF_DATABASE_URL", url)
    monkeypatch.setenv("RLHF_DATA_DIR", str(tmp_path / "data"))
    engine = make_engine(url)
    yield AppEnv(url, engine, project_id, load(engine, admin_id), load(engine, annotator_id), tmp_path)
    engine.dispose()
