"""The router and sign-in: who gets which pages, password sign-in and throttling, first admin, expiry, role guards."""

from __future__ import annotations

import time

import pytest

from apphelpers import PASSWORD, go, new_app, no_exception, signed_in_app, texts
from labeling_app import common as c

ANNOTATOR_PAGES = ["Rate", "Compare", "Write", "Rank", "My progress", "Account"]
ADMIN_ONLY = ["Projects", "Users", "Import", "Flagged", "Export"]


def sign_in(at, username: str, password: str):
    at.text_input(key="login.username").input(username)
    at.text_input(key="login.password").input(password)
    return at.button[0].click().run()


def test_page_lists_per_role():
    annotator = [s.title for s in c.page_specs_for("annotator", exists=lambda f: True)]
    admin = [s.title for s in c.page_specs_for("admin", exists=lambda f: True)]
    assert annotator == ANNOTATOR_PAGES
    assert admin[:3] == ANNOTATOR_PAGES[:3]
    assert set(ADMIN_ONLY + ["Dashboard", "Training"]) <= set(admin)
    assert not set(admin) - set(ANNOTATOR_PAGES) & set(annotator)


def test_colleague_pages_listed_only_when_their_files_exist():
    without = [s.title for s in c.page_specs_for("admin", exists=lambda f: f not in ("dashboard.py", "training.py"))]
    assert "Dashboard" not in without and "Training" not in without
    assert "Export" in without


def test_signed_out_sees_only_the_sign_in_form(app_env):
    at = new_app().run()
    no_exception(at)
    assert [t.label for t in at.text_input] == ["Username", "Password"]
    assert "Rate a response" not in texts(at)
    assert not at.sidebar.children or not any(getattr(e, "label", "") == "Sign out" for e in at.sidebar.button)


def test_password_sign_in_opens_the_annotator_pages(app_env):
    at = sign_in(new_app().run(), "alice", PASSWORD)
    no_exception(at)
    assert at.session_state[c.USER_ID] == app_env.annotator.id
    assert "Rate a response" in texts(at)
    assert any(b.label == "Sign out" for b in at.sidebar.button)
    # Navigation: the annotator's pages only.
    with pytest.raises(ValueError):
        at.switch_page("pages/users.py")
    for page in ("compare.py", "progress.py"):
        no_exception(go(at, page))


def test_wrong_password_says_so_without_naming_the_account(app_env):
    at = sign_in(new_app().run(), "alice", "not the password at all")
    assert "Unknown username or wrong password." in texts(at)
    at = sign_in(at, "nobody-here", "not the password at all")
    assert "Unknown username or wrong password." in texts(at)
    assert c.USER_ID not in at.session_state


def test_throttled_sign_in_shows_the_wait(app_env):
    at = new_app().run()
    for _ in range(5):
        at = sign_in(at, "alice", "wrong password, again")
    assert "Try again in" in texts(at)
    at = sign_in(at, "alice", PASSWORD)  # even the right password waits while locked
    assert "Try again in" in texts(at)
    assert c.USER_ID not in at.session_state


def test_first_admin_must_change_the_one_time_password(tmp_path, monkeypatch):
    from rlhf.auth import ensure_admin
    from rlhf.db import init_database, make_engine

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    monkeypatch.setenv("RLHF_DATABASE_URL", url)
    engine = make_engine(url)
    init_database(engine)
    username, one_time = ensure_admin(engine)
    at = sign_in(new_app().run(), username, one_time)
    no_exception(at)
    assert "Change your password" in texts(at)
    assert not at.sidebar.button  # nothing else is reachable yet
    at.text_input(key="account.old").input(one_time)
    at.text_input(key="account.new").input("a brand new secret")
    at.text_input(key="account.again").input("a brand new secret")
    at = at.button(key="FormSubmitter:account.form-Change password").click().run()
    no_exception(at)
    assert "Password changed." in texts(at)
    at = go(at, "users.py")
    no_exception(at)
    assert "Users" in texts(at)
    engine.dispose()


def test_admin_gets_the_admin_pages(app_env):
    at = signed_in_app(app_env.admin, app_env.project_id)
    for page in ("projects.py", "users.py", "import_data.py", "flagged.py", "export.py", "rate.py", "compare.py", "progress.py"):
        no_exception(go(at, page))


def test_annotator_reaching_an_admin_page_directly_is_stopped(app_env, monkeypatch):
    """A page run outside the navigation (a stale URL) still checks the role itself."""
    from streamlit.testing.v1 import AppTest

    page = AppTest.from_file(str(c.page_path("users.py")), default_timeout=60)
    page.session_state[c.USER_ID] = app_env.annotator.id
    page.session_state[c.LAST_ACTIVE] = time.time()
    page.run()
    no_exception(page)
    assert "This page needs the admin role." in texts(page)
    assert not page.dataframe


def test_backend_refuses_admin_calls_from_annotators(app_env):
    from rlhf.annotate import list_flags
    from rlhf.auth import create_user, list_users
    from rlhf.projects import create_project
    from rlhf.roles import PermissionDenied

    annotator = app_env.annotator
    with pytest.raises(PermissionDenied):
        list_users(app_env.engine, annotator)
    with pytest.raises(PermissionDenied):
        create_user(app_env.engine, annotator, "mallory", PASSWORD, "admin")
    with pytest.raises(PermissionDenied):
        create_project(app_env.engine, annotator, "mine")
    with pytest.raises(PermissionDenied):
        list_flags(app_env.engine, annotator, app_env.project_id)


def test_idle_session_expires_to_the_sign_in_page(app_env):
    at = signed_in_app(app_env.annotator, app_env.project_id)
    at.session_state[c.LAST_ACTIVE] = time.time() - c.idle_timeout_s() - 5
    at.run()
    no_exception(at)
    assert "Your session expired" in texts(at)
    assert c.USER_ID not in at.session_state


def test_deactivated_account_is_signed_out_at_its_next_click(app_env):
    from rlhf.auth import deactivate_user
    from rlhf.roles import SYSTEM

    at = signed_in_app(app_env.annotator, app_env.project_id)
    deactivate_user(app_env.engine, SYSTEM, "alice")
    at.run()
    assert "can no longer sign in" in texts(at)
    assert c.USER_ID not in at.session_state


def test_sign_out(app_env):
    at = signed_in_app(app_env.annotator, app_env.project_id)
    at = at.sidebar.button(key="app.sign_out").click().run()
    assert c.USER_ID not in at.session_state
    assert [t.label for t in at.text_input] == ["Username", "Password"]


def test_oidc_identity_maps_to_an_account_by_email_or_username():
    from types import SimpleNamespace as Row

    accounts = [Row(username="Ann@Example.org", role="annotator", active=True), Row(username="bob", role="annotator", active=False), Row(username="src", role="external", active=True)]
    assert c.match_identity(["ann@example.org"], accounts).username == "Ann@Example.org"
    assert c.match_identity(["bob@example.org", "bob"], accounts) is None  # deactivated
    assert c.match_identity(["src"], accounts) is None  # label sources never sign in
    assert c.match_identity(["x@y.z", "ann@example.org"], accounts).username == "Ann@Example.org"


def test_uninitialised_database_says_run_init(tmp_path, monkeypatch):
    monkeypatch.setenv("RLHF_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    at = new_app().run()
    assert "rlhf init" in texts(at)


def test_session_expiry_rule():
    assert c.session_expired(None, 100.0, 60.0)
    assert not c.session_expired(50.0, 100.0, 60.0)
    assert c.session_expired(30.0, 100.0, 60.0)
    assert c.idle_timeout_s({c.SESSION_IDLE_ENV: "2"}) == 120.0
    assert c.idle_timeout_s({c.SESSION_IDLE_ENV: "junk"}) == c.DEFAULT_SESSION_IDLE_MINUTES * 60


def test_page_scripts_draw_nothing_by_accident():
    """Streamlit "magic" draws any bare module-level expression of a page script (a docstring under a
    constant, say): only the module docstring and calls may stand alone."""
    import ast

    scripts = sorted(c.PAGES_DIR.glob("*.py")) + [c.APP_DIR / "app.py"]
    for script in scripts:
        body = ast.parse(script.read_text(encoding="utf-8")).body
        for node in body[1:]:
            if isinstance(node, ast.Expr):
                assert isinstance(node.value, ast.Call), f"{script.name}:{node.lineno}: a bare expression would be drawn on the page"


def test_the_app_never_imports_database_query_apis():
    """Pages call the backend; sqlalchemy / sqlmodel appear only as type names (under TYPE_CHECKING)."""
    import ast

    for script in sorted(c.APP_DIR.rglob("*.py")):
        tree = ast.parse(script.read_text(encoding="utf-8"))
        type_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING" for n in ast.walk(block)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in type_only:
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                assert not any(n.split(".")[0] in ("sqlalchemy", "sqlmodel") for n in names), f"{script.name}:{node.lineno} imports {names}"


def _child_pid() -> int:
    import os

    return os.getpid()


def test_a_process_spawned_after_the_app_ran_does_not_start_the_app(app_env, monkeypatch, tmp_path):
    """AppTest leaves the router installed as `__main__`; a "spawn" child re-runs that file as
    `__mp_main__` first. The router must not start the app there: in a child whose environment names
    no initialised database the app raised, the pool replaced the dead worker forever, and the
    caller (a concurrency test in CI) hung."""
    import multiprocessing
    import sys

    at = new_app().run()
    no_exception(at)
    assert getattr(sys.modules["__main__"], "__file__", "").endswith("app.py")  # what AppTest leaves behind
    monkeypatch.setenv("RLHF_DATABASE_URL", f"sqlite:///{tmp_path / 'never-initialised.db'}")
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        assert pool.apply_async(_child_pid).get(timeout=90) > 0
