"""Does SFT on simulated demonstrations make the policy better by the simulation's gold measure, and does PPO from it end higher?

The issue's first target: SFT with ≤ 300 simulated demonstrations raises the mean gold score of
fresh samples by ≥ 0.05 over the base, and PPO from the SFT policy ends at least as high as PPO
from the base. Steps:
1. prompts: the sample project (`data/sample_project.jsonl`, SmolLM2-135M outputs, three per
   prompt), split by prompt: the first BENCH_GOLD_HELD_OUT prompts of a seeded shuffle are held
   out (fresh samples are drawn on them only), the others give demonstrations and PPO's prompts;
2. demonstrations: simulated writers (`rlhf.simulation.writers`) rewrite each shown reply of a
   training prompt, up to BENCH_GOLD_DEMOS (≤ 300); one writer in BENCH_GOLD_SLOPPY_EVERY is
   sloppy (`sloppy_reply`: the edit does little), as the issue plants them;
3. SFT: `rlhf.sft.train_sft`, LoRA r16 on the packaged SmolLM2-135M, CPU, BENCH_GOLD_EPOCHS epochs at
   BENCH_GOLD_LR; base and SFT are sampled at once (step 6), so a missed SFT target shows before the
   PPO half (BENCH_GOLD_STOP_AFTER=sft stops there);
4. reward model, trained as `make e2e` trains it (its own functions): the sample project and its
   extra round-0 replies seeded into a fresh database, 20 simulated people (3 spammers) compare
   every pair, Dawid–Skene labels exported, LoRA on the packaged MiniLM for BENCH_GOLD_REWARD_STEPS
   steps (default 300; e2e trains 830, too long here); its held-out accuracy against gold is
   reported. BENCH_GOLD_REWARD=DIR reuses a reward model trained before instead (a run with
   BENCH_GOLD_KEEP=DIR keeps its models, the reward model in DIR/reward-run/reward);
5. PPO twice with that one reward model and e2e's PPO settings (`e2e.run_ppo`: 4-bit NF4 base with
   LoRA r16, batch 8, 48 new tokens; BENCH_GOLD_PPO_4BIT=0 for a full-precision base), the same seed
   and BENCH_GOLD_PPO_ITERATIONS iterations (default 6; 29-38 s each on the 2-core machine) on the training
   prompts: from the base (today's path) and from the SFT adapter (then the SFT policy is also PPO's
   reference);
6. fresh samples: the four policies (base, SFT, PPO from base, PPO from SFT) sampled alike (same
   seed, temperature, BENCH_GOLD_NEW_TOKENS tokens) on the held-out prompts, scored by
   `rlhf.simulation.gold_score`.
Rows: SFT against the base (gain ≥ +0.05) and PPO from SFT against PPO from the base (≥), with each
PPO run's KL and reward-model score. BENCH_GOLD_FIGURES=FILE writes every figure as JSON. The split, the
demonstrations, the SFT recipe and the sampling with its gold are `bench/e2e_sft.py`'s, shared with
`bench/e2e.py --pipeline instructgpt|both`.

    .venv/bin/python bench/bench_sft_gold.py [--quick]
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import BenchRow, main  # noqa: E402
from e2e_sft import SFT_GAIN_TARGET, TEMPERATURE, SFTRecipe, demonstrations, held_out_split, sample_gold, train_sft_policy, write_prompts_file  # noqa: E402,F401

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "data" / "sample_project.jsonl"
EXTRA_ROUND0 = REPO_ROOT / "data" / "e2e_round0_extra.jsonl"
SEED = 0


@dataclass
class GoldBenchConfig:
    """Sizes of one run; `from_env` reads the BENCH_GOLD_* variables, `--quick` shrinks the defaults to a smoke run."""

    sample_file: Path = SAMPLE
    """Prompts with sampled replies (importer shape (a)); the demonstrations rewrite these replies."""
    extra_round0_file: Optional[Path] = EXTRA_ROUND0
    """More replies to the same prompts for the reward model's comparisons (as in `make e2e`); None: the sample file alone."""
    policy: str = "smollm2-135m-instruct"
    """The base policy (rlhf.models.PACKAGED_SMOLLM2; tests pass a tiny model)."""
    reward_base: str = "all-minilm-l6-v2"
    """The reward model's base (rlhf.models.PACKAGED_MINILM, as in `make e2e`)."""
    demos: int = 300
    """Demonstrations written (the target allows at most 300)."""
    held_out: int = 40
    """Prompts held out for the fresh samples."""
    sloppy_every: int = 7
    """One demonstration in this many is written by a sloppy writer (0: none)."""
    sft_epochs: float = 2.0
    """SFT passes over the demonstrations."""
    sft_max_steps: int = -1
    """SFT optimiser steps (-1: `sft_epochs`)."""
    sft_learning_rate: float = 2e-4
    """SFT peak learning rate (LoRA)."""
    new_tokens: int = 128
    """Tokens per fresh sample at most (round 0's replies had 128)."""
    reward: Optional[str] = None
    """A reward model directory to reuse; None: train one as e2e does."""
    reward_prompt_limit: Optional[int] = None
    """Seed only the first N records into the reward model's project (None: all, as e2e)."""
    reward_steps: int = 300
    """Optimiser steps of the reward model (e2e: 830, four epochs; fewer here to fit the bench's time)."""
    annotators: int = 20
    """Simulated people comparing the reward model's pairs (3 of them spammers, as in e2e)."""
    spammers: int = 3
    ppo_iterations: int = 6
    """PPO iterations of each of the two runs."""
    ppo_batch_size: int = 8
    """Prompts per PPO iteration."""
    ppo_response_length: int = 48
    """Tokens per PPO response at most."""
    ppo_4bit: bool = True
    """PPO on a 4-bit NF4 base (QLoRA, as `make e2e`); False: the full-precision base."""
    threads: Optional[int] = None
    """torch CPU threads (None: torch's default)."""
    stop_after: Optional[str] = None
    """`sft`: stop once base and SFT are sampled (the SFT half alone, for tuning the SFT recipe)."""
    quick: bool = False

    @classmethod
    def from_env(cls, quick: bool = False, **overrides: Any) -> "GoldBenchConfig":
        """The defaults (shrunk by `quick`), then the BENCH_GOLD_* environment variables, then `overrides`."""
        config = cls(quick=quick)
        if quick:
            config = dataclasses.replace(
                config, demos=24, held_out=6, sft_epochs=1, sft_max_steps=2, new_tokens=32, reward_prompt_limit=12, reward_steps=3,
                ppo_iterations=1, ppo_batch_size=4, ppo_response_length=12,
            )
        env = {
            "demos": ("BENCH_GOLD_DEMOS", int), "held_out": ("BENCH_GOLD_HELD_OUT", int), "sloppy_every": ("BENCH_GOLD_SLOPPY_EVERY", int),
            "sft_epochs": ("BENCH_GOLD_EPOCHS", float), "sft_max_steps": ("BENCH_GOLD_MAX_STEPS", int), "sft_learning_rate": ("BENCH_GOLD_LR", float),
            "new_tokens": ("BENCH_GOLD_NEW_TOKENS", int), "reward": ("BENCH_GOLD_REWARD", str), "reward_steps": ("BENCH_GOLD_REWARD_STEPS", int),
            "ppo_iterations": ("BENCH_GOLD_PPO_ITERATIONS", int), "threads": ("BENCH_GOLD_THREADS", int),
            "stop_after": ("BENCH_GOLD_STOP_AFTER", str),
            "ppo_4bit": ("BENCH_GOLD_PPO_4BIT", lambda v: v.strip().lower() not in ("0", "false", "no")),
        }
        values = {field: kind(os.environ[name]) for field, (name, kind) in env.items() if os.environ.get(name)}
        config = dataclasses.replace(config, **values, **overrides)
        config.demos = min(config.demos, 300)  # the target's ceiling
        return config


def train_reward_like_e2e(config: GoldBenchConfig, out: Path) -> dict[str, Any]:
    """The reward model as `make e2e` trains it (seed, simulate comparisons, Dawid–Skene export, LoRA reward model), with
    e2e's own functions; its figures (accuracy against gold, the best the noise allows, steps) and directory."""
    import e2e

    from rlhf.db import init_database, make_engine
    from rlhf.export import ExportOptions, export_project, read_export_rows
    from rlhf.frames import response_frame
    from rlhf.roles import SYSTEM
    from rlhf.simulation import simulate

    e2e_config = dataclasses.replace(
        e2e.E2EConfig(), out_dir=out, sample_file=Path(config.sample_file), extra_round0_file=config.extra_round0_file,
        prompt_limit=config.reward_prompt_limit, reward_base=config.reward_base, reward_steps=config.reward_steps,
        reward_batch_size=4 if config.quick else 8, annotators=config.annotators, spammers=config.spammers, seed=SEED, progress=False,
    )
    started = time.perf_counter()
    engine = make_engine(f"sqlite:///{out / 'reward.db'}")
    init_database(engine)
    try:
        e2e.seed_project(engine, e2e_config)
        # Comparisons only: the reward model learns from pairs (e2e's round 0 also rates, for its statistics).
        simulated = simulate(engine, e2e.PROJECT, e2e.simulation_config(e2e_config, "pairwise"))
        _, _, categories = e2e.round_prompts(response_frame(engine, e2e.PROJECT))
        export_path = out / "export" / "pairs.jsonl"
        options = ExportOptions(test_size=e2e_config.test_size, seed=SEED, aggregate=e2e_config.export_aggregate)
        export_project(engine, SYSTEM, e2e.PROJECT, format="trl", out=export_path, options=options)
        figures = e2e.train_reward(engine, e2e_config, export_path, out / "reward", read_export_rows(export_path), categories, simulated.profiles)
    finally:
        engine.dispose()
    return {**figures, "dir": str(out / "reward"), "seconds": time.perf_counter() - started, "comparisons": simulated.preferences}


def reused_reward_held_out(reward_dir: Path) -> Optional[dict[str, Any]]:
    """A reused reward model's own held-out figures (accuracy against its labels, human agreement) from its metrics.json."""
    path = reward_dir / "metrics.json"
    if not path.is_file():
        return None
    held_out = json.loads(path.read_text()).get("held_out") or {}
    return {k: held_out[k] for k in ("pairs", "accuracy", "human_agreement") if k in held_out}


def run_ppo_from(config: GoldBenchConfig, policy: str, reward_dir: str, prompts_file: Path, out: Path) -> dict[str, Any]:
    """PPO from `policy` with e2e's settings (QLoRA) and `config`'s iterations on `prompts_file`; e2e's figures
    (KL, reward-model score first and last) with the policy directory and the time taken."""
    import e2e

    e2e_config = dataclasses.replace(
        e2e.E2EConfig(), policy=config.policy, ppo_iterations=config.ppo_iterations, ppo_batch_size=config.ppo_batch_size,
        ppo_response_length=config.ppo_response_length, ppo_4bit=config.ppo_4bit, seed=SEED, progress=False,
    )
    started = time.perf_counter()
    # No deadline: both runs must do every iteration for the comparison to be fair.
    policy_dir, figures = e2e.run_ppo(e2e_config, out, Path(reward_dir), None, float("inf"), print, policy=policy, prompts=str(prompts_file))
    figures.pop("history")
    return {**figures, "starting_policy": policy, "seconds": time.perf_counter() - started}


def run_config(config: GoldBenchConfig, work_dir: Optional[Path] = None, keep_dir: Optional[Path] = None) -> tuple[list[BenchRow], dict[str, Any]]:
    """Every step of the module docstring; the rows and every figure behind them.

    The models go to a temporary directory under `work_dir`, removed at the end, or to `keep_dir`, kept (its
    `reward-run/reward` can be reused by a later run with BENCH_GOLD_REWARD).
    """
    import torch

    if config.threads:
        torch.set_num_threads(config.threads)
    if keep_dir is not None:
        Path(keep_dir).mkdir(parents=True, exist_ok=True)
        return _run_in(config, Path(keep_dir))
    with tempfile.TemporaryDirectory(prefix="bench-sft-gold-", dir=work_dir) as tmp_name:
        return _run_in(config, Path(tmp_name))


def _log(message: str) -> None:
    print(f"[bench_sft_gold] {message}", file=sys.stderr, flush=True)


def _run_in(config: GoldBenchConfig, tmp: Path) -> tuple[list[BenchRow], dict[str, Any]]:
    records = [json.loads(line) for line in Path(config.sample_file).read_text(encoding="utf-8").splitlines() if line.strip()]
    held_out, train_prompts = held_out_split(records, config.held_out, SEED)
    demos, shown, written = demonstrations(train_prompts, config.demos, config.sloppy_every, SEED)
    figures: dict[str, Any] = {"config": {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(config).items()}, "gold": {}}
    figures["demonstrations"] = {"n": len(demos), "gold_written": sum(written) / len(written), "gold_shown": sum(shown) / len(shown)}

    def sample(name: str, policy: str) -> None:
        prompts, categories = [r["prompt"] for r in held_out], [r.get("category") for r in held_out]
        figures["gold"][name] = sample_gold(policy, prompts, categories, max_new_tokens=config.new_tokens, seed=SEED, batch_size=8)
        gold = figures["gold"][name]
        _log(f"gold {name}: {gold['mean_gold']:.3f} (finished {gold['finished_share']:.2f}, {gold['mean_words']:.0f} words, {gold['seconds']:.0f} s)")

    data = tmp / "demos.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in demos), encoding="utf-8")
    # PPO's prompts are the training prompts only: the fresh samples are on prompts no stage has seen.
    ppo_prompts = write_prompts_file(train_prompts, tmp / "ppo_prompts.jsonl")

    # 3. SFT, and the SFT half of the target at once (a missed SFT target shows before the long PPO half)
    recipe = SFTRecipe(epochs=config.sft_epochs, max_steps=config.sft_max_steps, learning_rate=config.sft_learning_rate)
    figures["sft"] = train_sft_policy(data, tmp / "sft", config.policy, recipe, SEED)
    _log(f"SFT: {figures['sft']['steps']} steps, {figures['sft']['seconds']:.0f} s; demonstrations' gold {figures['demonstrations']['gold_written']:.3f}")
    sample("base", config.policy)
    sample("sft", figures["sft"]["dir"])
    if config.stop_after == "sft":
        return rows_from(figures, config), figures

    # 4. reward model
    if config.reward:
        figures["reward"] = {"dir": config.reward, "reused": True, "held_out": reused_reward_held_out(Path(config.reward))}
    else:
        figures["reward"] = train_reward_like_e2e(config, tmp / "reward-run")
        _log(f"reward model: accuracy against gold {figures['reward']['accuracy_vs_gold']}, {figures['reward']['seconds']:.0f} s")
    reward_dir = figures["reward"]["dir"]

    # 5. PPO from the base and from the SFT policy, same reward, seed and iterations; then their fresh samples
    for name, start in (("ppo_base", config.policy), ("ppo_sft", figures["sft"]["dir"])):
        figures[name] = run_ppo_from(config, start, reward_dir, ppo_prompts, tmp / name.replace("_", "-"))
        _log(f"{name}: {figures[name]['seconds']:.0f} s, KL last {figures[name]['kl_last']}, RM score {figures[name]['score_first']} → {figures[name]['score_last']}")
        sample(name, figures[name]["policy_dir"])
    return rows_from(figures, config), figures


def rows_from(figures: dict[str, Any], config: GoldBenchConfig) -> list[BenchRow]:
    """The two target rows from a run's figures (the SFT row alone when the run stopped after SFT)."""
    gold, sft, demos = figures["gold"], figures["sft"], figures["demonstrations"]
    base, tuned = gold["base"]["mean_gold"], gold["sft"]["mean_gold"]
    gain = tuned - base
    sampling = f"{len(gold['base']['scores'])} held-out prompts, {config.new_tokens} new tokens, T={TEMPERATURE}"
    four = "; ".join(f"{k} {gold[k]['mean_gold']:.3f} (finished {gold[k]['finished_share']:.2f}, {gold[k]['mean_words']:.0f} words)" for k in gold)
    held = sft["held_out"]
    sft_row = BenchRow(
        work=f"mean gold of fresh samples, SFT (LoRA r16, {demos['n']} simulated demonstrations, {config.sft_epochs:g} epochs, lr "
        f"{config.sft_learning_rate:g}) vs base, {sampling}",
        ours=tuned,
        unit="gold",
        anchor=base,
        anchor_name="base SmolLM2-135M-Instruct",
        ratio=tuned / base if base else float("nan"),
        target=f"gain ≥ +{SFT_GAIN_TARGET:g}",
        note=f"gain {gain:+.3f} ({'met' if gain >= SFT_GAIN_TARGET else 'NOT met'}); demonstrations' gold {demos['gold_written']:.3f} vs the "
        f"replies shown to the writers {demos['gold_shown']:.3f}; held-out SFT loss {held['before']['loss']:.3f} → "
        f"{held['after']['loss']:.3f} ({sft['steps']} steps, {sft['seconds']:.0f} s); {four}",
    )
    if "ppo_sft" not in figures:
        return [sft_row]
    reward, ppo_base, ppo_sft = figures["reward"], gold["ppo_base"]["mean_gold"], gold["ppo_sft"]["mean_gold"]
    if reward.get("reused"):
        own = reward.get("held_out") or {}
        reward_note = f"reward model reused from {reward['dir']}" + (
            f" (held-out accuracy against its labels {own['accuracy']:.3f} on {own['pairs']} pairs)" if "accuracy" in own and "pairs" in own else ""
        )
    else:
        reward_note = (
            f"reward model (MiniLM LoRA, {reward['steps']} steps on {reward['train_pairs']} pairs of {reward['comparisons']} simulated comparisons) "
            f"accuracy against gold {reward['accuracy_vs_gold']:.3f} (best achievable {reward['best_achievable']:.3f}), {reward['seconds']:.0f} s"
        )

    def ppo_note(run: dict[str, Any]) -> str:
        return (
            f"KL last {run['kl_last']:.3f} (max {run['kl_max']:.3f}) nats, RM score {run['score_first']:.3f} → {run['score_last']:.3f}, "
            f"EOS rate {run['eos_rate_first']:.2f} → {run['eos_rate_last']:.2f}, {run['seconds']:.0f} s"
        )

    return [
        sft_row,
        BenchRow(
            work=f"mean gold of fresh samples, PPO from SFT vs PPO from base ({'QLoRA' if config.ppo_4bit else 'LoRA, fp32 base'}, same reward model and seed, {config.ppo_iterations} "
            f"iterations × {config.ppo_batch_size} prompts each), {sampling}",
            ours=ppo_sft,
            unit="gold",
            anchor=ppo_base,
            anchor_name="PPO from base",
            ratio=ppo_sft / ppo_base if ppo_base else float("nan"),
            target="≥ PPO from base",
            note=f"difference {ppo_sft - ppo_base:+.3f} ({'met' if ppo_sft >= ppo_base else 'NOT met'}); the four policies: {four}; "
            f"PPO from base: {ppo_note(figures['ppo_base'])}; PPO from SFT (SFT as reference): {ppo_note(figures['ppo_sft'])}; {reward_note}",
        ),
    ]


def run(quick: bool = False) -> list[BenchRow]:
    config = GoldBenchConfig.from_env(quick)
    started = time.perf_counter()
    keep = os.environ.get("BENCH_GOLD_KEEP")
    rows, figures = run_config(config, keep_dir=Path(keep) if keep else None)
    figures["seconds_total"] = time.perf_counter() - started
    if os.environ.get("BENCH_GOLD_FIGURES"):
        from rlhf.jobs import json_safe

        Path(os.environ["BENCH_GOLD_FIGURES"]).write_text(json.dumps(json_safe(figures), indent=2))
    print(f"[bench_sft_gold] whole run {figures['seconds_total'] / 60:.1f} min", file=sys.stderr, flush=True)
    return rows


if __name__ == "__main__":
    main(run)
