"""The job kinds a worker can run: for each, its params (checked at submit) and a thin adapter to its backend.

`KINDS` maps every kind of `rlhf.schema.JOB_KINDS` to a `JobKind`. An adapter imports its
backend (torch, TRL, ...) inside `run`, so the worker itself stays light; a kind whose backend
module is not installed yet stays registered, and its `validate` says so clearly.

More kinds (a site's own, or the test suite's) come from modules named in
`$RLHF_JOB_KIND_MODULES` (comma-separated) or passed to `load_registry`: each module exposes a
`JOB_KINDS: dict[str, JobKind]`.

A kind's `run(engine, job, params, reporter, workdir) -> JobResult` writes what it produces
under `workdir` (a fresh directory on the artifacts' filesystem) and names it in
`JobResult.artifacts`; the worker renames each into `artifacts/<kind>/<job-id>-<name>` only
after `run` returns and records them with the job's `done` in one transaction; it deletes
`workdir` whatever happened, so a failed job leaves nothing behind.

Params: each kind's fields are `ParamSpec`s (name, type, default, help), most of them read
from the backend's own config dataclass (`RewardConfig`, `PPOConfig`, `ExportOptions`), so a
form, `rlhf job kinds` and the validator show one text. Fields a job decides itself (output
directories, secrets) are left out.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Optional

from rlhf.configdoc import field_docs
from rlhf.jobs import ArtifactRecord, InvalidJobParams

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from rlhf.progress import Reporter
    from rlhf.schema import Job

KIND_MODULES_ENV = "RLHF_JOB_KIND_MODULES"
class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""The default of a param that must be given."""


@dataclass
class JobResult:
    """What a finished job hands back to the worker."""

    artifacts: list[ArtifactRecord] = field(default_factory=list)
    """Each with `path` (and `root`) inside the job's workdir, or "" for a database-only artifact."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Final figures (held-out accuracy, mean reward, ...): the last point of the job's series."""
    message: str = "done"
    """One line shown on the job's row."""


@dataclass(frozen=True)
class ParamSpec:
    """One field of a kind's params: what a form shows and what the validator checks."""

    name: str
    annotation: Any
    """A Python type: int, float, str, bool, Path, `X | None`, `list[X]`, `Literal[...]`, dict."""
    default: Any = REQUIRED
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def type(self) -> str:
        return type_name(self.annotation)

    @property
    def choices(self) -> tuple[Any, ...] | None:
        return typing.get_args(self.annotation) if typing.get_origin(self.annotation) is Literal else None

    def describe(self) -> dict[str, Any]:
        """JSON-plain: name, type, required, default, help, choices."""
        return {
            "name": self.name,
            "type": self.type,
            "required": self.required,
            "default": None if self.required else _plain(self.default),
            "help": self.help,
            "choices": list(self.choices) if self.choices else None,
        }


@dataclass(frozen=True)
class JobKind:
    """How to check and run one kind of job."""

    name: str
    summary: str
    validate: Callable[[dict[str, Any]], dict[str, Any]]
    """params → normalised params (every field, defaults filled); raises InvalidJobParams or ValueError naming the field."""
    run: Callable[[Engine, Job, dict[str, Any], Reporter, Path], JobResult]
    needs_project: bool | Callable[[dict[str, Any]], bool] = False
    """The job works on a project, so `submit_job(..., project=...)` is required (a callable decides from the params)."""
    launchable: bool = False
    """May run under the worker's launcher (`accelerate launch ...`) on several GPUs."""
    params: Callable[[], list[ParamSpec]] = list
    """The params' fields; raises InvalidJobParams when the backend is not installed yet."""

    def project_required(self, params: dict[str, Any]) -> bool:
        return self.needs_project(params) if callable(self.needs_project) else bool(self.needs_project)


# --------------------------------------------------------------------------- params helpers


def type_name(tp: Any) -> str:
    """A type annotation in words for forms and errors: `integer | None`, `list of text`, `one of 'a', 'b'`."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        names = [type_name(a) for a in args if a is not type(None)]
        return " | ".join(names) + (" | None" if type(None) in args else "")
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"list of {type_name(args[0])}" if args else "list"
    if origin in (dict, Mapping) or tp is dict:
        return "mapping"
    names = {int: "integer", float: "number", str: "text", bool: "true/false", Path: "path"}
    return names.get(tp, getattr(tp, "__name__", str(tp)))


def coerce_value(tp: Any, value: Any, where: str) -> Any:
    """`value` checked against the annotation `tp` and made JSON-plain; ValueError names `where`.

    int accepts integral floats (JSON has one number type); float accepts ints; a path is kept
    as text; lists check each item; Literal checks membership; `X | None` accepts None.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce_value(option, value, where)
            except ValueError:
                continue
        raise ValueError(f"{where} must be {type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{where} must be {type_name(tp)}, got {value!r}")
        return value
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}")
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        item_type = args[0] if args else Any
        return [coerce_value(item_type, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ValueError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ValueError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{where} must be an integer, got {value!r}")
        return int(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where} must be text, got {value!r}")
        return value
    if tp is Path:
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"{where} must be a path, got {value!r}")
        return str(value)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def check_params(kind: str, specs: Sequence[ParamSpec], params: dict[str, Any]) -> dict[str, Any]:
    """`params` checked against `specs`: every field returned, defaults filled in.

    Unknown fields, missing required fields and wrong types raise InvalidJobParams naming the
    kind and the field.
    """
    known = [spec.name for spec in specs]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise InvalidJobParams(f"{kind}: unknown field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}")
    out: dict[str, Any] = {}
    for spec in specs:
        if spec.name in params:
            try:
                out[spec.name] = coerce_value(spec.annotation, params[spec.name], f"field {spec.name!r}")
            except ValueError as exc:
                raise InvalidJobParams(f"{kind}: {exc}") from exc
        elif spec.required:
            raise InvalidJobParams(f"{kind}: field {spec.name!r} is required")
        else:
            out[spec.name] = _plain(spec.default)
    return out


def dataclass_specs(cls: type, *, exclude: Sequence[str] = ()) -> list[ParamSpec]:
    """The init fields of config dataclass `cls` (less `exclude`) as ParamSpecs, with their docstrings as help."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = REQUIRED
        specs.append(ParamSpec(f.name, hints.get(f.name, Any), default, docs.get(f.name, "")))
    return specs


def config_from_params(cls: type, params: dict[str, Any], *, exclude: Sequence[str] = (), **overrides: Any) -> Any:
    """An instance of config dataclass `cls` from those `params` that are its fields (less `exclude`), then `overrides`."""
    names = {f.name for f in dataclasses.fields(cls)} - set(exclude)
    return cls(**({k: v for k, v in params.items() if k in names} | overrides))


def module_available(name: str) -> bool:
    """True when module `name` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def require_backend(kind: str, module: str, attribute: str | None = None) -> Any:
    """Import `module` (and its `attribute`) for `kind`; InvalidJobParams "not available yet" if absent."""
    if not module_available(module):
        raise InvalidJobParams(f"job kind {kind!r} is not available yet: its backend module {module} is not installed")
    imported = importlib.import_module(module)
    if attribute is None:
        return imported
    if not hasattr(imported, attribute):
        raise InvalidJobParams(f"job kind {kind!r} is not available yet: {module}.{attribute} does not exist")
    return getattr(imported, attribute)


def unavailable_kind(name: str, summary: str, module: str, attribute: str, **options: Any) -> JobKind:
    """A registered kind whose backend `module.attribute` is not written yet: validate says so."""

    def validate(params: dict[str, Any]) -> dict[str, Any]:
        require_backend(name, module, attribute)
        raise InvalidJobParams(f"job kind {name!r} is not available yet: no adapter is wired to {module}.{attribute}")

    def run(engine, job, params, reporter, workdir) -> JobResult:
        validate(params)
        raise AssertionError("unreachable")

    def params() -> list[ParamSpec]:
        validate({})
        return []

    return JobKind(name, summary, validate, run, params=params, **options)


# --------------------------------------------------------------------------- lookups shared by the adapters


def project_name(engine: Engine, project_id: int | None) -> str:
    from rlhf.db import session_scope
    from rlhf.schema import Project

    with session_scope(engine) as session:
        project = session.get(Project, project_id) if project_id is not None else None
    if project is None:
        raise InvalidJobParams(f"job's project {project_id!r} does not exist")
    return project.name


def artifact_of_kind(engine: Engine, artifact_id: int, kind: str, field_name: str):
    """The artifact `artifact_id`, which must be of `kind`; InvalidJobParams naming `field_name` otherwise."""
    from rlhf.jobs import JobNotFound, get_artifact

    try:
        artifact = get_artifact(engine, artifact_id)
    except JobNotFound as exc:
        raise InvalidJobParams(f"field {field_name!r}: {exc}") from None
    if artifact.kind != kind:
        raise InvalidJobParams(f"field {field_name!r}: artifact {artifact_id} is a {artifact.kind}, not a {kind}")
    if artifact.path and not Path(artifact.path).exists():
        raise InvalidJobParams(f"field {field_name!r}: artifact {artifact_id}'s files are gone ({artifact.path})")
    return artifact


def artifact_ids_where(engine: Engine, *, kind: str, path: str | None = None, content_hash: str | None = None) -> list[int]:
    """The newest recorded artifact of `kind` at `path` or with `content_hash` (as a 0- or 1-item list of ids)."""
    from sqlmodel import select

    from rlhf.db import session_scope
    from rlhf.schema import Artifact

    if not path and not content_hash:
        return []
    stmt = select(Artifact.id).where(Artifact.kind == kind)
    if path:
        stmt = stmt.where(Artifact.path == str(Path(path).resolve()))
    if content_hash:
        stmt = stmt.where(Artifact.content_hash == content_hash)
    with session_scope(engine) as session:
        found = session.exec(stmt.order_by(Artifact.id.desc()).limit(1)).first()
    return [int(found)] if found is not None else []


# --------------------------------------------------------------------------- export


EXPORT_OUTPUTS = ("jsonl", "parquet", "dataset")
_EXPORT_EXCLUDE = ("salt",)  # a secret must not sit in the job's params; each export draws its own


def _export_specs() -> list[ParamSpec]:
    from rlhf.export import ExportOptions

    return [
        ParamSpec("format", Literal["trl", "ratings", "raw"], "trl", "trl: prompt/chosen/rejected pairs; ratings: per-response means; raw: every annotation (pseudonymised)."),
        ParamSpec("output", Literal["jsonl", "parquet", "dataset"], "jsonl", "File format: JSONL, Parquet, or a `datasets` directory (save_to_disk)."),
        *dataclass_specs(ExportOptions, exclude=_EXPORT_EXCLUDE),
    ]


def _export_options(params: dict[str, Any]):
    """The ExportOptions among an export job's params (the other fields are format and output)."""
    from rlhf.export import ExportOptions

    options = config_from_params(ExportOptions, params, exclude=_EXPORT_EXCLUDE)
    options.validate()
    return options


def _validate_export(params: dict[str, Any]) -> dict[str, Any]:
    require_backend("export", "rlhf.export", "export_project")
    checked = check_params("export", _export_specs(), params)
    try:
        _export_options(checked)
    except ValueError as exc:
        raise InvalidJobParams(f"export: {exc}") from exc
    return checked


def export_record(manifest, path: Path, root: Path) -> ArtifactRecord:
    """The artifact of an export written at `path` (inside `root`), from its manifest."""
    return ArtifactRecord(
        kind="export",
        name=f"{manifest.project}-{manifest.format}-{manifest.content_hash[:12]}",
        path=str(path),
        root=str(root),
        content_hash=manifest.content_hash,
        lineage={"format": manifest.format, "options": manifest.options, "software_version": manifest.software_version},
        metrics={"rows": manifest.rows, **manifest.split_counts, **manifest.counts},
    )


def export_into(engine: Engine, job: Job, workdir: Path, *, format: str, output: str, options, reporter: Reporter, subdir: str = "export") -> ArtifactRecord:
    """Export the job's project into `workdir/<subdir>/` and describe it as an artifact (not yet recorded)."""
    from rlhf.export import export_project
    from rlhf.roles import SYSTEM

    root = workdir / subdir
    root.mkdir()
    stem = f"{format}-{safe_stem(project_name(engine, job.project_id))}"
    path = root / (f"{stem}.{output}" if output != "dataset" else stem)
    # SYSTEM: submit_job already checked that the job's creator is an admin.
    manifest = export_project(
        engine, SYSTEM, job.project_id, format=format, out=path, options=options, job_id=job.id, reporter=reporter, record_artifact=False
    )
    reporter.log(f"exported {manifest.rows} rows ({manifest.split_counts}), content hash {manifest.content_hash[:12]}")
    return export_record(manifest, path, root)


def safe_stem(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-")[:80] or "project"


def _run_export(engine, job, params, reporter, workdir: Path) -> JobResult:
    record = export_into(engine, job, workdir, format=params["format"], output=params["output"], options=_export_options(params), reporter=reporter)
    return JobResult(artifacts=[record], metrics={"rows": record.metrics["rows"]}, message=f"exported {record.metrics['rows']} rows")


# --------------------------------------------------------------------------- train-reward


_PREFERENCE_DATA = [
    ParamSpec("export_artifact_id", Optional[int], None, "Train on this recorded export (an artifact of kind export)."),
    ParamSpec("data", Optional[str], None, "Train on the export at this path (JSONL, Parquet or dataset directory)."),
    ParamSpec(
        "export_options",
        dict,
        {},
        "With neither of the above, the job's project is exported first (an export artifact of this job) with these ExportOptions fields (aggregate, min_votes, from_ratings, ...).",
    ),
]
_RATINGS_DATA = ParamSpec(
    "ratings_data", Optional[str], None, "regression / joint: the ratings at this path (a raw or ratings export); default: the project's ratings, exported first."
)


def _reward_specs() -> list[ParamSpec]:
    from rlhf.reward.config import RewardConfig

    return _PREFERENCE_DATA + [_RATINGS_DATA] + dataclass_specs(RewardConfig)


def _reward_config(params: dict[str, Any]):
    from rlhf.reward.config import RewardConfig

    config = config_from_params(RewardConfig, params)
    config.validate()
    return config


def _validate_train_reward(params: dict[str, Any]) -> dict[str, Any]:
    require_backend("train-reward", "rlhf.reward", "train_reward_model")
    checked = check_params("train-reward", _reward_specs(), params)
    if checked["export_artifact_id"] is not None and checked["data"] is not None:
        raise InvalidJobParams("train-reward: give export_artifact_id or data, not both")
    _check_export_options("train-reward", checked["export_options"])
    try:
        _reward_config(checked)
    except ValueError as exc:
        raise InvalidJobParams(f"train-reward: {exc}") from exc
    return checked


def reward_record(out_dir: Path, metrics: dict[str, Any], name: str) -> ArtifactRecord:
    """The artifact of a reward-model directory written by `train_reward_model` (not yet recorded)."""
    from rlhf.hashing import file_sha256

    lineage_file = out_dir / "lineage.json"
    lineage = json.loads(lineage_file.read_text()) if lineage_file.is_file() else {}
    held_out = {k: v for k, v in metrics.get("held_out", {}).items() if k != "bins"}
    return ArtifactRecord(
        kind="reward_model",
        name=name,
        path=str(out_dir),
        content_hash=file_sha256(out_dir / "adapter_model.safetensors"),
        lineage=lineage,
        metrics={"held_out": held_out, "normalization": metrics.get("normalization", {}), "train": metrics.get("train", {})},
    )


@dataclass
class PreferenceSource:
    """Where a training job's preference pairs come from, and the lineage that follows."""

    path: Path
    parent_ids: list[int] = field(default_factory=list)
    """A recorded export it reads."""
    parent_refs: list[int] = field(default_factory=list)
    """Or the export this job made first (position in `artifacts`)."""
    artifacts: list[ArtifactRecord] = field(default_factory=list)
    """That export, to be recorded with the job's other artifacts."""


def preference_source(
    engine: Engine, job: Job, params: dict[str, Any], workdir: Path, reporter: Reporter, *, test_size: float, seed: int, format: str = "trl"
) -> PreferenceSource:
    """The pairs of a train-reward / dpo job (the demonstrations of an sft job, `format="sft"`): a recorded
    export, an export path, or a fresh export of the project.

    A fresh export (neither `export_artifact_id` nor `data`) is made in the job's workdir with
    `params["export_options"]` over (test_size, seed), and becomes an artifact of the job.
    """
    if params["export_artifact_id"] is not None:
        export = artifact_of_kind(engine, params["export_artifact_id"], "export", "export_artifact_id")
        return PreferenceSource(Path(export.path), parent_ids=[export.id])
    if params["data"]:
        from rlhf.export import read_manifest

        path = Path(params["data"])
        manifest = read_manifest(path) if path.exists() else None
        return PreferenceSource(path, parent_ids=artifact_ids_where(engine, kind="export", content_hash=manifest.content_hash) if manifest else [])
    from rlhf.export import ExportOptions

    options = ExportOptions(**({"test_size": test_size, "seed": seed} | params["export_options"]))
    export = export_into(engine, job, workdir, format=format, output="jsonl", options=options, reporter=reporter)
    return PreferenceSource(Path(export.path), parent_refs=[0], artifacts=[export])


def _check_export_options(kind: str, options: dict[str, Any]) -> None:
    if not options:
        return
    from rlhf.export import ExportOptions

    check_params(f"{kind} export_options", dataclass_specs(ExportOptions, exclude=_EXPORT_EXCLUDE), options)
    try:
        ExportOptions(**options).validate()
    except ValueError as exc:
        raise InvalidJobParams(f"{kind} export_options: {exc}") from exc


def _needs_project_without_data(params: dict[str, Any]) -> bool:
    return params.get("export_artifact_id") is None and not params.get("data")


def _job_label(engine: Engine, job: Job, prefix: str, fallback: str) -> str:
    return f"{prefix}-{safe_stem(project_name(engine, job.project_id)) if job.project_id else fallback}"


def _run_train_reward(engine, job, params, reporter, workdir: Path) -> JobResult:
    from rlhf.reward import train_reward_model

    config = _reward_config(params)
    if config.objective != "pairwise":
        from rlhf.reward.objectives import run_objective_job

        return run_objective_job(engine, job, params, config, reporter, workdir)
    # 1. the data (maybe a fresh export, recorded with this job)
    source = preference_source(engine, job, params, workdir, reporter, test_size=config.eval_fraction, seed=config.seed)
    artifacts = list(source.artifacts)
    # 2. train (no engine: the artifact is recorded by the worker once the directory is in place)
    result = train_reward_model(config, workdir / "reward_model", data=source.path, reporter=reporter, job_id=job.id)
    record = reward_record(result.out_dir, result.metrics, _job_label(engine, job, "reward", "model"))
    record.parent_ids, record.parent_refs = source.parent_ids, source.parent_refs
    artifacts.append(record)
    held_out = result.metrics.get("held_out", {})
    summary = {f"held_out/{k}": v for k, v in held_out.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    message = f"held-out accuracy {held_out.get('accuracy', float('nan')):.3f} (human agreement {held_out.get('human_agreement', float('nan')):.3f})"
    return JobResult(artifacts=artifacts, metrics=summary, message=message)


# --------------------------------------------------------------------------- ppo


_PPO_EXCLUDE = ("out", "database_url", "resume")  # the job decides where it writes and which database it reads
_PPO_EXTRA = [
    ParamSpec("reward_artifact_id", Optional[int], None, "Use this recorded reward model (instead of a `reward` directory)."),
    ParamSpec("policy_artifact_id", Optional[int], None, "Start from this recorded policy (instead of `policy`)."),
]


def _ppo_specs() -> list[ParamSpec]:
    from rlhf.ppo.config import PPOConfig

    return _PPO_EXTRA + dataclass_specs(PPOConfig, exclude=_PPO_EXCLUDE)


def _ppo_config(params: dict[str, Any], **overrides: Any):
    from rlhf.ppo.config import PPOConfig

    return config_from_params(PPOConfig, params, exclude=_PPO_EXCLUDE, **overrides).validate()


def _validate_ppo(params: dict[str, Any]) -> dict[str, Any]:
    require_backend("ppo", "rlhf.ppo.trainer", "train_ppo")
    checked = check_params("ppo", _ppo_specs(), params)
    if not checked["reward"] and checked["reward_artifact_id"] is None:
        raise InvalidJobParams("ppo: field 'reward' (a reward model directory) or 'reward_artifact_id' is required")
    if checked["reward"] and checked["reward_artifact_id"] is not None:
        raise InvalidJobParams("ppo: give reward or reward_artifact_id, not both")
    try:
        _ppo_config(checked)
    except ValueError as exc:
        raise InvalidJobParams(f"ppo: {exc}") from exc
    return checked


def _run_ppo(engine, job, params, reporter, workdir: Path) -> JobResult:
    from rlhf.ppo.trainer import train_ppo

    parents: list[int] = []
    if params["reward_artifact_id"] is not None:
        reward = artifact_of_kind(engine, params["reward_artifact_id"], "reward_model", "reward_artifact_id")
        reward_path, parents = reward.path, [reward.id]
    else:
        reward_path = params["reward"]
        parents = artifact_ids_where(engine, kind="reward_model", path=reward_path)
    policy = params["policy"]
    if params["policy_artifact_id"] is not None:
        start = artifact_of_kind(engine, params["policy_artifact_id"], "policy", "policy_artifact_id")
        policy, parents = start.path, parents + [start.id]
    else:
        parents += artifact_ids_where(engine, kind="policy", path=policy) if Path(policy).exists() else []
    prompts = params["prompts"] or (project_name(engine, job.project_id) if job.project_id else "")
    if not prompts:
        raise InvalidJobParams("ppo: field 'prompts' (a project or a JSONL file) is required when the job has no project")
    out = workdir / "policy"
    # The database is the worker's ($RLHF_DATABASE_URL in this process), never written into the config.
    config = _ppo_config(params, out=str(out), reward=reward_path, policy=policy, prompts=prompts)
    result = train_ppo(config, reporter=reporter)
    final = {k: v for k, v in result.final_metrics.items() if isinstance(v, (int, float))}
    record = ArtifactRecord(
        kind="policy",
        name=_job_label(engine, job, "ppo", "policy"),
        path=str(out),
        content_hash=result.lineage.get("adapter_sha256"),
        parent_ids=parents,
        lineage=result.lineage,
        metrics=final,
    )
    return JobResult(artifacts=[record], metrics=final, message=f"{result.iterations} PPO iterations")


# --------------------------------------------------------------------------- dpo


_DPO_EXCLUDE = ("out", "resume", "data")  # the job decides where it writes; data comes from _PREFERENCE_DATA


def _dpo_specs() -> list[ParamSpec]:
    from rlhf.dpo import DPORunConfig

    return _PREFERENCE_DATA + [ParamSpec("policy_artifact_id", Optional[int], None, "Start from this recorded policy (instead of `policy`).")] + dataclass_specs(
        DPORunConfig, exclude=_DPO_EXCLUDE
    )


def _dpo_config(params: dict[str, Any], **overrides: Any):
    from rlhf.dpo import DPORunConfig

    return config_from_params(DPORunConfig, params, exclude=_DPO_EXCLUDE, **overrides).validate()


def _validate_policy_training(kind: str, specs: list[ParamSpec], make_config: Callable[..., Any], params: dict[str, Any]) -> dict[str, Any]:
    """Params of a job that trains a policy on an export (dpo, sft): one data source, export options, a valid config."""
    checked = check_params(kind, specs, params)
    if checked["export_artifact_id"] is not None and checked["data"] is not None:
        raise InvalidJobParams(f"{kind}: give export_artifact_id or data, not both")
    _check_export_options(kind, checked["export_options"])
    try:
        make_config(checked, data=checked["data"] or "(decided when the job runs)")
    except ValueError as exc:
        raise InvalidJobParams(f"{kind}: {exc}") from exc
    return checked


def _starting_policy(engine: Engine, params: dict[str, Any]) -> tuple[str, list[int]]:
    """The policy a job starts from (`policy_artifact_id` or `policy`) and the recorded artifacts it is."""
    if params["policy_artifact_id"] is not None:
        start = artifact_of_kind(engine, params["policy_artifact_id"], "policy", "policy_artifact_id")
        return start.path, [start.id]
    policy = params["policy"]
    return policy, artifact_ids_where(engine, kind="policy", path=policy) if Path(policy).exists() else []


def _validate_dpo(params: dict[str, Any]) -> dict[str, Any]:
    require_backend("dpo", "rlhf.dpo", "train_dpo")
    return _validate_policy_training("dpo", _dpo_specs(), _dpo_config, params)


def _run_dpo(engine, job, params, reporter, workdir: Path) -> JobResult:
    from rlhf.dpo import train_dpo

    source = preference_source(engine, job, params, workdir, reporter, test_size=params["eval_fraction"], seed=params["seed"])
    policy, policy_parents = _starting_policy(engine, params)
    out = workdir / "policy"
    result = train_dpo(_dpo_config(params, data=str(source.path), policy=policy, out=str(out)), reporter=reporter)
    final = {k: v for k, v in result.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    record = ArtifactRecord(
        kind="policy",
        name=_job_label(engine, job, "dpo", "policy"),
        path=str(out),
        content_hash=result.lineage.get("adapter_sha256"),
        parent_ids=source.parent_ids + policy_parents,
        parent_refs=source.parent_refs,
        lineage=result.lineage,
        metrics=final,
    )
    return JobResult(artifacts=source.artifacts + [record], metrics=final, message=f"DPO: {result.steps} steps")


# --------------------------------------------------------------------------- sft


_SFT_EXCLUDE = ("out", "resume", "overwrite", "data", "project", "database_url")  # the job decides; data comes from _PREFERENCE_DATA


def _sft_specs() -> list[ParamSpec]:
    from rlhf.sft import SFTRunConfig

    return _PREFERENCE_DATA + [ParamSpec("policy_artifact_id", Optional[int], None, "Start from this recorded policy (instead of `policy`).")] + dataclass_specs(
        SFTRunConfig, exclude=_SFT_EXCLUDE
    )


def _sft_config(params: dict[str, Any], **overrides: Any):
    from rlhf.sft import SFTRunConfig

    return config_from_params(SFTRunConfig, params, exclude=_SFT_EXCLUDE, **overrides).validate()


def _sft_export_available() -> bool:
    from rlhf.export import EXPORT_FORMATS

    return "sft" in EXPORT_FORMATS


def _validate_sft(params: dict[str, Any]) -> dict[str, Any]:
    require_backend("sft", "rlhf.sft", "train_sft")
    checked = _validate_policy_training("sft", _sft_specs(), _sft_config, params)
    if _needs_project_without_data(checked) and not _sft_export_available():
        raise InvalidJobParams("sft: give data or export_artifact_id (this installation cannot export a project's demonstrations: no `sft` export format)")
    return checked


def _run_sft(engine, job, params, reporter, workdir: Path) -> JobResult:
    from rlhf.sft import train_sft

    source = preference_source(engine, job, params, workdir, reporter, test_size=params["eval_fraction"], seed=params["seed"], format="sft")
    policy, policy_parents = _starting_policy(engine, params)
    out = workdir / "policy"
    result = train_sft(_sft_config(params, data=str(source.path), policy=policy, out=str(out)), reporter=reporter)
    held_out = result.metrics["held_out"]
    final = {"steps": result.steps, "train/last_loss": result.metrics["train"]["last_loss"]}
    for moment in ("before", "after"):
        if held_out[moment]:
            final |= {f"held_out/loss_{moment}": held_out[moment]["loss"], f"held_out/perplexity_{moment}": held_out[moment]["perplexity"]}
    record = ArtifactRecord(
        kind="policy",
        name=_job_label(engine, job, f"sft-{params['method']}", "policy"),
        path=str(out),
        content_hash=result.lineage.get("weights_sha256"),
        parent_ids=source.parent_ids + policy_parents,
        parent_refs=source.parent_refs,
        lineage=result.lineage,
        metrics={k: v for k, v in final.items() if v is not None},
    )
    after = held_out["after"]
    message = f"SFT ({params['method']}): {result.steps} steps" + (f", held-out loss {after['loss']:.3f}" if after else "")
    return JobResult(artifacts=source.artifacts + [record], metrics=record.metrics, message=message)


# --------------------------------------------------------------------------- generate


def _generate_specs() -> list[ParamSpec]:
    from rlhf.generate import SamplingConfig

    docs = field_docs(SamplingConfig)
    return [
        ParamSpec("policy", Optional[str], None, "The policy to sample: a PPO output directory, a checkpoint directory, an HF id or the packaged alias."),
        ParamSpec("policy_artifact_id", Optional[int], None, "Sample this recorded policy (instead of `policy`)."),
        ParamSpec("round", int, REQUIRED, "Round number of the new responses (at least 1); their pairwise tasks compare them with round - 1."),
        ParamSpec("n", int, 1, docs.get("n", "")),
        ParamSpec("temperatures", list[float], [0.7], docs.get("temperatures", "")),
        ParamSpec("top_p", float, 0.95, docs.get("top_p", "")),
        ParamSpec("top_k", int, 0, docs.get("top_k", "")),
        ParamSpec("max_new_tokens", int, 128, docs.get("max_new_tokens", "")),
        ParamSpec("seed", Optional[int], 0, docs.get("seed", "")),
        ParamSpec("batch_size", int, 8, docs.get("batch_size", "")),
        ParamSpec("load_in_4bit", bool, False, "Load the policy's base in 4-bit NF4."),
        ParamSpec("model_name", Optional[str], None, 'Name the new responses carry (default "<policy dir>@round<N>"), so the leaderboard tells rounds apart.'),
        ParamSpec("use_chat_template", Optional[bool], None, "Render prompts with the tokenizer's chat template; None: when it has one."),
        ParamSpec("max_pairs_per_prompt", int, 4, "At most this many pairwise tasks per prompt (a new response against one of round - 1)."),
        ParamSpec("make_rating_tasks", bool, False, "Also make a rating task for each new response."),
        ParamSpec("limit", Optional[int], None, "Only the project's first N prompts."),
        ParamSpec("endpoint", Optional[str], None, "Sample from this OpenAI-compatible server instead; `policy` is then the served model's name."),
        ParamSpec("api_key_env", Optional[str], None, "With endpoint: the worker's environment variable holding the key (the key is never stored)."),
    ]


_SAMPLING_FIELDS = ("n", "temperatures", "top_p", "top_k", "max_new_tokens", "seed", "batch_size")


def _validate_generate(params: dict[str, Any]) -> dict[str, Any]:
    require_backend("generate", "rlhf.generate", "generate_round")
    from rlhf.generate import SamplingConfig

    checked = check_params("generate", _generate_specs(), params)
    if (checked["policy"] is None) == (checked["policy_artifact_id"] is None):
        raise InvalidJobParams("generate: give exactly one of policy and policy_artifact_id")
    if checked["round"] < 1:
        raise InvalidJobParams(f"generate: field 'round' must be at least 1 (it is paired against round - 1), got {checked['round']}")
    try:
        SamplingConfig(**{k: (tuple(v) if k == "temperatures" else v) for k, v in checked.items() if k in _SAMPLING_FIELDS})
    except ValueError as exc:
        raise InvalidJobParams(f"generate: {exc}") from exc
    return checked


def _run_generate(engine, job, params, reporter, workdir: Path) -> JobResult:
    from rlhf.generate import generate_round
    from rlhf.roles import SYSTEM

    policy = params["policy"]
    if params["policy_artifact_id"] is not None:
        policy = artifact_of_kind(engine, params["policy_artifact_id"], "policy", "policy_artifact_id").path
    options = {k: v for k, v in params.items() if k not in ("policy", "policy_artifact_id", "endpoint", "api_key_env")}
    if params.get("endpoint"):
        from rlhf.judge.client import ChatClient, read_api_key

        options["endpoint_client"] = ChatClient(params["endpoint"], policy, api_key=read_api_key(params.get("api_key_env")))
    # The round lives in the database: generate_round imports it and records its artifact
    # (kind generation, parents: the policy's artifacts) with this job's id.
    summary = generate_round(engine, SYSTEM, policy=policy, project=project_name(engine, job.project_id), job_id=job.id, reporter=reporter, **options)
    metrics = {
        "responses": summary.responses,
        "finished": summary.finished,
        "responses_added": summary.responses_added,
        "pairwise_tasks_added": summary.pairwise_tasks_added,
        "rating_tasks_added": summary.rating_tasks_added,
    }
    reporter.log(str(summary))
    return JobResult(metrics=metrics, message=f"round {summary.round}: {summary.responses_added} responses, {summary.pairwise_tasks_added} pairwise tasks")


# --------------------------------------------------------------------------- simulate


def _simulate_specs() -> list[ParamSpec]:
    from rlhf.simulation import SimulationConfig

    return dataclass_specs(SimulationConfig)


def validated_config_params(kind: str, specs: list[ParamSpec], cls: type, params: dict[str, Any]) -> dict[str, Any]:
    """`params` checked against `specs`, then by config `cls`'s own `validate()`; InvalidJobParams naming `kind`."""
    checked = check_params(kind, specs, params)
    try:
        config_from_params(cls, checked).validate()
    except ValueError as exc:
        raise InvalidJobParams(f"{kind}: {exc}") from exc
    return checked


def _validate_simulate(params: dict[str, Any]) -> dict[str, Any]:
    require_backend("simulate", "rlhf.simulation", "simulate")
    from rlhf.simulation import SimulationConfig

    return validated_config_params("simulate", _simulate_specs(), SimulationConfig, params)


def _run_simulate(engine, job, params, reporter, workdir: Path) -> JobResult:
    from rlhf.simulation import SimulationConfig, simulate

    config = config_from_params(SimulationConfig, params).validate()
    root = workdir / "simulation"
    result = simulate(engine, project_name(engine, job.project_id), config, reporter=reporter, planted_truth_path=root / "planted_truth.json")
    reporter.log(result.line())
    metrics = {"ratings": result.ratings, "preferences": result.preferences, "annotators": len(result.annotators), "seconds": round(result.seconds, 3)}
    # The planted truth (who is a spammer, each bias) is what the statistics are checked against: keep it.
    record = ArtifactRecord(
        kind="simulation", name=_job_label(engine, job, "simulation", "project"), path=str(root / "planted_truth.json"), root=str(root),
        lineage={"config": config.as_dict()}, metrics=metrics,
    )
    return JobResult(artifacts=[record], metrics=metrics, message=f"{result.ratings} ratings, {result.preferences} preferences ({result.stopped})")


# --------------------------------------------------------------------------- judge


def _judge_specs() -> list[ParamSpec]:
    from rlhf.judge.build import JudgeSpec
    from rlhf.judge.run import JudgeOptions

    options = [spec for spec in dataclass_specs(JudgeOptions) if spec.name != "name"]
    return dataclass_specs(JudgeSpec) + [
        ParamSpec("name", Optional[str], None, "Judge name: labels are stored as the external user judge:<name> (default: from the model)."),
        ParamSpec("reward_artifact_id", Optional[int], None, "Judge pairs with this recorded reward model (instead of `reward`)."),
        *options,
        ParamSpec("pair_template", Optional[str], None, "Template file for pairs ({prompt} {first} {second}, optional {guidelines}); default: the built-in one."),
        ParamSpec("rating_template", Optional[str], None, "Template file for ratings ({prompt} {response} {rubric}); default: the built-in one."),
        ParamSpec("ranking_template", Optional[str], None, "Template file for ranking groups ({prompt} {responses}); default: the built-in one."),
        ParamSpec("max_guideline_chars", int, 1500, "Characters of the project's guidelines put in the prompt (0 = none)."),
    ]



def _judge_parts(params: dict[str, Any]):
    from rlhf.judge.build import JudgeSpec
    from rlhf.judge.run import JudgeOptions
    from rlhf.judge.templates import load_templates

    spec = config_from_params(JudgeSpec, params)
    options = config_from_params(JudgeOptions, params, exclude=("name",), name=params["name"] or spec.default_name())
    templates = load_templates(params["pair_template"], params["rating_template"], max_guideline_chars=params["max_guideline_chars"],
                               ranking_template=params["ranking_template"])
    return spec, options, templates


def _validate_judge(params: dict[str, Any]) -> dict[str, Any]:
    require_backend("judge", "rlhf.judge.run", "judge_project")
    checked = check_params("judge", _judge_specs(), params)
    if checked["reward"] and checked["reward_artifact_id"] is not None:
        raise InvalidJobParams("judge: give reward or reward_artifact_id, not both")
    probe = dict(checked, reward=checked["reward"] or ("<artifact>" if checked["reward_artifact_id"] is not None else None))
    try:
        _judge_parts(probe)
    except ValueError as exc:
        raise InvalidJobParams(f"judge: {exc}") from exc
    return checked


def _run_judge(engine, job, params, reporter, workdir: Path) -> JobResult:
    from rlhf.judge.build import make_judge
    from rlhf.judge.run import judge_project
    from rlhf.roles import SYSTEM

    params = dict(params)
    if params["reward_artifact_id"] is not None:
        params["reward"] = artifact_of_kind(engine, params["reward_artifact_id"], "reward_model", "reward_artifact_id").path
    spec, options, templates = _judge_parts(params)
    # Verdicts live in the database (Judgment rows and judge:<name>'s labels), stored batch by batch:
    # a re-run of this job after a dead worker continues where the last batch ended.
    summary = judge_project(engine, SYSTEM, project_name(engine, job.project_id), make_judge(spec), options, templates=templates, reporter=reporter)
    reporter.log(summary.line())
    metrics = {"pending": summary.pending, "judged": summary.judged, **{k: v for k, v in summary.as_dict()["counts"].items()}}
    return JobResult(metrics=metrics, message=summary.line())


# --------------------------------------------------------------------------- select-scores


def _selection_specs() -> list[ParamSpec]:
    from rlhf.selection.scores import SelectionConfig

    return dataclass_specs(SelectionConfig)


def _validate_select_scores(params: dict[str, Any]) -> dict[str, Any]:
    from rlhf.selection.scores import SelectionConfig

    return validated_config_params("select-scores", _selection_specs(), SelectionConfig, params)


def _run_select_scores(engine, job, params, reporter, workdir: Path) -> JobResult:
    from rlhf.selection.scores import SelectionConfig, compute_scores

    run = compute_scores(engine, job.project_id, config_from_params(SelectionConfig, params), reporter=reporter)
    reporter.log(run.line())
    metrics = {"scored_tasks": run.scored_tasks, "labels": run.labels, "seconds": run.seconds}
    if run.rm_accuracy_random is not None:
        metrics["rm_accuracy_random"] = run.rm_accuracy_random
    return JobResult(metrics=metrics, message=run.line()[:300])


# --------------------------------------------------------------------------- the registry


def _kind(name, summary, validate, run, specs, module: str, attribute: str, **options) -> JobKind:
    """A wired kind, or a `not available yet` one when `module.attribute` is not there."""
    if not module_available(module):
        return unavailable_kind(name, summary, module, attribute, **options)

    def params() -> list[ParamSpec]:
        require_backend(name, module, attribute)
        return specs()

    return JobKind(name, summary, validate, run, params=params, **options)


def _product_kinds() -> dict[str, JobKind]:
    return {
        "export": _kind(
            "export", "Export the project's annotations (TRL preference pairs, ratings, raw).", _validate_export, _run_export, _export_specs,
            "rlhf.export", "export_project", needs_project=True,
        ),
        "train-reward": _kind(
            "train-reward", "Train a reward model (TRL RewardTrainer, LoRA, optional 4-bit base) on an export or the project.",
            _validate_train_reward, _run_train_reward, _reward_specs, "rlhf.reward", "train_reward_model", needs_project=_needs_project_without_data,
        ),
        "ppo": _kind(
            "ppo", "Improve a policy against a reward model with PPO (LoRA / QLoRA); multi-GPU through the worker's launcher.",
            _validate_ppo, _run_ppo, _ppo_specs, "rlhf.ppo.trainer", "train_ppo", launchable=True,
            needs_project=lambda params: not params.get("prompts"),
        ),
        "dpo": _kind(
            "dpo", "Train a policy directly on preferences (TRL DPOTrainer, LoRA, optional 4-bit base) from an export or the project.",
            _validate_dpo, _run_dpo, _dpo_specs, "rlhf.dpo", "train_dpo", needs_project=_needs_project_without_data,
        ),
        "sft": _kind(
            "sft", "Supervised fine-tuning on demonstrations (TRL SFTTrainer; full, LoRA or QLoRA) from an SFT export or the project.",
            _validate_sft, _run_sft, _sft_specs, "rlhf.sft", "train_sft", needs_project=_needs_project_without_data,
        ),
        "generate": _kind(
            "generate", "Sample a policy on the project's prompts and import the outputs as a new round, paired against the previous one.",
            _validate_generate, _run_generate, _generate_specs, "rlhf.generate", "generate_round", needs_project=True,
        ),
        "simulate": _kind(
            "simulate", "Simulated annotators (planted noise, biases, spammers) label the project through the annotation engine.",
            _validate_simulate, _run_simulate, _simulate_specs, "rlhf.simulation", "simulate", needs_project=True,
        ),
        "judge": _kind(
            "judge", "A model (local, an OpenAI-compatible endpoint, a reward model) judges the project's tasks as judge:<name>, pairs in both orders.",
            _validate_judge, _run_judge, _judge_specs, "rlhf.judge.run", "judge_project", needs_project=True,
        ),
        "select-scores": _kind(
            "select-scores", "Score the project's open tasks under its selection strategy (uncertainty, disagreement, mixed) for next_task's order.",
            _validate_select_scores, _run_select_scores, _selection_specs, "rlhf.selection.scores", "compute_scores", needs_project=True,
        ),
    }


KINDS: dict[str, JobKind] = _product_kinds()
"""The product registry: one entry per `rlhf.schema.JOB_KINDS`."""


def load_registry(modules: Sequence[str] | None = None) -> dict[str, JobKind]:
    """The product kinds plus the `JOB_KINDS` of each module in `modules` (default: `$RLHF_JOB_KIND_MODULES`).

    Returns a new dict; a module's kind replaces a product kind of the same name.
    """
    if modules is None:
        modules = [m.strip() for m in os.environ.get(KIND_MODULES_ENV, "").split(",") if m.strip()]
    registry = dict(KINDS)
    for name in modules:
        module = importlib.import_module(name)
        extra = getattr(module, "JOB_KINDS", None)
        if not isinstance(extra, dict):
            raise ValueError(f"job kind module {name} has no JOB_KINDS mapping")
        registry.update(extra)
    return registry


def describe_kinds(registry: dict[str, JobKind] | None = None) -> dict[str, dict[str, Any]]:
    """For a form: each kind's summary, whether it needs a project, and its params (or why it is unavailable)."""
    out: dict[str, dict[str, Any]] = {}
    for name, kind in sorted((registry if registry is not None else load_registry()).items()):
        entry: dict[str, Any] = {"summary": kind.summary, "launchable": kind.launchable}
        try:
            entry["params"] = [spec.describe() for spec in kind.params()]
            entry["available"] = True
        except InvalidJobParams as exc:
            entry["params"], entry["available"], entry["unavailable_reason"] = [], False, str(exc)
        out[name] = entry
    return out
