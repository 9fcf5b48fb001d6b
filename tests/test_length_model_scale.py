"""The block Newton fit of the length-bias model gives the previous L-BFGS fit's estimates (issue 20)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import length_model_v0  # noqa: E402  the previous implementation, the benchmark's anchor
from bench_length_model import simulated_crowd  # noqa: E402

import rlhf.length_model as length_model  # noqa: E402
from test_quality import crowd_with_a_verbose_annotator  # noqa: E402


def assert_same_estimates(ours, anchor) -> None:
    assert list(ours.index) == list(anchor.index)
    assert (ours["length_n"] == anchor["length_n"]).all()
    assert np.allclose(ours["length_tilt"], anchor["length_tilt"], atol=2e-3, equal_nan=True)
    assert ((ours["length_p_value"] < 0.01) == (anchor["length_p_value"] < 0.01)).all()
    assert np.allclose(ours["length_p_value"], anchor["length_p_value"], atol=1e-3, equal_nan=True)


@pytest.mark.parametrize("with_ids", [True, False])
def test_old_and_new_give_the_same_estimates(with_ids):
    prefs = crowd_with_a_verbose_annotator(seed=1, with_ids=with_ids)
    assert_same_estimates(length_model.length_bias(prefs, {"spam"}), length_model_v0.length_bias(prefs, {"spam"}))


def test_same_estimates_and_flags_on_the_benchmark_crowd():
    crowd = simulated_crowd(12_000, seed=2)
    ours, anchor = length_model.length_bias(crowd, {"u00"}), length_model_v0.length_bias(crowd, {"u00"})
    assert_same_estimates(ours, anchor)
    assert ours.loc["u01", "length_p_value"] < 1e-6  # the planted tilt is found


def test_blocks_are_the_prompts_and_large_blocks_fall_back_to_lbfgs(monkeypatch):
    crowd = simulated_crowd(3_000, seed=3)
    a, b, n = length_model._response_codes(crowd)
    blocks = length_model.response_blocks(a, b, n)
    assert blocks.size == 6 and blocks.n_components == n // 6
    assert (blocks.component[a] == blocks.component[b]).all()
    newton = length_model.length_bias(crowd, {"u00"})
    monkeypatch.setattr(length_model, "BLOCK_LIMIT", 5)
    monkeypatch.setattr(length_model, "_crowd_fit_newton", lambda *a, **k: pytest.fail("blocks of 6 exceed the limit"))
    assert_same_estimates(newton, length_model.length_bias(crowd, {"u00"}))
