"""An SFT result is a policy wherever one is accepted: `rlhf sft` CLI, PPO (the SFT policy is the reference), DPO, generate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rlhf.cli import EXIT_BAD_INPUT, app
from rlhf.models import load_causal_lm, resolve_model

from test_sft import sft_file

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def sft_policies(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """A LoRA SFT adapter and a full SFT checkpoint of the tiny model, trained through the CLI."""
    root = tmp_path_factory.mktemp("sft-policies")
    data = sft_file(root / "demos.jsonl")
    policies = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for method, lr in (("lora", "1e-2"), ("full", "3e-3")):
            out = root / method
            result = runner.invoke(app, [
                "sft", "--data", str(data), "--out", str(out), "--method", method, "--policy", str(tiny_model_dir),
                "--device", "cpu", "--max-steps", "3", "--batch-size", "4", "--lora-r", "4", "--lora-alpha", "8",
                "--max-length", "64", "--learning-rate", lr, "--logging-steps", "1",
            ])
            assert result.exit_code == 0, result.output
            assert f"SFT ({method}) done: 3 steps" in result.stdout and "held-out loss" in result.stdout
            policies[method] = out
    finally:
        torch.set_num_threads(threads)
    return policies


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[:, -3:]


@pytest.mark.parametrize("method", ["lora", "full"])
def test_ppo_from_an_sft_policy_uses_it_as_the_reference(tiny_model_dir, sft_policies, tmp_path, method):
    from rlhf.ppo import PPOConfig
    from rlhf.ppo.reward import CallableReward
    from rlhf.ppo.trainer import run_iteration, setup_run

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["hello world", "who are you", "what is two plus three", "the sky"]))
    config = PPOConfig(
        policy=str(sft_policies[method]), prompts=str(prompts), out=str(tmp_path / "ppo"), device="cpu", total_iterations=1,
        batch_size=4, num_mini_batches=2, ppo_epochs=1, response_length=4, lora_r=4, lora_alpha=8, value_adapter_layers=1,
    )
    run = setup_run(config, reward_function=CallableReward(lambda p, r: [float(x.split().count("good")) for x in r]))
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    reference, _ = run.model.reference_forward(ids, torch.ones_like(ids), 3)
    sft_logits = _logits(load_causal_lm(sft_policies[method], device="cpu"), ids[:, :-1])
    base_logits = _logits(load_causal_lm(tiny_model_dir, device="cpu"), ids[:, :-1])
    assert torch.allclose(reference, sft_logits, atol=1e-5)  # the reference is the SFT policy ...
    assert not torch.allclose(reference, base_logits, atol=1e-3)  # ... not the untouched base
    run_iteration(run, 0, self_check=True)  # ratio 1 and KL 0 against the SFT reference before any update
    after, _ = run.model.reference_forward(ids, torch.ones_like(ids), 3)
    assert torch.equal(reference, after)


def test_dpo_starts_from_a_full_sft_checkpoint(sft_policies, tmp_path):
    from rlhf.dpo import DPORunConfig, train_dpo

    rows = [{"prompt": f"hello {w}", "chosen": "good helpful answer", "rejected": "bad unsafe answer", "split": "train"} for w in "cat dog tree sky".split()]
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = train_dpo(DPORunConfig(data=str(data), policy=str(sft_policies["full"]), out=str(tmp_path / "dpo"), device="cpu",
                                    max_steps=1, batch_size=2, lora_r=4, lora_alpha=8, max_length=64, save_steps=1000, eval_fraction=0))
    assert result.steps == 1
    assert resolve_model(result.output_dir).adapter_of == str(sft_policies["full"].resolve())
    assert result.lineage["reference"] == "base model (adapter disabled)"  # i.e. the SFT checkpoint


@pytest.mark.parametrize("method", ["lora", "full"])
def test_generate_samples_an_sft_policy(sft_policies, tmp_path, method):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hello world"}) + "\n")
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["generate", "--model", str(sft_policies[method]), "--prompts", str(prompts), "--out", str(out),
                                 "--n", "1", "--max-new-tokens", "3"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(out.read_text())["responses"]) == 1


def test_cli_bad_input_exits_2_naming_the_place(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    result = runner.invoke(app, ["sft", "--data", str(bad), "--out", str(tmp_path / "o"), "--policy", str(tiny_model_dir), "--device", "cpu"])
    assert result.exit_code == EXIT_BAD_INPUT and "bad.jsonl: line 1: field 'messages': no assistant turn" in result.stderr
    result = runner.invoke(app, ["sft", "--data", str(bad), "--out", str(tmp_path / "o"), "--device", "cpu", "--optim", "paged_adamw_8bit"])
    assert result.exit_code == EXIT_BAD_INPUT and "needs CUDA" in result.stderr and "--optim adamw_torch" in result.stderr
    result = runner.invoke(app, ["sft", "--out", str(tmp_path / "o")])
    assert result.exit_code == EXIT_BAD_INPUT and "give data" in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("method", ["lora", "full"])
def test_sft_continues_from_an_sft_adapter(tiny_model_dir, sft_policies, tmp_path, method):
    from rlhf.sft import SFTRunConfig, train_sft

    data = sft_file(tmp_path / "more.jsonl")
    result = train_sft(SFTRunConfig(data=str(data), policy=str(sft_policies["lora"]), out=str(tmp_path / "again"), method=method,
                                    device="cpu", max_steps=1, batch_size=4, max_length=64, learning_rate=1e-3))
    source = resolve_model(result.output_dir)
    if method == "lora":  # the same adapter trained further, still on the original base
        assert source.kind == "adapter" and source.adapter_of == str(tiny_model_dir)
        assert result.metrics["held_out"]["before"] == pytest.approx(_sft_held_out(sft_policies["lora"]))
    else:  # merged into the base, then every weight trained
        measured = result.metrics["memory"]["measured"]
        assert source.kind == "local" and measured["trainable_parameters"] == result.metrics["memory"]["estimate"]["parameters"]


def _sft_held_out(directory: Path) -> dict:
    return json.loads((directory / "metrics.json").read_text())["held_out"]["after"]
