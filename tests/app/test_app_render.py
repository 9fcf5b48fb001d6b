"""Render safety: outside text is parsed once, images become text, the HTML passes an allow-list sanitiser.

Issue 16: the old renderer escaped text patterns and handed the result to Streamlit's markdown,
whose parser disagreed with ours, so an escaped backtick or a bogus fence opener let a remote
image through. The corpus below is what the browser test (tests/browser/test_browser_render.py)
also shows on the Rate and Compare pages, where it asserts no request leaves the page.
"""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apphelpers import go, no_exception, signed_in_app, write_jsonl
from labeling_app import common as c
from labeling_app import flow
from labeling_app import render

ATTACKS = [
    "<script>document.title='owned'</script>",
    "<img src=x onerror=\"document.title='owned'\">",
    "<iframe src='https://example.org'></iframe>",
    "<!-- hidden --><b>bold?</b>",
]

PAYLOADS_FILE = Path(__file__).resolve().parents[1] / "data" / "render_payloads.json"
REMOTE_PAYLOADS: list[str] = json.loads(PAYLOADS_FILE.read_text(encoding="utf-8"))
"""Texts that try to make the browser fetch something (the two of issue 16 first); the browser test shows them too."""

WRAPPER_TAGS = {"section", "div", "span", "details", "summary", "style"}
"""Tags our own box adds around the sanitised text."""


class _Markup(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {name: value or "" for name, value in attrs}))

    handle_startendtag = handle_starttag


def loads_something(markup: str, *, allowed_tags=render.ALLOWED_TAGS) -> list[str]:
    """What in `markup` could make the browser fetch or run anything (empty when nothing)."""
    parser = _Markup()
    parser.feed(markup)
    parser.close()
    problems = []
    for tag, attrs in parser.tags:
        if tag not in allowed_tags:
            problems.append(f"tag <{tag}>")
        for name, value in attrs.items():
            if name in ("src", "srcset", "style", "poster", "background", "xlink:href") or name.startswith("on"):
                problems.append(f"<{tag} {name}>")
            if name == "href" and (tag != "a" or not value.lower().startswith(("http://", "https://", "mailto:"))):
                problems.append(f"<{tag} href={value}>")
            if "url(" in value.lower():
                problems.append(f"<{tag} {name}=url(...)>")
    # Text never holds a raw `<`: markdown-it escapes it, so no tag can hide in text either.
    for literal in ("<img", "<svg", "<image", "<source", "<picture", "<iframe", "<script", "<link", "<video"):
        if literal in markup.lower():
            problems.append(literal)
    return problems


def hrefs(markup: str) -> list[str]:
    """The link targets in `markup` (real attributes, not text that looks like one)."""
    parser = _Markup()
    parser.feed(markup)
    return [attrs["href"] for tag, attrs in parser.tags if "href" in attrs]


def box_body(box: str) -> str:
    """A box without our constant style sheet (checked once, in `test_style_sheet_loads_nothing`)."""
    return box.replace(f"<style>{render.STYLE}</style>", "")


def test_every_remote_payload_renders_as_text_and_loads_nothing():
    for payload in REMOTE_PAYLOADS:
        out = render.markdown_to_html(payload)
        assert not loads_something(out), (payload, out)
        # An image's URL is shown as text, never turned into a link either.
        assert not [href for href in hrefs(out) if "pixel.png" in href], out
    # The two payloads of the issue: the image shows as its alt text and URL, not as an image.
    assert "[image: x · https://tracker.example.com/pixel.png?id=1]" in render.markdown_to_html(REMOTE_PAYLOADS[0])
    assert "[image: y · https://tracker.example.com/pixel.png?id=2]" in render.markdown_to_html(REMOTE_PAYLOADS[1])


def test_links_keep_only_absolute_web_and_mail_targets():
    out = render.markdown_to_html(REMOTE_PAYLOADS[2] + " [m](mailto:a@example.org) [relative](//tracker.example.com/x) [script](javascript:alert(1)) [data](data:text/html,hi) [path](/rate)")
    assert hrefs(out) == ["https://example.org/page", "mailto:a@example.org"]
    assert 'target="_blank"' in out and "noopener" in out


def test_markdown_still_formats_and_dollars_stay_dollars():
    out = render.markdown_to_html("# Title\n\n**bold** `a<b` costs $5 or $10\n\n```python\nif a < b: pass\n```\n\n~~gone~~")
    assert "<strong>bold</strong>" in out and "<code>a&lt;b</code>" in out
    assert "costs $5 or $10" in out  # st.html does no LaTeX: nothing to escape
    assert "if a &lt; b: pass" in out and "<s>gone</s>" in out and "<h1" in out


def test_raw_html_is_text():
    for attack in ATTACKS:
        out = render.markdown_to_html(f"Answer: {attack} done")
        assert f"Answer: {attack} done" in html.unescape(out)  # shown as written
        assert not loads_something(out), out
        assert "<b>" not in out and "<!--" not in out


def test_every_block_reads_in_its_own_direction():
    out = render.markdown_to_html("مرحبا بالعالم\n\n- واحد\n- two")
    assert out.count('dir="auto"') == 4  # p, ul, two li
    assert 'dir="auto"' in render.response_box("A", None, "שלום")


def test_sanitiser_refuses_what_markdown_it_never_makes():
    dirty = '<p style="color:red" onclick="x()">hi<img src="https://t/p.png"><a href="//t/x">l</a><a href="https://ok/">o</a></p><svg><image href="https://t"/></svg>'
    out = render.sanitise_html(dirty)
    assert not loads_something(out), out
    assert 'href="https://ok/"' in out and 'href="//t/x"' not in out


MARKDOWN_PIECES = st.lists(
    st.sampled_from(list("![]()<>`\\$:/\"'= \n#*_~|-.xyz") + ["https://t.example/p.png", "//t/p", "<img src=", "style=", "onerror=", "url(", "srcset=", "<svg><image href=", "```", "    ", "data:", "javascript:"]),
    max_size=40,
).map("".join)
"""Texts made of markdown syntax, HTML and URL pieces: far likelier than random text to form an image or a tag."""


@settings(max_examples=300, deadline=None)
@given(MARKDOWN_PIECES | st.text(max_size=200))
def test_fuzz_no_text_becomes_a_resource(text):
    out = render.markdown_to_html(text)
    assert not loads_something(out), (text, out)
    for box in (render.response_box("A", "m<odel>", text), render.prompt_box([render.Turn("User", text)]), render.markdown_box(text)):
        assert not loads_something(box_body(box), allowed_tags=render.ALLOWED_TAGS | WRAPPER_TAGS), (text, box)


def test_style_sheet_loads_nothing():
    assert "url(" not in render.STYLE and "@import" not in render.STYLE


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120))
def test_fuzz_safe_markdown_opens_no_syntax(text):
    """Inline text for Streamlit's markdown: every syntax opener is escaped, so CommonMark reads it as text."""
    from markdown_it import MarkdownIt

    out = c.safe_markdown(text)
    tokens = [child for token in MarkdownIt("commonmark", {"html": True}).parseInline(out) for child in token.children or ()]
    assert not [t for t in tokens if t.type in ("image", "link_open", "code_inline", "html_inline")], (text, out)
    assert not re.search(r"(?<!\\)(?:\\\\)*\$", out), out  # every $ is escaped: no LaTeX


def test_safe_markdown_stops_the_issue_payloads_in_streamlit_markdown():
    assert c.safe_markdown("Escaped tick: \\`![x](https://t/p.png)` end.") == "Escaped tick: \\\\\\`!\\[x](https\\://t/p.png)\\` end."
    assert c.safe_markdown("file.jsonl:2 :red[x]") == "file.jsonl:2 :red\\[x]"
    assert c.safe_markdown("costs $5 <b>") == "costs \\$5 \\<b>"
    assert c.safe_markdown("") == ""


def _attack_project(app_env, name: str, responses: list[str], prompt: str = "Say hi <img src=x onerror=alert(1)>") -> int:
    from rlhf.importer import import_file
    from rlhf.projects import get_project
    from rlhf.roles import SYSTEM

    records = [{"prompt": prompt, "responses": [{"text": text, "model": f"m{k}"} for k, text in enumerate(responses)]}]
    path = write_jsonl(app_env.tmp_path / f"{name}.jsonl", records)
    import_file(app_env.engine, path, name, actor=SYSTEM)
    return get_project(app_env.engine, name).id


def test_pages_send_only_sanitised_html_to_the_browser(app_env):
    project_id = _attack_project(app_env, "evil", ["Hi! " + " ".join(ATTACKS) + " " + REMOTE_PAYLOADS[0], REMOTE_PAYLOADS[1] + "\n\n<script>alert(2)</script> hello"])
    for page in ("rate.py", "compare.py"):
        at = go(signed_in_app(app_env.annotator, project_id), page)
        no_exception(at)
        bodies = [h.value for h in at.html]
        assert any("onerror" in body for body in bodies), "the texts are shown (as text)"
        assert any("[image: " in body for body in bodies)
        for body in bodies:
            assert not loads_something(box_body(body), allowed_tags=render.ALLOWED_TAGS | WRAPPER_TAGS), body
        # One element per response and one for the prompt: a key press redraws no more than that.
        assert len(bodies) == (2 if page == "rate.py" else 3)


def test_plain_text_toggle_shows_the_exact_text(app_env):
    at = go(signed_in_app(app_env.annotator, app_env.project_id), "rate.py")
    at = at.toggle(key="rate.plain").set_value(True).run()
    view = at.session_state[flow.slot_key("rating")].task
    assert view.response.text in [code.value for code in at.code]
    assert not at.html


def test_chat_prompt_names_each_role_in_text(app_env):
    """The fixture's second prompt is a chat (system + user): each turn is labelled with its role's name."""
    at = go(signed_in_app(app_env.annotator, app_env.project_id), "rate.py")
    for _ in range(12):
        view = at.session_state[flow.slot_key("rating")].task
        if view.prompt_messages:
            break
        at = at.button(key="rate.skip_open").click().run()
        at = at.button(key="rate.skip").click().run()
    assert view.prompt_messages, "no chat prompt reached"
    prompt = at.html[0].value
    labels = re.findall(r'<div class="rlhf-role" dir="auto">([^<]*)</div>', prompt)
    assert labels == [c.chat_name(m.role) for m in view.prompt_messages]
    assert labels[:2] == ["System", "User"]


@pytest.mark.parametrize(
    ("text", "lines"),
    [("short", 1), ("x" * (render.CHARS_PER_LINE * 8 + 1), 9), ("line\n" * 8, 9), ("a\n\nb", 3), ("", 1)],
)
def test_texts_estimated_past_the_cap_offer_to_show_all(text, lines):
    assert render.estimated_lines(text) == lines
    assert ("Show all" in render.response_box("A", None, text)) == (lines > render.RESPONSE_LINES)


def test_a_prompt_counts_its_role_names_as_lines():
    two_short_turns = [render.Turn("System", "Be brief."), render.Turn("User", "Hi")]
    assert "Show all" not in render.prompt_box(two_short_turns)
    assert "Show all" in render.prompt_box(two_short_turns + [render.Turn("Assistant", "Hello"), render.Turn("User", "r = 2")])
