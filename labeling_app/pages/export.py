"""Export (admin): write the project's judgments as training data with `rlhf.export.export_project` (same as `rlhf export`)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import streamlit as st

from labeling_app import common as c

FORMAT_HELP = {
    "trl": "trl — prompt / chosen / rejected pairs for TRL's RewardTrainer and DPOTrainer",
    "ratings": "ratings — mean and spread per rated response",
    "raw": "raw — every annotation, annotators pseudonymised",
    "sft": "sft — demonstrations (write tasks) as TRL conversational rows for SFTTrainer",
}
# Offer a download button for exports up to this size (larger ones: use the path on the server).
DOWNLOAD_LIMIT_BYTES = 50 * 1024 * 1024


def default_output(project_name: str, fmt: str, suffix: str) -> str:
    """data/artifacts/exports/<project>-<format>-<UTC time><suffix> (a fresh name each time)."""
    from rlhf.db import data_dir

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in project_name)[:60] or "project"
    return str(data_dir() / "artifacts" / "exports" / f"{safe}-{fmt}-{stamp}{suffix}")


def main() -> None:
    user = c.require_role("admin")
    project_id = c.require_project()
    engine = c.get_engine()
    from rlhf.export import AGGREGATIONS, EXPORT_FORMATS, ExportError, ExportOptions, export_project
    from rlhf.projects import get_project

    project = get_project(engine, project_id)
    st.subheader(f"Export {project.name}")
    with st.form("export.form", border=True):
        fmt = st.radio("Format", EXPORT_FORMATS, format_func=FORMAT_HELP.get, key="export.format")
        suffix = st.radio("File", [".jsonl", ".parquet", " (datasets directory)"], horizontal=True, key="export.suffix")
        a, b, d = st.columns(3)
        aggregate = a.selectbox("Aggregate votes by", AGGREGATIONS, key="export.aggregate")
        min_votes = b.number_input("Min votes per pair", min_value=1, value=1, step=1, key="export.min_votes")
        test_size = d.number_input("Test share (of prompts)", min_value=0.0, max_value=0.9, value=0.1, step=0.05, key="export.test_size")
        keep_ties = st.checkbox("Keep ties and both-bad pairs", key="export.keep_ties")
        from_ratings = st.checkbox("trl: build pairs from ratings instead of comparisons", key="export.from_ratings")
        # The label the backend's "nothing usable" message names (rlhf.export.INCLUDE_EXTERNAL_HINT).
        include_external = st.checkbox(
            "Include external labels", help="Labels from external sources (imported datasets, model judges); people's labels only by default.",
            key="export.include_external",
        )
        include_edits = st.checkbox("trl: add edited ≻ original pairs from substantive edits of model replies", key="export.include_edits")
        e, f = st.columns(2)
        sft_shape = e.radio("sft: rows as", ["messages", "prompt-completion"], horizontal=True, key="export.sft_shape")
        min_review = f.number_input("sft: min review score (0 keeps all)", min_value=0.0, value=0.0, step=0.5, key="export.min_review_score")
        submitted = st.form_submit_button("Export", type="primary", icon=":material/download:")
    if not submitted:
        return
    out = default_output(project.name, fmt, suffix if suffix.startswith(".") else "")
    options = ExportOptions(
        aggregate=aggregate, min_votes=int(min_votes), test_size=float(test_size), keep_ties=keep_ties, from_ratings=from_ratings,
        include_external=include_external, include_edits=include_edits, sft_shape=sft_shape,
        min_review_score=float(min_review) if min_review else None,
    )
    try:
        with st.spinner("Exporting…"):
            manifest = export_project(engine, user, project_id, format=fmt, out=out, options=options)
    except (ExportError, PermissionError, LookupError) as exc:
        c.show_error(exc)
        return
    st.success(f"Exported {manifest.rows} rows ({manifest.split_counts}) to `{manifest.path}`")
    st.caption(f"content hash {manifest.content_hash[:16]}… · artifact {manifest.artifact_id}")
    path = Path(manifest.path)
    if path.is_file() and path.stat().st_size <= DOWNLOAD_LIMIT_BYTES:
        st.download_button("Download", data=path.read_bytes(), file_name=path.name, icon=":material/download:")


main()
