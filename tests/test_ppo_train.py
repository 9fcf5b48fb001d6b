"""PPO runs on the tiny model: an iteration trains the adapters and not the reference, exact resume,
the score on the EOS, the self-check, the reward model on the shared base, outputs, bad input."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
import torch

from rlhf.models import load_tokenizer, resolve_model
from rlhf.progress import Cancelled, RecordingReporter
from rlhf.ppo import PPOConfig, core
from rlhf.ppo.checkpoint import CheckpointError, checkpoint_dir
from rlhf.ppo.model import base_model_path
from rlhf.ppo.prompts import PromptError, load_ppo_prompts
from rlhf.ppo.reward import CallableReward, RewardDirectory, RewardError
from rlhf.ppo.rollout import collect_rollout, compute_advantages
from rlhf.ppo.trainer import NonFiniteLossError, SelfCheckError, run_iteration, setup_run, train_ppo

PROMPTS = [
    "hello world",
    "write a short poem about the blue sky",
    [{"role": "system", "content": "be helpful"}, {"role": "user", "content": "explain why the sky is blue"}],
    "what is two plus three",
    "please write python code to add two numbers",
    "who are you",
]


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def prompts_file(tmp_path) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return path


def count_good(prompts, responses):
    """A hand-written reward: how often the response says "good"."""
    return [float(r.split().count("good")) for r in responses]


def tiny_config(tiny_model_dir, prompts_file, out, **overrides) -> PPOConfig:
    values = dict(
        policy=str(tiny_model_dir), prompts=str(prompts_file), out=str(out), device="cpu", total_iterations=1,
        batch_size=4, num_mini_batches=2, ppo_epochs=2, response_length=6, lora_r=4, lora_alpha=8,
        value_adapter_layers=1, checkpoint_every=1, keep_checkpoints=5, sample_count=2, learning_rate=5e-3,
    )
    values.update(overrides)
    return PPOConfig(**values)


def _snapshot(run):
    return {n: p.detach().clone() for n, p in run.model.named_trainable_parameters()}


def _reference_logits(run):
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]])
    mask = torch.ones_like(ids)
    logits, _ = run.model.reference_forward(ids, mask, 3)
    return logits


@pytest.mark.parametrize("four_bit", [False, True], ids=["fp32", "nf4"])
def test_one_iteration_trains_both_adapters_and_never_the_reference(tiny_model_dir, prompts_file, tmp_path, four_bit):
    config = tiny_config(tiny_model_dir, prompts_file, tmp_path / "run", load_in_4bit=four_bit)
    run = setup_run(config, reward_function=CallableReward(count_good))
    before, reference_before = _snapshot(run), _reference_logits(run)
    metrics = run_iteration(run, 0, self_check=True)
    after = _snapshot(run)
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged, f"trainable parameters that did not move: {unchanged[:3]}"
    assert any(".policy." in n for n in after) and any(".value." in n for n in after) and "value_head.weight" in after
    assert torch.equal(reference_before, _reference_logits(run))
    for key in ("objective/kl", "objective/kl_k3", "objective/entropy", "objective/score", "objective/non_score_reward",
                "loss/policy", "loss/value", "policy/clipfrac", "value/clipfrac", "policy/approx_kl", "response/length",
                "response/eos_rate", "time/generate", "time/score", "time/train"):
        assert key in metrics and metrics[key] == metrics[key], key  # present and not NaN
    assert metrics["policy/ratio"] == pytest.approx(1.0, abs=0.1)


def test_full_run_writes_a_loadable_adapter_lineage_samples_and_metrics(tiny_model_dir, prompts_file, tmp_path):
    out = tmp_path / "run"
    reporter = RecordingReporter()
    result = train_ppo(tiny_config(tiny_model_dir, prompts_file, out, total_iterations=2), reporter=reporter,
                       reward_function=CallableReward(count_good))
    source = resolve_model(out)
    assert source.kind == "adapter" and source.adapter_of == str(tiny_model_dir)
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["base_model"] == str(Path(tiny_model_dir).resolve())
    assert lineage["config"]["total_iterations"] == 2 and lineage["reward"]["kind"] == "callable"
    assert lineage["prompts"]["count"] == len(PROMPTS)
    assert [m["iteration"] for m in result.metrics] == [1, 2]
    assert [step for step, _ in reporter.metric_points] == [1, 2]
    assert reporter.progress_calls[-1][:2] == (2, 2)
    assert len(result.samples) == 2 and {"before", "after", "score_before", "score_after"} <= set(result.samples[0])
    assert (out / "samples.md").read_text().startswith("| prompt | before |")
    assert result.checkpoint == checkpoint_dir(out, 2)


def _comparable(metrics):
    return {k: v for k, v in metrics.items() if not k.startswith("time/")}


def test_resume_gives_the_same_next_iteration_as_an_uninterrupted_run(tiny_model_dir, prompts_file, tmp_path):
    reward = CallableReward(count_good)
    straight = train_ppo(tiny_config(tiny_model_dir, prompts_file, tmp_path / "a", total_iterations=2), reward_function=reward)
    resumed_config = tiny_config(
        tiny_model_dir, prompts_file, tmp_path / "b", total_iterations=2, resume=str(checkpoint_dir(tmp_path / "a", 1))
    )
    resumed = train_ppo(resumed_config, reward_function=reward)
    assert [m["iteration"] for m in resumed.metrics] == [2]
    assert _comparable(resumed.metrics[-1]) == _comparable(straight.metrics[-1])
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_latest_and_a_missing_checkpoint(tiny_model_dir, prompts_file, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        setup_run(tiny_config(tiny_model_dir, prompts_file, tmp_path / "none", resume="latest"), reward_function=CallableReward(count_good))
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        setup_run(tiny_config(tiny_model_dir, prompts_file, tmp_path / "x", resume=str(tmp_path / "nope")), reward_function=CallableReward(count_good))


def test_score_lands_on_the_eos_token(tiny_model_dir, prompts_file, tmp_path):
    run = setup_run(tiny_config(tiny_model_dir, prompts_file, tmp_path / "run"), reward_function=CallableReward(lambda p, r: [3.0] * len(r)))
    eos = run.tokenizer.eos_token_id
    real_generate = run.model.generate

    def generate_with_eos(*args, **kwargs):
        responses, logprobs = real_generate(*args, **kwargs)
        responses = responses.clone()
        responses[0, 2] = eos  # row 0 ends after 3 tokens; row 1 never ends
        responses[1] = torch.where(responses[1] == eos, torch.full_like(responses[1], 7), responses[1])
        return responses, logprobs

    run.model.generate = generate_with_eos
    rollout = collect_rollout(
        run.model, run.tokenizer, run.prompt_ids[:2], PROMPTS[:2], run.reward, response_length=6, temperature=0.7, missing_eos_penalty=1.0
    )
    advantages = compute_advantages(rollout, kl_coef=0.0)
    assert rollout.lengths.tolist()[0] == 3 and rollout.has_eos.tolist() == [True, False]
    assert rollout.responses[0, 2].item() == eos and rollout.mask[0].tolist() == [True, True, True, False, False, False]
    assert rollout.scores.tolist() == [3.0, 2.0]  # the missing-EOS penalty
    assert advantages.rewards[0].tolist() == [0.0, 0.0, 3.0, 0.0, 0.0, 0.0]  # on the EOS itself
    assert advantages.rewards[1].tolist() == [0.0] * 5 + [2.0]
    assert (advantages.advantages[0, 3:] == 0).all()  # nothing after the episode ended


def test_self_check_catches_a_missing_temperature(tiny_model_dir, prompts_file, tmp_path, monkeypatch):
    real = core.logprobs_from_logits
    monkeypatch.setattr(core, "logprobs_from_logits", lambda logits, tokens, temperature=1.0: real(logits, tokens, 1.0))
    with pytest.raises(SelfCheckError, match="temperature"):
        train_ppo(tiny_config(tiny_model_dir, prompts_file, tmp_path / "run"), reward_function=CallableReward(count_good))
    assert not (tmp_path / "run" / "adapter_config.json").exists()


def test_self_check_catches_a_training_pass_that_attends_to_padding(tiny_model_dir, prompts_file, tmp_path, monkeypatch):
    from rlhf.ppo.model import PolicyValueModel

    real = PolicyValueModel.policy_logits
    monkeypatch.setattr(PolicyValueModel, "policy_logits", lambda self, ids, mask, length: real(self, ids, torch.ones_like(mask), length))
    with pytest.raises(SelfCheckError, match="mean ratio"):
        train_ppo(tiny_config(tiny_model_dir, prompts_file, tmp_path / "run", batch_size=6, num_mini_batches=1),
                  reward_function=CallableReward(count_good))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_model_dir, prompts_file, tmp_path, monkeypatch):
    real = core.value_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out._replace(loss=out.loss * float("nan")) if calls["n"] > 4 else out  # iteration 2 (4 steps each)

    monkeypatch.setattr(core, "value_loss", poisoned)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="iteration 2.*last good checkpoint: .*iter-000001"):
        train_ppo(tiny_config(tiny_model_dir, prompts_file, out, total_iterations=3), reward_function=CallableReward(count_good))
    assert checkpoint_dir(out, 1).is_dir() and not checkpoint_dir(out, 2).exists()
    assert not (out / "adapter_config.json").exists()


def test_cancel_saves_a_checkpoint_to_resume_from(tiny_model_dir, prompts_file, tmp_path):
    out = tmp_path / "run"
    reporter = RecordingReporter(stop_after=1)
    with pytest.raises(Cancelled):
        train_ppo(tiny_config(tiny_model_dir, prompts_file, out, total_iterations=3, checkpoint_every=0), reporter=reporter,
                  reward_function=CallableReward(count_good))
    assert checkpoint_dir(out, 1).is_dir()


@pytest.mark.parametrize(
    "reward, message",
    [
        (lambda p, r: [float("nan")] * len(r), "non-finite score"),
        (lambda p, r: [1.0], r"shape \(1,\)"),
    ],
)
def test_bad_reward_output_is_a_clear_error(tiny_model_dir, prompts_file, tmp_path, reward, message):
    with pytest.raises(RewardError, match=message):
        train_ppo(tiny_config(tiny_model_dir, prompts_file, tmp_path / "run"), reward_function=CallableReward(reward))


def test_over_long_prompts_are_refused_or_truncated_with_a_count(tiny_model_dir, prompts_file, tmp_path):
    with pytest.raises(PromptError, match=r"longer than max_prompt_length=5.*prompts.jsonl:2 has"):
        setup_run(tiny_config(tiny_model_dir, prompts_file, tmp_path / "a", max_prompt_length=5), reward_function=CallableReward(count_good))
    reporter = RecordingReporter()
    run = setup_run(tiny_config(tiny_model_dir, prompts_file, tmp_path / "b", max_prompt_length=5, truncate_prompts=True),
                    reporter=reporter, reward_function=CallableReward(count_good))
    assert max(len(ids) for ids in run.prompt_ids) == 5 and run.truncated_prompts > 0
    assert any(f"left-truncated {run.truncated_prompts} of {len(PROMPTS)}" in line for line in reporter.lines)


def test_prompts_from_a_project(sqlite_engine):
    from rlhf.hashing import content_hash
    from rlhf.db import session_scope
    from rlhf.schema import Project, Prompt

    with session_scope(sqlite_engine, write=True) as session:
        project = Project(name="ppo-prompts")
        session.add(project)
        session.flush()
        session.add(Prompt(project_id=project.id, content_hash=content_hash("a"), text="hello world"))
        session.add(Prompt(project_id=project.id, content_hash=content_hash("b"), text="", messages=[{"role": "user", "content": "hi"}]))
    url = sqlite_engine.url.render_as_string(hide_password=False)
    prompts = load_ppo_prompts("ppo-prompts", database_url=url)
    assert [p.prompt for p in prompts] == ["hello world", [{"role": "user", "content": "hi"}]]
    with pytest.raises(PromptError, match="no such file, and no project"):
        load_ppo_prompts("missing-project", database_url=url)
    with pytest.raises(PromptError, match="no such file"):
        load_ppo_prompts("prompts/missing.jsonl", database_url=url)


def test_bad_config_names_the_field(tiny_model_dir, prompts_file, tmp_path):
    with pytest.raises(ValueError, match="'batch_size'.*'num_mini_batches'"):
        tiny_config(tiny_model_dir, prompts_file, tmp_path, batch_size=5, num_mini_batches=2).validate()
    with pytest.raises(ValueError, match="unknown field.*bacth_size"):
        PPOConfig.from_dict({"bacth_size": 4})
    for bad, field in (({"kl_target": 0.0}, "kl_target"), ({"kl_target": float("nan")}, "kl_target"), ({"kl_horizon": 0}, "kl_horizon")):
        with pytest.raises(ValueError, match=f"'{field}'"):
            tiny_config(tiny_model_dir, prompts_file, tmp_path, adaptive_kl=True, **bad).validate()
        tiny_config(tiny_model_dir, prompts_file, tmp_path, adaptive_kl=False, **bad).validate()  # unused when fixed
    with pytest.raises(ValueError, match="'kl_coef'"):
        tiny_config(tiny_model_dir, prompts_file, tmp_path, kl_coef=-0.1).validate()


# --------------------------------------------------------------------------- with a trained reward model


def _preferences(path: Path, n: int = 36) -> Path:
    """Pairs where the chosen response says "good helpful" and the rejected "bad unsafe"."""
    rng = random.Random(0)
    words = "the a is to of and in it this that yes no please hello world cat dog tree sky blue".split()
    rows = []
    for i in range(n):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(2, 8)))
        shared = " ".join(rng.choice(words) for _ in range(rng.randint(1, 5)))
        rows.append({"prompt": prompt, "chosen": f"{shared} good helpful", "rejected": f"{shared} bad unsafe",
                     "split": "test" if i % 6 == 0 else "train"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def reward_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A reward model trained on the tiny base through rlhf.reward's own API."""
    from rlhf.reward import RewardConfig, train_reward_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("ppo-reward")
        config = RewardConfig(base_model=str(tiny_model_dir), max_steps=8, batch_size=8, learning_rate=3e-3, lora_r=4,
                              max_length=64, device="cpu", save_steps=1000, logging_steps=4)
        train_reward_model(config, root / "rm", data=_preferences(root / "pairs.jsonl"))
    finally:
        torch.set_num_threads(threads)
    return root / "rm"


def test_reward_model_rides_on_the_policy_base_and_scores_like_itself(tiny_model_dir, prompts_file, tmp_path, reward_dir):
    from rlhf.reward import RewardModel

    reporter = RecordingReporter()
    config = tiny_config(tiny_model_dir, prompts_file, tmp_path / "run", reward=str(reward_dir), value_head_init="reward")
    run = setup_run(config, reporter=reporter)
    assert any("adapter on the policy's base" in line for line in reporter.lines)
    assert torch.equal(run.model.value_head.weight.data.cpu(), RewardDirectory(reward_dir).score_head_weight())
    standalone = RewardModel.load(reward_dir, device="cpu")
    prompts, responses = ["hello world", [{"role": "user", "content": "who are you"}]], ["good helpful", "bad unsafe"]
    assert torch.allclose(run.reward.score(prompts, responses), standalone.score(prompts, responses), atol=1e-5)
    # the reward adapter is frozen and outside the optimiser
    assert not any(".reward." in n for n, _ in run.model.named_trainable_parameters())
    run_iteration(run, 0, self_check=True)
    assert torch.allclose(run.reward.score(prompts, responses), standalone.score(prompts, responses), atol=1e-5)


def test_cli_ppo_with_a_reward_model_writes_lineage(tiny_model_dir, prompts_file, tmp_path, reward_dir):
    from typer.testing import CliRunner

    from rlhf.cli import app

    out = tmp_path / "cli-run"
    config_file = tmp_path / "ppo.json"
    config_file.write_text(json.dumps({"batch_size": 4, "num_mini_batches": 2, "ppo_epochs": 1, "lora_r": 4, "lora_alpha": 8}))
    result = CliRunner().invoke(app, [
        "ppo", "--policy", str(tiny_model_dir), "--reward", str(reward_dir), "--prompts", str(prompts_file), "--out", str(out),
        "--config", str(config_file), "--total-iterations", "1", "--response-length", "5", "--device", "cpu",
        "--value-adapter-layers", "1", "--sample-count", "1",
    ])
    assert result.exit_code == 0, result.output
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage["reward"]["dir"] == str(reward_dir.resolve()) and "reward_config_hash" in lineage["reward"]
    assert "export_hash" in lineage["reward"] and lineage["config"]["batch_size"] == 4 and lineage["config"]["ppo_epochs"] == 1
    assert resolve_model(out).kind == "adapter"


def test_cli_ppo_bad_input_exits_2_with_the_reason(tiny_model_dir, prompts_file, tmp_path):
    from typer.testing import CliRunner

    from rlhf.cli import app

    result = CliRunner().invoke(app, ["ppo", "--policy", str(tiny_model_dir), "--reward", str(tmp_path / "no-rm"),
                                      "--prompts", str(prompts_file), "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert result.exit_code == 2 and "no such directory" in result.output


def test_reward_on_another_base_loads_separately_and_cannot_seed_the_value_head(tiny_model_dir, prompts_file, tmp_path, reward_dir):
    from tiny_models import save_tiny_causal_lm

    other_base = save_tiny_causal_lm(tmp_path / "other-base", seed=3)
    moved = tmp_path / "rm-other"
    shutil.copytree(reward_dir, moved)
    config = json.loads((moved / "reward_config.json").read_text())
    config["base_model"] = config["base_model_resolved"] = str(other_base)
    (moved / "reward_config.json").write_text(json.dumps(config))

    directory = RewardDirectory(moved)
    policy_tokenizer = load_tokenizer(tiny_model_dir)
    assert "is not the policy's" in directory.sharing_problem(base_model_path(str(tiny_model_dir)), policy_tokenizer, False)
    assert "4-bit" in RewardDirectory(reward_dir).sharing_problem(base_model_path(str(tiny_model_dir)), policy_tokenizer, True)
    with pytest.raises(RewardError, match="is not the policy's base"):
        setup_run(tiny_config(tiny_model_dir, prompts_file, tmp_path / "a", reward=str(moved), value_head_init="reward"))
    reporter = RecordingReporter()
    run = setup_run(tiny_config(tiny_model_dir, prompts_file, tmp_path / "b", reward=str(moved)), reporter=reporter)
    assert any("loaded on its own base" in line for line in reporter.lines)
    assert run.reward.score(["hello"], ["good helpful"]).shape == (1,)


def test_reward_with_another_tokenizer_is_not_put_on_the_policy_base(tiny_model_dir, tmp_path, reward_dir):
    changed = tmp_path / "rm-tokenizer"
    shutil.copytree(reward_dir, changed)
    spec = json.loads((changed / "tokenizer.json").read_text())
    spec["model"]["vocab"]["zebra"] = max(spec["model"]["vocab"].values()) + 1
    (changed / "tokenizer.json").write_text(json.dumps(spec))
    problem = RewardDirectory(changed).sharing_problem(base_model_path(str(tiny_model_dir)), load_tokenizer(tiny_model_dir), False)
    assert problem == "its tokenizer differs from the policy's"


def test_reward_directory_errors_name_the_problem(tmp_path, reward_dir):
    with pytest.raises(RewardError, match="no such directory"):
        RewardDirectory(tmp_path / "missing")
    broken = tmp_path / "broken"
    shutil.copytree(reward_dir, broken)
    (broken / "score_head.safetensors").unlink()
    with pytest.raises(RewardError, match="missing score_head.safetensors"):
        RewardDirectory(broken)


# --------------------------------------------------------------------------- several processes


MULTI_PROCESS_SCRIPT = """
import hashlib, json, sys, torch
torch.set_num_threads(1)
from rlhf.ppo import PPOConfig
from rlhf.ppo.reward import CallableReward
from rlhf.ppo.trainer import end_distributed, run_iteration, setup_run

config = PPOConfig(**json.loads(sys.argv[1]))
run = setup_run(config, reward_function=CallableReward(lambda p, r: [float(len(x.split())) for x in r]))
initial = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in run.model.trainable_parameters())).hexdigest()
metrics = run_iteration(run, 0, self_check=True)
final = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in run.model.trainable_parameters())).hexdigest()
with open(f"{config.out}/rank-{run.accelerator.process_index}.json", "w") as handle:
    json.dump({"initial": initial, "final": final, "world": run.world, "metrics": metrics}, handle)
end_distributed(run)
"""


@pytest.mark.slow
def test_two_processes_sample_different_prompts_and_stay_in_sync(tiny_model_dir, prompts_file, tmp_path):
    """Under a distributed launch (torchrun / accelerate launch; gloo on CPU) gradients are averaged."""
    import socket
    import subprocess
    import sys

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "ppo_two_processes.py"
    script.write_text(MULTI_PROCESS_SCRIPT)
    out = tmp_path / "out"
    out.mkdir()
    config = tiny_config(tiny_model_dir, prompts_file, out, batch_size=2, num_mini_batches=1).to_dict()
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port), str(script), json.dumps(config)],
        capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["initial"] == ranks[1]["initial"]  # same start
    assert ranks[0]["final"] == ranks[1]["final"] != ranks[0]["initial"]  # averaged gradients keep them equal
    assert ranks[0]["metrics"] == pytest.approx(ranks[1]["metrics"], rel=1e-6)  # metrics are averaged over processes
    assert ranks[0]["metrics"]["episodes"] == 4
