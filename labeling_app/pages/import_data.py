"""Import (admin): upload prompts and model responses (optionally preference labels) into a project.

The upload is written to a temporary file and handed to the same importer as `rlhf import`
(`rlhf.importer.import_file`): one transaction, so a bad line imports nothing; errors name
the file, line and field. Uploads above the limit are refused by the browser widget and again
by the importer (`max_bytes`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import streamlit as st

from labeling_app import common as c
from labeling_app.admin_forms import import_error_text

UPLOAD_LIMIT_ENV = "RLHF_UPLOAD_MAX_MB"
DEFAULT_UPLOAD_LIMIT_MB = 200
FILE_TYPES = ["jsonl", "json", "csv", "parquet", "arrow"]
RESULT = "import.result"


def upload_limit_mb() -> int:
    """Largest upload in MB (`$RLHF_UPLOAD_MAX_MB`, default 200)."""
    try:
        return max(1, int(os.environ.get(UPLOAD_LIMIT_ENV, DEFAULT_UPLOAD_LIMIT_MB)))
    except ValueError:
        return DEFAULT_UPLOAD_LIMIT_MB


def run_import(user, upload, project: str, options: dict) -> tuple[bool, str, dict]:
    """Write the upload to a temp file (same suffix, so the format is detected) and import it.

    Returns (ok, message, counts). The temp file is removed whatever happens.
    """
    from rlhf.importer import ImportFormatError, import_file
    from rlhf.projects import ProjectValidationError
    from rlhf.roles import PermissionDenied

    suffix = Path(upload.name).suffix.lower() or ".jsonl"
    handle, temp_path = tempfile.mkstemp(prefix="rlhf-upload-", suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(upload.getbuffer())
        summary = import_file(c.get_engine(), temp_path, project, max_bytes=upload_limit_mb() * 1024 * 1024, actor=user, **options)
    except ImportFormatError as exc:
        return False, import_error_text(str(exc), temp_path, upload.name), {}
    except (ProjectValidationError, PermissionDenied) as exc:
        return False, str(exc), {}
    finally:
        Path(temp_path).unlink(missing_ok=True)
    line = import_error_text(summary.line(), temp_path, upload.name)
    return True, line, summary.counts()


def show_result() -> None:
    result = st.session_state.get(RESULT)
    if result is None:
        return
    ok, message, counts = result
    if ok:
        st.success(c.safe_markdown(message), icon=":material/check_circle:")
        if counts:
            st.dataframe({"what": list(counts), "count": list(counts.values())}, hide_index=True)
    else:
        st.error(f"Nothing was imported. {c.safe_markdown(message)}", icon=":material/error:")


def main() -> None:
    user = c.require_role("admin")
    st.subheader("Import prompts and responses")
    st.caption(
        "Accepted: JSONL / JSON / CSV / Parquet / Arrow with (a) `prompt` + `responses` [{text, model}], "
        "(b) one row per `prompt`, `response`, `model`, (c) TRL preference rows `prompt` / `chosen` / `rejected`, "
        "or (d) `prompt` alone (+ `category`, `meta`): write tasks, where annotators write the reply "
        "(projects collecting write also get a write task per prompt, pre-filled with its first response). "
        "Importing the same file twice adds nothing."
    )
    projects = c.visible_projects(user)
    current = next((p.name for p in projects if p.id == c.current_project_id()), "")
    with st.form("import.form", border=True):
        project = st.text_input("Project (created if new)", value=current, key="import.project", max_chars=200)
        limit = upload_limit_mb()
        upload = st.file_uploader(f"File (up to {limit} MB)", type=FILE_TYPES, key="import.file", max_upload_size=limit)
        a, b, d = st.columns(3)
        max_pairs = a.number_input("Pairs per prompt (0 = none)", min_value=0, max_value=1000, value=6, step=1, key="import.max_pairs")
        round_ = b.number_input("Round", min_value=0, max_value=10_000, value=0, step=1, key="import.round", help="Recorded on the responses (which generation round they come from).")
        as_labels = d.text_input("Store preference rows as labels from", value="", key="import.as_labels", help="The name of an external label source (e.g. the dataset's name); leave empty to import texts only.")
        make_ratings = st.checkbox("Create a rating task for every response", value=True, key="import.ratings")
        submitted = st.form_submit_button("Import", type="primary", icon=":material/upload:")
    if submitted:
        if upload is None or not project.strip():
            st.session_state[RESULT] = (False, "Choose a project and a file first.", {})
        else:
            options = {
                "max_pairs_per_prompt": int(max_pairs),
                "round": int(round_),
                "make_rating_tasks": bool(make_ratings),
                "as_labels": as_labels.strip() or None,
            }
            with st.spinner(f"Importing {upload.name}…"):
                st.session_state[RESULT] = run_import(user, upload, project.strip(), options)
    show_result()


main()
