"""Projects (admin): create and edit projects: guidelines in markdown, rubric, tags, overlap, gold rate, visibility."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from labeling_app import common as c
from labeling_app.admin_forms import FormError, parse_tags, rows_to_rubric, rubric_rows

NEW = 0  # selector value for "a new project"
SELECTION_LABELS = {
    "least-annotated": "Least-annotated first (random order within)",
    "uncertainty": "Uncertainty: pairs the latest reward model cannot tell apart",
    "disagreement": "Disagreement: tasks whose votes disagree most (Dawid–Skene)",
    "mixed": "Mixed: both, with a 25% random share kept for evaluation",
}
VISIBILITY_LABELS = {"blind": "Blind: annotators never see others' labels", "reveal_after_submit": "Reveal after submit: others' labels shown once you submit"}


def overview(engine, projects) -> None:
    from rlhf.projects import project_counts

    rows = []
    for p in projects:
        counts = project_counts(engine, p.id)
        rows.append(
            {
                "id": p.id,
                "name": p.name,
                "active": p.active,
                "rating tasks": counts["rating_tasks"],
                "pairwise tasks": counts["pairwise_tasks"],
                "prompts": counts["prompts"],
                "overlap": p.overlap,
                "visibility": p.visibility,
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def editor(engine, user, project) -> None:
    """The form for `project` (None: a new one). Saving calls create_project / update_project once."""
    from rlhf.projects import ProjectValidationError, create_project, update_project
    from rlhf.schema import DEFAULT_RUBRIC, DEFAULT_TAGS, VISIBILITIES

    key = f"projects.{project.id if project else 'new'}"
    name = st.text_input("Name", value=project.name if project else "", key=f"{key}.name", max_chars=200)
    description = st.text_input("Description", value=project.description if project else "", key=f"{key}.description", max_chars=2000)

    st.markdown("**Guidelines** (markdown)")
    write, preview = st.tabs(["Write", "Preview"])
    with write:
        guidelines = st.text_area("Guidelines", value=project.guidelines if project else "", key=f"{key}.guidelines", height=200, label_visibility="collapsed")
    with preview:
        c.render_markdown(guidelines or "_Nothing written yet._")

    st.markdown("**Rubric** — one row per dimension; labels like `1=Not at all; 4=Partly; 7=Completely`")
    rubric_frame = pd.DataFrame(rubric_rows(project.rubric if project else DEFAULT_RUBRIC), columns=["name", "question", "min", "max", "labels"])
    edited = st.data_editor(
        rubric_frame,
        key=f"{key}.rubric",
        num_rows="dynamic",
        hide_index=True,
        width="stretch",
        column_config={
            "name": st.column_config.TextColumn("Dimension", required=True),
            "question": st.column_config.TextColumn("Question", width="large"),
            "min": st.column_config.NumberColumn("Min", step=1, format="%d", required=True),
            "max": st.column_config.NumberColumn("Max", step=1, format="%d", required=True),
            "labels": st.column_config.TextColumn("Scale labels", width="large"),
        },
    )
    tags = st.text_input("Tags (comma-separated)", value=", ".join(project.tags if project else DEFAULT_TAGS), key=f"{key}.tags")

    a, b, d, e = st.columns(4)
    overlap = a.number_input("Overlap (annotators per task)", min_value=1, max_value=100, value=project.overlap if project else 3, step=1, key=f"{key}.overlap")
    max_overlap = b.number_input(
        "Max overlap (with extra votes)", min_value=1, max_value=100, value=project.max_overlap if project else 3, step=1, key=f"{key}.max_overlap", help="Tasks with low agreement may get extra votes up to this."
    )
    gold_rate = d.number_input("Gold rate", min_value=0.0, max_value=0.99, value=float(project.gold_rate) if project else 0.0, step=0.05, key=f"{key}.gold_rate", help="Share of handed-out tasks that are gold (known answer).")
    lease_minutes = e.number_input("Lease (minutes)", min_value=1, max_value=24 * 60, value=project.lease_minutes if project else 10, step=1, key=f"{key}.lease")
    visibility = st.radio("Visibility", VISIBILITIES, index=VISIBILITIES.index(project.visibility) if project else 0, format_func=VISIBILITY_LABELS.get, key=f"{key}.visibility")
    active = st.checkbox("Open for annotation", value=project.active if project else True, key=f"{key}.active") if project else True
    rank_range = ranking_range(project, key)
    selection = selection_panel(engine, project, key) if project else None
    judge_uses = judge_uses_panel(project, key) if project else None

    if not st.button("Save project" if project else "Create project", type="primary", key=f"{key}.save", icon=":material/save:"):
        return
    try:
        settings = dict(
            description=description,
            guidelines=guidelines,
            rubric=rows_to_rubric(edited.to_dict("records")),
            tags=parse_tags(tags),
            overlap=int(overlap),
            max_overlap=int(max_overlap),
            gold_rate=float(gold_rate),
            visibility=visibility,
            lease_minutes=int(lease_minutes),
            rank_k_min=rank_range[0],
            rank_k_max=rank_range[1],
        )
        if project is None:
            saved = create_project(engine, user, name, **settings)
            st.session_state["projects.select_next"] = saved.id
            c.flash(f"Created project {saved.name!r}.")
        else:
            saved = update_project(engine, user, project.id, name=name, active=active, selection=selection, judge_uses=judge_uses, **settings)
            c.flash(f"Saved project {saved.name!r}.")
    except (FormError, ProjectValidationError) as exc:
        c.show_error(exc)
        return
    st.rerun()


def ranking_range(project, key: str) -> tuple:
    """Collect rankings (K replies per prompt ordered on the Rank page): off, or K from … to … (3–9)."""
    on = st.checkbox("Collect rankings", value=project is not None and project.rank_k_min is not None, key=f"{key}.rankings",
                     help="Imports make one ranking task per prompt whose reply count is in the range.")  # fmt: skip
    if not on:
        return (None, None)
    low_col, high_col = st.columns(2)
    low = low_col.number_input("Fewest replies (K)", min_value=3, max_value=9, value=(project.rank_k_min or 4) if project else 4, step=1, key=f"{key}.rank_k_min")
    high = high_col.number_input("Most replies (K)", min_value=3, max_value=9, value=(project.rank_k_max or 4) if project else 4, step=1, key=f"{key}.rank_k_max")
    return (int(low), int(high))
def judge_uses_panel(project, key: str) -> dict[str, bool]:
    """Uses of a judge's verdicts, each off until switched on here (or with `rlhf project update --judge-...`)."""
    from rlhf.projects import validate_judge_uses

    from labeling_app.admin_forms import JUDGE_USE_LABELS

    current = validate_judge_uses(project.judge_uses)
    st.markdown("**Judge uses** — each off by default")
    return {use: st.checkbox(label, value=current[use], key=f"{key}.judge_uses.{use}", help=help)
            for use, (label, help) in JUDGE_USE_LABELS.items()}


def selection_panel(engine, project, key: str) -> str:
    """The project's selection strategy (a choice) and what the background scoring last said."""
    from rlhf.schema import SELECTION_STRATEGIES
    from rlhf.selection.scores import selection_status

    current = project.selection if project.selection in SELECTION_STRATEGIES else SELECTION_STRATEGIES[0]
    choice = st.selectbox(
        "Selection (which task goes next)", SELECTION_STRATEGIES, index=SELECTION_STRATEGIES.index(current), format_func=SELECTION_LABELS.get,
        key=f"{key}.selection", help="Scored in the background by a select-scores job; least-annotated order is kept until scores exist.",
    )
    status = selection_status(engine, project.id)
    if status.fallback:
        st.warning(f"Selection {status.selection} is not in force: {status.note}", icon=":material/info:")
    elif status.applied is not None:
        st.caption(f"Order in force: {status.applied}, {status.scored_tasks} task(s) ranked at {status.computed_at:%Y-%m-%d %H:%M} UTC. {status.note}")
    if status.stale:
        st.caption(f"Scores out of date ({status.stale}); a worker re-scores them.")
    return choice


def main() -> None:
    user = c.require_role("admin")
    engine = c.get_engine()
    from rlhf.projects import list_projects

    st.subheader("Projects")
    projects = list_projects(engine)
    if projects:
        overview(engine, projects)
    by_id = {p.id: p for p in projects}
    options = [NEW] + list(by_id)
    chosen = st.session_state.pop("projects.select_next", None)
    if chosen in options:
        st.session_state["projects.selected"] = chosen
    if st.session_state.get("projects.selected") not in options:
        st.session_state["projects.selected"] = c.current_project_id() if c.current_project_id() in by_id else NEW
    selected = st.selectbox(
        "Edit", options, key="projects.selected", format_func=lambda pid: "➕ New project" if pid == NEW else by_id[pid].name
    )
    with st.container(border=True):
        editor(engine, user, by_id.get(selected))


main()
