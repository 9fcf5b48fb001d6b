"""The SFT pieces of the InstructGPT order, shared by `bench/e2e.py --pipeline instructgpt|both` and `bench/bench_sft_gold.py`.

- `held_out_split`: a seeded prompt split; the held-out prompts are seen by no stage (no
  demonstration, no comparison, no PPO prompt) and only get the fresh samples that are scored;
- demonstrations, two ways: `demonstrations` writes them directly from the shown replies (the
  bench's recipe: each of a prompt's replies rewritten once), `write_demonstrations` goes through
  the backend as annotators do (a project collecting write tasks, `simulate_writers`, `rlhf export
  --format sft`);
- `train_sft_policy`: `rlhf.sft.train_sft`, LoRA r16 on the policy, CPU, the measured recipe;
- `sample_texts` and `gold_figures`: one policy sampled on given prompts, and the gold of what it wrote
  (`sample_gold` both at once: the figures of one row of the gold table).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

SFT_GAIN_TARGET = 0.05
"""The issue's target: SFT with ≤ 300 simulated demonstrations raises the mean gold of fresh samples by this much over the base."""
MAX_DEMONSTRATIONS = 300
"""The target allows at most this many demonstrations."""
TEMPERATURE = 0.7
"""Sampling temperature of every scored sample (round 1's, as e2e samples it)."""


def held_out_split(records: Sequence[dict], n: int, seed: int) -> tuple[list[dict], list[dict]]:
    """(held out, training): the first `n` records of a `seed`ed shuffle, and the rest (records in importer shape (a))."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    return shuffled[:n], shuffled[n:]


def prompt_turns(prompt: Any) -> list[dict[str, str]]:
    """A prompt as chat turns (a plain text is one user turn)."""
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]


def write_prompts_file(records: Sequence[dict], path: Path) -> Path:
    """A JSONL of `{"prompt": ...}` lines (PPO's prompts file) from records."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"prompt": r["prompt"]}) + "\n" for r in records), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- demonstrations


def demonstrations(records: list[dict], limit: int, sloppy_every: int, seed: int) -> tuple[list[dict], list[float], list[float]]:
    """SFT rows (`messages`, split train) written by simulated writers from the shown replies (every `sloppy_every`-th
    by a sloppy one), with the gold of each shown reply and of what was written."""
    from rlhf.simulation import gold_score
    from rlhf.simulation.writers import careful_reply, sloppy_reply

    rng = random.Random(seed)
    rows, shown, written = [], [], []
    for record in records:
        prompt, category = record["prompt"], record.get("category")
        for response in record["responses"]:
            if len(rows) >= limit:
                return rows, shown, written
            sloppy = sloppy_every > 0 and len(rows) % sloppy_every == sloppy_every - 1
            reply = sloppy_reply(response["text"], rng) if sloppy else careful_reply(prompt, response["text"], category)
            rows.append({"messages": [*prompt_turns(prompt), {"role": "assistant", "content": reply}], "split": "train"})
            shown.append(gold_score(prompt, response["text"], category))
            written.append(gold_score(prompt, reply, category))
    return rows, shown, written


@dataclass
class WritingConfig:
    """How the demonstrations are written through the backend."""

    project: str = "demonstrations"
    """The project collecting the write tasks (one per training prompt, pre-filled with its first sampled reply)."""
    demos: int = MAX_DEMONSTRATIONS
    """Demonstrations written at most (the target allows 300)."""
    write_overlap: int = 3
    """Writers per write task: 3 × 100 training prompts = 300 demonstrations."""
    writers: int = 7
    """Simulated writers."""
    sloppy: int = 1
    """Of them, sloppy (the edit does little), as the issue plants them: one in seven."""
    test_size: float = 0.1
    """Share of the demonstrations' prompts held out by the SFT export (SFT's own held-out loss)."""
    seed: int = 0


def write_demonstrations(engine, records: Sequence[dict], config: WritingConfig, out: Path, guidelines: str = "") -> dict[str, Any]:
    """Demonstrations as annotators write them: a project collecting write tasks, simulated writers through the engine
    (`next_task(kind="write")`, `submit_demonstration`), then `rlhf export --format sft` to `out`. Its figures."""
    from rlhf.export import ExportOptions, export_project
    from rlhf.importer import import_records
    from rlhf.projects import create_project
    from rlhf.roles import SYSTEM
    from rlhf.simulation.writers import simulate_writers

    started = time.perf_counter()
    create_project(
        engine, SYSTEM, config.project, description="Demonstrations for SFT (InstructGPT order)", guidelines=guidelines,
        task_kinds=["write"], write_overlap=config.write_overlap, seed=config.seed,
    )
    imported = import_records(engine, list(records), config.project, source_name="e2e demonstrations")
    result = simulate_writers(
        engine, config.project, writers=config.writers, sloppy=config.sloppy, seed=config.seed, max_demonstrations=min(config.demos, MAX_DEMONSTRATIONS),
    )
    manifest = export_project(engine, SYSTEM, config.project, format="sft", out=out, options=ExportOptions(test_size=config.test_size, seed=config.seed))
    before = [g for w in result.writers for g in w.gold_before]
    after = [g for w in result.writers for g in w.gold_after]
    return {
        "project": config.project, "write_tasks": imported.write_tasks_added, "n": result.demonstrations, "rows": manifest.rows,
        "split_counts": manifest.split_counts, "gold_shown": _mean(before), "gold_written": _mean(after),
        "writers": [w.as_dict() for w in result.writers], "seconds": round(time.perf_counter() - started, 2), "path": str(out),
    }


# --------------------------------------------------------------------------- SFT


@dataclass
class SFTRecipe:
    """The SFT run: LoRA r16 on the policy, CPU (bench_sft_gold measured it: ≥ +0.05 gold with 300 demonstrations)."""

    epochs: float = 2.0
    """Passes over the demonstrations."""
    max_steps: int = -1
    """Optimiser steps (-1: `epochs`)."""
    learning_rate: float = 2e-4
    """Peak learning rate (LoRA)."""
    batch_size: int = 8
    max_length: int = 384
    """Tokens per example (prompt + reply)."""


def train_sft_policy(data: Path, out: Path, policy: str, recipe: SFTRecipe, seed: int, device: str = "cpu") -> dict[str, Any]:
    """`rlhf.sft.train_sft` on the demonstrations `data`; the adapter's directory, steps, seconds and held-out loss."""
    from rlhf.sft import SFTRunConfig, train_sft

    sft_config = SFTRunConfig(
        data=str(data), out=str(out), method="lora", policy=policy, device=device, lora_r=16, lora_alpha=32, batch_size=recipe.batch_size,
        max_length=recipe.max_length, learning_rate=recipe.learning_rate, num_epochs=recipe.epochs, max_steps=recipe.max_steps,
        eval_fraction=0.1, save_steps=10**6, seed=seed,
    )
    started = time.perf_counter()
    result = train_sft(sft_config)
    return {"dir": str(result.output_dir), "steps": result.steps, "seconds": round(time.perf_counter() - started, 2), "held_out": result.metrics["held_out"]}


# --------------------------------------------------------------------------- fresh samples and their gold


def sample_texts(
    policy: str, prompts: Sequence[Any], *, max_new_tokens: int, seed: int, batch_size: int, n: int = 1,
    temperatures: Sequence[float] = (TEMPERATURE,), load_in_4bit: bool = False, device: str = "cpu", reporter=None,
) -> list[list[str]]:
    """`n` samples per prompt from `policy` (loaded, sampled, freed), top-p 0.95; one list of texts per prompt."""
    import gc

    from rlhf.generate import generate_responses, load_model_for_generation

    lm, tokenizer, _ = load_model_for_generation(policy, load_in_4bit=load_in_4bit, device=device)
    sampled = generate_responses(
        lm, tokenizer, list(prompts), n=n, temperatures=tuple(temperatures), top_p=0.95, top_k=0, max_new_tokens=max_new_tokens, seed=seed,
        batch_size=batch_size, reporter=reporter,
    )
    del lm
    gc.collect()
    return [[r.text for r in per] for per in sampled]


def gold_figures(prompts: Sequence[Any], texts: Sequence[str], categories: Sequence[Optional[str]]) -> dict[str, Any]:
    """Mean gold, every score, share finished and mean words of one reply per prompt."""
    from rlhf.simulation import gold_score
    from rlhf.simulation.gold import finished_component

    scores = [gold_score(p, t, c) for p, t, c in zip(prompts, texts, categories)]
    n = max(len(texts), 1)
    return {
        "mean_gold": sum(scores) / n if scores else None, "scores": scores, "first_text": texts[0] if texts else "",
        "finished_share": sum(finished_component(t) for t in texts) / n, "mean_words": sum(len(t.split()) for t in texts) / n,
    }


def sample_gold(
    policy: str, prompts: Sequence[Any], categories: Sequence[Optional[str]], *, max_new_tokens: int, seed: int, batch_size: int = 8,
) -> dict[str, Any]:
    """One fresh sample per prompt from `policy` (temperature TEMPERATURE, seeded, CPU), gold-scored; with the seconds taken."""
    started = time.perf_counter()
    texts = [per[0] if per else "" for per in sample_texts(policy, prompts, max_new_tokens=max_new_tokens, seed=seed, batch_size=batch_size)]
    return {**gold_figures(prompts, texts, categories), "seconds": round(time.perf_counter() - started, 2)}


def gold_verdicts(gold: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The issue's two targets from the gold rows present: SFT − base ≥ SFT_GAIN_TARGET, PPO from SFT ≥ PPO from base.

    Each: the difference, the goal, and `met` (None when a row is missing)."""

    def mean(name: str) -> Optional[float]:
        row = gold.get(name)
        return None if row is None else row.get("mean_gold")

    base, sft, ppo_base, ppo_sft = mean("base"), mean("sft"), mean("ppo_base"), mean("ppo_sft")
    gain = None if base is None or sft is None else sft - base
    diff = None if ppo_base is None or ppo_sft is None else ppo_sft - ppo_base
    return {
        "sft_gain": {"value": gain, "goal": f"≥ +{SFT_GAIN_TARGET:g}", "met": None if gain is None else gain >= SFT_GAIN_TARGET},
        "ppo_sft_vs_ppo_base": {"value": diff, "goal": "≥ 0", "met": None if diff is None else diff >= 0},
    }


def met_word(met: Optional[bool]) -> str:
    """'met', 'NOT met' or 'not measured'."""
    return "not measured" if met is None else ("met" if met else "NOT met")


def _mean(values: Sequence[float]) -> Optional[float]:
    return sum(values) / len(values) if values else None
