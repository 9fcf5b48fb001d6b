"""Keys in a real browser (issue 16, items 6–9): fast typing applied in the order pressed, keys right
after a sidebar choice, and the scoring row, Submit and every tag reachable with long responses.

Keys are typed 50 ms apart, faster than the page redraws, for several tasks in a row without
waiting between them; the annotations are then read back through `rlhf.annotate` and must equal
what was typed, with no "Score … first" / "Choose first" message shown at any moment.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness import chromium_available, launch_chromium, open_page, screenshot, sign_in, start_app, wait_loaded, wait_text

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="Chromium is not installed at /usr/bin/chromium (make browser)"),
]

PASSWORD = "annotate all day"
FIXTURE = Path(__file__).with_name("fixture_project.jsonl")
KEY_GAP_MS = 50
RATINGS = ["625", "713", "244", "531"]
"""Keys typed per rating task (helpfulness, honesty, harmlessness), each set followed by Enter."""
COMPARISONS = ["2", "4", "0", "5"]
"""Keys typed per comparison, each followed by Enter."""
LAPTOP = {"width": 1440, "height": 900}
LONG_TAGS = ["unsafe", "factual error", "off-topic", "incomplete", "repetitive", "great example", "needs a source",
             "wrong language", "too long", "too short", "refuses needlessly", "formatting broken"]  # fmt: skip
"""More tags, and longer, than one row holds at 1440 px (the last ones were clipped, item 9)."""
WATCH_ALERTS_JS = """() => {
    window.__alerts = [];
    new MutationObserver(() => {
        for (const el of document.querySelectorAll('[data-testid="stAlert"], [data-testid="stAlertContainer"]')) {
            const text = el.innerText.trim();
            if (text && !window.__alerts.includes(text)) window.__alerts.push(text);
        }
    }).observe(document.body, {childList: true, subtree: true, characterData: true});
}"""
"""Every message shown, even for a moment (a warning is redrawn away by the next key)."""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Annotator `kim`, projects `demo` and `second` (9 ratings and 9 pairs each), and `long`: one
    prompt whose responses are 20,000 characters, with twelve tags."""
    from rlhf.auth import create_user
    from rlhf.db import init_database, make_engine
    from rlhf.importer import import_file
    from rlhf.projects import update_project
    from rlhf.roles import SYSTEM

    root = tmp_path_factory.mktemp("browser-keys")
    url = f"sqlite:///{root / 'keys.db'}"
    engine = make_engine(url)
    init_database(engine)
    annotator = create_user(engine, SYSTEM, "kim", PASSWORD, "annotator")
    projects = {name: import_file(engine, FIXTURE, name, actor=SYSTEM).project_id for name in ("demo", "second")}
    paragraph = "A long answer that goes on and on about the question, sentence after sentence. " * 10
    long_text = "\n\n".join([paragraph] * (20_000 // len(paragraph) + 1))[:20_000]
    long_file = root / "long.jsonl"
    record = {"prompt": "Explain everything.", "responses": [{"text": long_text, "model": "verbose-a"}, {"text": long_text[::-1], "model": "verbose-b"}]}
    long_file.write_text(json.dumps(record) + "\n", encoding="utf-8")
    projects["long"] = import_file(engine, long_file, "long", actor=SYSTEM).project_id
    update_project(engine, SYSTEM, projects["long"], tags=LONG_TAGS)
    server = start_app(url, root / "streamlit.log")
    try:
        yield {"url": server.url, "engine": engine, "annotator_id": annotator.id, "projects": projects, "server": server}
    finally:
        server.stop()
        engine.dispose()


def type_fast(page, keys: list[str]) -> None:
    for key in keys:
        page.keyboard.press(key)
        page.wait_for_timeout(KEY_GAP_MS)


def choose_project(page, name: str) -> None:
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').click()
    page.get_by_role("option", name=name).click()


def annotations(served, project: str, kind: str):
    """The annotator's annotations of `kind` in `project`, oldest first, read through the backend."""
    from rlhf.annotate import recent_annotations
    from rlhf.auth import load_user

    engine = served["engine"]
    user = load_user(engine, served["annotator_id"])
    views = recent_annotations(engine, user, served["projects"][project], limit=50)
    return sorted((v for v in views if v.kind == kind), key=lambda v: v.annotation_id)


@contextmanager
def annotator_page(served, failure: str):
    """A fresh browser signed in as the annotator on the Rate page (1440×900); a screenshot named
    `failure` when the block fails."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport=LAPTOP)
        try:
            sign_in(page, served["url"], "kim", PASSWORD)
            wait_text(page, "Rate a response")
            wait_loaded(page)
            yield page
        except Exception:
            screenshot(page, failure)
            raise
        finally:
            browser.close()


def test_keys_typed_50ms_apart_are_stored_as_typed(served):
    from rlhf.assign import left_side_for

    with annotator_page(served, "failure_fast_keys") as page:
        page.evaluate(WATCH_ALERTS_JS)
        type_fast(page, [key for digits in RATINGS for key in [*digits, "Enter"]])
        wait_text(page, f"{len(RATINGS)} submitted in this session")
        wait_loaded(page)
        open_page(page, "Compare")
        wait_text(page, "Compare two responses")
        wait_loaded(page)
        type_fast(page, [key for choice in COMPARISONS for key in [choice, "Enter"]])
        wait_text(page, f"{len(COMPARISONS)} submitted in this session")
        wait_loaded(page)
        alerts = page.evaluate("() => window.__alerts")

    assert not [a for a in alerts if "first" in a], alerts  # no "Score … first." / "Choose first"
    ratings = annotations(served, "demo", "rating")
    assert [dict(r.scores) for r in ratings] == [dict(zip(["helpfulness", "honesty", "harmlessness"], map(int, d))) for d in RATINGS]
    preferences = annotations(served, "demo", "pairwise")
    assert len(preferences) == len(COMPARISONS)
    for pref, key in zip(preferences, COMPARISONS):
        left = left_side_for(pref.task_id, served["annotator_id"])
        right = "b" if left == "a" else "a"
        expected = {"2": (left, 1), "4": (right, 1), "0": ("both_bad", 0), "5": (right, 2)}[key]
        assert (pref.choice, pref.strength, pref.shown_left) == (*expected, left)


def test_keys_work_right_after_choosing_a_project_in_the_sidebar(served):
    """Item 7: no click on the page between the sidebar choice and the keys."""
    with annotator_page(served, "failure_sidebar_keys") as page:
        choose_project(page, "second")
        wait_loaded(page)
        wait_text(page, "Rate a response")
        # The focus has left the sidebar's select box (it kept it, and took the keys).
        page.wait_for_function("() => !document.activeElement || !document.activeElement.closest('[data-testid=\"stSidebar\"]')", timeout=10_000)
        type_fast(page, ["3", "5", "7", "Enter"])
        wait_text(page, "1 submitted in this session")
        wait_loaded(page)
    assert [dict(r.scores) for r in annotations(served, "second", "rating")] == [{"helpfulness": 3, "honesty": 5, "harmlessness": 7}]


def _box(locator) -> dict:
    locator.wait_for(state="visible")
    return locator.bounding_box()


def assert_on_screen(parts) -> None:
    for part in parts:
        box = _box(part)
        assert 0 <= box["y"] and box["y"] + box["height"] <= LAPTOP["height"], box


def _scrolled(page) -> int:
    """How far the page (Streamlit scrolls its main area, not the window) has been scrolled."""
    return page.evaluate("() => Math.max(window.scrollY, ...[...document.querySelectorAll('[data-testid=\"stMain\"], [data-testid=\"stAppViewContainer\"]')].map(e => e.scrollTop))")


def test_scoring_row_submit_and_every_tag_reachable_with_long_responses(served):
    """Items 8 and 9 at 1440×900 with 20,000-character responses: the scoring row (rate) or choice
    row (compare) and Submit are on screen without scrolling the page; all twelve tags are."""
    with annotator_page(served, "failure_long_layout") as page:
        choose_project(page, "long")
        wait_loaded(page)
        wait_text(page, "Explain everything.")
        wait_loaded(page)
        screenshot(page, "keys_long_rate")
        assert _scrolled(page) == 0
        rate_bar = [page.locator(".st-key-rate-keys"), page.get_by_role("button", name="Submit")]
        assert_on_screen(rate_bar)
        page.get_by_text("Show all").first.click()  # the whole 20,000 characters: the page now scrolls
        assert_on_screen(rate_bar)
        tags = page.locator(".st-key-rate-tags")
        row = _box(tags)
        for tag in LONG_TAGS:
            button = tags.get_by_role("button", name=tag)
            box = _box(button)
            assert row["x"] <= box["x"] and box["x"] + box["width"] <= min(row["x"] + row["width"], LAPTOP["width"]) + 1, (tag, box, row)
        type_fast(page, ["Q", "P", "1", "1", "1", "Enter"])  # first and tenth tag by key
        wait_text(page, "1 submitted in this session")

        open_page(page, "Compare")
        wait_text(page, "Compare two responses")
        wait_loaded(page)
        screenshot(page, "keys_long_compare")
        assert _scrolled(page) == 0
        compare_bar = [page.locator(".st-key-compare-choices"), page.get_by_role("button", name="Submit")]
        assert_on_screen(compare_bar)
        page.get_by_text("Show all").first.click()
        assert_on_screen(compare_bar)
        screenshot(page, "keys_long_compare_expanded")
    [rating] = annotations(served, "long", "rating")
    assert list(rating.tags) == [LONG_TAGS[0], LONG_TAGS[9]]
