"""The Write page's editor: a text box that saves drafts as it is typed, without a Streamlit rerun per keystroke.

One `st.components.v2` component in the page's DOM (not a shadow root: the page's key listener,
`labeling_app.keyboard`, must see that keys typed here are typed into a text field). Everything
that happens while typing happens in the browser:

- word and character count, and a live word-level diff against the original reply (the model
  reply the task started from), drawn with `textContent` only: the text is never parsed as HTML;
- the draft is copied to `localStorage` at once and POSTed to `/_rlhf/draft`
  (`labeling_app.server`) once typing pauses (DEBOUNCE_MS), authenticated by the session cookie:
  no rerun, so typing never waits for Python. If that route is missing (the app served without
  `server.py`), the draft goes through the component's state instead (one rerun per pause, never
  per key). If the session ended or the network is down, the browser copy is kept and, once the
  page is loaded again with a newer server copy missing, restored and saved;
- keys: E (outside any text field) puts the cursor in the editor, Esc leaves it, Ctrl/Cmd+Enter
  submits; Submit does the same for the mouse. A submit hands the text to Python once through
  the component's state (`submit`: task, token, text); the token makes a second one a no-op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Optional

import streamlit as st

DEBOUNCE_MS = 600
"""Typing pause after which the draft is sent (the browser copy is written on every input)."""
FOCUS_KEY = "E"

EDITOR_CSS = """
.rlhf-editor{display:flex;flex-direction:column;gap:.4rem}
.rlhf-editor textarea{width:100%;box-sizing:border-box;min-height:18rem;height:clamp(18rem,100vh - 30rem,40rem);resize:vertical;
  font:inherit;font-size:.95rem;line-height:1.45;padding:.6rem .75rem;border-radius:.5rem;
  border:1px solid color-mix(in srgb,currentColor 25%,transparent);background:transparent;color:inherit}
.rlhf-editor textarea:focus{outline:2px solid color-mix(in srgb,#ff4b4b 60%,transparent);outline-offset:1px}
.rlhf-editor-bar{display:flex;align-items:center;gap:.75rem;font-size:.85rem;flex-wrap:wrap}
.rlhf-editor-status{opacity:.7;margin-right:auto}
.rlhf-editor-submit{font:inherit;font-weight:600;padding:.4rem 1rem;border-radius:.5rem;border:0;background:#ff4b4b;color:#fff;cursor:pointer}
.rlhf-editor-submit:disabled{opacity:.5;cursor:default}
.rlhf-editor-over{color:#d33;font-weight:600}
.rlhf-diff{border:1px solid color-mix(in srgb,currentColor 18%,transparent);border-radius:.5rem;padding:.5rem .75rem;
  max-height:14rem;overflow:auto;white-space:pre-wrap;overflow-wrap:anywhere;font-size:.9rem;line-height:1.45}
.rlhf-diff ins{background:color-mix(in srgb,#21c354 25%,transparent);text-decoration:none}
.rlhf-diff del{background:color-mix(in srgb,#ff4b4b 25%,transparent)}
.rlhf-editor details summary{cursor:pointer;font-size:.85rem;opacity:.8}
"""

EDITOR_HTML = """
<div class="rlhf-editor">
  <textarea class="rlhf-editor-text" aria-label="Your reply" spellcheck="true" placeholder="Write the assistant's reply…"></textarea>
  <div class="rlhf-editor-bar">
    <span class="rlhf-editor-count"></span>
    <span class="rlhf-editor-status" aria-live="polite"></span>
    <button type="button" class="rlhf-editor-submit" title="Ctrl+Enter (⌘+Enter)">Submit</button>
  </div>
  <details class="rlhf-editor-changes" open><summary>Changes against the original reply</summary><div class="rlhf-diff"></div></details>
</div>
"""

EDITOR_JS = r"""
const words = (t) => t.match(/\S+/g) || [];
const MAX_CELLS = 4000000;

// Word-level diff (longest common subsequence): [["=", w] | ["+", w] | ["-", w], ...]; null when too large.
function wordDiff(a, b) {
  const n = a.length, m = b.length;
  if ((n + 1) * (m + 1) > MAX_CELLS) return null;
  const w = m + 1, dp = new Uint32Array((n + 1) * w);
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      dp[i * w + j] = a[i] === b[j] ? dp[(i + 1) * w + j + 1] + 1 : Math.max(dp[(i + 1) * w + j], dp[i * w + j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n && j < m) {
    if (a[i] === b[j]) { out.push(["=", a[i]]); i++; j++; }
    else if (dp[(i + 1) * w + j] >= dp[i * w + j + 1]) out.push(["-", a[i++]]);
    else out.push(["+", b[j++]]);
  }
  while (i < n) out.push(["-", a[i++]]);
  while (j < m) out.push(["+", b[j++]]);
  return out;
}

function drawDiff(box, original, text) {
  box.replaceChildren();
  const ops = wordDiff(words(original), words(text));
  if (ops === null) { box.textContent = "Too long to compare live."; return; }
  for (const [op, word] of ops) {
    const node = op === "=" ? document.createTextNode(word) : document.createElement(op === "+" ? "ins" : "del");
    if (op !== "=") node.textContent = word;
    box.appendChild(node);
    box.appendChild(document.createTextNode(" "));
  }
}

function typingIn(el) {
  if (!el) return false;
  if (el.isContentEditable || el.tagName === "TEXTAREA" || el.tagName === "SELECT") return true;
  return el.tagName === "INPUT" && !["checkbox", "radio", "button", "submit", "range", "color"].includes(el.type);
}

// One document listener per tab for the focus key; it acts on the editor mounted last.
function focusKey() {
  if (window.__rlhfEditorKeys) return window.__rlhfEditorKeys;
  const state = { textarea: null };
  document.addEventListener("keydown", (e) => {
    const ta = state.textarea;
    if (!ta || !ta.isConnected || e.ctrlKey || e.metaKey || e.altKey || e.repeat) return;
    if (e.key.toUpperCase() !== FOCUS_KEY || typingIn(e.target)) return;
    if (document.querySelector('[role="dialog"], [data-testid="stDialog"]')) return;
    e.preventDefault();
    e.stopPropagation();
    ta.focus();
    ta.setSelectionRange(ta.value.length, ta.value.length);
  }, true);
  window.__rlhfEditorKeys = state;
  return state;
}

export default function (component) {
  const { data, parentElement, setStateValue } = component;
  const root = parentElement.querySelector(".rlhf-editor");
  const ta = root.querySelector("textarea"), count = root.querySelector(".rlhf-editor-count");
  const status = root.querySelector(".rlhf-editor-status"), submit = root.querySelector(".rlhf-editor-submit");
  const changes = root.querySelector(".rlhf-editor-changes"), diffBox = root.querySelector(".rlhf-diff");
  const keys = focusKey();
  keys.textarea = ta;
  const storeKey = `rlhf-draft:${data.user_id}:${data.task_id}`;
  const original = data.original;
  changes.hidden = original === null;
  submit.textContent = data.editing ? "Save edit" : "Submit";

  const show = () => {
    const n = words(ta.value).length, chars = ta.value.length;
    count.textContent = `${n} word${n === 1 ? "" : "s"} · ${chars.toLocaleString()} / ${data.max_chars.toLocaleString()} characters`;
    count.classList.toggle("rlhf-editor-over", chars > data.max_chars);
  };
  let diffTimer = null, saveTimer = null, sentText = null, useState = false, fallbackSeq = 0;
  const redrawDiff = () => { if (original !== null) drawDiff(diffBox, original, ta.value); };

  async function save() {
    saveTimer = null;
    const text = ta.value;
    if (text === sentText) return;
    if (useState) { sentText = text; setStateValue("draft", { task_id: data.task_id, text, seq: ++fallbackSeq }); status.textContent = "Draft saved"; return; }
    try {
      const r = await fetch(data.route, { method: "POST", credentials: "same-origin", cache: "no-store",
        headers: { "Content-Type": "application/json" }, body: JSON.stringify({ task_id: data.task_id, text }) });
      if (r.ok) { sentText = text; status.textContent = "Draft saved " + new Date().toLocaleTimeString(); return; }
      if (r.status === 404 || r.status === 405) { useState = true; return save(); }
      status.textContent = r.status === 401 ? "Signed out: your draft is kept in this browser and saved when you sign in again" : "Draft not saved (" + r.status + "): kept in this browser";
    } catch (err) {
      status.textContent = "Offline: your draft is kept in this browser; retrying";
      saveTimer = setTimeout(save, 3000);
    }
  }
  const schedule = () => {
    try { localStorage.setItem(storeKey, JSON.stringify({ text: ta.value, at: Date.now() })); } catch (err) { /* storage full or off */ }
    clearTimeout(diffTimer); diffTimer = setTimeout(redrawDiff, 150);
    clearTimeout(saveTimer); saveTimer = setTimeout(save, DEBOUNCE_MS);
    show();
  };
  const send = () => {
    if (submit.disabled) return;
    clearTimeout(saveTimer); saveTimer = null;
    submit.disabled = true;
    window.__rlhfEditorHadFocus = document.activeElement === ta;
    try { localStorage.removeItem(storeKey); } catch (err) { /* ignore */ }
    setStateValue("submit", { task_id: data.task_id, token: data.token, text: ta.value });
  };

  if (root.dataset.token !== data.token) {  // a new task (or a new form for it): load its text once
    root.dataset.token = data.token;
    let text = data.initial;
    try {
      const local = JSON.parse(localStorage.getItem(storeKey) || "null");
      if (local && local.at > data.saved_at && local.text !== text) { text = local.text; setTimeout(save, 0); status.textContent = "Restored the draft kept in this browser"; }
    } catch (err) { /* ignore */ }
    ta.value = text;
    sentText = data.saved_at > 0 ? data.initial : null;
    submit.disabled = false;
    redrawDiff();
    show();
    if (window.__rlhfEditorHadFocus || data.autofocus) { ta.focus(); ta.setSelectionRange(ta.value.length, ta.value.length); }
    window.__rlhfEditorHadFocus = false;
  }
  ta.oninput = schedule;
  ta.onkeydown = (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); e.stopPropagation(); send(); }
    else if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); ta.blur(); }
  };
  submit.onclick = send;
  return () => { if (saveTimer) { clearTimeout(saveTimer); save(); } };
}
""".replace("FOCUS_KEY", repr(FOCUS_KEY)).replace("DEBOUNCE_MS", str(DEBOUNCE_MS))

_editor = st.components.v2.component("rlhf_studio.write_editor", html=EDITOR_HTML, css=EDITOR_CSS, js=EDITOR_JS, isolate_styles=False)
DRAFT_ROUTE = "/_rlhf/draft"


def editor(
    key: str,
    *,
    user_id: int,
    task_id: int,
    token: Optional[str],
    initial: str,
    saved_at: float,
    original: Optional[str],
    max_chars: int,
    editing: bool,
    on_draft: Callable[[], None],
    on_submit: Callable[[], None],
) -> Any:
    """Mount the editor for one task's form (`key` names the form: a new task mounts a fresh editor).

    `initial` is the text to start from (your edit, your draft, the original reply, or nothing);
    `saved_at` the epoch milliseconds of the draft it came from (0: none), so a newer copy kept
    in the browser wins. The component's state carries `draft` ({task_id, text, seq}, only when
    the draft route is missing) and `submit` ({task_id, token, text}).
    """
    data = {
        "user_id": user_id,
        "task_id": task_id,
        "token": token or "",
        "initial": initial,
        "saved_at": saved_at,
        "original": original,
        "max_chars": max_chars,
        "editing": editing,
        "route": DRAFT_ROUTE,
        "autofocus": False,
    }
    return _editor(key=key, data=data, default={"draft": None, "submit": None}, on_draft_change=on_draft, on_submit_change=on_submit)
