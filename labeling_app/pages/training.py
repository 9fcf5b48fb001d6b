"""Training (admin): queue training, generation and export jobs, watch them live, follow artifacts' lineage, compare reward models.

A thin page over `rlhf.jobs` and `rlhf.job_kinds` (the calls behind `rlhf job submit|list|show|cancel`):
- New job: one form per job kind, generated from `describe_kinds()` (types, defaults, help and
  choices); fields that name an export, reward model or policy list the recorded artifacts of
  that kind; `InvalidJobParams` from `submit_job` is shown in the form; unavailable kinds are
  shown disabled with the reason.
- Jobs: a fragment that re-runs itself every REFRESH_RUNNING_S while a job runs
  (REFRESH_QUEUED_S while jobs only wait) and not at all when nothing is queued or running; it
  shows progress, status, message, elapsed time, a cancel button, and the error
  and traceback of a failed job. The shown job's metric charts (loss, accuracy, KL, score), log
  tail and the list of jobs are a second fragment, redrawn every REFRESH_DETAILS_S.
- Artifacts: each artifact's lineage as a chain (export → reward model → policy → generated round).
- Reward models: two models' held-out accuracy side by side, each next to its human-agreement ceiling.

How fresh is the progress shown: a job's child writes its state at most every
`WorkerConfig.report_interval_s` (0.5 s) and the status fragment reads it every
REFRESH_RUNNING_S (1 s), so what the page shows is at most 1.5 s old plus one fragment run
(three small queries, ~20-80 ms of CPU) and the browser's redraw. Measured in headless Chromium
(`tests/app/test_training.py`, the browser test: the worker's own DatabaseReporter, 80 steps of
0.1 s): the bar changed every 0.9-1.1 s and the shown step was at most 2.2-3.0 s old, in 4 of
5 runs on a 2-core machine at load 8-13 (the fifth: every 2.3 s, 4.2 s old, while the browser
spent 6.8 of the 8 s in long tasks).

Pure helpers (form values, metric groups, lineage layers, the comparison table) sit above the
Streamlit code; `main()` runs only when Streamlit runs this file, so tests can import them.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, NamedTuple, Optional

import altair as alt
import pandas as pd
import streamlit as st

from labeling_app import common as c

if TYPE_CHECKING:  # type names only
    from sqlalchemy.engine import Engine

    from rlhf.schema import Artifact, Job, User

# While a job runs, the jobs view re-reads the database this often (seconds).
REFRESH_RUNNING_S = 1.0
# While jobs only wait for a worker, a slower look is enough to notice the start.
REFRESH_QUEUED_S = 2.0
# While jobs are active, the shown job's charts, log and the job list are redrawn this often (seconds).
REFRESH_DETAILS_S = 3.0
# Jobs listed (newest first); the log lines and artifacts shown.
JOBS_SHOWN = 50
LOG_LINES_SHOWN = 20
ARTIFACTS_SHOWN = 100
# Kinds in the order the form offers them; kinds not named here follow, sorted.
KIND_ORDER = ("train-reward", "ppo", "dpo", "generate", "export", "sft")
# Fields shown first in each kind's form; the others go under "Advanced settings".
MAIN_FIELDS = {
    "train-reward": (
        "export_artifact_id", "data", "base_model", "load_in_4bit", "max_steps", "num_epochs", "learning_rate", "batch_size", "max_length",
        "listwise", "objective", "dimension_weights", "off_prompt_pairs", "average_weights_from",
        "prompt_similarity", "reply_redundancy", "preference_head", "refit_features",
    ),
    "ppo": ("reward_artifact_id", "reward", "policy_artifact_id", "policy", "prompts", "load_in_4bit", "total_iterations", "batch_size", "response_length", "learning_rate", "kl_coef"),
    "dpo": ("export_artifact_id", "data", "policy_artifact_id", "policy", "load_in_4bit", "beta", "max_steps", "num_epochs", "learning_rate", "batch_size"),
    "generate": ("policy_artifact_id", "policy", "round", "n", "temperatures", "max_new_tokens", "limit"),
    "export": ("format", "output", "aggregate", "min_votes", "test_size"),
    "sft": ("export_artifact_id", "data", "policy_artifact_id", "policy", "method", "optim", "max_steps", "num_epochs", "learning_rate", "batch_size", "max_length"),
}
# Param fields that name a recorded artifact, and the artifact kind each takes.
ARTIFACT_FIELDS = {"export_artifact_id": "export", "reward_artifact_id": "reward_model", "policy_artifact_id": "policy"}
# Artifact fields whose form preselects the newest artifact (their alternative field is empty by default).
PRESELECT_NEWEST = {"ppo": ("reward_artifact_id",), "generate": ("policy_artifact_id",)}
ARTIFACT_KIND_LABEL = {"export": "export", "reward_model": "reward model", "policy": "policy", "generation": "generated round"}
STATUS_BADGE = {"queued": ("gray", "⏳"), "running": ("blue", "▶"), "done": ("green", "✔"), "failed": ("red", "✖"), "cancelled": ("orange", "■")}
# Metric charts: a metric goes to the first group one of whose words its name contains.
METRIC_GROUPS = (
    ("Loss", ("loss",)),
    ("Accuracy", ("accurac",)),
    ("KL", ("kl",)),
    ("Score / reward", ("score", "reward")),
)
# The reward-model comparison: (key in the held-out metrics, row label).
COMPARED_METRICS = (
    ("accuracy", "Held-out accuracy"),
    ("human_agreement", "Human agreement (ceiling)"),
    ("ece", "Calibration error (ECE)"),
    ("mean_margin", "Mean margin r(chosen) − r(rejected)"),
    ("pairs", "Held-out pairs"),
)

# Session-state keys of this page.
KIND = "training.kind"
FORM_ERROR = "training.form_error"
SELECTED_JOB = "training.job"
SELECTED_ARTIFACT = "training.artifact"
MODEL_A = "training.model_a"
MODEL_B = "training.model_b"


# ---------------------------------------------------------------------------- pure helpers


class FormError(ValueError):
    """A form value cannot be read as its field's type; the message names the field."""


def ordered_kinds(names: Iterable[str]) -> list[str]:
    """Kind names in KIND_ORDER first, then the rest sorted."""
    names = list(names)
    return [k for k in KIND_ORDER if k in names] + sorted(k for k in names if k not in KIND_ORDER)


def field_key(kind: str, name: str) -> str:
    return f"training.field.{kind}.{name}"


def split_type(type_text: str) -> tuple[str, bool]:
    """`describe()`'s type words → (the type without None, whether None is allowed): "integer | None" → ("integer", True)."""
    if type_text.endswith(" | None"):
        return type_text[: -len(" | None")], True
    return type_text, False


def widget_kind(param: Mapping[str, Any]) -> str:
    """Which input a param gets: artifact, choice, bool, optional_bool, int, float, list, mapping or text."""
    if param["name"] in ARTIFACT_FIELDS:
        return "artifact"
    if param.get("choices"):
        return "choice"
    base, optional = split_type(param["type"])
    if base == "true/false":
        return "optional_bool" if optional else "bool"
    if base == "integer":
        return "int"
    if base == "number":
        return "float"
    if base.startswith("list of"):
        return "list"
    if base == "mapping":
        return "mapping"
    return "text"  # text, path, and unions such as "text | list of text" (text is accepted)


def float_step(default: Any) -> float:
    """A number input's step: the order of magnitude of its default (1e-4 for 0.0001), 0.1 without one."""
    if isinstance(default, (int, float)) and not isinstance(default, bool) and default and math.isfinite(default):
        return 10.0 ** math.floor(math.log10(abs(float(default))))
    return 0.1


def parse_list(text: Any, item_type: str, name: str) -> list[Any]:
    """A comma-separated cell → a list of numbers or texts ("0.7, 1.0" → [0.7, 1.0]); FormError names the field."""
    if isinstance(text, list):
        return text
    items = [part.strip() for part in str(text or "").split(",") if part.strip()]
    if item_type == "text":
        return items
    number = int if item_type == "integer" else float
    try:
        return [number(item) for item in items]
    except ValueError:
        raise FormError(f"field {name!r}: {text!r} is not a comma-separated list of {'integers' if number is int else 'numbers'}") from None


def form_value(param: Mapping[str, Any], raw: Any) -> Any:
    """The value of one param from its widget's raw value (text cells parsed); FormError names the field.

    Blank text is None for an optional field and "" otherwise; a required field left blank is
    an error here (the backend would say the same, less clearly).
    """
    name = param["name"]
    kind = widget_kind(param)
    base, optional = split_type(param["type"])
    if kind in ("text", "list", "mapping") and isinstance(raw, str) and not raw.strip():
        raw = None if (optional or param.get("required")) else ("" if kind == "text" else raw)
    if raw is None:
        if param.get("required"):
            raise FormError(f"field {name!r} is required")
        return None
    if kind == "list":
        return parse_list(raw, base[len("list of ") :], name)
    if kind == "mapping":
        if isinstance(raw, dict):
            return raw
        try:
            value = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError as exc:
            raise FormError(f"field {name!r}: not JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(value, dict):
            raise FormError(f'field {name!r}: expected a JSON object such as {{"min_votes": 2}}')
        return value
    return raw


def form_params(params: Sequence[Mapping[str, Any]], raw: Mapping[str, Any]) -> dict[str, Any]:
    """Every field's value from the form's raw values (missing ones: the field's default)."""
    return {p["name"]: form_value(p, raw[p["name"]]) if p["name"] in raw else p.get("default") for p in params}


def text_default(param: Mapping[str, Any]) -> str:
    """A text cell's initial content: the default as the user would type it."""
    default = param.get("default")
    if default is None:
        return ""
    if widget_kind(param) == "list":
        return ", ".join(str(v) for v in default)
    if widget_kind(param) == "mapping":
        return json.dumps(default)
    if isinstance(default, list):  # a "text | list of text" default given as a list
        return ",".join(str(v) for v in default)
    return str(default)


def split_fields(kind: str, params: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(main, advanced) fields in their order: required fields and the kind's MAIN_FIELDS are main; all are main for other kinds."""
    if kind not in MAIN_FIELDS:
        return list(params), []
    main = [p for p in params if p.get("required") or p["name"] in MAIN_FIELDS[kind]]
    return main, [p for p in params if p not in main]


_FIELD_IN_MESSAGE = re.compile(r"field '([A-Za-z_][A-Za-z0-9_]*)'")


def error_field(message: str) -> Optional[str]:
    """The field an error message names ("generate: field 'round' must be ..." → "round"), or None."""
    found = _FIELD_IN_MESSAGE.search(message or "")
    return found.group(1) if found else None


def refresh_interval(statuses: Iterable[str]) -> Optional[float]:
    """Seconds between re-reads of the jobs view: REFRESH_RUNNING_S while one runs, REFRESH_QUEUED_S while some wait, else None."""
    statuses = set(statuses)
    if "running" in statuses:
        return REFRESH_RUNNING_S
    if "queued" in statuses:
        return REFRESH_QUEUED_S
    return None


def as_utc(moment: Optional[datetime]) -> Optional[datetime]:
    """A timestamp as aware UTC (a naive one read back from a database is UTC)."""
    if moment is None:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def elapsed_s(job: Any, now: datetime) -> Optional[float]:
    """Seconds a job has run (start to finish, or to `now`); for a queued job, how long it has waited."""
    started, finished, created = as_utc(job.started_at), as_utc(job.finished_at), as_utc(job.created_at)
    if started is not None:
        return max(0.0, ((finished or now) - started).total_seconds())
    if job.status == "queued" and created is not None:
        return max(0.0, (now - created).total_seconds())
    return None


def format_duration(seconds: Optional[float]) -> str:
    """12 s, 3 min 05 s, 2 h 07 min; "—" for None."""
    if seconds is None:
        return "—"
    whole = int(seconds)
    if whole < 60:
        return f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def metric_group(name: str) -> Optional[str]:
    """The chart a metric is drawn in (METRIC_GROUPS), or None (listed in the table only)."""
    lowered = name.lower()
    for group, words in METRIC_GROUPS:
        if any(word in lowered for word in words):
            return group
    return None


def chart_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """`metrics_long` rows → the charted points (step, metric, value, group), groups in METRIC_GROUPS order.

    Metrics in no group, and non-numeric values (None where a value was NaN: a gap in the line),
    are left out.
    """
    frame = pd.DataFrame(list(rows), columns=["step", "metric", "value", "created_at"])
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    frame = frame[frame["value"].notna()].assign(group=frame["metric"].map(metric_group))
    frame = frame[frame["group"].notna()]
    rank = {group: i for i, (group, _words) in enumerate(METRIC_GROUPS)}
    frame = frame.sort_values(["group", "step"], key=lambda column: column.map(rank) if column.name == "group" else column, kind="stable")
    return frame[["step", "metric", "value", "group"]].reset_index(drop=True)


def latest_values(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The last reported value of every metric (metric, step, value), sorted by name."""
    frame = pd.DataFrame(list(rows), columns=["step", "metric", "value", "created_at"])
    if frame.empty:
        return pd.DataFrame(columns=["metric", "step", "value"])
    last = frame.groupby("metric", sort=True).tail(1).sort_values("metric")
    return last[["metric", "step", "value"]].reset_index(drop=True)


def lineage_layers(chain: Sequence[Any]) -> list[list[Any]]:
    """`artifact_lineage` (the artifact, then its ancestors breadth-first) → layers, oldest first.

    Layer k from the end holds the ancestors k steps away from the artifact (the shortest way
    through `parent_ids`), so a straight line export → reward model → policy → round is one
    artifact per layer, and a policy built from a reward model and a starting policy shows both
    in the layer before it. Parents not in `chain` are ignored.
    """
    if not chain:
        return []
    by_id = {a.id: a for a in chain}
    distance = {chain[0].id: 0}
    frontier = [chain[0].id]
    while frontier:
        following = []
        for artifact_id in frontier:
            for parent in by_id[artifact_id].parent_ids or []:
                parent = int(parent)
                if parent in by_id and parent not in distance:
                    distance[parent] = distance[artifact_id] + 1
                    following.append(parent)
        frontier = following
    depth = max(distance.values())
    layers: list[list[Any]] = [[] for _ in range(depth + 1)]
    for artifact in chain:
        if artifact.id in distance:
            layers[depth - distance[artifact.id]].append(artifact)
    return layers


def artifact_token(artifact: Any) -> str:
    """"**reward model** #5 `3f2a…`" (markdown; the hash as code)."""
    label = ARTIFACT_KIND_LABEL.get(artifact.kind) or c.safe_markdown(artifact.kind)
    digest = f" `{artifact.content_hash[:12]}`" if artifact.content_hash else ""
    return f"**{label}** #{artifact.id}{digest}"


def chain_markdown(layers: Sequence[Sequence[Any]]) -> str:
    """Layers as one line: "**export** #1 `ab12…` → **reward model** #2 … → **generated round** #4"."""
    return " → ".join(" + ".join(artifact_token(a) for a in layer) for layer in layers)


def held_out_metrics(metrics: Optional[Mapping[str, Any]]) -> dict[str, Any]:
    """A reward model artifact's held-out figures (`metrics["held_out"]`; a flat dict is taken as is)."""
    metrics = metrics or {}
    held_out = metrics.get("held_out")
    return dict(held_out) if isinstance(held_out, Mapping) else dict(metrics)


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def comparison_rows(models: Sequence[tuple[str, Optional[Mapping[str, Any]]]]) -> list[dict[str, Any]]:
    """One row per COMPARED_METRICS entry plus "Accuracy ÷ ceiling": {"metric": label, <model label>: value or None}.

    `models` are (column label, the artifact's metrics). Accuracy ÷ ceiling is how much of the
    human agreement the model reaches (1.0: as often right as one annotator agrees with the label).
    """
    held = [(label, held_out_metrics(metrics)) for label, metrics in models]
    rows = []
    for key, title in COMPARED_METRICS:
        rows.append({"metric": title, **{label: _number(values.get(key)) for label, values in held}})
    ratio = {}
    for label, values in held:
        accuracy, ceiling = _number(values.get("accuracy")), _number(values.get("human_agreement"))
        ratio[label] = accuracy / ceiling if accuracy is not None and ceiling else None
    rows.insert(2, {"metric": "Accuracy ÷ ceiling", **ratio})
    return rows + evaluation_rows(held)


def evaluation_rows(held: Sequence[tuple[str, Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """Rows beyond pair accuracy, where any model has them: accuracy by pair strength beside its ceiling, and the
    correlation with held-out ratings (overall, then per dimension) beside the leave-one-out ceiling."""
    def lookup(values: Mapping[str, Any], *path: str) -> Optional[float]:
        for key in path:
            values = values.get(key) if isinstance(values, Mapping) else None
        return _number(values)

    paths = [
        (f"Accuracy, {words} pairs", ("by_strength", bucket, "accuracy")) for bucket, words in (("much_better", "much better"), ("better", "better"))
    ] + [(f"Human agreement, {words} pairs", ("by_strength", bucket, "human_agreement")) for bucket, words in (("much_better", "much better"), ("better", "better"))]
    paths += [("Correlation with held-out ratings (reward)", ("ratings", "overall", "pearson")), ("Ratings ceiling (one annotator vs the others)", ("ratings", "overall", "ceiling"))]
    dimensions = sorted({d for _, values in held for d in ((values.get("ratings") or {}).get("dimensions") or {})})
    for dimension in dimensions:
        paths += [(f"Correlation, {dimension}", ("ratings", "dimensions", dimension, "pearson")), (f"Ceiling, {dimension}", ("ratings", "dimensions", dimension, "ceiling"))]
    rows = []
    for title, path in paths:
        row = {label: lookup(values, *path) for label, values in held}
        if any(v is not None for v in row.values()):
            rows.append({"metric": title, **row})
    return rows


def comparison_frame(models: Sequence[tuple[str, Optional[Mapping[str, Any]]]]) -> pd.DataFrame:
    """Long rows (model, measure, value) of held-out accuracy and human agreement, for the bar chart."""
    records = []
    for label, metrics in models:
        values = held_out_metrics(metrics)
        for key, measure in (("accuracy", "held-out accuracy"), ("human_agreement", "human agreement (ceiling)")):
            number = _number(values.get(key))
            if number is not None:
                records.append({"model": label, "measure": measure, "value": number})
    return pd.DataFrame(records, columns=["model", "measure", "value"])


# ------------------------------------------------------------------------- backend lookups


@st.cache_resource(show_spinner="Reading the job kinds…")
def kind_descriptions(kind_modules: str) -> dict[str, dict[str, Any]]:
    """`describe_kinds()` once per server and `$RLHF_JOB_KIND_MODULES` (it imports the backends' config classes)."""
    from rlhf.job_kinds import describe_kinds

    return describe_kinds()


def current_kinds() -> dict[str, dict[str, Any]]:
    from rlhf.job_kinds import KIND_MODULES_ENV

    return kind_descriptions(os.environ.get(KIND_MODULES_ENV, ""))


def project_names(user: "User") -> dict[int, str]:
    return {p.id: p.name for p in c.visible_projects(user)}


def artifact_label(artifact: "Artifact", projects: Mapping[int, str]) -> str:
    """"#5 reward-demo · demo · 3f2a9c1b0d4e · 2025-01-31 12:00" (plain text, for select boxes)."""
    parts = [f"#{artifact.id} {artifact.name}"]
    if artifact.project_id in projects:
        parts.append(projects[artifact.project_id])
    if artifact.content_hash:
        parts.append(artifact.content_hash[:12])
    created = as_utc(artifact.created_at)
    if created is not None:
        parts.append(f"{created:%Y-%m-%d %H:%M}")
    return " · ".join(parts)


# --------------------------------------------------------------------------------- callbacks


def _admin() -> Optional["User"]:
    user = c.signed_in_user()
    if not c.is_admin(user):
        c.flash("Only admins run jobs.", "error")
        return None
    return user


def submit(kind: str, params: list[dict[str, Any]], project_id: Optional[int]) -> None:
    """Form callback: read the fields, queue the job; an error (naming the field) stays next to the form."""
    from rlhf.job_kinds import load_registry
    from rlhf.jobs import JobError, submit_job
    from rlhf.roles import PermissionDenied

    st.session_state.pop(FORM_ERROR, None)
    user = _admin()
    if user is None:
        return
    raw = {p["name"]: st.session_state.get(field_key(kind, p["name"])) for p in params}
    try:
        values = form_params(params, raw)
        job = submit_job(c.get_engine(), user, kind, values, project=project_id, registry=load_registry())
    except (FormError, JobError, PermissionDenied) as exc:
        st.session_state[FORM_ERROR] = {"kind": kind, "message": str(exc)}
        return
    st.session_state[SELECTED_JOB] = job.id
    c.flash(f"Queued job #{job.id} ({kind}).")


def cancel(job_id: int) -> None:
    """Cancel button: a queued job is cancelled at once, a running one is asked to stop."""
    from rlhf.jobs import JobError, cancel_job
    from rlhf.roles import PermissionDenied

    user = _admin()
    if user is None:
        return
    try:
        job = cancel_job(c.get_engine(), user, job_id)
    except (JobError, PermissionDenied) as exc:
        c.flash(f"Not cancelled: {exc}", "error")
        return
    if job.status == "cancelled":
        c.flash(f"Job #{job_id} cancelled.", "info")
    elif job.status == "running":
        c.flash(f"Asked job #{job_id} to stop; it stops at its next safe point.", "info")
    else:
        c.flash(f"Job #{job_id} had already finished ({job.status}).", "info")


# ------------------------------------------------------------------------------ new-job form


def param_widget(kind: str, param: Mapping[str, Any], artifacts: Mapping[str, list["Artifact"]], projects: Mapping[int, str]) -> None:
    """One form input for `param`, keyed `field_key(kind, name)`; its value is read back in `submit`."""
    name, default = param["name"], param.get("default")
    key = field_key(kind, name)
    label = name + (" *" if param.get("required") else "")
    help_text = f"{param.get('help') or ''} ({param['type']})".strip()
    kind_of = widget_kind(param)
    if kind_of == "artifact":
        options = [a.id for a in artifacts.get(ARTIFACT_FIELDS[name], [])]
        labels = {a.id: artifact_label(a, projects) for a in artifacts.get(ARTIFACT_FIELDS[name], [])}
        index = 1 if options and name in PRESELECT_NEWEST.get(kind, ()) else 0
        none_label = f"none ({len(options)} recorded)" if options else f"none (no {ARTIFACT_KIND_LABEL[ARTIFACT_FIELDS[name]]} recorded yet)"
        st.selectbox(label, [None] + options, index=index, key=key, help=help_text, format_func=lambda i: none_label if i is None else labels[i])
    elif kind_of == "choice":
        choices = list(param["choices"])
        st.selectbox(label, choices, index=choices.index(default) if default in choices else 0, key=key, help=help_text)
    elif kind_of == "bool":
        st.checkbox(label, value=bool(default), key=key, help=help_text)
    elif kind_of == "optional_bool":
        words = {None: "auto", True: "yes", False: "no"}
        st.selectbox(label, [None, True, False], index=[None, True, False].index(default), key=key, help=help_text, format_func=words.get)
    elif kind_of == "int":
        st.number_input(label, value=None if default is None else int(default), step=1, format="%d", key=key, help=help_text, placeholder="none")
    elif kind_of == "float":
        st.number_input(
            label, value=None if default is None else float(default), step=float_step(default), format="%g", key=key, help=help_text, placeholder="none"
        )
    elif kind_of == "mapping":
        st.text_area(label, value=text_default(param), key=key, help=help_text + " — a JSON object", height=68)
    else:
        placeholder = "comma-separated" if kind_of == "list" else ("none" if split_type(param["type"])[1] else None)
        st.text_input(label, value=text_default(param), key=key, help=help_text, placeholder=placeholder)


def new_job_section(engine: "Engine", user: "User", project_id: Optional[int], projects: Mapping[int, str]) -> None:
    """The kind picker and the chosen kind's form (or why the kind cannot run here)."""
    from rlhf.jobs import list_artifacts

    st.subheader("New job")
    kinds = current_kinds()
    names = ordered_kinds(kinds)
    kind = st.selectbox(
        "Kind",
        names,
        key=KIND,
        format_func=lambda k: k if kinds[k]["available"] else f"{k} (not available)",
        on_change=lambda: st.session_state.pop(FORM_ERROR, None),
    )
    entry = kinds[kind]
    st.caption(entry["summary"])
    if not entry["available"]:
        st.warning(c.safe_markdown(entry.get("unavailable_reason") or "This kind cannot run here."), icon=":material/block:")
        st.button("Queue job", disabled=True, key="training.queue_disabled", icon=":material/play_arrow:")
        return
    project = projects.get(project_id) if project_id is not None else None
    st.caption(f"For project **{c.safe_markdown(project)}** (the sidebar's choice)." if project else "No project is selected: only kinds that need none can run.")
    params = entry["params"]
    wanted = {ARTIFACT_FIELDS[p["name"]] for p in params if p["name"] in ARTIFACT_FIELDS}
    artifacts = {artifact_kind: list_artifacts(engine, kind=artifact_kind, limit=ARTIFACTS_SHOWN) for artifact_kind in wanted}
    main_fields, advanced = split_fields(kind, params)
    error = st.session_state.get(FORM_ERROR)
    error = error["message"] if error and error.get("kind") == kind else None
    bad_field = error_field(error) if error else None
    with st.form(f"training.form.{kind}", border=True):
        for param in main_fields:
            param_widget(kind, param, artifacts, projects)
        if advanced:
            with st.expander(f"Advanced settings ({len(advanced)})", expanded=any(p["name"] == bad_field for p in advanced)):
                for param in advanced:
                    param_widget(kind, param, artifacts, projects)
        if error:
            st.error(c.safe_markdown(error), icon=":material/error:")
        st.form_submit_button("Queue job", type="primary", icon=":material/play_arrow:", on_click=submit, args=(kind, params, project_id))


# --------------------------------------------------------------------------------- jobs view


def jobs_section(engine: "Engine", user: "User", projects: Mapping[int, str]) -> None:
    """The job picker, then two fragments: the shown job's live status, and its charts, log and the job list.

    While jobs are active the status fragment (header, progress bar, elapsed time, cancel, error)
    re-runs every `refresh_interval` s and the details fragment every REFRESH_DETAILS_S: redrawing
    charts and tables costs the browser far more than a progress bar (measured on a loaded
    machine: with the charts in the 1 s fragment the bar changed every ~2.4 s, without them
    every ~0.9 s), so they refresh less often and the progress stays fresh. Neither re-runs while
    nothing is active: the browser stops asking.
    """
    from rlhf.jobs import ACTIVE_STATUSES, list_jobs

    st.subheader("Jobs")
    jobs = list_jobs(engine, user, limit=JOBS_SHOWN)
    # The form's callback ran before this script run, so a job it just queued is here already.
    active = list_jobs(engine, user, status=ACTIVE_STATUSES, limit=JOBS_SHOWN)
    interval = refresh_interval(j.status for j in active)
    if interval is not None:
        st.caption(f"Live: progress re-read every {interval:g} s, charts and log every {REFRESH_DETAILS_S:g} s while jobs are queued or running.")
    else:
        st.caption("Nothing is queued or running, so this view does not refresh by itself.")
        st.button("Refresh", key="training.refresh", icon=":material/refresh:")
    if not jobs:
        st.info("No jobs yet. Queue one with the form.")
        return
    by_id = {j.id: j for j in jobs}
    if st.session_state.get(SELECTED_JOB) not in by_id:
        running = [j for j in jobs if j.status == "running"]
        st.session_state[SELECTED_JOB] = (running or jobs)[0].id
    # Labels that never change: the browser keeps showing a chosen option's old label when only the label changes.
    job_id = st.selectbox("Job", list(by_id), key=SELECTED_JOB, format_func=lambda i: job_label(by_id[i], projects))
    view = LiveView(job_id=job_id, interval=interval, job_ids=tuple(by_id), active_ids=frozenset(j.id for j in active))
    st.fragment(run_every=interval)(live_status)(engine, view, projects)
    st.fragment(run_every=REFRESH_DETAILS_S if interval is not None else None)(live_details)(engine, job_id, projects)


class LiveView(NamedTuple):
    """What the last full run registered the fragments with. A status re-run that finds the jobs
    otherwise re-runs the whole page, which registers the fragments again (and refreshes the
    artifacts when a job has finished)."""

    job_id: int
    """The job shown (the picker is outside the fragments)."""
    interval: Optional[float]
    """The status fragment's `run_every` (None: it does not re-run by itself)."""
    job_ids: tuple[int, ...]
    """The jobs the picker offers, newest first: a new job must be offered."""
    active_ids: frozenset[int]
    """The jobs that were queued or running: one that finished may have recorded artifacts."""

    def outdated(self, jobs: Sequence["Job"], active: Sequence["Job"]) -> bool:
        """True when `jobs` (newest first) and `active` (queued or running) are not what the fragments were registered for."""
        return (
            refresh_interval(j.status for j in active) != self.interval
            or tuple(j.id for j in jobs) != self.job_ids
            or frozenset(j.id for j in active) != self.active_ids
        )


def live_status(engine: "Engine", view: LiveView, projects: Mapping[int, str]) -> None:
    """Fragment (every `view.interval` s): the shown job's status, progress bar, elapsed time, cancel button and error."""
    from rlhf.jobs import ACTIVE_STATUSES, list_jobs

    user = c.signed_in_user(touch=False)  # a page left open must not keep the session alive
    if not c.is_admin(user):
        st.rerun(scope="app")
    jobs = list_jobs(engine, user, limit=JOBS_SHOWN)
    if view.outdated(jobs, list_jobs(engine, user, status=ACTIVE_STATUSES, limit=JOBS_SHOWN)):
        st.rerun(scope="app")
    c.show_flash()  # messages from the cancel button (a fragment re-run skips the router)
    job_status(next(j for j in jobs if j.id == view.job_id), projects, datetime.now(timezone.utc))


def live_details(engine: "Engine", job_id: int, projects: Mapping[int, str]) -> None:
    """Fragment (every REFRESH_DETAILS_S s while jobs are active): the shown job's charts, log, params and artifacts; every job's row."""
    from rlhf.jobs import get_job, job_metrics, list_jobs, metrics_long

    user = c.signed_in_user(touch=False)
    if not c.is_admin(user):
        st.rerun(scope="app")
    rows = metrics_long(job_metrics(engine, job_id))
    if rows:
        metric_charts(rows)
    job_extras(engine, get_job(engine, job_id))
    st.markdown("**All jobs**")
    st.dataframe(jobs_table(list_jobs(engine, user, limit=JOBS_SHOWN), projects, datetime.now(timezone.utc)), hide_index=True, key="training.jobs_table", column_config=JOB_COLUMNS)


def job_label(job: "Job", projects: Mapping[int, str]) -> str:
    """"#3 train-reward · demo · 2025-01-31 12:00:05" (plain text, for the job picker)."""
    parts = [f"#{job.id} {job.kind}"]
    if job.project_id in projects:
        parts.append(projects[job.project_id])
    parts.append(f"{as_utc(job.created_at):%Y-%m-%d %H:%M:%S}")
    return " · ".join(parts)


JOB_COLUMNS = {
    "job": st.column_config.NumberColumn("Job", format="#%d"),
    "progress": st.column_config.ProgressColumn("Progress", min_value=0.0, max_value=1.0, format="percent"),
    "message": st.column_config.TextColumn("Message", width="large"),
}


def jobs_table(jobs: Sequence["Job"], projects: Mapping[int, str], now: datetime) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "job": j.id,
                "kind": j.kind,
                "status": j.status + (" (cancel requested)" if j.cancel_requested and j.status == "running" else ""),
                "progress": float(j.progress or 0.0),
                "project": projects.get(j.project_id, "—") if j.project_id is not None else "—",
                "elapsed": format_duration(elapsed_s(j, now)),
                "message": j.message,
                "created (UTC)": f"{as_utc(j.created_at):%Y-%m-%d %H:%M:%S}",
            }
            for j in jobs
        ]
    )


def job_status(job: "Job", projects: Mapping[int, str], now: datetime) -> None:
    """Header with the status, progress bar with the message, elapsed time, cancel button, error and traceback of one job."""
    color, icon = STATUS_BADGE.get(job.status, ("gray", "•"))
    project = projects.get(job.project_id) if job.project_id is not None else None
    st.markdown(
        f"#### Job #{job.id} · {c.safe_markdown(job.kind)} :{color}-badge[{icon} {job.status}]"
        + (f"\nProject **{c.safe_markdown(project)}**" if project else "")
    )
    progress = min(1.0, max(0.0, float(job.progress or 0.0)))
    st.progress(progress, text=f"{progress:.0%}" + (f" · {c.safe_markdown(job.message)}" if job.message else ""))
    a, b, d = st.columns(3)
    a.metric("Waiting" if job.status == "queued" else "Elapsed", format_duration(elapsed_s(job, now)))
    b.metric("Attempts", job.attempts)
    d.metric("Worker", job.worker_id or "—")
    if job.status in ("queued", "running"):
        if job.cancel_requested:
            st.caption("Cancel requested: the job stops at its next safe point (or is killed after the worker's grace period).")
        else:
            st.button("Cancel job", key=f"training.cancel.{job.id}", on_click=cancel, args=(job.id,), icon=":material/cancel:")
    if job.status == "failed":
        st.error(c.safe_markdown(job.error or "failed"), icon=":material/error:")
        if job.traceback:
            with st.expander("Traceback"):
                st.code(job.traceback, language="python")


def job_extras(engine: "Engine", job: "Job") -> None:
    """The log tail, the params and (once done) the artifacts of one job."""
    from rlhf.jobs import job_artifacts, job_log

    lines = job_log(engine, job.id)
    st.markdown(f"**Log** (the newest {min(len(lines), LOG_LINES_SHOWN)} lines)")
    st.code("\n".join(lines[-LOG_LINES_SHOWN:]) if lines else "(no log lines yet)", language=None)
    if len(lines) > LOG_LINES_SHOWN:
        with st.expander(f"The whole log tail kept with the job ({len(lines)} lines; the worker's log file has every line)"):
            st.code("\n".join(lines), language=None, height=400)
    with st.expander("Params"):
        st.json(job.params, expanded=True)
    if job.status == "done":
        produced = job_artifacts(engine, job.id)
        if produced:
            st.markdown("**Artifacts:** " + ", ".join(artifact_token(a) + f" {c.safe_markdown(a.name)}" for a in produced))


def metric_charts(rows: Sequence[Mapping[str, Any]]) -> None:
    """The metric groups (loss, accuracy, KL, score) as one faceted Altair chart; every metric's last value below."""
    frame = chart_frame(rows)
    if not frame.empty:
        st.altair_chart(metrics_chart(frame), key="training.metrics_chart")
    with st.expander("Latest value of every metric"):
        st.dataframe(latest_values(rows), hide_index=True, key="training.latest_metrics")


def metrics_chart(frame: pd.DataFrame) -> alt.FacetChart:
    """Value against step, a line per metric (with points, so a one-point series shows), a panel per group.

    One faceted chart rather than one chart per group: it re-renders every second while a job
    runs, and one chart costs the server (Altair → Vega-Lite) and the browser about half as much.
    """
    return (
        alt.Chart(frame)
        .mark_line(point=alt.OverlayMarkDef(size=14))
        .encode(
            x=alt.X("step:Q", title="step"),
            y=alt.Y("value:Q", title=None, scale=alt.Scale(zero=False)),
            color=alt.Color("metric:N", legend=alt.Legend(orient="bottom", title=None, columns=3)),
            tooltip=["metric:N", "step:Q", alt.Tooltip("value:Q", format=".4g")],
        )
        .properties(width=230, height=160)
        .facet(
            facet=alt.Facet("group:N", title=None, sort=list(dict.fromkeys(frame["group"])), header=alt.Header(labelFontWeight="bold", labelFontSize=13)),
            columns=2,
        )
        .resolve_scale(x="independent", y="independent")
    )


# ---------------------------------------------------------------------- artifacts and models


def artifacts_section(engine: "Engine", projects: Mapping[int, str]) -> None:
    """Every recorded artifact, and the chosen one's lineage as a chain."""
    from rlhf.jobs import artifact_lineage, list_artifacts

    artifacts = list_artifacts(engine, limit=ARTIFACTS_SHOWN)
    if not artifacts:
        st.info("No artifacts yet: a finished export, training or generation job records one.")
        return
    st.dataframe(
        pd.DataFrame([artifact_row(a, projects) for a in artifacts]),
        hide_index=True,
        key="training.artifacts_table",
        column_config=ARTIFACT_COLUMNS,
    )
    by_id = {a.id: a for a in artifacts}
    chosen = st.selectbox("Lineage of", list(by_id), key=SELECTED_ARTIFACT, format_func=lambda i: artifact_label(by_id[i], projects))
    chain = artifact_lineage(engine, chosen)
    st.markdown(chain_markdown(lineage_layers(chain)))
    st.dataframe(
        pd.DataFrame([artifact_row(a, projects) | {"built from": ", ".join(f"#{p}" for p in a.parent_ids or []) or "—"} for a in chain]),
        hide_index=True,
        key="training.lineage_table",
        column_config=ARTIFACT_COLUMNS,
    )


ARTIFACT_COLUMNS = {"artifact": st.column_config.NumberColumn("Artifact", format="#%d"), "job": st.column_config.NumberColumn("Job", format="#%d")}


def artifact_row(artifact: "Artifact", projects: Mapping[int, str]) -> dict[str, Any]:
    return {
        "artifact": artifact.id,
        "kind": ARTIFACT_KIND_LABEL.get(artifact.kind, artifact.kind),
        "name": artifact.name,
        "project": projects.get(artifact.project_id, "—") if artifact.project_id is not None else "—",
        "content hash": (artifact.content_hash or "")[:16],
        "job": artifact.job_id,
        "summary": artifact_summary(artifact),
        "created (UTC)": f"{as_utc(artifact.created_at):%Y-%m-%d %H:%M}",
        "path": artifact.path,
    }


def artifact_summary(artifact: "Artifact") -> str:
    """A few words on what the artifact holds: rows of an export, held-out accuracy of a reward model."""
    metrics = artifact.metrics or {}
    if artifact.kind == "reward_model":
        held = held_out_metrics(metrics)
        accuracy, ceiling = _number(held.get("accuracy")), _number(held.get("human_agreement"))
        if accuracy is not None:
            return f"accuracy {accuracy:.3f}" + (f" (ceiling {ceiling:.3f})" if ceiling is not None else "")
    if artifact.kind == "export" and "rows" in metrics:
        return f"{metrics['rows']} rows"
    numbers = [(k, v) for k, v in metrics.items() if _number(v) is not None][:3]
    return ", ".join(f"{k} {v:g}" for k, v in numbers)


def reward_models_section(engine: "Engine", projects: Mapping[int, str]) -> None:
    """Pick two reward models: held-out accuracy, ceiling and calibration side by side."""
    from rlhf.jobs import list_artifacts

    models = list_artifacts(engine, kind="reward_model", limit=ARTIFACTS_SHOWN)
    if not models:
        st.info("No reward model yet: queue a train-reward job.")
        return
    by_id = {m.id: m for m in models}
    ids = list(by_id)
    if st.session_state.get(MODEL_A) not in by_id:
        st.session_state[MODEL_A] = ids[0]
    if st.session_state.get(MODEL_B) not in by_id:
        st.session_state[MODEL_B] = ids[1] if len(ids) > 1 else ids[0]
    left, right = st.columns(2)
    first = left.selectbox("Reward model A", ids, key=MODEL_A, format_func=lambda i: artifact_label(by_id[i], projects))
    second = right.selectbox("Reward model B", ids, key=MODEL_B, format_func=lambda i: artifact_label(by_id[i], projects))
    chosen = [(f"A: #{first}", by_id[first].metrics), (f"B: #{second}", by_id[second].metrics)]
    table = pd.DataFrame(comparison_rows(chosen))
    st.dataframe(
        table,
        hide_index=True,
        key="training.compare_table",
        column_config={label: st.column_config.NumberColumn(label, format="%.3g") for label, _ in chosen},
    )
    frame = comparison_frame(chosen)
    if not frame.empty:
        st.altair_chart(comparison_chart(frame), key="training.compare_chart")
    hashes = [(by_id[i].lineage or {}).get("export_hash") for i in (first, second)]
    if all(hashes) and hashes[0] != hashes[1]:
        st.caption(
            f"The two models were evaluated on different exports (`{hashes[0][:12]}` and `{hashes[1][:12]}`): "
            "read each accuracy against its own ceiling."
        )
    st.caption(
        "The ceiling is how often one annotator agrees with a held-out pair's label: a reward model "
        "learning from these annotators rarely beats it. Regression and joint models also show how their "
        "dimensions correlate with held-out ratings, beside how well one annotator's ratings correlate with the others'."
    )


def comparison_chart(frame: pd.DataFrame) -> alt.Chart:
    """Grouped bars: each model's held-out accuracy next to its human-agreement ceiling."""
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("model:N", title=None, axis=alt.Axis(labelAngle=0)),
            xOffset="measure:N",
            y=alt.Y("value:Q", title=None, scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("measure:N", legend=alt.Legend(orient="bottom", title=None)),
            tooltip=["model:N", "measure:N", alt.Tooltip("value:Q", format=".3f")],
        )
        .properties(height=240)
    )


# ---------------------------------------------------------------------------------- the page


def main() -> None:
    user = c.require_role("admin")
    engine = c.get_engine()
    project_id = c.current_project_id()
    projects = project_names(user)
    st.title("Training")
    form_column, jobs_column = st.columns([2, 3], gap="large")
    with form_column:
        new_job_section(engine, user, project_id, projects)
    with jobs_column:
        jobs_section(engine, user, projects)
    artifacts_tab, models_tab = st.tabs(["Artifacts and lineage", "Compare reward models"])
    with artifacts_tab:
        artifacts_section(engine, projects)
    with models_tab:
        reward_models_section(engine, projects)


if __name__ == "__main__":  # Streamlit runs page files as __main__; tests import the helpers
    main()
