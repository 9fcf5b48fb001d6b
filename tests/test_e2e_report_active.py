"""The e2e report's active-selection section: present with bench_active's output, absent without, the curve copied beside it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import e2e_report  # noqa: E402


def _active_output(directory: Path, needed: dict[str, float | None]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    strategies = {
        name: {"labels_to_90pct": [n, n, n], "mean_labels_to_90pct": n, "accuracy_at_pool_size": 0.8, "final_accuracy": 0.81, "scoring_seconds_per_run": 1.5}
        for name, n in needed.items()
    }
    (directory / "summary.json").write_text(json.dumps({"config": {"seeds": [0, 1, 2]}, "pairs": 420, "strategies": strategies}))
    (directory / "active_selection.png").write_bytes(b"\x89PNG fake")
    (directory / "active_selection.svg").write_text("<svg/>")
    return directory


def _report(out: Path, active: Path) -> str:
    out.mkdir(exist_ok=True)
    path = e2e_report.write_markdown(out, {}, pd.DataFrame(), pd.DataFrame(), {}, [], active_dir=active)
    return path.read_text()


def test_the_section_includes_the_curve_and_the_figures(tmp_path):
    active = _active_output(tmp_path / "active", {"random": 200.0, "uncertainty": 150.0, "disagreement": 220.0, "mixed": None})
    text = _report(tmp_path / "out", active)
    assert "## Active selection against random" in text
    assert "![reward-model accuracy against labels used, per strategy](active_selection.png) ([SVG](active_selection.svg))" in text
    assert (tmp_path / "out" / "active_selection.png").is_file() and (tmp_path / "out" / "active_selection.svg").is_file()
    assert "| uncertainty | 150.0 | [150.0, 150.0, 150.0] | n/a | — | 0.800 | 0.810 | 1.50 |" in text
    assert "| mixed | n/a |" in text
    assert "Fewest labels: uncertainty (150.0, 25% fewer than random's 200.0)" in text


def test_no_section_without_bench_active_output(tmp_path):
    assert "Active selection" not in _report(tmp_path / "out", tmp_path / "missing")


def test_the_verdict_keeps_random_when_nothing_beats_it():
    verdict = e2e_report.active_verdict({"random": {"mean_labels_to_90pct": 100.0}, "uncertainty": {"mean_labels_to_90pct": 120.0}, "mixed": {"mean_labels_to_90pct": None}})
    assert verdict.startswith("Active selection does not beat random here (random: 100.0 labels)")


def test_the_curve_is_drawn_when_seeds_end_at_different_label_counts(tmp_path):
    import bench_active

    curves = [
        bench_active.Curve(strategy, seed, list(range(10, 10 * (n + 1), 10)), [0.5 + 0.01 * i for i in range(n)])
        for strategy in bench_active.STRATEGIES
        for seed, n in ((0, 5), (1, 7))  # pools of different sizes: budgets differ
    ]
    assert bench_active.plot(curves, {0: 0.6, 1: 0.6}, tmp_path / "active_selection.png")
    assert (tmp_path / "active_selection.png").stat().st_size > 0 and (tmp_path / "active_selection.svg").stat().st_size > 0


def test_a_seed_that_never_reached_the_target_shows_a_lower_bound_and_the_curve_gain(tmp_path):
    active = _active_output(tmp_path / "active", {"random": 40.0, "uncertainty": None})
    summary = json.loads((active / "summary.json").read_text())
    summary["strategies"]["uncertainty"].update(
        labels_to_90pct=[20, None, 30], mean_labels_to_90pct_censored=113.3, seeds_not_reached=1,
        curve_mean_accuracy=0.712, curve_gain_vs_random=-0.004, seeds_better_than_random=1, seeds_worse_than_random=2,
    )
    (active / "summary.json").write_text(json.dumps(summary))
    text = _report(tmp_path / "out", active)
    assert "| uncertainty | ≥ 113.3 (1 not reached) | [20, None, 30] | 0.712 | -0.004 (1 / 2) |" in text


def test_bench_active_summaries_count_a_censored_seed_at_its_budget_and_average_the_whole_curve():
    import bench_active

    assert bench_active.censored_mean([10, None, 30], [100, 200, 300]) == (80.0, 1)
    assert bench_active.censored_mean([10, 20], [100, 100]) == (15.0, 0)
    # points past one label per pool pair (the extra votes) are left out of the curve's mean
    assert bench_active.curve_mean_accuracy([10, 20, 30, 40], [0.5, 0.6, 0.7, 0.1], up_to=30) == np.float64(0.6).item()
