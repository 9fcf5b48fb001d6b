"""The dashboard's Selection section: labels used per strategy, and the reward model's accuracy on the random share over time."""

from __future__ import annotations

import altair as alt
import streamlit as st


def selection_section(engine, user, project_id: int) -> None:
    from rlhf.selection.scores import selection_overview

    overview = selection_overview(engine, user, project_id)
    status = overview.status
    line = f"Strategy: **{status.selection}**"
    if status.applied is not None:
        line += f" · order in force: **{status.applied}**"
    st.markdown(line)
    if status.fallback:
        st.warning(status.note, icon=":material/info:")
    if overview.labels.empty:
        st.info("No annotations yet.")
        return
    st.dataframe(overview.labels, hide_index=True, key="dashboard.selection_labels")
    history = overview.history
    if history.empty:
        st.caption("No scoring run yet: the curve appears once a select-scores job has run.")
        return
    labels_chart = alt.Chart(history).mark_line(point=True).encode(
        x=alt.X("at:T", title="scoring run"), y=alt.Y("labels:Q", title="labels used"), color=alt.Color("strategy:N")
    )
    st.altair_chart(labels_chart, width="stretch")
    accuracy = history.dropna(subset=["rm_accuracy_random"]).drop_duplicates("at")
    if accuracy.empty:
        st.caption("Reward-model accuracy on the random share appears once the project has a reward model and randomly chosen labels.")
        return
    accuracy_chart = alt.Chart(accuracy).mark_line(point=True).encode(
        x=alt.X("at:T", title="scoring run"),
        y=alt.Y("rm_accuracy_random:Q", title="reward-model accuracy (random share)", scale=alt.Scale(domain=[0, 1])),
        tooltip=["at:T", "rm_accuracy_random:Q", "random_pairs:Q"],
    )
    st.altair_chart(accuracy_chart, width="stretch")
