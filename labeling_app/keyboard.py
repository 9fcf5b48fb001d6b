"""The annotation pages' keyboard: one listener in the browser, key presses applied in Python in the order they were pressed.

Why not `st.button(..., shortcut=...)` (issue 16, item 6): each shortcut is a button trigger,
and a press that arrives while a run is pending is merged into that run's widget states
(`streamlit/runtime/scriptrunner_utils/script_requests.py`, `_coalesce_widget_states`).
`SessionState._call_callbacks` (`streamlit/runtime/state/session_state.py`) then calls the
merged triggers' callbacks in widget order, not press order: digits typed quickly followed by
Enter could be submitted before the last digit was applied ("Score harmlessness first."), and
the same digit pressed twice within one run counted once.

Here, one `st.components.v2` component listens on the app's document and gives every relevant
keydown a sequence number. Its state is the whole list of presses Python has not acknowledged,
so whichever delivery Streamlit keeps after coalescing holds every press, in order. Python
applies the presses after the last one it applied (`apply_presses`), remembers that sequence
number in session state (`Cursor`) and hands it back to the browser as the component's data,
which then forgets the acknowledged presses. A delivery seen twice, or late, changes nothing.

The listener ignores keys typed into text fields (the comment box, dialogs' notes), keys with
Ctrl/Alt/Meta and auto-repeat, and keys while a dialog is open. It listens on the document, so
no element needs the focus; when the page is drawn it also takes the focus away from the
sidebar (a project just chosen there kept it, and keys went to the sidebar: item 7).

The component also carries the annotation pages' one stylesheet (`TASK_CSS`): the container
keyed `ACTION_BAR` (scoring or choice row and Submit) sticks to the bottom of the window, so
long responses never push it off screen (item 8).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

DIGITS = tuple("0123456789")
ENTER, UP, DOWN, BACKSPACE = "Enter", "ArrowUp", "ArrowDown", "Backspace"
LEFT, RIGHT, TIE = "ArrowLeft", "ArrowRight", "="
"""Rank page: focus along the order, and tie the focused card with the one above."""
SKIP, FLAG, GUIDELINES = "S", "F", "G"
TAG_KEYS = tuple("QWERTYUIOP")
"""Tag toggles on the Rate page, in the order of the project's tags (letters S, F, G are taken)."""


@dataclass(frozen=True)
class KeyPress:
    """One keydown in the browser, numbered in the order pressed."""

    seq: int
    key: str
    """A `KeyboardEvent.key` value: a digit, "Enter", "ArrowUp", "ArrowDown", "Backspace", or an upper-case letter."""


@dataclass(frozen=True)
class Cursor:
    """The last press applied from one browser listener (`epoch` names it: a reloaded tab starts a new one at 1)."""

    epoch: str
    seq: int


def parse_presses(payload: Any) -> tuple[str, list[KeyPress]]:
    """(epoch, presses) from the component's state `{"epoch": str, "presses": [{"seq": int, "key": str}, ...]}`;
    malformed entries are dropped (the payload comes from the browser)."""
    if not isinstance(payload, dict) or not isinstance(payload.get("epoch"), str):
        return "", []
    presses = []
    for item in payload.get("presses") or []:
        if isinstance(item, dict) and isinstance(item.get("seq"), int) and isinstance(item.get("key"), str):
            presses.append(KeyPress(item["seq"], item["key"]))
    return payload["epoch"], presses


def unapplied(presses: Iterable[KeyPress], epoch: str, cursor: Cursor | None) -> list[KeyPress]:
    """The presses after `cursor`, once each, in the order they were pressed.

    A delivery may repeat presses already applied (the browser re-sends until acknowledged) or
    list them out of order; neither may apply a press twice or reorder presses. A new `epoch`
    (a listener the cursor never saw) starts from nothing applied.
    """
    after = cursor.seq if cursor is not None and cursor.epoch == epoch else 0
    by_seq = {p.seq: p for p in presses if p.seq > after}
    return [by_seq[seq] for seq in sorted(by_seq)]


def apply_presses(presses: Iterable[KeyPress], epoch: str, cursor: Cursor | None, handle: Callable[[str], None], save: Callable[[Cursor], None]) -> Cursor | None:
    """Apply the unapplied presses in order with `handle(key)`; returns the new cursor.

    The cursor is saved before each key is handled: a key whose handler fails is not applied
    again by the next delivery (at most once; submitting twice is harmless anyway, a re-submit
    edits the annotation).
    """
    for press in unapplied(presses, epoch, cursor):
        cursor = Cursor(epoch, press.seq)
        save(cursor)
        handle(press.key)
    return cursor


# ---------------------------------------------------------------------------------- the listener

ACTION_BAR = "{page}-actions"
"""Key of the container a page keeps on screen (Streamlit gives it the class `st-key-<key>`)."""
TASK_CSS = """
/* The keyed container sits alone in a layout wrapper, and a sticky box cannot leave its parent:
   the wrapper is what sticks, inside the column (rate) or the task (compare). */
[data-testid="stLayoutWrapper"]:has(> .st-key-rate-actions), [data-testid="stLayoutWrapper"]:has(> .st-key-compare-actions),
[data-testid="stLayoutWrapper"]:has(> .st-key-rank-actions) {
  position: sticky; bottom: 0; z-index: 10;
  background: var(--rlhf-page-background, #fff);
  padding: .5rem 0 .75rem; border-top: 1px solid color-mix(in srgb, currentColor 15%, transparent);
}
"""

LISTENER_JS = r"""
// One listener per browser tab, kept on window: Streamlit calls this function again on every
// redraw (with the new acknowledgement) and a new page mounts a new instance.
function keyboard() {
  if (window.__rlhfKeyboard) return window.__rlhfKeyboard;
  const kb = {
    epoch: Math.random().toString(36).slice(2) + Date.now().toString(36),
    seq: 0, pending: [], page: null, accept: new Set(), send: null, owner: null,
  };
  const typing = (el) => {
    if (!el || !el.closest) return false;
    if (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
    if (el.tagName !== "INPUT") return false;
    if (["checkbox", "radio", "button", "submit", "range", "color"].includes(el.type)) return false;
    // A closed select box in the sidebar keeps the focus after a choice: keys then belong to the task.
    if (el.closest('[data-testid="stSidebar"]') && el.getAttribute("aria-expanded") !== "true") return false;
    return true;
  };
  const dialogOpen = () => !!document.querySelector('[role="dialog"], [data-testid="stDialog"]');
  const name = (e) => (e.key.length === 1 ? e.key.toUpperCase() : e.key);
  document.addEventListener("keydown", (e) => {
    if (!kb.send || e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
    const key = name(e);
    if (!kb.accept.has(key) || typing(e.target) || dialogOpen()) return;
    e.preventDefault();  // a focused button or link must not act on Enter as well
    e.stopPropagation();
    if (e.repeat) return;  // a key held down is one press
    if (e.target && e.target.closest && e.target.closest('[data-testid="stSidebar"]')) e.target.blur();
    kb.seq += 1;
    kb.pending.push({ seq: kb.seq, key });
    kb.send("presses", { epoch: kb.epoch, presses: kb.pending.slice() });
  }, true);
  window.__rlhfKeyboard = kb;
  return kb;
}

export default function (component) {
  const { data, setStateValue } = component;
  const kb = keyboard();
  if (kb.page !== data.page) kb.pending = [];  // presses meant for another page are not carried over
  kb.page = data.page;
  kb.accept = new Set(data.keys);
  kb.send = setStateValue;
  const owner = {};
  kb.owner = owner;
  if (data.epoch === kb.epoch) kb.pending = kb.pending.filter((p) => p.seq > data.applied);
  // The sticky action bar is painted with the app's own background (light or dark theme).
  const app = document.querySelector('[data-testid="stApp"]');
  if (app) document.documentElement.style.setProperty("--rlhf-page-background", getComputedStyle(app).backgroundColor);
  const focused = document.activeElement;
  if (focused && focused.closest && focused.closest('[data-testid="stSidebar"]')) focused.blur();
  return () => { if (kb.owner === owner) kb.send = null; };
}
"""

_listener = st.components.v2.component("rlhf_studio.task_keys", js=LISTENER_JS, css=TASK_CSS, isolate_styles=False)


def component_key(page: str) -> str:
    return f"{page}.keyboard"


def cursor_key(page: str) -> str:
    return f"{page}.keys_applied"


def _deliver(page: str, handle: Callable[[str], None]) -> None:
    """Component callback: a new list of presses arrived; apply what is new."""
    state = st.session_state.get(component_key(page))
    payload = state.get("presses") if hasattr(state, "get") else None
    epoch, presses = parse_presses(payload)
    if not epoch:
        return
    apply_presses(presses, epoch, st.session_state.get(cursor_key(page)), handle, functools.partial(st.session_state.__setitem__, cursor_key(page)))


def listen(page: str, keys: Sequence[str], handle: Callable[[str], None], *, context: Any = None) -> None:
    """Mount the page's key listener: presses of `keys` reach `handle(key)` once each, in order, before the next redraw.

    The browser re-runs the listener's function only when its data changes; `context` (the
    project) is part of the data, so choosing another project in the sidebar takes the focus
    back from it even before a key is pressed.
    """
    cursor: Cursor | None = st.session_state.get(cursor_key(page))
    data = {"page": page, "keys": list(keys), "epoch": cursor.epoch if cursor else "", "applied": cursor.seq if cursor else 0, "context": context}
    _listener(key=component_key(page), data=data, default={"presses": None}, on_presses_change=functools.partial(_deliver, page, handle), height=0)
