"""Flagged (admin): the queue of tasks annotators reported (PII, harmful, broken, other): look, then resolve or dismiss."""

from __future__ import annotations

import streamlit as st

from labeling_app import common as c

STATUS_CHOICES = ("open", "resolved", "dismissed", "all")
REASON_LABELS = {"pii": "PII", "harmful": "Harmful", "broken": "Broken", "other": "Other"}


def set_status(flag_id: int, status: str) -> None:
    """Callback: `rlhf.annotate.resolve_flag` (resolved, dismissed, or open again)."""
    from rlhf.annotate import AnnotationError, resolve_flag
    from rlhf.roles import PermissionDenied

    user = c.signed_in_user()
    if user is None:
        return
    try:
        resolve_flag(c.get_engine(), user, flag_id, status)
    except (AnnotationError, PermissionDenied) as exc:
        c.flash(str(exc), "error")
        return
    c.flash(f"Flag {flag_id} is now {status}.", "info")


def show_task(engine, user, task_id: int) -> None:
    """The flagged task's prompt and response(s), with model names (`rlhf.annotate.task_view_for_admin`).

    Pairs are shown in the task's own order: response A left, B right (not an annotator's order).
    """
    from rlhf.annotate import AnnotationError, task_view_for_admin
    from rlhf.roles import PermissionDenied

    try:
        view = task_view_for_admin(engine, user, task_id)
    except (AnnotationError, PermissionDenied) as exc:
        c.show_error(exc)
        return
    c.render_task_prompt(view)
    if view.kind == "rating":
        c.render_response(view.response, heading="Response")
    else:
        left, right = st.columns(2)
        with left:
            c.render_response(view.left, heading="Response A")
        with right:
            c.render_response(view.right, heading="Response B")


def main() -> None:
    user = c.require_role("admin")
    project_id = c.require_project()
    engine = c.get_engine()
    from rlhf.annotate import list_flags

    st.subheader("Flagged tasks")
    status = st.segmented_control("Status", STATUS_CHOICES, default="open", key="flagged.status", required=True)
    flags = list_flags(engine, user, project_id, status=None if status == "all" else status)
    if not flags:
        st.info("No flags here." if status != "open" else "No open flags: nothing needs review.")
        return
    st.caption(f"{len(flags)} flag(s), oldest first")
    for flag in flags:
        with st.container(border=True):
            head, actions = st.columns([3, 2], vertical_alignment="center")
            with head:
                st.markdown(
                    f"**{REASON_LABELS.get(flag.reason, flag.reason)}** · task {flag.task_id} · by {c.safe_markdown(flag.username)} · "
                    f"{flag.created_at:%Y-%m-%d %H:%M} UTC · _{flag.status}_"
                    + (f" by {c.safe_markdown(flag.resolved_by)}" if flag.resolved_by else "")
                )
                if flag.note:
                    st.markdown("> " + c.safe_markdown(flag.note).replace("\n", "\n> "))
            with actions, st.container(horizontal=True, horizontal_alignment="right"):
                if flag.status == "open":
                    st.button("Resolve", key=f"flagged.resolve.{flag.id}", on_click=set_status, args=(flag.id, "resolved"), icon=":material/check:")
                    st.button("Dismiss", key=f"flagged.dismiss.{flag.id}", on_click=set_status, args=(flag.id, "dismissed"), icon=":material/close:")
                else:
                    st.button("Reopen", key=f"flagged.reopen.{flag.id}", on_click=set_status, args=(flag.id, "open"), icon=":material/undo:")
            # Loaded on request: one query per flag opened, not per flag listed.
            if st.toggle("Show the task", key=f"flagged.show.{flag.id}"):
                show_task(engine, user, flag.task_id)


main()
