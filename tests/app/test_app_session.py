"""Sign-in sessions in the app (issue 16, items 10 and 11): the database session behind a password
sign-in, ended by sign-out and elsewhere; the remembered project; leaving Account after a password change.

AppTest has no cookies: the cookie round trip (reload, new tab, two app processes) is in
tests/browser/test_browser_session.py.
"""

from __future__ import annotations

from datetime import timedelta

from apphelpers import PASSWORD, go, new_app, no_exception, signed_in_app, texts
from labeling_app import common as c

NEW_PASSWORD = "a brand new secret"
IDLE = timedelta(hours=1)


def sign_in(at, username: str, password: str):
    at.text_input(key="login.username").input(username)
    at.text_input(key="login.password").input(password)
    return at.button[0].click().run()


def test_password_sign_in_opens_a_database_session_and_queues_its_cookie(app_env):
    from rlhf.sessions import check_session

    at = sign_in(new_app().run(), "alice", PASSWORD)
    no_exception(at)
    session_id = at.session_state[c.SESSION_ID]
    assert check_session(app_env.engine, session_id, idle=IDLE).user.username == "alice"
    nonce, deadline = at.session_state[c.HANDOFF]
    assert nonce and deadline > 0


def test_sign_out_ends_the_database_session(app_env):
    from rlhf.sessions import check_session

    at = sign_in(new_app().run(), "alice", PASSWORD)
    session_id = at.session_state[c.SESSION_ID]
    at = at.sidebar.button(key="app.sign_out").click().run()
    no_exception(at)
    assert c.USER_ID not in at.session_state
    assert check_session(app_env.engine, session_id, idle=IDLE) is None
    assert c.CLEAR_COOKIE not in at.session_state  # the sign-in page asked the server to clear the cookie, once


def test_a_session_ended_elsewhere_signs_the_page_out_at_its_next_click(app_env):
    """Another tab signed out, or an admin reset the password: this page stops at its next run."""
    from rlhf.auth import reset_password
    from rlhf.roles import SYSTEM

    at = sign_in(new_app().run(), "alice", PASSWORD)
    assert "Rate a response" in texts(at)
    reset_password(app_env.engine, SYSTEM, "alice")
    at.run()
    no_exception(at)
    assert c.USER_ID not in at.session_state
    assert "Your session ended" in texts(at)
    assert [t.label for t in at.text_input] == ["Username", "Password"]


def test_password_change_clears_the_form_ends_other_sessions_and_goes_to_the_first_page(app_env):
    """Item 11: the three fields emptied, the first page shown with a message; item 10: other
    browsers signed out, this one kept signed in under a new session."""
    from rlhf.sessions import check_session, create_session, redeem_handoff, resolve_token

    other = create_session(app_env.engine, app_env.annotator.id, idle=IDLE)
    other_token = redeem_handoff(app_env.engine, other.handoff)
    at = sign_in(new_app().run(), "alice", PASSWORD)
    before = at.session_state[c.SESSION_ID]
    at = go(at, "account.py")
    at.text_input(key="account.old").input(PASSWORD)
    at.text_input(key="account.new").input(NEW_PASSWORD)
    at.text_input(key="account.again").input(NEW_PASSWORD)
    at = at.button(key="FormSubmitter:account.form-Change password").click().run()
    no_exception(at)
    assert "Password changed." in texts(at)
    assert "Rate a response" in texts(at)  # the annotator's first page
    assert not any(t.label == "Current password" for t in at.text_input)
    assert all(at.session_state[key] in ("", None) for key in ("account.old", "account.new", "account.again") if key in at.session_state)
    assert resolve_token(app_env.engine, other_token, idle=IDLE) is None
    assert check_session(app_env.engine, before, idle=IDLE) is None
    assert check_session(app_env.engine, at.session_state[c.SESSION_ID], idle=IDLE).user.username == "alice"
    assert at.session_state[c.HANDOFF][0] != ""  # the browser gets the new session's cookie
    at = go(at, "account.py")  # and the form is empty when it comes back
    assert [t.value for t in at.text_input] == ["", "", ""]


def test_a_failed_password_change_stays_on_account_with_the_error(app_env):
    at = signed_in_app(app_env.annotator, app_env.project_id)
    at = go(at, "account.py")
    at.text_input(key="account.old").input("not my password at all")
    at.text_input(key="account.new").input(NEW_PASSWORD)
    at.text_input(key="account.again").input(NEW_PASSWORD)
    at = at.button(key="FormSubmitter:account.form-Change password").click().run()
    no_exception(at)
    assert "The current password is wrong." in texts(at)
    assert any(t.label == "Current password" for t in at.text_input)


def test_the_project_selector_remembers_the_last_project_per_account(app_env):
    from rlhf.projects import create_project
    from rlhf.roles import SYSTEM
    from rlhf.sessions import last_project

    second = create_project(app_env.engine, SYSTEM, "second")
    at = signed_in_app(app_env.annotator)
    assert at.sidebar.selectbox(key=c.PROJECT_ID).value == app_env.project_id  # nothing remembered: the first
    at.sidebar.selectbox(key=c.PROJECT_ID).set_value(second.id).run()
    no_exception(at)
    assert last_project(app_env.engine, app_env.annotator.id) == second.id
    again = signed_in_app(app_env.annotator)  # a new session: a reload, another tab, tomorrow
    assert again.sidebar.selectbox(key=c.PROJECT_ID).value == second.id
    other = signed_in_app(app_env.admin)  # per account
    assert other.sidebar.selectbox(key=c.PROJECT_ID).value == app_env.project_id
