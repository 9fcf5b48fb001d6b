"""The job kinds a worker can run: for each, a params validator and a thin adapter to its backend.

`KINDS` maps every kind of `rlhf.schema.JOB_KINDS` to a `JobKind`. An adapter imports its
backend (torch, TRL, ...) inside `run`, so the worker itself stays light; a kind whose backend
module is not installed stays registered, and its `validate` says so clearly.

More kinds (a site's own, or the test suite's) come from modules named in
`$RLHF_JOB_KIND_MODULES` (comma-separated) or passed to `load_registry`: each module exposes a
`JOB_KINDS: dict[str, JobKind]`.

A kind's `run(engine, job, params, reporter, workdir) -> JobResult` writes what it produces
under `workdir` (a fresh directory on the artifacts' filesystem) and names it in
`JobResult.artifacts`; the worker renames each into `artifacts/<kind>/<job-id>-<name>` only
after `run` returns, and deletes `workdir` whatever happened, so a failed job leaves nothing.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import inspect
import os
import textwrap
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhf.jobs import ArtifactRecord, InvalidJobParams

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from rlhf.progress import Reporter
    from rlhf.schema import Job

KIND_MODULES_ENV = "RLHF_JOB_KIND_MODULES"


@dataclass
class JobResult:
    """What a finished job hands back to the worker."""

    artifacts: list[ArtifactRecord] = field(default_factory=list)
    """Each with `path` inside the job's workdir (or "" for a database-only artifact)."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """Final figures (held-out accuracy, mean reward, ...): the last point of the job's series."""
    message: str = "done"
    """One line shown on the job's row."""


@dataclass(frozen=True)
class ParamSpec:
    """One field of a kind's params, as a form or `rlhf job kinds` shows it."""

    name: str
    type: str
    required: bool
    default: Any = None
    help: str = ""
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class JobKind:
    """How to check and run one kind of job."""

    name: str
    summary: str
    validate: Callable[[dict[str, Any]], dict[str, Any]]
    """params → normalised params; raises InvalidJobParams (or ValueError) naming the field."""
    run: Callable[[Engine, Job, dict[str, Any], Reporter, Path], JobResult]
    needs_project: bool = False
    """The job works on a project: `submit_job(..., project=...)` is required."""
    launchable: bool = False
    """May run under the worker's launcher (`accelerate launch ...`) on several GPUs."""
    params: Callable[[], list[ParamSpec]] = lambda: []
    """The params' fields (empty when the backend is not installed yet)."""


# --------------------------------------------------------------------------- params helpers


def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under the fields of a dataclass (`x: int = 1` then `\"\"\"doc\"\"\"`).

    Read from the class source with `ast`; {} when the source is not available.
    """
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    tree = ast.parse(source)
    body = next((node.body for node in tree.body if isinstance(node, ast.ClassDef)), [])
    docs: dict[str, str] = {}
    for current, following in zip(body, body[1:]):
        if (
            isinstance(current, ast.AnnAssign)
            and isinstance(current.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[current.target.id] = inspect.cleandoc(following.value.value)
    return docs


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(tp) if a is not type(None)]
        return " | ".join(names) + (" | None" if type(None) in typing.get_args(tp) else "")
    if origin in (list, tuple, Sequence):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin in (dict, Mapping):
        return "mapping"
    return {int: "integer", float: "number", str: "text", bool: "true/false", Path: "path"}.get(tp, getattr(tp, "__name__", str(tp)))


def coerce_value(tp: Any, value: Any, where: str) -> Any:
    """`value` checked against the annotation `tp` and made JSON-plain; ValueError names `where`.

    int accepts integral floats; float accepts ints; Path accepts text (kept as text); tuples
    and lists accept lists; Literal checks membership; Optional accepts None.
    """
    origin = typing.get_origin(tp)
    if tp is Any or tp is typing.Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce_value(option, value, where)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(f"{where} must be {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ValueError(f"{where} must be {_type_name(tp)}, got {value!r}")
        return value
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r}")
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if not args:
            return list(value)
        if origin is tuple and len(args) > 1 and Ellipsis not in typing.get_args(tp):
            if len(value) != len(args):
                raise ValueError(f"{where} must have {len(args)} items, got {len(value)}")
            return [coerce_value(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        return [coerce_value(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
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
    if tp is Path or (isinstance(tp, type) and issubclass(tp, os.PathLike)):
        if not isinstance(value, (str, os.PathLike)):
            raise ValueError(f"{where} must be a path, got {value!r}")
        return str(value)
    return value


def dataclass_params(cls: type, *, exclude: Sequence[str] = ()) -> list[ParamSpec]:
    """The fields of config dataclass `cls` (less `exclude`) as ParamSpecs, with their docstrings."""
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    specs = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = None
        tp = hints.get(f.name, Any)
        choices = typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else None
        specs.append(ParamSpec(f.name, _type_name(tp), required, _plain(default), docs.get(f.name, ""), choices))
    return specs


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def check_params(kind: str, specs: Sequence[tuple[str, Any, Any]], params: dict[str, Any]) -> dict[str, Any]:
    """Params checked against `(name, type, default)` triples; `dataclasses.MISSING` = required.

    Unknown fields, missing required fields and wrong types raise InvalidJobParams naming the
    kind and the field. Returns every field, defaults filled in.
    """
    known = {name for name, _, _ in specs}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidJobParams(f"{kind}: unknown field(s) {', '.join(unknown)}; known fields: {', '.join(sorted(known))}")
    out: dict[str, Any] = {}
    for name, tp, default in specs:
        if name in params:
            try:
                out[name] = coerce_value(tp, params[name], f"field {name!r}")
            except ValueError as exc:
                raise InvalidJobParams(f"{kind}: {exc}") from exc
        elif default is dataclasses.MISSING:
            raise InvalidJobParams(f"{kind}: field {name!r} is required")
        else:
            out[name] = _plain(default)
    return out


def dataclass_specs(cls: type, *, exclude: Sequence[str] = ()) -> list[tuple[str, Any, Any]]:
    """`(name, type, default)` triples of a config dataclass, for `check_params`."""
    hints = typing.get_type_hints(cls)
    triples = []
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        triples.append((f.name, hints.get(f.name, Any), default))
    return triples


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


def unavailable_kind(name: str, summary: str, module: str, *, needs_project: bool = False, launchable: bool = False) -> JobKind:
    """A registered kind whose backend `module` is not written yet: validate says so."""

    def validate(params: dict[str, Any]) -> dict[str, Any]:
        require_backend(name, module)
        raise InvalidJobParams(f"job kind {name!r} is not available yet: {module} exists but no adapter is wired to it")

    def run(engine, job, params, reporter, workdir) -> JobResult:
        validate(params)
        raise AssertionError("unreachable")

    return JobKind(name, summary, validate, run, needs_project=needs_project, launchable=launchable)


# --------------------------------------------------------------------------- the registry


def _product_kinds() -> dict[str, JobKind]:
    return {
        "export": unavailable_kind("export", "Export a project's annotations (TRL preference format, ratings, raw).", "rlhf.export", needs_project=True),
        "train-reward": unavailable_kind("train-reward", "Train a reward model on exported preferences (TRL RewardTrainer, LoRA).", "rlhf.reward", needs_project=True),
        "ppo": unavailable_kind("ppo", "Improve a policy against a reward model with PPO (QLoRA).", "rlhf.ppo", launchable=True),
        "dpo": unavailable_kind("dpo", "Train a policy directly on preferences (TRL DPOTrainer).", "rlhf.dpo", needs_project=True),
        "generate": unavailable_kind("generate", "Generate a round of responses with a policy into a project.", "rlhf.generate", needs_project=True),
        "simulate": unavailable_kind("simulate", "Simulate annotators labelling a project.", "rlhf.simulation", needs_project=True),
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
