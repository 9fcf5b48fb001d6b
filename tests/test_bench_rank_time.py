"""bench/bench_rank_time.py: rankings against comparisons at equal simulated annotator time."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))


def test_annotator_time_counts_replies_read_and_one_decision():
    import bench_rank_time as bench

    assert bench.task_cost(2) == 3  # a comparison: two replies and a decision
    assert bench.task_cost(4) == 5  # a ranking of four: four replies and one decision for the whole order


def test_every_prompt_gets_its_first_k_replies_from_the_sample_and_the_extra_round():
    import bench_rank_time as bench

    records = bench.records_with_k_replies(None)
    assert len(records) >= 100
    assert all(len(r["responses"]) == bench.K for r in records)
    # the sample's own three replies come first, then one extra reply of the same prompt
    assert len({r["responses"][3]["text"] for r in records}) == len(records)


@pytest.mark.slow
def test_quick_run_spends_the_same_budget_on_both_and_measures_both_on_the_same_held_out_pairs():
    import bench_rank_time as bench

    rows, figures = bench.measure(quick=True)
    budget = figures["budget_units"]
    for kind in ("pairs_labelled", "ranks_labelled"):
        spent = figures[kind]["tasks_done"] * figures[kind]["units_per_task"]
        assert budget - figures[kind]["units_per_task"] < spent <= budget, kind
    assert figures["held_out_gold_pairs"] > 0
    for project in ("pairs", "ranks"):
        assert 0.0 <= figures[project]["accuracy_vs_gold"] <= 1.0 and figures[project]["steps"] >= 1
    assert figures["ranks"]["train_rows"] > figures["pairs"]["train_rows"]  # a ranking yields six pairs for five units, a comparison one for three
    assert rows[0].ours == figures["ranks"]["accuracy_vs_gold"] and rows[0].anchor == figures["pairs"]["accuracy_vs_gold"]
