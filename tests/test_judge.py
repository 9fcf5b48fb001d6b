"""Model judges (issue 19): templates, reply parsing, both orders, storage as judge:<name> with lineage, resuming."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st
from sqlmodel import Session, select

from engine_fixtures import build_project, rows_where as _rows
from rlhf.judge.parse import parse_pair_reply, parse_rating_reply
from rlhf.judge.run import JudgeError, JudgeOptions, judge_project, judge_username, pair_verdict
from rlhf.judge.client import ChatReply
from rlhf.judge.templates import DEFAULT_PAIR_TEMPLATE, JudgeTemplates, TemplateError, load_templates
from rlhf.roles import SYSTEM
from rlhf.schema import Judgment, Preference, Rating, User
from rlhf.simulation.judge import UNPARSABLE_REPLY, SimulatedJudge

RUBRIC = [{"name": "helpfulness", "min": 1, "max": 7}, {"name": "honesty", "min": 1, "max": 5}]


# --------------------------------------------------------------------------- templates


def test_default_templates_carry_the_guidelines_and_rubric():
    templates = JudgeTemplates(max_guideline_chars=10)
    text = templates.pair_prompt(prompt="P?", first="one", second="two", guidelines="Be kind and thorough always.")
    assert "Response A:\none" in text and "Response B:\ntwo" in text and "Be kind an" in text and "thorough" not in text
    rating = templates.rating_prompt(prompt="P?", response="r", rubric=RUBRIC, guidelines="")
    assert "helpfulness (1-7)" in rating and '{"helpfulness": 7, "honesty": 5}' in rating and "Guidelines" not in rating


def test_a_template_without_a_required_field_is_refused_naming_the_file_and_field(tmp_path):
    path = tmp_path / "pair.txt"
    path.write_text("Judge {prompt} and {first}.")
    with pytest.raises(TemplateError, match=r"pair\.txt.*\{second\}"):
        load_templates(pair_template=path)
    path.write_text("{prompt} {first} {second} {colour}")
    with pytest.raises(TemplateError, match=r"unknown field.*\{colour\}"):
        load_templates(pair_template=path)
    path.write_text("{prompt} {first} {second} {")
    with pytest.raises(TemplateError, match="pair.txt"):
        load_templates(pair_template=path)
    with pytest.raises(TemplateError, match="cannot read"):
        load_templates(rating_template=tmp_path / "missing.txt")


def test_a_template_file_overrides_and_changes_the_hash(tmp_path):
    path = tmp_path / "pair.txt"
    path.write_text("Q: {prompt}\n1) {first}\n2) {second}\nSay Verdict: A or B. {{literal}}")
    templates = load_templates(pair_template=path)
    assert templates.pair_prompt(prompt="x", first="y", second="z", guidelines="g").endswith("{literal}")
    assert templates.hash_for("pairwise") != JudgeTemplates().hash_for("pairwise")
    assert templates.hash_for("rating") == JudgeTemplates().hash_for("rating")
    assert JudgeTemplates(pair=DEFAULT_PAIR_TEMPLATE).hash_for("pairwise") == JudgeTemplates().hash_for("pairwise")


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, expected", [
    ("Verdict: A", "a"), ("verdict - b", "b"), ("**Verdict:** tie", "tie"), ("I think... Verdict: A\nVerdict: B", "b"),
    ("[[A]]", "a"), ("[[C]]", "tie"), ("B", "b"), (" a. Response A is better", "a"), ("The answer is:\n\nB", "b"),
    ("Apples are nice", None), ("", None), ("Both responses have merits", None), (None, None),
])
def test_pair_replies(text, expected):
    assert parse_pair_reply(text) == expected


@pytest.mark.parametrize("text, expected", [
    ('{"helpfulness": 6, "honesty": 2}', {"helpfulness": 6, "honesty": 2}),
    ('Sure! {"Helpfulness": 6.0, "honesty": "3"} done', {"helpfulness": 6, "honesty": 3}),
    ("helpfulness: 4\nhonesty = 5", {"helpfulness": 4, "honesty": 5}),
    ('{"helpfulness": 9, "honesty": 2}', None),  # out of scale
    ('{"helpfulness": 5}', None),  # a dimension missing
    ('{"helpfulness": true, "honesty": 2}', None),
    ("no scores here", None),
])
def test_rating_replies(text, expected):
    assert parse_rating_reply(text, RUBRIC) == expected


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parsers_never_raise(text):
    assert parse_pair_reply(text) in (None, "a", "b", "tie")
    scores = parse_rating_reply(text, RUBRIC)
    assert scores is None or (1 <= scores["helpfulness"] <= 7 and 1 <= scores["honesty"] <= 5)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40), st.sampled_from(["A", "B", "tie"]))
def test_a_verdict_line_after_any_text_is_read(prefix, choice):
    assert parse_pair_reply(f"{prefix}\nVerdict: {choice}") == choice.lower()


def test_both_orders_make_the_verdict():
    r = lambda text: ChatReply(text=text)  # noqa: E731
    assert pair_verdict({"ab": r("Verdict: A"), "ba": r("Verdict: B")}) == ("parsed", {"choice": "a", "orders": {"ab": "a", "ba": "a"}})
    assert pair_verdict({"ab": r("Verdict: A"), "ba": r("Verdict: A")})[0] == "inconsistent"  # the first shown, twice
    assert pair_verdict({"ab": r("Verdict: tie"), "ba": r("Verdict: B")})[0] == "inconsistent"  # not counted as a tie
    assert pair_verdict({"ab": r("tie"), "ba": r("tie")})[1]["choice"] == "tie"
    assert pair_verdict({"ab": r("Verdict: A"), "ba": ChatReply(text=None, error="HTTP 400")})[0] == "unparsed"


def test_judge_names():
    assert judge_username("gpt-4o") == "judge:gpt-4o" and judge_username("judge:x") == "judge:x"
    with pytest.raises(JudgeError):
        judge_username("no spaces")


# --------------------------------------------------------------------------- runs


def test_a_run_stores_verdicts_as_the_external_judge_with_lineage_and_resumes(engine):
    built = build_project(engine, n_pairwise=12, n_rating=6, name="judged")
    judge = SimulatedJudge(position_bias=0.4, unparsable_rate=0.15, seed=3)
    first = judge_project(engine, SYSTEM, "judged", judge, JudgeOptions(name="sim", limit=10, batch_tasks=4))
    assert first.pending == 10 and first.judged == 10
    user = _rows(engine, User, username="judge:sim")[0]
    assert user.role == "external" and user.password_hash is None

    second = judge_project(engine, SYSTEM, "judged", judge, JudgeOptions(name="sim", batch_tasks=4))
    assert second.pending == 8 and second.judged == 8
    assert judge_project(engine, SYSTEM, "judged", judge, JudgeOptions(name="sim")).pending == 0  # never twice

    judgments = _rows(engine, Judgment, user_id=user.id)
    assert sorted(j.task_id for j in judgments) == sorted(built.pairwise_ids + built.rating_ids)
    preferences = {p.task_id: p for p in _rows(engine, Preference, user_id=user.id)}
    ratings = {r.task_id: r for r in _rows(engine, Rating, user_id=user.id)}
    statuses = {j.status for j in judgments}
    assert {"parsed", "inconsistent", "unparsed"} <= statuses
    for j in judgments:
        assert j.model["backend"] == "simulated" and j.model["position_bias"] == 0.4
        assert j.template_hash == JudgeTemplates().hash_for(j.kind)
        if j.kind == "pairwise":
            assert [r["order"] for r in j.raw] == ["ab", "ba"]
            if j.status == "parsed":
                assert preferences[j.task_id].choice == j.verdict["choice"] == j.verdict["orders"]["ab"] == j.verdict["orders"]["ba"]
            else:  # inconsistent and unparsed pairs are no label (not a tie)
                assert j.task_id not in preferences
            if j.status == "unparsed":
                assert any(r["text"] == UNPARSABLE_REPLY for r in j.raw)
            if j.status == "inconsistent":
                assert j.verdict["orders"]["ab"] != j.verdict["orders"]["ba"] and j.verdict["choice"] is None
        else:
            assert (j.task_id in ratings) == (j.status == "parsed")
            if j.status == "parsed":
                assert ratings[j.task_id].scores == j.verdict["scores"] == json.loads(j.raw[0]["text"])


def test_a_human_account_cannot_be_a_judge(engine):
    from engine_fixtures import add_annotators

    build_project(engine, n_pairwise=2, name="p")
    with Session(engine) as session:
        session.add(User(username="judge:alice", role="annotator"))
        session.commit()
    with pytest.raises(JudgeError, match="external"):
        judge_project(engine, SYSTEM, "p", SimulatedJudge(), JudgeOptions(name="alice"))
    assert add_annotators  # the fixture module is importable here


def test_an_annotator_cannot_run_a_judge(engine):
    from engine_fixtures import add_annotators
    from rlhf.roles import PermissionDenied

    build_project(engine, n_pairwise=2, name="p")
    (annotator,) = add_annotators(engine, 1)
    with pytest.raises(PermissionDenied):
        judge_project(engine, annotator, "p", SimulatedJudge(), JudgeOptions(name="x"))


def test_the_local_judge_batched_gives_the_same_replies_as_one_at_a_time(sqlite_engine, tiny_model_dir):
    from rlhf.judge.backends import LocalJudge

    build_project(sqlite_engine, n_pairwise=3, n_rating=2, name="tiny")
    batched = LocalJudge(str(tiny_model_dir), batch_size=8, device="cpu")
    options = JudgeOptions(name="tiny", pair_max_tokens=6, rating_max_tokens=6)
    summary = judge_project(sqlite_engine, SYSTEM, "tiny", batched, options)
    assert summary.judged == 5
    first = {(j.task_id): [r["text"] for r in j.raw] for j in _rows(sqlite_engine, Judgment)}
    with Session(sqlite_engine) as session:
        for j in session.exec(select(Judgment)):
            session.delete(j)
        for table in (Preference, Rating):
            for row in session.exec(select(table)):
                session.delete(row)
        session.commit()
    # The reference is model.generate on one full prompt at a time (no shared-prefix cache).
    single = LocalJudge(str(tiny_model_dir), batch_size=1, device="cpu", shared_prefix=False)
    judge_project(sqlite_engine, SYSTEM, "tiny", single, options)
    again = {(j.task_id): [r["text"] for r in j.raw] for j in _rows(sqlite_engine, Judgment)}
    assert again == first
    assert all(j.model["backend"] == "local" and j.model["decoding"] == "greedy" for j in _rows(sqlite_engine, Judgment))


def _judgment_task_ids(url: str) -> list[int]:
    from rlhf.db import make_engine

    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return list(session.exec(select(Judgment.task_id)))
    finally:
        engine.dispose()


@pytest.mark.slow
def test_a_judge_killed_with_sigkill_resumes_without_losing_or_duplicating(tmp_path, tiny_model_dir):
    from rlhf.db import init_database, make_engine

    url = f"sqlite:///{tmp_path / 'judge.db'}"
    engine = make_engine(url)
    init_database(engine)
    built = build_project(engine, n_pairwise=40, name="killed")
    engine.dispose()
    command = [sys.executable, "-c", "from rlhf.cli import main; main()", "judge", "--project", "killed", "--model", str(tiny_model_dir), "--name", "tiny",
               "--batch-tasks", "1", "--batch-size", "2", "--device", "cpu", "--pair-max-tokens", "12", "--database-url", url]
    env = {**os.environ, "RLHF_JOB_THREADS": "1", "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(_judgment_task_ids(url)) < 3 and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    before = _judgment_task_ids(url)
    assert 3 <= len(before) < 40, "the run was not killed mid-way"
    finished = subprocess.run(command + ["--json"], env=env, capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr
    summary = json.loads(finished.stdout)
    after = _judgment_task_ids(url)
    assert summary["pending"] == 40 - len(before) and summary["judged"] == summary["pending"]
    assert sorted(after) == sorted(built.pairwise_ids)  # every task once: nothing lost, nothing twice
    assert set(before) <= set(after)


def test_the_cli_refuses_two_judges_and_a_bad_template(engine, db_url, tmp_path):
    from typer.testing import CliRunner

    from rlhf.cli import app

    build_project(engine, n_pairwise=2, name="cli")
    url = db_url
    runner = CliRunner()
    result = runner.invoke(app, ["judge", "--project", "cli", "--simulated", "--reward", str(tmp_path), "--database-url", url])
    assert result.exit_code == 2 and "exactly one judge" in result.output
    bad = tmp_path / "t.txt"
    bad.write_text("{prompt}")
    result = runner.invoke(app, ["judge", "--project", "cli", "--simulated", "--pair-template", str(bad), "--database-url", url])
    assert result.exit_code == 2 and "{first}" in result.output
    result = runner.invoke(app, ["judge", "--project", "cli", "--simulated", "--json", "--database-url", url])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["judged"] == 2


@pytest.mark.slow
def test_a_judge_job_runs_through_the_worker(tmp_path):
    from rlhf.db import init_database, make_engine
    from rlhf.job_kinds import KINDS
    from rlhf.jobs import InvalidJobParams, get_job, submit_job
    from test_job_kinds import run_one_job

    engine = make_engine(f"sqlite:///{tmp_path / 'jobs.db'}")
    init_database(engine)
    build_project(engine, n_pairwise=6, n_rating=2, name="jobbed")
    with pytest.raises(InvalidJobParams, match="exactly one judge"):
        submit_job(engine, SYSTEM, "judge", {"simulated": True, "model": "x"}, project="jobbed", registry=KINDS)
    job = submit_job(engine, SYSTEM, "judge", {"simulated": True, "sim_position_bias": 0.2, "name": "sim-job"}, project="jobbed", registry=KINDS)
    run_one_job(engine, tmp_path)
    done = get_job(engine, job.id)
    assert done.status == "done", f"{done.error}\n{done.traceback}"
    assert "8 of 8 pending tasks judged" in done.message
    assert len(_rows(engine, Judgment)) == 8
    engine.dispose()


def test_an_endpoint_failing_mid_run_keeps_the_whole_batches_before_it_and_a_rerun_finishes(engine):
    """The server goes away after the first batch: that batch stays stored, the error is raised, nothing is half-written."""
    from rlhf.judge.client import EndpointError

    build_project(engine, n_pairwise=6, name="flaky")

    class GoesAway(SimulatedJudge):
        calls = 0

        def complete_many(self, requests, **options):
            GoesAway.calls += 1
            if GoesAway.calls == 2:
                raise EndpointError("http://127.0.0.1:9/v1/chat/completions: cannot reach the server after 4 tries")
            return super().complete_many(requests, **options)

    judge = GoesAway(noise=0.0, seed=1)
    with pytest.raises(EndpointError, match="cannot reach"):
        judge_project(engine, SYSTEM, "flaky", judge, JudgeOptions(name="flaky", kinds=("pairwise",), batch_tasks=2))
    user = _rows(engine, User, username="judge:flaky")[0]
    assert len(_rows(engine, Judgment, user_id=user.id)) == 2  # the first batch, whole
    rerun = judge_project(engine, SYSTEM, "flaky", judge, JudgeOptions(name="flaky", kinds=("pairwise",), batch_tasks=2))
    assert rerun.pending == 4 and rerun.judged == 4
    judged = [j.task_id for j in _rows(engine, Judgment, user_id=user.id)]
    assert len(judged) == len(set(judged)) == 6
