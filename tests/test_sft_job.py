"""The `sft` job kind: params checked at submit, and a run through a real worker child that records a policy artifact."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlhf.job_kinds import KINDS, describe_kinds
from rlhf.jobs import InvalidJobParams, get_job, job_artifacts, job_metrics, submit_job
from rlhf.roles import SYSTEM

from test_job_kinds import run_one_job
from test_sft import sft_file


def test_sft_kind_is_described_with_its_config_fields():
    entry = describe_kinds(KINDS)["sft"]
    names = [p["name"] for p in entry["params"]]
    assert entry["available"] and {"export_artifact_id", "data", "policy_artifact_id", "method", "optim", "max_length"} <= set(names)
    assert not {"out", "resume", "overwrite", "project", "database_url"} & set(names)  # the job decides those


def test_sft_params_are_checked_at_submit(sqlite_engine):
    with pytest.raises(InvalidJobParams, match="method"):
        submit_job(sqlite_engine, SYSTEM, "sft", {"data": "d.jsonl", "method": "half"}, registry=KINDS)
    with pytest.raises(InvalidJobParams, match="give export_artifact_id or data, not both"):
        submit_job(sqlite_engine, SYSTEM, "sft", {"data": "d.jsonl", "export_artifact_id": 1}, registry=KINDS)
    job = submit_job(sqlite_engine, SYSTEM, "sft", {"data": "d.jsonl", "method": "qlora", "optim": "paged_adamw_8bit"}, registry=KINDS)
    assert job.project_id is None and job.params["lora_r"] == 16  # a paged optimiser is for the worker's device to judge


def test_sft_without_data_needs_a_project_and_an_sft_export(sqlite_engine, monkeypatch):
    import rlhf.export

    monkeypatch.setattr(rlhf.export, "EXPORT_FORMATS", ("trl", "ratings", "raw"))
    with pytest.raises(InvalidJobParams, match="cannot export a project's demonstrations"):
        submit_job(sqlite_engine, SYSTEM, "sft", {}, registry=KINDS)


@pytest.mark.slow
def test_sft_job_trains_and_records_a_policy_with_its_loss_series(tiny_model_dir, tmp_path):
    from rlhf.db import init_database, make_engine
    from rlhf.models import resolve_model

    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    init_database(engine)
    params = {"data": str(sft_file(tmp_path / "demos.jsonl")), "policy": str(tiny_model_dir), "device": "cpu", "max_steps": 3,
              "batch_size": 4, "lora_r": 4, "lora_alpha": 8, "max_length": 64, "learning_rate": 1e-2, "logging_steps": 1}
    job = submit_job(engine, SYSTEM, "sft", params, registry=KINDS)
    run_one_job(engine, tmp_path)
    done = get_job(engine, job.id)
    assert done.status == "done", f"{done.error}\n{done.traceback}"
    assert done.message.startswith("SFT (lora): 3 steps, held-out loss")
    [policy] = job_artifacts(engine, job.id)
    assert policy.kind == "policy" and policy.content_hash == policy.lineage["weights_sha256"]
    assert resolve_model(policy.path).kind == "adapter" and Path(policy.path, "metrics.json").is_file()
    points = job_metrics(engine, job.id)
    losses = [p.values["loss"] for p in points if "loss" in p.values]
    assert len(losses) == 3  # the live loss series the Training page charts
    assert points[-1].values["held_out/loss_after"] < points[-1].values["held_out/loss_before"]
    engine.dispose()
