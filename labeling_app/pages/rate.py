"""Rate: score one response on the project's rubric. Keyboard first: digits score the focused dimension, Enter submits."""

from __future__ import annotations

import streamlit as st

from labeling_app import common as c
from labeling_app import flow
from labeling_app.choices import next_focus, scale_keys

KIND = "rating"


def _slot() -> flow.Slot | None:
    slot = st.session_state.get(flow.slot_key(KIND))
    return slot if slot is not None and slot.task is not None else None


# Scoring keys and clicks act on the task on screen when they arrive, without a token: a key
# pressed just after a submit, while the next task is still being drawn, is meant for that
# next task (nobody scores a task they already sent), and dropping it would lose a keystroke.


def press_digit(digit: str) -> None:
    """A number key: score the focused dimension with the scale point that key stands for."""
    slot = _slot()
    if slot is None:
        return
    rubric = slot.task.rubric
    dim = rubric[min(slot.focus, len(rubric) - 1)]
    by_key = {key: value for value, key in scale_keys(dim.min, dim.max).items()}
    if digit in by_key:
        slot.scores[dim.name] = by_key[digit]
        slot.focus = next_focus([d.name for d in rubric], slot.scores, slot.focus)


def click_point(index: int, widget: str) -> None:
    """A click on the scale of a dimension that does not have the keys (its segmented control)."""
    slot = _slot()
    value = st.session_state.get(widget)
    if slot is None or index >= len(slot.task.rubric) or value is None:
        return
    rubric = slot.task.rubric
    slot.scores[rubric[index].name] = value
    slot.focus = next_focus([d.name for d in rubric], slot.scores, index)


def move_focus(step: int) -> None:
    slot = _slot()
    if slot is not None:
        slot.focus = max(0, min(len(slot.task.rubric) - 1, slot.focus + step))


def send(token: str) -> None:
    """Enter / Submit: every dimension needs a score; then one backend call stores it and brings the next task."""
    slot = flow.live_slot(KIND, token)
    if slot is None:
        return
    missing = [d.name for d in slot.task.rubric if d.name not in slot.scores]
    if missing:
        c.flash(f"Score {', '.join(missing)} first.", "warning")
        slot.focus = [d.name for d in slot.task.rubric].index(missing[0])
        return
    fields = {
        "scores": dict(slot.scores),
        "tags": list(st.session_state.get(flow.form_key(slot, "tags")) or []),
        "comment": st.session_state.get(flow.form_key(slot, "comment")) or "",
    }
    flow.submit(KIND, token, fields)


def anchors(dim) -> str:
    """The scale's labelled points as one line: "1 Not at all · 4 Partly · 7 Completely"."""
    points = sorted(((int(v), text) for v, text in dim.labels.items() if str(v).lstrip("-").isdigit()))
    return " · ".join(f"{value} {text}" for value, text in points)


def rubric_form(slot: flow.Slot) -> None:
    """One bordered block per dimension, each with one segmented control for the mouse; below them
    one row of number-key buttons that score whichever dimension has the focus (marked with the
    keyboard icon).

    The key row sits at the same place on every run. When the keys lived inside the focused block,
    they moved to the next block after each press, and a second key pressed while the page was
    redrawing found no button listening and was lost. Not a fragment of its own inside the task's
    fragment either: a key pressed while Enter's redraw of the outer fragment ran was then lost.
    """
    view = slot.task
    for index, dim in enumerate(view.rubric):
        focused = index == slot.focus
        score = slot.scores.get(dim.name)
        with st.container(border=True, key=f"rate-dim-{index}"):
            marker = ":material/keyboard: " if focused else ""
            title = f"{marker}**{dim.name.capitalize()}**" + (f" — {score}" if score is not None else "")
            if dim.labels:  # the labelled scale points, under the name, in the same element
                title += "  \n:gray[" + c.safe_markdown(anchors(dim)).replace("]", "\\]") + "]"
            st.markdown(title, help=c.safe_markdown(dim.question) if dim.question else None)
            # The key names the score it shows, so a score set by keys appears here as a fresh widget.
            widget = f"rate.seg.{view.task_id}.{index}.{score}"
            st.segmented_control(
                dim.name, list(range(dim.min, dim.max + 1)), default=score, key=widget, label_visibility="collapsed", on_change=click_point, args=(index, widget)
            )
    key_row(slot)
    keyboard_help(slot)


def key_row(slot: flow.Slot) -> None:
    """The focused dimension's number keys as buttons (drawn as key caps). Generic keys: the button
    for digit d scores whichever dimension has the focus when the press arrives, so a fast second
    key never hits a stale dimension. Scales longer than ten points take the rest by click."""
    dim = slot.task.rubric[min(slot.focus, len(slot.task.rubric) - 1)]
    keys = scale_keys(dim.min, dim.max)
    score = slot.scores.get(dim.name)
    with st.container(horizontal=True, gap="small", key="rate-keys"):
        for value in sorted(keys):
            kind = "primary" if score == value else "secondary"
            st.button("", key=f"rate.key.{keys[value]}", shortcut=keys[value], type=kind, on_click=press_digit, args=(keys[value],))


def keyboard_help(slot: flow.Slot) -> None:
    dim = slot.task.rubric[min(slot.focus, len(slot.task.rubric) - 1)]
    keys = scale_keys(dim.min, dim.max)
    first, last = (keys[min(keys)], keys[max(keys)]) if keys else ("-", "-")
    with st.container(horizontal=True, vertical_alignment="center", gap="small"):
        st.caption(f"{first}–{last} score the :material/keyboard: dimension · ↑ ↓ change it · Enter submits · S skip · F flag · G guidelines · Backspace reopens your last rating")
        st.button("", key="rate.focus_up", shortcut="Up", type="tertiary", help="Previous dimension", on_click=move_focus, args=(-1,))
        st.button("", key="rate.focus_down", shortcut="Down", type="tertiary", help="Next dimension", on_click=move_focus, args=(1,))


def render_task(slot: flow.Slot) -> None:
    """Prompt and response on the left; rubric, tags, comment and the buttons on the right."""
    view = slot.task
    plain = c.plain_text_toggle("rate.plain")
    text_col, form_col = st.columns([5, 4], gap="large")
    with text_col:
        c.render_task_prompt(view, plain=plain)
        c.render_response(view.response, heading="Response", plain=plain)
    with form_col:
        rubric_form(slot)
        own = view.own if slot.editing else None
        if view.tags:
            st.pills("Tags", list(view.tags), selection_mode="multi", key=flow.form_key(slot, "tags"), default=list(own.tags) if own else None, on_change="ignore", width="stretch")
        st.text_area("Comment (optional)", key=flow.form_key(slot, "comment"), value=own.comment if own else "", height=80, max_chars=5000, on_change="ignore")
        flow.action_row(slot, send)


def main() -> None:
    user = c.require_role("annotator")
    project_id = c.require_project()
    flow.annotation_area(KIND, user, project_id, "Rate a response", render_task)


main()
