"""PPO iteration time and memory against TRL's RLOOTrainer and GRPOTrainer, and the shared 4-bit base.

Workload (the same for all three, each in its own subprocess so peak memory is its own):
SmolLM2-135M-Instruct (packaged) on a 4-bit NF4 base with LoRA r=16 on all linear layers, on
CPU; one iteration = 8 sampled responses of up to 48 new tokens (temperature 0.7), scored by
the same rule-based reward, then 4 update epochs of 2 mini-batches (TRL: num_iterations=4,
per_device_train_batch_size=4, steps_per_generation=2, num_generations=2, beta=0.05 so both
anchors also run a reference pass, as PPO's KL penalty does). PPO additionally trains its
critic. One warm-up iteration, then `iterations` measured ones; the figure is the mean.

Memory: peak resident set size during the measured iterations (Linux VmHWM, reset after
warm-up), so model loading, identical for all three, does not mask the training peak.

On a shared machine: RLHF_BENCH_THREADS=1 pins torch to one thread, RLHF_BENCH_CLOCK=cpu times
phases in CPU seconds of each process (other jobs do not inflate them; with one thread they are
what a quiet machine's wall clock would show), and RLHF_BENCH_CONCURRENT=1 runs the three
trainers side by side so they share the same conditions.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, BenchRow, main  # noqa: E402

WORDS_TARGET = 30


def length_reward(prompts, completions, **_):
    """The shared rule-based reward: responses near 30 words score best (cheap and deterministic)."""
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [-abs(len(t.split()) - WORDS_TARGET) / 10.0 for t in texts]


def _prompts(n: int) -> list[str]:
    path = REPO_ROOT / "data" / "sample_prompts.jsonl"
    if path.is_file():
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        texts = [r["prompt"] for r in rows if isinstance(r.get("prompt"), str)]
        if len(texts) >= n:
            return texts[:n]
    return [f"Explain in a few sentences how {topic} works." for topic in
            ("a bicycle", "rain", "a compass", "bread dough", "a battery", "a bridge", "the moon", "a vaccine")][:n]


def _threads() -> None:
    import torch

    if os.environ.get("RLHF_BENCH_THREADS"):
        torch.set_num_threads(int(os.environ["RLHF_BENCH_THREADS"]))


def _clock():
    return time.process_time if os.environ.get("RLHF_BENCH_CLOCK") == "cpu" else time.perf_counter


def _reset_peak() -> None:
    """Reset the process's peak RSS (VmHWM) so it covers only what follows."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- children


def child_ours(settings: dict) -> dict:
    _threads()
    import torch

    from rlhf.models import PACKAGED_SMOLLM2
    from rlhf.ppo import PPOConfig
    from rlhf.ppo.reward import CallableReward
    from rlhf.ppo.rollout import PhaseTimer
    from rlhf.ppo.trainer import run_iteration, setup_run

    work = Path(tempfile.mkdtemp(prefix="bench-ppo-"))
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in _prompts(settings["prompts"])))
    config = PPOConfig(
        policy=PACKAGED_SMOLLM2, prompts=str(prompts), out=str(work / "out"), device="cpu", load_in_4bit=True,
        batch_size=settings["prompts"], num_mini_batches=2, ppo_epochs=settings["epochs"], response_length=settings["tokens"],
        lora_r=16, lora_alpha=32, temperature=0.7, learning_rate=1e-4, total_iterations=1 + settings["iterations"],
        checkpoint_every=0, sample_count=0, value_adapter_layers=settings.get("value_layers", 4),
    )
    run = setup_run(config, reward_function=CallableReward(lambda p, r: length_reward(p, r)))
    from rlhf.models import weights_footprint_bytes

    trainable = sum(p.numel() * p.element_size() for p in run.model.trainable_parameters())
    frozen = weights_footprint_bytes(run.model) - trainable
    run_iteration(run, 0, self_check=True)  # warm-up (and the start-up self-check)
    _reset_peak()
    rows = []
    for i in range(1, 1 + settings["iterations"]):
        metrics = run_iteration(run, i, PhaseTimer(clock=_clock()))
        rows.append({k: v for k, v in metrics.items() if k.startswith("time/")} | {"response/length": metrics["response/length"]})
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
    return {
        "iteration_s": mean["time/iteration"], "generate_s": mean["time/generate"], "score_s": mean["time/score"],
        "forward_s": mean["time/forward"], "train_s": mean["time/train"], "response_length": mean["response/length"],
        "peak_mb": _peak_mb(), "frozen_bytes": frozen, "trainable_bytes": trainable, "threads": torch.get_num_threads(),
        "value_layers": run.model.value_layers, "num_layers": run.model.num_layers, "value_shortcut": run.model.use_value_shortcut,
    }


def child_trl(settings: dict, kind: str) -> dict:
    _threads()
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from rlhf.models import PACKAGED_SMOLLM2, load_causal_lm, load_tokenizer, lora_config, trainable_to_fp32

    if kind == "rloo":
        from trl import RLOOConfig as Config, RLOOTrainer as Trainer
    else:
        from trl import GRPOConfig as Config, GRPOTrainer as Trainer

    per_iteration_steps = 2 * settings["epochs"]  # 2 mini-batches × num_iterations
    total_iterations = 1 + settings["iterations"]
    generations = 2
    unique = settings["prompts"] // generations
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in _prompts(settings["prompts"])] * total_iterations)
    work = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
    tokenizer = load_tokenizer(PACKAGED_SMOLLM2)
    model = load_causal_lm(PACKAGED_SMOLLM2, load_in_4bit=True, device="cpu")
    args = Config(
        output_dir=str(work), per_device_train_batch_size=settings["prompts"] // 2, steps_per_generation=2,
        num_generations=generations, num_iterations=settings["epochs"], max_completion_length=settings["tokens"],
        temperature=0.7, top_k=0, top_p=1.0, learning_rate=1e-4, beta=0.05, max_steps=per_iteration_steps * total_iterations,
        logging_steps=per_iteration_steps, save_strategy="no", report_to=[], bf16=False, use_cpu=True,
        gradient_checkpointing=False, disable_dropout=True, seed=0, dataloader_num_workers=0, shuffle_dataset=False,
    )
    assert args.generation_batch_size == settings["prompts"] and unique * generations == settings["prompts"]
    trainer = Trainer(
        model=model, reward_funcs=[length_reward], args=args, train_dataset=dataset, processing_class=tokenizer,
        peft_config=lora_config("CAUSAL_LM", r=16, alpha=32),
    )
    trainable_to_fp32(trainer.model)  # TRL casts a 4-bit model's LoRA to bf16: slow on CPU

    phases = {"generate": 0.0, "score": 0.0, "rollout": 0.0}

    clock = _clock()

    def timed(name, fn):
        def wrapper(*a, **k):
            start = clock()
            try:
                return fn(*a, **k)
            finally:
                phases[name] += clock() - start
        return wrapper

    trainer._generate = timed("generate", trainer._generate)
    trainer._calculate_rewards = timed("score", trainer._calculate_rewards)
    trainer._generate_and_score_completions = timed("rollout", trainer._generate_and_score_completions)
    marks: list[tuple[float, dict]] = []

    class Iterations(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step % per_iteration_steps == 0:
                marks.append((clock(), dict(phases)))
                if len(marks) == 1:
                    _reset_peak()

    trainer.add_callback(Iterations())
    trainer.train()
    spans = list(zip(marks, marks[1:]))
    n = len(spans)

    def mean_delta(key):
        return sum(b[1][key] - a[1][key] for a, b in spans) / n

    iteration = sum(b[0] - a[0] for a, b in spans) / n
    rollout = mean_delta("rollout")
    return {
        "iteration_s": iteration, "generate_s": mean_delta("generate"), "score_s": mean_delta("score"),
        "forward_s": rollout - mean_delta("generate") - mean_delta("score"), "train_s": iteration - rollout,
        "peak_mb": _peak_mb(), "threads": torch.get_num_threads(),
    }


def child_footprint(settings: dict) -> dict:
    from rlhf.models import PACKAGED_SMOLLM2, load_causal_lm, weights_footprint_bytes

    fp32 = weights_footprint_bytes(load_causal_lm(PACKAGED_SMOLLM2, device="cpu"))
    nf4 = weights_footprint_bytes(load_causal_lm(PACKAGED_SMOLLM2, device="cpu", load_in_4bit=True))
    return {"fp32_bytes": fp32, "nf4_bytes": nf4}


CHILDREN = {"ours": child_ours, "rloo": lambda s: child_trl(s, "rloo"), "grpo": lambda s: child_trl(s, "grpo"), "footprint": child_footprint}


def _in_subprocess(kind: str, settings: dict) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", TRANSFORMERS_VERBOSITY="error")
        proc = subprocess.run(
            [sys.executable, __file__, "--child", kind, json.dumps(settings), str(out)],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True,
        )
        if proc.returncode != 0 or not out.is_file():
            raise RuntimeError(f"bench child {kind} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
        return json.loads(out.read_text())


# --------------------------------------------------------------------------- the table


def _split(result: dict) -> str:
    return (f"generate {result['generate_s']:.1f}, forward {result['forward_s']:.1f}, score {result['score_s']:.2f}, "
            f"train {result['train_s']:.1f}")


def run(quick: bool = False) -> list[BenchRow]:
    settings = {"prompts": 8, "tokens": 16 if quick else 48, "epochs": 4, "iterations": 1 if quick else 2}
    kinds = ("ours", "rloo", "grpo", "footprint")
    if os.environ.get("RLHF_BENCH_CONCURRENT") == "1":
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(kinds)) as pool:
            futures = {kind: pool.submit(_in_subprocess, kind, settings) for kind in kinds}
            results = {kind: future.result() for kind, future in futures.items()}
    else:
        results = {kind: _in_subprocess(kind, settings) for kind in kinds}
    clock = "CPU s" if os.environ.get("RLHF_BENCH_CLOCK") == "cpu" else "s"
    ours = results["ours"]
    size = f"{settings['prompts']}×{settings['tokens']} tok, {settings['epochs']} epochs, NF4+LoRA r16, CPU, {ours['threads']} threads"
    rows = []
    for anchor in ("rloo", "grpo"):
        theirs = results[anchor]
        name = "RLOOTrainer" if anchor == "rloo" else "GRPOTrainer"
        rows.append(BenchRow(
            work=f"PPO iteration ({size}) vs TRL {name}", ours=ours["iteration_s"], unit=clock, anchor=theirs["iteration_s"],
            anchor_name=f"TRL {name}", ratio=theirs["iteration_s"] / ours["iteration_s"], target="time ≤ 1.2× theirs (ratio ≥ 0.83)",
            note=f"ours: {_split(ours)} (critic on top {ours['value_layers']}/{ours['num_layers']} layers); theirs: {_split(theirs)}",
        ))
        rows.append(BenchRow(
            work=f"peak RSS during iterations vs TRL {name}", ours=ours["peak_mb"], unit="MB", anchor=theirs["peak_mb"],
            anchor_name=f"TRL {name}", ratio=theirs["peak_mb"] / ours["peak_mb"], target="≤ theirs (ratio ≥ 1)",
        ))
    footprint = results["footprint"]
    rows.append(BenchRow(
        work="4-bit base weights vs fp32 (SmolLM2-135M)", ours=footprint["nf4_bytes"] / 1e6, unit="MB",
        anchor=footprint["fp32_bytes"] / 1e6, anchor_name="fp32 base", ratio=footprint["fp32_bytes"] / footprint["nf4_bytes"],
        target="≤ 40% of fp32 (ratio ≥ 2.5)", note=f"{footprint['nf4_bytes'] / footprint['fp32_bytes']:.0%} of fp32",
    ))
    rows.append(BenchRow(
        work="PPO model frozen weights (policy+value+reference) vs one 4-bit base", ours=ours["frozen_bytes"] / 1e6, unit="MB",
        anchor=footprint["nf4_bytes"] / 1e6, anchor_name="one NF4 base", ratio=footprint["nf4_bytes"] / ours["frozen_bytes"],
        target="one copy (ratio 1.0)", note=f"+ {ours['trainable_bytes'] / 1e6:.1f} MB trainable adapters and value head",
    ))
    return rows


if __name__ == "__main__":
    if len(sys.argv) >= 2 and sys.argv[1] == "--child":
        kind, settings, out_path = sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]
        Path(out_path).write_text(json.dumps(CHILDREN[kind](settings)))
        sys.exit(0)
    main(run)
