"""Write: the assistant's reply to a prompt, from scratch or by editing the model reply shown pre-filled.

The prompt with every chat turn and its role on the left (through `labeling_app.render`); the
editor (`labeling_app.editor`) on the right, with word count, live diff against the original and
drafts saved as typed. Keys: E puts the cursor in the editor, Esc leaves it, Ctrl/Cmd+Enter
submits; outside the editor S skips, F flags, G shows the guidelines, Backspace reopens your last
demonstration (`labeling_app.keyboard`, shared with Rate and Compare through `labeling_app.flow`).
"""

from __future__ import annotations

from typing import Optional

import streamlit as st

from labeling_app import common as c
from labeling_app import editor
from labeling_app import flow

KIND = "write"
# Enter is a newline here: Ctrl/Cmd+Enter submits, inside the editor. (Comments, not docstrings:
# Streamlit's magic would draw a page script's bare strings.)
KEYS = tuple(k for k in flow.COMMON_KEYS if k != "Enter")
# Session state: (form key, text to start from, epoch ms of the draft it came from or 0).
START_KEY = "write.start"
# One editor for every task: remounting it per task cost a new component each submit; it loads
# a new task's text itself when the form's token changes.
EDITOR = "write.editor"


def _slot() -> Optional[flow.Slot]:
    slot = st.session_state.get(flow.slot_key(KIND))
    return slot if slot is not None and slot.task is not None else None


def press_key(key: str) -> None:
    """S / F / G / Backspace, applied in the order pressed; the editor handles its own keys."""
    flow.press_common(KIND, key, lambda token: None)


def editor_key(slot: flow.Slot) -> str:
    return flow.form_key(slot, "editor")


def starting_text(slot: flow.Slot) -> tuple[str, float]:
    """The text the editor opens with, and the epoch ms of the draft it came from (0: not a draft).

    Your draft when there is one newer than what you submitted; else your submitted reply (an
    edit); else the model reply the task starts from; else nothing. Read once per form.
    """
    key = editor_key(slot)
    cached = st.session_state.get(START_KEY)
    if cached is not None and cached[0] == key:
        return cached[1], cached[2]
    from rlhf.demonstrations import load_draft

    user = c.signed_in_user()
    view = slot.task
    draft = load_draft(c.get_engine(), user, view.task_id) if user is not None else None
    own = view.own if slot.editing else None
    if draft is not None and (own is None or draft.updated_at > own.updated_at):
        text, saved_at = draft.text, draft.updated_at.timestamp() * 1000
    elif own is not None:
        text, saved_at = own.text or "", 0.0
    else:
        text, saved_at = (view.response.text if view.response is not None else ""), 0.0
    st.session_state[START_KEY] = (key, text, saved_at)
    return text, saved_at


def _editor_state(key: str, name: str) -> Optional[dict]:
    state = st.session_state.get(key)
    value = state.get(name) if hasattr(state, "get") else None
    return value if isinstance(value, dict) else None


def on_draft(key: str, task_id: int) -> None:
    """The editor's fallback when the draft route is missing: save the draft it sent."""
    from rlhf.annotate import AnnotationError
    from rlhf.demonstrations import save_draft

    draft = _editor_state(key, "draft")
    user = c.signed_in_user()
    if draft is None or user is None or draft.get("task_id") != task_id or not isinstance(draft.get("text"), str):
        return
    try:
        save_draft(c.get_engine(), user, task_id, draft["text"])
    except AnnotationError as exc:
        c.flash(f"Draft not saved: {exc}", "error")


def on_submit(key: str, task_id: int) -> None:
    """Ctrl/Cmd+Enter or Submit in the editor: send the text once (the token guards repeats)."""
    sent = _editor_state(key, "submit")
    slot = _slot()
    if sent is None or slot is None or sent.get("task_id") != task_id or slot.task.task_id != task_id:
        return
    flow.submit(KIND, sent.get("token"), {"text": sent.get("text")})


def render_task(slot: flow.Slot) -> None:
    """Prompt (every turn, its role) on the left; the editor and skip / flag on the right."""
    view = slot.task
    plain = c.plain_text_toggle("write.plain")
    prompt_col, edit_col = st.columns([4, 5], gap="large")
    with prompt_col:
        c.render_task_prompt(view, plain=plain)
        if view.response is not None:
            with st.expander("Original reply (pre-filled in the editor)"):
                c.render_response(view.response, heading="Original", plain=plain)
    with edit_col:
        text, saved_at = starting_text(slot)
        key = EDITOR
        st.caption("E edit · Esc leave the editor · Ctrl/⌘+Enter submits · S skip · F flag · G guidelines · Backspace reopens your last demonstration")
        editor.editor(
            key,
            user_id=slot.user_id,
            task_id=view.task_id,
            token=slot.token,
            initial=text,
            saved_at=saved_at,
            original=view.response.text if view.response is not None else None,
            max_chars=view.max_reply_chars,
            editing=slot.editing,
            on_draft=lambda: on_draft(key, view.task_id),
            on_submit=lambda: on_submit(key, view.task_id),
        )
        with st.container(horizontal=True, vertical_alignment="center"):
            flow.skip_and_flag(slot)


def main() -> None:
    user = c.require_role("annotator")
    project_id = c.require_project()
    flow.annotation_area(KIND, user, project_id, "Write a reply", render_task, KEYS, press_key)


main()
