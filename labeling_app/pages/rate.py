"""Rate: score one response on the project's rubric. Keyboard first: digits score the focused dimension, Q W E … toggle tags, Enter submits."""

from __future__ import annotations

import streamlit as st

from labeling_app import common as c
from labeling_app import flow
from labeling_app import suggestion
from labeling_app import keyboard as kb
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


def click_point(task_id: int, index: int, widget: str, drawn: int | None) -> None:
    """A click on a dimension's scale (its segmented control), drawn for task `task_id` showing `drawn`.

    Only a value the person changed counts. Keys can change the task faster than the page is
    redrawn; Streamlit then reports a control drawn in an interrupted run as changed (it never saw
    its value), still holding the value it was drawn with, and that stale value must not overwrite
    a newer score, nor land on the next task (seen typing 50 ms apart, issue 16).
    """
    slot = _slot()
    value = st.session_state.get(widget)
    if slot is None or slot.task.task_id != task_id or index >= len(slot.task.rubric) or value is None or value == drawn:
        return
    rubric = slot.task.rubric
    slot.scores[rubric[index].name] = value
    slot.focus = next_focus([d.name for d in rubric], slot.scores, index)


def move_focus(step: int) -> None:
    slot = _slot()
    if slot is not None:
        slot.focus = max(0, min(len(slot.task.rubric) - 1, slot.focus + step))


def toggle_tag(index: int) -> None:
    """A tag key or click: add the project's `index`-th tag to the task on screen, or take it off."""
    slot = _slot()
    if slot is None or index >= len(slot.task.tags):
        return
    tag = slot.task.tags[index]
    chosen = set(slot.tags) ^ {tag}
    slot.tags = [t for t in slot.task.tags if t in chosen]


KEYS = kb.DIGITS + (kb.UP, kb.DOWN) + kb.TAG_KEYS + flow.COMMON_KEYS


def press_key(key: str) -> None:
    """One key press, applied in the order pressed (`labeling_app.keyboard`)."""
    if key in kb.DIGITS:
        press_digit(key)
    elif key in (kb.UP, kb.DOWN):
        move_focus(-1 if key == kb.UP else 1)
    elif key in kb.TAG_KEYS:
        toggle_tag(kb.TAG_KEYS.index(key))
    else:
        flow.press_common(KIND, key, send)


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
        "tags": list(slot.tags),
        "comment": st.session_state.get(flow.form_key(slot, "comment")) or "",
        "suggestion_shown": suggestion.was_shown(slot),
    }
    flow.submit(KIND, token, fields)


def anchors(dim) -> str:
    """The scale's labelled points as one line: "1 Not at all · 4 Partly · 7 Completely"."""
    points = sorted(((int(v), text) for v, text in dim.labels.items() if str(v).lstrip("-").isdigit()))
    return " · ".join(f"{value} {text}" for value, text in points)


def rubric_form(slot: flow.Slot) -> None:
    """One bordered block per dimension, each with one segmented control for the mouse; the
    dimension the number keys score is marked with the keyboard icon."""
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
                dim.name, list(range(dim.min, dim.max + 1)), default=score, key=widget, label_visibility="collapsed", on_change=click_point, args=(view.task_id, index, widget, score)
            )


def key_row(slot: flow.Slot) -> None:
    """The focused dimension's number keys as buttons, for the mouse (the keys themselves reach
    `press_key`). Generic buttons: the one for digit d scores whichever dimension has the focus
    when the click arrives. Scales longer than ten points take the rest by click."""
    dim = slot.task.rubric[min(slot.focus, len(slot.task.rubric) - 1)]
    keys = scale_keys(dim.min, dim.max)
    score = slot.scores.get(dim.name)
    with st.container(horizontal=True, gap="small", key="rate-keys"):
        for value in sorted(keys):
            kind = "primary" if score == value else "secondary"
            st.button(str(value), key=f"rate.key.{keys[value]}", type=kind, help=f"Key {keys[value]}", on_click=press_digit, args=(keys[value],))


def keyboard_help(slot: flow.Slot) -> None:
    dim = slot.task.rubric[min(slot.focus, len(slot.task.rubric) - 1)]
    keys = scale_keys(dim.min, dim.max)
    first, last = (keys[min(keys)], keys[max(keys)]) if keys else ("-", "-")
    with st.container(horizontal=True, vertical_alignment="center", gap="small"):
        tags = f" · {TAG_KEYS_HELP} toggle the tags" if slot.task.tags else ""
        st.caption(f"{first}–{last} score the :material/keyboard: dimension · ↑ ↓ change it{tags} · Enter submits · S skip · F flag · G guidelines · Backspace reopens your last rating")
        st.button("", key="rate.focus_up", icon=":material/arrow_upward:", type="tertiary", help="Previous dimension (key ↑)", on_click=move_focus, args=(-1,))
        st.button("", key="rate.focus_down", icon=":material/arrow_downward:", type="tertiary", help="Next dimension (key ↓)", on_click=move_focus, args=(1,))


TAG_KEYS_HELP = f"{kb.TAG_KEYS[0]} {kb.TAG_KEYS[1]} {kb.TAG_KEYS[2]} …"


def tag_row(slot: flow.Slot) -> None:
    """The project's tags as toggle buttons in a row that wraps (a long list stays reachable), each
    with its key: Q for the first, W for the second, … P for the tenth; more are clicked."""
    with st.container(horizontal=True, gap="small", key="rate-tags"):
        for index, tag in enumerate(slot.task.tags):
            key = f"{kb.TAG_KEYS[index]} · " if index < len(kb.TAG_KEYS) else ""
            chosen = tag in slot.tags
            st.button(
                key + tag,
                key=f"rate.tag.{index}",
                type="primary" if chosen else "secondary",
                icon=":material/check:" if chosen else None,
                on_click=toggle_tag,
                args=(index,),
            )


def render_task(slot: flow.Slot) -> None:
    """Prompt and response on the left; rubric, tags, comment and the buttons on the right."""
    view = slot.task
    plain = c.plain_text_toggle("rate.plain")
    text_col, form_col = st.columns([5, 4], gap="large")
    with text_col:
        c.render_task_prompt(view, plain=plain)
        c.render_response(view.response, heading="Response", plain=plain)
        suggestion.show(slot)
    with form_col:
        rubric_form(slot)
        keyboard_help(slot)
        own = view.own if slot.editing else None
        if view.tags:
            tag_row(slot)
        st.text_area("Comment (optional)", key=flow.form_key(slot, "comment"), value=own.comment if own else "", height=80, max_chars=5000, on_change="ignore")
        # The scoring row and Submit stay on screen however long the column gets (issue 16, item 8).
        with st.container(key=kb.ACTION_BAR.format(page="rate")):
            key_row(slot)
            flow.action_row(slot, send)


def main() -> None:
    user = c.require_role("annotator")
    project_id = c.require_project()
    flow.annotation_area(KIND, user, project_id, "Rate a response", render_task, KEYS, press_key)


main()
