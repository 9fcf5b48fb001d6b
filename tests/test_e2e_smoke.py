"""The end-to-end run (`make e2e`) at smoke size on the tiny model: every step runs and the report is complete."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

WORDS = "the a good bad answer help simple clear steps first then finally because python code sum number cat dog tree sky".split()


def write_sample(path: Path, n_prompts: int = 8) -> Path:
    """A small sample file in the importer's shape (a): three responses per prompt, some finished, some cut off, one unsafe prompt."""
    import random

    rng = random.Random(0)
    lines = []
    for i in range(n_prompts):
        responses = []
        for j in range(3):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 70)))
            responses.append({"text": f"{words}{'.' if (i + j) % 2 else ''} {j}", "model": "base-model"})
        category = "safety" if i == 0 else "advice"
        prompt = "how do i write good python code" if i % 3 else [{"role": "user", "content": "explain why the sky is blue"}, {"role": "assistant", "content": "sure"}, {"role": "user", "content": f"and the tree {i}"}]
        lines.append(json.dumps({"prompt": prompt if not isinstance(prompt, str) else f"{prompt} {i}", "category": category, "responses": responses}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_parse_args_quick_and_overrides():
    import e2e

    config = e2e.parse_args(["--quick", "--ppo-iterations", "3", "--quiet", "--no-control"])
    assert config.quick and config.prompt_limit == 12 and config.ppo_iterations == 3
    assert not config.progress and not config.control
    assert config.export_aggregate == "dawid-skene" and e2e.parse_args(["--aggregate", "majority"]).export_aggregate == "majority"
    kl = e2e.parse_args(["--ppo-kl-coef", "0.1", "--ppo-kl-target", "4", "--ppo-kl-horizon", "200", "--reward-from", "runs/s1", "--ppo-learning-rate", "2e-4"])
    assert kl.ppo_learning_rate == 2e-4 and (kl.ppo_kl_coef, kl.ppo_kl_target, kl.ppo_kl_horizon, kl.reward_from) == (0.1, 4.0, 200, Path("runs/s1"))
    assert e2e.parse_args(["--ppo-response-length", "64"]).ppo_response_length == 64 and kl.ppo_response_length == 48
    full = e2e.parse_args([])
    assert full.reward_from is None and (full.ppo_learning_rate, full.ppo_kl_coef, full.ppo_kl_target, full.ppo_kl_horizon) == (3e-4, 0.15, 4.0, 40)
    assert e2e.ppo_kl_settings(full) == {"kl_coef": 0.15, "adaptive_kl": True, "kl_target": 4.0, "kl_horizon": 40}
    fixed = e2e.ppo_kl_settings(e2e.parse_args(["--ppo-kl-target", "0"]))  # 0: the coefficient stays fixed
    assert not fixed["adaptive_kl"] and fixed["kl_coef"] == 0.15
    assert not e2e.ppo_kl_settings(dataclasses.replace(full, ppo_kl_target=None))["adaptive_kl"]
    for bad in (["--ppo-kl-target", "-1"], ["--ppo-kl-target", "nan"], ["--ppo-kl-horizon", "0"]):
        with pytest.raises(SystemExit):  # refused at the start, not after the reward stage
            e2e.parse_args(bad)
    assert (full.annotators, full.spammers, full.ppo_iterations, full.budget_minutes) == (20, 3, 30, 45.0)


def test_seed_adds_the_extra_round0_samples_to_the_same_prompts(sqlite_engine):
    """The default run: sample file, then the extra round-0 file on the same prompts, all 15 comparisons of 6 responses per prompt."""
    import e2e

    summary = e2e.seed_project(sqlite_engine, e2e.E2EConfig(prompt_limit=4, progress=False))
    assert summary["prompts"] == 4
    assert summary["responses"] == 4 * 6
    assert summary["rating_tasks"] == 4 * 6 and summary["pairwise_tasks"] == 4 * 15
    assert e2e.parse_args(["--sample-file", "other.jsonl"]).extra_round0_file is None  # the extra file matches the sample file only
    assert e2e.parse_args(["--no-extra-round0"]).extra_round0_file is None


def test_deadline_reporter_keeps_one_step_then_stops():
    import time

    import e2e
    from rlhf.progress import RecordingReporter

    reporter = e2e.DeadlineReporter(RecordingReporter(), deadline=time.monotonic() - 1)
    assert not reporter.should_stop()  # no iteration done yet: PPO must keep at least one
    reporter.metrics(1, {"objective/score": 0.0})
    assert reporter.should_stop() and reporter.stopped


def test_checks_on_hand_made_inputs():
    import pandas as pd

    import e2e_checks as checks
    from rlhf.simulation import AnnotatorProfile

    r = checks.recovery("spammer", flagged={"a", "b", "c"}, planted={"a", "b", "d", "e"})
    assert (r.true_positives, r.precision, r.recall) == (2, 2 / 3, 0.5)
    assert checks.recovery("x", flagged=set(), planted={"a"}).precision is None
    profiles = [AnnotatorProfile(0, "u0", True, 0.1, 0.0, 0.0, 0.1, 1, 1), AnnotatorProfile(1, "u1", False, 0.1, 0.5, 0.0, 0.1, 9, 9), AnnotatorProfile(2, "u2", False, 0.1, 0.0, 0.0, 0.1, 9, 9)]
    table = pd.DataFrame({"username": ["u0", "u1", "u2", "human"], "flags": ["spammer,too_fast", "", "position_bias", "spammer"]})
    found = checks.flag_recoveries(table, profiles)
    assert (found["spammer"].precision, found["spammer"].recall) == (1.0, 1.0)  # the human is not a simulated annotator
    assert (found["position_bias"].precision, found["position_bias"].recall) == (0.0, 0.0)
    # RM ordering against gold: pair 3 has no gold preference; equal scores count one half
    assert checks.agreement_with_gold([1.0, 0.0, 5.0, 2.0], [0.0, 1.0, 1.0, 2.0], [0.9, 0.9, 0.4, 0.7], [0.1, 0.1, 0.4, 0.1]) == pytest.approx(1.5 / 3)
    prefs = pd.DataFrame(
        {"task_id": [1, 1, 1, 2, 2, 3], "round_a": [1, 1, 1, 0, 0, 0], "round_b": [0, 0, 0, 1, 1, 0], "choice": ["a", "a", "b", "a", "tie", "a"], "annotator_id": [1, 2, 3, 1, 2, 1]}
    )
    assert checks.new_round_preference(prefs, 1) == {"n_votes": 4, "vote_share": 0.5, "n_tasks": 2, "task_share": 0.5}
    assert checks.new_round_preference(prefs, 1, exclude_annotators={3})["vote_share"] == pytest.approx(2 / 3)
    assert checks.gold_win_rate({1: [0.8], 2: [0.5]}, {1: [0.5, 0.9], 2: [0.5]}) == pytest.approx((1 + 0 + 0.5) / 3)
    by_model = pd.DataFrame(
        {"task_id": [1, 1, 2, 2, 3], "model_a": ["ppo", "ppo", "control", "control", "x"], "model_b": ["control", "control", "ppo", "ppo", "ppo"],
         "choice": ["a", "b", "b", "both_bad", "b"], "annotator_id": [1, 2, 1, 2, 3]}
    )
    # task 3 (x vs ppo) counts too: any pair with ppo on exactly one side
    assert checks.model_preference(by_model, "ppo") == {"n_votes": 4, "vote_share": 0.75, "n_tasks": 3, "task_share": pytest.approx(2.5 / 3)}
    assert checks.model_preference(by_model, "ppo", exclude_annotators={3})["vote_share"] == pytest.approx(2 / 3)
    assert checks.model_preference(by_model, "nobody")["vote_share"] is None


@pytest.mark.slow
def test_e2e_quick_on_the_tiny_model(tmp_path, tiny_model_dir):
    import torch

    import e2e

    torch.set_num_threads(1)
    config = e2e.E2EConfig(
        out_dir=tmp_path / "report", sample_file=write_sample(tmp_path / "records.jsonl"), reward_base=str(tiny_model_dir), policy=str(tiny_model_dir),
        annotators=6, spammers=1, progress=False, extra_round0_file=None,
    ).quick_version()
    summary = e2e.run_e2e(config, echo=lambda *a, **k: None)

    out = tmp_path / "report"
    saved = json.loads((out / "summary.json").read_text())
    assert saved["targets"] == json.loads(json.dumps(summary["targets"]))
    assert {t["name"] for t in saved["targets"]} >= {"spammer flag precision (round 0)", "votes preferring round 1 (PPO) over round 0"}
    # every step ran and left its figures
    assert saved["simulation_round0"]["preferences"] == 8 * 3 * 3 and saved["simulation_round0"]["ratings"] == 8 * 3 * 3
    assert saved["reward"]["test_pairs"] >= 1 and saved["reward"]["best_achievable"] is not None
    # trained on Dawid–Skene labels; the majority labels (on which the ceiling is defined) are exported beside them for comparison
    assert saved["export"]["aggregate"] == saved["reward"]["aggregate"] == "dawid-skene"
    assert saved["reward"]["majority_labels_vs_gold"] is not None and (out / "export" / "pairs-majority.jsonl").is_file()
    assert 1 <= saved["ppo"]["iterations_done"] <= 2 and len(saved["ppo"]["history"]) == saved["ppo"]["iterations_done"]
    kls = [row["objective/kl"] for row in saved["ppo"]["history"]]
    assert saved["ppo"]["kl_last5_mean"] == pytest.approx(sum(kls[-5:]) / len(kls[-5:])) and saved["ppo"]["kl_last"] == kls[-1]
    assert saved["round1"]["pairwise_tasks"] > 0 and saved["simulation_round1"]["preferences"] == saved["round1"]["pairwise_tasks"] * 3
    assert saved["preference_for_new_round"]["n_votes"] > 0
    assert {row["model"] for row in saved["leaderboard"]} == {"base-model", "ppo-policy"}
    # PPO's replies against the starting policy sampled the same way, judged by the same people in a project of their own
    head = saved["head_to_head"]
    assert head["pairs"] == saved["data"]["prompts"] and head["n_votes"] > 0 and 0.0 <= head["vote_share"] <= 1.0
    assert any(t["name"].startswith("votes preferring PPO over the control") for t in saved["targets"])
    assert "texts" not in saved["control"]
    report = (out / "report.md").read_text()
    assert "## PPO against the control (head to head)" in report
    for name in ("agreement", "annotators", "reward", "ppo", "leaderboard"):
        assert (out / f"{name}.png").stat().st_size > 1000, name
        assert f"({name}.png)" in report
    assert (out / "planted_truth.json").is_file()


@pytest.mark.slow
def test_e2e_stops_after_the_reward_stage_with_every_objective(tmp_path, tiny_model_dir):
    import torch

    import e2e

    torch.set_num_threads(1)
    config = e2e.parse_args(["--quick", "--stop-after", "reward", "--reward-objectives", "regression,joint,pairwise", "--reward-prompt-similarity", "coverage",
                               "--reward-reply-redundancy", "--reward-preference-head", "--reward-refit-features", "0.3", "--quiet"])
    config = dataclasses.replace(
        config, out_dir=tmp_path / "report", sample_file=write_sample(tmp_path / "records.jsonl"), reward_base=str(tiny_model_dir),
        annotators=6, spammers=1, extra_round0_file=None, control=False,
    )
    summary = e2e.run_e2e(config, echo=lambda *a, **k: None)
    saved = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert "ppo" not in saved and "targets" not in saved and set(summary["reward_objectives"]) == {"regression", "joint", "pairwise"}
    assert saved["reward"]["objective"] == "regression"  # the first feeds PPO
    for objective, figures in saved["reward_objectives"].items():
        assert figures["objective"] == objective and figures["test_pairs"] >= 1 and figures["best_achievable"] is not None
        groups = figures["by_gold_component"]  # every held-out pair with a gold preference is in one group
        assert sum(g["pairs"] for g in groups.values()) == figures["test_pairs_with_gold_preference"]
    assert "ratings" in saved["reward_objectives"]["joint"]["held_out"]
    # Every objective adds the similarity term; each part's accuracy per gold component is reported.
    for figures in saved["reward_objectives"].values():
        assert figures["prompt_similarity"]["weight"] != 0.0
        assert figures["prompt_similarity"]["features"] == ["coverage", "redundancy"]
        for part in ("similarity_alone", "redundancy_alone", "cross_encoder_alone"):
            assert sum(g["pairs"] for g in figures["prompt_similarity_parts"][part].values()) == figures["test_pairs_with_gold_preference"]
    assert set(saved["reward_objectives"]["joint"]["prompt_similarity"]["dimension_weights"]) == set(saved["reward_objectives"]["joint"]["held_out"]["ratings"]["dimensions"])
    assert (tmp_path / "report" / "export" / "ratings.jsonl").is_file()
    # Only joint takes the preference head.
    assert [json.loads((tmp_path / "report" / figures_dir(o) / "reward_config.json").read_text())["preference_head"] for o in ("regression", "joint", "pairwise")] == [False, True, False]
    # Only pairwise refits its feature weights on training prompts kept from the adapter.
    assert [saved["reward_objectives"][o]["feature_refit"] is not None for o in ("regression", "joint", "pairwise")] == [False, False, True]
    assert saved["reward_objectives"]["pairwise"]["prompt_similarity"]["weight"] == saved["reward_objectives"]["pairwise"]["feature_refit"]["weights"][0]

    # Another run of the same seed reuses those models: same figures, no training.
    again = dataclasses.replace(config, out_dir=tmp_path / "again", reward_from=tmp_path / "report")
    reused = e2e.run_e2e(again, echo=lambda *a, **k: None)
    for objective, figures in saved["reward_objectives"].items():
        copy = reused["reward_objectives"][objective]
        assert copy["reused_from"] == str(tmp_path / "report" / figures_dir(objective))
        assert (copy["accuracy_vs_gold"], copy["steps"], copy["held_out"]) == (figures["accuracy_vs_gold"], figures["steps"], figures["held_out"])
        assert (tmp_path / "again" / figures_dir(objective) / "metrics.json").is_file()
    # A run whose export differs (another seed) refuses them before measuring anything.
    with pytest.raises(ValueError, match="--reward-from: .* was trained on export"):
        e2e.run_e2e(dataclasses.replace(again, out_dir=tmp_path / "other-seed", seed=config.seed + 1), echo=lambda *a, **k: None)


def figures_dir(objective: str) -> str:
    """Where the e2e run keeps each objective's model: the first (here regression) in `reward`, the others in `reward-<objective>`."""
    return "reward" if objective == "regression" else f"reward-{objective}"


def test_parse_args_pipeline_and_its_budget():
    import e2e

    assert e2e.parse_args([]).pipeline == "classic" and e2e.parse_args([]).budget_minutes == 45.0
    both = e2e.parse_args(["--pipeline", "both"])
    assert both.pipeline == "both" and both.budget_minutes == e2e.PIPELINE_BUDGET_MINUTES["both"] and both.ppo_iterations == 30
    quick = e2e.parse_args(["--pipeline", "both", "--quick", "--held-out", "3"])
    assert quick.quick and quick.held_out == 3 and quick.demos <= 24 and quick.budget_minutes == e2e.QUICK_BUDGET_MINUTES["both"]
    with pytest.raises(SystemExit):
        e2e.parse_args(["--pipeline", "dpo"])


@pytest.mark.parametrize("pipeline", ["instructgpt", "both"])
def test_stop_after_reward_is_refused_outside_the_classic_pipeline(pipeline, capsys):
    import e2e

    with pytest.raises(SystemExit):
        e2e.parse_args(["--pipeline", pipeline, "--stop-after", "reward"])
    assert "--stop-after reward stops the classic pipeline only" in capsys.readouterr().err
    assert e2e.parse_args(["--stop-after", "reward"]).stop_after == "reward"


def test_two_ppo_runs_share_what_the_budget_leaves_equally():
    import e2e

    assert e2e.ppo_deadlines(100.0, 1100.0, 200.0, 2) == [500.0, 900.0]
    assert e2e.ppo_deadlines(100.0, 1100.0, 200.0, 1) == [900.0]
    assert e2e.ppo_deadlines(100.0, 200.0, 500.0, 2) == [100.0, 100.0]  # nothing left: each run still does its one iteration


def _quick_config(tmp_path, tiny_model_dir, pipeline):
    import e2e

    return dataclasses.replace(
        e2e.E2EConfig(pipeline=pipeline, budget_minutes=e2e.PIPELINE_BUDGET_MINUTES[pipeline]).quick_version(),
        out_dir=tmp_path / "report", sample_file=write_sample(tmp_path / "records.jsonl"), reward_base=str(tiny_model_dir), policy=str(tiny_model_dir),
        annotators=6, spammers=1, progress=False, extra_round0_file=None, held_out=2, writers=3, write_overlap=2,
    )


@pytest.mark.slow
def test_e2e_instructgpt_quick_on_the_tiny_model(tmp_path, tiny_model_dir):
    """Demonstrations in write tasks → SFT → comparisons of SFT samples → reward model → PPO from SFT → next round; gold of three policies."""
    import torch

    import e2e
    from rlhf.db import make_engine
    from rlhf.sft_export import demonstration_frame

    torch.set_num_threads(1)
    summary = e2e.run_e2e(_quick_config(tmp_path, tiny_model_dir, "instructgpt"), echo=lambda *a, **k: None)
    out = tmp_path / "report"
    saved = json.loads((out / "summary.json").read_text())
    i = saved["instructgpt"]
    # 6 training prompts × 2 writers, through the engine: stored as demonstrations of the write project
    assert i["demonstrations"]["n"] == 12 and i["demonstrations"]["write_tasks"] == 6
    engine = make_engine(f"sqlite:///{out / 'e2e.db'}")
    try:
        assert len(demonstration_frame(engine, "demonstrations")) == 12
    finally:
        engine.dispose()
    assert i["sft"]["steps"] == 2
    assert i["comparisons"]["pairwise_tasks"] > 0 and i["comparisons"]["preferences"] == i["comparisons"]["pairwise_tasks"] * 3
    assert i["reward"]["steps"] == 3 and i["reward"]["test_pairs"] >= 1
    ppo = i["ppo"]
    assert ppo["starting_policy"] == i["sft"]["dir"] and 1 <= ppo["iterations_done"] <= 2
    assert i["round1"]["pairwise_tasks"] > 0 and i["round1"]["n_votes"] > 0
    # no classic stage ran; the gold table has the three policies of this pipeline, on the 2 held-out prompts
    assert "ppo" not in saved and "reward" not in saved
    assert set(saved["gold"]) == {"base", "sft", "ppo_sft"} and all(len(g["scores"]) == 2 for g in saved["gold"].values())
    assert saved["gold_targets"]["ppo_sft_vs_ppo_base"]["met"] is None
    names = [t["name"] for t in saved["targets"]]
    assert any(n.startswith("mean gold, SFT (12 demonstrations") for n in names) and not any("PPO from SFT − PPO from base" in n for n in names)
    report = (out / "report.md").read_text()
    assert "## Gold of fresh samples (held-out prompts)" in report and "| PPO from base (classic" in report and "not run" in report
    assert "## InstructGPT order" in report and "## Agreement (round 0)" not in report
    assert summary["gold"]["sft"]["mean_gold"] == saved["gold"]["sft"]["mean_gold"]


@pytest.mark.slow
def test_e2e_both_quick_on_the_tiny_model_reports_the_four_rows(tmp_path, tiny_model_dir):
    import torch

    import e2e

    torch.set_num_threads(1)
    config = _quick_config(tmp_path, tiny_model_dir, "both")
    e2e.run_e2e(config, echo=lambda *a, **k: None)
    out = tmp_path / "report"
    saved = json.loads((out / "summary.json").read_text())
    assert set(saved["gold"]) == {"base", "sft", "ppo_base", "ppo_sft"}
    # both PPO runs trained on the training prompts only, from their own start, with their own reward model
    assert saved["ppo"]["starting_policy"] == str(tiny_model_dir) and saved["instructgpt"]["ppo"]["starting_policy"] == saved["instructgpt"]["sft"]["dir"]
    prompts = (out / "ppo_prompts.jsonl").read_text().splitlines()
    assert len(prompts) == 8 - config.held_out
    # the classic loop ran whole: its rounds, its head to head, its plots
    assert saved["head_to_head"]["n_votes"] > 0 and saved["preference_for_new_round"]["n_votes"] > 0
    verdicts = saved["gold_targets"]
    assert verdicts["ppo_sft_vs_ppo_base"]["value"] == pytest.approx(saved["gold"]["ppo_sft"]["mean_gold"] - saved["gold"]["ppo_base"]["mean_gold"])
    names = [t["name"] for t in saved["targets"]]
    assert "mean gold, PPO from SFT − PPO from base (held-out prompts)" in names and "classic loop's own steps, minutes (CPU, packaged models)" in names
    report = (out / "report.md").read_text()
    assert "## Agreement (round 0)" in report and "## InstructGPT order" in report and "not run" not in report
    for name in ("agreement", "annotators", "reward", "ppo", "leaderboard"):
        assert (out / f"{name}.png").stat().st_size > 1000, name
