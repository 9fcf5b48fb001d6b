"""A judge's suggestion on the Compare and Rate pages (only where the project switched the `suggestions` use on).

The page shows it above the form and remembers, per form, that it did: `was_shown` is what the
annotation records as `suggestion_shown`, so anchoring can be measured (rlhf.judge.suggestions).
"""

from __future__ import annotations

import streamlit as st

from labeling_app import common as c
from labeling_app import flow


def show(slot: "flow.Slot", shown_left: str = "a") -> None:
    """Render the judge's verdict for the slot's task, if the project shows suggestions and a judge has one."""
    from rlhf.judge.suggestions import suggestion_text, task_suggestion

    suggestion = task_suggestion(c.get_engine(), slot.project_id, slot.task.task_id)
    st.session_state[flow.form_key(slot, "suggestion_shown")] = suggestion is not None
    if suggestion is not None:
        st.info(c.safe_markdown(suggestion_text(suggestion, shown_left)), icon=":material/smart_toy:")


def was_shown(slot: "flow.Slot") -> bool:
    """Whether `show` put a suggestion on screen for this form."""
    return bool(st.session_state.get(flow.form_key(slot, "suggestion_shown"), False))
