"""Compare: which of two responses to the same prompt is better. Keys 1–5 and 0 choose, Enter submits.

The pair is shown in the order the engine chose for this annotator (`TaskView.left/right`);
"A" and "B" on this page are positions (left, right), translated into the task's own terms
by `labeling_app.choices.to_task_terms` before anything is stored.
"""

from __future__ import annotations

import streamlit as st

from labeling_app import common as c
from labeling_app import flow
from labeling_app import keyboard as kb
from labeling_app import suggestion
from labeling_app.choices import CHOICES_BY_ID, CHOICES_BY_KEY, DISPLAY_CHOICES, to_task_terms

KIND = "pairwise"


def choose(choice_id: str) -> None:
    """A choice key or click: selects for the pair on screen when it arrives (no token: a key pressed
    while the next pair is being drawn is meant for that pair; only submitting needs the token)."""
    slot = st.session_state.get(flow.slot_key(KIND))
    if slot is not None and slot.task is not None:
        slot.choice = choice_id


KEYS = tuple(CHOICES_BY_KEY) + flow.COMMON_KEYS


def press_key(key: str) -> None:
    """One key press, applied in the order pressed (`labeling_app.keyboard`)."""
    if key in CHOICES_BY_KEY:
        choose(CHOICES_BY_KEY[key].id)
    else:
        flow.press_common(KIND, key, send)


def send(token: str) -> None:
    """Enter / Submit: store the selected choice in the task's terms; the next pair comes back in the same call."""
    slot = flow.live_slot(KIND, token)
    if slot is None:
        return
    if slot.choice is None:
        c.flash("Choose first: 1–5 or 0.", "warning")
        return
    choice, strength = to_task_terms(slot.choice, slot.task.shown_left)
    fields = {
        "choice": choice,
        "strength": strength,
        "shown_left": slot.task.shown_left,
        "comment": st.session_state.get(flow.form_key(slot, "comment")) or "",
        "suggestion_shown": suggestion.was_shown(slot),
    }
    flow.submit(KIND, token, fields)


def choice_buttons(slot: flow.Slot) -> None:
    with st.container(horizontal=True, gap="small", key="compare-choices"):
        for option in DISPLAY_CHOICES:
            st.button(
                f"{option.key} · {option.label}",
                key=f"compare.choice.{option.id}",
                help=f"Key {option.key}",
                type="primary" if slot.choice == option.id else "secondary",
                on_click=choose,
                args=(option.id,),
            )


def render_task(slot: flow.Slot) -> None:
    """Prompt, the pair side by side (A left, B right), comment, then the choice row and the buttons."""
    view = slot.task
    plain = c.plain_text_toggle("compare.plain")
    c.render_task_prompt(view, plain=plain)
    left, right = st.columns(2, gap="medium")
    with left:
        c.render_response(view.left, heading="A", plain=plain)
    with right:
        c.render_response(view.right, heading="B", plain=plain)
    suggestion.show(slot, view.shown_left)
    st.caption("Keys: 1 A much better · 2 A better · 3 tie · 4 B better · 5 B much better · 0 both bad · Enter submits · S skip · F flag · G guidelines · Backspace reopens your last comparison")
    own = view.own if slot.editing else None
    with st.expander("Comment (optional)", expanded=bool(own and own.comment)):
        st.text_area("Comment", key=flow.form_key(slot, "comment"), value=own.comment if own else "", height=80, max_chars=5000, on_change="ignore", label_visibility="collapsed")
    # The choice row and Submit stay on screen however long the responses are (issue 16, item 8).
    with st.container(key=kb.ACTION_BAR.format(page="compare")):
        choice_buttons(slot)
        selected = CHOICES_BY_ID[slot.choice].label if slot.choice else "nothing yet"
        st.markdown(f"Your choice: **{selected}**")
        flow.action_row(slot, send)


def main() -> None:
    user = c.require_role("annotator")
    project_id = c.require_project()
    flow.annotation_area(KIND, user, project_id, "Compare two responses", render_task, KEYS, press_key)


main()
