"""Does SFT on simulated demonstrations make the policy better by the simulation's gold measure? (target: ≥ +0.05)

The issue's first target, SFT half: SFT with ≤ 300 simulated demonstrations raises the mean gold
score of fresh samples by ≥ 0.05 over the base. Steps:
1. prompts: the sample project (`data/sample_project.jsonl`, SmolLM2-135M outputs, three per
   prompt), split by prompt: the first BENCH_GOLD_HELD_OUT prompts of a seeded shuffle are held
   out (fresh samples are drawn on them only), the others give demonstrations;
2. demonstrations: simulated writers (`rlhf.simulation.writers`) rewrite each shown reply of a
   training prompt, up to BENCH_GOLD_DEMOS (≤ 300); one writer in BENCH_GOLD_SLOPPY_EVERY is
   sloppy (`sloppy_reply`: the edit does little), as the issue plants them;
3. SFT: `rlhf.sft.train_sft`, LoRA r16 on the packaged SmolLM2-135M, CPU, BENCH_GOLD_EPOCHS epochs;
4. fresh samples: base and SFT policy sampled alike (same seed, temperature, length) on the
   held-out prompts, scored by `rlhf.simulation.gold_score`; the mean difference is the figure.
PPO from SFT against PPO from the base (the target's second half) is not in this bench yet.

    .venv/bin/python bench/bench_sft_gold.py [--quick]
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import BenchRow, main  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SAMPLE = REPO_ROOT / "data" / "sample_project.jsonl"
SEED = 0
TEMPERATURE = 0.7


def _prompt_input(record: dict):
    return record["prompt"]


def demonstrations(records: list[dict], limit: int, sloppy_every: int, seed: int) -> tuple[list[dict], list[float], list[float]]:
    """SFT rows (`messages`, split train) written by simulated writers from the shown replies (every `sloppy_every`-th
    by a sloppy one), with the gold of each shown reply and of what was written."""
    from rlhf.simulation import gold_score
    from rlhf.simulation.writers import careful_reply, sloppy_reply

    rng = random.Random(seed)
    rows, shown, written = [], [], []
    for record in records:
        prompt, category = _prompt_input(record), record.get("category")
        for response in record["responses"]:
            if len(rows) >= limit:
                return rows, shown, written
            sloppy = sloppy_every > 0 and len(rows) % sloppy_every == sloppy_every - 1
            reply = sloppy_reply(response["text"], rng) if sloppy else careful_reply(prompt, response["text"], category)
            turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
            rows.append({"messages": [*turns, {"role": "assistant", "content": reply}], "split": "train"})
            shown.append(gold_score(prompt, response["text"], category))
            written.append(gold_score(prompt, reply, category))
    return rows, shown, written


def sample_gold(policy: str, held_out: list[dict], *, max_new_tokens: int, batch_size: int) -> dict:
    """Mean gold score of one fresh sample per held-out prompt from `policy`, CPU, seeded."""
    from rlhf.generate import generate_responses, load_model_for_generation
    from rlhf.simulation import gold_score

    started = time.perf_counter()
    lm, tokenizer, _ = load_model_for_generation(policy, device="cpu")
    prompts = [_prompt_input(r) for r in held_out]
    sampled = generate_responses(
        lm, tokenizer, prompts, n=1, temperatures=(TEMPERATURE,), top_p=0.95, top_k=0, max_new_tokens=max_new_tokens, seed=SEED,
        batch_size=batch_size,
    )
    texts = [per[0].text if per else "" for per in sampled]
    scores = [gold_score(p, t, r.get("category")) for p, t, r in zip(prompts, texts, held_out)]
    return {"mean_gold": sum(scores) / len(scores), "scores": scores, "seconds": time.perf_counter() - started, "first_text": texts[0]}


def run(quick: bool = False) -> list[BenchRow]:
    from rlhf.models import PACKAGED_SMOLLM2
    from rlhf.sft import SFTRunConfig, train_sft

    n_demos = min(int(os.environ.get("BENCH_GOLD_DEMOS", 24 if quick else 300)), 300)
    n_held_out = int(os.environ.get("BENCH_GOLD_HELD_OUT", 6 if quick else 40))
    epochs = float(os.environ.get("BENCH_GOLD_EPOCHS", 1 if quick else 2))
    max_new_tokens = int(os.environ.get("BENCH_GOLD_NEW_TOKENS", 32 if quick else 128))
    sloppy_every = int(os.environ.get("BENCH_GOLD_SLOPPY_EVERY", 7))
    max_steps = int(os.environ.get("BENCH_GOLD_MAX_STEPS", 2 if quick else -1))

    records = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]
    random.Random(SEED).shuffle(records)
    held_out, train_prompts = records[:n_held_out], records[n_held_out:]
    demos, shown, written = demonstrations(train_prompts, n_demos, sloppy_every, SEED)

    with tempfile.TemporaryDirectory(prefix="bench-sft-gold-") as tmp:
        data = Path(tmp) / "demos.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in demos), encoding="utf-8")
        config = SFTRunConfig(
            data=str(data), out=str(Path(tmp) / "sft"), method="lora", policy=PACKAGED_SMOLLM2, device="cpu", lora_r=16, lora_alpha=32,
            batch_size=8, max_length=384, learning_rate=2e-4, num_epochs=epochs, max_steps=max_steps, eval_fraction=0.1,
            save_steps=10**6, seed=SEED,
        )
        started = time.perf_counter()
        result = train_sft(config)
        sft_seconds = time.perf_counter() - started
        base = sample_gold(PACKAGED_SMOLLM2, held_out, max_new_tokens=max_new_tokens, batch_size=8)
        tuned = sample_gold(str(result.output_dir), held_out, max_new_tokens=max_new_tokens, batch_size=8)
    gain = tuned["mean_gold"] - base["mean_gold"]
    held = result.metrics["held_out"]
    return [
        BenchRow(
            work=f"mean gold of fresh samples, SFT (LoRA r16, {len(demos)} simulated demonstrations, {epochs:g} epochs) vs base, "
            f"{len(held_out)} held-out prompts, {max_new_tokens} new tokens, T={TEMPERATURE}",
            ours=tuned["mean_gold"],
            unit="gold",
            anchor=base["mean_gold"],
            anchor_name="base SmolLM2-135M-Instruct",
            ratio=tuned["mean_gold"] / base["mean_gold"] if base["mean_gold"] else float("nan"),
            target="gain ≥ +0.05",
            note=f"gain {gain:+.3f} ({'met' if gain >= 0.05 else 'NOT met'}); demonstrations' gold {sum(written) / len(written):.3f} vs the "
            f"replies shown to the writers {sum(shown) / len(shown):.3f}; held-out SFT loss {held['before']['loss']:.3f} → "
            f"{held['after']['loss']:.3f} ({result.steps} steps, {sft_seconds:.0f} s); sampling {base['seconds']:.0f} s + {tuned['seconds']:.0f} s",
        )
    ]


if __name__ == "__main__":
    main(run)
