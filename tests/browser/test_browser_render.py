"""Outside text in a real browser: no request leaves the page, payloads read as text, long responses scroll in their box.

Issue 16, items 1, 2, 8 and 9. A project whose prompt and responses carry the payload corpus of
`tests/data/render_payloads.json` (images behind an escaped backtick, a bogus fence, links,
references, `<picture>`/`srcset`, `style="background:url()"`, SVG `<image href>`, `//host/x`,
...) and a 20,000-character response is opened on Rate, Compare and My progress in headless
Chromium at 1440x900. Every request the page makes is recorded: all must go to the app's own
host (the favicon included: a `:material/...` one is fetched from a fonts host).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from harness import chromium_available, launch_chromium, open_page, screenshot, sign_in, start_app, wait_loaded, wait_text

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="Chromium is not installed at /usr/bin/chromium (make browser)"),
]

PASSWORD = "annotate all day"
VIEWPORT = {"width": 1440, "height": 900}
PAYLOADS: list[str] = json.loads((Path(__file__).resolve().parents[1] / "data" / "render_payloads.json").read_text(encoding="utf-8"))
FENCE_TRICK = PAYLOADS[1]
"""Its closing ``` opens a real fence that swallows the rest of a text: it goes last."""
CORPUS = "\n\n".join(p for p in PAYLOADS if p != FENCE_TRICK)
RTL = "مرحبا! هذه إجابة باللغة العربية."
LONG_FILLER = "\n\n".join(f"Paragraph {n}: " + "a long answer keeps going " * 12 for n in range(70))
SHORT_TEXT = "Short answer. " + CORPUS + "\n\n" + FENCE_TRICK
LONG_TEXT = RTL + "\n\n" + CORPUS + "\n\n" + LONG_FILLER + "\n\n" + FENCE_TRICK
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
VISIBLE_AS_TEXT = [
    "[image: x · https://tracker.example.com/pixel.png?id=1]",
    "[image: y · https://tracker.example.com/pixel.png?id=2]",
    '<svg><image href="https://tracker.example.com/pixel.png?id=9"/></svg>',
    '<div style="background:url(https://tracker.example.com/pixel.png?id=8)">styled</div>',
]

BOX_STATE_JS = """(index) => {
    const boxes = [...document.querySelectorAll('.rlhf-response .rlhf-scroll')];
    const box = boxes[index];
    return {count: boxes.length, scrollTop: box.scrollTop, scrollHeight: box.scrollHeight, clientHeight: box.clientHeight,
            others: boxes.filter((b, i) => i !== index).map(b => b.scrollTop), windowY: window.scrollY,
            main: document.querySelector('[data-testid="stMain"]').scrollTop};
}"""


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A database with annotator `annie` and project `render` (one chat prompt, a short and a 20,000-character response)."""
    from rlhf.annotate import submit_rating
    from rlhf.assign import next_task
    from rlhf.auth import create_user, load_user
    from rlhf.db import init_database, make_engine
    from rlhf.importer import import_file
    from rlhf.roles import SYSTEM

    assert len(LONG_TEXT) > 20_000
    root = tmp_path_factory.mktemp("browser_render")
    records = [
        {
            "prompt": [
                {"role": "system", "content": "Answer with images. " + PAYLOADS[0]},
                {"role": "user", "content": "Show me a picture. " + PAYLOADS[2] + "\n\n" + "A long question goes on. " * 60},
            ],
            "responses": [{"text": SHORT_TEXT, "model": "short"}, {"text": LONG_TEXT, "model": "long"}],
        }
    ]
    fixture = root / "render.jsonl"
    fixture.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    url = f"sqlite:///{root / 'render.db'}"
    engine = make_engine(url)
    init_database(engine)
    create_user(engine, SYSTEM, "annie", PASSWORD, "annotator")
    admin = create_user(engine, SYSTEM, "ada", PASSWORD, "admin")
    summary = import_file(engine, fixture, "render", actor=SYSTEM)
    # The admin has rated once, so My progress shows an excerpt of the prompt.
    ada = load_user(engine, admin.id)
    view = next_task(engine, ada, summary.project_id, "rating")
    submit_rating(engine, ada, view.task_id, scores={"helpfulness": 4, "honesty": 4, "harmlessness": 4}, next_kind=None)
    server = start_app(url, root / "streamlit.log")
    try:
        yield server.url
    finally:
        server.stop()
        engine.dispose()


def outside_requests(urls: list[str]) -> list[str]:
    """The requests that went anywhere but the app's own host (data: and blob: URLs never leave the page)."""
    return [u for u in urls if urlsplit(u).scheme not in ("data", "blob") and urlsplit(u).hostname not in LOCAL_HOSTS]


def assert_payloads_read_as_text(page) -> None:
    for text in VISIBLE_AS_TEXT:
        assert page.get_by_text(text, exact=False).first.is_visible(), text
    state = page.evaluate("() => ({imgs: document.querySelectorAll('.stHtml img, .stHtml image, .stHtml picture, .stHtml [style]').length})")
    assert state == {"imgs": 0}


def assert_in_view(page, locator, what: str) -> None:
    box = locator.bounding_box()
    assert box is not None, what
    assert 0 <= box["y"] and box["y"] + box["height"] <= VIEWPORT["height"], (what, box)


@contextmanager
def signed_in_page(base_url: str, username: str, failure_name: str):
    """A 1440x900 page signed in as `username`, on its first page, with every request URL it makes
    recorded; a screenshot `failure_name` is taken if the block fails."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page(viewport=VIEWPORT)
        requests: list[str] = []
        page.on("request", lambda request: requests.append(request.url))
        try:
            sign_in(page, base_url, username, PASSWORD)
            wait_text(page, "Rate a response")
            wait_loaded(page)
            yield page, requests
        except Exception:
            screenshot(page, failure_name)
            raise
        finally:
            browser.close()


def test_no_request_leaves_the_page_and_long_responses_scroll_in_their_box(served):
    with signed_in_page(served, "annie", "failure_render") as (page, requests):
        wait_text(page, "[image: x")
        screenshot(page, "render_01_rate")
        assert_payloads_read_as_text(page)
        # Chat turns are named in text, not only by an avatar.
        roles = page.locator(".rlhf-prompt .rlhf-role").all_inner_texts()
        assert [r.strip().lower() for r in roles] == ["system", "user"]
        assert page.locator(".rlhf-response .rlhf-scroll[dir=auto]").count() == 1
        # Prompt and response stay within one screen whatever their length (the form beside them is the page's own).
        assert_in_view(page, page.locator(".rlhf-response"), "Rate's response box")

        open_page(page, "Compare")
        wait_text(page, "Compare two responses")
        wait_loaded(page)
        wait_text(page, RTL)
        screenshot(page, "render_02_compare")
        assert_payloads_read_as_text(page)
        # The right-to-left paragraph runs right to left.
        assert page.get_by_text(RTL).first.evaluate("e => getComputedStyle(e).direction") == "rtl"
        # The 20,000-character response is capped: the choice row and Submit stay in view.
        assert_in_view(page, page.get_by_role("button", name="Submit"), "Compare's Submit")
        assert_in_view(page, page.locator(".st-key-compare-choices"), "the choice row")

        # The long box scrolls on its own: the other box and the page stay where they are.
        boxes = page.locator(".rlhf-response .rlhf-scroll")
        long_index = 0 if "Paragraph 1:" in boxes.nth(0).inner_text() else 1
        before = page.evaluate(BOX_STATE_JS, long_index)
        assert before["count"] == 2 and before["scrollHeight"] > 3 * before["clientHeight"], before
        boxes.nth(long_index).hover()
        page.mouse.wheel(0, 1500)
        page.wait_for_function(f"() => document.querySelectorAll('.rlhf-response .rlhf-scroll')[{long_index}].scrollTop > 0")
        after = page.evaluate(BOX_STATE_JS, long_index)
        assert after["scrollTop"] > 0 and after["others"] == before["others"], (before, after)
        assert (after["windowY"], after["main"]) == (before["windowY"], before["main"]), (before, after)

        # "Show all" lifts the cap of that response only, and the choice keys still work after the click.
        page.locator(".rlhf-response").nth(long_index).locator("summary").click()
        expanded = page.evaluate(BOX_STATE_JS, long_index)
        assert expanded["clientHeight"] == expanded["scrollHeight"] > VIEWPORT["height"], expanded
        page.keyboard.press("2")
        wait_text(page, "Your choice: A better")
        screenshot(page, "render_03_compare_expanded")

        open_page(page, "My progress")
        wait_loaded(page)
        open_page(page, "Rate")
        wait_text(page, "Rate a response")
        wait_loaded(page)

        assert outside_requests(requests) == [], outside_requests(requests)
        favicon = page.evaluate("() => document.querySelector(\"link[rel='shortcut icon']\").href")
        assert urlsplit(favicon).hostname in LOCAL_HOSTS, favicon
        assert any("/media/" in u for u in requests), "the favicon is served by the app"


def test_no_admin_page_contacts_another_host(served):
    """Every page in an admin's navigation (charts, tables, uploads, icons, My progress with an excerpt
    of a prompt holding a payload) loads only from the app's host."""
    with signed_in_page(served, "ada", "failure_render_admin") as (page, requests):
        # A link's text is its icon's ligature name, then its title.
        titles = [t.strip().splitlines()[-1] for t in page.locator('[data-testid="stSidebarNav"] a').all_inner_texts()]
        assert {"Rate", "Compare", "Projects", "Users", "Import", "Flagged", "Export", "Account"} <= set(titles), titles
        links = page.locator('[data-testid="stSidebarNav"] a')
        for index in range(len(titles)):
            links.nth(index).click()
            wait_loaded(page)
            page.wait_for_timeout(500)  # charts and icons load after the run ends
            if titles[index] == "My progress":
                # Outside text embedded in Streamlit's markdown (the prompt's excerpt) reads as written.
                wait_text(page, "Escaped tick: \\`![x](https://tracker.example.com/pixel.png?id=1)` end.")
                screenshot(page, "render_04_progress")
        assert outside_requests(requests) == [], outside_requests(requests)
