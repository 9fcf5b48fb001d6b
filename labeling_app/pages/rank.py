"""Rank: order K replies to one prompt, best first, ties allowed. Keyboard first; Enter submits.

Keys: letters type the order ("C A D B"; "C A = D B" ties A and D), ← / → move the focus along
the order, ↑ / ↓ move the focused card up or down, "=" ties the focused card with the one above,
0 marks all bad. Cards
are labelled A, B, C… in the order the engine shows them to this annotator
(`TaskView.shown_order`); the order is translated into the task's terms
(`rlhf.ranking.from_shown`) before anything is stored. Mouse: ↑ / ↓ buttons on each card, or
drag a card's chip along the order strip (`labeling_app.rank_drag`), which moves it as ↑ / ↓ would.

Each card sits in a container keyed by its letter, not by its place on the page, so a key press
that changes the order keeps every card's element identity in the browser.
"""

from __future__ import annotations

import streamlit as st

from labeling_app import common as c
from labeling_app import flow
from labeling_app import keyboard as kb
from labeling_app import rank_drag
from labeling_app.rank_order import RankOrder
from rlhf.ranking import LETTERS, from_shown

KIND = "ranking"
ALL_BAD = "0"
COLUMNS = 3  # cards per row
DRAG_KEY = "rank.drag"


def card_keys(k: int) -> tuple[str, ...]:
    """The letters of the K cards. From K = 6, F and G are cards: flag and guidelines are then buttons only."""
    return tuple(LETTERS[:k])


def common_keys(k: int) -> tuple[str, ...]:
    """Enter, Backspace and the dialog keys that are not card letters for this K."""
    return tuple(key for key in flow.COMMON_KEYS if key not in card_keys(k))


def page_keys(k: int) -> tuple[str, ...]:
    return card_keys(k) + (kb.LEFT, kb.RIGHT, kb.UP, kb.DOWN, kb.TIE, ALL_BAD) + common_keys(k)


KEYS = page_keys(len(LETTERS))


def _order() -> RankOrder | None:
    slot = st.session_state.get(flow.slot_key(KIND))
    return slot.rank if slot is not None and slot.task is not None else None


def press_key(key: str) -> None:
    """One key press, applied in the order pressed (`labeling_app.keyboard`)."""
    order = _order()
    if order is not None and key in LETTERS and key in card_keys(len(order.seq)):
        order.type_card(LETTERS.index(key))
    elif order is not None and key in (kb.LEFT, kb.RIGHT):
        order.move_focus(-1 if key == kb.LEFT else 1)
    elif order is not None and key in (kb.UP, kb.DOWN):
        order.move(-1 if key == kb.UP else 1)
    elif order is not None and key == kb.TIE:
        order.toggle_tie()
    elif order is not None and key == ALL_BAD:
        order.toggle_all_bad()
    elif key in flow.COMMON_KEYS and (order is None or key in common_keys(len(order.seq))):
        flow.press_common(KIND, key, send)


def move_card(card: int, step: int) -> None:
    """Mouse: the ↑ / ↓ buttons of a card."""
    order = _order()
    if order is not None:
        order.focus = order.seq.index(card)
        order.move(step)


def drop_card() -> None:
    """Mouse: a chip of the order strip dropped on another place; applied as the ↑ / ↓ keys would."""
    order = _order()
    state = st.session_state.get(DRAG_KEY)
    payload = state.get("drop") if hasattr(state, "get") else None
    slot = st.session_state.get(flow.slot_key(KIND))
    drop = rank_drag.parse_drop(payload, len(order.seq)) if order is not None else None
    if drop is None or slot.token != drop[0]:
        return  # not a drop, or one made on a form that is gone
    order.drop(drop[1], drop[2])


def toggle_all_bad() -> None:
    order = _order()
    if order is not None:
        order.toggle_all_bad()


def send(token: str) -> None:
    """Enter / Submit: store the order in the task's terms; the next task comes back in the same call."""
    slot = flow.live_slot(KIND, token)
    if slot is None:
        return
    if not slot.rank.touched:
        c.flash("Order the cards first: type their letters best first (the display order is not an answer).", "warning")
        return
    fields = {
        "ranking": [list(g) for g in from_shown(slot.rank.groups(), slot.task.shown_order)],
        "all_bad": slot.rank.all_bad,
        "comment": st.session_state.get(flow.form_key(slot, "comment")) or "",
    }
    flow.submit(KIND, token, fields)


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def render_cards(slot: flow.Slot, plain: bool) -> None:
    """The K cards in display order, A first, each in its own scrolling box, with its place in the order."""
    order: RankOrder = slot.rank
    focused = order.seq[order.focus]
    cards = slot.task.cards
    for start in range(0, len(cards), COLUMNS):
        columns = st.columns(COLUMNS, gap="small")
        for column, index in zip(columns, range(start, min(start + COLUMNS, len(cards)))):
            with column, st.container(key=f"rank-card-{LETTERS[index]}"):
                marker = "▶ " if index == focused else ""
                c.render_response(cards[index], heading=f"{marker}{LETTERS[index]} · {_ordinal(order.place_of(index))}", plain=plain)
                with st.container(horizontal=True, gap="small"):
                    st.button("↑", key=f"rank.up.{index}", help=f"Move {LETTERS[index]} up", on_click=move_card, args=(index, -1))
                    st.button("↓", key=f"rank.down.{index}", help=f"Move {LETTERS[index]} down", on_click=move_card, args=(index, 1))


def render_task(slot: flow.Slot) -> None:
    """Prompt, the cards, comment, then the order as a sentence and the buttons (kept on screen)."""
    view = slot.task
    k = len(view.cards)
    plain = c.plain_text_toggle("rank.plain")
    c.render_task_prompt(view, plain=plain)
    render_cards(slot, plain)
    dialogs = " · ".join(f"{key} {name}" for key, name in (("S", "skip"), ("F", "flag"), ("G", "guidelines")) if key in common_keys(k))
    st.caption(
        f"Keys: type letters {LETTERS[0]}–{LETTERS[k - 1]} best first (C A = D B) · ← → focus · ↑ ↓ move the focused card · "
        f"= ties it with the one above · 0 all bad · Enter submits" + (f" · {dialogs}" if dialogs else "") + " · Backspace reopens your last ranking"
    )
    own = view.own if slot.editing else None
    with st.expander("Comment (optional)", expanded=bool(own and own.comment)):
        st.text_area("Comment", key=flow.form_key(slot, "comment"), value=own.comment if own else "", height=80, max_chars=5000, on_change="ignore", label_visibility="collapsed")
    with st.container(key=kb.ACTION_BAR.format(page="rank")):
        with st.container(horizontal=True, vertical_alignment="center"):
            untouched = "" if slot.rank.touched else "  (the display order: type yours)"
            st.markdown(f"Your order: **{slot.rank.sentence()}**{untouched}" + ("  ·  **all bad**" if slot.rank.all_bad else ""))
            rank_drag.order_strip(DRAG_KEY, slot.rank, card_keys(k), slot.token or "", drop_card)
            st.button("0 · All bad", key="rank.all_bad", type="primary" if slot.rank.all_bad else "secondary", on_click=toggle_all_bad, help="Key 0")
        flow.action_row(slot, send)


def main() -> None:
    user = c.require_role("annotator")
    project_id = c.require_project()
    flow.annotation_area(KIND, user, project_id, "Rank the replies", render_task, KEYS, press_key)


main()
