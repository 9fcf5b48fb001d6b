"""The loop on one CUDA GPU in a few minutes: SFT (QLoRA, bf16, paged optimiser) → reward model → 3 PPO iterations → a generation round.

Each stage prints its wall time and peak GPU memory (`torch.cuda.max_memory_allocated`, reset
before each stage) and the process's peak RSS. Everything runs on the packaged SmolLM2-135M
(no hub needed) with synthetic data, so the figures say whether the CUDA paths work and what
they cost, not how good the models get. Budget: ≤ 8 minutes on one GPU (sizes below; about 1-2
minutes on an H100).

    python bench/gpu_check.py [--device cuda:0] [--keep DIR]

On a machine without CUDA it says so and exits with status 2 at once. Any stage that fails
stops the check with status 1 and its error.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SFT_STEPS = 30
REWARD_STEPS = 30
PPO_ITERATIONS = 3
BATCH = 8
MAX_LENGTH = 256


def _prompts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    topics = "garden bicycle budget recipe interview travel python laptop sleep music".split()
    return [f"Give me one short tip about my {rng.choice(topics)}, please." for _ in range(n)]


def write_data(root: Path) -> dict[str, Path]:
    """An SFT export, a preference export and a prompts file (synthetic, seeded)."""
    from bench.bench_reward import synthetic_pairs
    from bench.bench_sft import synthetic_demonstrations

    paths = {"sft": root / "demos.jsonl", "pairs": root / "pairs.jsonl", "prompts": root / "prompts.jsonl"}
    demos = synthetic_demonstrations((SFT_STEPS + 4) * BATCH // 2, seed=1)
    paths["sft"].write_text("".join(json.dumps(r | {"split": "test" if i % 10 == 0 else "train"}) + "\n" for i, r in enumerate(demos)))
    pairs = synthetic_pairs(REWARD_STEPS * BATCH // 2, seed=2)
    paths["pairs"].write_text("".join(json.dumps(r | {"split": "test" if i % 10 == 0 else "train"}) + "\n" for i, r in enumerate(pairs)))
    paths["prompts"].write_text("".join(json.dumps({"prompt": p}) + "\n" for p in _prompts(32, seed=3)))
    return paths


def stage(name: str, device, fn, results: list[dict]):
    """Run one stage, printing and recording its time and peak memory; a failure ends the check with status 1."""
    import torch

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    print(f"--> {name} ...", flush=True)
    started = time.perf_counter()
    try:
        value = fn()
    except Exception as exc:  # noqa: BLE001 - report any failure of the stage, then stop
        print(f"FAILED {name} after {time.perf_counter() - started:.1f} s: {type(exc).__name__}: {exc}", flush=True)
        _print_table(results)
        raise SystemExit(1) from exc
    seconds = time.perf_counter() - started
    row = {
        "stage": name,
        "seconds": round(seconds, 1),
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    results.append(row)
    print(f"    {name}: {row['seconds']} s, peak GPU {row['peak_gpu_mib']} MiB, peak RSS {row['peak_rss_mib']} MiB", flush=True)
    return value


def _print_table(results: list[dict]) -> None:
    if not results:
        return
    print("\nstage                              | seconds | peak GPU MiB | peak RSS MiB")
    for row in results:
        print(f"{row['stage']:<34} | {row['seconds']:>7} | {row['peak_gpu_mib']:>12} | {row['peak_rss_mib']:>12}")


def run_check(device: str, root: Path) -> list[dict]:
    import torch

    from rlhf.generate import SamplingConfig, generate_file
    from rlhf.models import PACKAGED_SMOLLM2
    from rlhf.ppo import PPOConfig
    from rlhf.ppo.trainer import train_ppo
    from rlhf.reward import RewardConfig, train_reward_model
    from rlhf.sft import SFTRunConfig, train_sft

    torch_device = torch.device(device)
    data = write_data(root)
    results: list[dict] = []
    print(f"device {torch.cuda.get_device_name(torch_device)}; work in {root}", flush=True)

    sft = stage("SFT qlora bf16 paged_adamw_8bit", torch_device, lambda: train_sft(SFTRunConfig(
        data=str(data["sft"]), out=str(root / "sft"), method="qlora", optim="paged_adamw_8bit", policy=PACKAGED_SMOLLM2,
        device=device, max_steps=SFT_STEPS, batch_size=BATCH, max_length=MAX_LENGTH, learning_rate=2e-4, logging_steps=10,
        save_steps=10**6,
    )), results)
    held = sft.metrics["held_out"]
    print(f"    held-out loss {held['before']['loss']:.3f} → {held['after']['loss']:.3f}", flush=True)

    reward = stage("reward model (4-bit base, LoRA)", torch_device, lambda: train_reward_model(RewardConfig(
        base_model=PACKAGED_SMOLLM2, load_in_4bit=True, device=device, max_steps=REWARD_STEPS, batch_size=BATCH,
        max_length=MAX_LENGTH, save_steps=10**6,
    ), root / "reward", data=data["pairs"]), results)
    print(f"    held-out accuracy {reward.metrics['held_out']['accuracy']:.3f}", flush=True)

    ppo = stage(f"PPO {PPO_ITERATIONS} iterations from the SFT policy", torch_device, lambda: train_ppo(PPOConfig(
        policy=str(root / "sft"), reward=str(root / "reward"), prompts=str(data["prompts"]), out=str(root / "ppo"),
        load_in_4bit=True, device=device, total_iterations=PPO_ITERATIONS, batch_size=BATCH, response_length=32,
    )), results)
    print(f"    score {ppo.final_metrics.get('objective/score', float('nan')):.3f}, KL {ppo.final_metrics.get('objective/kl', float('nan')):.3f}", flush=True)

    summary = stage("generation round (PPO policy)", torch_device, lambda: generate_file(
        str(root / "ppo"), data["prompts"], root / "round1.jsonl", config=SamplingConfig(n=2, max_new_tokens=48, batch_size=16),
    ), results)
    print(f"    {summary}", flush=True)
    _print_table(results)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="CUDA device (default: cuda)")
    parser.add_argument("--keep", default=None, help="write the outputs here instead of a temporary directory")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print(
            f"gpu_check: no CUDA device here (torch {torch.__version__}, built for CUDA {torch.version.cuda}); "
            "run it on a machine with an NVIDIA GPU and a CUDA build of torch",
            file=sys.stderr,
        )
        raise SystemExit(2)
    started = time.perf_counter()
    if args.keep:
        Path(args.keep).mkdir(parents=True, exist_ok=True)
        run_check(args.device, Path(args.keep))
    else:
        with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
            run_check(args.device, Path(tmp))
    print(f"\ngpu_check passed in {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
