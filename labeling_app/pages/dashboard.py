"""Dashboard (admin): agreement, annotator quality, pairwise kappa, confusion against consensus and the model leaderboard.

Everything shown comes from one call of `rlhf.stats.dashboard_data` (the same numbers as
`rlhf stats --project`), cached for a minute per database, project, admin and settings; the
Refresh button recomputes at once. The page only reshapes those tables for display.
"""

from __future__ import annotations

import time
from typing import Any, Optional

import altair as alt
import pandas as pd
import streamlit as st

from labeling_app import common as c

# A computed dashboard is reused for this many seconds before it is recomputed.
CACHE_TTL_S = 60
# Session-state key: when this session last pressed Refresh (part of the cache key).
REFRESHED = "dashboard.refreshed"
# The kappa heatmap draws at most this many annotators (the most active); the CSV has every pair.
HEATMAP_MAX_ANNOTATORS = 40
# Krippendorff (2004, Content Analysis, sec. 11.4): rely on data with alpha >= .800, draw
# tentative conclusions from .667 up.
ALPHA_RELIABLE = 0.800
ALPHA_TENTATIVE = 0.667
# Flag name -> what raised it (the thresholds are rlhf.quality.QualityThresholds).
FLAG_HELP = {
    "spammer": "Dawid–Skene skill near zero: answers barely depend on the item",
    "position_bias": "chooses the left-hand response more often than chance explains",
    "length_bias": "picks the longer response more often than the other annotators' judgments of the same responses explain",
    "low_gold_accuracy": "gets too few gold (known-answer) tasks right",
    "inconsistent": "disagrees with their own earlier judgment of the same item",
    "too_fast": "median time per task below the minimum",
}
KAPPA_METRICS = {"kappa": "unweighted", "kappa_linear": "linear weights", "kappa_quadratic": "quadratic weights"}
PREFERENCE_ORDER = ["a", "b", "tie", "both_bad"]


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner="Computing statistics…")
def load_dashboard(database_url: str, project_id: int, actor_id: int, refreshed: float, include_external: bool, min_overlap: int, _engine, _actor) -> dict[str, Any]:
    """{"data": rlhf.stats.DashboardData, "computed_at": epoch seconds}.

    The hashed arguments are the cache key: the database (one server may serve several in
    tests), the project, the admin (the backend's role check runs with their account), the
    session's last Refresh press and the settings. `_engine` and `_actor` are not hashed.
    """
    from rlhf.agreement import AgreementConfig
    from rlhf.stats import StatsConfig, dashboard_data

    config = StatsConfig(include_external=include_external, agreement=AgreementConfig(min_overlap=min_overlap))
    return {"data": dashboard_data(_engine, _actor, project_id, config), "computed_at": time.time()}


def refresh() -> None:
    """Refresh button: a new cache key for this session, so the next run recomputes."""
    st.session_state[REFRESHED] = time.time()


# ------------------------------------------------------------------------------ formatting


def numeric(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """A copy with `columns` as floats (the backend leaves undefined statistics as None)."""
    out = frame.copy()
    for column in columns:
        out[column] = pd.to_numeric(out[column], errors="coerce").astype(float)
    return out


def value_label(value: Any) -> str:
    """A rating as "4" rather than "4.0"; preference choices as they are."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def value_order(values: pd.Series) -> list[str]:
    """Labels of `values` in scale order: numbers ascending, preference choices a, b, tie, both bad."""
    unique = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float)) for v in unique):
        return [value_label(v) for v in sorted(unique)]
    known = [v for v in PREFERENCE_ORDER if v in unique]
    return known + sorted(str(v) for v in unique if v not in PREFERENCE_ORDER)


def alpha_reason(note: str) -> str:
    """Why alpha is undefined, from the agreement table's `note` ("statistic: reason; ..." as
    rlhf.stats writes it); the whole note when it names no reason for alpha."""
    prefix = "krippendorff_alpha: "
    for part in str(note or "").split("; "):
        if part.startswith(prefix):
            return part[len(prefix):]
    return str(note or "") or "not enough overlapping judgments"


def csv_button(frame: pd.DataFrame, project: str, table: str) -> None:
    """A download button for one table as CSV (all columns, as the backend returned them)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in project)[:60] or "project"
    st.download_button(
        f"Download {table.replace('_', ' ')} (CSV)",
        data=frame.to_csv(index=False).encode("utf-8"),
        file_name=f"{safe}-{table}.csv",
        mime="text/csv",
        key=f"dashboard.csv.{table}",
        icon=":material/download:",
    )


def number(label: str, fmt: str = "%.3f", help: Optional[str] = None):
    return st.column_config.NumberColumn(label, format=fmt, help=help)


MISSING = "—"
# column -> (header, text format, number format, help) of the agreement table's statistics.
AGREEMENT_STATISTICS = {
    "alpha": ("α", "{:.3f}", "%.3f", "Krippendorff's alpha (ordinal for rubric dimensions, nominal for preferences)"),
    "alpha_low": ("α low", "{:.3f}", "%.3f", "Lower end of the 95% bootstrap interval of α"),
    "alpha_high": ("α high", "{:.3f}", "%.3f", "Upper end of the 95% bootstrap interval of α"),
    "fleiss_kappa": ("Fleiss κ", "{:.3f}", "%.3f", "Fleiss' kappa: needs the same number of ratings on every item"),
    "gwet_ac1": ("Gwet AC1", "{:.3f}", "%.3f", "Gwet's AC1"),
    "gwet_ac2": ("Gwet AC2", "{:.3f}", "%.3f", "Gwet's AC2 (weighted by the scale's distances)"),
    "percent_agreement": ("% agree", "{:.1%}", "percent", "Share of agreeing pairs of answers on the same item"),
    "mean_pairwise_kappa": ("mean pairwise κ", "{:.3f}", "%.3f", "Item-weighted mean Cohen's kappa over pairs sharing ≥ {min_overlap} items"),
}


def statistic_cells(table: pd.DataFrame, column: str, fmt: str) -> list[str]:
    """A statistic column as text: the formatted value, or an em dash where the backend left it undefined."""
    return [MISSING if pd.isna(value) else fmt.format(value) for value in table[column]]


def missing_help(table: pd.DataFrame, column: str, base: str) -> str:
    """`base`, then why the column is undefined on each row that shows an em dash (the backend's `reasons`)."""
    why = [
        f"{row.variable}: {(row.reasons or {}).get(column) or 'not enough data'}"
        for row in table.itertuples(index=False)
        if pd.isna(getattr(row, column))
    ]
    return base + (f". {MISSING} = undefined; " + "; ".join(why) if why else "")


# ------------------------------------------------------------------------------- sections


def agreement_section(data, project: str, min_overlap: int) -> None:
    """Agreement per rubric dimension and for preferences: metrics, table, interval chart, trend."""
    st.subheader("Agreement")
    table = numeric(data.agreement, ["alpha", "alpha_low", "alpha_high", "fleiss_kappa", "gwet_ac1", "gwet_ac2", "percent_agreement", "mean_pairwise_kappa"])
    columns = st.columns(max(len(table), 1))
    for column, row in zip(columns, table.itertuples(index=False)):
        interval = f"95% bootstrap interval {row.alpha_low:.3f} – {row.alpha_high:.3f}" if pd.notna(row.alpha_low) else None
        column.metric(f"α · {row.variable}", "—" if pd.isna(row.alpha) else f"{row.alpha:.3f}", help=interval, border=True)
    undefined: dict[str, list[str]] = {}
    for row in table.itertuples(index=False):
        if pd.isna(row.alpha):
            undefined.setdefault(alpha_reason(row.note), []).append(row.variable)
    for reason, variables in undefined.items():
        names = ", ".join(f"**{c.safe_markdown(v)}**" for v in variables)
        st.info(f"No Krippendorff's α yet for {names}: {c.safe_markdown(reason)}.")
    # Undefined statistics show an em dash (a NumberColumn showed the literal "None"), and each
    # column's tooltip says why, from the backend's reasons (issue 16, item 12).
    # A column with no undefined cell stays numeric (sortable).
    shown = table.drop(columns=["reasons"])
    statistic_config = {}
    for column, (header, text_format, number_format, base_help) in AGREEMENT_STATISTICS.items():
        base_help = base_help.format(min_overlap=min_overlap)
        if table[column].isna().any():
            shown[column] = statistic_cells(table, column, text_format)
            statistic_config[column] = st.column_config.TextColumn(header, help=missing_help(table, column, base_help))
        else:
            statistic_config[column] = number(header, number_format, base_help)
    st.dataframe(
        shown,
        hide_index=True,
        key="dashboard.agreement_table",
        column_config={
            "variable": "Variable",
            "kind": "Kind",
            "level": "Level",
            "n_items": st.column_config.NumberColumn("Items"),
            "n_annotators": st.column_config.NumberColumn("Annotators"),
            "n_annotations": st.column_config.NumberColumn("Labels", help="Scores on this rubric dimension, or comparisons"),
            **statistic_config,
            "note": st.column_config.TextColumn("Why a statistic is missing", width="large"),
        },
    )
    csv_button(data.agreement, project, "agreement")
    chart, trend = st.columns(2)
    with chart:
        st.caption(f"α with its 95% bootstrap interval; dashed lines at {ALPHA_TENTATIVE} (tentative) and {ALPHA_RELIABLE} (reliable).")
        defined = table[table["alpha"].notna()]
        if defined.empty:
            st.info("No variable has an alpha yet.")
        else:
            st.altair_chart(alpha_chart(defined), key="dashboard.alpha_chart")
    with trend:
        st.caption("Cumulative α over time: all annotations up to each moment.")
        series = numeric(data.agreement_trend, ["alpha"])
        series = series[series["alpha"].notna()]
        if series.empty:
            st.info("Not enough overlapping annotations for a trend yet.")
        else:
            st.altair_chart(trend_chart(series), key="dashboard.trend_chart")
    csv_button(data.agreement_trend, project, "agreement_trend")


def alpha_chart(table: pd.DataFrame) -> alt.LayerChart:
    """Point + error bar per variable (alpha, alpha_low .. alpha_high), with the reliability cut-offs."""
    low = min(0.0, float(table[["alpha", "alpha_low"]].min().min()))
    x = alt.X("alpha:Q", title="Krippendorff's α", scale=alt.Scale(domain=[low, 1.0]))
    base = alt.Chart(table)
    bars = base.mark_errorbar(ticks=True).encode(x=alt.X("alpha_low:Q", title="Krippendorff's α", scale=alt.Scale(domain=[low, 1.0])), x2="alpha_high:Q", y=alt.Y("variable:N", title=None))
    points = base.mark_point(filled=True, size=80).encode(
        x=x, y="variable:N", color=alt.Color("kind:N", title="Kind"),
        tooltip=["variable", alt.Tooltip("alpha:Q", format=".3f"), alt.Tooltip("alpha_low:Q", format=".3f"), alt.Tooltip("alpha_high:Q", format=".3f"), "n_items", "n_annotators"],
    )
    cutoffs = alt.Chart(pd.DataFrame({"cutoff": [ALPHA_TENTATIVE, ALPHA_RELIABLE]})).mark_rule(strokeDash=[4, 4], color="gray").encode(x="cutoff:Q")
    return alt.layer(cutoffs, bars, points).properties(height=band_height(len(table)))


def band_height(rows: int, per_row: int = 40, axes: int = 90) -> int:
    """Chart height in pixels for `rows` bands plus the x axis and its title (the height Vega-Lite
    is given includes them; left to itself it squashes layered charts)."""
    return axes + per_row * max(rows, 2)


def trend_chart(series: pd.DataFrame) -> alt.Chart:
    """Cumulative alpha per variable against time."""
    return (
        alt.Chart(series)
        .mark_line(point=True)
        .encode(
            x=alt.X("as_of:T", title="Annotations up to"),
            y=alt.Y("alpha:Q", title="Krippendorff's α"),
            color=alt.Color("variable:N", title="Variable"),
            tooltip=["variable", alt.Tooltip("as_of:T", format="%Y-%m-%d %H:%M"), "n_annotations", alt.Tooltip("alpha:Q", format=".3f")],
        )
    )


def annotator_section(data, project: str) -> None:
    """The annotator table, flagged rows highlighted, with what each flag means."""
    st.subheader("Annotators")
    table = data.annotators.copy()
    if table.empty:
        st.info("No annotator has judged anything in this project yet.")
        return
    if len(table) == 1:
        st.info("Only one annotator so far: agreement and consensus need at least two people judging the same items.")
    table["flags"] = [[f for f in str(flags).split(",") if f] for flags in table["flags"]]
    flagged = table[table["flags"].map(bool)]
    if not flagged.empty:
        names = ", ".join(f"**{c.safe_markdown(str(r.username))}** ({', '.join(r.flags)})" for r in flagged.itertuples(index=False))
        st.warning(f"{len(flagged)} of {len(table)} annotators flagged: {names}.")
    shown = ["username", "flags", "n_ratings", "n_rating_scores", "n_comparisons", "agreement_with_others", "loo_consensus_agreement", "loo_correlation", "gold_n", "gold_accuracy",
             "left_share", "position_p_value", "longer_share", "length_tilt", "length_p_value", "median_time_s", "retest_n", "retest_agreement", "ds_skill", "spammer_score"]
    styled = table[shown].style.apply(lambda row: ["background-color: rgba(255, 75, 75, 0.15)" if row["flags"] else "" for _ in row], axis=1)
    st.dataframe(
        styled,
        hide_index=True,
        key="dashboard.annotator_table",
        column_config={
            "username": st.column_config.TextColumn("Annotator", pinned=True),
            "flags": st.column_config.ListColumn("Flags", help="; ".join(f"{k}: {v}" for k, v in FLAG_HELP.items()), width="large"),
            "n_ratings": st.column_config.NumberColumn("Ratings", help="Responses rated (one rating scores every rubric dimension)"),
            "n_rating_scores": st.column_config.NumberColumn("Rubric scores", help="Ratings × rubric dimensions scored"),
            "n_comparisons": st.column_config.NumberColumn("Comparisons", help="Pairwise comparisons judged"),
            "agreement_with_others": number("Agree w/ others", "percent", "Share of the other annotators' answers on the same items equal to this one's"),
            "loo_consensus_agreement": number("Agree w/ consensus", "percent", "Agreement with the majority of the others (leave-one-out)"),
            "loo_correlation": number("Corr. w/ others", help="Pearson correlation with the others' mean rating"),
            "gold_n": st.column_config.NumberColumn("Gold tasks"),
            "gold_accuracy": number("Gold accuracy", "percent"),
            "left_share": number("Chose left", "percent", "Share of decisive comparisons won by the left-hand response"),
            "position_p_value": number("Position p", "%.2g", "Binomial test of the left share against 1/2"),
            "longer_share": number("Chose longer", "percent", "Share of decisive comparisons won by the longer response (careful annotators pick it less often when the better answers are shorter)"),
            "length_tilt": number("Length tilt", "%+.2f", "Pull toward the longer response beyond the crowd's view of the same responses, in logits per doubling of length (0 = judges length like the crowd)"),
            "length_p_value": number("Length p", "%.2g", "One-sided test of a positive length tilt"),
            "median_time_s": number("Median s / task", "%.1f"),
            "retest_n": st.column_config.NumberColumn("Repeats"),
            "retest_agreement": number("Self-agreement", "percent"),
            "ds_skill": number("DS skill", help="Dawid–Skene chance-corrected competence (0 = random, 1 = always the latent truth)"),
            "spammer_score": number("Spammer score"),
        },
    )
    st.caption("Click a column header to sort. Flags: " + "; ".join(f"`{k}` {v}" for k, v in FLAG_HELP.items()) + ".")
    csv_button(data.annotators, project, "annotators")


@st.cache_data(ttl=CACHE_TTL_S, max_entries=32, show_spinner=False)
def load_writers(database_url: str, project_id: int, actor_id: int, refreshed: float, _engine, _actor) -> pd.DataFrame:
    """`rlhf.writer_stats.writer_stats` (cached like `load_dashboard`)."""
    from rlhf.writer_stats import writer_stats

    return writer_stats(_engine, _actor, project_id)


WRITER_FLAG_HELP = {"sloppy_edits": "their edits leave the model's reply nearly as it was (median share of words changed far below the other writers')"}


def writer_section(writers: pd.DataFrame, project: str) -> None:
    """Demonstrations per writer: how many, how fast, how much they change, how many survive review."""
    st.subheader("Writers (demonstrations)")
    if writers.empty:
        st.info("No demonstrations yet: they appear once annotators write replies on the Write page.")
        return
    table = writers.copy()
    table["flags"] = [[f for f in str(flags).split(",") if f] for flags in table["flags"]]
    flagged = table[table["flags"].map(bool)]
    if not flagged.empty:
        names = ", ".join(f"**{c.safe_markdown(str(r.username))}**" for r in flagged.itertuples(index=False))
        st.warning(f"{len(flagged)} of {len(table)} writers flagged for sloppy edits: {names}.")
    shown = ["username", "flags", "demonstrations", "median_time_s", "edits", "median_edit_ratio", "mean_edit_ratio", "reviewed", "kept_share"]
    st.dataframe(
        table[shown],
        hide_index=True,
        key="dashboard.writer_table",
        column_config={
            "username": st.column_config.TextColumn("Writer", pinned=True),
            "flags": st.column_config.ListColumn("Flags", help="; ".join(f"{k}: {v}" for k, v in WRITER_FLAG_HELP.items())),
            "demonstrations": st.column_config.NumberColumn("Written"),
            "median_time_s": number("Median s / reply", "%.1f"),
            "edits": st.column_config.NumberColumn("Edits", help="Replies that started from a model reply"),
            "median_edit_ratio": number("Median changed", "percent", "Median share of the original's words changed"),
            "mean_edit_ratio": number("Mean changed", "percent"),
            "reviewed": st.column_config.NumberColumn("Reviewed", help="Demonstrations other annotators rated"),
            "kept_share": number("Kept after review", "percent", "Share of the reviewed ones rated at least the middle of the rubric scale"),
        },
    )
    csv_button(writers, project, "writers")


def kappa_section(data, project: str, min_overlap: int) -> None:
    """Cohen's kappa for every annotator pair of one variable, as a symmetric heatmap."""
    st.subheader("Pairwise Cohen's κ")
    pairs = data.pairwise_kappa
    if pairs.empty:
        st.info(f"No two annotators share {min_overlap} or more items yet (lower the minimum under Settings).")
        return
    left, right = st.columns(2)
    variables = list(dict.fromkeys(pairs["variable"]))
    variable = left.selectbox("Variable", variables, key="dashboard.kappa_variable")
    metric = right.segmented_control("Weights", list(KAPPA_METRICS), format_func=KAPPA_METRICS.get, default="kappa", required=True, key="dashboard.kappa_metric")
    chosen = numeric(pairs[pairs["variable"] == variable], ["kappa", "kappa_linear", "kappa_quadratic", "percent_agreement"])
    if chosen[metric].isna().all():
        st.info(f"{KAPPA_METRICS[metric].capitalize()} need a numeric scale; {variable!r} has none. Showing unweighted κ.")
        metric = "kappa"
    st.altair_chart(kappa_heatmap(chosen, metric, data.annotators), key="dashboard.kappa_heatmap")
    csv_button(pairs, project, "pairwise_kappa")


def kappa_heatmap(pairs: pd.DataFrame, metric: str, annotators: pd.DataFrame) -> alt.LayerChart:
    """A rect per ordered pair (both triangles), coloured by `metric` on [-1, 1], with the value written in."""
    active = annotators.sort_values("n_annotations", ascending=False)["username"].astype(str).head(HEATMAP_MAX_ANNOTATORS)
    if pairs[["username_a", "username_b"]].stack().nunique() > HEATMAP_MAX_ANNOTATORS:
        st.caption(f"Showing the {HEATMAP_MAX_ANNOTATORS} most active annotators; the CSV has every pair.")
        pairs = pairs[pairs["username_a"].isin(active) & pairs["username_b"].isin(active)]
    upper = pairs[["username_a", "username_b", metric, "n_items", "percent_agreement"]].rename(columns={"username_a": "row", "username_b": "column", metric: "value"})
    lower = upper.rename(columns={"row": "column", "column": "row"})
    cells = pd.concat([upper, lower], ignore_index=True)
    order = sorted(set(cells["row"]))
    base = alt.Chart(cells).encode(x=alt.X("column:N", title=None, sort=order, axis=alt.Axis(labelAngle=0)), y=alt.Y("row:N", title=None, sort=order))
    rects = base.mark_rect().encode(
        color=alt.Color("value:Q", title="κ", scale=alt.Scale(scheme="redblue", domain=[-1, 1])),
        tooltip=["row", "column", alt.Tooltip("value:Q", title="κ", format=".3f"), alt.Tooltip("n_items:Q", title="shared items"),
                 alt.Tooltip("percent_agreement:Q", title="agreement", format=".0%")],
    )
    labels = base.mark_text(fontSize=11).encode(text=alt.Text("value:Q", format=".2f"), color=alt.condition("abs(datum.value) > 0.6", alt.value("white"), alt.value("black")))
    return alt.layer(rects, labels).properties(height=band_height(len(order)))


def confusion_section(data, project: str) -> None:
    """One annotator's answers against the leave-one-out majority of the others."""
    st.subheader("Confusion against the consensus")
    confusion = data.confusion
    if confusion.empty:
        st.info("No item has a clear majority among the other annotators yet, so there is no consensus to compare with.")
        return
    left, right = st.columns(2)
    variable = left.selectbox("Variable", list(dict.fromkeys(confusion["variable"])), key="dashboard.confusion_variable")
    of_variable = confusion[confusion["variable"] == variable]
    names = dict(zip(of_variable["annotator"], of_variable["username"].astype(str)))
    annotator = right.selectbox("Annotator", list(names), format_func=names.get, key="dashboard.confusion_annotator")
    rows = of_variable[of_variable["annotator"] == annotator]
    order = value_order(pd.concat([of_variable["consensus"], of_variable["value"]]))
    cells = pd.DataFrame({"consensus": rows["consensus"].map(value_label), "answer": rows["value"].map(value_label), "count": rows["count"].astype(int)})
    chart, table = st.columns([3, 2])
    with chart:
        base = alt.Chart(cells).encode(
            x=alt.X("consensus:O", title="Consensus of the others", sort=order, axis=alt.Axis(labelAngle=0)), y=alt.Y("answer:O", title=f"{names[annotator]}'s answer", sort=order)
        )
        heatmap = alt.layer(
            base.mark_rect().encode(color=alt.Color("count:Q", title="Judgments", scale=alt.Scale(scheme="blues")), tooltip=["consensus", "answer", "count"]),
            base.mark_text().encode(text="count:Q"),
        ).properties(height=band_height(cells["answer"].nunique()))
        st.altair_chart(heatmap, key="dashboard.confusion_heatmap")
    with table:
        matrix = cells.pivot_table(index="answer", columns="consensus", values="count", aggfunc="sum", fill_value=0)
        matrix = matrix.reindex(index=[v for v in order if v in matrix.index], columns=[v for v in order if v in matrix.columns])
        st.caption("Rows: this annotator's answer; columns: the others' majority.")
        st.dataframe(matrix, key="dashboard.confusion_table")
    csv_button(confusion, project, "confusion")


def leaderboard_section(data, project: str) -> None:
    """Bradley–Terry Elo per model with bootstrap intervals, and the comparison graph's components."""
    st.subheader("Model leaderboard")
    board = data.leaderboard
    if board.empty:
        st.info("No pairwise comparisons between models yet.")
        return
    if len(data.components) > 1:
        groups = "; ".join(f"group {k + 1}: " + ", ".join(f"`{m}`" for m in members) for k, members in sorted(data.components.items()))
        st.warning(
            f"The comparisons form {len(data.components)} groups of models never compared across groups. "
            f"Elo scores compare only within a group (each group is centred on 1000): {c.safe_markdown(groups)}."
        )
    table = numeric(board, ["elo", "elo_low", "elo_high", "score"])
    table["group"] = table["component"].astype(int) + 1
    st.dataframe(
        table[["rank", "model", "elo", "elo_low", "elo_high", "wins", "losses", "ties", "n_comparisons", "group"]],
        hide_index=True,
        key="dashboard.leaderboard_table",
        column_config={
            "rank": st.column_config.NumberColumn("Rank", help="Within the model's group"),
            "model": "Model",
            "elo": number("Elo", "%.0f", "Bradley–Terry strength on the Elo scale (400 points = 10:1 odds)"),
            "elo_low": number("Elo low", "%.0f", "95% bootstrap interval"),
            "elo_high": number("Elo high", "%.0f"),
            "wins": st.column_config.NumberColumn("Wins"),
            "losses": st.column_config.NumberColumn("Losses"),
            "ties": st.column_config.NumberColumn("Ties", help="Ties and both-bad judgments"),
            "n_comparisons": st.column_config.NumberColumn("Comparisons"),
            "group": st.column_config.NumberColumn("Group"),
        },
    )
    st.altair_chart(leaderboard_chart(table), key="dashboard.leaderboard_chart")
    csv_button(board, project, "leaderboard")


def leaderboard_chart(table: pd.DataFrame) -> alt.LayerChart:
    """Elo point and bootstrap interval per model, best at the top, coloured by group."""
    order = list(table.sort_values(["group", "elo"], ascending=[True, False])["model"])
    y = alt.Y("model:N", title=None, sort=order)
    scale = alt.Scale(zero=False)
    base = alt.Chart(table)
    bars = base.mark_errorbar(ticks=True).encode(x=alt.X("elo_low:Q", title="Elo", scale=scale), x2="elo_high:Q", y=y)
    # Colour tells the groups apart; with one group a legend would only add noise.
    color = alt.Color("group:N", title="Group") if table["group"].nunique() > 1 else alt.value("#1f77b4")
    points = base.mark_point(filled=True, size=80).encode(
        x=alt.X("elo:Q", scale=scale), y=y, color=color,
        tooltip=["model", alt.Tooltip("elo:Q", format=".0f"), alt.Tooltip("elo_low:Q", format=".0f"), alt.Tooltip("elo_high:Q", format=".0f"), "n_comparisons", "group"],
    )
    return alt.layer(bars, points).properties(height=band_height(len(table)))


# ------------------------------------------------------------------------------------ page


def settings() -> tuple[bool, int]:
    """The settings row: include external labellers, minimum overlap per pair, and Refresh."""
    from rlhf.agreement import DEFAULT_MIN_OVERLAP

    with st.container(horizontal=True, vertical_alignment="bottom"):
        include_external = st.toggle("Include external labels", key="dashboard.include_external", help="Count labels from imported datasets and model judges as annotators")
        min_overlap = st.number_input("Min shared items per pair", min_value=1, value=DEFAULT_MIN_OVERLAP, step=1, key="dashboard.min_overlap",
                                      help="Annotator pairs sharing fewer items get no Cohen's kappa", width=200)
        st.button("Refresh", on_click=refresh, key="dashboard.refresh", icon=":material/refresh:")
    return include_external, int(min_overlap)


def main() -> None:
    user = c.require_role("admin")
    project_id = c.require_project()
    engine = c.get_engine()
    from rlhf.db import database_url
    from rlhf.frames import ProjectNotFound
    from rlhf.roles import PermissionDenied

    title = st.empty()  # the header goes above the settings once the project's name is known
    include_external, min_overlap = settings()
    try:
        loaded = load_dashboard(database_url(), project_id, user.id, st.session_state.get(REFRESHED, 0.0), include_external, min_overlap, engine, user)
    except (PermissionDenied, ProjectNotFound) as exc:
        c.show_error(exc)
        return
    data = loaded["data"]
    writers = load_writers(database_url(), project_id, user.id, st.session_state.get(REFRESHED, 0.0), engine, user)
    with title.container():
        st.header(f"Dashboard · {c.safe_markdown(data.project)}", anchor=False)
        st.caption(f"Computed {time.strftime('%H:%M:%S', time.gmtime(loaded['computed_at']))} UTC; reused for up to {CACHE_TTL_S} s — press Refresh for the latest.")
    if data.agreement.empty and data.annotators.empty and data.leaderboard.empty and writers.empty and data.rankings is None:
        st.info("No annotations yet in this project: statistics appear once people start rating and comparing"
                + (" (labels from imported datasets and model judges count only with “Include external labels”)." if not include_external else "."))
        return
    tabs = st.tabs(["Agreement", "Annotators", "Pairwise κ", "Confusion", "Leaderboard", "Writers", "Judges", "Selection"] + (["Rankings"] if data.rankings is not None else []))
    with tabs[0]:
        agreement_section(data, data.project, min_overlap)
    with tabs[1]:
        annotator_section(data, data.project)
    with tabs[2]:
        kappa_section(data, data.project, min_overlap)
    with tabs[3]:
        confusion_section(data, data.project)
    with tabs[4]:
        leaderboard_section(data, data.project)
    with tabs[5]:
        writer_section(writers, data.project)
    with tabs[6]:
        from labeling_app.judges_section import judges_section

        judges_section(engine, user, project_id, st.session_state.get(REFRESHED, 0.0))
    with tabs[7]:
        from labeling_app.selection_view import selection_section

        selection_section(engine, user, project_id)
    if data.rankings is not None:
        from labeling_app.ranking_dashboard import rankings_section

        with tabs[8]:
            rankings_section(data.rankings)


main()
