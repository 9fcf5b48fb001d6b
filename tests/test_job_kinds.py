"""The job-kind registry: params checked with clear errors, and the product kinds run end to end through the worker."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Literal, Optional

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlhf.db import session_scope
from rlhf.job_kinds import (
    KINDS,
    ParamSpec,
    check_params,
    coerce_value,
    dataclass_specs,
    describe_kinds,
    load_registry,
    type_name,
)
from rlhf.configdoc import field_docs
from rlhf.jobs import InvalidJobParams, artifact_lineage, get_job, job_artifacts, job_metrics, submit_job
from rlhf.roles import SYSTEM
from rlhf.schema import JOB_KINDS, Preference, Project, Prompt, Response, Task, User
from rlhf.worker import Worker, WorkerConfig

# --------------------------------------------------------------------------- registry and params


def test_every_product_kind_is_registered_and_described():
    assert set(KINDS) == set(JOB_KINDS)
    described = describe_kinds()
    json.dumps(described)  # a form can take it as is
    for name, entry in described.items():
        assert entry["summary"]
        if entry["available"]:
            assert entry["params"] and all({"name", "type", "required", "default", "help"} <= set(p) for p in entry["params"])
        else:
            assert "not available yet" in entry["unavailable_reason"]
    assert described["ppo"]["launchable"] and not described["export"]["launchable"]


def test_kinds_without_backend_say_so(monkeypatch):
    import rlhf.job_kinds as job_kinds

    monkeypatch.setattr(job_kinds, "module_available", lambda name: False)
    for name in JOB_KINDS:
        with pytest.raises(InvalidJobParams, match=f"job kind '{name}' is not available yet"):
            job_kinds.unavailable_kind(name, "", f"rlhf.missing_{name}", "run").validate({})


def test_load_registry_adds_kinds_from_modules(monkeypatch):
    assert "test-sleep" in load_registry(["test_worker"])
    monkeypatch.setenv("RLHF_JOB_KIND_MODULES", "test_worker")
    assert "test-crash" in load_registry()
    with pytest.raises(ValueError, match="has no JOB_KINDS"):
        load_registry(["json"])


SPECS = [
    ParamSpec("steps", int),
    ParamSpec("rate", float, 0.5),
    ParamSpec("name", Optional[str], None),
    ParamSpec("mode", Literal["a", "b"], "a"),
    ParamSpec("ids", list[int], []),
    ParamSpec("flag", bool, False),
    ParamSpec("path", Path, "out"),
]


def test_check_params_fills_defaults_and_names_the_field():
    assert check_params("k", SPECS, {"steps": 3.0, "rate": 1, "path": "x"}) == {
        "steps": 3, "rate": 1.0, "name": None, "mode": "a", "ids": [], "flag": False, "path": "x"
    }
    cases = [
        ({}, "k: field 'steps' is required"),
        ({"steps": 1, "stpes": 2}, r"k: unknown field\(s\) stpes; known fields: flag, ids, mode, name, path, rate, steps"),
        ({"steps": 1.5}, "k: field 'steps' must be an integer, got 1.5"),
        ({"steps": True}, "k: field 'steps' must be an integer, got True"),
        ({"steps": 1, "rate": "fast"}, "k: field 'rate' must be a number, got 'fast'"),
        ({"steps": 1, "mode": "c"}, "k: field 'mode' must be one of 'a', 'b', got 'c'"),
        ({"steps": 1, "ids": [1, "x"]}, r"k: field 'ids'\[1\] must be an integer, got 'x'"),
        ({"steps": 1, "flag": "yes"}, "k: field 'flag' must be true or false, got 'yes'"),
        ({"steps": 1, "name": 3}, r"k: field 'name' must be text \| None, got 3"),
    ]
    for params, message in cases:
        with pytest.raises(InvalidJobParams, match=message):
            check_params("k", SPECS, params)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from([s.name for s in SPECS] + ["other"]), JSON_VALUES, max_size=8))
def test_check_params_on_any_json_accepts_or_names_a_field(params):
    try:
        checked = check_params("k", SPECS, params)
    except InvalidJobParams as exc:
        assert str(exc).startswith("k: ")
        return
    assert set(checked) == {s.name for s in SPECS}
    assert isinstance(checked["steps"], int) and not isinstance(checked["steps"], bool)


def test_dataclass_specs_read_field_docstrings():
    from dataclasses import dataclass

    @dataclass
    class Example:
        alpha: int = 1
        """How much alpha."""
        beta: list[str] | None = None
        """Several
        lines."""

    specs = {s.name: s for s in dataclass_specs(Example)}
    assert (specs["alpha"].help, specs["alpha"].default, specs["alpha"].type) == ("How much alpha.", 1, "integer")
    assert (specs["beta"].help, specs["beta"].type) == ("Several lines.", "list of text | None")
    assert field_docs(Example) == {"alpha": "How much alpha.", "beta": "Several lines."}
    assert type_name(Literal["x", "y"]) == "one of 'x', 'y'"
    assert coerce_value(Optional[int], None, "f") is None


def test_product_params_are_checked_at_submit(sqlite_engine):
    with session_scope(sqlite_engine, write=True) as session:
        session.add(Project(name="proj"))
    cases = [
        ("export", {"format": "csv"}, "export: field 'format' must be one of 'trl', 'ratings', 'raw'"),
        ("export", {"aggregate": "mode"}, "export: aggregate 'mode': expected one of majority, dawid-skene"),
        ("export", {"salt": "secret"}, r"export: unknown field\(s\) salt"),
        ("train-reward", {"lora_r": 0}, "train-reward: lora_r 0: must be at least 1"),
        ("train-reward", {"export_artifact_id": 1, "data": "x.jsonl"}, "give export_artifact_id or data, not both"),
        ("train-reward", {"export_options": {"min_votes": 0}}, "min_votes 0: must be at least 1"),
        ("train-reward", {"export_options": {"bogus": 1}}, r"unknown field\(s\) bogus"),
        ("ppo", {"prompts": "p.jsonl"}, "ppo: field 'reward' .* or 'reward_artifact_id' is required"),
        ("ppo", {"reward": "rm", "prompts": "p.jsonl", "batch_size": 3}, "must be divisible by 'num_mini_batches'"),
        ("ppo", {"reward": "rm", "out": "elsewhere"}, r"ppo: unknown field\(s\) out"),
    ]
    for kind, params, message in cases:
        with pytest.raises(InvalidJobParams, match=message):
            submit_job(sqlite_engine, SYSTEM, kind, params, project="proj", registry=KINDS)
    # a project is required exactly when the kind reads one
    with pytest.raises(InvalidJobParams, match="train-reward: a project is required"):
        submit_job(sqlite_engine, SYSTEM, "train-reward", {}, registry=KINDS)
    assert submit_job(sqlite_engine, SYSTEM, "train-reward", {"data": "x.jsonl"}, registry=KINDS).project_id is None
    with pytest.raises(InvalidJobParams, match="ppo: a project is required"):
        submit_job(sqlite_engine, SYSTEM, "ppo", {"reward": "rm"}, registry=KINDS)
    assert submit_job(sqlite_engine, SYSTEM, "ppo", {"reward": "rm", "prompts": "p.jsonl"}, registry=KINDS).params["lora_r"] == 16


# --------------------------------------------------------------------------- end to end through the worker

GOOD, BAD = "good helpful honest", "bad unsafe worse"
FILLER = "the a is to of and in it this that yes no please thanks hello world cat dog tree sky blue".split()


def seed_preference_project(engine, name: str = "proj", n_prompts: int = 24, seed: int = 0) -> int:
    """A project where two annotators always prefer the response ending GOOD over the one ending BAD."""
    rng = random.Random(seed)
    with session_scope(engine, write=True) as session:
        project = Project(name=name)
        annotators = [User(username=f"{name}-ann{i}", role="annotator") for i in range(2)]
        session.add_all([project, *annotators])
        session.flush()
        for i in range(n_prompts):
            text = " ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 8)))
            prompt = Prompt(project_id=project.id, content_hash=f"p{i}", text=text)
            session.add(prompt)
            session.flush()
            shared = " ".join(rng.choice(FILLER) for _ in range(rng.randint(1, 5)))
            good = Response(prompt_id=prompt.id, content_hash=f"g{i}", text=f"{shared} {GOOD}", model_name="m-good")
            bad = Response(prompt_id=prompt.id, content_hash=f"b{i}", text=f"{shared} {BAD}", model_name="m-bad")
            session.add_all([good, bad])
            session.flush()
            a_is_good = i % 2 == 0
            task = Task(
                project_id=project.id, kind="pairwise", prompt_id=prompt.id, content_hash=f"t{i}", annotation_count=2,
                response_a_id=(good if a_is_good else bad).id, response_b_id=(bad if a_is_good else good).id,
            )
            session.add(task)
            session.flush()
            for user in annotators:
                session.add(Preference(task_id=task.id, user_id=user.id, choice="a" if a_is_good else "b", strength=1, shown_left="a"))
        return project.id


def run_one_job(engine, tmp_path) -> Worker:
    worker = Worker(
        engine,
        WorkerConfig(poll_interval_s=0.05, heartbeat_interval_s=0.5, report_interval_s=0.2, artifacts_dir=tmp_path / "artifacts", log_dir=tmp_path / "logs"),
    )
    worker.run(once=True)
    return worker


def test_export_job_writes_a_recorded_export(engine, tmp_path):
    from rlhf.export import read_export_rows, read_manifest

    seed_preference_project(engine, n_prompts=6)
    job = submit_job(engine, SYSTEM, "export", {"test_size": 0.5, "output": "jsonl"}, project="proj", registry=KINDS)
    run_one_job(engine, tmp_path)

    done = get_job(engine, job.id)
    assert (done.status, done.message, done.progress) == ("done", "exported 6 rows", 1.0), done.traceback
    [artifact] = job_artifacts(engine, job.id)
    path = Path(artifact.path)
    assert path.parent == (tmp_path / "artifacts" / "export" / f"{job.id}-{artifact.name}").resolve()
    assert path.name == "trl-proj.jsonl"
    rows = read_export_rows(path)
    assert len(rows) == 6 and set(rows["split"]) == {"train", "test"}
    assert artifact.content_hash == read_manifest(path).content_hash
    assert (artifact.project_id, artifact.metrics["rows"], artifact.lineage["format"]) == (done.project_id, 6, "trl")
    assert list((tmp_path / "artifacts" / ".tmp").iterdir()) == []


def test_export_job_with_nothing_to_export_fails_cleanly(sqlite_engine, tmp_path):
    with session_scope(sqlite_engine, write=True) as session:
        session.add(Project(name="empty"))
    job = submit_job(sqlite_engine, SYSTEM, "export", {}, project="empty", registry=KINDS)
    run_one_job(sqlite_engine, tmp_path)
    failed = get_job(sqlite_engine, job.id)
    assert failed.status == "failed"
    assert failed.error.startswith("ExportError: project") and "no usable preference pairs" in failed.error
    assert "Traceback (most recent call last)" in failed.traceback
    assert sorted(p.name for p in (tmp_path / "artifacts").iterdir()) == [".tmp"]


# --------------------------------------------------------------------------- the loop, one job at a time (slow: each job's child loads torch)


def tiny_reward_params(tiny_model_dir) -> dict:
    return {
        "base_model": str(tiny_model_dir), "max_steps": 12, "batch_size": 8, "learning_rate": 3e-3, "lora_r": 4,
        "logging_steps": 2, "max_length": 64, "device": "cpu", "save_steps": 1000, "eval_fraction": 0.25,
    }


def tiny_ppo_params(tiny_model_dir) -> dict:
    return {
        "policy": str(tiny_model_dir), "device": "cpu", "total_iterations": 1, "batch_size": 4, "num_mini_batches": 2,
        "ppo_epochs": 1, "response_length": 6, "lora_r": 4, "lora_alpha": 8, "value_adapter_layers": 1, "checkpoint_every": 1,
        "sample_count": 2, "learning_rate": 5e-3,
    }


@pytest.fixture(scope="module")
def loop(tiny_model_dir, tmp_path_factory):
    """A SQLite database with the preference project, and where the jobs' artifacts go."""
    from rlhf.db import init_database, make_engine

    root = tmp_path_factory.mktemp("loop")
    engine = make_engine(f"sqlite:///{root / 'loop.db'}")
    init_database(engine)
    seed_preference_project(engine)
    yield {"engine": engine, "root": root, "model": tiny_model_dir}
    engine.dispose()


def run_job(loop, kind: str, params: dict):
    job = submit_job(loop["engine"], SYSTEM, kind, params, project="proj", registry=KINDS)
    run_one_job(loop["engine"], loop["root"])
    done = get_job(loop["engine"], job.id)
    assert done.status == "done", f"{done.error}\n{done.traceback}"
    return done


@pytest.fixture(scope="module")
def reward_job(loop):
    return run_job(loop, "train-reward", tiny_reward_params(loop["model"]))


@pytest.fixture(scope="module")
def ppo_job(loop, reward_job):
    _, reward = job_artifacts(loop["engine"], reward_job.id)
    return run_job(loop, "ppo", tiny_ppo_params(loop["model"]) | {"reward_artifact_id": reward.id})


@pytest.mark.slow
def test_reward_training_job_end_to_end(loop, reward_job):
    """Project → export (artifact) → reward model (artifact, parent: the export) through a real worker child."""
    from rlhf.reward import RewardModel

    engine = loop["engine"]
    assert reward_job.message.startswith("held-out accuracy")
    export, reward = job_artifacts(engine, reward_job.id)
    assert (export.kind, reward.kind) == ("export", "reward_model")
    assert reward.parent_ids == [export.id]
    assert [a.id for a in artifact_lineage(engine, reward.id)] == [reward.id, export.id]
    assert reward.lineage["export_hash"] == export.content_hash
    assert Path(reward.path) == (loop["root"] / "artifacts" / "reward_model" / f"{reward_job.id}-reward-proj").resolve()

    points = job_metrics(engine, reward_job.id)
    losses = [p.values["loss"] for p in points if "loss" in p.values]
    assert len(losses) >= 3 and losses[-1] < losses[0], "the loss series reached the database"
    assert "held_out/accuracy" in points[-1].values
    assert "exported 24 rows" in reward_job.log_tail

    model = RewardModel.load(reward.path, device="cpu")
    good, bad = model.score(["hello world", "cat dog"], [f"the sky {GOOD}", f"the sky {BAD}"])
    assert float(good) > float(bad), "the trained reward model prefers what the annotators preferred"
    assert list((loop["root"] / "artifacts" / ".tmp").iterdir()) == []


@pytest.mark.slow
def test_ppo_then_generate_jobs_close_the_loop_with_lineage(loop, reward_job, ppo_job):
    """reward model → PPO policy (artifact) → a generated round in the project; lineage walks back to the export."""
    from sqlmodel import select

    engine = loop["engine"]
    export, reward = job_artifacts(engine, reward_job.id)
    [policy] = job_artifacts(engine, ppo_job.id)
    assert (policy.kind, policy.parent_ids) == ("policy", [reward.id])
    assert (Path(policy.path) / "adapter_config.json").is_file() and policy.content_hash == policy.lineage["adapter_sha256"]
    assert ppo_job.message == "1 PPO iterations"
    assert job_metrics(engine, ppo_job.id), "PPO reported its metrics"

    generated = run_job(loop, "generate", {"policy_artifact_id": policy.id, "round": 1, "max_new_tokens": 4, "limit": 4})
    [round_artifact] = job_artifacts(engine, generated.id)
    assert round_artifact.kind == "generation" and round_artifact.job_id == generated.id
    assert [a.kind for a in artifact_lineage(engine, round_artifact.id)] == ["generation", "policy", "reward_model", "export"]
    with session_scope(engine) as session:
        new = session.exec(select(Response).where(Response.round == 1)).all()
    assert len(new) == 4 and generated.message.startswith("round 1: 4 responses")


@pytest.mark.slow
def test_dpo_job_trains_on_a_recorded_export(loop, reward_job):
    engine = loop["engine"]
    export, _ = job_artifacts(engine, reward_job.id)
    params = {"export_artifact_id": export.id, "policy": str(loop["model"]), "device": "cpu", "max_steps": 2, "batch_size": 2,
              "lora_r": 4, "lora_alpha": 8, "max_length": 64, "learning_rate": 1e-3, "logging_steps": 1, "save_steps": 1000}
    done = run_job(loop, "dpo", params)
    [policy] = job_artifacts(engine, done.id)
    assert (policy.kind, policy.parent_ids, done.message) == ("policy", [export.id], "DPO: 2 steps")
    assert (Path(policy.path) / "adapter_model.safetensors").is_file()
