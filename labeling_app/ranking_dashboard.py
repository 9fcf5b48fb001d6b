"""The dashboard's Rankings tab: Kendall's W, alpha on ranks, implied-pair agreement, annotators, Plackett–Luce.

Reads `rlhf.ranking_stats.RankingStats` as the backend computed it; only reshapes for display.
"""

from __future__ import annotations

import streamlit as st


def rankings_section(rankings) -> None:
    """Metrics row, the per-annotator table and the Plackett–Luce leaderboard of the project's rankings."""
    summary = rankings.summary()
    metrics = (
        ("Rankings", summary["n_rankings"], "%d", "Rankings stored (one per task and annotator)"),
        ("Kendall's W", summary["kendalls_w"], "%.3f", "Mean per-task concordance, tie-corrected (1 = all annotators rank alike)"),
        ("α (ordinal, ranks)", summary["krippendorff_alpha_ordinal"], "%.3f", "Krippendorff's alpha with units (task, card) and the ranks as values"),
        ("Implied pairs", summary["implied_pair_agreement"], "%.3f", "Share of card pairs on which two annotators of a task agree (>, <, =)"),
    )
    for column, (label, value, fmt, help_text) in zip(st.columns(len(metrics)), metrics):
        column.metric(label, "—" if value is None else fmt % value, help=help_text)
    st.subheader("Annotators", anchor=False)
    st.caption("loo_tau: Kendall's τ with the others' mean ranks on the same task · position_tau: τ with the order shown (0 = no position bias) · "
               "gold_tau: τ with gold rankings · length_tilt: pull toward longer replies beyond the crowd's (logits per doubling)")
    st.dataframe(rankings.annotators, hide_index=True, key="dashboard.rank_annotators")
    st.subheader("Plackett–Luce leaderboard", anchor=False)
    st.caption("Worth per model from whole rankings (ties by Breslow's rule); the Leaderboard tab's Bradley–Terry fit also counts the pairs rankings imply.")
    st.dataframe(rankings.leaderboard, hide_index=True, key="dashboard.rank_leaderboard")
