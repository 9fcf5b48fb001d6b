"""The Rank page in a real browser: orders typed 50 ms apart are stored as typed (in the task's
terms), the order sentence follows the keys, a double click on Submit stores one ranking, and
Backspace + a new order edits that ranking (revision 2, the same annotation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import chromium_available, launch_chromium, open_page, screenshot, sign_in, start_app, wait_loaded, wait_text
from test_browser_keys import type_fast  # keys 50 ms apart

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="Chromium is not installed at /usr/bin/chromium (make browser)"),
]

PASSWORD = "rank them all day"
FIXTURE = Path(__file__).with_name("fixture_project.jsonl")
ORDERS = [["C", "A", "B"], ["B", "=", "C", "A"]]
"""Keys typed per ranking task (three replies each), each followed by Enter."""


def serve_ranked_project(tmp_path_factory, username: str, password: str, project: str):
    """A served app on a fresh SQLite database: annotator `username` and `project` (rankings of K = 3), three prompts of three replies."""
    from rlhf.auth import create_user
    from rlhf.db import init_database, make_engine
    from rlhf.importer import import_file
    from rlhf.projects import create_project
    from rlhf.roles import SYSTEM

    root = tmp_path_factory.mktemp(f"browser-{project}")
    url = f"sqlite:///{root / 'rank.db'}"
    engine = make_engine(url)
    init_database(engine)
    annotator = create_user(engine, SYSTEM, username, password, "annotator")
    create_project(engine, SYSTEM, project, rank_k_min=3, rank_k_max=4)
    summary = import_file(engine, FIXTURE, project, actor=SYSTEM)
    assert summary.ranking_tasks_added == 3
    server = start_app(url, root / "streamlit.log")
    try:
        yield {"url": server.url, "engine": engine, "annotator_id": annotator.id, "project_id": summary.project_id}
    finally:
        server.stop()
        engine.dispose()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Annotator `rae` and project `ranked`."""
    yield from serve_ranked_project(tmp_path_factory, "rae", PASSWORD, "ranked")


def rankings(served):
    from rlhf.annotate import recent_annotations
    from rlhf.auth import load_user

    user = load_user(served["engine"], served["annotator_id"])
    views = recent_annotations(served["engine"], user, served["project_id"], limit=50)
    return sorted((v for v in views if v.kind == "ranking"), key=lambda v: v.annotation_id)


def test_rank_keys_double_submit_and_edit(served):
    from playwright.sync_api import sync_playwright

    from rlhf.ranking import card_order_for, from_shown, parse_ranking

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        try:
            sign_in(page, served["url"], "rae", PASSWORD)
            wait_text(page, "Rate a response")
            open_page(page, "Rank")
            wait_text(page, "Rank the replies")
            wait_loaded(page)
            type_fast(page, ["C", "A"])
            wait_text(page, "C > A > B")  # the sentence follows the keys
            type_fast(page, ["B", "Enter"] + ORDERS[1] + ["Enter"])
            wait_text(page, "2 submitted in this session")
            wait_loaded(page)
            screenshot(page, "rank_after_two")
            # a double click on Submit sends once
            type_fast(page, ["A", "B", "C"])
            wait_text(page, "A > B > C")
            page.get_by_role("button", name="Submit").dblclick()
            wait_text(page, "3 submitted in this session")
            wait_loaded(page)
            # Backspace reopens the last ranking; a new order and Enter edit it
            type_fast(page, ["Backspace"])
            wait_text(page, "Editing your ranking")
            wait_loaded(page)
            type_fast(page, ["C", "=", "B", "A", "Enter"])
            wait_text(page, "was updated")
            wait_loaded(page)
        except Exception:
            screenshot(page, "failure_rank")
            raise
        finally:
            browser.close()

    stored = rankings(served)
    assert len(stored) == 3  # the double click made one ranking
    typed = [" ".join(ORDERS[0]), " ".join(ORDERS[1]), "C = B > A"]
    for view, text in zip(stored, typed):
        shown_order = card_order_for(view.task_id, served["annotator_id"], 3)
        assert view.ranking == from_shown(parse_ranking(text, 3), shown_order), (view.task_id, text)
    assert [v.revision for v in stored] == [1, 1, 2]
