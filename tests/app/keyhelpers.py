"""Deliver key presses to an AppTest page as the browser listener (`labeling_app.keyboard`) does.

The listener's state is `{"presses": {"epoch": ..., "presses": [{"seq": n, "key": k}, ...]}}`: every
press not yet acknowledged. AppTest has no tester for `st.components.v2` components, so the
delivery is added to the widget states of the next run by hand, exactly as the browser sends it.
"""

from __future__ import annotations

import json

EPOCH = "tab-1"


def keyboard_id(at) -> str:
    """The element id of the page's key listener."""
    [listener] = [e for e in at.get("bidi_component") if e.proto.component_name == "rlhf_studio.task_keys"]
    return listener.proto.id


def deliver(at, presses: list[tuple[int, str]], *, epoch: str = EPOCH):
    """One delivery of `presses` [(seq, key), ...] (in the list's order, which need not be the
    pressing order), then the run it causes; returns the AppTest."""
    states = at._tree.get_widget_states()
    state = states.widgets.add()
    state.id = keyboard_id(at)
    state.json_value = json.dumps({"presses": {"epoch": epoch, "presses": [{"seq": seq, "key": key} for seq, key in presses]}})
    at._tree._runner._run(states, timeout=60)
    return at


def numbered(keys: str | list[str], start: int = 1) -> list[tuple[int, str]]:
    """Keys in the order pressed, numbered from `start`: numbered("62", 5) == [(5, "6"), (6, "2")]."""
    return list(enumerate(keys, start=start))


def shown(at) -> str:
    """What a person reads on the page: `apphelpers.texts` plus the HTML elements (responses are `st.html`)."""
    import html

    from apphelpers import texts

    return texts(at) + "\n" + "\n".join(html.unescape(e.proto.body) for e in at.get("html"))
