"""The Rank page's drag-and-drop order strip: a local `st.components.v2` component (its script and
style are files under `labeling_app/static/`, nothing is fetched from elsewhere).

The strip shows the current order as chips; dropping one chip on another's place sends
`{card, place, token}` and the page applies it with `RankOrder.drop`, which moves the card as the
↑ / ↓ keys would. The token ties a drop to the form it was made on: a drop that reaches the server
after the task changed is ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import streamlit as st

from labeling_app.rank_order import RankOrder

STATIC = Path(__file__).resolve().parent / "static"
HTML = '<div class="rlhf-rank-strip" role="list" aria-label="Order, best first: drag a card to move it"></div>'

_strip = st.components.v2.component(
    "rlhf_studio.rank_drag",
    html=HTML,
    css=(STATIC / "rank_drag.css").read_text(encoding="utf-8"),
    js=(STATIC / "rank_drag.js").read_text(encoding="utf-8"),
    isolate_styles=False,
)


def parse_drop(payload: Any, k: int) -> tuple[str, int, int] | None:
    """(token, card, place) from the component's `drop` value, or None when it is not a well-formed drop of one of `k` cards."""
    if not isinstance(payload, dict):
        return None
    token, card, place = payload.get("token"), payload.get("card"), payload.get("place")
    if not isinstance(token, str) or type(card) is not int or type(place) is not int:
        return None
    if not (0 <= card < k and 0 <= place < k):
        return None
    return token, card, place


def order_strip(key: str, order: RankOrder, letters: tuple[str, ...], token: str, on_drop: Callable[[], None]) -> Any:
    """Mount the strip for `order` (cards by display position, `letters` their names)."""
    data = {"seq": list(order.seq), "tied": sorted(order.tied), "letters": list(letters), "token": token}
    return _strip(key=key, data=data, default={"drop": None}, on_drop_change=on_drop)
