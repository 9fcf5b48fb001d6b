"""The e2e reward diagnostic: held-out pairs grouped by the gold component that decides them, with hand-made pairs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import e2e_checks as checks  # noqa: E402
import e2e_report  # noqa: E402
from rlhf.simulation import gold_score  # noqa: E402

PROMPT = "How do I water tomatoes in a hot garden?"


def _pair(chosen: str, rejected: str, category=None) -> dict:
    return {
        "prompt": PROMPT, "chosen": chosen, "rejected": rejected, "category": category,
        "gold_chosen": gold_score(PROMPT, chosen, category), "gold_rejected": gold_score(PROMPT, rejected, category),
    }


FINISHED = _pair("Water tomatoes deeply in the garden each morning.", "Water tomatoes deeply in the garden each morning and")
ON_TOPIC = _pair("Water tomatoes deeply in the garden each morning.", "Give the plants a long drink every morning, please.")
LENGTH = _pair("Water tomatoes deeply in the garden each morning.", " ".join(["Water tomatoes deeply in the garden, then rest a while."] * 9))
TIE = _pair("Water tomatoes deeply in the garden each morning.", "Water tomatoes deeply in the garden each morning.")


def test_the_deciding_component_of_each_pair():
    assert checks.deciding_component(PROMPT, FINISHED["chosen"], FINISHED["rejected"], None) == "finished"
    assert checks.deciding_component(PROMPT, ON_TOPIC["chosen"], ON_TOPIC["rejected"], None) == "on_topic"
    assert checks.deciding_component(PROMPT, LENGTH["chosen"], LENGTH["rejected"], None) in ("length", "no_repetition")
    assert checks.deciding_component(PROMPT, TIE["chosen"], TIE["rejected"], None) is None


def test_accuracy_by_component_counts_model_and_labels():
    pairs = [FINISHED, FINISHED, ON_TOPIC, ON_TOPIC, TIE]
    # The model is right on both finished pairs, wrong on one on-topic pair and undecided (half) on the other.
    table = checks.accuracy_by_component(pairs, [1.0, 2.0, 0.0, 0.5, 3.0], [0.0, 1.0, 1.0, 0.5, 0.0])
    assert list(table) == ["finished", "on_topic"]  # the gold tie is in no group
    assert table["finished"] == {"pairs": 2, "model": 1.0, "labels": 1.0}
    assert table["on_topic"]["pairs"] == 2 and table["on_topic"]["model"] == pytest.approx(0.25)
    flipped = dict(ON_TOPIC, chosen=ON_TOPIC["rejected"], rejected=ON_TOPIC["chosen"], gold_chosen=ON_TOPIC["gold_rejected"], gold_rejected=ON_TOPIC["gold_chosen"])
    assert checks.accuracy_by_component([flipped], [1.0], [0.0])["on_topic"]["labels"] == 0.0  # a label against gold


def test_the_report_table():
    lines = e2e_report.component_table({"finished": {"pairs": 137, "model": 0.949, "labels": 0.964}, "on_topic": {"pairs": 94, "model": 0.543, "labels": 0.809}})
    text = "\n".join(lines)
    assert "| finished | 137 | 0.949 | 0.964 |" in text and "| on_topic | 94 | 0.543 | 0.809 |" in text
    assert e2e_report.component_table({}) == []
