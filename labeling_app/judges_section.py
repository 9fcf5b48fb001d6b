"""The dashboard's Judges tab: each model judge against the people (numbers from `rlhf.judge.metrics.judge_tables`)."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from labeling_app import common as c

JUDGE_FLAG_HELP = {
    "position_bias": "picks the response shown first more often than chance explains (both orders judged)",
    "length_bias": "picks the longer response more often than the people's judgments of the same responses explain",
}


@st.cache_data(ttl=60, max_entries=32, show_spinner="Measuring judges…")
def load_judges(database_url: str, project_id: int, actor_id: int, refreshed: float, _engine, _actor) -> dict[str, pd.DataFrame]:
    from rlhf.judge.metrics import judge_tables

    return judge_tables(_engine, _actor, project_id)


def judges_section(engine, user, project_id: int, refreshed: float) -> None:
    from rlhf.db import database_url

    st.subheader("Judges")
    tables = load_judges(database_url(), project_id, user.id, refreshed, engine, user)
    summary = tables["summary"]
    if summary.empty:
        st.info("No model judge has judged this project yet: run `rlhf judge --project …` or queue a judge job on the Training page.")
        return
    st.caption(
        "Agreement with the human consensus beside the people's own (each person against the others' consensus), agreement with "
        "each annotator beside human–human agreement (the ceiling), position consistency (both orders agree), the share of "
        "first-shown picks, and the length tilt (logits per doubling of length beyond the people's judgments)."
    )
    st.dataframe(summary, hide_index=True, key="dashboard.judges_summary")
    for flag, text in JUDGE_FLAG_HELP.items():
        flagged = summary[summary["flags"].str.contains(flag)]["judge"].tolist()
        if flagged:
            st.warning(f"{flag}: {', '.join(c.safe_markdown(name) for name in flagged)} — {text}", icon=":material/flag:")
    judge = st.selectbox("Judge", summary["judge"].tolist(), key="dashboard.judge")
    left, right = st.columns(2)
    with left:
        st.caption("Agreement with each annotator (shared tasks)")
        st.dataframe(tables["annotators"][tables["annotators"]["judge"] == judge].drop(columns="judge"), hide_index=True, key="dashboard.judge_annotators")
    with right:
        st.caption("Judge verdict (rows) against the human consensus (columns)")
        cells = tables["confusion"][tables["confusion"]["judge"] == judge]
        matrix = cells.pivot_table(index="judge_verdict", columns="consensus", values="count", aggfunc="sum", fill_value=0)
        st.dataframe(matrix, key="dashboard.judge_confusion")
    anchoring = tables["anchoring"]
    if len(anchoring) and anchoring["n"].sum():
        st.caption("Anchoring: people's agreement with the judge's verdict when its suggestion was shown to them and when it was not")
        st.dataframe(anchoring, hide_index=True, key="dashboard.judge_anchoring")
