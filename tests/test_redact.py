"""Credentials never reach what we record: lineage.json, checkpoints, artifacts, job rows and job logs (issue 16, item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlmodel import select

from rlhf.db import session_scope
from rlhf.job_kinds import ArtifactRecord, JobKind, JobResult
from rlhf.jobs import InvalidJobParams, append_log_lines, claim_next_job, get_job, submit_job
from rlhf.redact import REDACTED, is_secret_key, redact, redact_text, redact_url
from rlhf.roles import SYSTEM
from rlhf.schema import Artifact, Job, JobMetric

PASSWORD = "s3cret-Pa55"
URL = f"postgresql+psycopg://rlhf:{PASSWORD}@db.example:5432/rlhf"


# ------------------------------------------------------------------------------------ helper


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (URL, f"postgresql+psycopg://rlhf:{REDACTED}@db.example:5432/rlhf"),
        ("postgresql://rlhf:p@ss@db/rlhf?sslmode=require", f"postgresql://rlhf:{REDACTED}@db/rlhf?sslmode=require"),
        ("postgresql://postgres@127.0.0.1:5432/test", "postgresql://postgres@127.0.0.1:5432/test"),  # no password: unchanged
        ("sqlite:////data/rlhf.db", "sqlite:////data/rlhf.db"),
        ("http://host:8080/path", "http://host:8080/path"),
        ("postgresql://u@db/x?password=abc&sslmode=require", f"postgresql://u@db/x?password={REDACTED}&sslmode=require"),
        ("connection failed: host=db user=u password=abc dbname=x", f"connection failed: host=db user=u password={REDACTED} dbname=x"),
        ("HF_TOKEN=hf_abc api_key: sk-1 token=xyz", f"HF_TOKEN={REDACTED} api_key: {REDACTED} token={REDACTED}"),
        ('{"db_password": "x1"}', f'{{"db_password": "{REDACTED}"}}'),
        ("Authorization: Bearer abc.def", f"Authorization: {REDACTED} {REDACTED}"),
        ("max_new_tokens=5 pad_token=<pad> num_tokens: 7", "max_new_tokens=5 pad_token=<pad> num_tokens: 7"),
    ],
)
def test_redact_text(text, expected):
    assert redact_text(text) == expected
    assert redact_text(expected) == expected  # redacting twice changes nothing


def test_redact_url_uses_sqlalchemy_and_the_query_string():
    assert redact_url(URL) == f"postgresql+psycopg://rlhf:{REDACTED}@db.example:5432/rlhf"
    assert redact_url("postgresql+psycopg://rlhf:p%40ss@db/rlhf") == f"postgresql+psycopg://rlhf:{REDACTED}@db/rlhf"
    assert redact_url("postgresql://u@db/x?password=abc") == f"postgresql://u@db/x?password={REDACTED}"


def test_redact_nested_values_and_secret_keys():
    value = {
        "database_url": URL,
        "hf_token": "hf_abc",
        "password": None,
        "max_new_tokens": 3,
        "pad_token": "<pad>",
        "nested": [{"OPENAI_API_KEY": "sk-1"}, ("note: password=abc",)],
    }
    assert redact(value) == {
        "database_url": f"postgresql+psycopg://rlhf:{REDACTED}@db.example:5432/rlhf",
        "hf_token": REDACTED,
        "password": None,  # "no password" still reads as such
        "max_new_tokens": 3,
        "pad_token": "<pad>",
        "nested": [{"OPENAI_API_KEY": REDACTED}, (f"note: password={REDACTED}",)],
    }
    assert value["hf_token"] == "hf_abc"  # a copy: the input is not modified
    assert [k for k in ("password", "db_password", "hf_token", "api-key", "client_secret") if not is_secret_key(k)] == []
    assert [k for k in ("tokens", "tokenizer", "eos_token", "password_hash", "max_new_tokens") if is_secret_key(k)] == []


_PASSWORD_CHARS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$%*+=/@:", min_size=1, max_size=30)
_AROUND = st.text(alphabet="abc xyz()=,;:\n\t{}[]", max_size=20)


@given(password=_PASSWORD_CHARS, before=_AROUND, after=_AROUND, scheme=st.sampled_from(["postgresql+psycopg", "postgresql", "mysql", "https"]))
def test_a_url_password_never_survives_in_any_surrounding_text(password, before, after, scheme):
    secret = "Q7" + password  # a marker the surrounding alphabet cannot spell
    text = f"{before}{scheme}://user:{secret}@host:5432/db{after}"
    redacted = redact_text(text)
    assert secret not in redacted and f"{scheme}://user:{REDACTED}@" in redacted


# ---------------------------------------------------------------------------------- lineage


def test_ppo_run_with_a_postgres_url_records_no_password(tiny_model_dir, tmp_path):
    """`rlhf ppo` takes `database_url` from RLHF_DATABASE_URL; lineage.json and checkpoints recorded it verbatim."""
    import torch

    from rlhf.ppo import PPOConfig
    from rlhf.ppo.reward import CallableReward
    from rlhf.ppo.trainer import train_ppo

    prompts_file = tmp_path / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["hello world", "who are you", "what is two plus three", "the sky"]))
    out = tmp_path / "run"
    config = PPOConfig(
        policy=str(tiny_model_dir), prompts=str(prompts_file), out=str(out), database_url=URL, device="cpu", total_iterations=1,
        batch_size=4, num_mini_batches=2, ppo_epochs=1, response_length=4, lora_r=4, lora_alpha=8, value_adapter_layers=1,
        checkpoint_every=1, sample_count=1,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_ppo(config, reward_function=CallableReward(lambda prompts, responses: [float(len(r)) for r in responses]))
    finally:
        torch.set_num_threads(threads)

    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["config"]["database_url"] == f"postgresql+psycopg://rlhf:{REDACTED}@db.example:5432/rlhf"
    assert result.lineage == lineage
    written = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".jsonl", ".md")]
    assert any(p.name == "state.json" for p in written)  # the checkpoint records the config too
    assert [str(p) for p in written if PASSWORD in p.read_text()] == []


def test_generation_round_does_not_copy_a_password_from_the_policys_lineage(engine, tiny_model_dir, tmp_path):
    """A policy trained before redaction carries the URL in its lineage.json; the generation artifact must not copy it."""
    from peft import get_peft_model

    from rlhf.generate import generate_round
    from rlhf.importer import import_records
    from rlhf.models import load_causal_lm, lora_config

    policy = tmp_path / "policy"
    get_peft_model(load_causal_lm(tiny_model_dir, device="cpu"), lora_config("CAUSAL_LM", r=2)).save_pretrained(policy)
    (policy / "lineage.json").write_text(json.dumps({"kind": "ppo", "base_model": str(tiny_model_dir), "config": {"database_url": URL}}))
    import_records(engine, [{"prompt": "hello", "responses": [{"text": "hi", "model": "base"}]}], "loop", make_rating_tasks=False, max_pairs_per_prompt=0)

    summary = generate_round(engine, SYSTEM, policy=policy, project="loop", round=1, n=1, max_new_tokens=3, seed=0)

    with session_scope(engine) as session:
        artifact = session.get(Artifact, summary.artifact_id)
    assert artifact.lineage["policy_lineage"]["config"]["database_url"] == f"postgresql+psycopg://rlhf:{REDACTED}@db.example:5432/rlhf"
    assert PASSWORD not in json.dumps(artifact.lineage)


# ------------------------------------------------------------------------------------ jobs


def _leaky_run(engine, job, params, reporter, workdir: Path) -> JobResult:
    reporter.log(f"connecting to {URL}")
    reporter.metrics(1, {"loss": 0.5})
    if params.get("fail"):
        raise ConnectionError(f'connection to "{URL}" failed: password authentication failed (password={PASSWORD})')
    (workdir / "out.txt").write_text("x")
    record = ArtifactRecord(kind="export", name="leaky", path=str(workdir / "out.txt"), lineage={"database_url": URL, "token": "abc"}, metrics={"n": 1})
    return JobResult(artifacts=[record], metrics={"n": 1}, message=f"done against {URL}")


LEAKY = {"leaky": JobKind("leaky", "logs and fails with a database URL", lambda p: dict(p), _leaky_run)}


def _job_text(engine, job_id: int) -> str:
    """Everything stored about the job: its row, its metrics and its artifacts."""
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
        metrics = list(session.exec(select(JobMetric).where(JobMetric.job_id == job_id)))
        artifacts = list(session.exec(select(Artifact).where(Artifact.job_id == job_id)))
        return json.dumps(
            [job.model_dump(), [m.model_dump() for m in metrics], [a.model_dump() for a in artifacts]], default=str
        )


@pytest.mark.parametrize("fail", [False, True], ids=["done", "failed"])
def test_job_row_log_and_artifacts_carry_no_password(engine, tmp_path, capsys, fail):
    from rlhf.worker import execute_job

    job = submit_job(engine, SYSTEM, "leaky", {"fail": fail}, registry=LEAKY)
    assert claim_next_job(engine, "w1") is not None
    workdir = tmp_path / "work"
    workdir.mkdir()

    execute_job(engine, job.id, "w1", workdir, tmp_path / "artifacts", LEAKY, report_interval_s=0.0)

    stored = _job_text(engine, job.id)
    assert get_job(engine, job.id).status == ("failed" if fail else "done")
    assert "connecting to postgresql+psycopg://rlhf:***@db.example" in stored
    assert PASSWORD not in stored
    assert PASSWORD not in capsys.readouterr().out  # the job's output: the worker's log file for the job


def test_params_carrying_a_credential_are_refused_and_nothing_is_queued(engine):
    with pytest.raises(InvalidJobParams, match="must not carry credentials"):
        submit_job(engine, SYSTEM, "leaky", {"database_url": URL}, registry=LEAKY)
    with pytest.raises(InvalidJobParams, match="must not carry credentials"):
        submit_job(engine, SYSTEM, "leaky", {"hf_token": "hf_abc"}, registry=LEAKY)
    with session_scope(engine) as session:
        assert session.exec(select(Job)).first() is None
    assert submit_job(engine, SYSTEM, "leaky", {"prompts": "postgresql://postgres@db/x"}, registry=LEAKY).params == {"prompts": "postgresql://postgres@db/x"}


def test_log_lines_are_redacted_as_they_are_kept():
    assert append_log_lines("", [f"a {URL}", "b"]) == f"a postgresql+psycopg://rlhf:{REDACTED}@db.example:5432/rlhf\nb"
