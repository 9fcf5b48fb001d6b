"""The Write page in a real browser: a long draft typed key by key is saved without a rerun per key and survives a
reload; Ctrl+Enter submits and paints the next task; a double submit edits one annotation.

Served as `rlhf app` serves it (labeling_app/server.py, with the draft route).
"""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import select

from harness import VIEWPORT, chromium_available, field, launch_chromium, screenshot, start_app, wait_loaded, wait_text

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="Chromium is not installed at /usr/bin/chromium (make browser)"),
]

PASSWORD = "write all day long"
ORIGINAL = "Paris is the capital."
DRAFT = (
    "Paris is the capital of France, and it has been for most of the last thousand years. "
    "It sits on the Seine; its museums, its food and its long history draw visitors from everywhere. "
    "Go in spring if you can."
)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from rlhf.auth import create_user
    from rlhf.db import init_database, make_engine
    from rlhf.importer import import_file
    from rlhf.projects import create_project
    from rlhf.roles import SYSTEM

    root = tmp_path_factory.mktemp("browser-write")
    url = f"sqlite:///{root / 'write.db'}"
    engine = make_engine(url)
    init_database(engine)
    user = create_user(engine, SYSTEM, "wren", PASSWORD, "annotator")
    create_project(engine, SYSTEM, "writing", task_kinds=["write"])
    prompts = root / "prompts.jsonl"
    records = [{"prompt": [{"role": "system", "content": "Be helpful."}, {"role": "user", "content": f"Question {i}?"}]} for i in range(3)]
    records.append({"prompt": "What is the capital of France?", "responses": [{"text": ORIGINAL, "model": "m1"}]})
    prompts.write_text("".join(json.dumps(r) + "\n" for r in records))
    import_file(engine, prompts, "writing", actor=SYSTEM)
    server = start_app(url, root / "streamlit.log")
    try:
        yield {"url": server.url, "engine": engine, "user_id": user.id, "server": server}
    finally:
        server.stop()
        engine.dispose()


def editor(page):
    return page.locator(".rlhf-editor textarea")


def demonstrations(served):
    from rlhf.schema import Demonstration

    with served["engine"].connect() as connection:
        return connection.execute(select(Demonstration.__table__)).all()


def draft_text(served, page, timeout_s: float = 10.0):
    from rlhf.schema import Draft

    deadline = time.monotonic() + timeout_s
    text = None
    while time.monotonic() < deadline:
        with served["engine"].connect() as connection:
            text = connection.execute(select(Draft.__table__.c.text)).scalar()
        if text == DRAFT:
            return text
        page.wait_for_timeout(200)  # (Playwright delivers the page's events while it waits)
    return text


def wait_for(predicate, timeout_s: float = 20.0, message: str = ""):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(message or "condition not met")


def test_a_long_draft_survives_a_reload_and_ctrl_enter_submits_once(served):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = launch_chromium(p)
        page = chromium.new_context(viewport=VIEWPORT).new_page()
        drafts, runs = [], []
        page.on("request", lambda r: drafts.append(r.url) if "_rlhf/draft" in r.url else None)
        page.on("websocket", lambda ws: ws.on("framesent", lambda frame: runs.append(frame)))
        try:
            page.goto(served["url"] + "/write")
            field(page, "Username").fill("wren")
            field(page, "Password").fill(PASSWORD)
            field(page, "Password").press("Enter")
            wait_text(page, "Write a reply")
            wait_loaded(page)
            wait_for(lambda: editor(page).count() == 1, message="no editor")
            # The task with a model reply comes first or later; find it (the others are written from scratch).
            assert page.get_by_text("Be helpful.").count() + page.get_by_text("What is the capital of France?").count() >= 1

            # E puts the cursor in the editor; the typed letters (s, f, g among them) stay in the text.
            page.keyboard.press("Escape")
            page.keyboard.press("e")
            wait_for(lambda: page.evaluate("() => document.activeElement && document.activeElement.tagName === 'TEXTAREA'"), 5, "E did not focus the editor")
            page.keyboard.press("Control+a")
            page.keyboard.press("Delete")
            runs.clear()
            page.keyboard.type(DRAFT, delay=50)
            assert page.get_by_role("dialog").count() == 0  # S, F, G typed into the editor open nothing
            assert draft_text(served, page) == DRAFT, "the draft was not saved server-side"
            # No rerun per keystroke: the draft went out a few times over the route, and the
            # websocket carried far fewer messages than keys were typed.
            assert 1 <= len(drafts) < len(DRAFT) / 10, len(drafts)
            assert len(runs) < len(DRAFT) / 10, len(runs)
            assert f"{len(DRAFT.split())} words" in page.locator(".rlhf-editor-count").inner_text()
            task_before = page.evaluate("() => document.querySelector('.rlhf-editor').dataset.token")

            page.reload()
            wait_text(page, "Write a reply")
            wait_loaded(page)
            wait_for(lambda: editor(page).count() == 1 and editor(page).input_value() == DRAFT, message="the draft did not come back after a reload")
            screenshot(page, "write_01_draft_after_reload")

            editor(page).focus()
            page.keyboard.press("Control+Enter")
            wait_for(lambda: len(demonstrations(served)) == 1, message="Ctrl+Enter did not submit")
            wait_for(lambda: editor(page).count() == 1 and editor(page).input_value() != DRAFT, message="the next task was not painted")
            [first] = demonstrations(served)
            assert first.text == DRAFT and first.revision == 1
            assert task_before != page.evaluate("() => document.querySelector('.rlhf-editor').dataset.token")

            # Reopen it (Backspace outside the editor), add to it, and press Ctrl+Enter twice quickly.
            page.keyboard.press("Escape")
            page.keyboard.press("Backspace")
            wait_text(page, "Editing your demonstration")
            wait_for(lambda: editor(page).input_value() == DRAFT, message="the reopened demonstration is not in the editor")
            page.keyboard.press("e")
            page.keyboard.type(" Bon voyage.", delay=20)
            page.keyboard.press("Control+Enter")
            page.keyboard.press("Control+Enter")
            wait_for(lambda: demonstrations(served)[0].revision == 2, message="the edit was not saved")
            page.wait_for_timeout(1000)
            rows = demonstrations(served)
            assert len(rows) == 1 and rows[0].text == DRAFT + " Bon voyage." and rows[0].revision == 2
            screenshot(page, "write_02_after_edit")
        except Exception:
            screenshot(page, "failure_write")
            raise
        finally:
            chromium.close()
