"""The annotation flow the Rate and Compare pages share: the task on screen, sending it once, skip, flag, edit, resume.

State lives in `st.session_state[f"{prefix}.slot"]` (a `Slot`), prefix "rate" or "compare":
- the task on screen comes from `rlhf.assign.next_task` once, then from each submit's
  `SubmitResult.next_task` (one round trip per submit: no separate fetch);
- every painted form gets a fresh submission token; a submit consumes it before calling the
  backend, so a double click, a key held down or a stale button never sends a second time;
- keys reach the page through one listener (`labeling_app.keyboard`) that applies them in the
  order pressed: `press_common` handles the keys both pages share (Enter, S, F, G, Backspace);
- time spent on a task runs from its first paint to its submit (server clock);
- a submit that meets an expired session is kept in `common.PENDING` and sent when the same
  user signs in again (`resume_pending`).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Optional

import streamlit as st

from labeling_app import common as c
from labeling_app import keyboard as kb

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from rlhf.assign import TaskView
    from rlhf.schema import User

PREFIX = {"rating": "rate", "pairwise": "compare", "write": "write", "ranking": "rank"}
"""Task kind → the page (and session-state prefix) that shows it."""
PAGE_FILE = {"rating": "rate.py", "pairwise": "compare.py", "write": "write.py", "ranking": "rank.py"}
NOUN = {"rating": "rating", "pairwise": "comparison", "write": "demonstration", "ranking": "ranking"}
VERB = {"rating": "rate", "pairwise": "compare", "write": "write", "ranking": "rank"}
THING = {"rating": "response", "pairwise": "pair", "write": "prompt", "ranking": "set of replies"}
LEASE_RENEW_MARGIN_S = 120.0
"""Renew the lease on the task on screen when less than this is left of it."""
MAX_TIME_SPENT_S = 24 * 3600.0
"""Longer gaps (a tab left open overnight) are recorded as this, not as days."""
SKIP_REASONS = ("I can't judge this topic", "The prompt is unclear", "The text does not display properly", "Other")


@dataclass
class Slot:
    """The task on screen for one kind, in one browser session."""

    user_id: int
    project_id: int
    kind: str
    task: Optional["TaskView"]
    """None when the queue is empty for this user."""
    token: Optional[str]
    """The submission token of the form on screen; None once a submit has taken it."""
    shown_at: float
    """Epoch seconds of the task's first paint."""
    visibility: str = "blind"
    project_name: str = ""
    editing: bool = False
    """True when the task on screen is one of the user's own submitted annotations."""
    prior_time_s: float = 0.0
    """For edits: time already recorded on the annotation (an edit adds to it)."""
    submitted: int = 0
    """Annotations sent from this page in this browser session."""
    last_task_id: Optional[int] = None
    """The task submitted last (for reveal-after-submit)."""
    last_shown_left: Optional[str] = None
    """Pairwise: which response ('a' or 'b') was on the left of the task submitted last."""
    scores: dict[str, int] = field(default_factory=dict)
    """Rate page: the scores chosen so far for the task on screen."""
    focus: int = 0
    """Rate page: the rubric dimension the number keys score."""
    choice: Optional[str] = None
    """Compare page: the display choice selected so far (`labeling_app.choices`)."""
    tags: list[str] = field(default_factory=list)
    """Rate page: the tags chosen so far, in the project's order."""
    dialog: Optional[str] = None
    """"skip", "flag" or "guidelines": a dialog a key asked for, opened (and cleared) by the next draw."""
    rank: Any = None
    """Rank page: the order being built (`labeling_app.rank_order.RankOrder`, display positions)."""


@dataclass(frozen=True)
class PendingSubmission:
    """A submit that met an expired session: sent again after the same user signs in."""

    kind: str
    task_id: int
    user_id: int
    project_id: int
    fields: dict[str, Any]
    """Keyword arguments for `submit_rating` / `submit_preference` (scores, tags, comment / choice, strength, shown_left, comment)."""
    time_spent_s: float


def slot_key(kind: str) -> str:
    return f"{PREFIX[kind]}.slot"


def form_key(slot: Slot, name: str) -> str:
    """Widget key of a form field, per task and per edit revision: each task starts with a clean
    form, and an opened edit gets fresh widgets prefilled from the annotation."""
    revision = f"e{slot.task.own.revision}" if slot.editing and slot.task.own else "n"
    return f"{PREFIX[slot.kind]}.{slot.task.task_id}.{revision}.{name}"


def new_token() -> str:
    return secrets.token_hex(8)


def time_spent(slot: Slot, now: float) -> float:
    """Seconds spent on the task on screen: from its first paint to `now`, plus earlier time for edits."""
    return min(slot.prior_time_s + max(0.0, now - slot.shown_at), MAX_TIME_SPENT_S)


def _new_slot(engine: "Engine", user_id: int, project_id: int, kind: str) -> Slot:
    """An empty slot carrying the project's name and visibility (read once per project choice)."""
    from rlhf.projects import get_project

    project = get_project(engine, project_id)
    return Slot(user_id, project_id, kind, None, None, time.time(), visibility=project.visibility, project_name=project.name)


def _show(slot: Slot, view: Optional["TaskView"], *, editing: bool = False) -> None:
    """Put `view` on screen in `slot` with a fresh token and clock."""
    slot.task = view
    slot.editing = editing
    slot.token = new_token()
    slot.shown_at = time.time()
    slot.prior_time_s = (view.own.time_spent_s or 0.0) if editing and view is not None and view.own is not None else 0.0
    slot.scores = dict(view.own.scores) if editing and view is not None and view.own is not None else {}
    slot.focus = 0
    slot.choice = None
    slot.dialog = None
    slot.tags = list(view.own.tags or []) if editing and view is not None and view.own is not None else []
    slot.rank = None
    if view is not None and view.kind == "ranking":
        from labeling_app.rank_order import RankOrder
        from rlhf.ranking import to_shown

        own = view.own if editing else None
        slot.rank = RankOrder.from_groups(to_shown(own.ranking, view.shown_order), bool(own.all_bad)) if own else RankOrder.initial(len(view.cards))
    if editing and view is not None and view.own is not None and view.own.choice is not None:
        from labeling_app.choices import to_display

        slot.choice = to_display(view.own.choice, view.own.strength or 0, view.own.shown_left or "a")


def get_slot(engine: "Engine", user: "User", project_id: int, kind: str) -> Slot:
    """The slot for `kind`, fetching the next task when there is none for this user and project."""
    slot: Optional[Slot] = st.session_state.get(slot_key(kind))
    if slot is None or slot.user_id != user.id or slot.project_id != project_id:
        from rlhf.assign import next_task

        view = next_task(engine, user, project_id, kind)
        slot = _new_slot(engine, user.id, project_id, kind)
        _show(slot, view)
        st.session_state[slot_key(kind)] = slot
    elif slot.task is not None and not slot.editing:
        _keep_lease(engine, user, slot)
    return slot


def _keep_lease(engine: "Engine", user: "User", slot: Slot) -> None:
    """Renew the lease on the task on screen when it is about to run out (a slow annotator keeps their task)."""
    from rlhf.assign import renew_lease
    from rlhf.schema import utcnow

    expires = slot.task.lease_expires_at
    if expires is None or (expires - utcnow()).total_seconds() > LEASE_RENEW_MARGIN_S:
        return
    renewed = renew_lease(engine, user, slot.task.task_id)
    if renewed is not None:
        slot.task = replace(slot.task, lease_expires_at=renewed)


def refresh(kind: str) -> None:
    """Callback: ask the engine again (empty queue "check again", cancel an edit)."""
    st.session_state.pop(slot_key(kind), None)


# --------------------------------------------------------------------------------- submitting


def _send(engine: "Engine", user: "User", pending: PendingSubmission, slot: Optional[Slot]) -> bool:
    """Call the backend once for `pending`; put the next task in `slot`. True when it was stored."""
    from rlhf.annotate import AnnotationError, TaskFull, submit_preference, submit_ranking, submit_rating
    from rlhf.demonstrations import submit_demonstration
    from rlhf.roles import PermissionDenied

    submit = {"rating": submit_rating, "pairwise": submit_preference, "write": submit_demonstration, "ranking": submit_ranking}[pending.kind]
    try:
        result = submit(engine, user, pending.task_id, time_spent_s=pending.time_spent_s, next_kind=pending.kind, **pending.fields)
    except TaskFull as exc:
        c.flash(f"{exc}. Here is another one.", "warning")
        if slot is not None:
            refresh(pending.kind)
        return False
    except (AnnotationError, PermissionDenied, ValueError) as exc:
        c.flash(f"Not saved: {exc}", "error")
        if slot is not None:
            slot.token = new_token()  # the same form may be sent again once corrected
        return False
    if slot is not None:
        slot.submitted += 1
        slot.last_task_id = pending.task_id
        slot.last_shown_left = pending.fields.get("shown_left")
        _show(slot, result.next_task)
    return True


def submit(kind: str, token: Optional[str], fields: dict[str, Any]) -> None:
    """Send the form on screen once (callback body). Ignored unless `token` is the form's live token.

    With an expired session the submission is kept (`common.PENDING`) and the page asks to
    sign in again; `resume_pending` sends it then.
    """
    slot = live_slot(kind, token)
    if slot is None:
        return  # a second click or a stale button: the first one was (or is being) handled
    slot.token = None
    pending = PendingSubmission(kind, slot.task.task_id, slot.user_id, slot.project_id, dict(fields), time_spent(slot, time.time()))
    user = c.signed_in_user()
    if user is None or user.id != slot.user_id:
        # signed_in_user() has already signed the session out (and left a notice); keep the work.
        st.session_state[c.PENDING] = pending
        st.session_state[c.NOTICE] = f"Your session expired. Sign in again: your {NOUN[kind]} of task {pending.task_id} is kept and will be saved then."
        return
    was_editing = slot.editing
    if _send(c.get_engine(), user, pending, slot) and was_editing:
        c.flash(f"Your {NOUN[kind]} of task {pending.task_id} was updated.")


def resume_pending(engine: "Engine", user: "User") -> None:
    """After a sign-in: send the submission an expired session kept, if it is this user's."""
    pending: Optional[PendingSubmission] = st.session_state.pop(c.PENDING, None)
    if pending is None:
        return
    if pending.user_id != user.id:
        c.flash("A submission kept from another account's expired session was discarded.", "warning")
        return
    slot = _new_slot(engine, user.id, pending.project_id, pending.kind)
    if _send(engine, user, pending, slot):
        st.session_state[c.PROJECT_ID] = pending.project_id
        st.session_state[slot_key(pending.kind)] = slot
        c.flash(f"Your {NOUN[pending.kind]} of task {pending.task_id}, kept while you signed in again, was saved.")


# ------------------------------------------------------------------------------ skip, flag, edit


def live_slot(kind: str, token: Optional[str]) -> Optional[Slot]:
    """The slot when `token` is still the form on screen; None for a second click or a stale button."""
    slot: Optional[Slot] = st.session_state.get(slot_key(kind))
    if slot is None or slot.task is None or token is None or slot.token != token:
        return None
    return slot


def skip(kind: str, token: Optional[str], reason_key: str, note_key: str) -> None:
    """Callback: pass on the task on screen with a reason; the next one comes back in the same call."""
    from rlhf.annotate import AnnotationError, skip_task

    slot = live_slot(kind, token)
    user = c.signed_in_user() if slot is not None else None
    if user is None:
        return
    reason = st.session_state.get(reason_key) or ""
    note = (st.session_state.get(note_key) or "").strip()
    text = f"{reason}: {note}" if note else reason
    slot.token = None
    try:
        view = skip_task(c.get_engine(), user, slot.task.task_id, text[:500])
    except AnnotationError as exc:
        slot.token = new_token()
        c.flash(f"Not skipped: {exc}", "error")
        return
    c.flash(f"Skipped task {slot.task.task_id}.", "info")
    _show(slot, view)


def flag(kind: str, token: Optional[str], reason_key: str, note_key: str, also_skip_key: str) -> None:
    """Callback: report the task on screen for admin review (PII, harmful, broken, other); optionally skip it."""
    from rlhf.annotate import AnnotationError, flag_task

    slot = live_slot(kind, token)
    user = c.signed_in_user() if slot is not None else None
    if user is None:
        return
    reason = st.session_state.get(reason_key) or "other"
    note = st.session_state.get(note_key) or ""
    try:
        flag_task(c.get_engine(), user, slot.task.task_id, reason, note)
    except AnnotationError as exc:
        c.flash(f"Not flagged: {exc}", "error")
        return
    c.flash(f"Task {slot.task.task_id} was flagged ({reason}) for an admin to review.", "info")
    if st.session_state.get(also_skip_key) and not slot.editing:
        st.session_state[f"{PREFIX[kind]}.skip_reason"] = "Other"
        st.session_state[f"{PREFIX[kind]}.skip_note"] = f"flagged: {reason}"
        skip(kind, token, f"{PREFIX[kind]}.skip_reason", f"{PREFIX[kind]}.skip_note")


def open_edit(kind: str, task_id: int) -> bool:
    """Put one of the user's own annotations on screen, prefilled, for editing; False (with a message) if it cannot be."""
    from rlhf.annotate import AnnotationError, task_view_for_edit

    user = c.signed_in_user()
    if user is None:
        return False
    engine = c.get_engine()
    try:
        view = task_view_for_edit(engine, user, task_id)
    except AnnotationError as exc:
        c.flash(str(exc), "error")
        return False
    slot = st.session_state.get(slot_key(view.kind))
    if slot is None or slot.user_id != user.id or slot.project_id != view.project_id:
        slot = _new_slot(engine, user.id, view.project_id, view.kind)
        st.session_state[slot_key(view.kind)] = slot
    st.session_state[c.PROJECT_ID] = view.project_id
    _show(slot, view, editing=True)
    return True


def edit_previous(kind: str) -> None:
    """Callback: open the user's most recent annotation of `kind` in this project for editing."""
    from rlhf.annotate import recent_annotations

    user = c.signed_in_user()
    project_id = c.current_project_id()
    if user is None or project_id is None:
        return
    recent = [a for a in recent_annotations(c.get_engine(), user, project_id, limit=20) if a.kind == kind]
    if not recent:
        c.flash(f"You have no {NOUN[kind]} in this project yet.", "info")
        return
    open_edit(kind, recent[0].task_id)


# --------------------------------------------------------------------------------- rendering


@st.dialog("Guidelines", width="large")
def _guidelines_dialog(text: str) -> None:
    c.render_markdown(text or "_This project has no written guidelines yet._")


def header(slot: Slot, title: str) -> None:
    """Title line: page title, counts, guidelines, edit-previous; and the edit banner."""
    kind = slot.kind
    left, right = st.columns([3, 2], vertical_alignment="center")
    with left:
        st.subheader(title)
    with right, st.container(horizontal=True, horizontal_alignment="right"):
        clicked = slot.task is not None and st.button("Guidelines", key=f"{PREFIX[kind]}.guidelines", help="Key G", icon=":material/menu_book:", type="tertiary")
        if slot.task is not None and (clicked or _take_dialog(slot, "guidelines")):
            _guidelines_dialog(slot.task.guidelines)
        st.button("Edit previous", key=f"{PREFIX[kind]}.previous", help="Key Backspace", icon=":material/undo:", type="tertiary", on_click=edit_previous, args=(kind,))
    if slot.editing and slot.task is not None:
        own = slot.task.own
        with st.container(horizontal=True, vertical_alignment="center"):
            st.info(f"Editing your {NOUN[kind]} of task {slot.task.task_id} (revision {own.revision if own else '?'}). Submitting saves the change.", icon=":material/edit:")
            st.button("Cancel edit", key=f"{PREFIX[kind]}.cancel_edit", on_click=refresh, args=(kind,))
    if slot.submitted:
        st.caption(f"{slot.submitted} submitted in this session · task {slot.task.task_id if slot.task else '-'}")


def press_common(kind: str, key: str, send: Callable[[Optional[str]], None]) -> None:
    """A key both pages share: Enter submits (through the page's `send(token)`), S / F / G open
    the skip, flag and guidelines dialogs on the next draw, Backspace reopens the last annotation."""
    if key == kb.BACKSPACE:
        edit_previous(kind)
        return
    slot: Optional[Slot] = st.session_state.get(slot_key(kind))
    if slot is None or slot.task is None:
        return
    if key == kb.ENTER:
        send(slot.token)
    elif key == kb.SKIP and not slot.editing:
        slot.dialog = "skip"
    elif key == kb.FLAG:
        slot.dialog = "flag"
    elif key == kb.GUIDELINES:
        slot.dialog = "guidelines"


COMMON_KEYS = (kb.ENTER, kb.SKIP, kb.FLAG, kb.GUIDELINES, kb.BACKSPACE)
"""The keys `press_common` handles."""


def _take_dialog(slot: Slot, name: str) -> bool:
    """True (once) when a key asked for dialog `name`."""
    if slot.dialog != name:
        return False
    slot.dialog = None
    return True


@st.fragment
def annotation_area(kind: str, user: "User", project_id: int, title: str, render_task: Callable[[Slot], None], keys: tuple[str, ...], press_key: Callable[[str], None]) -> None:
    """What a key press or a submit redraws: header, the task, its form. A fragment, so these
    reruns skip the router (sign-in check, project list, sidebar) and redraw only this part.

    `render_task(slot)` draws the page's task and form; it is only called when there is a task.
    `press_key(key)` applies one press of one of `keys`, in the order pressed (`labeling_app.keyboard`).
    Callbacks that sign the session out (an expired session meeting a submit) are noticed here
    and hand over to a full rerun, where the router shows the sign-in page.
    """
    if st.session_state.get(c.USER_ID) != user.id:
        st.rerun(scope="app")
    c.settle_heap()  # once per process: the annotation pages are the ones timed per key press
    kb.listen(PREFIX[kind], keys, press_key, context=project_id)
    c.show_flash()
    slot = get_slot(c.get_engine(), user, project_id, kind)
    header(slot, title)
    if slot.task is None:
        empty_queue(slot)
    else:
        render_task(slot)
    slot.dialog = None  # a dialog asked for where none can open (an edit has no skip) is dropped


def empty_queue(slot: Slot) -> None:
    """The page when nothing is left for this user."""
    kind = slot.kind
    with st.container(border=True):
        st.markdown(f"### Nothing left to {VERB[kind]}")
        st.write(
            f"Every {THING[kind]} in {slot.project_name!r} that still needs a {NOUN[kind]} has been done by you, "
            "skipped, or is being done by someone else right now. Thank you!"
        )
        with st.container(horizontal=True):
            st.button("Check again", key=f"{PREFIX[kind]}.check_again", on_click=refresh, args=(kind,), icon=":material/refresh:")
            st.page_link(str(c.page_path("progress.py")), label="My progress", icon=":material/history:")


FLAG_LABELS = {"pii": "PII", "harmful": "Harmful", "broken": "Broken", "other": "Other"}


@st.dialog("Skip this task")
def _skip_dialog(kind: str, token: Optional[str]) -> None:
    prefix = PREFIX[kind]
    st.selectbox("Why skip?", SKIP_REASONS, key=f"{prefix}.skip_reason")
    st.text_input("Note (optional)", key=f"{prefix}.skip_note", max_chars=300)
    if st.button("Skip this task", key=f"{prefix}.skip", type="primary", on_click=skip, args=(kind, token, f"{prefix}.skip_reason", f"{prefix}.skip_note")):
        st.rerun()  # close the dialog; the callback has already brought the next task


@st.dialog("Flag this task for review")
def _flag_dialog(kind: str, token: Optional[str], editing: bool) -> None:
    from rlhf.schema import FLAG_REASONS

    prefix = PREFIX[kind]
    st.radio("Problem", FLAG_REASONS, key=f"{prefix}.flag_reason", horizontal=True, format_func=lambda r: FLAG_LABELS.get(r, r))
    st.text_input("What is wrong? (optional)", key=f"{prefix}.flag_note", max_chars=1000)
    if not editing:
        st.checkbox("Also skip it", value=True, key=f"{prefix}.flag_skip")
    if st.button("Flag for review", key=f"{prefix}.flag", type="primary", on_click=flag, args=(kind, token, f"{prefix}.flag_reason", f"{prefix}.flag_note", f"{prefix}.flag_skip")):
        st.rerun()


def skip_and_flag(slot: Slot) -> None:
    """Buttons (keys S and F) opening dialogs to skip the task with a reason, or flag it (PII, harmful, broken, other).

    Dialogs rather than popovers: their widgets exist only while open, so the page a key press
    redraws stays small.
    """
    kind, prefix = slot.kind, PREFIX[slot.kind]
    if not slot.editing and (st.button("Skip…", key=f"{prefix}.skip_open", help="Key S", icon=":material/skip_next:") or _take_dialog(slot, "skip")):
        _skip_dialog(kind, slot.token)
    if st.button("Flag…", key=f"{prefix}.flag_open", help="Key F", icon=":material/flag:") or _take_dialog(slot, "flag"):
        _flag_dialog(kind, slot.token, slot.editing)


def action_row(slot: Slot, send: Callable[[str], None]) -> None:
    """Submit (Enter; "Save edit" when editing), Skip (S), Flag (F), then others' labels where revealed.

    `send(token)` is the page's submit callback: it builds the fields and calls `submit`.
    """
    with st.container(horizontal=True, vertical_alignment="center"):
        st.button(
            "Save edit" if slot.editing else "Submit",
            key=f"{PREFIX[slot.kind]}.submit",
            type="primary",
            help="Key Enter",
            icon=":material/send:",
            disabled=slot.token is None,
            on_click=send,
            args=(slot.token,),
        )
        skip_and_flag(slot)
    reveal_last(slot)


def reveal_last(slot: Slot) -> None:
    """Reveal-after-submit projects: others' labels on the task submitted last, loaded on request."""
    if slot.visibility != "reveal_after_submit" or slot.last_task_id is None:
        return
    from rlhf.annotate import AnnotationError, reveal_distribution

    with st.expander(f"How others labelled task {slot.last_task_id}"):
        if not st.button("Show", key=f"{PREFIX[slot.kind]}.reveal"):
            return
        user = c.signed_in_user()
        if user is None:
            return
        try:
            dist = reveal_distribution(c.get_engine(), user, slot.last_task_id)
        except (AnnotationError, PermissionError) as exc:
            c.show_error(exc)
            return
        st.caption(f"{dist.n} annotation(s), yours included")
        if dist.kind == "ranking":
            from rlhf.ranking import letter

            st.write(" · ".join(f"**{letter(i)}**: mean place {r:.1f}" for i, r in enumerate(dist.mean_ranks)))
        elif dist.kind == "pairwise":
            left = slot.last_shown_left or "a"
            right = "b" if left == "a" else "a"
            shown = {"A (your left)": dist.choices.get(left, 0), "B (your right)": dist.choices.get(right, 0)}
            shown |= {"Tie": dist.choices.get("tie", 0), "Both bad": dist.choices.get("both_bad", 0)}
            st.write(" · ".join(f"**{name}**: {n}" for name, n in shown.items()))
        else:
            for dim, counts in dist.scores.items():
                st.write(f"**{dim}**: " + ", ".join(f"{value}×{n}" for value, n in sorted(counts.items())))
