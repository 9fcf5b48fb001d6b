"""bench_sft_gold: its sizes from the environment, and its quick run end to end on the tiny model (four policies, two PPO runs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

BENCH_VARIABLES = (
    "BENCH_GOLD_DEMOS", "BENCH_GOLD_HELD_OUT", "BENCH_GOLD_SLOPPY_EVERY", "BENCH_GOLD_EPOCHS", "BENCH_GOLD_MAX_STEPS", "BENCH_GOLD_LR",
    "BENCH_GOLD_NEW_TOKENS", "BENCH_GOLD_REWARD", "BENCH_GOLD_REWARD_STEPS", "BENCH_GOLD_PPO_ITERATIONS", "BENCH_GOLD_THREADS",
    "BENCH_GOLD_PPO_4BIT",
)


@pytest.fixture
def clean_env(monkeypatch):
    for name in BENCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_sizes_come_from_quick_then_the_environment_and_demonstrations_stay_within_the_target(clean_env):
    import bench_sft_gold as bench

    full, quick = bench.GoldBenchConfig.from_env(), bench.GoldBenchConfig.from_env(quick=True)
    assert (full.demos, full.held_out, full.reward) == (300, 40, None)
    assert quick.quick and quick.ppo_iterations < full.ppo_iterations and quick.reward_steps < full.reward_steps
    clean_env.setenv("BENCH_GOLD_PPO_ITERATIONS", "7")
    clean_env.setenv("BENCH_GOLD_EPOCHS", "3.5")
    clean_env.setenv("BENCH_GOLD_DEMOS", "1000")
    clean_env.setenv("BENCH_GOLD_PPO_4BIT", "0")
    config = bench.GoldBenchConfig.from_env(quick=True)
    assert (config.ppo_iterations, config.sft_epochs, config.demos) == (7, 3.5, 300)  # the target allows at most 300
    assert full.ppo_4bit and not config.ppo_4bit


def test_demonstrations_plant_one_sloppy_writer_in_seven_and_careful_ones_raise_gold():
    import bench_sft_gold as bench
    from rlhf.simulation.writers import careful_reply

    long_reply = " ".join(["the cat sat on the mat and the cat sat on the mat"] * 10)  # loops, far past the length band, unfinished
    records = [{"prompt": f"explain why cats sit on mats {i}", "category": "advice", "responses": [{"text": long_reply}] * 3} for i in range(5)]
    rows, shown, written = bench.demonstrations(records, limit=14, sloppy_every=7, seed=0)
    assert len(rows) == 14 and rows[0]["messages"][0] == {"role": "user", "content": "explain why cats sit on mats 0"}
    replies = [r["messages"][-1]["content"] for r in rows]
    # a careful writer cuts the loop to the length band; the sloppy 7th and 14th leave it long
    assert [i for i, r in enumerate(replies) if len(r.split()) > 60] == [6, 13]
    assert replies[0] == careful_reply(records[0]["prompt"], long_reply, "advice")
    assert all(w > s for i, (w, s) in enumerate(zip(written, shown)) if i not in (6, 13))


@pytest.mark.slow
def test_quick_run_on_the_tiny_model_scores_all_four_policies_on_the_same_prompts(tmp_path, tiny_model_dir, clean_env):
    import torch

    import bench_sft_gold as bench
    from test_e2e_smoke import write_sample

    torch.set_num_threads(1)
    config = bench.GoldBenchConfig.from_env(
        quick=True, sample_file=write_sample(tmp_path / "records.jsonl", n_prompts=8), extra_round0_file=None, policy=str(tiny_model_dir),
        reward_base=str(tiny_model_dir), held_out=2, annotators=6, spammers=1,
    )
    rows, figures = bench.run_config(config, work_dir=tmp_path)

    gold = figures["gold"]
    assert set(gold) == {"base", "sft", "ppo_base", "ppo_sft"}
    assert all(len(g["scores"]) == 2 and 0.0 <= g["mean_gold"] <= 1.0 for g in gold.values())
    for name in ("ppo_base", "ppo_sft"):
        run = figures[name]
        assert run["iterations_done"] == config.ppo_iterations and not run["stopped_by_budget"]
        assert run["kl_last"] is not None and run["score_first"] is not None
    # the second run starts from the SFT adapter, which is then PPO's reference
    assert figures["ppo_base"]["starting_policy"] == str(tiny_model_dir)
    assert figures["ppo_sft"]["starting_policy"] != str(tiny_model_dir) and figures["ppo_sft"]["starting_policy"].endswith("sft")
    assert figures["reward"]["test_pairs"] >= 1 and figures["reward"]["best_achievable"] is not None
    assert figures["sft"]["steps"] == 2
    sft_row, ppo_row = rows
    assert (sft_row.ours, sft_row.anchor) == (gold["sft"]["mean_gold"], gold["base"]["mean_gold"])
    assert (ppo_row.ours, ppo_row.anchor) == (gold["ppo_sft"]["mean_gold"], gold["ppo_base"]["mean_gold"])
    assert "KL last" in ppo_row.note and "accuracy against gold" in ppo_row.note
    json.dumps(figures)  # every figure is plain JSON (BENCH_GOLD_FIGURES writes them)
    assert not list(tmp_path.glob("bench-sft-gold-*"))  # the models are written to a temporary directory that is removed


def _gold(mean: float) -> dict:
    return {"mean_gold": mean, "scores": [mean, mean], "finished_share": 0.5, "mean_words": 40.0}


def test_rows_say_whether_each_target_is_met_and_name_a_reused_reward_model(tmp_path):
    import bench_sft_gold as bench

    (tmp_path / "metrics.json").write_text(json.dumps({"held_out": {"pairs": 420, "accuracy": 0.676, "bins": []}}))
    ppo = {"kl_last": 0.5, "kl_max": 0.7, "score_first": -0.2, "score_last": 0.1, "eos_rate_first": 0.4, "eos_rate_last": 0.6, "seconds": 300.0}
    figures = {
        "gold": {"base": _gold(0.66), "sft": _gold(0.70), "ppo_base": _gold(0.68), "ppo_sft": _gold(0.72)},
        "sft": {"steps": 68, "seconds": 400.0, "held_out": {"before": {"loss": 2.0}, "after": {"loss": 1.5}}},
        "demonstrations": {"n": 300, "gold_written": 0.92, "gold_shown": 0.61},
        "reward": {"dir": str(tmp_path), "reused": True, "held_out": bench.reused_reward_held_out(tmp_path)},
        "ppo_base": ppo, "ppo_sft": ppo,
    }
    config = bench.GoldBenchConfig(ppo_iterations=4)
    sft_row, ppo_row = bench.rows_from(figures, config)
    assert sft_row.ours == 0.70 and sft_row.anchor == 0.66 and "gain +0.040 (NOT met)" in sft_row.note  # 0.04 < 0.05
    assert "difference +0.040 (met)" in ppo_row.note and "4 iterations" in ppo_row.work
    assert f"reused from {tmp_path} (held-out accuracy against its labels 0.676 on 420 pairs)" in ppo_row.note
    assert "KL last 0.500 (max 0.700)" in ppo_row.note
    figures["gold"]["sft"] = _gold(0.72)
    del figures["ppo_sft"]  # a run stopped after SFT: the SFT row alone
    (only,) = bench.rows_from(figures, config)
    assert "gain +0.060 (met)" in only.note
    assert bench.reused_reward_held_out(tmp_path / "nowhere") is None
