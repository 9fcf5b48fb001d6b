"""Exports load in TRL untouched: RewardTrainer and DPOTrainer each train two steps on them (tiny model)."""

from __future__ import annotations

import math

import pytest

from rlhf.export import ExportOptions, export_project
from rlhf.roles import SYSTEM
from test_frames import seed_project

CHAT = [{"role": "system", "content": "be good"}, {"role": "user", "content": "write a short poem"}]


def _project(engine, conversational: bool):
    prompts = {f"p{i}": (f"please explain {i} simple steps", {f"p{i}a": f"sure here {i} clear steps", f"p{i}b": f"no {i}"}) for i in range(6)}
    if conversational:
        prompts["p0"] = (CHAT, prompts["p0"][1])
    pairs = {f"t{i}": (f"p{i}", f"p{i}a", f"p{i}b", {"ann1": ("a", 2), "ann2": ("a", 1)}) for i in range(6)}
    seed_project(engine, prompts=prompts, pairs=pairs)


def _load(out):
    if out.is_dir():
        from datasets import load_from_disk

        return load_from_disk(str(out))["train"]
    from datasets import load_dataset

    return load_dataset("json", data_files=str(out), split="train")


@pytest.fixture(params=[("plain", "prefs.jsonl"), ("conversational", "prefs_dir")], ids=["plain-jsonl", "conversational-dataset"])
def exported(request, sqlite_engine, tmp_path):
    kind, name = request.param
    _project(sqlite_engine, conversational=kind == "conversational")
    out = tmp_path / name
    manifest = export_project(sqlite_engine, SYSTEM, "proj", format="trl", out=out, options=ExportOptions(test_size=0.2))
    assert manifest.conversational is (kind == "conversational")
    return _load(out)


def _common_args(tmp_path):
    return dict(
        output_dir=str(tmp_path / "trl"),
        max_steps=2,
        per_device_train_batch_size=2,
        bf16=False,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
    )


def test_reward_trainer_two_steps(exported, tiny_model_dir, tmp_path):
    from trl import RewardConfig, RewardTrainer

    assert "margin" in exported.column_names
    trainer = RewardTrainer(model=str(tiny_model_dir), args=RewardConfig(**_common_args(tmp_path)), train_dataset=exported)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and losses and all(math.isfinite(x) for x in losses)


def test_dpo_trainer_two_steps(exported, tiny_model_dir, tmp_path):
    from trl import DPOConfig, DPOTrainer

    trainer = DPOTrainer(model=str(tiny_model_dir), args=DPOConfig(**_common_args(tmp_path)), train_dataset=exported)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert trainer.state.global_step == 2 and losses and all(math.isfinite(x) for x in losses)
