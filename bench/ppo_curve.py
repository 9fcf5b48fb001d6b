"""The PPO learning curve: does PPO raise the reward-model score of fresh samples while KL stays small?

    .venv/bin/python bench/ppo_curve.py --reward runs/reward-sample [--iterations 30] [--4bit] [--out runs/ppo-curve]

Trains the packaged SmolLM2-135M-Instruct with PPO against a reward model (trained on the
sample project) on all but the last `--eval-prompts` prompts of data/sample_prompts.jsonl. Before
training and every `--eval-every` iterations it samples fresh responses (temperature 0.7, the
same seed every time) for the held-out prompts and records their mean reward-model score and
their KL from the reference policy (nats per response, summed over tokens). Writes
`curve.json` and `curve.png` in the output directory and prints the table.

Target: the final held-out score above the initial one, and the KL ≤ 6 nats throughout.
As a bench module, `run()` reads the reward directory from $RLHF_PPO_CURVE_REWARD.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO_ROOT, BenchRow, emit  # noqa: E402

KL_LIMIT = 6.0


def _read_prompts(path: Path) -> list:
    return [json.loads(line)["prompt"] for line in path.read_text().splitlines() if line.strip()]


def evaluate(run, prompts: list, prompt_ids: list[list[int]], *, seed: int, response_length: int, temperature: float) -> dict:
    """Fresh samples for held-out prompts: mean score and KL(policy || reference) per response.

    The global RNG is saved and restored around it, so evaluating does not change training.
    """
    import torch

    from rlhf.ppo.checkpoint import rng_state, set_rng_state
    from rlhf.ppo.rollout import collect_rollout

    saved = rng_state()
    torch.manual_seed(seed)
    try:
        rollout = collect_rollout(
            run.model, run.tokenizer, prompt_ids, prompts, run.reward, response_length=response_length,
            temperature=temperature, missing_eos_penalty=None,
        )
    finally:
        set_rng_state(saved)
    mask = rollout.mask
    kl = ((rollout.logprobs - rollout.ref_logprobs) * mask).sum(1)
    return {
        "eval/score": float(rollout.raw_scores.mean()),
        "eval/kl": float(kl.mean()),
        "eval/length": float(rollout.lengths.float().mean()),
        "eval/sample": rollout.response_texts[0],
    }


def ppo_curve(
    reward: str, *, out: str, iterations: int = 30, eval_every: int = 5, eval_prompts: int = 16, four_bit: bool = False,
    prompts_file: Path | None = None, batch_size: int = 8, response_length: int = 48, seed: int = 0, policy: str | None = None,
    **overrides,
) -> list[dict]:
    """Run PPO and evaluate on held-out prompts; returns one row per evaluation point (iteration 0 first)."""
    from rlhf.models import PACKAGED_SMOLLM2
    from rlhf.ppo import PPOConfig
    from rlhf.ppo.prompts import PPOPrompt, encode_prompts
    from rlhf.ppo.trainer import run_iteration, setup_run
    from rlhf.progress import ConsoleReporter

    prompts = _read_prompts(prompts_file or REPO_ROOT / "data" / "sample_prompts.jsonl")
    train, held_out = prompts[:-eval_prompts], prompts[-eval_prompts:]
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    train_file = out_dir / "train_prompts.jsonl"
    train_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in train))
    config = PPOConfig(
        policy=policy or PACKAGED_SMOLLM2, reward=reward, prompts=str(train_file), out=str(out_dir), load_in_4bit=four_bit,
        total_iterations=iterations, batch_size=batch_size, response_length=response_length, seed=seed,
        checkpoint_every=10, sample_count=4, **overrides,
    )
    reporter = ConsoleReporter("ppo-curve", unit="iter")
    run = setup_run(config, reporter=reporter)
    held_ids = encode_prompts(
        [PPOPrompt(p, f"held-out {i}") for i, p in enumerate(held_out)], run.tokenizer,
        max_length=config.max_prompt_length, truncate=True, chat_template=config.chat_template,
    ).token_ids

    def point(iteration: int, train_metrics: dict | None) -> dict:
        row = {"iteration": iteration, **evaluate(run, held_out, held_ids, seed=seed + 12345, response_length=response_length,
                                                  temperature=config.temperature)}
        if train_metrics:
            row.update({k: train_metrics[k] for k in ("objective/raw_score", "objective/score", "objective/kl", "objective/kl_coef", "response/length")})
        reporter.log(f"iteration {iteration}: held-out score {row['eval/score']:.3f}, KL {row['eval/kl']:.2f} nats")
        return row

    rows = [point(0, None)]
    for iteration in range(iterations):
        metrics = run_iteration(run, iteration, self_check=iteration == 0)
        reporter.metrics(iteration + 1, metrics)
        if (iteration + 1) % eval_every == 0 or iteration + 1 == iterations:
            rows.append(point(iteration + 1, metrics))
    reporter.close()
    (out_dir / "curve.json").write_text(json.dumps(rows, indent=2))
    _plot(rows, out_dir / "curve.png")
    return rows


def _plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    its = [r["iteration"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot(its, [r["eval/score"] for r in rows], marker="o", label="held-out (fresh samples)")
    trained = [r for r in rows if "objective/score" in r]
    left.plot([r["iteration"] for r in trained], [r["objective/raw_score"] for r in trained], marker=".", label="training rollouts")
    left.set_xlabel("PPO iteration"), left.set_ylabel("reward-model score (normalised)"), left.legend()
    right.plot(its, [r["eval/kl"] for r in rows], marker="o", label="held-out KL")
    right.axhline(KL_LIMIT, color="red", linestyle="--", label=f"{KL_LIMIT:g} nats")
    right.set_xlabel("PPO iteration"), right.set_ylabel("KL(policy || reference), nats"), right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _table(rows: list[dict]) -> str:
    lines = ["iteration | held-out score | held-out KL | train score (raw) | train KL | kl_coef", "---|---|---|---|---|---"]
    for r in rows:
        lines.append(
            f"{r['iteration']} | {r['eval/score']:.3f} | {r['eval/kl']:.2f} | {r.get('objective/raw_score', float('nan')):.3f} | "
            f"{r.get('objective/kl', float('nan')):.2f} | {r.get('objective/kl_coef', float('nan')):.3f}"
        )
    return "\n".join(lines)


def _rows_to_bench(rows: list[dict]) -> list[BenchRow]:
    first, last = rows[0], rows[-1]
    max_kl = max(r["eval/kl"] for r in rows)
    return [
        BenchRow(work=f"held-out reward score after {last['iteration']} PPO iterations", ours=last["eval/score"], unit="score",
                 anchor=first["eval/score"], anchor_name="before PPO", ratio=None, target="final > initial",
                 note=f"change {last['eval/score'] - first['eval/score']:+.3f}"),
        BenchRow(work="max held-out KL(policy || reference)", ours=max_kl, unit="nats", target=f"≤ {KL_LIMIT:g} nats"),
    ]


def run(quick: bool = False) -> list[BenchRow]:
    reward = os.environ.get("RLHF_PPO_CURVE_REWARD")
    if not reward:
        raise RuntimeError("set RLHF_PPO_CURVE_REWARD to a reward model directory trained on the sample project")
    out = tempfile.mkdtemp(prefix="ppo-curve-")
    rows = ppo_curve(reward, out=out, iterations=3 if quick else 30, eval_every=1 if quick else 5)
    return _rows_to_bench(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reward", required=True, help="reward model directory (rlhf train-reward on the sample project)")
    parser.add_argument("--out", default="runs/ppo-curve", help="output directory (curve.json, curve.png, the policy)")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-prompts", type=int, default=16, help="last N sample prompts held out for fresh samples")
    parser.add_argument("--prompts", type=Path, default=None, help="prompts JSONL (default data/sample_prompts.jsonl)")
    parser.add_argument("--policy", default=None, help="starting policy (default: the packaged SmolLM2-135M-Instruct)")
    parser.add_argument("--4bit", dest="four_bit", action="store_true", help="4-bit NF4 base")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--response-length", type=int, default=48)
    parser.add_argument("--kl-coef", type=float, default=0.05)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--adaptive-kl", action="store_true")
    parser.add_argument("--json", default=None, help="also write the bench rows here")
    args = parser.parse_args()
    rows = ppo_curve(
        args.reward, out=args.out, iterations=args.iterations, eval_every=args.eval_every, eval_prompts=args.eval_prompts,
        four_bit=args.four_bit, prompts_file=args.prompts, batch_size=args.batch_size, response_length=args.response_length,
        kl_coef=args.kl_coef, learning_rate=args.learning_rate, adaptive_kl=args.adaptive_kl, policy=args.policy,
    )
    print(_table(rows))
    emit(_rows_to_bench(rows), args.json)
    print(f"curve: {Path(args.out) / 'curve.png'}")


if __name__ == "__main__":
    main()
