"""Render safety: model outputs and prompts never reach the page as HTML; chat prompts render as a conversation."""

from __future__ import annotations

from apphelpers import go, no_exception, signed_in_app, write_jsonl
from labeling_app import common as c
from labeling_app import flow

ATTACKS = [
    "<script>document.title='owned'</script>",
    "<img src=x onerror=\"document.title='owned'\">",
    "<iframe src='https://example.org'></iframe>",
    "<!-- hidden --><b>bold?</b>",
]


def test_safe_markdown_neutralises_tags_outside_code():
    for attack in ATTACKS:
        out = c.safe_markdown(f"Answer: {attack} done")
        assert "<" not in out, out
        assert "&lt;" in out


def test_safe_markdown_leaves_code_alone():
    fenced = "Try:\n```html\n<script>x()</script>\nif a < b: pass\n```\nthen <b>"
    out = c.safe_markdown(fenced)
    assert "```html\n<script>x()</script>\nif a < b: pass\n```" in out
    assert out.endswith("then &lt;b>")
    assert c.safe_markdown("use `a<b` or ``x<`y`` here <i>") == "use `a<b` or ``x<`y`` here &lt;i>"
    assert c.safe_markdown("unclosed ` tick <i>") == "unclosed ` tick &lt;i>"


def test_safe_markdown_stops_remote_images_and_stray_latex():
    assert c.safe_markdown("![pixel](https://tracker.example/p.png)") == "!\\[pixel](https://tracker.example/p.png)"
    assert c.safe_markdown("costs $5 or $10") == "costs \\$5 or \\$10"
    assert c.safe_markdown("") == ""


def test_page_never_sends_model_html_to_the_browser(app_env):
    from rlhf.importer import import_file
    from rlhf.projects import get_project
    from rlhf.roles import SYSTEM

    records = [
        {
            "prompt": "Say hi <img src=x onerror=alert(1)>",
            "responses": [{"text": "Hi! " + " ".join(ATTACKS), "model": "m1"}, {"text": "<script>alert(2)</script> hello", "model": "m2"}],
        }
    ]
    path = write_jsonl(app_env.tmp_path / "evil.jsonl", records)
    import_file(app_env.engine, path, "evil", actor=SYSTEM)
    project_id = get_project(app_env.engine, "evil").id
    for page in ("rate.py", "compare.py"):
        at = go(signed_in_app(app_env.annotator, project_id), page)
        no_exception(at)
        bodies = [m.value for m in at.markdown] + [m.value for m in at.code]
        assert any("onerror" in body or "alert" in body for body in bodies), "the texts are shown (as text)"
        for body in [m.value for m in at.markdown]:
            assert "<script" not in body and "<img" not in body and "<iframe" not in body, body
        assert not at.html  # no st.html anywhere on the annotation pages


def test_plain_text_toggle_shows_the_exact_text(app_env):
    at = go(signed_in_app(app_env.annotator, app_env.project_id), "rate.py")
    at = at.toggle(key="rate.plain").set_value(True).run()
    view = at.session_state[flow.slot_key("rating")].task
    assert view.response.text in [code.value for code in at.code]


def test_chat_prompt_is_a_conversation(app_env):
    """The fixture's second prompt is a chat (system + user): each turn gets its own chat message."""
    at = go(signed_in_app(app_env.annotator, app_env.project_id), "rate.py")
    for _ in range(12):
        view = at.session_state[flow.slot_key("rating")].task
        if view.prompt_messages:
            break
        at = at.button(key="rate.skip_open").click().run()
        at = at.button(key="rate.skip").click().run()
    assert view.prompt_messages, "no chat prompt reached"
    names = [m.name for m in at.chat_message]
    assert names[: len(view.prompt_messages)] == [m.role for m in view.prompt_messages]
