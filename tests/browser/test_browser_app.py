"""The annotator's path in a real browser, keyboard only: sign in, rate three responses, compare three pairs.

Starts `streamlit run labeling_app/app.py` on a temp SQLite database seeded with a small project
(`fixture_project.jsonl`, one response of which tries to inject HTML), drives headless Chromium
with Playwright, and checks the database holds exactly the six annotations typed. Screenshots of
every page go to `tests/artifacts/screenshots/` (git-ignored) for a person to look at.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import SCREENSHOTS, VIEWPORT, chromium_available, field, launch_chromium, open_page, screenshot, sign_in, start_app, wait_loaded, wait_text

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="Chromium is not installed at /usr/bin/chromium (make browser)"),
]

PASSWORD = "annotate all day"
FIXTURE = Path(__file__).with_name("fixture_project.jsonl")
ATTACK_FIXTURE = Path(__file__).with_name("fixture_attack.jsonl")
"""Project `attack`: model outputs that try to inject HTML (img onerror, script, iframe, event handlers)."""
RATINGS = ["456", "723", "111"]
"""Keys typed per rating task: helpfulness, honesty, harmlessness."""
COMPARISONS = [("2", "A better"), ("4", "B better"), ("0", "Both bad")]
DIMENSIONS = ["Helpfulness", "Honesty", "Harmlessness"]
NO_MARKUP_JS = """() => ({
    title: document.title,
    handlers: document.querySelectorAll('[onerror], [onmouseover]').length,
    scripts: [...document.scripts].filter(s => s.textContent.includes('owned')).length,
    iframes: [...document.querySelectorAll('iframe')].filter(f => (f.src || '').includes('example.org')).length,
})"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A seeded database (first admin, annotator `annie`, project `demo`) and the app serving it."""
    from rlhf.auth import create_user, ensure_admin
    from rlhf.db import init_database, make_engine
    from rlhf.importer import import_file
    from rlhf.roles import SYSTEM

    root = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{root / 'browser.db'}"
    engine = make_engine(url)
    init_database(engine)
    admin_name, admin_password = ensure_admin(engine)  # what `rlhf init` does on a fresh database
    annotator = create_user(engine, SYSTEM, "annie", PASSWORD, "annotator")
    summary = import_file(engine, FIXTURE, "demo", actor=SYSTEM)
    import_file(engine, ATTACK_FIXTURE, "attack", actor=SYSTEM)
    server = start_app(url, root / "streamlit.log")
    try:
        yield {"url": server.url, "engine": engine, "annotator_id": annotator.id, "project_id": summary.project_id, "admin": (admin_name, admin_password), "server": server}
    finally:
        server.stop()
        engine.dispose()


def assert_no_markup(page) -> None:
    """No injected element reached the DOM and none of its script ran."""
    state = page.evaluate(NO_MARKUP_JS)
    assert state == {"title": state["title"], "handlers": 0, "scripts": 0, "iframes": 0} and state["title"] != "owned", state


def choose_project(page, name: str) -> None:
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').click()
    page.get_by_role("option", name=name).click()


def test_annotator_rates_and_compares_with_the_keyboard_only(served):
    from playwright.sync_api import sync_playwright

    from rlhf.assign import left_side_for
    from rlhf.schema import Preference, Rating
    from sqlalchemy import select

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport=VIEWPORT)
        try:
            page.goto(served["url"])
            wait_text(page, "Sign in to start")
            wait_loaded(page)
            screenshot(page, "01_login")
            sign_in(page, served["url"], "annie", PASSWORD)
            wait_text(page, "Rate a response")
            wait_loaded(page)
            screenshot(page, "02_rate")

            for n, digits in enumerate(RATINGS, start=1):
                for dimension, digit in zip(DIMENSIONS, digits):
                    page.keyboard.press(digit)
                    wait_text(page, f"{dimension} — {digit}")
                assert_no_markup(page)
                if n == 1:
                    screenshot(page, "03_rate_scored")
                page.keyboard.press("Enter")
                wait_text(page, f"{n} submitted in this session")
                wait_loaded(page)

            open_page(page, "Compare")
            wait_text(page, "Compare two responses")
            wait_loaded(page)
            screenshot(page, "04_compare")
            for n, (key, label) in enumerate(COMPARISONS, start=1):
                page.keyboard.press(key)
                wait_text(page, f"Your choice: {label}")
                assert_no_markup(page)
                page.keyboard.press("Enter")
                wait_text(page, f"{n} submitted in this session")
                wait_loaded(page)

            open_page(page, "My progress")
            wait_text(page, "Recent annotations")
            wait_loaded(page)
            screenshot(page, "05_progress")

            # Model outputs that try to inject HTML are shown as text, and nothing of them runs.
            choose_project(page, "attack")
            open_page(page, "Rate")
            wait_text(page, "Show me how an HTML image tag looks.")
            wait_loaded(page)
            wait_text(page, "onerror=")
            assert_no_markup(page)
            screenshot(page, "05b_rate_html_as_text")
        except Exception:
            screenshot(page, "failure_annotator")
            raise
        finally:
            browser.close()

    engine, user_id = served["engine"], served["annotator_id"]
    with engine.connect() as connection:
        ratings = connection.execute(select(Rating.__table__).order_by(Rating.__table__.c.id)).all()
        preferences = connection.execute(select(Preference.__table__).order_by(Preference.__table__.c.id)).all()
    assert len(ratings) + len(preferences) == 6
    assert [r.scores for r in ratings] == [dict(zip(["helpfulness", "honesty", "harmlessness"], map(int, d))) for d in RATINGS]
    assert all(r.user_id == user_id and r.time_spent_s is not None for r in ratings)
    for pref, (key, _) in zip(preferences, COMPARISONS):
        left = left_side_for(pref.task_id, user_id)
        right = "b" if left == "a" else "a"
        assert pref.shown_left == left
        expected = {"2": (left, 1), "4": (right, 1), "0": ("both_bad", 0)}[key]
        assert (pref.choice, pref.strength) == expected


def test_admin_pages_after_the_first_sign_in(served):
    """The first admin (`rlhf init`'s one-time password) must change it, then reaches every admin page."""
    from playwright.sync_api import sync_playwright

    from rlhf.annotate import flag_task
    from rlhf.assign import next_task
    from rlhf.auth import load_user

    engine = served["engine"]
    annie = load_user(engine, served["annotator_id"])
    view = next_task(engine, annie, served["project_id"], "rating")
    if view is not None:
        flag_task(engine, annie, view.task_id, "pii", "an email address in the response")

    admin_name, one_time = served["admin"]
    pages = [("Projects", "Rubric"), ("Users", "Add a user"), ("Import", "Import prompts and responses"), ("Flagged", "Flagged tasks"), ("Export", "Export demo")]
    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport=VIEWPORT)
        try:
            sign_in(page, served["url"], admin_name, one_time)
            wait_text(page, "Change your password")
            wait_loaded(page)
            screenshot(page, "06_change_password")
            field(page, "Current password").fill(one_time)
            field(page, "New password (at least 10 characters)").fill("the admin's own secret")
            field(page, "New password again").fill("the admin's own secret")
            field(page, "New password again").press("Enter")
            wait_text(page, "Password changed.")
            nav = page.locator('[data-testid="stSidebarNav"]')
            for optional in ("Dashboard", "Training"):
                if nav.get_by_text(optional, exact=True).count():
                    pages.append((optional, optional))
            for number, (title, marker) in enumerate(pages, start=7):
                open_page(page, title)
                wait_text(page, marker)
                wait_loaded(page)
                screenshot(page, f"{number:02d}_{title.lower()}")
        except Exception:
            screenshot(page, "failure_admin")
            raise
        finally:
            browser.close()
    assert (SCREENSHOTS / "07_projects.png").is_file()
