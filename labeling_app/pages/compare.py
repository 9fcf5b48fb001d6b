"""Compare: which of two responses to the same prompt is better. Keys 1–5 and 0 choose, Enter submits.

The pair is shown in the order the engine chose for this annotator (`TaskView.left/right`);
"A" and "B" on this page are positions (left, right), translated into the task's own terms
by `labeling_app.choices.to_task_terms` before anything is stored.
"""

from __future__ import annotations

import streamlit as st

from labeling_app import common as c
from labeling_app import flow
from labeling_app.choices import CHOICES_BY_ID, DISPLAY_CHOICES, to_task_terms

KIND = "pairwise"


def _live(token: str | None) -> flow.Slot | None:
    slot = st.session_state.get(flow.slot_key(KIND))
    if slot is None or slot.task is None or token is None or slot.token != token:
        return None
    return slot


def choose(choice_id: str) -> None:
    """A choice key or click: selects for the pair on screen when it arrives (no token: a key pressed
    while the next pair is being drawn is meant for that pair; only submitting needs the token)."""
    slot = st.session_state.get(flow.slot_key(KIND))
    if slot is not None and slot.task is not None:
        slot.choice = choice_id


def comment_key(slot: flow.Slot) -> str:
    revision = f"e{slot.task.own.revision}" if slot.editing and slot.task.own else "n"
    return f"compare.{slot.task.task_id}.{revision}.comment"


def send(token: str) -> None:
    """Enter / Submit: store the selected choice in the task's terms; the next pair comes back in the same call."""
    slot = _live(token)
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
        "comment": st.session_state.get(comment_key(slot)) or "",
    }
    flow.submit(KIND, token, fields)


def choice_buttons(slot: flow.Slot) -> None:
    with st.container(horizontal=True, gap="small", key="compare-choices"):
        for option in DISPLAY_CHOICES:
            st.button(
                option.label,
                key=f"compare.choice.{option.id}",
                shortcut=option.key,
                type="primary" if slot.choice == option.id else "secondary",
                on_click=choose,
                args=(option.id,),
            )


def render_task(slot: flow.Slot) -> None:
    """Prompt, the pair side by side (A left, B right), the choice row, comment and the buttons."""
    view = slot.task
    plain = c.plain_text_toggle("compare.plain")
    c.render_task_prompt(view, plain=plain)
    left, right = st.columns(2, gap="medium")
    with left:
        c.render_response(view.left, heading="A", plain=plain)
    with right:
        c.render_response(view.right, heading="B", plain=plain)
    st.caption("Keys: 1 A much better · 2 A better · 3 tie · 4 B better · 5 B much better · 0 both bad · Enter submits · S skip · F flag · G guidelines · Backspace reopens your last comparison")
    choice_buttons(slot)
    selected = CHOICES_BY_ID[slot.choice].label if slot.choice else "nothing yet"
    st.markdown(f"Your choice: **{selected}**")
    own = view.own if slot.editing else None
    with st.expander("Comment (optional)", expanded=bool(own and own.comment)):
        st.text_area("Comment", key=comment_key(slot), value=own.comment if own else "", height=80, max_chars=5000, on_change="ignore", label_visibility="collapsed")
    with st.container(horizontal=True, vertical_alignment="center"):
        st.button(
            "Save edit" if slot.editing else "Submit",
            key="compare.submit",
            type="primary",
            shortcut="Enter",
            icon=":material/send:",
            disabled=slot.token is None,
            on_click=send,
            args=(slot.token,),
        )
        flow.skip_and_flag(slot)
    flow.reveal_last(slot)


def main() -> None:
    user = c.require_role("annotator")
    project_id = c.require_project()
    flow.annotation_area(KIND, user, project_id, "Compare two responses", render_task)


main()
