"""Simulated annotators: the gold score on hand-written examples, planted profiles, the ceiling, determinism,
planted biases recovered by the statistics (SQLite and PostgreSQL), the CLI and the job kind."""

from __future__ import annotations

import json
import math
import random

import pytest
from typer.testing import CliRunner

from rlhf.db import init_database, make_engine, session_scope
from rlhf.importer import import_records
from rlhf.roles import SYSTEM
from rlhf.schema import Preference, Rating, Task, User
from rlhf.simulation import (
    AnnotatorProfile,
    GoldPair,
    SimulationConfig,
    SimulationError,
    best_achievable_accuracy,
    gold_components,
    gold_score,
    majority_accuracy,
    plant_annotators,
    simulate,
    vote_accuracy,
)
from rlhf.simulation.annotators import decision_rng, judge_pair, rate_response, scale_value
from rlhf.simulation.gold import key_terms, refuses

# --------------------------------------------------------------------------- gold on hand-written examples

PROCRASTINATE = "How can I stop procrastinating when I have a big project due next week?"


def test_a_concise_finished_answer_beats_a_cut_off_list():
    concise = "Break the project into small steps, start with the easiest one today, and stop procrastinating by working in 25-minute blocks."
    cut_off = (
        "Here are some tips to help you stop procrastinating:\n\n1. Break the project into smaller tasks: Divide the project into "
        "manageable chunks so that you can focus on one task at a time.\n2. Set deadlines for each task: Assign specific deadlines "
        "for each task to create a sense of urgency and help you stay on track.\n3. Use the Pomodoro technique: Work in focused "
        "25-minute increments, followed by a 5-minute break. This can help you stay focused and avoid burnout.\n4. Eliminate distractions: Identify"
    )
    good, bad = gold_components(PROCRASTINATE, concise, "advice"), gold_components(PROCRASTINATE, cut_off, "advice")
    assert (good.finished, bad.finished) == (1.0, 0.0)
    assert good.length == 1.0 and 0.0 < bad.length < 1.0  # 66 words: past the 60-word band
    assert good.on_topic == 1.0  # stop, procrastinating, project
    assert gold_score(PROCRASTINATE, concise, "advice") - gold_score(PROCRASTINATE, cut_off, "advice") == pytest.approx(0.30 + 0.25 * (1 - bad.length) + 0.15 * (1 - bad.no_repetition))


@pytest.mark.parametrize(
    ("text", "finished"),
    [("It is 1024.", 1.0), ('He said "stop!"', 1.0), ("Done?)", 1.0), ("**Bold ending.**", 1.0), ("```python\nprint(1)\n```", 1.0), ("and then the", 0.0), ("Steps:", 0.0), ("", 0.0)],
)
def test_finished_means_ending_on_a_full_stop_or_a_code_fence(text, finished):
    assert gold_components("q", text).finished == finished


@pytest.mark.parametrize(("n_words", "expected"), [(0, 0.0), (2, 0.5), (4, 1.0), (60, 1.0), (90, 0.5), (120, 0.0), (300, 0.0)])
def test_length_band(n_words, expected):
    assert gold_components("q", " ".join(["word"] * n_words)).length == pytest.approx(expected)


def test_repetition_and_refusals():
    looping = "Keep it tidy. " * 10
    assert gold_components("q", looping).no_repetition == 0.0
    assert gold_components("q", "one two three four five six").no_repetition == 1.0
    unsafe = "How can I cheat on my exam without getting caught?"
    refusal, compliance = "I can't help with cheating, but I can help you plan your revision.", "Write the answers on your hand."
    assert refuses(refusal) and refuses("I’m sorry, but no.") and not refuses(compliance)
    assert gold_components(unsafe, refusal, "safety").safety == 1.0 and gold_components(unsafe, compliance, "safety").safety == 0.0
    assert gold_score(unsafe, refusal, "safety") > gold_score(unsafe, compliance, "safety")
    # refusing a benign request costs the safety weight; so does refusing a request to handle with care
    assert gold_components("What is photosynthesis?", "I cannot answer that.", "facts").safety == 0.0
    assert gold_components("Explain how to spot a phishing email.", "I'm sorry, but I can't.", "safety").safety == 0.0
    assert gold_components("Explain how to spot a phishing email.", "Check the sender's address.", "safety").safety == 1.0


def test_chat_prompts_take_their_key_terms_from_the_last_user_turn():
    chat = [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "What is a famous landmark there?"}]
    assert key_terms(chat) == ["famous", "landmark"]
    assert gold_components(chat, "The Eiffel Tower is a famous landmark.").on_topic == 1.0
    assert gold_components("hi", "hello.").on_topic == 1.0  # no key terms: nothing to miss


def test_gold_is_deterministic_and_bounded():
    rng = random.Random(3)
    vocab = "the a cat sat on mat . ! ? I can't help project week stop".split()
    for _ in range(200):
        text = " ".join(rng.choice(vocab) for _ in range(rng.randint(0, 150)))
        category = rng.choice([None, "safety", "advice"])
        score = gold_score(PROCRASTINATE, text, category)
        assert 0.0 <= score <= 1.0
        assert score == gold_score(PROCRASTINATE, text, category)


# --------------------------------------------------------------------------- profiles, answers, the ceiling


def test_planted_profiles_follow_the_config_and_the_seed():
    config = SimulationConfig(annotators=20, spammers=3, position_bias=0.5, position_bias_share=0.2, length_bias=1.5, length_bias_share=0.2, seed=4)
    profiles = plant_annotators(config)
    assert profiles == plant_annotators(config)  # a pure function of the config
    assert sum(p.is_spammer for p in profiles) == 3
    biased = [p for p in profiles if p.position_bias > 0]
    long = [p for p in profiles if p.length_bias > 0]
    assert len(biased) == len(long) == round(0.2 * 17)
    assert not any(p.is_spammer for p in biased + long) and not ({p.index for p in biased} & {p.index for p in long})
    assert [p.username for p in profiles][:2] == ["sim-s4-000", "sim-s4-001"]
    assert {p.index for p in profiles if p.is_spammer} != {p.index for p in plant_annotators(SimulationConfig(annotators=20, spammers=3, seed=5)) if p.is_spammer}
    with pytest.raises(ValueError, match="spammers"):
        SimulationConfig(annotators=2, spammers=3).validate()


def careful(noise=0.1, position=0.0, length=0.0) -> AnnotatorProfile:
    return AnnotatorProfile(0, "x", False, noise, position, length, noise, 10.0, 10.0)


def test_judgments_follow_the_planted_traits():
    def left_share(profile, gold_left, gold_right, n=2000):
        picks = [judge_pair(profile, decision_rng(0, 0, t, "pairwise"), gold_left=gold_left, gold_right=gold_right, chars_left=100, chars_right=100, strong_preference=0.9) for t in range(n)]
        return sum(p.picks_left for p in picks) / n, picks

    share, picks = left_share(careful(noise=0.0), 0.2, 0.9)
    assert share == 0.0 and {p.strength for p in picks} == {2}  # noiseless: always gold, sure of it
    share, _ = left_share(careful(noise=0.0, position=1.0), 0.2, 0.9)
    assert share == 1.0  # always the left side, whatever it says
    share, _ = left_share(careful(noise=0.1), 0.6, 0.5)
    assert share == pytest.approx(1 / (1 + math.exp(-1.0)), abs=0.03)  # σ(Δ / T)
    spammer = AnnotatorProfile(1, "s", True, 0.1, 0.0, 0.0, 0.1, 1.0, 1.0)
    share, picks = left_share(spammer, 0.2, 0.9)
    assert share == pytest.approx(0.5, abs=0.04) and max(p.time_spent_s for p in picks) <= 1.6
    tilted = judge_pair(careful(noise=0.1, length=50.0), decision_rng(0, 0, 1, "pairwise"), gold_left=0.5, gold_right=0.5, chars_left=400, chars_right=100, strong_preference=0.9)
    assert tilted.picks_left  # a huge length bias and equal gold: the longer side


def test_ratings_map_the_latent_onto_the_scale():
    assert [scale_value(v, 1, 7) for v in (-1.0, 0.0, 0.5, 0.99, 2.0)] == [1, 1, 4, 7, 7]
    components = gold_components("q", "A short and finished answer.")
    answer = rate_response(careful(noise=0.0), random.Random(0), components, [("helpfulness", 1, 7), ("harmlessness", 1, 5), ("other", 0, 10)])
    assert answer.scores == {"helpfulness": scale_value(components.score, 1, 7), "harmlessness": 5, "other": scale_value(components.score, 0, 10)}


def test_best_achievable_accuracy_by_hand():
    q = 1 / (1 + math.exp(-1.0))  # Δ = 0.1 at T = 0.1
    assert majority_accuracy(q, 3) == pytest.approx(q**3 + 3 * q**2 * (1 - q))
    assert majority_accuracy(q, 2) == pytest.approx(q)  # a split counts one half: q² + q(1 − q)
    pairs = [GoldPair(0.6, 0.5), GoldPair(0.3, 0.3)]  # the gold tie is left out
    assert best_achievable_accuracy(pairs, 0.1, votes=3) == pytest.approx(q**3 + 3 * q**2 * (1 - q))
    assert best_achievable_accuracy(pairs, 0.1, votes=1) == pytest.approx(q)
    spammer = AnnotatorProfile(1, "s", True, 0.1, 0.0, 0.0, 0.1, 1.0, 1.0)
    assert best_achievable_accuracy(pairs, [spammer], votes=3) == pytest.approx(0.5)
    assert vote_accuracy(careful(noise=0.1, position=1.0), GoldPair(0.9, 0.1)) == pytest.approx(0.5)
    # a pool: each vote from a random member; one spammer and one noiseless annotator → q = 0.75
    assert best_achievable_accuracy([GoldPair(0.9, 0.1)], [spammer, careful(noise=0.0)], votes=3) == pytest.approx(0.75**3 + 3 * 0.75**2 * 0.25)
    assert math.isnan(best_achievable_accuracy([GoldPair(0.3, 0.3)], 0.1))


# --------------------------------------------------------------------------- runs through the engine


def project_records(n_prompts: int) -> list[dict]:
    """Per prompt three responses of clearly different gold: concise and finished; long and cut off; looping."""
    topics = ["garden", "kitchen", "desk", "garage", "closet", "inbox", "calendar", "bookshelf", "wardrobe", "fridge"]
    records = []
    for i in range(n_prompts):
        topic = f"{topics[i % len(topics)]}"
        records.append(
            {
                "prompt": f"How can I keep my {topic} tidy and organised every week? ({i})",
                "category": "advice",
                "responses": [
                    {"text": f"Keep your {topic} tidy with a short weekly routine: sort, clean and put things back. Organised spaces stay tidy ({i}).", "model": "careful"},
                    {"text": " ".join([f"First look at the {topic} and think about what you use often and what you do not use"] * 6) + f" and then {i}", "model": "rambling"},
                    {"text": f"Keep it tidy. " * 12 + f"({i}).", "model": "looping"},
                ],
            }
        )
    return records


def annotations(engine) -> list[tuple]:
    """Every annotation as (username, task content hash, content), sorted."""
    with session_scope(engine) as session:
        prefs = session.execute(
            Preference.__table__.select().with_only_columns(User.username, Task.content_hash, Preference.choice, Preference.strength, Preference.shown_left, Preference.time_spent_s)
            .join_from(Preference.__table__, User.__table__, Preference.user_id == User.id).join(Task.__table__, Task.id == Preference.task_id)
        ).all()
        ratings = session.execute(
            Rating.__table__.select().with_only_columns(User.username, Task.content_hash, Rating.scores, Rating.time_spent_s)
            .join_from(Rating.__table__, User.__table__, Rating.user_id == User.id).join(Task.__table__, Task.id == Rating.task_id)
        ).all()
    return sorted((tuple(r[:2]), json.dumps(list(r[2:]), sort_keys=True, default=str)) for r in [*prefs, *ratings])


def fresh_engine(path):
    engine = make_engine(f"sqlite:///{path}")
    init_database(engine)
    return engine


def test_same_seed_same_annotations(tmp_path):
    config = SimulationConfig(annotators=4, spammers=1, position_bias=0.5, length_bias=1.0, seed=7)
    runs = []
    for name in ("one", "two"):
        engine = fresh_engine(tmp_path / f"{name}.db")
        import_records(engine, project_records(6), "p")
        result = simulate(engine, "p", config)
        runs.append((annotations(engine), result.planted_truth()["annotators"]))
        engine.dispose()
    assert runs[0] == runs[1]
    assert len(runs[0][0]) == 6 * 3 * 3 * 2  # every task got its three annotations of each kind
    engine = fresh_engine(tmp_path / "other-seed.db")
    import_records(engine, project_records(6), "p")
    simulate(engine, "p", SimulationConfig(annotators=4, spammers=1, position_bias=0.5, length_bias=1.0, seed=8))
    assert [a[1] for a in annotations(engine)] != [a[1] for a in runs[0][0]]


def test_planted_biases_show_up_in_the_statistics(engine, tmp_path):
    from rlhf.stats import project_stats

    import_records(engine, project_records(30), "p")
    config = SimulationConfig(annotators=6, spammers=1, noise=0.05, position_bias=0.6, position_bias_share=0.2, seed=1)
    result = simulate(engine, "p", config, planted_truth_path=tmp_path / "truth.json")
    assert (result.ratings, result.preferences, result.stopped) == (270, 270, "exhausted")
    assert json.loads((tmp_path / "truth.json").read_text())["planted"] == result.planted_truth()["planted"]

    table = project_stats(engine, SYSTEM, "p").annotators.set_index("username")
    truth = {p.username: p for p in result.profiles}
    flagged = {name: set(str(flags).split(",")) - {""} for name, flags in table["flags"].items()}
    assert {n for n, f in flagged.items() if "spammer" in f} == {n for n, p in truth.items() if p.is_spammer}
    assert {n for n, f in flagged.items() if "too_fast" in f} == {n for n, p in truth.items() if p.is_spammer}
    assert {n for n, f in flagged.items() if "position_bias" in f} == {n for n, p in truth.items() if p.position_bias > 0}
    biased = next(n for n, p in truth.items() if p.position_bias > 0)
    assert table.loc[biased, "left_share"] > 0.7


def test_max_annotations_and_reuse_of_accounts(sqlite_engine):
    import_records(sqlite_engine, project_records(4), "p")
    config = SimulationConfig(annotators=3, kind="pairwise", max_annotations=5)
    first = simulate(sqlite_engine, "p", config)
    assert (first.preferences, first.ratings, first.stopped) == (5, 0, "max_annotations")
    assert all(a.created for a in first.annotators)
    second = simulate(sqlite_engine, "p", SimulationConfig(annotators=3, kind="pairwise"))
    assert not any(a.created for a in second.annotators)  # same config, same accounts
    assert (second.preferences, second.stopped) == (4 * 3 * 3 - 5, "exhausted")


def test_an_account_that_cannot_annotate_is_refused(sqlite_engine):
    from rlhf.auth import create_user

    import_records(sqlite_engine, project_records(2), "p")
    create_user(sqlite_engine, SYSTEM, "sim-s0-000", None, "external")
    with pytest.raises(SimulationError, match="cannot annotate"):
        simulate(sqlite_engine, "p", SimulationConfig(annotators=1))


# --------------------------------------------------------------------------- CLI and job


def test_simulate_command(sqlite_engine, tmp_path, monkeypatch):
    from rlhf.cli import app

    monkeypatch.setenv("RLHF_DATABASE_URL", str(sqlite_engine.url))
    import_records(sqlite_engine, project_records(3), "p")
    runner = CliRunner()
    truth = tmp_path / "truth.json"
    result = runner.invoke(app, ["simulate", "--project", "p", "--annotators", "4", "--spammers", "1", "--kind", "pairwise", "--seed", "2", "--planted-truth", str(truth)])
    assert result.exit_code == 0, result.output
    assert "simulated 4 annotators (1 spammers) on project 'p': 0 ratings, 27 preferences" in result.stdout
    assert json.loads(truth.read_text())["counts"]["preferences"] == 27
    result = runner.invoke(app, ["simulate", "--project", "p", "--annotators", "2", "--json", "--max-annotations", "0"])
    assert result.exit_code == 0 and json.loads(result.stdout)["counts"]["stopped"] == "max_annotations"
    assert runner.invoke(app, ["simulate", "--project", "missing"]).exit_code == 2
    bad = runner.invoke(app, ["simulate", "--project", "p", "--annotators", "2", "--spammers", "3"])
    assert bad.exit_code == 2 and "spammers" in bad.stderr


def test_simulate_job_keeps_the_planted_truth(sqlite_engine, tmp_path):
    from rlhf.job_kinds import load_registry
    from rlhf.jobs import get_job, job_artifacts, submit_job
    from rlhf.worker import Worker, WorkerConfig

    import_records(sqlite_engine, project_records(2), "p")
    job = submit_job(sqlite_engine, SYSTEM, "simulate", {"annotators": 3, "kind": "rating"}, project="p", registry=load_registry())
    worker = Worker(sqlite_engine, WorkerConfig(poll_interval_s=0.05, heartbeat_interval_s=0.5, report_interval_s=0.2, artifacts_dir=tmp_path / "artifacts", log_dir=tmp_path / "logs"))
    worker.run(once=True)
    done = get_job(sqlite_engine, job.id)
    assert done.status == "done", done.traceback
    assert done.message == "18 ratings, 0 preferences (exhausted)"
    [artifact] = job_artifacts(sqlite_engine, job.id)
    assert artifact.kind == "simulation" and json.loads(open(artifact.path).read())["counts"]["ratings"] == 18
