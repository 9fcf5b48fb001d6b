"""The e2e report's gold table: the four rows and the two target lines from hand-made figures (met / NOT met), and the targets built from them."""

from __future__ import annotations

import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import e2e_report  # noqa: E402
import e2e_sft  # noqa: E402


def _gold(mean: float, seconds: float = 30.0) -> dict:
    return {"mean_gold": mean, "scores": [mean] * 40, "finished_share": 0.75, "mean_words": 41.5, "seconds": seconds}


def _summary(gold: dict) -> dict:
    return {
        "pipeline": "both", "config": {"seed": 0, "round_temperature": 0.7, "round_max_new_tokens": 128},
        "gold": gold, "gold_targets": e2e_sft.gold_verdicts(gold), "timings_s": {"total": 60.0},
    }


def test_the_four_rows_and_both_targets_met():
    gold = {"base": _gold(0.600), "sft": _gold(0.680), "ppo_base": _gold(0.700), "ppo_sft": _gold(0.710)}
    lines = e2e_report.gold_section(_summary(gold))
    text = "\n".join(lines)
    assert lines[0] == "## Gold of fresh samples (held-out prompts)"
    assert "(40 prompts no training stage saw" in text and "temperature 0.7, at most 128 new tokens" in text
    assert "| base (the starting policy) | 0.600 | 0.75 | 41.5 | 30 |" in text
    assert "| SFT (LoRA on the demonstrations) | 0.680 |" in text
    assert "| PPO from base (classic: reward model on the base's samples) | 0.700 |" in text
    assert "| PPO from SFT (InstructGPT: reward model on the SFT samples, SFT as reference) | 0.710 |" in text
    assert "- SFT − base: +0.080 (target ≥ +0.05: met)" in text
    assert "- PPO from SFT − PPO from base: +0.010 (target ≥ 0: met)" in text


def test_targets_not_met_are_said_so_and_a_missing_row_is_not_run():
    gold = {"base": _gold(0.600), "sft": _gold(0.640), "ppo_base": _gold(0.700), "ppo_sft": _gold(0.690)}
    text = "\n".join(e2e_report.gold_section(_summary(gold)))
    assert "- SFT − base: +0.040 (target ≥ +0.05: NOT met)" in text  # 0.04 < 0.05
    assert "- PPO from SFT − PPO from base: -0.010 (target ≥ 0: NOT met)" in text
    del gold["ppo_base"]  # the instructgpt pipeline alone: no PPO from base
    text = "\n".join(e2e_report.gold_section(_summary(gold)))
    assert "| PPO from base (classic: reward model on the base's samples) | not run |" in text
    assert "- PPO from SFT − PPO from base: n/a (target ≥ 0: not measured)" in text
    assert e2e_report.gold_section({"gold": {}}) == []


def test_the_verdicts_at_the_edges():
    exactly = e2e_sft.gold_verdicts({"base": _gold(0.5), "sft": _gold(0.5 + e2e_sft.SFT_GAIN_TARGET), "ppo_base": _gold(0.7), "ppo_sft": _gold(0.7)})
    assert exactly["sft_gain"]["met"] and exactly["ppo_sft_vs_ppo_base"]["met"]  # ≥, not >
    assert e2e_sft.gold_verdicts({"base": _gold(0.5)})["sft_gain"]["met"] is None


def test_the_report_has_the_gold_table_between_the_targets_and_the_steps(tmp_path):
    import e2e

    gold = {"base": _gold(0.600), "sft": _gold(0.680), "ppo_base": _gold(0.700), "ppo_sft": _gold(0.690)}
    summary = _summary(gold)
    summary["instructgpt"] = {
        "demonstrations": {"n": 300, "write_tasks": 100, "project": "demonstrations", "writers": [{"sloppy": True}] + [{"sloppy": False}] * 6, "gold_shown": 0.61, "gold_written": 0.9},
        "sft": {"steps": 76, "seconds": 600.0, "held_out": {"before": {"loss": 2.0}, "after": {"loss": 1.4}}},
        "ppo": {"kl_last": 1.5, "iterations_done": 30, "iterations_planned": 30},
    }
    summary["targets"] = e2e.targets({**summary, "timings_s": {"total": 95 * 60.0}}, quick=False)
    by_name = {t["name"]: t for t in summary["targets"]}
    assert by_name["mean gold, SFT (300 demonstrations, ≤ 300) − base (held-out prompts)"]["passed"] is True
    assert by_name["mean gold, PPO from SFT − PPO from base (held-out prompts)"]["passed"] is False
    assert by_name["KL(PPO from SFT ‖ SFT) at the last iteration, nats"]["passed"] is True
    assert by_name["whole run, minutes (CPU, packaged models)"]["passed"] is False  # 95 > 45: said, not hidden
    text = e2e_report.write_markdown(tmp_path, summary, None, None, {}, [], active_dir=tmp_path / "none").read_text()
    assert text.index("## Targets") < text.index("## Gold of fresh samples") < text.index("## InstructGPT order")
    assert "| mean gold, PPO from SFT − PPO from base (held-out prompts) | -0.010 | ≥ 0 | **no** |" in text
    assert "Demonstrations: 300 written in 100 write tasks of project `demonstrations` by 7 simulated writers (1 sloppy)" in text
    assert "## Agreement (round 0)" not in text  # no classic loop in this summary
