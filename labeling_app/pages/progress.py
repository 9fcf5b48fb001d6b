"""My progress: today's and total annotations, what is left in your queue, and your recent work to reopen and edit."""

from __future__ import annotations

import streamlit as st

from labeling_app import common as c
from labeling_app import flow
from labeling_app.choices import to_display, CHOICES_BY_ID

RECENT_LIMIT = 20


def summary(annotation) -> str:
    """One line saying what you answered (choices as you saw them: A left, B right)."""
    if annotation.kind == "rating":
        return ", ".join(f"{dim} {value}" for dim, value in annotation.scores.items()) + (f" · tags: {', '.join(annotation.tags)}" if annotation.tags else "")
    shown = to_display(annotation.choice, annotation.strength or 0, annotation.shown_left or "a")
    return CHOICES_BY_ID[shown].label


def open_annotation(kind: str, task_id: int) -> None:
    """Edit button callback: put the annotation on its page's form (before any widget exists), then go there."""
    if flow.open_edit(kind, task_id):
        st.session_state["progress.go_to"] = flow.PAGE_FILE[kind]


def main() -> None:
    user = c.require_role("annotator")
    project_id = c.require_project()
    engine = c.get_engine()
    from rlhf.annotate import progress, recent_annotations

    go_to = st.session_state.pop("progress.go_to", None)
    if go_to is not None:
        st.switch_page(str(c.page_path(go_to)))

    st.subheader("My progress")
    by_kind = {kind: progress(engine, user, project_id, kind=kind) for kind in ("rating", "pairwise")}
    totals = {name: sum(getattr(p, name) for p in by_kind.values()) for name in ("today", "total", "left_in_queue")}
    rows = [("Ratings", vars(by_kind["rating"])), ("Comparisons", vars(by_kind["pairwise"])), ("All", totals)]
    for column, (title, counts) in zip(st.columns(3), rows):
        with column.container(border=True):
            st.markdown(f"**{title}**")
            a, b, d = st.columns(3)
            a.metric("Today", counts["today"])
            b.metric("Total", counts["total"])
            d.metric("Left for you", counts["left_in_queue"])

    st.markdown("#### Recent annotations")
    recent = recent_annotations(engine, user, project_id, limit=RECENT_LIMIT)
    if not recent:
        st.caption("Nothing yet. Your ratings and comparisons appear here, newest first, to reopen and edit.")
        return
    for annotation in recent:
        with st.container(border=True, horizontal=True, vertical_alignment="center"):
            when = annotation.updated_at.strftime("%Y-%m-%d %H:%M UTC")
            noun = "Rating" if annotation.kind == "rating" else "Comparison"
            st.markdown(
                f"**{noun}** · task {annotation.task_id} · {when}"
                + (f" · revision {annotation.revision}" if annotation.revision > 1 else "")
                + f"  \n{c.safe_markdown(annotation.prompt_excerpt)}  \n_{c.safe_markdown(summary(annotation))}_",
                width="stretch",
            )
            st.button("Edit", key=f"progress.edit.{annotation.kind}.{annotation.task_id}", icon=":material/edit:", on_click=open_annotation, args=(annotation.kind, annotation.task_id))


main()
