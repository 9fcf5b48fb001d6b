"""The Rank page's order strip in a real browser: dragging a chip with the mouse reorders the
cards as the arrow keys would, and Enter stores that order (in the task's terms)."""

from __future__ import annotations

import pytest

from harness import chromium_available, launch_chromium, open_page, screenshot, sign_in, wait_loaded, wait_text
from test_browser_keys import type_fast
from test_browser_rank import rankings, serve_ranked_project

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="Chromium is not installed at /usr/bin/chromium (make browser)"),
]

PASSWORD = "drag them into place"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Annotator `dana` and project `dragged`."""
    yield from serve_ranked_project(tmp_path_factory, "dana", PASSWORD, "dragged")


def chip(page, letter: str):
    return page.locator(".rlhf-rank-chip", has_text=letter)


def test_dragging_chips_orders_the_cards_as_the_keys_would(served):
    from playwright.sync_api import sync_playwright

    from rlhf.ranking import card_order_for, from_shown, parse_ranking

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        try:
            sign_in(page, served["url"], "dana", PASSWORD)
            wait_text(page, "Rate a response")
            open_page(page, "Rank")
            wait_text(page, "Rank the replies")
            wait_loaded(page)
            chip(page, "C").drag_to(chip(page, "A"))  # C to the top: as → → then ↑ ↑
            wait_text(page, "C > A > B")
            wait_loaded(page)
            chip(page, "A").drag_to(chip(page, "B"))  # A below B
            wait_text(page, "C > B > A")
            wait_loaded(page)
            type_fast(page, ["Enter"])
            wait_text(page, "1 submitted in this session")
            wait_loaded(page)
            # keys after a drag: the order typed replaces the dragged one
            chip(page, "B").drag_to(chip(page, "A"))
            wait_text(page, "B > A > C")
            type_fast(page, ["A", "C", "B", "Enter"])
            wait_text(page, "2 submitted in this session")
        except Exception:
            screenshot(page, "failure_rank_drag")
            raise
        finally:
            browser.close()

    stored = rankings(served)
    assert len(stored) == 2
    for view, text in zip(stored, ["C B A", "A C B"]):
        shown_order = card_order_for(view.task_id, served["annotator_id"], 3)
        assert view.ranking == from_shown(parse_ranking(text, 3), shown_order), (view.task_id, text)
