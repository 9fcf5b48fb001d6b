"""Sign-ins that survive a reload, in a real browser (issue 16, item 10).

The app is served as `rlhf app` serves it (labeling_app/server.py). Checked: a reload and a new tab
stay signed in on the same project; the cookie is HttpOnly and SameSite=Strict and its token is
never in a URL nor readable by page scripts; sign-out and a password change elsewhere end the
session; a deep link opened while signed out lands on its page after sign-in, without a "Page not
found" dialog; and two app processes on one PostgreSQL database (one started by `rlhf app`)
serve the same signed-in browser.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness import VIEWPORT, chromium_available, field, launch_chromium, screenshot, sign_in, start_app, wait_loaded, wait_text

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="Chromium is not installed at /usr/bin/chromium (make browser)"),
]

PASSWORD = "annotate all day"
ADMIN_PASSWORD = "administer all day"
FIXTURE = Path(__file__).with_name("fixture_project.jsonl")
COOKIE = "rlhf_session"


def seed(url: str) -> dict:
    """Accounts `annie` (annotator) and `boss` (admin) with known passwords; projects `demo` and `second`."""
    from rlhf.auth import create_user
    from rlhf.db import init_database, make_engine
    from rlhf.importer import import_file
    from rlhf.roles import SYSTEM

    engine = make_engine(url)
    init_database(engine)
    create_user(engine, SYSTEM, "annie", PASSWORD, "annotator")
    create_user(engine, SYSTEM, "boss", ADMIN_PASSWORD, "admin")
    import_file(engine, FIXTURE, "demo", actor=SYSTEM)
    import_file(engine, FIXTURE, "second", actor=SYSTEM)
    return {"engine": engine}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-session")
    url = f"sqlite:///{root / 'session.db'}"
    state = seed(url)
    server = start_app(url, root / "streamlit.log")
    try:
        yield {"url": server.url, "engine": state["engine"], "server": server}
    finally:
        server.stop()
        state["engine"].dispose()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = launch_chromium(p)
        try:
            yield chromium
        finally:
            chromium.close()


def new_page(browser, context=None):
    """A page that records every URL it requests (to prove the token never travels in one)."""
    context = context or browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.requested_urls = []
    page.on("request", lambda request: page.requested_urls.append(request.url))
    return page


@contextmanager
def recorded_page(browser, failure_screenshot: str):
    """A new page in its own context (see new_page), screenshotted as `failure_screenshot` if the block fails."""
    page = new_page(browser)
    try:
        yield page
    except Exception:
        screenshot(page, failure_screenshot)
        raise
    finally:
        page.context.close()


def session_cookie(context, timeout_s: float = 15.0) -> dict:
    """The session cookie once the page has traded its handoff for it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = [c for c in context.cookies() if c["name"] == COOKIE]
        if found:
            return found[0]
        time.sleep(0.2)
    raise AssertionError(f"no {COOKIE} cookie after {timeout_s} s: {context.cookies()}")


def wait_no_cookie(context, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(c["name"] == COOKIE for c in context.cookies()):
        assert time.monotonic() < deadline, f"the {COOKIE} cookie was not cleared"
        time.sleep(0.2)


def signed_in_as(page, username: str) -> None:
    wait_text(page, f"Signed in as {username}")
    wait_loaded(page)


def sign_in_form_shown(page) -> None:
    field(page, "Username").wait_for(state="visible", timeout=20_000)
    wait_loaded(page)


def choose_project(page, name: str) -> None:
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').click()
    page.get_by_role("option", name=name).click()


def selected_project(page) -> str:
    box = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]')
    shown = box.locator("input")
    return (shown.first.input_value() if shown.count() else "") + " " + box.inner_text()


def no_page_not_found(page) -> None:
    page.wait_for_timeout(500)  # the dialog is drawn right after the navigation message
    assert page.get_by_text("Page not found").count() == 0


def test_reload_and_a_new_tab_stay_signed_in_on_the_same_project(served, browser):
    with recorded_page(browser, "failure_session_reload") as page:
        sign_in(page, served["url"], "annie", PASSWORD)
        signed_in_as(page, "annie")
        cookie = session_cookie(page.context)
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and not cookie["secure"]  # plain http here
        assert page.evaluate("() => document.cookie").find(COOKIE) < 0  # page scripts cannot read it
        choose_project(page, "second")
        wait_loaded(page)

        page.reload()
        signed_in_as(page, "annie")
        assert "second" in selected_project(page)
        wait_text(page, "Rate a response")

        tab = new_page(browser, page.context)
        tab.goto(served["url"] + "/progress")
        signed_in_as(tab, "annie")
        assert "second" in selected_project(tab)
        no_page_not_found(tab)
        screenshot(tab, "session_01_new_tab")

        token = cookie["value"]
        urls = page.requested_urls + tab.requested_urls
        assert urls and not [u for u in urls if token in u]
        assert token not in page.url and token not in tab.url


def test_sign_out_ends_the_session_for_reloads_and_other_tabs(served, browser):
    from rlhf.sessions import resolve_token
    from labeling_app.common import idle_timeout

    with recorded_page(browser, "failure_session_sign_out") as page:
        sign_in(page, served["url"], "annie", PASSWORD)
        signed_in_as(page, "annie")
        token = session_cookie(page.context)["value"]
        other_tab = new_page(browser, page.context)
        other_tab.goto(served["url"])
        signed_in_as(other_tab, "annie")

        page.locator('[data-testid="stSidebar"]').get_by_role("button", name="Sign out").click()
        sign_in_form_shown(page)
        wait_no_cookie(page.context)
        assert resolve_token(served["engine"], token, idle=idle_timeout()) is None
        page.reload()
        sign_in_form_shown(page)

        other_tab.locator('[data-testid="stSidebar"]').get_by_text("Rate", exact=True).click()  # its next click
        sign_in_form_shown(other_tab)


def test_a_password_change_elsewhere_signs_the_browser_out(served, browser):
    from rlhf.auth import change_password, load_user

    with recorded_page(browser, "failure_session_password_change") as page:
        sign_in(page, served["url"], "boss", ADMIN_PASSWORD)
        signed_in_as(page, "boss")
        session_cookie(page.context)
        engine = served["engine"]
        user = load_user(engine, next(u.id for u in _users(engine) if u.username == "boss"))
        change_password(engine, user, ADMIN_PASSWORD, ADMIN_PASSWORD + " 2")
        try:
            page.reload()
            sign_in_form_shown(page)
            wait_text(page, "Your session ended")
            wait_no_cookie(page.context)
        finally:
            change_password(engine, load_user(engine, user.id), ADMIN_PASSWORD + " 2", ADMIN_PASSWORD)


def test_a_password_change_clears_the_form_and_opens_the_first_page_still_signed_in(served, browser):
    """Item 11, and the session the change opens: this browser gets a new cookie, the old one is dead."""
    from labeling_app.common import idle_timeout
    from rlhf.auth import create_user
    from rlhf.roles import SYSTEM
    from rlhf.sessions import resolve_token

    create_user(served["engine"], SYSTEM, "penny", PASSWORD, "annotator")
    with recorded_page(browser, "failure_session_password_change_here") as page:
        sign_in(page, served["url"], "penny", PASSWORD)
        signed_in_as(page, "penny")
        old_token = session_cookie(page.context)["value"]
        page.locator('[data-testid="stSidebarNav"] a[href$="/account"]').click()
        field(page, "Current password").fill(PASSWORD)
        field(page, "New password (at least 10 characters)").fill(PASSWORD + " too")
        field(page, "New password again").fill(PASSWORD + " too")
        page.get_by_role("button", name="Change password").click()
        wait_text(page, "Password changed.")
        wait_text(page, "Rate a response")
        wait_loaded(page)
        assert not page.url.endswith("/account")
        assert field(page, "Current password").count() == 0
        screenshot(page, "session_02_password_changed")

        deadline = time.monotonic() + 15
        while session_cookie(page.context)["value"] == old_token:
            assert time.monotonic() < deadline, "the new session's cookie never came"
            time.sleep(0.2)
        assert resolve_token(served["engine"], old_token, idle=idle_timeout()) is None
        page.reload()
        signed_in_as(page, "penny")
        page.locator('[data-testid="stSidebarNav"] a[href$="/account"]').click()
        field(page, "Current password").wait_for(state="visible")
        assert [field(page, label).input_value() for label in ("Current password", "New password (at least 10 characters)", "New password again")] == ["", "", ""]


def post(url: str, body: bytes, headers: dict) -> tuple[int, str]:
    """POST with urllib: (status, Set-Cookie header)."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            return reply.status, reply.headers.get("set-cookie", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("set-cookie", "")


def test_the_session_route_trades_a_nonce_once_from_this_origin_only(served):
    """No cross-site page can sign a browser in (login CSRF); the nonce works once; Secure behind https."""
    import json

    from labeling_app.common import idle_timeout
    from rlhf.auth import list_users
    from rlhf.roles import SYSTEM
    from rlhf.sessions import create_session

    engine, url = served["engine"], served["url"]
    annie = next(u for u in list_users(engine, SYSTEM) if u.username == "annie")
    route = url + "/_rlhf/session"
    body = lambda nonce: json.dumps({"handoff": nonce}).encode()  # noqa: E731
    host = url.removeprefix("http://")
    new = create_session(engine, annie.id, idle=idle_timeout())
    assert post(route, body(new.handoff), {"Content-Type": "application/json", "Origin": "http://evil.example"})[0] == 403
    assert post(route, body(new.handoff), {"Content-Type": "application/json"})[0] == 403  # no Origin, no Referer
    assert post(route, body("guessed"), {"Content-Type": "application/json", "Origin": url})[0] == 401
    assert post(route, b"not json", {"Content-Type": "application/json", "Origin": url})[0] == 400
    status, cookie = post(route, body(new.handoff), {"Content-Type": "application/json", "Origin": f"https://{host}", "X-Forwarded-Proto": "https"})
    assert status == 204
    attributes = [part.strip().lower() for part in cookie.split(";")]
    assert attributes[0].startswith(COOKIE + "=") and {"httponly", "samesite=strict", "secure", "path=/"} <= set(attributes)
    assert post(route, body(new.handoff), {"Content-Type": "application/json", "Origin": url})[0] == 401  # spent


def _users(engine):
    from rlhf.auth import list_users
    from rlhf.roles import SYSTEM

    return list_users(engine, SYSTEM)


@pytest.mark.parametrize("username, password, lands_on", [("boss", ADMIN_PASSWORD, "/users"), ("annie", PASSWORD, "/")])
def test_a_deep_link_opened_signed_out_lands_on_its_page_after_sign_in(served, browser, username, password, lands_on):
    """An admin lands on /users; an annotator, who has no such page, on the first page; no "Page not found"."""
    with recorded_page(browser, f"failure_session_deep_link_{username}") as page:
        page.goto(served["url"] + "/users")
        sign_in_form_shown(page)
        no_page_not_found(page)
        field(page, "Username").fill(username)
        field(page, "Password").fill(password)
        field(page, "Password").press("Enter")
        signed_in_as(page, username)
        no_page_not_found(page)
        if lands_on == "/users":
            page.wait_for_url("**/users", timeout=10_000)
            wait_text(page, "Add a user")
        else:
            wait_text(page, "Rate a response")
            assert not page.url.endswith("/users")


@pytest.mark.parametrize("db_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)  # a fresh schema (tests/conftest.py)
def test_two_app_processes_on_one_postgres_serve_the_same_signed_in_browser(db_url, browser, tmp_path):
    """Replicas behind a load balancer: cookies belong to the host (127.0.0.1), not the port."""
    state = seed(db_url)
    first = start_app(db_url, tmp_path / "first.log")
    second = start_app(db_url, tmp_path / "second.log", cli=True)  # started by `rlhf app`
    page = other = new_page(browser)
    try:
        sign_in(page, first.url, "annie", PASSWORD)
        signed_in_as(page, "annie")
        session_cookie(page.context)
        choose_project(page, "second")
        wait_loaded(page)

        other = new_page(browser, page.context)
        other.goto(second.url + "/compare")
        signed_in_as(other, "annie")
        assert "second" in selected_project(other)
        wait_text(other, "Compare two responses")

        other.locator('[data-testid="stSidebar"]').get_by_role("button", name="Sign out").click()
        sign_in_form_shown(other)
        page.reload()
        sign_in_form_shown(page)
    except Exception:
        screenshot(page, "failure_session_two_processes_first")
        screenshot(other, "failure_session_two_processes_second")
        raise
    finally:
        page.context.close()
        first.stop()
        second.stop()
        state["engine"].dispose()
